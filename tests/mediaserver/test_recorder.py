"""RecorderEndpoint with real WebRTC publishers (aiortc): files that play, in sync, in every
profile; pause, stop and release as KMS has them; paths kept inside the recordings directory."""

from __future__ import annotations

import asyncio
import base64
import http.server
import os
import signal
import socket
import threading
import time
from pathlib import Path
from typing import ClassVar

import av
import numpy
import pytest

from mediaserver.server import MediaServer

from .peers import Clapperboard, Peer
from .rpc import Rpc, RpcError
from .test_process import free_port, start

EVENTS = ("UriEndpointStateChanged", "Recording", "Paused", "Stopped", "Error")


async def publish(rpc: Rpc, pipeline: str, **peer_options) -> tuple[str, Peer]:
    endpoint = await rpc.create("WebRtcEndpoint", mediaPipeline=pipeline)
    peer = Peer(send=True, receive=False, **peer_options)
    await peer.negotiate(rpc, endpoint)
    return endpoint, peer


async def recorder(rpc: Rpc, pipeline: str, uri: str, **options) -> str:
    element = await rpc.create("RecorderEndpoint", mediaPipeline=pipeline, uri=uri, **options)
    for event in EVENTS:
        await rpc.subscribe(element, event)
    return element


async def recorded_events(rpc: Rpc) -> list[str]:
    """The recorder events received so far, as `Type` or `Type:STATE`."""
    names = []
    while not rpc.events.empty():
        event = rpc.events.get_nowait()
        if event["type"] in EVENTS:
            state = event["data"].get("state")
            names.append(f"{event['type']}:{state}" if state else event["type"])
    return names


def streams(path: Path) -> dict[str, str]:
    with av.open(str(path)) as container:
        return {s.type: s.codec_context.name for s in container.streams}


def media_seconds(path: Path) -> float:
    """From the first packet's start to the last one's, over every stream (what a player shows
    when the file has no duration written, as after a crash)."""
    first, last = float("inf"), 0.0
    with av.open(str(path)) as container:
        for packet in container.demux():
            if packet.pts is None:
                continue
            at = float(packet.pts * packet.time_base)
            first, last = min(first, at), max(last, at)
    return last - first


def marks(path: Path) -> tuple[list[float], list[float]]:
    """When the picture turns white and when a beep starts, in seconds of the file."""
    flashes, beeps = [], []
    with av.open(str(path)) as container:
        was_bright = False
        for frame in container.decode(video=0):
            bright = frame.to_ndarray(format="gray").mean() > 128
            if bright and not was_bright:
                flashes.append(float(frame.time))
            was_bright = bright
    with av.open(str(path)) as container:
        was_loud = False
        for frame in container.decode(audio=0):
            samples = frame.to_ndarray().astype(numpy.float64).reshape(-1)
            loud = numpy.sqrt(numpy.mean(samples**2)) > 0.05 * (
                32768 if frame.format.name.startswith("s16") else 1.0
            )
            if loud and not was_loud:
                beeps.append(float(frame.time))
            was_loud = loud
    return flashes, beeps


def sync_offsets(flashes: list[float], beeps: list[float]) -> list[float]:
    """For each flash, how far the nearest beep is from it (positive: the beep comes later)."""
    return [min(beeps, key=lambda b: abs(b - f)) - f for f in flashes]


