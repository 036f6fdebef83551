"""A participant as the media tests drive it: its room socket, an aiortc peer that publishes and
one aiortc peer per publisher it receives."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.conftest import RoomClient
from tests.mediaserver.peers import Peer


class Caller:
    """One participant: its room socket, its publishing peer and one peer per publisher."""

    def __init__(self, socket: RoomClient, snapshot: dict[str, Any]) -> None:
        self.socket = socket
        self.id: int = snapshot["you"]
        self.snapshot = snapshot
        self.publisher: Peer | None = None
        self.viewers: dict[int, Peer] = {}
        self.events: list[dict[str, Any]] = []
        self._serial = 0

    async def request(self, message: dict[str, Any], timeout: float = 10) -> dict[str, Any]:
        """Send a message with an id; return the reply (a success or an error) with that id."""
        self._serial += 1
        ref = f"r{self._serial}"
        await self.socket.send({**message, "id": ref})
        while True:
            reply = await self.socket.receive(timeout=timeout)
            if reply.get("id") == ref:
                return reply
            await self._handle(reply)

    async def _handle(self, message: dict[str, Any]) -> None:
        if message["type"] == "ice_candidate":
            target = message["target"]
            peer = self.publisher if target == "publish" else self.viewers.get(target)
            if peer is not None:
                await peer.add_remote_candidate(message["candidate"])
        else:
            self.events.append(message)

    async def pump(self, seconds: float) -> None:
        """Handle what arrives (server candidates, room events) for a while."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while loop.time() < deadline:
            # receive_nothing peeks without the timeout that would cancel the application.
            if not await self.socket.communicator.receive_nothing(timeout=0.02, interval=0.01):
                await self._handle(await self.socket.receive())

    async def wait_event(self, kind: str, timeout: float = 5) -> dict[str, Any]:
        """Handle what arrives until a room event of type `kind` came (it may have already)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            for event in self.events:
                if event["type"] == kind:
                    return event
            if loop.time() > deadline:
                raise AssertionError(f"no {kind} within {timeout} s: {self.events}")
            await self.pump(0.05)

    def count(self, kind: str) -> int:
        return sum(event["type"] == kind for event in self.events)

    async def trickle(self, peer: Peer, target: str | int) -> None:
        for candidate in peer.candidates():
            await self.socket.send({"type": "ice", "target": target, "candidate": candidate})

    async def publish(self) -> None:
        if self.publisher is not None:
            await self.publisher.close()
        self.publisher = Peer(send=True, receive=False)
        reply = await self.request({"type": "publish", "sdp": await self.publisher.offer()})
        assert reply["type"] == "published", reply
        await self.publisher.accept(reply["sdp"])
        await self.trickle(self.publisher, "publish")

    async def subscribe(self, publisher: int, *, video: bool = True) -> None:
        if publisher in self.viewers:
            await self.viewers[publisher].close()
        peer = self.viewers[publisher] = Peer(send=False, receive=True)
        message = {"type": "subscribe", "publisher": publisher, "sdp": await peer.offer()}
        if not video:
            message["video"] = False
        reply = await self.request(message)
        assert reply["type"] == "subscribed" and reply["publisher"] == publisher, reply
        await peer.accept(reply["sdp"])
        await self.trickle(peer, publisher)

    async def close_peers(self) -> None:
        for peer in [self.publisher, *self.viewers.values()]:
            if peer is not None:
                await peer.close()
