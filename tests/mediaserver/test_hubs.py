"""Hubs with real WebRTC peers (aiortc): a Composite that tiles three publishers' colours and
mixes their tones, an AlphaBlending that lays one picture over another, a Dispatcher and a
DispatcherOneToMany that route one port's media without decoding it, a Mixer that routes video
and mixes the audio chosen, and a hub's ports released with it."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import av
import numpy
import pytest
from aiortc import MediaStreamTrack

from mediaserver.hubs import Composite, HubPort
from mediaserver.mixing import grid
from mediaserver.server import MediaServer

from .peers import ColourTrack, Peer, ToneTrack
from .rpc import Rpc, RpcError
from .test_player import make_media, media_dir

RED, GREEN, BLUE = (220, 30, 30), (30, 200, 30), (30, 30, 220)


class Watcher(Peer):
    """A peer that keeps the last picture it decoded and the last second of audio."""

    def __init__(self, **options) -> None:
        self.picture: numpy.ndarray | None = None
        self.audio = numpy.zeros(0, numpy.float64)
        super().__init__(**options)

    async def _count(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except Exception:
                return
            if track.kind == "video":
                self.received.video_frames += 1
                self.picture = frame.to_ndarray(format="rgb24")
                continue
            self.received.audio_frames += 1
            samples = frame.to_ndarray().reshape(-1, len(frame.layout.channels))[:, 0]
            self.audio = numpy.concatenate([self.audio, samples])[-48000:]

    def colour_at(self, x: int, y: int) -> tuple[int, int, int]:
        assert self.picture is not None
        return tuple(int(v) for v in self.picture[y - 4 : y + 4, x - 4 : x + 4].mean((0, 1)))

    def tones(self) -> set[int]:
        """The frequencies (Hz, to 10) that stand out of the last second of audio."""
        if len(self.audio) < 48000:
            return set()
        spectrum = numpy.abs(numpy.fft.rfft(self.audio * numpy.hanning(len(self.audio))))
        peak = spectrum.max()
        return {round(f, -1) for f in numpy.nonzero(spectrum > peak / 4)[0] if f > 50}


def near(colour: tuple[int, int, int], expected: tuple[int, int, int], tolerance: int = 40) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(colour, expected, strict=True))


async def until(check: Callable[[], bool], timeout: float = 20, what: str = "") -> None:
    try:
        async with asyncio.timeout(timeout):
            while not check():
                await asyncio.sleep(0.1)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what or check}") from None


async def publish_into(
    rpc: Rpc, pipeline: str, port: str, rgb: tuple[int, int, int], hertz: float, *, hear=False
) -> tuple[str, Watcher]:
    """A publisher of a colour and a tone into `port`; with `hear`, it also gets the port's
    output."""
    endpoint = await rpc.create("WebRtcEndpoint", mediaPipeline=pipeline)
    await rpc.invoke(endpoint, "connect", sink=port)
    if hear:
        await rpc.invoke(port, "connect", sink=endpoint)
    peer = Watcher(send=True, receive=hear, tracks=(ToneTrack(hertz, level=6000), ColourTrack(rgb)))
    await peer.negotiate(rpc, endpoint)
    return endpoint, peer


async def watch(rpc: Rpc, pipeline: str, port: str) -> tuple[str, Watcher]:
    endpoint = await rpc.create("WebRtcEndpoint", mediaPipeline=pipeline)
    await rpc.invoke(port, "connect", sink=endpoint)
    peer = Watcher(send=False, receive=True)
    await peer.negotiate(rpc, endpoint)
    return endpoint, peer


def cell_centres(count: int, width: int = 800, height: int = 600) -> list[tuple[int, int]]:
    return [(c.x + c.width // 2, c.y + c.height // 2) for c in grid(count, width, height)]


async def test_composite_tiles_video_and_mixes_audio(media_server: MediaServer, rpc: Rpc) -> None:
    pipeline = await rpc.create("MediaPipeline")
    composite = await rpc.create("Composite", mediaPipeline=pipeline)
    ports = [await rpc.create("HubPort", hub=composite) for _ in range(4)]
    peers: list[Watcher] = []
    try:
        colours = ((RED, 440.0), (GREEN, 660.0), (BLUE, 880.0))
        for port, (rgb, hertz) in zip(ports, colours, strict=False):
            peers.append((await publish_into(rpc, pipeline, port, rgb, hertz, hear=rgb == RED))[1])
        _, viewer = await watch(rpc, pipeline, ports[3])
        peers.append(viewer)
        red_publisher = peers[0]

        # Three pictures in KMS's grid (two columns, two rows), the fourth cell black.
        def tiled() -> bool:
            if viewer.picture is None or viewer.picture.shape[:2] != (600, 800):
                return False
            found = [viewer.colour_at(x, y) for x, y in cell_centres(4)]
            expected = (RED, GREEN, BLUE, (0, 0, 0))
            return all(near(c, e) for c, e in zip(found, expected, strict=True))

        await until(tiled, what="three colours in the grid")
        # The viewer hears all three tones; a publisher hears the others, not itself.
        await until(lambda: viewer.tones() >= {440, 660, 880}, what="the mix of three tones")
        await until(lambda: red_publisher.tones() >= {660, 880}, what="the others' tones")
        assert 440 not in red_publisher.tones()
        assert near(red_publisher.colour_at(200, 150), RED)  # but sees itself in the grid

        stats = media_server.registry.objects[composite]
        assert isinstance(stats, Composite) and stats.mixer.running
        assert await rpc.invoke(ports[3], "isMediaFlowingOut", mediaType="VIDEO") is True

        # A port released leaves the grid: two pictures side by side.
        await rpc.request("release", object=ports[2])

        def two_left() -> bool:
            assert viewer.picture is not None
            left, right = (viewer.colour_at(x, y) for x, y in cell_centres(2))
            return near(left, RED) and near(right, GREEN)

        await until(two_left, what="the grid without the released port")
        await until(lambda: 880 not in viewer.tones(), what="the released port's tone gone")
    finally:
        for peer in peers:
            await peer.close()
    await rpc.request("release", object=pipeline)
    await until(lambda: not mixing_threads(), timeout=5, what="the mixing thread to end")


async def test_alpha_blending_lays_pictures_over_the_master(rpc: Rpc) -> None:
    pipeline = await rpc.create("MediaPipeline")
    blending = await rpc.create("AlphaBlending", mediaPipeline=pipeline)
    master, overlay, out = [await rpc.create("HubPort", hub=blending) for _ in range(3)]
    peers: list[Watcher] = []
    try:
        peers.append((await publish_into(rpc, pipeline, master, RED, 440.0))[1])
        peers.append((await publish_into(rpc, pipeline, overlay, GREEN, 660.0))[1])
        _, viewer = await watch(rpc, pipeline, out)
        peers.append(viewer)
        await rpc.invoke(blending, "setMaster", source=master, zOrder=1)
        # Over the master (its size, 320x240), the overlay's picture in the bottom right quarter.
        await rpc.invoke(
            blending,
            "setPortProperties",
            relativeX=0.5,
            relativeY=0.5,
            zOrder=2,
            relativeWidth=0.5,
            relativeHeight=0.5,
            port=overlay,
        )

        def blended() -> bool:
            if viewer.picture is None or viewer.picture.shape[:2] != (240, 320):
                return False
            return near(viewer.colour_at(80, 60), RED) and near(viewer.colour_at(240, 180), GREEN)

        await until(blended, what="the overlay over the master")
        await until(lambda: viewer.tones() >= {440, 660}, what="both tones")
        with pytest.raises(RpcError) as error:
            await rpc.invoke(
                blending,
                "setPortProperties",
                relativeX=0.0,
                relativeY=0.0,
                zOrder=2,
                relativeWidth=1000.0,
                relativeHeight=0.5,
                port=overlay,
            )
        assert error.value.code == 40107
    finally:
        for peer in peers:
            await peer.close()
    await rpc.request("release", object=pipeline)


async def test_composite_refuses_bad_parameters(rpc: Rpc) -> None:
    pipeline = await rpc.create("MediaPipeline")
    with pytest.raises(RpcError) as error:
        await rpc.create("Composite", mediaPipeline=pipeline, width=100000)
    assert error.value.code == 40107
    with pytest.raises(RpcError) as error:
        await rpc.create("HubPort", hub=pipeline)
    assert error.value.code == 40107
    composite = await rpc.create("kurento.Composite", mediaPipeline=pipeline, framerate=30)
    described = await rpc.request("describe", object=composite)
    assert described["hierarchy"] == ["kurento.Hub", "kurento.MediaObject"]
    dot = await rpc.invoke(composite, "getGstreamerDot")
    assert dot.startswith("digraph")
    await rpc.request("release", object=pipeline)


async def test_releasing_a_hub_releases_its_ports(media_server: MediaServer, rpc: Rpc) -> None:
    pipeline = await rpc.create("MediaPipeline")
    for hub_type in ("Composite", "AlphaBlending", "Dispatcher", "DispatcherOneToMany", "Mixer"):
        hub = await rpc.create(hub_type, mediaPipeline=pipeline)
        ports = [await rpc.create("HubPort", hub=hub) for _ in range(2)]
        assert await rpc.invoke(ports[0], "getParent") == hub
        assert sorted(await rpc.invoke(hub, "getChildren")) == sorted(ports)
        await rpc.request("release", object=hub)
        for port in ports:
            assert port not in media_server.registry.objects
            with pytest.raises(RpcError) as error:
                await rpc.invoke(port, "getName")
            assert error.value.code == 40101
    await rpc.request("release", object=pipeline)
    await until(lambda: not mixing_threads(), timeout=5, what="the mixing threads to end")


def mixing_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "composite"]


async def test_dispatcher_routes_one_port_to_another(rpc: Rpc) -> None:
    pipeline = await rpc.create("MediaPipeline")
    dispatcher = await rpc.create("Dispatcher", mediaPipeline=pipeline)
    source, sink, other = [await rpc.create("HubPort", hub=dispatcher) for _ in range(3)]
    peers: list[Watcher] = []
    try:
        peers.append((await publish_into(rpc, pipeline, source, RED, 440.0))[1])
        _, viewer = await watch(rpc, pipeline, sink)
        _, bystander = await watch(rpc, pipeline, other)
        peers += [viewer, bystander]
        await rpc.invoke(dispatcher, "connect", source=source, sink=sink)
        await until(lambda: viewer.picture is not None and near(viewer.colour_at(160, 120), RED))
        assert viewer.picture is not None and viewer.picture.shape[:2] == (240, 320)  # as sent
        await until(lambda: 440 in viewer.tones(), what="the source's tone")
        await asyncio.sleep(0.5)
        assert bystander.received.video_frames == 0 and bystander.received.audio_frames == 0
    finally:
        for peer in peers:
            await peer.close()
    await rpc.request("release", object=pipeline)


async def test_dispatcher_one_to_many_fans_out_and_switches(rpc: Rpc) -> None:
    pipeline = await rpc.create("MediaPipeline")
    dispatcher = await rpc.create("DispatcherOneToMany", mediaPipeline=pipeline)
    red_port, blue_port, *viewer_ports = [
        await rpc.create("HubPort", hub=dispatcher) for _ in range(4)
    ]
    peers: list[Watcher] = []
    try:
        peers.append((await publish_into(rpc, pipeline, red_port, RED, 440.0))[1])
        peers.append((await publish_into(rpc, pipeline, blue_port, BLUE, 880.0))[1])
        viewers = [(await watch(rpc, pipeline, port))[1] for port in viewer_ports]
        peers += viewers

        def all_see(rgb: tuple[int, int, int]) -> Callable[[], bool]:
            return lambda: all(
                v.picture is not None and near(v.colour_at(160, 120), rgb) for v in viewers
            )

        await rpc.invoke(dispatcher, "setSource", source=red_port)
        await until(all_see(RED), what="red everywhere")
        await rpc.invoke(dispatcher, "setSource", source=blue_port)
        await until(all_see(BLUE), timeout=10, what="blue everywhere after the switch")
        await until(lambda: all(880 in v.tones() and 440 not in v.tones() for v in viewers))

        await rpc.invoke(dispatcher, "removeSource")
        await asyncio.sleep(0.5)
        counts = [v.received.video_frames for v in viewers]
        await asyncio.sleep(1.0)
        assert [v.received.video_frames for v in viewers] == counts
    finally:
        for peer in peers:
            await peer.close()
    await rpc.request("release", object=pipeline)


async def test_mixer_routes_video_and_mixes_chosen_audio(rpc: Rpc) -> None:
    pipeline = await rpc.create("MediaPipeline")
    mixer = await rpc.create("Mixer", mediaPipeline=pipeline)
    red_port, green_port, out = [await rpc.create("HubPort", hub=mixer) for _ in range(3)]
    peers: list[Watcher] = []
    try:
        peers.append((await publish_into(rpc, pipeline, red_port, RED, 440.0))[1])
        peers.append((await publish_into(rpc, pipeline, green_port, GREEN, 660.0))[1])
        _, viewer = await watch(rpc, pipeline, out)
        peers.append(viewer)
        await rpc.invoke(mixer, "connect", media="VIDEO", source=red_port, sink=out)
        for source in (red_port, green_port):
            await rpc.invoke(mixer, "connect", media="AUDIO", source=source, sink=out)
        await until(lambda: viewer.picture is not None and near(viewer.colour_at(160, 120), RED))
        assert viewer.picture is not None and viewer.picture.shape[:2] == (240, 320)  # as sent
        await until(lambda: viewer.tones() >= {440, 660}, what="both tones mixed")

        await rpc.invoke(mixer, "disconnect", media="AUDIO", source=green_port, sink=out)
        await rpc.invoke(mixer, "connect", media="VIDEO", source=green_port, sink=out)
        await until(lambda: near(viewer.colour_at(160, 120), GREEN), what="the green video")
        await until(lambda: 660 not in viewer.tones() and 440 in viewer.tones())

        for operation in ("connect", "disconnect"):
            with pytest.raises(RpcError) as error:
                await rpc.invoke(mixer, operation, media="DATA", source=red_port, sink=out)
            assert error.value.code == 40005
    finally:
        for peer in peers:
            await peer.close()
    await rpc.request("release", object=pipeline)


async def test_player_into_composite_into_recorder(media_server: MediaServer, rpc: Rpc) -> None:
    clip = make_media(media_dir(media_server) / "clip.webm", seconds=4.0, flashes=False)
    pipeline = await rpc.create("MediaPipeline")
    composite = await rpc.create("Composite", mediaPipeline=pipeline, width=320, height=240)
    into, out = [await rpc.create("HubPort", hub=composite) for _ in range(2)]
    player = await rpc.create("PlayerEndpoint", mediaPipeline=pipeline, uri=f"file://{clip}")
    recorder = await rpc.create("RecorderEndpoint", mediaPipeline=pipeline, uri="mixed.webm")
    await rpc.invoke(player, "connect", sink=into)
    await rpc.invoke(out, "connect", sink=recorder)
    await rpc.invoke(recorder, "record")
    await rpc.invoke(player, "play")
    await asyncio.sleep(3.0)
    await rpc.invoke(recorder, "stopAndWait")
    port = media_server.registry.objects[out]
    assert isinstance(port, HubPort)
    await rpc.request("release", object=pipeline)

    path = media_dir(media_server).parent / "mixed.webm"
    with av.open(str(path)) as container:
        pictures = list(container.decode(video=0))
    assert len(pictures) >= 20  # about 15 fps for most of 3 s
    assert (pictures[-1].width, pictures[-1].height) == (320, 240)
    # The clip is grey (90, 110, 130) and fills the single cell.
    centre = pictures[-1].to_ndarray(format="rgb24")[100:140, 40:80].mean((0, 1))
    assert near(tuple(int(v) for v in centre), (90, 110, 130))
