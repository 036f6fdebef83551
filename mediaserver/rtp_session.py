"""One audio or video stream of an RtpEndpoint: a pair of UDP sockets (RTP, and RTCP on the next
port, as KMS's RtpEndpoint has them without rtcp-mux), optionally SRTP-protected with SDES keys.

Received RTP is reassembled by aiortc's own pieces (depayloader, jitter buffer, NACK and
statistics bookkeeping, timestamp mapper) into encoded frames, the same `EncodedFrame`s a
WebRtcEndpoint's forwarding receiver makes, so they feed any sink. What the endpoint's pad hands
over is written by rtp_send.py's `RtpWriter` (shared payloads, per-stream header, NACK history),
sending to the peer's address instead of an ICE pair. RTCP: sender and receiver reports with
SDES, PLI both ways (FIR taken as PLI), NACKs both ways.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import av
import pylibsrtp
from aiortc.codecs import depayload
from aiortc.jitterbuffer import JitterBuffer
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtcrtpreceiver import NackGenerator, StreamStatistics, TimestampMapper
from aiortc.rtp import (
    RTCP_PSFB_FIR,
    RTCP_PSFB_PLI,
    RTCP_RTPFB_NACK,
    HeaderExtensionsMap,
    RtcpPacket,
    RtcpPsfbPacket,
    RtcpReceiverInfo,
    RtcpRrPacket,
    RtcpRtpfbPacket,
    RtcpSdesPacket,
    RtcpSenderInfo,
    RtcpSourceInfo,
    RtcpSrPacket,
    RtpPacket,
)
from aiortc.utils import random32

from .forwarding import codec_name, is_keyframe, ntp_now
from .frames import EncodedFrame
from .rtp_send import Packetizer, RtpWriter

logger = logging.getLogger(__name__)

RTCP_INTERVAL = 1.0  # seconds between reports, on average (randomised by half either way)
_CNAME = b"kurento-rtp"
_BIND_ATTEMPTS = 50


@dataclass(frozen=True)
class SrtpKeys:
    """The SRTP profile and the two master keys of one stream: ours protects what we send, the
    peer's (from its `a=crypto`) what it sends."""

    profile: int
    local: bytes
    remote: bytes


@dataclass(frozen=True)
class Remote:
    """Where the peer receives this stream's RTP and RTCP."""

    address: str
    rtp_port: int
    rtcp_port: int


class _Clear:
    """Stands where an SRTP session would protect packets, for plain RTP."""

    @staticmethod
    def protect(packet: bytes) -> bytes:
        return packet


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.on_datagram: Callable[[bytes, tuple[str, int]], None] = lambda data, addr: None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.on_datagram(data, addr)

    def error_received(self, exc: Exception) -> None:
        logger.debug("RTP socket error: %s", exc)  # ICMP unreachable while the peer is not up


async def bind_pair(
    address: str, port_min: int = 0, port_max: int = 0
) -> tuple[_Datagrams, _Datagrams]:
    """Two UDP sockets on consecutive ports, RTP on the even one (RFC 3550 section 11), inside
    the configured range if there is one."""
    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    for _ in range(_BIND_ATTEMPTS):
        port = 0
        if port_min:
            port = random.randrange(port_min + port_min % 2, port_max, 2)
        try:
            rtp_transport, rtp = await loop.create_datagram_endpoint(
                _Datagrams, local_addr=(address, port), family=family
            )
        except OSError:
            continue
        rtp_port = rtp_transport.get_extra_info("sockname")[1]
        if rtp_port % 2 == 0 and rtp_port < 65535:
            try:
                _, rtcp = await loop.create_datagram_endpoint(
                    _Datagrams, local_addr=(address, rtp_port + 1), family=family
                )
                return rtp, rtcp
            except OSError:
                pass
        rtp_transport.close()
    raise OSError(f"no free pair of UDP ports on {address}")


