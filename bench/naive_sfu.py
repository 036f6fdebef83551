"""The naive design, for comparison (`python -m bench.naive_sfu --port 0`): an SFU in plain aiortc
that decodes what a publisher sends and encodes it again for every subscriber.

Each publisher's tracks are decoded by aiortc's receiver (a decoder thread per track) and handed out
with `aiortc.contrib.media.MediaRelay`; each subscriber's RTCRtpSender runs its own VP8 and Opus
encoder. It speaks just enough of the Kurento Protocol for the benchmark's clients: create
MediaPipeline/WebRtcEndpoint, connect, subscribe, processOffer, gatherCandidates, addIceCandidate,
release. Candidates are in the SDP both ways, so trickled ones are ignored.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import logging
import signal
from typing import Any

from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaRelay
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from mediaserver import ice

SOURCE_TIMEOUT = 20.0


class Endpoint:
    def __init__(self, relay: MediaRelay) -> None:
        self.relay = relay
        self.pc: RTCPeerConnection | None = None
        self.source: Endpoint | None = None
        self.tracks: dict[str, MediaStreamTrack] = {}
        self.ready = asyncio.Event()  # set once audio and video arrived from the peer
        self._drains: list[asyncio.Task[None]] = []

    def _on_track(self, track: MediaStreamTrack) -> None:
        self.tracks[track.kind] = track
        # Keep the relay reading (and the decoder's queue empty) with or without subscribers.
        self._drains.append(asyncio.ensure_future(_drain(self.relay.subscribe(track, False))))
        if len(self.tracks) == 2:
            self.ready.set()

    async def process_offer(self, offer: str) -> str:
        pc = self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        pc.on("track", self._on_track)
        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
        if self.source is not None:
            await asyncio.wait_for(self.source.ready.wait(), SOURCE_TIMEOUT)
            for transceiver in pc.getTransceivers():
                track = self.source.tracks.get(transceiver.kind)
                if track is not None:
                    transceiver.direction = "sendonly"
                    transceiver.sender.replaceTrack(self.relay.subscribe(track, buffered=False))
        await pc.setLocalDescription(await pc.createAnswer())
        return pc.localDescription.sdp

    async def close(self) -> None:
        for task in self._drains:
            task.cancel()
        if self.pc is not None:
            await self.pc.close()


async def _drain(track: MediaStreamTrack) -> None:
    while True:
        await track.recv()


class NaiveSfu:
    def __init__(self) -> None:
        self.relay = MediaRelay()
        self.endpoints: dict[str, Endpoint] = {}
        self._ids = itertools.count(1)

    async def serve_socket(self, ws: ServerConnection) -> None:
        tasks: set[asyncio.Task[None]] = set()
        try:
            async for text in ws:
                task = asyncio.create_task(self.answer(ws, json.loads(text)))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        except ConnectionClosed:
            pass  # a benchmark client stopped

    async def answer(self, ws: ServerConnection, request: dict[str, Any]) -> None:
        params = request.get("params") or {}
        try:
            result: dict[str, Any] = {"sessionId": "naive"}
            value = await self.handle(request["method"], params)
            if value is not None:
                result["value"] = value
            response: dict[str, Any] = {"jsonrpc": "2.0", "id": request["id"], "result": result}
        except Exception as exc:
            logging.exception("%s failed", request.get("method"))
            error = {"code": -1, "message": repr(exc)}
            response = {"jsonrpc": "2.0", "id": request["id"], "error": error}
        with contextlib.suppress(ConnectionClosed):
            await ws.send(json.dumps(response))

    async def handle(self, method: str, params: dict[str, Any]) -> Any:
        if method == "create":
            object_id = f"naive-{next(self._ids)}"
            if params["type"] == "WebRtcEndpoint":
                self.endpoints[object_id] = Endpoint(self.relay)
            return object_id
        if method == "ping":  # the Kurento client's keep-alive
            return "pong"
        if method == "subscribe":
            return f"subscription-{next(self._ids)}"
        if method == "release":
            endpoints = list(self.endpoints.values())
            if params["object"] in self.endpoints:
                endpoints = [self.endpoints.pop(params["object"])]
            else:  # a pipeline: everything goes
                self.endpoints.clear()
            await asyncio.gather(*(e.close() for e in endpoints), return_exceptions=True)
            return None
        if method != "invoke":
            raise ValueError(f"unsupported method {method}")
        endpoint = self.endpoints[params["object"]]
        operation = params["operation"]
        arguments = params.get("operationParams") or {}
        if operation == "connect":
            self.endpoints[arguments["sink"]].source = endpoint
        elif operation == "processOffer":
            return await endpoint.process_offer(arguments["offer"])
        elif operation not in ("gatherCandidates", "addIceCandidate"):
            raise ValueError(f"unsupported operation {operation}")
        return None


async def run(port: int) -> None:
    sfu = NaiveSfu()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with serve(sfu.serve_socket, "127.0.0.1", port, max_size=None) as server:
        actual = next(iter(server.sockets)).getsockname()[1]
        print(f"Naive SFU ready at ws://127.0.0.1:{actual}/kurento", flush=True)
        await stop.wait()
        await asyncio.gather(*(e.close() for e in sfu.endpoints.values()), return_exceptions=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    ice.use_host_addresses(("127.0.0.1",))
    asyncio.run(run(args.port))


if __name__ == "__main__":
    main()
