"""RTCP sender reports of a hub's fan-out group (fanout.py, _fanout.c, forwarding.py): the report
the writers send is aiortc's, byte for byte, natively and in Python; the group sends one for
every reporting member in one call; and through the server, a viewer on either path keeps
receiving sender reports while the server keeps its round-trip time and receiver-report
figures from the viewer."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

import pytest
from aiortc.rtp import (
    RtcpPacket,
    RtcpSdesPacket,
    RtcpSenderInfo,
    RtcpSourceInfo,
    RtcpSrPacket,
)

from mediaserver import fanout, forwarding
from mediaserver.forwarding import ForwardingDtlsTransport, ForwardingSender, MediaHub, SinkPad
from mediaserver.server import MediaServer
from mediaserver.webrtc import WebRtcEndpoint

from .rpc import Rpc
from .test_fanout import (
    EXTENSIONS,
    FRAMES,
    PROFILES,
    Datagrams,
    Receiver,
    native,
    send_path,  # noqa: F401 (the fixture)
    session,
    writer_pair,
)
from .test_forwarding import publish, view


def aiortc_report(
    ssrc: int, ntp: int, rtp: int, packets: int, octets: int, cname: str | None
) -> bytes:
    """What aiortc's RTCRtpSender._run_rtcp serializes for one report."""
    info = RtcpSenderInfo(
        ntp_timestamp=ntp,
        rtp_timestamp=rtp,
        packet_count=packets & 0xFFFFFFFF,
        octet_count=octets & 0xFFFFFFFF,
    )
    packet = bytes(RtcpSrPacket(ssrc=ssrc, sender_info=info))
    if cname is not None:
        chunk = RtcpSourceInfo(ssrc=ssrc, items=[(1, cname.encode("utf8"))])
        packet += bytes(RtcpSdesPacket(chunks=[chunk]))
    return packet


CNAMES = [None, "", "a", "ab", "abc", "abcd", "{" + "c" * 34 + "}", "é" * 127]


@pytest.mark.parametrize("cname", CNAMES)
def test_the_report_is_aiortcs(cname: str | None) -> None:
    values = (0xDEADBEEF, 0xE5A1_2345_6789_ABCD, 0xFFFFFFF0, 2**32 + 5, 2**40 + 7)
    data = None if cname is None else cname.encode("utf8")
    assert fanout.sender_report(*values, data) == aiortc_report(*values, cname)
    parsed = RtcpPacket.parse(fanout.sender_report(*values, data))
    assert isinstance(parsed[0], RtcpSrPacket) and parsed[0].ssrc == 0xDEADBEEF
    assert parsed[0].sender_info.packet_count == 5
    assert len(parsed) == (1 if cname is None else 2)


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("cname", [None, "x", "{0f1e2d3c-aaaa-bbbb-cccc-0123456789ab}"])
def test_native_reports_are_the_python_ones(profile: str, cname: str | None) -> None:
    module = native()
    srtp_profile, key_length = PROFILES[profile]
    native_session = session(srtp_profile, key_length, 1)
    python_session = session(srtp_profile, key_length, 1)
    receiver_session = session(srtp_profile, key_length, 0)
    receiver = Receiver()
    out = Datagrams()
    try:
        native_writer, python_writer = writer_pair(module, EXTENSIONS["mid"], 121, 65000)
        native_writer.set_route(
            native_session,
            fanout.srtp_pointer(native_session),
            out,
            receiver.address,
            out.sock.fileno(),
        )
        python_wire: list[bytes] = []
        python_writer.set_route(
            python_session,
            0,
            type("Capture", (), {"sendto": lambda self, d, a: python_wire.append(d)})(),
            receiver.address,
            -1,
        )
        data = None if cname is None else cname.encode("utf8")
        for writer in (native_writer, python_writer):
            assert not writer.reporting
            assert writer.send_report(1.0) == 0  # not reporting: nothing sent
            writer.set_reports(data)
            assert writer.reporting
        ntp_time = 0xE5A1_2345_6789_ABCD
        for index, payloads in enumerate(FRAMES):
            native_writer.send(payloads, 3000 * index, ntp_time + index, 10.0)
            python_writer.send(payloads, 3000 * index, ntp_time + index, 10.0)
            # A report after each frame, its SRTCP index on from the one before.
            assert native_writer.report() == python_writer.report()
            native_octets = native_writer.send_report(1000.5 + index)
            assert native_octets == python_writer.send_report(1000.5 + index) > 0
        count = sum(map(len, FRAMES))
        native_wire = receiver.take(count + len(FRAMES))
        assert native_wire == python_wire
        assert out.calls == 0  # all straight to the socket

        reports = [p for p in native_wire if p[1] == 200]  # RTCP SR first in the compound
        assert len(reports) == len(FRAMES)
        clear = receiver_session.unprotect_rtcp(reports[-1])
        last = RtcpPacket.parse(clear)
        sr = last[0]
        assert isinstance(sr, RtcpSrPacket)
        expected = aiortc_report(
            0x11223344,
            native_writer.ntp_timestamp,
            native_writer.rtp_timestamp,
            native_writer.packets,
            native_writer.octets,
            cname,
        )
        assert clear == expected
        assert sr.sender_info.packet_count == count
        assert sr.sender_info.ntp_timestamp == ntp_time + len(FRAMES) - 1
        if cname is not None:
            assert isinstance(last[1], RtcpSdesPacket)
            assert last[1].chunks[0].items == [(1, cname.encode("utf8"))]
        for writer in (native_writer, python_writer):
            assert writer.report_ntp == ntp_time + len(FRAMES) - 1
            assert writer.report_time == 1000.5 + len(FRAMES) - 1
            assert writer.rtcp_packets == len(FRAMES)
            assert writer.rtcp_octets == sum(map(len, reports))
            writer.stop_reports()
            assert writer.send_report(2000.0) == 0
    finally:
        receiver.close()
        out.close()


