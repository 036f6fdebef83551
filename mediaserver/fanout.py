"""The fan-out send path's two implementations behind one interface: `Writer`, one subscriber's
outgoing RTP stream of one kind, and `Group`, the writers one hub's frames go to in one call.

The native one (`mediaserver._fanout`, built from _fanout.c when a compiler was there at install
time) keeps each subscriber's state in C and, for a frame, writes, SRTP-protects (libsrtp as
pylibsrtp bundles it, on the Session's own srtp_t) and sends every subscriber's packets with
sendmmsg, without going back to Python. The Python one below does the same work, byte for byte
the same packets, one `protect` and one `sendto` per packet. `MEDIASERVER_NATIVE=0` in the
environment forces the Python one.

A writer whose RTCP sender reports its hub's group sends (`set_reports`, see forwarding.py) gets,
on each `Group.send_reports`, the sender report and SDES CNAME chunk aiortc's
RTCRtpSender._run_rtcp would have sent, byte for byte (`sender_report`), SRTCP-protected on the
same session and sent the same way: one call per hub and report interval instead of a coroutine
per subscriber and stream.

A writer keeps no copy of what it sent: its NACK history is one record per frame (the frame's
payload list, its first sequence number, its timestamp and send time), enough to rebuild any of
the last `HISTORY_SIZE` packets exactly.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

import pylibsrtp
from pylibsrtp._binding import ffi as _srtp_ffi
from pylibsrtp._binding import lib as _srtp_lib

logger = logging.getLogger(__name__)

HISTORY_SIZE = 128  # aiortc's RTP_HISTORY_SIZE: packets a NACK can reach back
# The most packets one frame may have in a group send (_fanout.c's bound); the pads of a
# bigger frame take it one by one.
MAX_FRAME_PACKETS = 1024
_MARKER = 0x80
MAX_CNAME = 255  # an SDES item's length is one octet
_RTCP_SR = 200
_RTCP_SDES = 202
_SDES_CNAME = 1


def sender_report(
    ssrc: int,
    ntp_timestamp: int,
    rtp_timestamp: int,
    packets: int,
    octets: int,
    cname: bytes | None,
) -> bytes:
    """The compound RTCP packet aiortc 1.16.0's RTCRtpSender._run_rtcp sends (its rtp.py's
    RtcpSrPacket and RtcpSdesPacket serialization): a sender report with no report blocks, then,
    with a CNAME, an SDES chunk of that one item, two zero octets and padding to 32 bits."""
    report = bytes((0x80, _RTCP_SR)) + (6).to_bytes(2, "big") + ssrc.to_bytes(4, "big")
    report += ntp_timestamp.to_bytes(8, "big") + rtp_timestamp.to_bytes(4, "big")
    report += (packets & 0xFFFFFFFF).to_bytes(4, "big") + (octets & 0xFFFFFFFF).to_bytes(4, "big")
    if cname is None:
        return report
    chunk = ssrc.to_bytes(4, "big") + bytes((_SDES_CNAME, len(cname))) + cname + b"\x00\x00"
    chunk += bytes(-len(chunk) % 4)
    return report + bytes((0x81, _RTCP_SDES)) + (len(chunk) // 4).to_bytes(2, "big") + chunk


class PyWriter:
    """The Python implementation of a subscriber's stream (see the module's docstring)."""

    def __init__(
        self,
        *,
        ssrc: int,
        payload_type: int,
        rtx_ssrc: int,
        rtx_payload_type: int | None,
        sequence_number: int,
        rtx_sequence_number: int,
        timestamp_origin: int,
        before: bytes,
        after: bytes | None,
    ) -> None:
        self.ssrc = ssrc & 0xFFFFFFFF
        self.payload_type = payload_type & 0x7F
        self.rtx_ssrc = rtx_ssrc & 0xFFFFFFFF
        self.rtx_payload_type = None if rtx_payload_type is None else rtx_payload_type & 0x7F
        self.sequence_number = sequence_number & 0xFFFF
        self.rtx_sequence_number = rtx_sequence_number & 0xFFFF
        self.timestamp_origin = timestamp_origin & 0xFFFFFFFF
        self.extensions = (bytes(before), None if after is None else bytes(after))
        self._first_byte = 0x90 if before else 0x80  # version 2, X bit
        self._route: tuple[Any, Any, tuple[str, int]] | None = None
        self._protect_rtcp: Any = None
        self.packets = self.octets = self.wire_packets = self.wire_octets = 0
        self.last_wire_octets = 0
        self.rtp_timestamp = self.ntp_timestamp = 0
        self._meter_second = self._meter_octets = self.bitrate = 0
        # (payloads, first sequence number, packets sent, total packets, timestamp, ntp time)
        self._history: list[tuple[list[bytes], int, int, int, int, int] | None] = [
            None
        ] * HISTORY_SIZE
        self._history_next = 0
        # Sender reports the group sends (set_reports): the CNAME, whether it does, what and
        # when the last one was (report_ntp, report_time: time.time(), 0.0 for never).
        self.reporting = False
        self._cname: bytes | None = None
        self.report_ntp = 0
        self.report_time = 0.0
        self.rtcp_packets = self.rtcp_octets = 0

    native = False

    @property
    def routed(self) -> bool:
        return self._route is not None

    def set_route(
        self, session: Any, srtp: int, datagrams: Any, address: tuple[str, int], fd: int
    ) -> None:
        """Send through `session.protect` and `datagrams.sendto` to `address` (`srtp` and `fd`
        only matter to the native writer)."""
        self._route = (session.protect, datagrams.sendto, address)
        self._protect_rtcp = getattr(session, "protect_rtcp", None)

    def clear_route(self) -> None:
        self._route = None
        self._protect_rtcp = None

    def set_reports(self, cname: bytes | None) -> None:
        """The group sends this stream's sender reports from now on, with an SDES chunk for
        `cname` (None: without one)."""
        if cname is not None and len(cname) > MAX_CNAME:
            raise ValueError("CNAME too long for an SDES item")
        self._cname = None if cname is None else bytes(cname)
        self.reporting = True

    def stop_reports(self) -> None:
        self.reporting = False

    def report(self) -> bytes:
        """The clear compound packet the next sender report would carry."""
        return sender_report(
            self.ssrc,
            self.ntp_timestamp,
            self.rtp_timestamp,
            self.packets,
            self.octets,
            self._cname,
        )

    def send_report(self, now: float) -> int:
        """Send the sender report now (`now`: time.time()); the octets put on the wire, 0 when
        this writer does not report, has no route or the protection failed."""
        route, protect_rtcp = self._route, self._protect_rtcp
        if route is None or protect_rtcp is None or not self.reporting:
            return 0
        _, sendto, address = route
        try:
            protected = protect_rtcp(self.report())
        except (pylibsrtp.Error, ValueError) as exc:
            logger.debug("RTCP protection failed: %s", exc)
            return 0
        try:
            sendto(protected, address)
        except OSError as exc:  # lost, like on the wire
            logger.debug("RTCP send failed: %s", exc)
        self.report_ntp, self.report_time = self.ntp_timestamp, now
        self.rtcp_packets += 1
        self.rtcp_octets += len(protected)
        return len(protected)

    def _extensions(self, ntp_time: int) -> bytes:
        before, after = self.extensions
        if after is None:
            return before
        return before + ((ntp_time >> 14) & 0xFFFFFF).to_bytes(3, "big") + after

    def send(self, payloads: list[bytes], timestamp: int, ntp_time: int, now: float) -> bool:
        """Send one frame's packets; False (nothing sent) without a route."""
        route = self._route
        if route is None:
            return False
        if not payloads:
            return True
        protect, sendto, address = route
        extensions = self._extensions(ntp_time)
        stream_timestamp = (self.timestamp_origin + timestamp) & 0xFFFFFFFF
        head = stream_timestamp.to_bytes(4, "big") + self.ssrc.to_bytes(4, "big")
        first_byte, payload_type = self._first_byte, self.payload_type
        first = sequence_number = self.sequence_number
        last = len(payloads) - 1
        done = wire = octets = 0
        for index, payload in enumerate(payloads):
            second = (_MARKER if index == last else 0) | payload_type
            packet = (
                bytes((first_byte, second))
                + sequence_number.to_bytes(2, "big")
                + head
                + extensions
                + payload
            )
            try:
                protected = protect(packet)
            except (pylibsrtp.Error, ValueError) as exc:
                logger.debug("RTP protection failed: %s", exc)
                break
            try:
                sendto(protected, address)
            except OSError as exc:  # lost, like on the wire
                logger.debug("RTP send failed: %s", exc)
            wire += len(protected)
            octets += len(payload)
            sequence_number = (sequence_number + 1) & 0xFFFF
            done += 1
        if done:
            record = (payloads, first, done, len(payloads), stream_timestamp, ntp_time)
            self._history[self._history_next] = record
            self._history_next = (self._history_next + 1) % HISTORY_SIZE
        self.sequence_number = sequence_number
        self.packets += done
        self.octets += octets
        self.wire_packets += done
        self.wire_octets += wire
        self.last_wire_octets = wire
        self.rtp_timestamp, self.ntp_timestamp = stream_timestamp, ntp_time
        self._meter_add(wire, now)
        return True

    def _meter_add(self, octets: int, now: float) -> None:
        second = int(now)
        if second != self._meter_second:
            self.bitrate = self._meter_octets * 8 if second == self._meter_second + 1 else 0
            self._meter_second, self._meter_octets = second, 0
        self._meter_octets += octets

    def current(self, now: float) -> int:
        """Bits per second sent over the last complete second (KMS's outbound
        `targetBitrate` is its RTP source's measured bitrate)."""
        return self.bitrate if int(now) <= self._meter_second + 1 else 0

    def _find(self, sequence_number: int) -> tuple[bytes, int, int, int] | None:
        """The payload, marker, timestamp and send time of a packet still in the history."""
        newest = (self.sequence_number - 1) & 0xFFFF
        if (newest - sequence_number) & 0xFFFF >= HISTORY_SIZE:
            return None
        for back in range(1, HISTORY_SIZE + 1):
            record = self._history[(self._history_next - back) % HISTORY_SIZE]
            if record is None:
                return None
            payloads, first, count, total, timestamp, ntp_time = record
            index = (sequence_number - first) & 0xFFFF
            if index < count:
                marker = _MARKER if index == total - 1 else 0
                return payloads[index], marker, timestamp, ntp_time
        return None

    def retransmit(self, sequence_number: int) -> int:
        """Resend a packet a NACK asked for, as RTX if negotiated (RFC 4588: same timestamp,
        marker and extensions, the RTX stream's payload type, SSRC and sequence number, and
        the original sequence number before the payload); the octets put on the wire, or 0
        when it is no longer kept."""
        sequence_number &= 0xFFFF
        route = self._route
        found = self._find(sequence_number)
        if route is None or found is None:
            return 0
        payload, marker, timestamp, ntp_time = found
        protect, sendto, address = route
        tail = timestamp.to_bytes(4, "big")
        if self.rtx_payload_type is None:
            head = bytes((self._first_byte, marker | self.payload_type))
            head += sequence_number.to_bytes(2, "big")
            tail += self.ssrc.to_bytes(4, "big") + self._extensions(ntp_time)
        else:
            head = bytes((self._first_byte, marker | self.rtx_payload_type))
            head += self.rtx_sequence_number.to_bytes(2, "big")
            tail += self.rtx_ssrc.to_bytes(4, "big") + self._extensions(ntp_time)
            tail += sequence_number.to_bytes(2, "big")
        try:
            protected = protect(head + tail + payload)
        except (pylibsrtp.Error, ValueError) as exc:
            logger.debug("RTP retransmission failed: %s", exc)
            return 0
        if self.rtx_payload_type is not None:
            self.rtx_sequence_number = (self.rtx_sequence_number + 1) & 0xFFFF
        try:
            sendto(protected, address)
        except OSError as exc:
            logger.debug("RTP retransmission failed: %s", exc)
        self.wire_packets += 1
        self.wire_octets += len(protected)
        self.last_wire_octets = len(protected)
        return len(protected)


