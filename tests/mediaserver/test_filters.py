"""The filters module: a ZBarFilter between a player and an aiortc viewer reports the QR codes in
the picture as KMS does (a new code at once, the same one again once a second) and passes the
media on as it is; data passes through it; bad parameters get KMS's errors; a missing libzbar
refuses the filter without harming the server; release ends its thread.
"""

from __future__ import annotations

import itertools
import threading

import pytest

from mediaserver import filters
from mediaserver.server import MediaServer
from tests.kurento_client.make_media import write

from .rpc import Rpc, RpcError
from .test_data_channels import DataPeer, endpoint
from .test_hubs import until
from .test_player import EventLog, connected, media_dir, player, viewer


def zbar_threads() -> int:
    return sum(thread.name == "zbar" for thread in threading.enumerate())


def code_events(log: EventLog) -> list[dict]:
    log.states()  # takes in what has arrived
    return [event["data"] for event in log.seen if event["type"] == "CodeFound"]


async def zbar_filter(rpc: Rpc, pipeline: str) -> str:
    element = await rpc.create("ZBarFilter", mediaPipeline=pipeline)
    await rpc.subscribe(element, "CodeFound")
    return element


async def test_codes_are_reported_as_kms_reports_them_and_the_media_passes_on(
    media_server: MediaServer, rpc: Rpc
) -> None:
    path = media_dir(media_server) / "codes.webm"
    write(path, "libvpx", "libopus", seconds=4, codes=("alpha", "beta"))  # 2 s each
    pipeline = await rpc.create("MediaPipeline")
    source = await player(rpc, pipeline, f"file://{path}")
    zbar = await zbar_filter(rpc, pipeline)
    await rpc.invoke(source, "connect", sink=zbar)
    log = EventLog(rpc)
    _, peer = await viewer(rpc, pipeline, zbar)
    try:
        await connected(peer)
        await rpc.invoke(source, "play")
        first = await log.wait("CodeFound")
        await log.wait("EndOfStream", timeout=10)
        await peer.wait_video(90)
    finally:
        await peer.close()
    assert first["object"] == zbar
    assert {k: first["data"][k] for k in ("source", "type", "codeType", "value")} == {
        "source": zbar,
        "type": "CodeFound",
        "codeType": "QR-Code",
        "value": "alpha",
    }
    found = code_events(log)
    values = [event["value"] for event in found]
    # A new code at once; the same code again a second (of stream time) after it was last
    # reported, not with each picture scanned (five a second).
    assert [v for i, v in enumerate(values) if i == 0 or values[i - 1] != v] == ["alpha", "beta"]
    assert values.count("alpha") in (2, 3) and values.count("beta") in (2, 3), values
    for before, after in itertools.pairwise(found):
        if before["value"] == after["value"]:
            gap = int(after["timestampMillis"]) - int(before["timestampMillis"])
            assert gap >= 800, (gap, values)
    # What leaves the filter is the player's media, as it is.
    assert peer.received.sizes == {(320, 240)}
    assert peer.received.video_frames >= 90 and peer.received.audio_frames >= 150
    assert not await rpc.invoke(zbar, "isMediaTranscoding", mediaType="VIDEO")
    assert not [t for t in threading.enumerate() if t.name.startswith("transcode-")]
    await rpc.request("release", object=pipeline)


async def test_a_filter_with_nothing_after_it_still_reads_codes_and_release_ends_its_thread(
    media_server: MediaServer, rpc: Rpc
) -> None:
    """Kurento's own ZBarFilter test connects the player to the filter and nothing else."""
    path = media_dir(media_server) / "code.webm"
    write(path, "libvpx", "libopus", seconds=5, codes=("nothing after me",))
    pipeline = await rpc.create("MediaPipeline")
    source = await player(rpc, pipeline, f"file://{path}")
    zbar = await zbar_filter(rpc, pipeline)
    await rpc.invoke(source, "connect", sink=zbar)
    log = EventLog(rpc)
    await rpc.invoke(source, "play")
    found = await log.wait("CodeFound", timeout=5)
    assert found["data"]["value"] == "nothing after me"
    assert zbar_threads() == 1
    await rpc.request("release", object=zbar)
    await until(lambda: zbar_threads() == 0, timeout=5, what="the zbar thread to end")
    reported = len(code_events(log))
    await log.wait("EndOfStream", timeout=10)
    assert len(code_events(log)) == reported  # nothing after release
    await rpc.request("release", object=pipeline)