@pytest.mark.parametrize("path", ["native", "python"])
def test_the_group_reports_for_its_reporting_writers(path: str) -> None:
    module = native() if path == "native" else None
    srtp_profile, key_length = PROFILES["AEAD_AES_128_GCM"]
    receivers = [Receiver() for _ in range(3)]
    out = Datagrams()
    try:
        group = module.Group() if module is not None else fanout.PyGroup()
        writers = []
        for receiver in receivers:
            native_writer, python_writer = writer_pair(
                module or fanout, EXTENSIONS["none"], None, 7
            )
            writer = native_writer if module is not None else python_writer
            tx = session(srtp_profile, key_length, 1)
            writer.set_route(tx, fanout.srtp_pointer(tx), out, receiver.address, out.sock.fileno())
            group.add(writer)
            writers.append(writer)
        group.send(FRAMES[0], 0, 0x1234_5678_0000_0000, 5.0)
        for receiver in receivers:
            receiver.take(len(FRAMES[0]))
        writers[0].set_reports(b"zero")
        writers[2].set_reports(None)
        assert group.send_reports(77.0) == 2
        rx = session(srtp_profile, key_length, 0)
        first = RtcpPacket.parse(rx.unprotect_rtcp(receivers[0].take(1)[0]))
        assert [type(p) for p in first] == [RtcpSrPacket, RtcpSdesPacket]
        rx = session(srtp_profile, key_length, 0)
        third = RtcpPacket.parse(rx.unprotect_rtcp(receivers[2].take(1)[0]))
        assert [type(p) for p in third] == [RtcpSrPacket]
        assert third[0].sender_info.packet_count == len(FRAMES[0])
        receivers[1].sock.settimeout(0.2)
        with pytest.raises(TimeoutError):
            receivers[1].take(1)  # not reporting: nothing sent to it
        assert [w.report_time for w in writers] == [77.0, 0.0, 77.0]
        writers[0].clear_route()  # no route: skipped
        assert group.send_reports(78.0) == 1
    finally:
        for receiver in receivers:
            receiver.close()
        out.close()


def test_a_cname_too_long_for_sdes_is_refused() -> None:
    module = native()
    for writer in writer_pair(module, EXTENSIONS["none"], None, 1):
        with pytest.raises(ValueError):
            writer.set_reports(b"x" * 256)
        assert not writer.reporting


async def test_the_hub_reports_only_while_it_has_members() -> None:
    hub = MediaHub("video", lambda: None)
    sent: list[float] = []
    hub.fanout = type("Group", (), {"add": lambda s, w: None, "remove": lambda s, w: None})()
    hub.fanout.send_reports = lambda now: sent.append(now) or 0  # type: ignore[attr-defined]
    pad = object()
    assert hub.join(pad, object(), "vp8")  # type: ignore[arg-type]
    await asyncio.sleep(3.2)  # at least two intervals of at most 1.5 s
    assert len(sent) >= 2
    assert all(abs(now - time.time()) < 4 for now in sent)
    hub.leave(pad)  # type: ignore[arg-type]
    count = len(sent)
    await asyncio.sleep(1.6)
    assert len(sent) == count  # no members, no timer
    hub.close()


