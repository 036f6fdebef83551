"""The native receive path: a WebRTC transport's incoming RTP read, decrypted, counted and
reassembled into frames in C (`mediaserver._receive`, built from _receive.c when a compiler was
there at install time), one Python call per frame instead of aiortc's per-packet chain.

A `NativeReceive` serves one DTLS transport whose receivers are all the media server's
ForwardingReceivers (not a subclass with its own `_handle_rtp_packet`, which C would skip),
while its ICE pair is nominated on a host UDP socket (IPv4) and DTLS is connected. It replaces
the pair's aioice protocol's `datagram_received` (uvloop keeps reading the first datagram of a
wake-up: it has no pause for UDP transports and refuses `add_reader` on a transport's socket),
and the C side drains the socket with recvmmsg, a bounded number of
batches per wake-up. RTCP is decrypted in C and handed over once per compound packet
(`_on_rtcp`); a transport with no receiver (a viewer's) is served for its RTCP alone. STUN, DTLS
and other addresses' datagrams go to aioice's own `datagram_received`, so to aiortc's
coroutines, as before.

The state aiortc's receivers keep (name-mangled `RTCRtpReceiver` attributes: the jitter buffer,
the NACK generator's missing set, the `StreamStatistics` per SSRC, `__active_ssrc`; the DTLS
transport's `__rx_packets`/`__rx_bytes` and its router's SSRC table) is taken into C when the
native path starts and written back while it runs (statistics, once per wake-up) or when it
ends (jitter buffer and missing set), so aiortc's receiver reports, getStats and the Python
path after a hand-back carry on from the same numbers, with the same SRTP session.

Two things are fed less often than aiortc does: its RemoteBitrateEstimator gets one sample per
frame (the frame's bytes, its last packet's arrival and abs-send-time; `bench.receive_path
--remb-check` measures the estimate against per-packet feeding), and `__active_ssrc` (what
getSynchronizationSources reads, with a 10 s horizon) is refreshed at most every 100 ms.

It ends (`release`) on a DTLS or ICE state change, another nominated pair, a receiver stopped
or disabled, a renegotiated receiver set, a packet C does not handle (H.264, an SSRC beyond
`MAX_SSRCS`: that packet and the rest of its batch go to Python still encrypted, and the
transport stays on Python) or a Python error under the C call (reported as unraisable: the event
loop never sees it). `MEDIASERVER_NATIVE_RECEIVE=0` turns it off, and `MEDIASERVER_NATIVE=0` turns
it off with the native send path.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from typing import Any

import aiortc.clock
import pylibsrtp
from aiortc.jitterbuffer import JitterFrame
from aiortc.rtcdtlstransport import State
from aiortc.rtcrtpreceiver import StreamStatistics
from aiortc.rtp import (
    RTCP_PSFB_APP,
    RtcpPacket,
    RtcpPsfbPacket,
    RtcpReceiverInfo,
    RtpPacket,
    pack_remb_fci,
)
from pylibsrtp._binding import ffi as _srtp_ffi
from pylibsrtp._binding import lib as _srtp_lib

from . import fanout
from .pairs import WatchedPairs, watched

logger = logging.getLogger(__name__)

_background: set[asyncio.Future[None]] = set()
REATTACH_DELAY = 1.0  # seconds after a pair or state change before trying the native path again


def turned_on() -> bool:
    """Whether the native receive path is wanted: yes unless `MEDIASERVER_NATIVE_RECEIVE=0`
    (or `MEDIASERVER_NATIVE=0`, which turns every native path off)."""
    value = os.environ.get("MEDIASERVER_NATIVE_RECEIVE", "1").strip().lower()
    return value not in ("0", "false", "no", "off")


def _load_native() -> Any:
    if fanout.turned_off() or not turned_on():
        return None
    try:
        from . import _receive
    except ImportError:
        return None
    set_srtp(_receive)
    return _receive


def set_srtp(module: Any) -> None:
    """Give the native module libsrtp's unprotect functions (pylibsrtp's bundled library)."""
    unprotect = _srtp_ffi.addressof(_srtp_lib, "srtp_unprotect")
    unprotect_rtcp = _srtp_ffi.addressof(_srtp_lib, "srtp_unprotect_rtcp")
    module.set_srtp_unprotect(
        int(_srtp_ffi.cast("uintptr_t", unprotect)),
        pylibsrtp.Error,
        int(_srtp_ffi.cast("uintptr_t", unprotect_rtcp)),
    )


_native = _load_native()


def native_available() -> bool:
    """Whether the native receive path is in use (built, and not turned off)."""
    return _native is not None


def describe() -> str:
    """Which receive path is in use, in words for the start-up log."""
    if _native is not None:
        return "native receive path (mediaserver._receive) for host UDP pairs, VP8 and Opus"
    if fanout.turned_off():
        return "Python receive path (MEDIASERVER_NATIVE=0)"
    if not turned_on():
        return "Python receive path (MEDIASERVER_NATIVE_RECEIVE=0)"
    return "Python receive path (mediaserver._receive is not built)"


def _spawn(coroutine: Any) -> None:
    task = asyncio.ensure_future(coroutine)
    _background.add(task)
    task.add_done_callback(_background.discard)


def _codec_kind(codec: Any, codecs: dict[int, Any]) -> tuple[int, int]:
    """The C side's codec kind and, for RTX, the payload type it repairs (-1: none usable)."""
    assert _native is not None
    name = codec.name.lower()
    if name == "rtx":
        apt = codec.parameters.get("apt")
        return _native.CODEC_RTX, apt if isinstance(apt, int) and apt in codecs else -1
    if name == "vp8":
        return _native.CODEC_VP8, -1
    if name == "h264":
        return _native.CODEC_UNSUPPORTED, -1
    return _native.CODEC_IDENTITY, -1  # aiortc's depayload leaves these as they are


