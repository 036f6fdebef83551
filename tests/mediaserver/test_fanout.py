"""The fan-out send path (mediaserver/fanout.py, _fanout.c): the native writer must put on the wire
exactly what the Python one does, packet for packet, under every SRTP profile aiortc can
negotiate; the Python one must be chosen when the native one is missing or turned off; and a
subscriber must decode what either path forwards."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pylibsrtp
import pytest
from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpParameters
from aiortc.rtp import HeaderExtensionsMap, RtpPacket, unwrap_rtx
from pylibsrtp import Policy

from mediaserver import fanout
from mediaserver.forwarding import ForwardingDtlsTransport, ForwardingSender
from mediaserver.rtp_send import extension_block
from mediaserver.server import MediaServer
from mediaserver.webrtc import WebRtcEndpoint
from tests.conftest import require

from .rpc import Rpc
from .test_forwarding import publish, view

MID = "urn:ietf:params:rtp-hdrext:sdes:mid"
ABS_SEND_TIME = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"
ROOT = Path(__file__).resolve().parents[2]

PROFILES = {
    "AEAD_AES_256_GCM": (Policy.SRTP_PROFILE_AEAD_AES_256_GCM, 32 + 12),
    "AEAD_AES_128_GCM": (Policy.SRTP_PROFILE_AEAD_AES_128_GCM, 16 + 12),
    "AES_CM_128_HMAC_SHA1_80": (Policy.SRTP_PROFILE_AES128_CM_SHA1_80, 16 + 14),
    "AES_CM_128_HMAC_SHA1_32": (Policy.SRTP_PROFILE_AES128_CM_SHA1_32, 16 + 14),
}
EXTENSIONS = {
    "none": {},
    "mid": {MID: 1},
    "mid and abs-send-time": {MID: 9, ABS_SEND_TIME: 14},
    "two-byte header": {MID: 4, ABS_SEND_TIME: 20},
}


def native() -> Any:
    """The native module: a test needing it fails under CI=true (CI has a compiler)."""
    try:
        from mediaserver import _fanout
    except ImportError:
        _fanout = None
    require(_fanout is not None, "the native fan-out module (mediaserver._fanout, built)")
    if not fanout.native_available():
        # Loaded but turned off (MEDIASERVER_NATIVE=0): set it up as fanout.py would.
        protect = fanout._srtp_ffi.addressof(fanout._srtp_lib, "srtp_protect")
        _fanout.set_srtp_protect(int(fanout._srtp_ffi.cast("uintptr_t", protect)), pylibsrtp.Error)
        protect_rtcp = fanout._srtp_ffi.addressof(fanout._srtp_lib, "srtp_protect_rtcp")
        _fanout.set_srtp_protect_rtcp(int(fanout._srtp_ffi.cast("uintptr_t", protect_rtcp)))
    return _fanout


def session(profile: int, key_length: int, direction: int) -> pylibsrtp.Session:
    key = bytes(range(7, 7 + key_length))
    ssrc_type = Policy.SSRC_ANY_OUTBOUND if direction else Policy.SSRC_ANY_INBOUND
    policy = Policy(key=key, ssrc_type=ssrc_type, srtp_profile=profile)
    policy.allow_repeat_tx = True  # as aiortc's: a retransmission reuses a sequence number
    return pylibsrtp.Session(policy)


def extensions_map(ids: dict[str, int]) -> HeaderExtensionsMap:
    extensions = HeaderExtensionsMap()
    extensions.configure(
        RTCRtpParameters(
            headerExtensions=[RTCRtpHeaderExtensionParameters(id=i, uri=u) for u, i in ids.items()]
        )
    )
    return extensions


class Datagrams:
    """A datagram transport over a real UDP socket: what the native writer sends on directly
    and the Python writer through `sendto`."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.calls = 0

    def sendto(self, data: bytes, address: tuple[str, int]) -> None:
        self.calls += 1
        self.sock.sendto(data, address)

    def get_write_buffer_size(self) -> int:
        return 0

    def close(self) -> None:
        self.sock.close()


