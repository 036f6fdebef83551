"""The per-subscriber RTP send path: each forwarded frame is packetized once for every subscriber,
and each subscriber's packets are written, SRTP-protected and sent synchronously.

aiortc's sender packetizes and serializes every frame again for each subscriber and awaits a chain
of five coroutines per packet (sender, DTLS transport, ICE transport, ICE connection, STUN
protocol). Here a `Packetizer` per forwarded stream turns a frame into RTP payloads once, shared
by every subscriber (`RtpFrame`), and an `RtpWriter` per subscriber only writes the 12-byte header
and the extension block in front of each payload, keeps the packets for retransmission, protects
them with the DTLS transport's SRTP session and hands them to the selected ICE pair's datagram
transport. The writing itself is fanout.py's `Writer` (native when built): a subscriber whose
chain is pure forwarding is sent to by its hub's fan-out group instead, one call per frame for
all of them (forwarding.py), through the same writer.

It relies on aiortc 1.16.0 / aioice 0.13.0 internals, each named where it is used: the DTLS
transport's `_state` and `_tx_srtp`, the ICE connection's `_nominated` pairs, and aioice's
`StunProtocol.send_data`, which is exactly `self.transport.sendto(data, addr)` for host,
server-reflexive and relayed pairs alike (a relayed pair's transport is aioice's TurnTransport,
whose `sendto` is synchronous too).
"""

from __future__ import annotations

import logging
import struct
import time
from dataclasses import dataclass

import av
import pylibsrtp
from aiortc.codecs import get_encoder
from aiortc.rtcdtlstransport import RTCDtlsTransport, State
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtcrtpsender import random_sequence_number
from aiortc.rtp import HeaderExtensions, HeaderExtensionsMap
from aiortc.utils import random32

from . import fanout

logger = logging.getLogger(__name__)

_ABS_SEND_TIME_PROBES = (0, 0xFFFFFF)


@dataclass(slots=True, frozen=True)
class RtpFrame:
    """One encoded frame as RTP payloads, shared by every subscriber of its stream."""

    payloads: list[bytes]
    timestamp: int  # in the codec's clock, from the frame's pts; each writer adds its own origin
    octets: int  # payload octets, what RTCP sender reports count


class Packetizer:
    """Splits one stream's encoded frames into RTP payloads with the codec's aiortc packetizer
    (its encoder's `pack()`, what aiortc's sender does with an `av.Packet`).

    One packetizer per forwarded stream, shared by all its subscribers: VP8's picture id then runs
    on by one per frame of the stream. Every subscriber gets every frame from the keyframe it
    starts at (a sink that skips frames waits for the next keyframe), so each sees a gapless
    picture id sequence, which Chromium's VP8 reference finder needs."""

    def __init__(self, codec: RTCRtpCodecParameters) -> None:
        self._encoder = get_encoder(codec)

    def pack(self, packet: av.Packet) -> RtpFrame:
        payloads, timestamp = self._encoder.pack(packet)
        return RtpFrame(payloads, timestamp, sum(map(len, payloads)))


def extension_block(
    extensions_map: HeaderExtensionsMap, mid: str | None
) -> tuple[bytes, bytes | None]:
    """The RTP header extension block aiortc's sender writes (mid and abs-send-time, as far as
    negotiated), serialized by aiortc itself, split around the 3-byte abs-send-time value:
    (before, after), or (block, None) when abs-send-time was not negotiated."""
    blocks = []
    for probe in _ABS_SEND_TIME_PROBES:
        values = HeaderExtensions()
        values.mid = mid
        values.abs_send_time = probe
        profile, value = extensions_map.set(values)
        blocks.append(struct.pack("!HH", profile, len(value) >> 2) + value if value else b"")
    low, high = blocks
    if low == high:
        return low, None
    start = next(i for i, (a, b) in enumerate(zip(low, high, strict=True)) if a != b)
    assert high[start : start + 3] == b"\xff\xff\xff", "unexpected abs-send-time layout"
    return low[:start], low[start + 3 :]


