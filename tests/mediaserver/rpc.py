"""A bare Kurento Protocol client for the media server's tests: send requests, collect events.

Deliberately minimal (the product's client lives in signaling/kurento/): tests see the wire as it
is.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from typing import Any

from websockets.asyncio.client import ClientConnection, connect


class RpcError(Exception):
    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(f"{error.get('code')}: {error.get('message')}")
        self.code: int = error.get("code", 0)
        self.message: str = error.get("message", "")
        self.type: str = (error.get("data") or {}).get("type", "")


class Rpc:
    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.session_id: str | None = None
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._ids = itertools.count(1)
        self._waiting: dict[Any, asyncio.Future[dict[str, Any]]] = {}
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def open(cls, url: str) -> Rpc:
        return cls(await connect(url, max_size=None))

    async def close(self) -> None:
        await self.ws.close()
        self._reader.cancel()

    async def _read(self) -> None:
        async for text in self.ws:
            message = json.loads(text)
            if message.get("method") == "onEvent":
                self.events.put_nowait(message["params"]["value"])
            elif (future := self._waiting.pop(message.get("id"), None)) is not None:
                future.set_result(message)

    async def send_raw(self, payload: str | dict[str, Any], request_id: Any = None) -> dict:
        """Send anything; wait for the answer carrying `request_id`."""
        future = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = future
        await self.ws.send(payload if isinstance(payload, str) else json.dumps(payload))
        return await asyncio.wait_for(future, 10)

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        """A request in the form the official client sends; the raw response."""
        request_id = next(self._ids)
        if self.session_id is not None and method != "connect":
            params.setdefault("sessionId", self.session_id)
        message = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}
        response = await self.send_raw(message, request_id)
        result = response.get("result")
        if isinstance(result, dict) and "sessionId" in result:
            self.session_id = result["sessionId"]
        return response

    async def request(self, method: str, **params: Any) -> Any:
        response = await self.call(method, **params)
        if "error" in response:
            raise RpcError(response["error"])
        return response["result"]

    async def create(self, type_name: str, **constructor: Any) -> str:
        result = await self.request("create", type=type_name, constructorParams=constructor)
        return result["value"]

    async def invoke(self, object_id: str, operation: str, **params: Any) -> Any:
        result = await self.request(
            "invoke", object=object_id, operation=operation, operationParams=params
        )
        return result.get("value")

    async def subscribe(self, object_id: str, event: str) -> str:
        return (await self.request("subscribe", object=object_id, type=event))["value"]

    async def next_event(self, event_type: str, source: str | None = None, timeout: float = 10):
        """The next event of a type (from a source), skipping others."""
        async with asyncio.timeout(timeout):
            while True:
                event = await self.events.get()
                if event["type"] == event_type and source in (None, event["object"]):
                    return event