class Receiver:
    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(2)
        self.address = self.sock.getsockname()

    def take(self, count: int) -> list[bytes]:
        return [self.sock.recv(4096) for _ in range(count)]

    def close(self) -> None:
        self.sock.close()


def writer_pair(module: Any, ids: dict[str, int], rtx: int | None, sequence_number: int):
    before, after = extension_block(extensions_map(ids), "1")
    arguments = dict(
        ssrc=0x11223344,
        payload_type=120,
        rtx_ssrc=0x55667788,
        rtx_payload_type=rtx,
        sequence_number=sequence_number,
        rtx_sequence_number=65534,
        timestamp_origin=0xFFFFFF00,
        before=before,
        after=after,
    )
    return module.Writer(**arguments), fanout.PyWriter(**arguments)


FRAMES = [
    [b"\x90\x80\x01first", b"\x80\x80\x01second" * 40, b"\x80\x80\x01third"],
    [b"\xfcaudio"],
    [bytes(range(256)) * 4, b"x"],
]


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("ids", EXTENSIONS)
@pytest.mark.parametrize("rtx", [None, 121])
def test_native_packets_are_the_python_ones(profile: str, ids: str, rtx: int | None) -> None:
    module = native()
    srtp_profile, key_length = PROFILES[profile]
    native_session = session(srtp_profile, key_length, 1)
    python_session = session(srtp_profile, key_length, 1)
    receiver_session = session(srtp_profile, key_length, 0)
    receiver = Receiver()
    out = Datagrams()
    try:
        native_writer, python_writer = writer_pair(module, EXTENSIONS[ids], rtx, 65533)
        fd = out.sock.fileno()
        native_writer.set_route(
            native_session, fanout.srtp_pointer(native_session), out, receiver.address, fd
        )
        assert native_writer.native
        python_wire: list[bytes] = []
        python_writer.set_route(
            python_session,
            0,
            type("Capture", (), {"sendto": lambda self, d, a: python_wire.append(d)})(),
            receiver.address,
            -1,
        )
        ntp_time = 0xE5A1_2345_6789_ABCD
        for index, payloads in enumerate(FRAMES):
            native_writer.send(payloads, 3000 * index, ntp_time + index, 10.0)
            python_writer.send(payloads, 3000 * index, ntp_time + index, 10.0)
        count = sum(map(len, FRAMES))
        native_wire = receiver.take(count)
        assert out.calls == 0  # all through sendmmsg
        assert native_wire == python_wire

        # What the receiver decrypts is what aiortc would have serialized; the sequence
        # numbers wrap at 65535 and the marker is on each frame's last packet.
        extensions = extensions_map(EXTENSIONS[ids])
        decrypted = [receiver_session.unprotect(p) for p in native_wire]
        clear = [RtpPacket.parse(data, extensions) for data in decrypted]
        assert [p.sequence_number for p in clear] == [65533, 65534, 65535, 0, 1, 2]
        assert [p.marker for p in clear] == [0, 0, 1, 1, 0, 1]
        assert [p.payload for p in clear] == [p for frame in FRAMES for p in frame]
        assert {p.ssrc for p in clear} == {0x11223344}
        assert (
            clear[0].timestamp == 0xFFFFFF00 and clear[3].timestamp == (0xFFFFFF00 + 3000) % 2**32
        )
        for packet, data in zip(clear, decrypted, strict=True):
            again = RtpPacket(
                payload_type=120,
                marker=packet.marker,
                sequence_number=packet.sequence_number,
                timestamp=packet.timestamp,
                ssrc=packet.ssrc,
                payload=packet.payload,
            )
            again.extensions.mid = "1" if EXTENSIONS[ids] else None
            if ABS_SEND_TIME in EXTENSIONS[ids]:
                again.extensions.abs_send_time = packet.extensions.abs_send_time
            assert again.serialize(extensions) == data

        # Counters, as aiortc's sender reports carry them.
        for writer in (native_writer, python_writer):
            assert writer.packets == count
            assert writer.octets == sum(len(p) for frame in FRAMES for p in frame)
            assert writer.wire_octets == sum(map(len, native_wire))
            assert writer.sequence_number == 3

        # Retransmissions (RTX when negotiated) are the same bytes too, rebuilt from history.
        for sequence_number in (65534, 0, 2):
            assert native_writer.retransmit(sequence_number) > 0
            assert python_writer.retransmit(sequence_number) > 0
        resent = receiver.take(3)
        assert resent == python_wire[count:]
        numbers = [p.sequence_number for p in clear]
        for wanted, data in zip((65534, 0, 2), resent, strict=True):
            if rtx is None:
                # The very packet again (same index, same keystream): the receiver's replay
                # window would refuse it, as it had not lost it here.
                assert data == native_wire[numbers.index(wanted)]
                continue
            packet = RtpPacket.parse(receiver_session.unprotect(data), extensions)
            assert packet.payload_type == rtx and packet.ssrc == 0x55667788
            packet = unwrap_rtx(packet, payload_type=120, ssrc=0x11223344)
            assert packet.sequence_number == wanted
            assert packet.payload == clear[numbers.index(wanted)].payload
        # Older than the history, or never sent: not resent.
        assert native_writer.retransmit(200) == python_writer.retransmit(200) == 0
    finally:
        receiver.close()
        out.close()