async def test_data_passes_through_a_filter(rpc: Rpc) -> None:
    """Unlike a PassThrough, KMS's filter elements link their DATA pads through."""
    pipeline = await rpc.create("MediaPipeline")
    ep_a = await endpoint(rpc, pipeline, useDataChannels=True)
    ep_b = await endpoint(rpc, pipeline, useDataChannels=True)
    zbar = await zbar_filter(rpc, pipeline)
    await rpc.invoke(ep_a, "connect", sink=zbar, mediaType="DATA")
    await rpc.invoke(zbar, "connect", sink=ep_b, mediaType="DATA")
    alice, bob = DataPeer("a"), DataPeer("b")
    try:
        await alice.negotiate(rpc, ep_a)
        await bob.negotiate(rpc, ep_b)
        await alice.wait_open()
        await bob.wait_open()
        await rpc.next_event("DataChannelOpened", ep_b)
        alice.channel.send("through the filter")  # type: ignore[union-attr]
        assert await bob.next_message() == "through the filter"
    finally:
        await alice.pc.close()
        await bob.pc.close()
    await rpc.request("release", object=pipeline)


async def test_bad_parameters_and_other_filters_get_kms_errors(rpc: Rpc) -> None:
    pipeline = await rpc.create("MediaPipeline")
    zbar = await rpc.create("kurento.ZBarFilter", mediaPipeline=pipeline)
    description = await rpc.request("describe", object=zbar)
    assert description["qualifiedType"] == "kurento.ZBarFilter"
    assert description["hierarchy"] == [
        "kurento.Filter",
        "kurento.MediaElement",
        "kurento.MediaObject",
    ]
    passthrough = await rpc.create("PassThrough", mediaPipeline=pipeline)

    def made(**ctor: object) -> dict:
        return {"type": "ZBarFilter", "constructorParams": ctor}

    cases = [
        ("create", made(), 40001),
        ("create", made(mediaPipeline="gone"), 40101),
        ("create", made(mediaPipeline=zbar), 40107),
        ("subscribe", {"object": zbar, "type": "EndOfStream"}, 40106),
        ("subscribe", {"object": passthrough, "type": "CodeFound"}, 40106),
    ]
    for method, params, code in cases:
        with pytest.raises(RpcError) as refused:
            await rpc.request(method, **params)
        assert refused.value.code == code, (params, refused.value)
    await rpc.request("release", object=passthrough)
    for operation, params in (("connect", {"sink": passthrough}), ("connect", {"sink": "x"})):
        with pytest.raises(RpcError) as gone:
            await rpc.invoke(zbar, operation, **params)
        assert gone.value.code == 40101
        assert "not found" in gone.value.message
    # The classes of the filters module this server does not implement, as KMS without them.
    for name in ("FaceOverlayFilter", "GStreamerFilter", "ImageOverlayFilter", "OpenCVFilter"):
        with pytest.raises(RpcError) as missing:
            await rpc.create(name, mediaPipeline=pipeline)
        assert (missing.value.code, missing.value.message) == (
            40108,
            f"Factory '{name}' not found",
        )
    await rpc.request("release", object=zbar)
    with pytest.raises(RpcError) as released:
        await rpc.invoke(zbar, "connect", sink=pipeline)
    assert released.value.code == 40101
    await rpc.request("release", object=pipeline)


async def test_without_libzbar_the_filter_is_refused_and_the_server_goes_on(
    media_server: MediaServer, rpc: Rpc, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(filters, "zbar_scanner", lambda: "Unable to find zbar shared library")
    pipeline = await rpc.create("MediaPipeline")
    with pytest.raises(RpcError) as refused:
        await rpc.create("ZBarFilter", mediaPipeline=pipeline)
    # What KMS answers when its zbar plugin is missing, with the reason and the remedy.
    assert refused.value.code == 40101
    assert refused.value.message.startswith("ZBarFilter plugin not available: zbar")
    assert "libzbar0" in refused.value.message
    assert await rpc.invoke(pipeline, "getChildren") == []
    assert await rpc.create("PassThrough", mediaPipeline=pipeline)
    await rpc.request("release", object=pipeline)