class PyGroup:
    """The Python implementation of a hub's fan-out: each writer in turn."""

    def __init__(self) -> None:
        self._writers: list[PyWriter] = []

    @property
    def writers(self) -> tuple[PyWriter, ...]:
        return tuple(self._writers)

    def __len__(self) -> int:
        return len(self._writers)

    def add(self, writer: PyWriter) -> None:
        if writer not in self._writers:
            self._writers.append(writer)

    def remove(self, writer: PyWriter) -> None:
        if writer in self._writers:
            self._writers.remove(writer)

    def send(self, payloads: list[bytes], timestamp: int, ntp_time: int, now: float) -> None:
        for writer in tuple(self._writers):
            writer.send(payloads, timestamp, ntp_time, now)

    def send_reports(self, now: float) -> int:
        """Every reporting writer's sender report; how many were sent."""
        return sum(1 for writer in tuple(self._writers) if writer.send_report(now))


def turned_off() -> bool:
    """Whether `MEDIASERVER_NATIVE=0` (or false, no, off) turns the native paths off (this send
    path and the receive path, receive.py)."""
    return os.environ.get("MEDIASERVER_NATIVE", "1").strip().lower() in ("0", "false", "no", "off")


def _load_native() -> Any:
    if turned_off():
        return None
    try:
        from . import _fanout
    except ImportError:
        return None
    protect = _srtp_ffi.addressof(_srtp_lib, "srtp_protect")
    _fanout.set_srtp_protect(int(_srtp_ffi.cast("uintptr_t", protect)), pylibsrtp.Error)
    protect_rtcp = _srtp_ffi.addressof(_srtp_lib, "srtp_protect_rtcp")
    _fanout.set_srtp_protect_rtcp(int(_srtp_ffi.cast("uintptr_t", protect_rtcp)))
    return _fanout