def _extension_ids(dtls: Any) -> tuple[int, ...]:
    ids = dtls._rtp_header_extensions_map._HeaderExtensionsMap__ids
    return tuple(
        getattr(ids, name) or 0
        for name in (
            "abs_send_time",
            "mid",
            "rtp_stream_id",
            "repaired_rtp_stream_id",
            "transmission_offset",
            "audio_level",
            "transport_sequence_number",
        )
    )


class _Track:
    """One receiver's frames from C, handed to its _FrameHandoff as aiortc's jitter buffer
    output would be (timestamps through the receiver's TimestampMapper)."""

    def __init__(self, receiver: Any) -> None:
        self.receiver = receiver
        self.codecs: dict[int, Any] = receiver._RTCRtpReceiver__codecs
        self.mapper = receiver._RTCRtpReceiver__timestamp_mapper

    def on_frame(self, payload_type: int, data: bytes, timestamp: int) -> None:
        receiver = self.receiver
        if not receiver._RTCRtpReceiver__decoder_thread:
            return  # stopped (an RTCP BYE), as aiortc's receiver does
        frame = JitterFrame(data=data, timestamp=self.mapper.map(timestamp))
        receiver._RTCRtpReceiver__decoder_queue.put((self.codecs[payload_type], frame))


class NativeReceive:
    """The native receive path of one DTLS transport (see the module's docstring). `fd` is the
    socket to drain (-1: none, datagrams come through `process` or `datagram_received`),
    `remote` the pair's remote address and `fallback` the Python `datagram_received`."""

    def __init__(
        self, dtls: Any, receivers: list[Any], fd: int, remote: tuple[str, int], fallback: Any
    ) -> None:
        assert _native is not None
        self.dtls = dtls
        self.receivers = receivers
        self.released = False
        self.reason = ""
        self.on_release: list[Any] = []
        self.remb_log: list[tuple[int, int, int, int, int]] | None = None  # bench.receive_path
        self._tracks = [_Track(receiver) for receiver in receivers]
        session = dtls._rx_srtp
        self.native = _native.Receiver(
            session,
            fanout.srtp_pointer(session),
            fd,
            remote,
            fallback,
            self._on_events,
            self._on_handback,
            self._new_stats,
            dtls,
            aiortc.clock.current_datetime,
            _extension_ids(dtls),
        )
        self.native.set_rtcp(self._on_rtcp)
        router = dtls._rtp_router
        for index, receiver in enumerate(receivers):
            codecs = receiver._RTCRtpReceiver__codecs
            jitter = receiver._RTCRtpReceiver__jitter_buffer
            table = [
                (pt, *_codec_kind(codec, codecs), codec.clockRate) for pt, codec in codecs.items()
            ]
            rtx = list(receiver._RTCRtpReceiver__rtx_ssrc.items())
            self.native.add_track(
                index,
                int(receiver._RTCRtpReceiver__kind == "video"),
                jitter._capacity,
                jitter._prefetch,
                table,
                rtx,
                self._tracks[index].on_frame,
                receiver,
                receiver.octets_received,
            )
            packets = [(p.sequence_number, p.timestamp, p._data) for p in jitter._packets if p]
            self.native.set_jitter(index, jitter._origin, packets)
            nack = receiver._RTCRtpReceiver__nack_generator
            if nack is not None:
                self.native.set_nack(index, nack.max_seq, sorted(nack.missing))
        for ssrc, receiver in router.ssrc_table.items():
            index = receivers.index(receiver)
            stats = receiver._RTCRtpReceiver__remote_streams.get(ssrc)
            fields = None
            if stats is not None:
                fields = (
                    stats.base_seq,
                    stats.max_seq,
                    stats.cycles,
                    stats.packets_received,
                    stats._jitter_q4,
                    stats._last_arrival,
                    stats._last_timestamp,
                    stats._clockrate,
                )
            self.native.add_source(ssrc, index, stats, fields)

    # -- from C ----------------------------------------------------------------------------

    def _new_stats(self, index: int, ssrc: int, clockrate: int) -> StreamStatistics:
        streams = self.receivers[index]._RTCRtpReceiver__remote_streams
        stats = streams.get(ssrc)
        if stats is None:
            stats = streams[ssrc] = StreamStatistics(clockrate)
        return stats

    def _on_events(
        self,
        nacks: list[tuple[int, list[int]]] | None,
        plis: list[int] | None,
        remb: list[tuple[int, int, int, int, int]],
        learned: list[tuple[int, int]] | None,
    ) -> None:
        router = self.dtls._rtp_router
        if learned:
            for ssrc, index in learned:
                router.ssrc_table[ssrc] = self.receivers[index]
        if self.remb_log is not None:
            self.remb_log.extend(remb)
        for ssrc, arrival_ms, abs_send_time, size, _ in remb:
            receiver = router.ssrc_table.get(ssrc)
            estimator = receiver._RTCRtpReceiver__remote_bitrate_estimator if receiver else None
            if estimator is None:
                continue
            result = estimator.add(
                abs_send_time=abs_send_time,
                arrival_time_ms=arrival_ms,
                payload_size=size,
                ssrc=ssrc,
            )
            rtcp_ssrc = receiver._RTCRtpReceiver__rtcp_ssrc
            if result is not None and rtcp_ssrc is not None:
                packet = RtcpPsfbPacket(
                    fmt=RTCP_PSFB_APP, ssrc=rtcp_ssrc, media_ssrc=0, fci=pack_remb_fci(*result)
                )
                _spawn(receiver._send_rtcp(packet))
        for ssrc, lost in nacks or ():
            receiver = router.ssrc_table.get(ssrc)
            if receiver is not None:
                _spawn(receiver._send_rtcp_nack(ssrc, lost))
        for ssrc in plis or ():
            receiver = router.ssrc_table.get(ssrc)
            if receiver is not None:
                _spawn(receiver._send_rtcp_pli(ssrc))

    def _on_rtcp(self, data: bytes, blocks: list[tuple[int, ...]] | None) -> None:
        """A decrypted RTCP compound packet, routed as aiortc's transport routes it. Receiver
        reports, the RTCP a sender gets most, are taken at once: from the report `blocks` C
        read when the compound holds nothing else, or through `take_rtcp`. The rest goes to
        aiortc's handlers in a task, in order."""
        router = self.dtls._rtp_router
        if blocks is not None and _take_blocks(router.senders, blocks):
            return
        try:
            packets = RtcpPacket.parse(data)
        except ValueError as exc:
            logger.debug("RTCP parsing failed: %s", exc)
            return
        later: list[tuple[Any, Any]] = []
        for packet in packets:
            for recipient in router.route_rtcp(packet):
                take = getattr(recipient, "take_rtcp", None)
                if take is None or not take(packet):
                    later.append((recipient, packet))
        if later:
            _spawn(_deliver_rtcp(later))

    def _on_handback(self, reason: str) -> None:
        self.release(reason)

    # -- the Python side -------------------------------------------------------------------

    def process(self, datagrams: list[bytes]) -> None:
        """Handle datagrams as if read from the pair's remote address (tests)."""
        self.native.process(datagrams)

    def counters(self) -> dict[str, int]:
        return dict(self.native.counters())

    def release(self, reason: str = "released", *args: Any) -> None:
        """Back to the Python path, which carries on from the same state. Idempotent."""
        if self.released:
            return
        self.released = True
        self.reason = reason
        native = self.native
        native.stop()  # statistics and pending feedback written out
        for index, receiver in enumerate(self.receivers):
            jitter = receiver._RTCRtpReceiver__jitter_buffer
            origin, packets = native.jitter(index)
            slots: list[RtpPacket | None] = [None] * jitter._capacity
            for seq, timestamp, data in packets:
                packet = RtpPacket(sequence_number=seq, timestamp=timestamp)
                packet._data = data  # type: ignore[attr-defined]
                slots[seq % jitter._capacity] = packet
            jitter._packets = slots
            jitter._origin = origin
            nack = receiver._RTCRtpReceiver__nack_generator
            if nack is not None:
                nack.max_seq, missing = native.nack(index)
                nack.missing = set(missing)
        counters = native.counters()
        native.close()
        for callback in tuple(self.on_release):
            callback(self)
        logger.debug("native receive path released (%s): %s", reason, counters)


