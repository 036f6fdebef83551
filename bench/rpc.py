"""A minimal Kurento Protocol (JSON-RPC over WebSocket) client for the benchmark's processes.

Events (onEvent notifications) are counted and dropped: the benchmark's peers put their ICE
candidates in the SDP, so nothing waits for IceCandidateFound.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from typing import Any

from websockets.asyncio.client import ClientConnection, connect


class RpcError(Exception):
    pass


class Rpc:
    def __init__(self, ws: ClientConnection, request_timeout: float) -> None:
        self.ws = ws
        self.request_timeout = request_timeout
        self.session_id: str | None = None
        self.events = 0
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def open(cls, url: str, request_timeout: float = 30.0) -> Rpc:
        return cls(await connect(url, max_size=None, compression=None), request_timeout)

    async def close(self) -> None:
        await self.ws.close()
        self._reader.cancel()

    async def _read(self) -> None:
        async for text in self.ws:
            message = json.loads(text)
            if message.get("method") == "onEvent":
                self.events += 1
                continue
            future = self._waiting.pop(message.get("id"), None)
            if future is not None and not future.done():
                future.set_result(message)

    async def request(self, method: str, **params: Any) -> Any:
        request_id = next(self._ids)
        if self.session_id is not None:
            params.setdefault("sessionId", self.session_id)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = future
        message = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}
        await self.ws.send(json.dumps(message))
        try:
            response = await asyncio.wait_for(future, self.request_timeout)
        finally:
            self._waiting.pop(request_id, None)
        if "error" in response:
            error = response["error"]
            raise RpcError(f"{method}: {error.get('code')}: {error.get('message')}")
        result = response.get("result") or {}
        if isinstance(result, dict) and "sessionId" in result:
            self.session_id = result["sessionId"]
        return result

    async def create(self, type_name: str, **constructor: Any) -> str:
        result = await self.request("create", type=type_name, constructorParams=constructor)
        return str(result["value"])

    async def invoke(self, object_id: str, operation: str, **params: Any) -> Any:
        result = await self.request(
            "invoke", object=object_id, operation=operation, operationParams=params
        )
        return result.get("value")

    async def subscribe(self, object_id: str, event: str) -> str:
        return str((await self.request("subscribe", object=object_id, type=event))["value"])

    async def release(self, object_id: str) -> None:
        await self.request("release", object=object_id)
