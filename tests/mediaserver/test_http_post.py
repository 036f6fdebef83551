"""HttpPostEndpoint: a WebM made here with PyAV is POSTed to the endpoint's URL (plain and
chunked, or as a multipart/form-data upload) and an aiortc viewer decodes its pictures; the end
of the body gives EndOfStream; the URL stops working after the disconnection timeout and on
release.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from mediaserver.server import MediaServer

from .peers import Peer
from .rpc import Rpc, RpcError
from .test_player import make_media


def post(url: str, body: bytes, *, chunked: bool = False, multipart: bool = False) -> int:
    """POST `body` to `url` as a client would; the status."""
    parts = urlsplit(url)
    headers = {"Content-Type": "video/webm"}
    if multipart:
        boundary = uuid.uuid4().hex
        headers["Content-Type"] = f"multipart/form-data; boundary={boundary}"
        body = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="clip.webm"\r\nContent-Type: video/webm\r\n\r\n'.encode()
            + body
            + f"\r\n--{boundary}--\r\n".encode()
        )
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        if chunked:
            pieces = (body[i : i + 4096] for i in range(0, len(body), 4096))
            connection.request("POST", parts.path, pieces, headers, encode_chunked=True)
        else:
            connection.request("POST", parts.path, body, headers)
        return connection.getresponse().status
    finally:
        connection.close()


@pytest.mark.parametrize("how", ["plain", "chunked", "multipart"])
async def test_posted_webm_reaches_a_viewer(
    rpc: Rpc, media_server: MediaServer, tmp_path: Path, how: str
) -> None:
    clip = make_media(tmp_path / "clip.webm", seconds=2.0).read_bytes()
    pipeline = await rpc.create("MediaPipeline")
    endpoint = await rpc.create("HttpPostEndpoint", mediaPipeline=pipeline)
    viewer_ep = await rpc.create("WebRtcEndpoint", mediaPipeline=pipeline)
    await rpc.subscribe(endpoint, "EndOfStream")
    await rpc.invoke(endpoint, "connect", sink=viewer_ep)
    viewer = Peer(send=False, receive=True)
    try:
        await viewer.negotiate(rpc, viewer_ep)
        url = await rpc.invoke(endpoint, "getUrl")
        assert url.startswith("http://127.0.0.1:")
        assert await rpc.invoke(endpoint, "getUrl") == url
        status = await asyncio.to_thread(
            post, url, clip, chunked=how == "chunked", multipart=how == "multipart"
        )
        assert status == 200
        await viewer.wait_video(20)
        await rpc.next_event("EndOfStream", endpoint, timeout=15)
        assert viewer.received.non_black_frames > 0
        assert viewer.received.sizes == {(320, 240)}
    finally:
        await viewer.close()
    await rpc.request("release", object=pipeline)


async def test_url_expires_after_the_disconnection_timeout(rpc: Rpc, tmp_path: Path) -> None:
    clip = make_media(tmp_path / "clip.webm", seconds=0.5).read_bytes()
    pipeline = await rpc.create("MediaPipeline")
    endpoint = await rpc.create("HttpPostEndpoint", mediaPipeline=pipeline, disconnectionTimeout=1)
    await rpc.subscribe(endpoint, "MediaSessionTerminated")
    await rpc.subscribe(endpoint, "MediaSessionStarted")
    url = await rpc.invoke(endpoint, "getUrl")
    assert await asyncio.to_thread(post, url, clip) == 200
    await rpc.next_event("MediaSessionStarted", endpoint)
    await rpc.next_event("MediaSessionTerminated", endpoint, timeout=5)
    with pytest.raises(ConnectionError):
        await asyncio.to_thread(post, url, clip)
    await rpc.request("release", object=pipeline)


async def test_release_frees_the_url(rpc: Rpc, tmp_path: Path) -> None:
    pipeline = await rpc.create("MediaPipeline")
    first = await rpc.create("HttpPostEndpoint", mediaPipeline=pipeline)
    second = await rpc.create("HttpPostEndpoint", mediaPipeline=pipeline)
    first_url = await rpc.invoke(first, "getUrl")
    second_url = await rpc.invoke(second, "getUrl")
    assert first_url != second_url
    await rpc.request("release", object=first)
    assert await asyncio.to_thread(post, first_url, b"x") == 404
    assert await asyncio.to_thread(post, second_url, b"not media") == 200
    await rpc.request("release", object=pipeline)
    with pytest.raises(ConnectionError):
        await asyncio.to_thread(post, second_url, b"x")


async def test_bad_parameters_and_kmd(rpc: Rpc) -> None:
    pipeline = await rpc.create("MediaPipeline")
    for params in ({"disconnectionTimeout": "2"}, {"useEncodedMedia": 1}):
        with pytest.raises(RpcError) as refused:
            await rpc.create("HttpPostEndpoint", mediaPipeline=pipeline, **params)
        assert refused.value.code == 40001
    kmd = json.loads(await rpc.invoke("manager_ServerManager", "getKmd", moduleName="elements"))
    classes = {c["name"]: c for c in kmd["remoteClasses"]}
    assert classes["HttpPostEndpoint"]["extends"] == "HttpEndpoint"
    assert [m["name"] for m in classes["HttpEndpoint"]["methods"]] == ["getUrl"]
    await rpc.request("release", object=pipeline)
