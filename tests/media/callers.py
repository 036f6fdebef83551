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
        # A shared screen: this caller's own, and the ones it receives.
        self.sharer: Peer | None = None
        self.screens: dict[int, Peer] = {}
        # Videos played into the room that it receives, by who plays them.
        self.played: dict[int, Peer] = {}
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
            target, source = message["target"], message.get("source", "camera")
            screen = source == "screen"
            if target == "publish":
                peer = self.sharer if screen else self.publisher
            else:
                peers = {"screen": self.screens, "playback": self.played}.get(source, self.viewers)
                peer = peers.get(target)
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

    async def wait_event(self, kind: str, timeout: float = 5, **fields: Any) -> dict[str, Any]:
        """Handle what arrives until a room event of type `kind` (with these `fields`) came (it
        may have already)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            for event in self.events:
                if event["type"] == kind and all(event.get(k) == v for k, v in fields.items()):
                    return event
            if loop.time() > deadline:
                raise AssertionError(f"no {kind} within {timeout} s: {self.events}")
            await self.pump(0.05)

    def count(self, kind: str) -> int:
        return sum(event["type"] == kind for event in self.events)

    async def trickle(self, peer: Peer, target: str | int, source: str = "camera") -> None:
        for candidate in peer.candidates():
            message = {"type": "ice", "target": target, "candidate": candidate}
            if source != "camera":
                message["source"] = source
            await self.socket.send(message)

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

    async def share(self) -> dict[str, Any]:
        """Share a (synthetic) screen: publish with the source "screen"; the reply."""
        if self.sharer is not None:
            await self.sharer.close()
        self.sharer = Peer(send=True, receive=False)
        offer = await self.sharer.offer()
        reply = await self.request({"type": "publish", "source": "screen", "sdp": offer})
        if reply["type"] == "published":
            assert reply["source"] == "screen", reply
            await self.sharer.accept(reply["sdp"])
            await self.trickle(self.sharer, "publish", "screen")
        return reply

    async def watch_screen(self, publisher: int, source: str = "screen") -> dict[str, Any]:
        """Receive a publisher's shared screen (or the video they play, source "playback");
        the reply."""
        peers = self.played if source == "playback" else self.screens
        if publisher in peers:
            await peers[publisher].close()
        peer = peers[publisher] = Peer(send=False, receive=True)
        message = {"type": "subscribe", "publisher": publisher, "source": source}
        reply = await self.request({**message, "sdp": await peer.offer()})
        if reply["type"] == "subscribed":
            assert reply["source"] == source and reply["publisher"] == publisher, reply
            await peer.accept(reply["sdp"])
            await self.trickle(peer, publisher, source)
        return reply

    async def close_peers(self) -> None:
        peers = [*self.viewers.values(), *self.screens.values(), *self.played.values()]
        for peer in [self.publisher, self.sharer, *peers]:
            if peer is not None:
                await peer.close()