async def test_records_a_call_to_webm_that_plays_in_sync(
    media_server: MediaServer, rpc: Rpc
) -> None:
    directory = Path(media_server.config.recordings_dir)
    pipeline = await rpc.create("MediaPipeline")
    board = Clapperboard()
    source, peer = await publish(rpc, pipeline, tracks=(board.video(), board.audio()))
    try:
        element = await recorder(rpc, pipeline, f"file://{directory}/call.webm")
        await rpc.invoke(source, "connect", sink=element)
        assert await rpc.invoke(element, "getState") == "STOP"
        await rpc.invoke(element, "record")
        started = time.monotonic()
        assert await rpc.invoke(element, "getState") == "START"
        await asyncio.sleep(6)
        await rpc.invoke(element, "stopAndWait")
        wall = time.monotonic() - started
        assert await rpc.invoke(element, "getState") == "STOP"
    finally:
        await peer.close()
    assert await recorded_events(rpc) == [
        "UriEndpointStateChanged:START",
        "Recording",
        "UriEndpointStateChanged:STOP",
        "Stopped",
    ]
    path = directory / "call.webm"
    assert streams(path) == {"video": "vp8", "audio": "opus"}
    with av.open(str(path)) as container:
        duration = container.duration / 1_000_000
    # Media starts flowing once the publisher's connection is up, which it is before record().
    assert abs(duration - wall) / wall < 0.05, (duration, wall)
    flashes, beeps = marks(path)
    assert len(flashes) >= 4 and len(beeps) >= 4, (flashes, beeps)
    offsets = sync_offsets(flashes, beeps)
    assert all(abs(offset) < 0.1 for offset in offsets), offsets
    # Once the sender has reported its clock (RTCP, within the first second or so), audio and
    # video are placed where it captured them: the server's own jitter buffers, which hold audio
    # some 50 ms longer than video, do not show.
    assert all(abs(offset) < 0.03 for offset in offsets[2:]), offsets
    await rpc.request("release", object=pipeline)


async def test_pause_is_left_out_and_stop_is_final(media_server: MediaServer, rpc: Rpc) -> None:
    directory = Path(media_server.config.recordings_dir)
    pipeline = await rpc.create("MediaPipeline")
    source, peer = await publish(rpc, pipeline)
    try:
        element = await recorder(rpc, pipeline, "paused/take.webm")  # relative: in the directory
        await rpc.invoke(source, "connect", sink=element)
        await rpc.invoke(element, "record")
        await asyncio.sleep(2)
        await rpc.invoke(element, "pause")
        assert await rpc.invoke(element, "getState") == "PAUSE"
        await asyncio.sleep(2)
        await rpc.invoke(element, "record")
        await asyncio.sleep(2)
        await rpc.invoke(element, "stopAndWait")
        # A stopped recorder stays stopped; its file is complete (KMS ignores, and logs, this).
        await rpc.invoke(element, "record")
        assert await rpc.invoke(element, "getState") == "STOP"
    finally:
        await peer.close()
    assert await recorded_events(rpc) == [
        "UriEndpointStateChanged:START",
        "Recording",
        "UriEndpointStateChanged:PAUSE",
        "Paused",
        "UriEndpointStateChanged:START",
        "Recording",
        "UriEndpointStateChanged:STOP",
        "Stopped",
    ]
    path = directory / "paused" / "take.webm"
    assert 3.6 < media_seconds(path) < 4.5  # two seconds, twice; the pause left out
    with av.open(str(path)) as container:
        assert sum(1 for _ in container.decode(video=0)) > 90  # every frame decodes
    await rpc.request("release", object=pipeline)


@pytest.mark.parametrize(
    ("profile", "publisher_codec", "expected"),
    [
        ("MP4", "video/VP8", {"video": "h264", "audio": "opus"}),  # VP8 transcoded for MP4
        ("WEBM", "video/H264", {"video": "vp8", "audio": "opus"}),  # H.264 transcoded for WebM
        ("MKV", "video/H264", {"video": "h264", "audio": "opus"}),  # as it comes
        ("WEBM_AUDIO_ONLY", "video/VP8", {"audio": "opus"}),
        ("MP4_VIDEO_ONLY", "video/H264", {"video": "h264"}),
        ("FLV", "video/H264", {"video": "h264", "audio": "aac"}),  # Opus re-encoded for FLV
    ],
)
async def test_every_profile_makes_a_file_that_decodes(
    media_server: MediaServer, rpc: Rpc, profile: str, publisher_codec: str, expected: dict
) -> None:
    directory = Path(media_server.config.recordings_dir)
    pipeline = await rpc.create("MediaPipeline")
    source, peer = await publish(rpc, pipeline, video_codec=publisher_codec)
    name = f"take.{profile.lower()}"
    try:
        element = await recorder(rpc, pipeline, name, mediaProfile=profile)
        await rpc.invoke(source, "connect", sink=element)
        await rpc.invoke(element, "record")
        await asyncio.sleep(3)
        await rpc.invoke(element, "stopAndWait")
    finally:
        await peer.close()
    path = directory / name
    assert streams(path) == expected
    for kind in expected:
        with av.open(str(path)) as container:
            decoded = sum(1 for _ in container.decode(**{kind: 0}))
        # Transcoded video may drop frames on a busy machine; what matters is that it decodes.
        assert decoded > (10 if kind == "video" else 50), (kind, decoded)
    assert 2.0 < media_seconds(path) < 3.5
    await rpc.request("release", object=pipeline)


