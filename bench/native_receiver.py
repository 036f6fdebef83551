"""A benchmark subscriber's receive path in C: reads its socket with `recvmmsg`, decrypts every
RTP packet with the peer connection's own SRTP session (pylibsrtp's bundled libsrtp, through the
`srtp_unprotect` it exports) and counts packets, frames (marker bits), payload bytes and
sequence-number gaps per stream. STUN, DTLS and RTCP still go to aiortc, so ICE consent, the
DTLS session and receiver reports carry on as before.

Why: on a 2-core machine the benchmark's aiortc subscribers, at about 30 µs of Python per received
packet, saturate their core long before the media server saturates its own, so the ramp measures
the clients. Once a subscriber's first frames have arrived through aiortc (ICE, DTLS and SRTP
are up), `NativeReceiver.attach` takes the socket's reading over from the event loop; what is
left of a received packet's cost is the kernel's and libsrtp's.

Needs a C compiler (the library is built on first use, like bench.send_path's callgrind helper)
and the asyncio selector event loop (it swaps the socket's reader callback).
"""

from __future__ import annotations

import asyncio
import ctypes
import hashlib
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pylibsrtp._binding as srtp_binding
from aiortc import RTCPeerConnection

SOURCE = r"""
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>

#define STREAMS 8
#define BATCH 64
#define SLOT 2048

typedef int (*unprotect_fn)(void *ctx, void *header, int *length);

struct stream {
    uint32_t ssrc;
    uint32_t used;
    uint32_t payload_type;
    uint32_t base;
    uint32_t max_seq;
    uint32_t cycles;
    uint64_t received;
    uint64_t frames;
    uint64_t payload_bytes;
};

struct receiver {
    void *srtp;
    unprotect_fn unprotect;
    uint64_t rejected; /* failed SRTP authentication or replay check, or malformed */
    struct stream streams[STREAMS];
};

static struct stream *find(struct receiver *rx, uint32_t ssrc, uint32_t payload_type) {
    for (int i = 0; i < STREAMS; i++) {
        struct stream *s = &rx->streams[i];
        if (s->used && s->ssrc == ssrc) return s;
        if (!s->used) {
            memset(s, 0, sizeof *s);
            s->used = 1;
            s->ssrc = ssrc;
            s->payload_type = payload_type;
            return s;
        }
    }
    return 0;
}

static void count(struct receiver *rx, uint8_t *p, int length) {
    if (length < 12) { rx->rejected++; return; }
    int header = 12 + 4 * (p[0] & 0x0f);
    if (p[0] & 0x10) {
        if (length < header + 4) { rx->rejected++; return; }
        header += 4 + 4 * ((p[header + 2] << 8) | p[header + 3]);
    }
    int padding = (p[0] & 0x20) ? p[length - 1] : 0;
    int payload = length - header - padding;
    if (payload < 0) { rx->rejected++; return; }
    uint32_t seq = (p[2] << 8) | p[3];
    uint32_t ssrc = ((uint32_t)p[8] << 24) | (p[9] << 16) | (p[10] << 8) | p[11];
    struct stream *s = find(rx, ssrc, p[1] & 0x7f);
    if (!s) { rx->rejected++; return; }
    if (s->received == 0) {
        s->base = s->max_seq = seq;
    } else {
        uint16_t ahead = (uint16_t)(seq - s->max_seq);
        if (ahead != 0 && ahead < 0x8000) {
            if (seq < s->max_seq) s->cycles += 65536;
            s->max_seq = seq;
        }
    }
    s->received++;
    s->payload_bytes += payload;
    if (p[1] & 0x80) s->frames++;
}

/* Read what the socket holds (at most 8 batches). RTP is decrypted and counted here; anything
   else (STUN, DTLS, RTCP) is copied to `out` (SLOT bytes each) with its length and source for
   aiortc. Returns how many were copied, or -1 with errno on a socket error. */
int receiver_drain(struct receiver *rx, int fd, uint8_t *out, int out_slots, int *out_lengths,
                   struct sockaddr_in *out_sources) {
    static uint8_t buffers[BATCH][SLOT];
    static struct mmsghdr messages[BATCH];
    static struct iovec vectors[BATCH];
    static struct sockaddr_in sources[BATCH];
    int passed = 0;
    for (int round = 0; round < 8; round++) {
        for (int i = 0; i < BATCH; i++) {
            vectors[i].iov_base = buffers[i];
            vectors[i].iov_len = SLOT;
            memset(&messages[i].msg_hdr, 0, sizeof messages[i].msg_hdr);
            messages[i].msg_hdr.msg_iov = &vectors[i];
            messages[i].msg_hdr.msg_iovlen = 1;
            messages[i].msg_hdr.msg_name = &sources[i];
            messages[i].msg_hdr.msg_namelen = sizeof sources[i];
        }
        int n = recvmmsg(fd, messages, BATCH, MSG_DONTWAIT, 0);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) return passed;
            return passed ? passed : -1;
        }
        for (int i = 0; i < n; i++) {
            uint8_t *p = buffers[i];
            int length = (int)messages[i].msg_len;
            int rtp = length >= 12 && p[0] >= 128 && p[0] < 192 && !(p[1] >= 192 && p[1] <= 223);
            if (rtp) {
                if (rx->unprotect(rx->srtp, p, &length) != 0) rx->rejected++;
                else count(rx, p, length);
            } else if (passed < out_slots) {
                memcpy(out + (size_t)passed * SLOT, p, length);
                out_lengths[passed] = length;
                out_sources[passed] = sources[i];
                passed++;
            }
        }
        if (n < BATCH || passed == out_slots) return passed;
    }
    return passed;
}
"""