def _take_blocks(senders: dict[int, Any], blocks: list[tuple[int, ...]]) -> bool:
    """Give each report block to the sender it is about, as aiortc's router would route the
    report; False (nothing done) when one of those senders cannot take it so."""
    recipients = [senders.get(block[1]) for block in blocks]
    if not all(r is None or hasattr(r, "take_report") for r in recipients):
        return False
    for sender, (reporter, ssrc, fraction, lost, highest, jitter, lsr, dlsr) in zip(
        recipients, blocks, strict=True
    ):
        if sender is not None:
            report = RtcpReceiverInfo(
                ssrc=ssrc,
                fraction_lost=fraction,
                packets_lost=lost,
                highest_sequence=highest,
                jitter=jitter,
                lsr=lsr,
                dlsr=dlsr,
            )
            sender.take_report(reporter, report)
    return True


async def _deliver_rtcp(deliveries: list[tuple[Any, Any]]) -> None:
    for recipient, packet in deliveries:
        await recipient._handle_rtcp_packet(packet)


# -- attaching to a live transport -------------------------------------------------------------


def _receivers_of(dtls: Any) -> list[Any] | None:
    """The transport's receivers when all can be served natively (none: a transport that only
    sends, whose RTCP is still read here)."""
    receivers = list(dtls._rtp_router.receivers)
    if len(receivers) > 4:
        return None
    for receiver in receivers:
        if not getattr(receiver, "receivable_natively", False) or not receiver._enabled:
            return None
        if not receiver._RTCRtpReceiver__started:
            return None
    router = dtls._rtp_router
    if any(r not in receivers for r in router.ssrc_table.values()):
        return None
    if len(router.ssrc_table) > (_native.MAX_SSRCS if _native else 0):
        return None
    return receivers