async def test_record_pause_stop_without_media_and_release_finishes_the_file(
    media_server: MediaServer, rpc: Rpc
) -> None:
    """What Kurento's own suite does (no source at all), then a release while recording."""
    directory = Path(media_server.config.recordings_dir)
    pipeline = await rpc.create("MediaPipeline")
    element = await recorder(rpc, pipeline, "nothing.webm")
    assert await rpc.invoke(element, "getUri") == "nothing.webm"
    await rpc.invoke(element, "stop")  # not recording: ignored, as KMS does
    await rpc.invoke(element, "record")
    await rpc.invoke(element, "pause")
    await rpc.invoke(element, "stop")
    await rpc.next_event("Stopped", element)
    assert not (directory / "nothing.webm").exists()  # nothing was recorded

    source, peer = await publish(rpc, pipeline)
    try:
        second = await recorder(rpc, pipeline, "released.webm")
        await rpc.invoke(source, "connect", sink=second)
        await rpc.invoke(second, "record")
        await asyncio.sleep(2)
        await rpc.request("release", object=second)  # finishes the file first
    finally:
        await peer.close()
    with av.open(str(directory / "released.webm")) as container:
        assert container.duration is not None and container.duration > 1_000_000
    await rpc.request("release", object=pipeline)


@pytest.mark.parametrize(
    "uri",
    [
        "file:///etc/kurento.webm",
        "../outside.webm",
        "file://{directory}/../outside.webm",
        "file://{directory}",
        "file://elsewhere{directory}/x.webm",
        "ftp://example.com/upload.webm",  # http(s) is an upload; other schemes are refused
        "link/escape.webm",
    ],
)
async def test_paths_outside_the_recordings_directory_are_refused(
    media_server: MediaServer, rpc: Rpc, uri: str
) -> None:
    directory = Path(media_server.config.recordings_dir)
    (directory / "link").symlink_to("/tmp")
    pipeline = await rpc.create("MediaPipeline")
    with pytest.raises(RpcError) as refused:
        await rpc.create(
            "RecorderEndpoint", mediaPipeline=pipeline, uri=uri.format(directory=directory)
        )
    assert refused.value.code == 40107
    await rpc.request("release", object=pipeline)


async def test_bad_constructor_parameters_are_refused(media_server: MediaServer, rpc: Rpc) -> None:
    pipeline = await rpc.create("MediaPipeline")
    for params, code in (
        ({}, 40001),  # no uri
        ({"uri": 7}, 40001),
        ({"uri": "a.webm", "mediaProfile": "NOPE"}, 40107),
        ({"uri": "a.webm", "mediaProfile": "KURENTO_SPLIT_RECORDER"}, 40107),
        ({"uri": "a.webm", "stopOnEndOfStream": "yes"}, 40001),
    ):
        with pytest.raises(RpcError) as refused:
            await rpc.create("RecorderEndpoint", mediaPipeline=pipeline, **params)
        assert refused.value.code == code, params
    await rpc.request("release", object=pipeline)


async def test_a_recording_survives_the_server_being_killed(tmp_path: Path) -> None:
    process, url = await start("--port", str(free_port()), "--recordings-dir", str(tmp_path))
    rpc = await Rpc.open(url)
    peer: Peer | None = None
    try:
        pipeline = await rpc.create("MediaPipeline")
        source, peer = await publish(rpc, pipeline)
        element = await rpc.create("RecorderEndpoint", mediaPipeline=pipeline, uri="crash.webm")
        await rpc.invoke(source, "connect", sink=element)
        await rpc.invoke(element, "record")
        started = time.monotonic()
        await asyncio.sleep(5)
        os.kill(process.pid, signal.SIGKILL)
        wall = time.monotonic() - started
        await process.wait()
    finally:
        if peer is not None:
            await peer.close()
        await rpc.close()
        if process.returncode is None:
            process.kill()
            await process.wait()
    path = tmp_path / "crash.webm"
    assert streams(path) == {"video": "vp8", "audio": "opus"}
    # Clusters are flushed as they are written: at most about a second is lost.
    assert wall - 1.5 < media_seconds(path) <= wall
    with av.open(str(path)) as container:
        assert sum(1 for _ in container.decode(video=0)) > 90