STREAMS = 8
SLOT = 2048
PASS_SLOTS = 64


class _Stream(ctypes.Structure):
    _fields_ = [
        ("ssrc", ctypes.c_uint32),
        ("used", ctypes.c_uint32),
        ("payload_type", ctypes.c_uint32),
        ("base", ctypes.c_uint32),
        ("max_seq", ctypes.c_uint32),
        ("cycles", ctypes.c_uint32),
        ("received", ctypes.c_uint64),
        ("frames", ctypes.c_uint64),
        ("payload_bytes", ctypes.c_uint64),
    ]

    @property
    def expected(self) -> int:
        return self.cycles + self.max_seq - self.base + 1 if self.received else 0


class _Receiver(ctypes.Structure):
    _fields_ = [
        ("srtp", ctypes.c_void_p),
        ("unprotect", ctypes.c_void_p),
        ("rejected", ctypes.c_uint64),
        ("streams", _Stream * STREAMS),
    ]


class _SockaddrIn(ctypes.Structure):
    _fields_ = [
        ("family", ctypes.c_uint16),
        ("port", ctypes.c_uint16),  # network order
        ("address", ctypes.c_uint8 * 4),
        ("zero", ctypes.c_uint8 * 8),
    ]


_library: ctypes.CDLL | None = None


def library() -> ctypes.CDLL:
    """The compiled receive loop, built once per source version into the temp directory."""
    global _library
    if _library is None:
        digest = hashlib.sha256(SOURCE.encode()).hexdigest()[:16]
        path = Path(tempfile.gettempdir()) / f"bench-native-receiver-{digest}.so"
        if not path.exists():
            build = Path(tempfile.mkdtemp())
            (build / "rx.c").write_text(SOURCE)
            target = build / "rx.so"
            subprocess.run(
                ["cc", "-O2", "-shared", "-fPIC", "-o", str(target), str(build / "rx.c")],
                check=True,
            )
            target.replace(path)
        _library = ctypes.CDLL(str(path))
        _library.receiver_drain.restype = ctypes.c_int
    return _library


def _unprotect_address() -> int:
    ffi, lib = srtp_binding.ffi, srtp_binding.lib
    return int(ffi.cast("uintptr_t", ffi.addressof(lib, "srtp_unprotect")))


class NativeReceiver:
    """Counts one subscriber peer connection's RTP in C once `attach` has taken its socket over.
    Streams are told apart by payload type (`payload_types`: kind to the main codec's type)."""

    def __init__(self, pc: RTCPeerConnection, payload_types: dict[str, int]) -> None:
        self.pc = pc
        self.payload_types = payload_types
        self.attached = False
        self._state = _Receiver()
        self._out = ctypes.create_string_buffer(SLOT * PASS_SLOTS)
        self._lengths = (ctypes.c_int * PASS_SLOTS)()
        self._sources = (_SockaddrIn * PASS_SLOTS)()
        self._fd = -1
        self._protocol: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def attach(self) -> bool:
        """Take the connection's socket over from the event loop; False if it is not up yet."""
        if self.attached:
            return True
        dtls = self.pc.getTransceivers()[0].receiver.transport
        session = dtls._rx_srtp
        pair = dtls.transport._connection._nominated.get(1)
        if session is None or pair is None:
            return False
        sock = pair.protocol.transport.get_extra_info("socket")
        loop = asyncio.get_running_loop()
        if not isinstance(loop, asyncio.SelectorEventLoop):
            raise RuntimeError("the native receiver needs the asyncio selector event loop")
        ffi = srtp_binding.ffi
        self._session = session  # its srtp_t must outlive this receiver's use of it
        self._state.srtp = int(ffi.cast("uintptr_t", session._srtp[0]))
        self._state.unprotect = _unprotect_address()
        self._fd = sock.fileno()
        self._protocol = pair.protocol
        self._loop = loop
        loop._remove_reader(self._fd)  # type: ignore[attr-defined]
        loop._add_reader(self._fd, self._ready)  # type: ignore[attr-defined]
        self.attached = True
        return True

    def detach(self) -> None:
        if self.attached and self._loop is not None:
            self._loop._remove_reader(self._fd)  # type: ignore[attr-defined]
            self.attached = False

    def _ready(self) -> None:
        passed = library().receiver_drain(
            ctypes.byref(self._state),
            self._fd,
            self._out,
            PASS_SLOTS,
            self._lengths,
            self._sources,
        )
        if passed < 0:
            self.detach()
            return
        base = ctypes.addressof(self._out)
        for index in range(passed):
            source = self._sources[index]
            address = ".".join(map(str, source.address))
            port = int.from_bytes(source.port.to_bytes(2, "little"), "big")
            data = ctypes.string_at(base + index * SLOT, self._lengths[index])
            self._protocol.datagram_received(data, (address, port))

    @property
    def rejected(self) -> int:
        return self._state.rejected

    def stream(self, kind: str) -> _Stream | None:
        payload_type = self.payload_types.get(kind)
        for stream in self._state.streams:
            if stream.used and stream.payload_type == payload_type:
                return stream
        return None

    def counters(self, kind: str) -> tuple[int, int, int, int]:
        """(frames, expected packets, received packets, payload bytes) of a kind's main stream."""
        stream = self.stream(kind)
        if stream is None:
            return 0, 0, 0, 0
        return stream.frames, stream.expected, stream.received, stream.payload_bytes