def _host_socket(pair: Any) -> socket.socket | None:
    candidate = pair.local_candidate
    if candidate.type != "host" or candidate.transport.lower() != "udp":
        return None
    datagrams = pair.protocol.transport
    if datagrams is None or not hasattr(datagrams, "get_extra_info"):
        return None
    sock = datagrams.get_extra_info("socket")
    if sock is None or sock.type != socket.SOCK_DGRAM or sock.family != socket.AF_INET:
        return None
    if ":" in pair.remote_addr[0]:
        return None
    return sock


class _Attachment:
    """A NativeReceive installed on a live pair, and the watching that releases it."""

    def __init__(self, dtls: Any, pair: Any, receivers: list[Any], sock: socket.socket) -> None:
        self.protocol = pair.protocol
        fallback = type(self.protocol).datagram_received.__get__(self.protocol)
        self.receive = NativeReceive(dtls, receivers, sock.fileno(), pair.remote_addr, fallback)
        self.receive.on_release.append(self._released)
        self._installed = self.receive.native.datagram_received
        self.protocol.datagram_received = self._installed
        ice = dtls.transport
        connection = ice._connection
        pairs = watched(connection)
        assert pairs is not None  # refusal() checked
        self._watched = (dtls, ice, pairs)
        dtls.on("statechange", self._changed)
        ice.on("statechange", self._changed)
        pairs.watchers.append(self._changed)

    def _changed(self, *args: Any) -> None:
        self.receive.release("transport state or nominated pair changed")

    def _released(self, receive: NativeReceive) -> None:
        if self.protocol.__dict__.get("datagram_received") is self._installed:
            del self.protocol.datagram_received
        dtls, ice, pairs = self._watched
        dtls.remove_listener("statechange", self._changed)
        ice.remove_listener("statechange", self._changed)
        if self._changed in pairs.watchers:
            pairs.watchers.remove(self._changed)
        if getattr(dtls, "native_receive", None) is receive:
            dtls.native_receive = None
        if receive.reason == "transport state or nominated pair changed":
            # a new pair or a reconnected transport: look again once it has settled
            with contextlib.suppress(RuntimeError):  # no running loop: nothing to look again
                asyncio.get_running_loop().call_later(REATTACH_DELAY, attach, dtls)