def test_native_and_python_sends_share_the_srtp_state() -> None:
    """Frames sent natively and through pylibsrtp's protect() on the same Session, alternately,
    are what pylibsrtp alone makes of them: one rollover counter, one replay window."""
    module = native()
    srtp_profile, key_length = PROFILES["AEAD_AES_256_GCM"]
    shared = session(srtp_profile, key_length, 1)
    reference = session(srtp_profile, key_length, 1)
    receiver = Receiver()
    out = Datagrams()
    try:
        native_writer, _ = writer_pair(module, EXTENSIONS["mid"], None, 65530)
        _, reference_writer = writer_pair(module, EXTENSIONS["mid"], None, 65530)
        wire: list[bytes] = []
        reference_writer.set_route(
            reference,
            0,
            type("Capture", (), {"sendto": lambda self, d, a: wire.append(d)})(),
            receiver.address,
            -1,
        )
        for index in range(12):
            payloads = [bytes([index]) * 100, b"end"]
            reference_writer.send(payloads, index * 960, 0, 1.0)
            if index % 2:
                native_writer.set_route(shared, 0, out, receiver.address, -1)  # protect()
            else:
                native_writer.set_route(
                    shared, fanout.srtp_pointer(shared), out, receiver.address, out.sock.fileno()
                )
            native_writer.send(payloads, index * 960, 0, 1.0)
        native_writer.clear_route()
        assert receiver.take(24) == wire
    finally:
        receiver.close()
        out.close()


def test_group_sends_one_frame_to_every_writer() -> None:
    module = native()
    srtp_profile, key_length = PROFILES["AES_CM_128_HMAC_SHA1_80"]
    receivers = [Receiver() for _ in range(3)]
    out = Datagrams()
    try:
        group, python_group = module.Group(), fanout.PyGroup()
        expected: list[list[bytes]] = []
        for receiver in receivers:
            writer, python_writer = writer_pair(module, EXTENSIONS["none"], None, 100)
            tx, python_tx = (session(srtp_profile, key_length, 1) for _ in range(2))
            writer.set_route(tx, fanout.srtp_pointer(tx), out, receiver.address, out.sock.fileno())
            wire: list[bytes] = []
            expected.append(wire)
            python_writer.set_route(
                python_tx,
                0,
                type("Capture", (), {"sendto": lambda self, d, a, w=wire: w.append(d)})(),
                receiver.address,
                -1,
            )
            group.add(writer)
            python_group.add(python_writer)
        assert len(group) == len(python_group) == 3
        for payloads in FRAMES:
            group.send(payloads, 0, 0, 5.0)
            python_group.send(payloads, 0, 0, 5.0)
        for receiver, wire in zip(receivers, expected, strict=True):
            assert receiver.take(len(wire)) == wire
        group.remove(group.writers[0])
        assert len(group) == 2
    finally:
        for receiver in receivers:
            receiver.close()
        out.close()