class _UdpWriter(RtpWriter):
    """rtp_send's writer, sending to the peer's RTP address (protected when SRTP is on)."""

    def __init__(self, session: RtpSession, ssrc: int, payload_type: int) -> None:
        super().__init__(
            transport=None,  # type: ignore[arg-type]
            ssrc=ssrc,
            payload_type=payload_type,
            rtx_ssrc=0,
            rtx_payload_type=None,
            extensions_map=HeaderExtensionsMap(),
            mid=None,
        )
        self._session = session

    def _sendto(self) -> Any:
        return self._session.rtp_route()


class RtpSession:
    """One kind's RTP stream with one peer: sockets, receive path, send path, RTCP."""

    def __init__(self, kind: str, rtp: _Datagrams, rtcp: _Datagrams) -> None:
        self.kind = kind
        self.ssrc = random32()
        self._rtp, self._rtcp = rtp, rtcp
        rtp.on_datagram, rtcp.on_datagram = self._on_rtp, self._on_rtcp
        self.remote: Remote | None = None
        self.comedia = False  # the peer's address is learned from the first packet it sends
        self.codecs: dict[int, RTCRtpCodecParameters] = {}
        self.send_codec: RTCRtpCodecParameters | None = None
        self.on_frame: Callable[[EncodedFrame], None] | None = None
        self.on_keyframe_request: Callable[[], None] | None = None
        self.last_heard_at = 0.0
        self.pli_sent = 0
        self.pli_received = 0
        self._tx: Any = _Clear()
        self._rx: pylibsrtp.Session | None = None
        self._writer: _UdpWriter | None = None
        self._jitter = (
            JitterBuffer(capacity=512, is_video=True)
            if kind == "video"
            else JitterBuffer(capacity=16, prefetch=4)
        )
        self._nack = NackGenerator() if kind == "video" else None
        self._mapper = TimestampMapper()
        self._streams: dict[int, StreamStatistics] = {}
        self._packetizers: dict[int, Packetizer] = {}
        self._sender_clock: tuple[int, int] | None = None  # NTP and RTP time of its last report
        self._last_sr: dict[int, tuple[int, float]] = {}  # ssrc -> (LSR, when received)
        self._sent = (0, 0, 0, 0)  # packets, octets, last RTP timestamp, its NTP time
        self._rtcp_task: asyncio.Task[None] | None = None

    @property
    def rtp_port(self) -> int:
        assert self._rtp.transport is not None
        return self._rtp.transport.get_extra_info("sockname")[1]

    @property
    def rtcp_port(self) -> int:
        assert self._rtcp.transport is not None
        return self._rtcp.transport.get_extra_info("sockname")[1]

    def start(
        self,
        *,
        remote: Remote | None,
        comedia: bool,
        codecs: list[RTCRtpCodecParameters],
        send: bool,
        srtp: SrtpKeys | None,
    ) -> None:
        """Begin once both descriptions are known: receive `codecs`, send the first of them
        (if `send`) to `remote`."""
        self.remote, self.comedia = remote, comedia
        self.codecs = {c.payloadType: c for c in codecs}
        if srtp is not None:
            self._tx = pylibsrtp.Session(
                pylibsrtp.Policy(
                    key=srtp.local,
                    ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND,
                    srtp_profile=srtp.profile,
                )
            )
            self._rx = pylibsrtp.Session(
                pylibsrtp.Policy(
                    key=srtp.remote,
                    ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND,
                    srtp_profile=srtp.profile,
                )
            )
        if send and codecs:
            self.send_codec = codecs[0]
            self._writer = _UdpWriter(self, self.ssrc, codecs[0].payloadType)
        self._rtcp_task = asyncio.create_task(self._run_rtcp())

    def close(self) -> None:
        if self._rtcp_task is not None:
            self._rtcp_task.cancel()
        for datagrams in (self._rtp, self._rtcp):
            if datagrams.transport is not None:
                datagrams.transport.close()

    # -- sending ---------------------------------------------------------------------------------

    def rtp_route(self) -> tuple[Any, asyncio.DatagramTransport, tuple[str, int]] | None:
        if self.remote is None or self._rtp.transport is None:
            return None
        return self._tx, self._rtp.transport, (self.remote.address, self.remote.rtp_port)

    def send_frame(self, frame: EncodedFrame) -> None:
        writer = self._writer
        if writer is None:
            return
        rtp = frame.rtp()
        if not rtp.payloads:
            return
        ntp = ntp_now()
        timestamp = writer.send(rtp, ntp)
        if timestamp is not None:
            packets, octets, _, _ = self._sent
            self._sent = (packets + len(rtp.payloads), octets + rtp.octets, timestamp, ntp)

    def request_keyframe(self) -> None:
        """Ask the peer for a keyframe (PLI) on every stream it sends."""
        for ssrc in self._streams:
            self.pli_sent += 1
            self._send_rtcp([RtcpPsfbPacket(fmt=RTCP_PSFB_PLI, ssrc=self.ssrc, media_ssrc=ssrc)])

    def _send_rtcp(self, packets: list[Any]) -> None:
        if self.remote is None or self._rtcp.transport is None:
            return
        data = b"".join(bytes(p) for p in packets)
        try:
            if self._rx is not None:  # SRTP on: RTCP goes out as SRTCP
                data = self._tx.protect_rtcp(data)
            self._rtcp.transport.sendto(data, (self.remote.address, self.remote.rtcp_port))
        except (pylibsrtp.Error, OSError) as exc:
            logger.debug("RTCP send failed: %s", exc)

    async def _run_rtcp(self) -> None:
        while True:
            await asyncio.sleep(RTCP_INTERVAL * (0.5 + random.random()))
            self._send_rtcp([self._report(), self._sdes()])

    def _report(self) -> RtcpSrPacket | RtcpRrPacket:
        reports = [self._report_block(ssrc, stream) for ssrc, stream in self._streams.items()]
        packets, octets, timestamp, ntp = self._sent
        if not packets:
            return RtcpRrPacket(ssrc=self.ssrc, reports=reports)
        info = RtcpSenderInfo(
            ntp_timestamp=ntp, rtp_timestamp=timestamp, packet_count=packets, octet_count=octets
        )
        return RtcpSrPacket(ssrc=self.ssrc, sender_info=info, reports=reports)

    def _report_block(self, ssrc: int, stream: StreamStatistics) -> RtcpReceiverInfo:
        lsr, dlsr = 0, 0
        if ssrc in self._last_sr:
            lsr, received = self._last_sr[ssrc]
            dlsr = int((time.time() - received) * 65536)
        return RtcpReceiverInfo(
            ssrc=ssrc,
            fraction_lost=stream.fraction_lost,
            packets_lost=stream.packets_lost,
            highest_sequence=stream.max_seq or 0,
            jitter=stream.jitter,
            lsr=lsr,
            dlsr=dlsr,
        )

    def _sdes(self) -> RtcpSdesPacket:
        return RtcpSdesPacket(chunks=[RtcpSourceInfo(ssrc=self.ssrc, items=[(1, _CNAME)])])

    # -- receiving -------------------------------------------------------------------------------

    def _heard(self, address: tuple[str, int], rtcp: bool) -> None:
        """The peer spoke; with COMEDIA its address is taken from its first packets."""
        self.last_heard_at = time.monotonic()
        if not self.comedia:
            return
        host, port = address[0], address[1]
        if self.remote is None:
            self.remote = Remote(host, port + 1 if rtcp else port, port if rtcp else port + 1)
        elif rtcp and self.remote.rtcp_port != port:
            self.remote = Remote(self.remote.address, self.remote.rtp_port, port)
        elif not rtcp and self.remote.rtp_port != port:
            self.remote = Remote(self.remote.address, port, self.remote.rtcp_port)

    def _on_rtp(self, data: bytes, address: tuple[str, int]) -> None:
        if not self.codecs:
            return  # not negotiated yet
        try:
            if self._rx is not None:
                data = self._rx.unprotect(data)
            packet = RtpPacket.parse(data)
        except (pylibsrtp.Error, ValueError):
            return
        codec = self.codecs.get(packet.payload_type)
        if codec is None:
            return
        self._heard(address, rtcp=False)
        stream = self._streams.get(packet.ssrc)
        if stream is None:
            stream = self._streams[packet.ssrc] = StreamStatistics(codec.clockRate)
        stream.add(packet)
        if self._nack is not None and self._nack.add(packet):
            lost = sorted(self._nack.missing)
            nack = RtcpRtpfbPacket(
                fmt=RTCP_RTPFB_NACK, ssrc=self.ssrc, media_ssrc=packet.ssrc, lost=lost
            )
            self._send_rtcp([nack])
        try:
            packet._data = depayload(codec, packet.payload) if packet.payload else b""  # type: ignore[attr-defined]
        except ValueError:
            return
        picture_lost, jitter_frame = self._jitter.add(packet)
        if picture_lost:
            self.request_keyframe()
        if jitter_frame is not None and self.on_frame is not None:
            timestamp = self._mapper.map(jitter_frame.timestamp)
            self.on_frame(self._frame(codec, jitter_frame.data, timestamp))

    def _frame(self, codec: RTCRtpCodecParameters, data: bytes, timestamp: int) -> EncodedFrame:
        packet = av.Packet(data)
        packet.pts = timestamp
        packet.time_base = Fraction(1, codec.clockRate)
        name = codec_name(codec)
        packetizer = self._packetizers.get(codec.payloadType)
        if packetizer is None:
            packetizer = self._packetizers[codec.payloadType] = Packetizer(codec)
        return EncodedFrame(
            packet=packet,
            codec=name,
            keyframe=is_keyframe(name, data),
            packetizer=packetizer,
            captured=self._capture_time(timestamp, codec.clockRate),
        )

    def _capture_time(self, timestamp: int, clock_rate: int) -> float | None:
        """When the peer captured the frame, from its last sender report (RFC 3550 6.4.1)."""
        origin = self._mapper._origin
        if self._sender_clock is None or origin is None:
            return None
        ntp, reported = self._sender_clock
        rtp_timestamp = (timestamp + origin) % 2**32
        step = ((rtp_timestamp - reported + 2**31) % 2**32 - 2**31) / clock_rate
        return (ntp >> 32) + (ntp & 0xFFFFFFFF) / 2**32 + step

    def _on_rtcp(self, data: bytes, address: tuple[str, int]) -> None:
        try:
            if self._rx is not None:
                data = self._rx.unprotect_rtcp(data)
            packets = RtcpPacket.parse(data)
        except (pylibsrtp.Error, ValueError):
            return
        self._heard(address, rtcp=True)
        for packet in packets:
            self._handle_rtcp(packet)

    def _handle_rtcp(self, packet: Any) -> None:
        if isinstance(packet, RtcpSrPacket):
            info = packet.sender_info
            self._last_sr[packet.ssrc] = ((info.ntp_timestamp >> 16) & 0xFFFFFFFF, time.time())
            if packet.ssrc in self._streams:
                self._sender_clock = (info.ntp_timestamp, info.rtp_timestamp)
        elif isinstance(packet, RtcpPsfbPacket) and packet.fmt in (RTCP_PSFB_PLI, RTCP_PSFB_FIR):
            self.pli_received += 1
            if self.on_keyframe_request is not None:
                self.on_keyframe_request()
        elif (
            isinstance(packet, RtcpRtpfbPacket)
            and packet.fmt == RTCP_RTPFB_NACK
            and self._writer is not None
            and packet.media_ssrc == self.ssrc
        ):
            for sequence_number in packet.lost:
                self._writer.retransmit(sequence_number)


async def open_session(kind: str, address: str, port_min: int = 0, port_max: int = 0) -> RtpSession:
    rtp, rtcp = await bind_pair(address, port_min, port_max)
    return RtpSession(kind, rtp, rtcp)


def closing(sessions: dict[str, RtpSession]) -> None:
    """Close every session of an endpoint (its sockets and RTCP task)."""
    for session in sessions.values():
        with contextlib.suppress(Exception):
            session.close()
    sessions.clear()