def attach(dtls: Any) -> NativeReceive | None:
    """Serve `dtls`'s receivers natively when the conditions hold (see the module's docstring);
    an existing native path is rebuilt (the receivers may have changed). None: Python path."""
    current = getattr(dtls, "native_receive", None)
    if current is not None:
        current.release("rebuilt")
    reason = refusal(dtls)
    if reason:
        logger.debug("RTP of %r received by Python: %s", dtls, reason)
        return None
    pair = dtls.transport._connection._nominated[1]
    sock = _host_socket(pair)
    receivers = _receivers_of(dtls)
    assert sock is not None and receivers is not None
    try:
        attachment = _Attachment(dtls, pair, receivers, sock)
    except (ValueError, OverflowError, OSError) as exc:  # a jitter buffer packet C cannot keep
        logger.debug("RTP of %r received by Python: %s", dtls, exc)
        return None
    receive = attachment.receive
    receive.on_release.append(_refuse_on_handback)
    dtls.native_receive = receive
    return receive


def refusal(dtls: Any) -> str:
    """Why `dtls`'s RTP cannot be received natively now ("" when it can)."""
    if _native is None:
        return describe()
    if dtls._state is not State.CONNECTED:
        return "DTLS is not connected"
    if type(dtls._rx_srtp) is not pylibsrtp.Session:
        return "no SRTP session"
    if getattr(dtls, "native_refused", False):
        return "a packet the native path does not handle came earlier"
    pair = dtls.transport._connection._nominated.get(1)
    if pair is None:
        return "no nominated pair"
    nominated = dtls.transport._connection._nominated
    if type(nominated) is not dict and not isinstance(nominated, WatchedPairs):
        return "the nominated pairs are not aioice's dict"
    if "datagram_received" in pair.protocol.__dict__:
        return "the pair's socket is already read natively"
    if _host_socket(pair) is None:
        return "the pair is not a host UDP socket over IPv4"
    if _receivers_of(dtls) is None:
        return (
            "a receiver is not a started, enabled ForwardingReceiver that leaves its packets to"
            " the media server (or too many SSRCs)"
        )
    return ""


def _refuse_on_handback(receive: NativeReceive) -> None:
    """A packet C does not handle: this transport stays on the Python path."""
    if receive.reason == "a packet the native path does not handle":
        receive.dtls.native_refused = True
        logger.info("native receive path handed back: %s", receive.reason)


def release(dtls: Any, reason: str) -> None:
    current = getattr(dtls, "native_receive", None)
    if current is not None:
        current.release(reason)