@pytest.mark.parametrize(
    "setup",
    [
        "import os; os.environ['MEDIASERVER_NATIVE'] = '0'",
        "import sys; sys.modules['mediaserver._fanout'] = None",  # the import fails
    ],
    ids=["MEDIASERVER_NATIVE=0", "not built"],
)
def test_the_python_path_is_chosen_without_the_native_one(setup: str) -> None:
    code = (
        f"{setup}\n"
        "from mediaserver import fanout\n"
        "assert not fanout.native_available()\n"
        "assert fanout.Writer is fanout.PyWriter and fanout.Group is fanout.PyGroup\n"
        "print(fanout.describe())\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "MEDIASERVER_NATIVE"}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert "Python fan-out send path" in result.stdout


# -- real peers through the server, on each path -----------------------------------------------


@pytest.fixture(params=["native", "python"])
def send_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the test on the native path, then with the Python one forced."""
    if request.param == "native":
        module = native()
        monkeypatch.setattr(fanout, "Writer", module.Writer)
        monkeypatch.setattr(fanout, "Group", module.Group)
    else:
        monkeypatch.setattr(fanout, "Writer", fanout.PyWriter)
        monkeypatch.setattr(fanout, "Group", fanout.PyGroup)
    return request.param


async def test_viewers_decode_what_the_group_forwards(
    send_path: str, media_server: MediaServer, rpc: Rpc
) -> None:
    pipeline = await rpc.create("MediaPipeline")
    source, publisher = await publish(rpc, pipeline)
    viewers = [await view(rpc, pipeline, source) for _ in range(2)]
    try:
        for _, peer in viewers:
            await peer.wait_video(30)
        element = media_server.registry.objects[source]
        assert isinstance(element, WebRtcEndpoint)
        # Both viewers' pads take their frames through the hub's group, on the chosen path.
        for kind in ("audio", "video"):
            group = element.hubs[kind].fanout
            assert len(group) == 2, kind
            assert isinstance(group, fanout.Group)
            assert all(w.native == (send_path == "native") for w in group.writers)

        start = [peer.received.video_frames for _, peer in viewers]
        audio_start = [peer.received.audio_frames for _, peer in viewers]
        await viewers[0][1].wait_video(30 + start[0])
        for (endpoint, peer), video, audio in zip(viewers, start, audio_start, strict=True):
            assert peer.received.video_frames > video and peer.received.audio_frames > audio
            assert peer.received.non_black_frames > 0
            viewer = media_server.registry.objects[endpoint]
            assert isinstance(viewer, WebRtcEndpoint) and viewer.pc is not None
            # The counters sender reports and getStats read come from the group's writers.
            for transceiver in viewer.pc.getTransceivers():
                sender = transceiver.sender
                assert isinstance(sender, ForwardingSender)
                assert sender._RTCRtpSender__packet_count > 0
                assert sender._RTCRtpSender__octet_count > 0
                assert sender.bitrate.current(time.monotonic()) >= 0
                assert viewer.pads[transceiver.kind].frames > 0
                dtls = sender.transport
                assert isinstance(dtls, ForwardingDtlsTransport)
                assert dtls._RTCDtlsTransport__tx_packets >= sender._RTCRtpSender__packet_count
            stats = await rpc.invoke(endpoint, "getStats", mediaType="VIDEO")
            outbound = [s for s in stats.values() if s["type"] == "outboundrtp"]
            assert outbound and outbound[0]["packetsSent"] > 0

        # A viewer that goes away leaves the group; the other goes on.
        await viewers[0][1].close()
        await rpc.request("release", object=viewers[0][0])
        assert len(element.hubs["video"].fanout) == 1
        frames = viewers[1][1].received.video_frames
        await viewers[1][1].wait_video(frames + 15)
    finally:
        await publisher.close()
        for _, peer in viewers:
            await peer.close()
    await rpc.request("release", object=pipeline)
