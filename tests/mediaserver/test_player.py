"""PlayerEndpoint with real viewers (aiortc) and recorders: files made here with PyAV played in
real time, as they are or transcoded; pause, stop, seek and the end of the stream as KMS has them;
a viewer that joins late gets a picture at once; http:// sources; bad sources reported, not fatal.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import http.server
import math
import shutil
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path

import av
import numpy
import pytest

from mediaserver.server import MediaServer
from tests.conftest import require

from .conftest import KURENTO_CLIENT_DIR
from .peers import Peer
from .rpc import Rpc, RpcError
from .test_recorder import marks, streams, sync_offsets

EVENTS = ("UriEndpointStateChanged", "EndOfStream", "Error", "MediaTranscodingStateChanged")


def make_media(
    path: Path,
    *,
    video: str | None = "libvpx",
    audio: str | None = "libopus",
    seconds: float = 3.0,
    fps: int = 30,
    keyframe_interval: float = 1.0,
    size: tuple[int, int] = (320, 240),
    flashes: bool = True,
    video_options: dict[str, str] | None = None,
) -> Path:
    """A clip with a moving bar on a grey picture and a quiet tone. With `flashes`, every second
    starts with 100 ms of white picture and a loud beep, so sync can be measured."""
    width, height = size
    frames = round(seconds * fps)
    with av.open(str(path), "w") as output:
        video_stream = audio_stream = None
        if video is not None:
            video_stream = output.add_stream(video, rate=fps)
            video_stream.width, video_stream.height, video_stream.pix_fmt = width, height, "yuv420p"
            gop = round(keyframe_interval * fps)
            video_stream.codec_context.gop_size = gop
            video_stream.codec_context.options = {
                "keyint_min": str(gop),  # no keyframe at scene changes (the flashes)
                "sc_threshold": "0",
                **(video_options or {}),
            }
        if audio is not None:
            audio_stream = output.add_stream(audio, rate=48000)
            audio_stream.layout = "stereo"
        samples, chunk = 0, 960
        for index in range(frames):
            now = index / fps
            flash = flashes and now % 1.0 < 0.1
            if video_stream is not None:
                image = numpy.full((height, width, 3), (90, 110, 130), numpy.uint8)
                image[:, (index * 6) % width :][:, :12] = 255
                if flash:
                    image[:] = 255
                picture = av.VideoFrame.from_ndarray(image, format="rgb24")
                picture.pts = index
                picture.time_base = Fraction(1, fps)
                for packet in video_stream.encode(picture):
                    output.mux(packet)
            while audio_stream is not None and samples < (index + 1) * 48000 / fps:
                t = (numpy.arange(chunk) + samples) / 48000
                loud = flashes and (samples / 48000) % 1.0 < 0.1
                wave = numpy.sin(2 * math.pi * (1000 if loud else 440) * t)
                values = (wave * (12000 if loud else 800)).astype(numpy.int16)
                frame = av.AudioFrame.from_ndarray(
                    numpy.stack([values, values]).T.reshape(1, -1), format="s16", layout="stereo"
                )
                frame.sample_rate, frame.pts = 48000, samples
                samples += chunk
                for packet in audio_stream.encode(frame):
                    output.mux(packet)
        for stream in (video_stream, audio_stream):
            if stream is not None:
                for packet in stream.encode(None):
                    output.mux(packet)
    return path


def keyframe_times(path: Path) -> list[float]:
    with av.open(str(path)) as container:
        return [
            round(float(packet.pts * packet.time_base), 2)
            for packet in container.demux(video=0)
            if packet.size and packet.is_keyframe
        ]


def media_dir(media_server: MediaServer) -> Path:
    directory = Path(media_server.config.recordings_dir) / "media"
    directory.mkdir(exist_ok=True)
    return directory


async def player(rpc: Rpc, pipeline: str, uri: str, **options) -> str:
    element = await rpc.create("PlayerEndpoint", mediaPipeline=pipeline, uri=uri, **options)
    for event in EVENTS:
        await rpc.subscribe(element, event)
    return element


async def viewer(rpc: Rpc, pipeline: str, source: str, **peer_options) -> tuple[str, Peer]:
    endpoint = await rpc.create("WebRtcEndpoint", mediaPipeline=pipeline)
    await rpc.invoke(source, "connect", sink=endpoint)
    peer = Peer(send=False, receive=True, **peer_options)
    await peer.negotiate(rpc, endpoint)
    return endpoint, peer


async def connected(peer: Peer, timeout: float = 10) -> None:
    async with asyncio.timeout(timeout):
        while peer.pc.connectionState != "connected":
            await asyncio.sleep(0.02)


class EventLog:
    """Every event one client receives, kept in order; `wait` finds the next of a type."""

    def __init__(self, rpc: Rpc) -> None:
        self.rpc = rpc
        self.seen: list[dict] = []
        self._cursors: dict[str, int] = {}

    async def wait(self, event_type: str, timeout: float = 10) -> dict:
        async with asyncio.timeout(timeout):
            while True:
                start = self._cursors.get(event_type, 0)
                for index in range(start, len(self.seen)):
                    if self.seen[index]["type"] == event_type:
                        self._cursors[event_type] = index + 1
                        return self.seen[index]
                self._cursors[event_type] = len(self.seen)
                self.seen.append(await self.rpc.events.get())

    def states(self) -> list[str]:
        """The state changes and ends of stream so far: `START`, `STOP`, `EOS`..."""
        while not self.rpc.events.empty():
            self.seen.append(self.rpc.events.get_nowait())
        return [
            event["data"]["state"] if event["type"] == "UriEndpointStateChanged" else "EOS"
            for event in self.seen
            if event["type"] in ("UriEndpointStateChanged", "EndOfStream")
        ]


def player_threads() -> int:
    return sum(thread.name == "player" for thread in threading.enumerate())


async def players_gone() -> bool:
    """Whether every player's thread has ended (they close their source as they end)."""
    for _ in range(40):
        if player_threads() == 0:
            return True
        await asyncio.sleep(0.05)
    return False


