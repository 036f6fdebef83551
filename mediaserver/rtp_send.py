"""The per-subscriber RTP send path: each forwarded frame is packetized once for every subscriber,
and each subscriber's packets are written, SRTP-protected and sent synchronously.

aiortc's sender packetizes and serializes every frame again for each subscriber and awaits a chain
of five coroutines per packet (sender, DTLS transport, ICE transport, ICE connection, STUN
protocol). Here a `Packetizer` per forwarded stream turns a frame into RTP payloads once, shared
by every subscriber (`RtpFrame`), and an `RtpWriter` per subscriber only writes the 12-byte header
and the extension block in front of each payload, keeps the packets for retransmission, protects
them with the DTLS transport's SRTP session and hands them to the selected ICE pair's datagram
transport.

It relies on aiortc 1.16.0 / aioice 0.13.0 internals, each named where it is used: the DTLS
transport's `_state` and `_tx_srtp`, the ICE connection's `_nominated` pairs, and aioice's
`StunProtocol.send_data`, which is exactly `self.transport.sendto(data, addr)` for host,
server-reflexive and relayed pairs alike (a relayed pair's transport is aioice's TurnTransport,
whose `sendto` is synchronous too).
"""

from __future__ import annotations

import logging
import struct
from dataclasses import dataclass

import av
import pylibsrtp
from aiortc.codecs import get_encoder
from aiortc.rtcdtlstransport import RTCDtlsTransport, State
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtcrtpsender import random_sequence_number
from aiortc.rtp import RTP_HISTORY_SIZE, HeaderExtensions, HeaderExtensionsMap
from aiortc.utils import random32

logger = logging.getLogger(__name__)

_HEADER = struct.Struct("!BBHII")  # V/P/X/CC, M/PT, sequence number, timestamp, SSRC
_MARKER = 0x80
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
    the selected ICE pair's datagram transport."""

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
        self.ssrc = ssrc
        self.payload_type = payload_type
        self.rtx_ssrc = rtx_ssrc
        self.rtx_payload_type = rtx_payload_type
        self.sequence_number = random_sequence_number()
        self.rtx_sequence_number = random_sequence_number()
        self.timestamp_origin = random32()
        self._before_send_time, self._after_send_time = extension_block(extensions_map, mid)
        self._first_byte = 0x90 if self._before_send_time else 0x80  # version 2, X bit
        # Unprotected packets by sequence number modulo the size (aiortc's history size).
        self._history: list[bytes | None] = [None] * RTP_HISTORY_SIZE
        # Bytes the last send() or retransmit() put on the wire, SRTP included.
        self.wire_octets = 0

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

    def send(self, frame: RtpFrame, ntp_time: int) -> int | None:
        """Send one frame's packets now; the frame's RTP timestamp on this stream, or None when
        the connection is down (nothing sent). `ntp_time` stamps abs-send-time."""
        route = self._sendto()
        if route is None:
            return None
        srtp, datagrams, address = route
        protect, sendto = srtp.protect, datagrams.sendto  # type: ignore[attr-defined]
        extensions = self._before_send_time
        if self._after_send_time is not None:
            send_time = ((ntp_time >> 14) & 0xFFFFFF).to_bytes(3, "big")
            extensions = extensions + send_time + self._after_send_time
        timestamp = (self.timestamp_origin + frame.timestamp) & 0xFFFFFFFF
        first, payload_type, ssrc = self._first_byte, self.payload_type, self.ssrc
        pack, history = _HEADER.pack, self._history
        sequence_number = self.sequence_number
        last = len(frame.payloads) - 1
        wire = 0
        try:
            for index, payload in enumerate(frame.payloads):
                marker = _MARKER if index == last else 0
                packet = (
                    pack(first, marker | payload_type, sequence_number, timestamp, ssrc)
                    + extensions
                    + payload
                )
                history[sequence_number % RTP_HISTORY_SIZE] = packet
                protected = protect(packet)
                sendto(protected, address)
                wire += len(protected)
                sequence_number = (sequence_number + 1) & 0xFFFF
        except (pylibsrtp.Error, OSError) as exc:
            logger.debug("RTP send failed: %s", exc)
        self.sequence_number = sequence_number
        self.wire_octets = wire
        return timestamp

    def retransmit(self, sequence_number: int) -> bool:
        """Resend a packet a NACK asked for, as RTX if negotiated; whether it was still kept."""
        packet = self._history[sequence_number % RTP_HISTORY_SIZE]
        if packet is None or int.from_bytes(packet[2:4], "big") != sequence_number:
            return False
        route = self._sendto()
        if route is None:
            return False
        srtp, datagrams, address = route
        if self.rtx_payload_type is not None:
            # RFC 4588: same timestamp, marker and extensions, the RTX stream's payload type,
            # SSRC and sequence number, and the original sequence number before the payload.
            header_length = (
                12
                + len(self._before_send_time)
                + (3 + len(self._after_send_time) if self._after_send_time is not None else 0)
            )
            packet = (
                _HEADER.pack(
                    packet[0],
                    (packet[1] & _MARKER) | self.rtx_payload_type,
                    self.rtx_sequence_number,
                    int.from_bytes(packet[4:8], "big"),
                    self.rtx_ssrc,
                )
                + packet[12:header_length]
                + packet[2:4]
                + packet[header_length:]
            )
            self.rtx_sequence_number = (self.rtx_sequence_number + 1) & 0xFFFF
        try:
            protected = srtp.protect(packet)
            datagrams.sendto(protected, address)  # type: ignore[attr-defined]
        except (pylibsrtp.Error, OSError) as exc:
            logger.debug("RTP retransmission failed: %s", exc)
            return False
        self.wire_octets = len(protected)
        return True
