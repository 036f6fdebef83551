"""Headless Chromium publishing to and viewing through the media server, speaking the Kurento
Protocol from the page: Chrome's own SDP, trickle ICE and codecs against the forwarding plane."""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

pytestmark = pytest.mark.browser

PAGE = """<!doctype html><title>media server check</title>
<video id="view" autoplay muted playsinline width="320" height="240"></video>
<script type="module">
let nextId = 1;
const waiting = new Map();
const listeners = [];
const ws = new WebSocket(MEDIA_SERVER_URL);
const opened = new Promise((resolve, reject) => {
  ws.addEventListener("open", resolve);
  ws.addEventListener("error", () => reject(new Error("cannot reach the media server")));
});
ws.addEventListener("message", ({data}) => {
  const message = JSON.parse(data);
  if (message.method === "onEvent") listeners.forEach((listener) => listener(message.params.value));
  else waiting.get(message.id)?.(message);
});
async function rpc(method, params = {}) {
  await opened;
  const id = nextId++;
  const reply = new Promise((resolve) => waiting.set(id, resolve));
  ws.send(JSON.stringify({jsonrpc: "2.0", id, method, params}));
  const message = await reply;
  if (message.error) throw new Error(`${method}: ${message.error.message}`);
  return message.result?.value;
}
async function connectPeer(pc, endpoint) {
  listeners.push(({object, type, data}) => {
    if (object === endpoint && type === "IceCandidateFound") pc.addIceCandidate(data.candidate);
  });
  await rpc("subscribe", {object: endpoint, type: "IceCandidateFound"});
  pc.onicecandidate = ({candidate}) => {
    if (candidate) rpc("invoke", {object: endpoint, operation: "addIceCandidate",
      operationParams: {candidate: candidate.toJSON()}});
  };
  await pc.setLocalDescription();
  const answer = await rpc("invoke", {object: endpoint, operation: "processOffer",
    operationParams: {offer: pc.localDescription.sdp}});
  await pc.setRemoteDescription({type: "answer", sdp: answer});
  await rpc("invoke", {object: endpoint, operation: "gatherCandidates"});
}
window.runCall = async () => {
  const pipeline = await rpc("create", {type: "MediaPipeline"});
  const create = () => rpc("create", {type: "WebRtcEndpoint",
    constructorParams: {mediaPipeline: pipeline}});
  const [publishing, viewing] = [await create(), await create()];
  await rpc("invoke", {object: publishing, operation: "connect", operationParams: {sink: viewing}});
  const media = await navigator.mediaDevices.getUserMedia({audio: true,
    video: {width: 640, height: 480}});
  const publisher = new RTCPeerConnection();
  media.getTracks().forEach((track) => publisher.addTransceiver(track, {direction: "sendonly"}));
  const viewer = new RTCPeerConnection();
  viewer.addTransceiver("audio", {direction: "recvonly"});
  viewer.addTransceiver("video", {direction: "recvonly"});
  const video = document.getElementById("view");
  viewer.ontrack = ({streams, track}) => {
    if (track.kind === "video") video.srcObject = streams[0] || new MediaStream([track]);
  };
  await connectPeer(publisher, publishing);
  await connectPeer(viewer, viewing);
  window.call = {pipeline, publisher, viewer, video};
  return pipeline;
};
window.received = async () => {
  const stats = {};
  (await window.call.viewer.getStats()).forEach((report) => {
    if (report.type === "inbound-rtp") stats[report.kind] = {
      framesDecoded: report.framesDecoded, packetsReceived: report.packetsReceived,
      packetsLost: report.packetsLost, codecId: report.codecId};
    if (report.type === "codec" && report.mimeType.startsWith("video/")) {
      stats.codec = report.mimeType;
    }
    if (report.type === "transport") stats.srtpCipher = report.srtpCipher;
  });
  return stats;
};
window.brightness = () => {
  const {video} = window.call;
  if (!video.videoWidth) return 0;
  const canvas = document.createElement("canvas");
  [canvas.width, canvas.height] = [video.videoWidth, video.videoHeight];
  const context = canvas.getContext("2d");
  context.drawImage(video, 0, 0);
  const pixels = context.getImageData(0, 0, canvas.width, canvas.height).data;
  let sum = 0;
  for (let i = 0; i < pixels.length; i += 4) sum += pixels[i] + pixels[i + 1] + pixels[i + 2];
  return sum / (pixels.length / 4) / 3;
};
window.hangUp = async () => {
  window.call.publisher.close();
  window.call.viewer.close();
  await rpc("release", {object: window.call.pipeline});
  return rpc("invoke", {object: "manager_ServerManager", operation: "getPipelines"});
};
</script>"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def media_server_process() -> Iterator[str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "mediaserver", "--port", str(free_port())],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line.startswith("Media server ready at "), line
    yield line.rsplit(" ", 1)[1].strip()
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=10) == 0


@contextlib.contextmanager
def served_page(page: str, media_server_url: str, path: str) -> Iterator[str]:
    """A test page (`MEDIA_SERVER_URL` in it replaced) from a loopback HTTP server: a secure
    context in the same (local) address space as the media server, so Chrome's local-network-
    access checks let it connect. Yields the page's URL."""
    body = page.replace("MEDIA_SERVER_URL", repr(media_server_url)).encode()

    class Page(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Page)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/{path}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def page_url(media_server_process: str) -> Iterator[str]:
    with served_page(PAGE, media_server_process, "call") as url:
        yield url


def test_chromium_publishes_and_views_through_the_server(chromium, page_url: str) -> None:
    context = chromium.new_context()
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(page_url)
    try:
        page.evaluate("runCall()")
        deadline = time.monotonic() + 20
        while True:  # evaluate() awaits the page's promise; wait_for_function would not
            stats = page.evaluate("window.received()")
            video, audio = stats.get("video") or {}, stats.get("audio") or {}
            if (video.get("framesDecoded") or 0) > 60 and (audio.get("packetsReceived") or 0) > 50:
                break
            assert time.monotonic() < deadline, f"no media decoded in 20 s: {stats}"
            page.wait_for_timeout(200)
        assert stats["video"]["packetsLost"] <= 1
        assert stats["codec"] in ("video/VP8", "video/H264")
        # The server answers as the DTLS server and picks AES-GCM, which Chromium offers but,
        # choosing as the DTLS server itself, would rank below AES-CM + HMAC-SHA1 (slower).
        assert "_GCM" in stats["srtpCipher"], stats["srtpCipher"]
        assert page.evaluate("window.brightness()") > 10  # a picture, not a black frame
        assert page.evaluate("window.hangUp()") == []
        assert errors == []
    finally:
        context.close()