async def play_to_the_end(log: EventLog, element: str, peer: Peer, seconds: float) -> float:
    """Play once the viewer is connected; how long it took until EndOfStream."""
    await connected(peer)
    await log.rpc.invoke(element, "play")
    started = time.monotonic()
    await log.wait("EndOfStream", timeout=seconds + 10)
    return time.monotonic() - started


async def test_plays_a_webm_file_as_it_is_to_a_viewer(media_server: MediaServer, rpc: Rpc) -> None:
    path = make_media(media_dir(media_server) / "clip.webm")
    pipeline = await rpc.create("MediaPipeline")
    element = await player(rpc, pipeline, f"file://{path}")
    await rpc.subscribe(element, "MediaFlowOutStateChanged")
    log = EventLog(rpc)
    _, peer = await viewer(rpc, pipeline, element)
    try:
        assert await rpc.invoke(element, "getState") == "STOP"
        played = await play_to_the_end(log, element, peer, 3)
        flow = await log.wait("MediaFlowOutStateChanged")
        assert flow["data"]["state"] == "FLOWING"
        assert await rpc.invoke(element, "getState") == "STOP"
        await asyncio.sleep(0.3)  # the last frames reach the viewer
    finally:
        await peer.close()
    assert abs(played - 3.0) < 0.5, played
    received = peer.received
    assert received.video_frames >= 75 and received.non_black_frames > 0, received
    assert received.audio_frames >= 120, received  # 150 Opus frames of 20 ms
    assert received.sizes == {(320, 240)}
    assert log.states() == ["START", "STOP", "EOS"]
    assert not any(e["type"] == "MediaTranscodingStateChanged" for e in log.seen)
    await rpc.request("release", object=pipeline)


async def test_mp4_h264_goes_out_as_it_is_and_aac_becomes_opus(
    media_server: MediaServer, rpc: Rpc
) -> None:
    make_media(
        media_dir(media_server) / "clip.mp4",
        video="libx264",
        audio="aac",
        video_options={"profile": "baseline", "preset": "veryfast"},
    )
    pipeline = await rpc.create("MediaPipeline")
    element = await player(rpc, pipeline, "media/clip.mp4")  # a path in the server's directory
    log = EventLog(rpc)
    _, peer = await viewer(rpc, pipeline, element, video_codec="video/H264")
    try:
        await play_to_the_end(log, element, peer, 3)
        assert await rpc.invoke(element, "isMediaTranscoding", mediaType="VIDEO") is False
        await asyncio.sleep(0.3)
    finally:
        await peer.close()
    assert peer.received.video_frames >= 75 and peer.received.non_black_frames > 0
    assert peer.received.audio_frames >= 120
    transcoding = await log.wait("MediaTranscodingStateChanged")  # the AAC
    assert transcoding["data"]["mediaType"] == "AUDIO"
    await rpc.request("release", object=pipeline)