class RtpWriter:
    """One subscriber's outgoing RTP stream of one kind: its SSRC, payload type, sequence numbers,
    timestamp origin and header extensions; a history of the last packets for NACKs, resent as
    RTX when negotiated (RFC 4588); sends through the DTLS transport's SRTP session straight to
    the selected ICE pair's datagram transport.

    The stream's state and the packet writing live in `stream`, a fanout.Writer (native or
    Python, see fanout.py): the same object a hub's fan-out group sends through when this
    subscriber's chain is pure forwarding, so both ways number packets on from each other. This
    class finds the route (SRTP session, transport, address) for the sends that come through it.
    """

    def __init__(
        self,
        *,
        transport: RTCDtlsTransport,
        ssrc: int,
        payload_type: int,
        rtx_ssrc: int,
        rtx_payload_type: int | None,
        extensions_map: HeaderExtensionsMap,
        mid: str | None,
    ) -> None:
        self.transport = transport
        before, after = extension_block(extensions_map, mid)
        self.stream = fanout.Writer(
            ssrc=ssrc,
            payload_type=payload_type,
            rtx_ssrc=rtx_ssrc,
            rtx_payload_type=rtx_payload_type,
            sequence_number=random_sequence_number(),
            rtx_sequence_number=random_sequence_number(),
            timestamp_origin=random32(),
            before=before,
            after=after,
        )
        self._route: tuple[object, object, tuple[str, int], bool] | None = None
        # Whether the route is a plain UDP socket (not a TURN relay): what a hub's fan-out
        # group sends through.
        self.direct = False

    # The stream's identity and numbering, as aiortc's sender names them.
    ssrc = property(lambda self: self.stream.ssrc)
    payload_type = property(lambda self: self.stream.payload_type)
    rtx_ssrc = property(lambda self: self.stream.rtx_ssrc)
    rtx_payload_type = property(lambda self: self.stream.rtx_payload_type)
    timestamp_origin = property(lambda self: self.stream.timestamp_origin)
    sequence_number = property(lambda self: self.stream.sequence_number)
    rtx_sequence_number = property(lambda self: self.stream.rtx_sequence_number)

    @property
    def wire_octets(self) -> int:
        """Bytes the last send() or retransmit() put on the wire, SRTP included."""
        return self.stream.last_wire_octets

    def _sendto(self) -> tuple[pylibsrtp.Session, object, tuple[str, int]] | None:
        """The SRTP session, datagram transport and address to send to, or None when the
        connection is not (or no longer) up. What `RTCDtlsTransport._send_rtp` and aioice's
        `Connection.sendto` / `StunProtocol.send_data` do for each packet, looked up once."""
        dtls = self.transport
        if dtls._state is not State.CONNECTED:
            return None
        pair = dtls.transport._connection._nominated.get(1)
        if pair is None:
            return None
        return dtls._tx_srtp, pair.protocol.transport, pair.remote_addr

    def route(self, direct: bool = False) -> bool:
        """Point the stream at the current route; whether there is one. `direct`: send on
        the ICE pair's UDP socket itself (a dup of it, held until `unroute`), as a hub's fan-out
        group does; otherwise through the transport's `sendto`."""
        route = self._sendto()
        key = None if route is None else (*route, direct)
        if key != self._route:
            self._route = key
            self.direct = False
            if route is None:
                self.stream.clear_route()
            else:
                session, datagrams, address = route
                fd = fanout.socket_of(datagrams, address) if direct else -1
                self.stream.set_route(session, fanout.srtp_pointer(session), datagrams, address, fd)
                self.direct = fd >= 0
        return route is not None

    def unroute(self) -> None:
        """Forget the route (it is looked up again on the next send)."""
        self._route = None
        self.direct = False
        self.stream.clear_route()

    def send(self, frame: RtpFrame, ntp_time: int, now: float | None = None) -> int | None:
        """Send one frame's packets now; the frame's RTP timestamp on this stream, or None when
        the connection is down (nothing sent). `ntp_time` stamps abs-send-time; `now`
        (monotonic) feeds the stream's bitrate meter."""
        if not self.route():
            return None
        self.stream.send(
            frame.payloads, frame.timestamp, ntp_time, time.monotonic() if now is None else now
        )
        return (self.stream.timestamp_origin + frame.timestamp) & 0xFFFFFFFF

    def retransmit(self, sequence_number: int) -> bool:
        """Resend a packet a NACK asked for, as RTX if negotiated; whether it was still kept."""
        if not self.route(self.direct):
            return False
        return self.stream.retransmit(sequence_number) > 0
