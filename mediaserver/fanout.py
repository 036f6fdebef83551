"""The fan-out send path's two implementations behind one interface: `Writer`, one subscriber's
outgoing RTP stream of one kind, and `Group`, the writers one hub's frames go to in one call.

The native one (`mediaserver._fanout`, built from _fanout.c when a compiler was there at install
time) keeps each subscriber's state in C and, for a frame, writes, SRTP-protects (libsrtp as
pylibsrtp bundles it, on the Session's own srtp_t) and sends every subscriber's packets with
sendmmsg, without going back to Python. The Python one below does the same work, byte for byte
the same packets, one `protect` and one `sendto` per packet. `MEDIASERVER_NATIVE=0` in the
environment forces the Python one.

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
        self.packets = self.octets = self.wire_packets = self.wire_octets = 0
        self.last_wire_octets = 0
        self.rtp_timestamp = self.ntp_timestamp = 0
        self._meter_second = self._meter_octets = self.bitrate = 0
        # (payloads, first sequence number, packets sent, total packets, timestamp, ntp time)
        self._history: list[tuple[list[bytes], int, int, int, int, int] | None] = [
            None
        ] * HISTORY_SIZE
        self._history_next = 0

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

    def clear_route(self) -> None:
        self._route = None

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