async def test_vp9_is_transcoded_to_vp8(media_server: MediaServer, rpc: Rpc) -> None:
    path = make_media(
        media_dir(media_server) / "vp9.webm",
        video="libvpx-vp9",
        video_options={"deadline": "realtime", "cpu-used": "8"},
    )
    pipeline = await rpc.create("MediaPipeline")
    element = await player(rpc, pipeline, f"file://{path}")
    log = EventLog(rpc)
    _, peer = await viewer(rpc, pipeline, element, video_codec="video/VP8")
    try:
        await connected(peer)
        await rpc.invoke(element, "play")
        event = await log.wait("MediaTranscodingStateChanged")
        assert event["data"]["state"] == "TRANSCODING" and event["data"]["mediaType"] == "VIDEO"
        assert await rpc.invoke(element, "isMediaTranscoding", mediaType="VIDEO") is True
        await log.wait("EndOfStream", timeout=10)
        await asyncio.sleep(0.3)
    finally:
        await peer.close()
    assert peer.received.video_frames >= 75 and peer.received.non_black_frames > 0
    assert peer.received.audio_frames >= 120
    await rpc.request("release", object=pipeline)


async def test_pause_stop_seek_position_and_video_info(media_server: MediaServer, rpc: Rpc) -> None:
    path = make_media(media_dir(media_server) / "six.webm", seconds=6.0)
    pipeline = await rpc.create("MediaPipeline")
    element = await player(rpc, pipeline, f"file://{path}")
    log = EventLog(rpc)
    _, peer = await viewer(rpc, pipeline, element)
    try:
        # Nothing is known before the source is opened, as KMS answers with its pipeline stopped.
        info = await rpc.invoke(element, "getVideoInfo")
        assert info["__type__"] == "VideoInfo" and info["isSeekable"] is False
        with pytest.raises(RpcError) as stopped:
            await rpc.invoke(element, "setPosition", position=1000)
        assert (stopped.value.code, stopped.value.message) == (40700, "Seek fails")
        await connected(peer)
        await rpc.invoke(element, "play")
        await asyncio.sleep(1.0)
        info = await rpc.invoke(element, "getVideoInfo")
        assert info["isSeekable"] is True and info["seekableInit"] == 0
        assert abs(info["duration"] - 6000) <= 50 and info["seekableEnd"] == info["duration"]
        assert 700 <= await rpc.invoke(element, "getPosition") <= 1300

        await rpc.invoke(element, "pause")
        assert await rpc.invoke(element, "getState") == "PAUSE"
        await asyncio.sleep(0.3)
        frames, position = peer.received.video_frames, await rpc.invoke(element, "getPosition")
        await asyncio.sleep(1.0)
        assert peer.received.video_frames - frames <= 1  # one may still have been on its way
        assert await rpc.invoke(element, "getPosition") == position

        await rpc.invoke(element, "play")  # resumes where it was
        await asyncio.sleep(0.5)
        assert peer.received.video_frames - frames >= 10
        assert position < await rpc.invoke(element, "getPosition") < position + 800

        await rpc.invoke(element, "setPosition", position=4000)  # a keyframe every second
        assert 4000 <= await rpc.invoke(element, "getPosition") <= 4200
        started = time.monotonic()
        await log.wait("EndOfStream", timeout=10)
        assert 1.5 < time.monotonic() - started < 2.6

        await rpc.invoke(element, "play")  # after the end (or stop) it starts from the beginning
        await asyncio.sleep(0.5)
        assert 200 <= await rpc.invoke(element, "getPosition") <= 800
        await rpc.invoke(element, "stop")
        assert await rpc.invoke(element, "getPosition") == 0
        assert isinstance(await rpc.invoke(element, "getElementGstreamerDot"), str)
    finally:
        await peer.close()
    assert log.states() == ["START", "PAUSE", "START", "STOP", "EOS", "START", "STOP"]
    await rpc.request("release", object=pipeline)