class _Receiver(http.server.BaseHTTPRequestHandler):
    """Takes one chunked POST, as KMS's recorder sends an http:// recording."""

    bodies: ClassVar[list[tuple[dict[str, str], bytes]]] = []

    def do_POST(self) -> None:
        body = bytearray()
        while True:
            size = int(self.rfile.readline().strip(), 16)
            if size == 0:
                self.rfile.readline()
                break
            body += self.rfile.read(size)
            self.rfile.readline()
        self.bodies.append((dict(self.headers), bytes(body)))
        self.send_response(201)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


async def test_an_http_uri_gets_the_recording_as_a_chunked_post(rpc: Rpc, tmp_path: Path) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Receiver.bodies.clear()
    try:
        pipeline = await rpc.create("MediaPipeline")
        source, peer = await publish(rpc, pipeline)
        try:
            uri = f"http://ada:s%40fe@127.0.0.1:{server.server_port}/upload/call.webm"
            element = await recorder(rpc, pipeline, uri)
            assert await rpc.invoke(element, "getUri") == uri
            await rpc.invoke(source, "connect", sink=element)
            await rpc.invoke(element, "record")
            await asyncio.sleep(3)
            await rpc.invoke(element, "stopAndWait")
        finally:
            await peer.close()
        assert "Error" not in await recorded_events(rpc)
        await rpc.request("release", object=pipeline)
    finally:
        server.shutdown()
        thread.join()
    [(headers, body)] = _Receiver.bodies
    assert headers["Content-Type"] == "video/webm"
    assert headers["Transfer-Encoding"] == "chunked"
    assert headers["Authorization"] == "Basic " + base64.b64encode(b"ada:s@fe").decode()
    path = tmp_path / "uploaded.webm"
    path.write_bytes(body)
    assert streams(path) == {"video": "vp8", "audio": "opus"}
    assert 2.0 < media_seconds(path) < 3.6


async def test_an_http_uri_that_refuses_is_an_error_event(rpc: Rpc) -> None:
    pipeline = await rpc.create("MediaPipeline")
    source, peer = await publish(rpc, pipeline)
    try:
        with socket.socket() as closed:  # a port nothing listens on
            closed.bind(("127.0.0.1", 0))
            port = closed.getsockname()[1]
        element = await recorder(rpc, pipeline, f"http://127.0.0.1:{port}/nowhere.webm")
        await rpc.invoke(source, "connect", sink=element)
        await rpc.invoke(element, "record")
        error = await rpc.next_event("Error", element, timeout=10)
        assert error["data"]["type"] == "UNEXPECTED_ERROR"
        assert f"127.0.0.1:{port}/nowhere.webm" in error["data"]["description"]
        await rpc.invoke(element, "stopAndWait")  # still answers; the element keeps working
    finally:
        await peer.close()
    await rpc.request("release", object=pipeline)


async def test_recording_starts_at_a_keyframe_when_connected_long_before(
    media_server: MediaServer, rpc: Rpc
) -> None:
    """The keyframe a new connection brings goes by before record(); the file must still start
    with one (aiortc's publisher, like Chrome, sends keyframes only when asked)."""
    directory = Path(media_server.config.recordings_dir)
    pipeline = await rpc.create("MediaPipeline")
    source, peer = await publish(rpc, pipeline)
    try:
        element = await recorder(rpc, pipeline, "later.webm")
        await rpc.invoke(source, "connect", sink=element)
        await asyncio.sleep(2.5)  # connected, not recording: its keyframe has gone by
        await rpc.invoke(element, "record")
        await asyncio.sleep(2)
        await rpc.invoke(element, "stopAndWait")
    finally:
        await peer.close()
    with av.open(str(directory / "later.webm")) as container:
        packets = [p for p in container.demux(video=0) if p.pts is not None]
        assert packets[0].is_keyframe
    with av.open(str(directory / "later.webm")) as container:
        assert sum(1 for _ in container.decode(video=0)) >= len(packets) - 1
    await rpc.request("release", object=pipeline)