def test_a_pad_that_cannot_join_asks_again_only_after_a_while(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A pad whose chain cannot join its hub's group is not looked at again on every frame."""
    clock = [100.0]
    monkeypatch.setattr(forwarding.time, "monotonic", lambda: clock[0])
    hub = MediaHub("audio", lambda: None)
    delivered: list[object] = []
    pad = SinkPad("audio", delivered.append)
    asked: list[float] = []
    pad.fanout = lambda frame, p: asked.append(clock[0])  # type: ignore[assignment,func-returns-value]
    pad.connect(hub)
    hub.codec = "opus"
    frame = SimpleNamespace(codec="opus", keyframe=True)
    for _ in range(10):  # 200 ms of audio
        pad.deliver(frame)  # type: ignore[arg-type]
        clock[0] += 0.02
    assert len(delivered) == 10 and asked == [100.0]
    clock[0] = 100.0 + forwarding.JOIN_RETRY_INTERVAL
    pad.deliver(frame)  # type: ignore[arg-type]
    assert len(asked) == 2
    pad.resync()  # the chain may have changed: asked on the next frame
    pad.deliver(frame)  # type: ignore[arg-type]
    assert len(asked) == 3
    pad.active = False
    pad.active = True  # (an endpoint's peer negotiated again)
    pad.deliver(frame)  # type: ignore[arg-type]
    assert len(asked) == 4


# -- real peers through the server, on each path -----------------------------------------------


async def test_viewers_keep_receiving_sender_reports(
    send_path: str,  # noqa: F811 (the fixture)
    media_server: MediaServer,
    rpc: Rpc,
) -> None:
    pipeline = await rpc.create("MediaPipeline")
    source, publisher = await publish(rpc, pipeline)
    endpoint, peer = await view(rpc, pipeline, source)
    try:
        await peer.wait_video(30)
        viewer = media_server.registry.objects[endpoint]
        assert isinstance(viewer, WebRtcEndpoint) and viewer.pc is not None
        element = media_server.registry.objects[source]
        assert isinstance(element, WebRtcEndpoint)
        senders = {t.kind: t.sender for t in viewer.pc.getTransceivers()}
        for kind, sender in senders.items():
            assert isinstance(sender, ForwardingSender)
            # A member of the hub's group, whose reports the group sends: its own loop waits.
            assert element.hubs[kind].fanout.writers == (sender._stream,)
            assert sender._stream.reporting
            assert sender._reports_resumed is not None and not sender._reports_resumed.done()
        started = {kind: s._stream.rtcp_packets for kind, s in senders.items()}
        await asyncio.sleep(4.0)  # at least two report intervals (and the viewer's reports)

        receivers = {t.kind: t.receiver for t in peer.pc.getTransceivers()}
        for kind, sender in senders.items():
            stream = sender._stream
            assert stream.rtcp_packets >= started[kind] + 2, kind
            # The viewer took them in: its last report's NTP time is the writer's last one.
            receiver = receivers[kind]
            lsr = receiver._RTCRtpReceiver__lsr
            assert lsr.get(sender._ssrc) == (stream.report_ntp >> 16) & 0xFFFFFFFF, kind
            stats = await receiver.getStats()
            remote = [s for s in stats.values() if s.type == "remote-outbound-rtp"]
            assert remote and remote[0].ssrc == sender._ssrc
            assert 0 < remote[0].packetsSent <= sender._RTCRtpSender__packet_count
            # The server matched the viewer's receiver reports to the group's reports.
            assert sender._RTCRtpSender__lsr == (stream.report_ntp >> 16) & 0xFFFFFFFF
            assert sender.round_trip_time > 0, kind
            sender_stats = await sender.getStats()
            inbound = [s for s in sender_stats.values() if s.type == "remote-inbound-rtp"]
            assert inbound and inbound[0].roundTripTime == sender.round_trip_time
            assert inbound[0].packetsLost == 0 and inbound[0].packetsReceived > 0
            assert time.monotonic() - sender.last_heard_at < 3
            dtls = sender.transport
            assert isinstance(dtls, ForwardingDtlsTransport)
            assert dtls._RTCDtlsTransport__tx_bytes >= stream.wire_octets + stream.rtcp_octets
        stats = await rpc.invoke(endpoint, "getStats", mediaType="VIDEO")
        outbound = [s for s in stats.values() if s["type"] == "outboundrtp"]
        assert outbound and outbound[0]["roundTripTime"] > 0
        assert outbound[0]["packetsLost"] == 0 and outbound[0]["fractionLost"] == 0

        # Leaving the group hands the reports back to the sender's own loop.
        video = senders["video"]
        viewer.pads["video"].fanout = None  # (it would rejoin on its next frame)
        viewer.pads["video"].leave_fanout()
        assert not video._stream.reporting and video._reports_resumed is None
        before = video._own_report[1]
        await asyncio.sleep(1.6)
        assert video._own_report[1] is not None and video._own_report[1] != before
    finally:
        await publisher.close()
        await peer.close()
    await rpc.request("release", object=pipeline)