async def test_a_late_viewer_gets_a_picture_at_once_despite_rare_keyframes(
    media_server: MediaServer, rpc: Rpc
) -> None:
    path = make_media(
        media_dir(media_server) / "rare.webm", seconds=10.0, keyframe_interval=5.0, flashes=False
    )
    assert keyframe_times(path) == [0.0, 5.0]
    pipeline = await rpc.create("MediaPipeline")
    element = await player(rpc, pipeline, f"file://{path}")
    _, first = await viewer(rpc, pipeline, element)
    late = None
    try:
        await connected(first)
        await rpc.invoke(element, "play")
        await asyncio.sleep(1.5)  # well past the first keyframe, 3.5 s before the next
        assert first.received.video_frames > 20
        _, late = await viewer(rpc, pipeline, element)
        await connected(late)
        joined = time.monotonic()
        await late.wait_video(1, timeout=3)
        assert late.received.first_video_at is not None
        waited = late.received.first_video_at - joined
        assert waited < 1.5, waited
        await late.wait_video(30, timeout=3)  # and it goes on from there
        assert late.received.non_black_frames > 0
        # Releasing the player mid-play ends its thread and closes its file.
        assert player_threads() == 1
        await rpc.request("release", object=element)
        assert await players_gone()
    finally:
        await first.close()
        if late is not None:
            await late.close()
    await rpc.request("release", object=pipeline)


