"""A benchmark client process: aiortc publishers or subscribers against a Kurento Protocol server
(ours, the naive SFU) or Janus's VideoRoom, driven by JSON lines on stdin, answering on stdout.

    python -m bench.client [OPTIONS] publisher URL MEDIA_FILE
    python -m bench.client [OPTIONS] subscriber URL [native|counting|forwarding]

OPTIONS: --protocol kurento|janus (default kurento), --ice-address A (default 127.0.0.1).

The media side (`Publisher`, `Subscriber`, `Client`) does not know the server; a signaling adapter
negotiates each peer connection with it: `KurentoSignaling` here, `bench.peers.janus.JanusSignaling`
for Janus. ICE gathers one address: 127.0.0.1 by default, the private network's client address when
the process runs in a network namespace of the benchmark's (`--ice-address`).

Publishers replay pre-encoded media (bench/media.py) and never encode. Subscribers never decode.
Their receivers keep aiortc's SRTP, RTP statistics and receiver reports, and either
* "native" (the default, the cheapest): "counting" until the first audio and video frames have
  arrived, then bench/native_receiver.py reads the socket and decrypts and counts in C (STUN,
  DTLS and RTCP still go to aiortc), so the clients stay cheaper than the server they measure;
* "counting": count frames by the RTP marker bit, with no jitter buffer,
  NACKs or bandwidth estimation (no REMB), or
* "forwarding": are the media server's own `ForwardingReceiver`s (built while
  `mediaserver.forwarding.FORWARDING` is set): aiortc's full receive path (jitter buffer, NACK,
  REMB) up to the reassembled encoded frame, which `on_frame` counts.
Either way packet loss comes from the receivers' RTP sequence-number statistics.

Commands (one JSON object per line, each answered by one line):
  {"cmd": "create_pipeline"}                                 -> {"pipeline": ID} (Janus: a room)
  {"cmd": "publish", "pipeline": ID}                         -> {"endpoint": ID} (Janus: its feed)
  {"cmd": "subscribe", "pipeline": ID, "sources": [ID|null]} -> {"created": n, "errors": [...],
                                                                "endpoints": [ID|null, ...]}
  {"cmd": "wait_media", "seconds": s}                        -> {"ready": n, "total": n}
  {"cmd": "snapshot"}                                        -> {"t": s, "subs": [[...], ...]}
  {"cmd": "close"}                                           -> {} and the process exits
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import aiortc.rtcpeerconnection
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.rtcrtpreceiver import StreamStatistics
from aiortc.rtp import RtpPacket

from mediaserver import forwarding, ice
from mediaserver.forwarding import FORWARDING, EncodedFrame, ForwardingReceiver
from signaling.kurento import KurentoClient

from .media import EncodedMedia, LoopTrack
from .native_receiver import NativeReceiver

SUBSCRIBE_CONCURRENCY = 4
NEGOTIATION_TIMEOUT = 60.0


class Signaling(Protocol):
    """How a client process negotiates its peer connections with one kind of server."""

    async def create_pipeline(self) -> str: ...

    async def publish(self, pc: RTCPeerConnection, pipeline: str) -> str:
        """Negotiate a sending peer connection; the id subscribers name as their source."""
        ...

    async def subscribe(self, pc: RTCPeerConnection, pipeline: str, source: str | None) -> str:
        """Negotiate a receiving peer connection fed by `source` (None: by nothing)."""
        ...

    async def close(self) -> None: ...


async def negotiate(rpc: KurentoClient, pc: RTCPeerConnection, endpoint: str) -> None:
    """The Kurento pattern: offer here, processOffer there, trickle our candidates (ours are in
    the SDP already, so the server's IceCandidateFound events are not needed)."""
    await rpc.subscribe(endpoint, "IceCandidateFound", lambda data: None)
    await pc.setLocalDescription(await pc.createOffer())
    answer = await rpc.invoke(endpoint, "processOffer", offer=pc.localDescription.sdp)
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
    await rpc.invoke(endpoint, "gatherCandidates")
    for line in pc.localDescription.sdp.splitlines():
        if line.startswith("a=candidate:"):
            candidate = {"candidate": line[2:], "sdpMid": "0", "sdpMLineIndex": 0}
            await rpc.invoke(endpoint, "addIceCandidate", candidate=candidate)


class KurentoSignaling:
    """The Kurento Protocol: a WebRtcEndpoint per peer connection, a source `connect`ed to it."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.rpc: KurentoClient | None = None

    def _connect(self) -> KurentoClient:
        if self.rpc is None:
            self.rpc = KurentoClient(self.url, request_timeout=NEGOTIATION_TIMEOUT)
        return self.rpc

    async def create_pipeline(self) -> str:
        return str(await self._connect().create("MediaPipeline"))

    async def publish(self, pc: RTCPeerConnection, pipeline: str) -> str:
        rpc = self._connect()
        endpoint = await rpc.create("WebRtcEndpoint", mediaPipeline=pipeline)
        await negotiate(rpc, pc, endpoint)
        return str(endpoint)

    async def subscribe(self, pc: RTCPeerConnection, pipeline: str, source: str | None) -> str:
        rpc = self._connect()
        endpoint = await rpc.create("WebRtcEndpoint", mediaPipeline=pipeline)
        if source is not None:
            await rpc.invoke(source, "connect", sink=endpoint)
        await negotiate(rpc, pc, endpoint)
        return str(endpoint)

    async def close(self) -> None:
        if self.rpc is not None:
            await self.rpc.close()


class Publisher:
    def __init__(self, media: EncodedMedia) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.audio = LoopTrack("audio", media.audio)
        self.video = LoopTrack("video", media.video, media.keyframes)
        self.pc.addTransceiver(self.audio, direction="sendonly")
        video = self.pc.addTransceiver(self.video, direction="sendonly")
        # A PLI from the server makes the replay jump to a keyframe, as an encoder would.
        video.sender._send_keyframe = self.video.request_keyframe  # type: ignore[method-assign]

    async def counters(self) -> list[int]:
        """[video frames sent, keyframe requests, then packets sent and packets the server reported
        lost (RTCP receiver reports) for video and for audio]."""
        packets = {"video": [0, 0], "audio": [0, 0]}
        for transceiver in self.pc.getTransceivers():
            for stats in (await transceiver.sender.getStats()).values():
                if stats.type == "outbound-rtp":
                    packets[transceiver.kind][0] = stats.packetsSent
                elif stats.type == "remote-inbound-rtp":
                    packets[transceiver.kind][1] = stats.packetsLost
        return [self.video.sent, self.video.keyframe_requests, *packets["video"], *packets["audio"]]


class CountingReceiver(ForwardingReceiver):
    """A forwarding receiver that stops after the RTP statistics: one frame per marker bit (the last
    packet of a video frame; every Opus packet), no jitter buffer, NACK or bandwidth estimation."""

    def __init__(self, kind: str, transport: object) -> None:
        super().__init__(kind, transport)
        self.on_marker: Callable[[], None] | None = None
        self.payload_bytes = 0  # RTP payload received (RTX aside): the stream's bitrate

    async def _handle_rtp_packet(self, packet: RtpPacket, arrival_time_ms: int) -> None:
        codec = self._RTCRtpReceiver__codecs.get(packet.payload_type)  # type: ignore[attr-defined]
        if codec is None:
            return
        streams: dict[int, StreamStatistics]
        streams = self._RTCRtpReceiver__remote_streams  # type: ignore[attr-defined]
        stream = streams.get(packet.ssrc)
        if stream is None:
            stream = streams[packet.ssrc] = StreamStatistics(codec.clockRate)
        stream.add(packet)
        if codec.name != "rtx":
            self.payload_bytes += len(packet.payload)
        if packet.marker and codec.name != "rtx" and self.on_marker is not None:
            self.on_marker()


class Subscriber:
    """A receive-only peer whose receivers count encoded frames and never decode."""

    native_receivers = False  # "native": bench/native_receiver.py takes over once media flows

    def __init__(self) -> None:
        self.frames = {"audio": 0, "video": 0}
        self.media = asyncio.Event()  # set once both audio and video frames arrived
        self.receivers: dict[str, ForwardingReceiver] = {}
        self.native: NativeReceiver | None = None
        self._before_native: dict[str, tuple[int, int, int, int]] = {}
        token = FORWARDING.set(True)
        try:
            self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
            for kind in ("audio", "video"):
                receiver = self.pc.addTransceiver(kind, direction="recvonly").receiver
                assert isinstance(receiver, ForwardingReceiver) and receiver.forwarding
                if isinstance(receiver, CountingReceiver):
                    receiver.on_marker = self._counter(kind)
                else:
                    receiver.on_frame = self._counter(kind)
                self.receivers[kind] = receiver
        finally:
            FORWARDING.reset(token)

    def _counter(self, kind: str) -> Any:
        frames = self.frames
        media = self.media

        def count(frame: EncodedFrame | None = None) -> None:
            frames[kind] += 1
            if not media.is_set() and frames["audio"] and frames["video"]:
                media.set()
                if self.native_receivers:
                    self._go_native()

        return count

    def _go_native(self) -> None:
        """Hand the socket to the native receiver; what aiortc counted so far is kept."""
        payload_types = {}
        for kind, receiver in self.receivers.items():
            codecs = receiver._RTCRtpReceiver__codecs  # type: ignore[attr-defined]
            payload_types[kind] = next(pt for pt, c in codecs.items() if c.name != "rtx")
        native = NativeReceiver(self.pc, payload_types)
        for kind in ("video", "audio"):
            expected, received = self._aiortc_packets(kind)
            payload = getattr(self.receivers[kind], "payload_bytes", 0)
            self._before_native[kind] = (self.frames[kind], expected, received, payload)
        if native.attach():
            self.native = native

    def packets(self, kind: str) -> tuple[int, int]:
        """(expected, received) RTP packets of the main stream of a kind (RTX aside)."""
        if self.native is not None:
            _, expected, received, _ = self._native_counts(kind)
            return expected, received
        return self._aiortc_packets(kind)

    def _native_counts(self, kind: str) -> tuple[int, int, int, int]:
        """(frames, expected, received, payload bytes): aiortc's before the switch plus the
        native receiver's after it (a packet in flight at the switch counts as expected)."""
        assert self.native is not None
        before = self._before_native[kind]
        after = self.native.counters(kind)
        return tuple(a + b for a, b in zip(before, after, strict=True))  # type: ignore[return-value]

    def _aiortc_packets(self, kind: str) -> tuple[int, int]:
        streams = self.receivers[kind]._RTCRtpReceiver__remote_streams  # type: ignore[attr-defined]
        known = [s for s in streams.values() if s.max_seq is not None]
        if not known:
            return 0, 0
        main = max(known, key=lambda s: s.packets_received)
        return main.packets_expected, main.packets_received

    def counters(self) -> list[int]:
        """[video frames, audio frames, (expected, received) video packets, the same for audio,
        then RTP payload bytes received of video and of audio (counting receivers only)]."""
        if self.native is not None:
            video, audio = self._native_counts("video"), self._native_counts("audio")
            return [video[0], audio[0], *video[1:3], *audio[1:3], video[3], audio[3]]
        return [
            self.frames["video"],
            self.frames["audio"],
            *self.packets("video"),
            *self.packets("audio"),
            *(getattr(self.receivers[kind], "payload_bytes", 0) for kind in ("video", "audio")),
        ]


class Client:
    def __init__(self, role: str, signaling: Signaling, media: EncodedMedia | None) -> None:
        self.role = role
        self.signaling = signaling
        self.media = media
        self.publishers: list[Publisher] = []
        self.subscribers: list[Subscriber] = []

    async def create_pipeline(self) -> dict[str, Any]:
        return {"pipeline": await self.signaling.create_pipeline()}

    async def publish(self, pipeline: str) -> dict[str, Any]:
        assert self.media is not None
        publisher = Publisher(self.media)
        self.publishers.append(publisher)
        async with asyncio.timeout(NEGOTIATION_TIMEOUT):
            endpoint = await self.signaling.publish(publisher.pc, pipeline)
        return {"endpoint": endpoint}

    async def _subscribe_one(self, pipeline: str, source: str | None) -> str:
        subscriber = Subscriber()
        self.subscribers.append(subscriber)
        async with asyncio.timeout(NEGOTIATION_TIMEOUT):
            return await self.signaling.subscribe(subscriber.pc, pipeline, source)

    async def subscribe(self, pipeline: str, sources: list[str | None]) -> dict[str, Any]:
        errors: list[str] = []
        endpoints: list[str | None] = []
        created = 0
        for start in range(0, len(sources), SUBSCRIBE_CONCURRENCY):
            batch = sources[start : start + SUBSCRIBE_CONCURRENCY]
            results = await asyncio.gather(
                *(self._subscribe_one(pipeline, source) for source in batch),
                return_exceptions=True,
            )
            for result in results:
                if isinstance(result, BaseException):
                    errors.append(repr(result)[:300])
                    endpoints.append(None)
                else:
                    created += 1
                    endpoints.append(result)
        return {"created": created, "errors": errors, "endpoints": endpoints}

    async def wait_media(self, seconds: float) -> dict[str, Any]:
        try:
            async with asyncio.timeout(seconds):
                await asyncio.gather(*(s.media.wait() for s in self.subscribers))
        except TimeoutError:
            pass
        ready = sum(1 for s in self.subscribers if s.media.is_set())
        return {"ready": ready, "total": len(self.subscribers)}

    async def snapshot(self) -> dict[str, Any]:
        return {
            "t": time.monotonic(),
            "subs": [s.counters() for s in self.subscribers],
            "pubs": [await p.counters() for p in self.publishers],
        }

    async def close(self) -> None:
        peers = [p.pc for p in self.publishers] + [s.pc for s in self.subscribers]
        await asyncio.gather(*(pc.close() for pc in peers), return_exceptions=True)
        await self.signaling.close()

    async def handle(self, command: dict[str, Any]) -> dict[str, Any]:
        name = command["cmd"]
        if name == "create_pipeline":
            return await self.create_pipeline()
        if name == "publish":
            return await self.publish(command["pipeline"])
        if name == "subscribe":
            return await self.subscribe(command["pipeline"], command["sources"])
        if name == "wait_media":
            return await self.wait_media(float(command["seconds"]))
        if name == "snapshot":
            return await self.snapshot()
        if name == "close":
            await self.close()
            return {}
        raise ValueError(f"unknown command {name!r}")


async def serve(client: Client) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 24)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        command = json.loads(line)
        try:
            reply = {"ok": True, **await client.handle(command)}
        except Exception as exc:
            logging.exception("command %s failed", command.get("cmd"))
            reply = {"ok": False, "error": repr(exc)[:500]}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()
        if command["cmd"] == "close":
            return
    await client.close()  # stdin closed: the benchmark is gone


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.client")
    parser.add_argument("--protocol", choices=["kurento", "janus"], default="kurento")
    parser.add_argument("--ice-address", default="127.0.0.1", help="the one address ICE gathers")
    parser.add_argument("role", choices=["publisher", "subscriber"])
    parser.add_argument("url")
    parser.add_argument("extra", nargs="?", help="publisher: MEDIA_FILE; subscriber: receiver")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    ice.use_host_addresses((args.ice_address,))
    media = EncodedMedia.load(Path(args.extra)) if args.role == "publisher" else None
    if args.role == "subscriber":
        receiver = args.extra or "native"
        Subscriber.native_receivers = receiver == "native"
        if receiver in ("native", "counting"):
            aiortc.rtcpeerconnection.RTCRtpReceiver = CountingReceiver  # type: ignore[misc]
        else:
            forwarding.install()
    signaling: Signaling
    if args.protocol == "janus":
        from .peers.janus import JanusSignaling

        signaling = JanusSignaling(args.url)
    else:
        signaling = KurentoSignaling(args.url)
    asyncio.run(serve(Client(args.role, signaling, media)))


if __name__ == "__main__":
    main()