_native = _load_native()
Writer: Any = _native.Writer if _native is not None else PyWriter
Group: Any = _native.Group if _native is not None else PyGroup


def native_available() -> bool:
    """Whether the native writer is in use (built, and not turned off)."""
    return _native is not None


def describe() -> str:
    """Which send path is in use, in words for the start-up log."""
    if _native is not None:
        return "native fan-out send path (mediaserver._fanout)"
    if turned_off():
        return "Python fan-out send path (MEDIASERVER_NATIVE=0)"
    return "Python fan-out send path (mediaserver._fanout is not built)"


def srtp_pointer(session: Any) -> int:
    """The srtp_t a pylibsrtp Session wraps, as an address; 0 for anything else (clear RTP, a
    test's stand-in), which the writers protect through its `protect()`."""
    if type(session) is not pylibsrtp.Session:
        return 0
    return int(_srtp_ffi.cast("uintptr_t", session._srtp[0]))


def socket_of(datagrams: Any, address: tuple[str, int]) -> int:
    """The UDP socket a datagram transport sends from, when packets to `address` can be sent on
    it directly (-1 otherwise: a TURN relay's transport has no socket of its own)."""
    sock = datagrams.get_extra_info("socket") if hasattr(datagrams, "get_extra_info") else None
    if sock is None or getattr(sock, "type", None) != socket.SOCK_DGRAM:
        return -1
    family = getattr(sock, "family", None)
    host = address[0]
    if family == socket.AF_INET and ":" not in host:
        return sock.fileno()
    if family == socket.AF_INET6 and ":" in host:
        return sock.fileno()
    return -1