@contextmanager
def http_server(directory: Path) -> Iterator[str]:
    """A plain HTTP server for `directory` on 127.0.0.1; its base URL."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(directory))
    handler.log_message = lambda *args: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


async def test_plays_an_http_source(media_server: MediaServer, rpc: Rpc) -> None:
    directory = media_dir(media_server)
    make_media(directory / "web.webm", seconds=2.0)
    with http_server(directory) as base:
        pipeline = await rpc.create("MediaPipeline")
        element = await player(rpc, pipeline, f"{base}/web.webm")
        log = EventLog(rpc)
        _, peer = await viewer(rpc, pipeline, element)
        try:
            played = await play_to_the_end(log, element, peer, 2)
            await asyncio.sleep(0.3)
        finally:
            await peer.close()
        assert abs(played - 2.0) < 0.5, played
        assert peer.received.video_frames >= 45 and peer.received.non_black_frames > 0
        assert peer.received.audio_frames >= 80
        await rpc.request("release", object=pipeline)


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.asynccontextmanager
async def rtsp_server() -> AsyncIterator[tuple[str, str]]:
    """A real RTSP server (npm rtsp-streaming-server, tests/kurento_client/rtsp_server.js):
    the URL base producers publish to, and the one clients play from."""
    node = shutil.which("node")
    require(node is not None, "Node.js (node)")
    require(
        (KURENTO_CLIENT_DIR / "node_modules" / "rtsp-streaming-server").is_dir(),
        "npm rtsp-streaming-server (make test installs it in tests/kurento_client)",
    )
    publish, play = free_port(), free_port()
    rtp = free_port(socket.SOCK_DGRAM) & ~1  # a pair of its own per stream, from here up
    process = await asyncio.create_subprocess_exec(
        node,
        str(KURENTO_CLIENT_DIR / "rtsp_server.js"),
        str(publish),
        str(play),
        str(rtp),
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        async with asyncio.timeout(10):
            assert (await process.stdout.readline()).strip() == b"ready"
        yield f"rtsp://127.0.0.1:{publish}", f"rtsp://127.0.0.1:{play}"
    finally:
        process.kill()
        await process.wait()


def publish_rtsp(source: Path, url: str) -> None:
    """Publish a file to an RTSP server in real time (ANNOUNCE/RECORD, RTP over UDP), as a
    camera or an encoder pushing its stream would; the encoded packets go as they are."""
    with (
        av.open(str(source)) as clip,
        av.open(url, "w", format="rtsp", options={"rtsp_transport": "udp"}) as out,
    ):
        streams = {s.index: out.add_stream_from_template(s) for s in clip.streams}
        started = time.monotonic()
        for packet in clip.demux():
            if packet.dts is None:
                continue
            delay = started + float(packet.pts * packet.time_base) - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            packet.stream = streams[packet.stream.index]
            out.mux(packet)


async def test_plays_an_rtsp_source(media_server: MediaServer, rpc: Rpc, tmp_path: Path) -> None:
    """A live RTSP stream (a camera, say) from a real RTSP server: VP8 and Opus go on as they
    are, the viewer decodes them, and stopping the player lets the stream go."""
    clip = make_media(tmp_path / "camera.webm", seconds=8.0)
    async with rtsp_server() as (publish_base, play_base):
        publisher = asyncio.create_task(
            asyncio.to_thread(publish_rtsp, clip, f"{publish_base}/camera")
        )
        await asyncio.sleep(1.0)  # announced and recording
        pipeline = await rpc.create("MediaPipeline")
        element = await player(rpc, pipeline, f"{play_base}/camera", networkCache=200)
        log = EventLog(rpc)
        _, peer = await viewer(rpc, pipeline, element)
        try:
            await connected(peer)
            await rpc.invoke(element, "play")
            await peer.wait_video(60, timeout=15)
            assert peer.received.non_black_frames > 0
            assert peer.received.sizes == {(320, 240)}
            assert peer.received.audio_frames > 50
            assert not await rpc.invoke(element, "isMediaTranscoding", mediaType="VIDEO")
            await rpc.invoke(element, "stop")
            assert "STOP" in log.states()
        finally:
            await peer.close()
            await rpc.request("release", object=pipeline)
            await publisher
        assert await players_gone()


async def test_bad_sources_are_reported_and_the_player_keeps_working(
    media_server: MediaServer, rpc: Rpc
) -> None:
    directory = media_dir(media_server)
    (directory / "notes.webm").write_text("not a video " * 100)
    with socket.socket() as probe:  # a port on 127.0.0.1 where nothing listens
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    pipeline = await rpc.create("MediaPipeline")
    # KMS's two player errors; the event's `type` field carries the event's name on the wire.
    for uri, description in (
        ("media/missing.webm", "Invalid URI"),
        ("media/notes.webm", "Invalid Media"),
        (f"http://127.0.0.1:{closed_port}/clip.webm", "Invalid URI"),
    ):
        element = await player(rpc, pipeline, uri)
        log = EventLog(rpc)
        await rpc.invoke(element, "play")
        error = await log.wait("Error")
        assert error["data"]["description"].startswith(description), error
        assert error["data"]["errorCode"] == 0
        assert await rpc.invoke(element, "getState") == "STOP"
        assert log.states() == ["START", "STOP"]
        # The file appears: the same player plays it.
        if uri == "media/missing.webm":
            make_media(directory / "missing.webm", seconds=1.0)
            await rpc.invoke(element, "play")
            await log.wait("EndOfStream", timeout=5)
    assert await players_gone()
    await rpc.request("release", object=pipeline)


async def test_paths_outside_the_directory_and_bad_parameters_are_refused(
    media_server: MediaServer, rpc: Rpc
) -> None:
    pipeline = await rpc.create("MediaPipeline")
    for uri in ("file:///etc/hostname", "../outside.webm", "ftp://127.0.0.1/x.webm", ""):
        with pytest.raises(RpcError) as refused:
            await rpc.create("PlayerEndpoint", mediaPipeline=pipeline, uri=uri)
        assert refused.value.code == 40107, uri
    for params in (
        {},
        {"uri": 5},
        {"uri": "a.webm", "useEncodedMedia": "yes"},
        {"uri": "a.webm", "networkCache": "2000"},
    ):
        with pytest.raises(RpcError) as refused:
            await rpc.create("PlayerEndpoint", mediaPipeline=pipeline, **params)
        assert refused.value.code == 40001, params
    await rpc.request("release", object=pipeline)


async def test_a_player_feeding_a_recorder_gives_a_file_in_sync(
    media_server: MediaServer, rpc: Rpc
) -> None:
    directory = media_dir(media_server)
    path = make_media(directory / "marks.webm", seconds=4.0)
    pipeline = await rpc.create("MediaPipeline")
    element = await player(rpc, pipeline, f"file://{path}")
    recorder = await rpc.create(
        "RecorderEndpoint", mediaPipeline=pipeline, uri=f"file://{directory}/copy.webm"
    )
    await rpc.invoke(element, "connect", sink=recorder)
    await rpc.invoke(recorder, "record")
    await rpc.invoke(element, "play")
    await EventLog(rpc).wait("EndOfStream", timeout=10)
    await rpc.invoke(recorder, "stopAndWait")
    copy = directory / "copy.webm"
    assert streams(copy) == {"video": "vp8", "audio": "opus"}
    with av.open(str(copy)) as container:
        assert abs(container.duration / 1_000_000 - 4.0) < 0.3
    flashes, beeps = marks(copy)
    assert len(flashes) == 4 and len(beeps) == 4, (flashes, beeps)
    offsets = sync_offsets(flashes, beeps)
    assert all(abs(offset) < 0.03 for offset in offsets), offsets
    await rpc.request("release", object=pipeline)
