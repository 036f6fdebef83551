/* The native receive path (see receive.py): one WebRTC transport's incoming SRTP read, decrypted,
 * parsed, counted and reassembled into frames in C, one Python call per complete frame.
 *
 * A `Receiver` serves one DTLS transport whose nominated ICE pair is a host UDP socket. It is
 * installed as the ICE protocol's `datagram_received` (the event loop reads the first datagram
 * of a wake-up, as before) and then drains the socket itself with recvmmsg, at most
 * MAX_BATCHES batches of BATCH datagrams per call: what is left stays in the kernel's socket
 * buffer for the loop's next iteration (when that buffer is full the kernel drops: nothing
 * queues in user space). Per datagram, as aiortc's RTCDtlsTransport and RTCRtpReceiver do:
 *
 *   - not from the pair's remote address, or not SRTP (RFC 7983: STUN, DTLS...): handed to
 *     the Python protocol's own `datagram_received` (the `fallback`), as before;
 *   - RTCP: to the fallback too, unless `set_rtcp(on_rtcp)` was called: then srtp_unprotect_rtcp
 *     in place and `on_rtcp(compound, blocks)` with the decrypted compound packet (aiortc's
 *     transport would have done the same, through its receive loop) and, when it holds only
 *     receiver reports and SDES, its report blocks read here;
 *   - RTP: routed by SSRC (or by payload type, learning the SSRC, as aiortc's RtpRouter), then
 *     srtp_unprotect in place on the transport's receiving pylibsrtp Session's srtp_t, parsed
 *     (aiortc's RtpPacket.parse rules), the receiver's statistics updated (the fields of
 *     aiortc's StreamStatistics, written into its objects once per call), RTX unwrapped, the
 *     NACK generator's missing set kept, depayloaded (VP8; identity for the others aiortc does
 *     not depayload) and put in a jitter buffer that works as aiortc's JitterBuffer; each frame
 *     it completes goes to the track's `on_frame(payload_type, data, timestamp)`.
 *
 * NACKs, PLIs and REMB samples are collected and handed to `on_events` once per call. Anything
 * this code does not handle (an H.264 packet, an SSRC beyond MAX_SSRCS, the transport's Python
 * side asking to stop) ends the native mode: that datagram and the rest of the batch go to the
 * fallback, still encrypted, and `on_handback(reason)` tells Python, which takes the state back.
 *
 * libsrtp is reached as in _fanout.c: srtp_unprotect's (and srtp_unprotect_rtcp's) address from
 * pylibsrtp's cffi binding.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_TRACKS 4          /* receivers on one transport */
#define MAX_CODECS 32         /* payload types per receiver */
#define MAX_SSRCS 16          /* SSRCs known on one transport (more: back to Python) */
#define BATCH 32              /* datagrams per recvmmsg */
#define MAX_BATCHES 4         /* recvmmsg calls per wake-up */
#define DGRAM_SIZE 2048       /* bigger datagrams are dropped (MSG_TRUNC) */
#define MAX_EVENTS 256        /* REMB samples kept per call (more: the oldest kept) */
#define NACK_WINDOW 128       /* aiortc's RTP_HISTORY_SIZE */
#define MAX_MISORDER 100      /* aiortc's jitterbuffer.MAX_MISORDER */
#define RTP_HEADER 12
#define MISSING_BYTES (65536 / 8)
#define NTP_UNIX_OFFSET 2208988800.0

enum { CODEC_IDENTITY = 0, CODEC_VP8 = 1, CODEC_UNSUPPORTED = 2, CODEC_RTX = 3 };
enum { DONE = 0, FALLBACK = 1, HANDBACK = 2 };

typedef int (*srtp_unprotect_fn)(void *ctx, void *srtp_hdr, int *len_ptr);
static srtp_unprotect_fn srtp_unprotect_ptr = NULL;
static srtp_unprotect_fn srtp_unprotect_rtcp_ptr = NULL;

typedef struct {
    int payload_type;
    int kind;
    int apt;           /* CODEC_RTX: the payload type it repairs (-1: none usable) */
    uint32_t clockrate;
} Codec;

typedef struct {
    uint32_t ssrc;
    int64_t arrival_ms;
    uint32_t abs_send_time;
    int64_t size;
    uint32_t timestamp; /* the RTP timestamp (of the frame, when grouped) */
} RembSample;

typedef struct {
    int used;
    int video;
    int capacity;      /* jitter buffer slots (a power of 2) */
    int prefetch;
    int ncodecs;
    Codec codecs[MAX_CODECS];
    uint32_t rtx_from[MAX_SSRCS], rtx_to[MAX_SSRCS]; /* aiortc's __rtx_ssrc */
    int nrtx;
    /* jitter buffer, as aiortc's JitterBuffer */
    int has_origin;
    uint16_t origin;
    uint8_t *present;
    uint16_t *seqs;
    uint32_t *stamps;
    uint16_t *lengths;
    uint8_t *data;     /* capacity * DGRAM_SIZE */
    /* NACK generator, as aiortc's NackGenerator: the missing set is within NACK_WINDOW of max */
    int nack_has_max;
    uint16_t nack_max;
    uint8_t *missing;  /* MISSING_BYTES, allocated with the track */
    PyObject *on_frame;
    /* REMB per frame: the packets of one SSRC and RTP timestamp summed, sent with the last */
    int has_pending;
    RembSample pending;
} Track;

typedef struct {
    uint32_t ssrc;
    int track;         /* routed to (aiortc's RtpRouter.ssrc_table) */
    int learned;       /* learned here from the payload type: Python's router is told */
    int has_stats;
    uint16_t base_seq, max_seq;
    int64_t cycles, received, jitter_q4, last_arrival;
    uint32_t last_timestamp;
    uint32_t clockrate;
    int64_t octets;    /* payload octets not yet added to octets_received */
    int touched;
    double active_at;  /* monotonic time __active_ssrc was last set */
    PyObject *stats;   /* aiortc's StreamStatistics, written at the end of each call */
} Source;


typedef struct {
    PyObject_HEAD
    void *srtp;
    PyObject *session;          /* the pylibsrtp Session whose srtp_t this uses */
    int fd;                     /* a dup of the pair's socket, -1 in tests */
    struct sockaddr_in remote;
    PyObject *remote_addr;      /* (host, port) */
    PyObject *fallback;         /* the ICE protocol's datagram_received */
    PyObject *on_events;        /* (nacks, plis, remb, learned) */
    PyObject *on_handback;      /* (reason) */
    PyObject *stats_factory;    /* (track, ssrc, clockrate) -> StreamStatistics */
    PyObject *octets_dicts[MAX_TRACKS];
    PyObject *receivers[MAX_TRACKS];
    PyObject *transport;        /* the DTLS transport: rx counters */
    PyObject *now_datetime;     /* aiortc.clock.current_datetime */
    PyObject *on_rtcp;          /* (decrypted compound) or NULL: RTCP goes to the fallback */
    int active;
    int in_call;
    int abs_send_time_id, mid_id, rid_id, rrid_id, toffset_id, audio_level_id, twcc_id;
    Track tracks[MAX_TRACKS];
    Source sources[MAX_SSRCS];
    int nsources;
    double fixed_clock;         /* tests: time.time() as this when > 0 */
    int remb_per_frame;         /* REMB samples summed per frame (else one per packet) */
    /* per call */
    int64_t rx_packets, rx_bytes;
    RembSample *remb;           /* MAX_EVENTS, allocated with the first track */
    int nremb;
    PyObject *nacks;            /* list of (ssrc, [seq...]) or NULL */
    PyObject *plis;             /* list of ssrc or NULL */
    /* counters */
    unsigned long long packets, frames, dropped, fallbacks, batches, wakeups, handbacks;
    unsigned long long srtp_failures, parse_failures, truncated, errors, rtcp;
    uint8_t work[DGRAM_SIZE];
} Receiver;

/* recvmmsg's buffers, shared by every Receiver (one drains at a time, under the GIL): a
 * transport's Receiver stays small, as most of them (viewers') read a few datagrams a second. */
static uint8_t batch_buffers[BATCH][DGRAM_SIZE];
static struct sockaddr_in batch_addrs[BATCH];
static int batch_busy = 0;

static PyObject *srtp_error = NULL;
static PyObject *str_base_seq, *str_max_seq, *str_cycles, *str_packets_received, *str_jitter_q4,
    *str_last_arrival, *str_last_timestamp, *str_last_heard_at, *str_rx_packets, *str_rx_bytes,
    *str_active_ssrc;

static inline int
uint16_gt(uint16_t a, uint16_t b)
{
    uint16_t half = 0x8000;
    return (a > b && a - b < half) || (a < b && b - a > half);
}

static double
now_seconds(Receiver *self)
{
    if (self->fixed_clock > 0)
        return self->fixed_clock;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---- tracks ---------------------------------------------------------------------------- */

static void
track_free(Track *track)
{
    PyMem_Free(track->present);
    PyMem_Free(track->seqs);
    PyMem_Free(track->stamps);
    PyMem_Free(track->lengths);
    PyMem_Free(track->data);
    PyMem_Free(track->missing);
    track->missing = NULL;
    track->present = NULL;
    track->seqs = NULL;
    track->stamps = NULL;
    track->lengths = NULL;
    track->data = NULL;
    Py_CLEAR(track->on_frame);
    track->used = 0;
}

static Codec *
track_codec(Track *track, int payload_type)
{
    for (int i = 0; i < track->ncodecs; i++)
        if (track->codecs[i].payload_type == payload_type)
            return &track->codecs[i];
    return NULL;
}

/* The codec a packet of this payload type ends up in (through RTX); NULL when unknown. */
static Codec *
track_final_codec(Track *track, int payload_type)
{
    Codec *codec = track_codec(track, payload_type);
    if (codec != NULL && codec->kind == CODEC_RTX)
        return codec->apt >= 0 ? track_codec(track, codec->apt) : NULL;
    return codec;
}

static void
jitter_clear_slot(Track *track, int pos)
{
    track->present[pos] = 0;
}

static void
jitter_remove(Track *track, int count)
{
    for (int i = 0; i < count; i++) {
        jitter_clear_slot(track, track->origin % track->capacity);
        track->origin = (uint16_t)(track->origin + 1);
    }
}

static int
jitter_smart_remove(Track *track, int count)
{
    int has_timestamp = 0;
    uint32_t timestamp = 0;
    for (int i = 0; i < track->capacity; i++) {
        int pos = track->origin % track->capacity;
        if (track->present[pos]) {
            if (i >= count && (!has_timestamp || timestamp != track->stamps[pos]))
                break;
            timestamp = track->stamps[pos];
            has_timestamp = 1;
        }
        jitter_clear_slot(track, pos);
        track->origin = (uint16_t)(track->origin + 1);
        if (i == track->capacity - 1)
            return 1;
    }
    return 0;
}

/* aiortc's JitterBuffer._remove_frame: the first complete frame once `prefetch` frames are
 * complete, as a new bytes object (NULL with no error set: none). */
static PyObject *
jitter_remove_frame(Track *track, uint32_t *frame_timestamp)
{
    int frames = 0, remove = 0, has_timestamp = 0, start = 0;
    uint32_t timestamp = 0;
    PyObject *frame = NULL;
    for (int count = 0; count < track->capacity; count++) {
        int pos = (track->origin + count) % track->capacity;
        if (!track->present[pos])
            break;
        if (!has_timestamp) {
            timestamp = track->stamps[pos];
            has_timestamp = 1;
        }
        else if (track->stamps[pos] != timestamp) {
            if (frame == NULL) {
                Py_ssize_t size = 0;
                for (int k = start; k < count; k++)
                    size += track->lengths[(track->origin + k) % track->capacity];
                frame = PyBytes_FromStringAndSize(NULL, size);
                if (frame == NULL)
                    return NULL;
                char *out = PyBytes_AS_STRING(frame);
                for (int k = start; k < count; k++) {
                    int p = (track->origin + k) % track->capacity;
                    memcpy(out, track->data + (size_t)p * DGRAM_SIZE, track->lengths[p]);
                    out += track->lengths[p];
                }
                *frame_timestamp = timestamp;
                remove = count;
            }
            frames += 1;
            if (frames >= track->prefetch) {
                jitter_remove(track, remove);
                return frame;
            }
            start = count;
            timestamp = track->stamps[pos];
        }
    }
    Py_XDECREF(frame);
    return NULL;
}

/* aiortc's JitterBuffer.add; *pli set as its pli_flag. */
static PyObject *
jitter_add(Track *track, uint16_t seq, uint32_t timestamp, const uint8_t *data, int length,
           int *pli, uint32_t *frame_timestamp)
{
    int delta, misorder;
    if (!track->has_origin) {
        track->has_origin = 1;
        track->origin = seq;
        delta = misorder = 0;
    }
    else {
        delta = (uint16_t)(seq - track->origin);
        misorder = (uint16_t)(track->origin - seq);
    }
    if (misorder < delta) {
        if (misorder >= MAX_MISORDER) {
            jitter_remove(track, track->capacity);
            track->origin = seq;
            delta = misorder = 0;
            if (track->video)
                *pli = 1;
        }
        else
            return NULL;
    }
    if (delta >= track->capacity) {
        int excess = delta - track->capacity + 1;
        if (jitter_smart_remove(track, excess))
            track->origin = seq;
        if (track->video)
            *pli = 1;
    }
    int pos = seq % track->capacity;
    track->present[pos] = 1;
    track->seqs[pos] = seq;
    track->stamps[pos] = timestamp;
    track->lengths[pos] = (uint16_t)length;
    if (length > 0)
        memcpy(track->data + (size_t)pos * DGRAM_SIZE, data, (size_t)length);
    return jitter_remove_frame(track, frame_timestamp);
}

static inline int
missing_has(Track *track, uint16_t seq)
{
    return (track->missing[seq >> 3] >> (seq & 7)) & 1;
}

static inline void
missing_set(Track *track, uint16_t seq, int on)
{
    if (on)
        track->missing[seq >> 3] |= (uint8_t)(1 << (seq & 7));
    else
        track->missing[seq >> 3] &= (uint8_t)~(1 << (seq & 7));
}

/* aiortc's NackGenerator.add then truncate: whether packets were found missing. Entries are
 * only ever within NACK_WINDOW below the highest sequence number, so only those are scanned. */
static int
nack_add(Track *track, uint16_t seq)
{
    int missed = 0;
    if (!track->nack_has_max) {
        track->nack_has_max = 1;
        track->nack_max = seq;
        return 0;
    }
    if (uint16_gt(seq, track->nack_max)) {
        uint16_t old = track->nack_max;
        uint16_t gap = (uint16_t)(seq - old); /* < 0x8000 */
        if (gap > 1)
            missed = 1;
        /* what truncate keeps of the new ones: within NACK_WINDOW below seq */
        for (int back = 1; back < gap && back <= NACK_WINDOW; back++)
            missing_set(track, (uint16_t)(seq - back), 1);
        /* the old entries (within NACK_WINDOW below old) now too old */
        for (int back = 1; back <= NACK_WINDOW; back++) {
            uint16_t s = (uint16_t)(old - back);
            uint16_t min_seq = (uint16_t)(seq - NACK_WINDOW);
            if (uint16_gt(min_seq, s))
                missing_set(track, s, 0);
        }
        track->nack_max = seq;
    }
    else
        missing_set(track, seq, 0);
    return missed;
}

static int
compare_u16(const void *a, const void *b)
{
    return (int)*(const uint16_t *)a - (int)*(const uint16_t *)b;
}

/* sorted(missing), as aiortc sends it */
static PyObject *
nack_list(Track *track)
{
    uint16_t found[NACK_WINDOW + 1];
    int n = 0;
    if (track->nack_has_max)
        for (int back = 1; back <= NACK_WINDOW; back++) {
            uint16_t s = (uint16_t)(track->nack_max - back);
            if (missing_has(track, s))
                found[n++] = s;
        }
    qsort(found, (size_t)n, sizeof(found[0]), compare_u16);
    PyObject *list = PyList_New(n);
    if (list == NULL)
        return NULL;
    for (int i = 0; i < n; i++)
        PyList_SET_ITEM(list, i, PyLong_FromLong(found[i]));
    return list;
}

/* ---- sources --------------------------------------------------------------------------- */

static Source *
find_source(Receiver *self, uint32_t ssrc)
{
    for (int i = 0; i < self->nsources; i++)
        if (self->sources[i].ssrc == ssrc)
            return &self->sources[i];
    return NULL;
}

static Source *
add_source(Receiver *self, uint32_t ssrc, int track)
{
    if (self->nsources >= MAX_SSRCS)
        return NULL;
    Source *source = &self->sources[self->nsources++];
    memset(source, 0, sizeof(*source));
    source->ssrc = ssrc;
    source->track = track;
    return source;
}

/* aiortc's StreamStatistics.add */
static void
stats_add(Receiver *self, Source *source, uint16_t seq, uint32_t timestamp)
{
    int in_order = !source->has_stats || uint16_gt(seq, source->max_seq);
    int first = !source->has_stats;
    source->received += 1;
    if (first) {
        source->base_seq = seq;
        source->has_stats = 1;
    }
    if (in_order) {
        int64_t arrival = (int64_t)(now_seconds(self) * (double)source->clockrate);
        if (!first && seq < source->max_seq)
            source->cycles += 1 << 16;
        source->max_seq = seq;
        if ((first || timestamp != source->last_timestamp) && source->received > 1) {
            int64_t diff = (arrival - source->last_arrival) -
                           ((int64_t)timestamp - (int64_t)source->last_timestamp);
            if (diff < 0)
                diff = -diff;
            source->jitter_q4 += diff - ((source->jitter_q4 + 8) >> 4);
        }
        source->last_arrival = arrival;
        source->last_timestamp = timestamp;
    }
    source->touched = 1;
}

static int
set_int(PyObject *obj, PyObject *name, int64_t value)
{
    PyObject *number = PyLong_FromLongLong(value);
    if (number == NULL)
        return -1;
    int result = PyObject_SetAttr(obj, name, number);
    Py_DECREF(number);
    return result;
}

/* Write what changed into the Python objects: StreamStatistics, octets_received, the receivers'
 * last_heard_at and active sources, the transport's received counts. */
static int
sync_python(Receiver *self)
{
    int heard[MAX_TRACKS] = {0};
    PyObject *now_dt = NULL;
    for (int i = 0; i < self->nsources; i++) {
        Source *source = &self->sources[i];
        if (!source->touched)
            continue;
        source->touched = 0;
        int t = source->track;
        heard[t] = 1;
        if (source->octets) {
            PyObject *dict = self->octets_dicts[t];
            PyObject *key = PyLong_FromUnsignedLong(source->ssrc);
            if (key == NULL)
                return -1;
            PyObject *old = dict ? PyDict_GetItemWithError(dict, key) : NULL;
            long long before = old ? PyLong_AsLongLong(old) : 0;
            PyObject *value = PyLong_FromLongLong(before + source->octets);
            int bad = value == NULL || (dict && PyDict_SetItem(dict, key, value) < 0);
            Py_XDECREF(value);
            Py_DECREF(key);
            if (bad)
                return -1;
            source->octets = 0;
        }
        /* the active sources (getSynchronizationSources, a 10 s horizon): every 100 ms */
        PyObject *receiver = self->receivers[t];
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        double monotonic_now = (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
        if (receiver != NULL && monotonic_now - source->active_at >= 0.1) {
            source->active_at = monotonic_now;
            if (now_dt == NULL) {
                now_dt = PyObject_CallNoArgs(self->now_datetime);
                if (now_dt == NULL)
                    return -1;
            }
            PyObject *active = PyObject_GetAttr(receiver, str_active_ssrc);
            PyObject *key = PyLong_FromUnsignedLong(source->ssrc);
            int bad = active == NULL || key == NULL || PyDict_SetItem(active, key, now_dt) < 0;
            Py_XDECREF(active);
            Py_XDECREF(key);
            if (bad) {
                Py_DECREF(now_dt);
                return -1;
            }
        }
        if (!source->has_stats)
            continue;
        if (source->stats == NULL) {
            source->stats = PyObject_CallFunction(self->stats_factory, "ikk", t,
                                                  (unsigned long)source->ssrc,
                                                  (unsigned long)source->clockrate);
            if (source->stats == NULL) {
                Py_XDECREF(now_dt);
                return -1;
            }
        }
        PyObject *stats = source->stats;
        if (set_int(stats, str_base_seq, source->base_seq) < 0 ||
            set_int(stats, str_max_seq, source->max_seq) < 0 ||
            set_int(stats, str_cycles, source->cycles) < 0 ||
            set_int(stats, str_packets_received, source->received) < 0 ||
            set_int(stats, str_jitter_q4, source->jitter_q4) < 0 ||
            set_int(stats, str_last_arrival, source->last_arrival) < 0 ||
            set_int(stats, str_last_timestamp, source->last_timestamp) < 0) {
            Py_XDECREF(now_dt);
            return -1;
        }
    }
    Py_XDECREF(now_dt);
    double monotonic = 0;
    for (int t = 0; t < MAX_TRACKS; t++) {
        if (!heard[t] || self->receivers[t] == NULL)
            continue;
        if (monotonic == 0) {
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            monotonic = (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
        }
        PyObject *value = PyFloat_FromDouble(monotonic);
        int bad = value == NULL || PyObject_SetAttr(self->receivers[t], str_last_heard_at, value);
        Py_XDECREF(value);
        if (bad)
            return -1;
    }
    if (self->transport != NULL && (self->rx_packets || self->rx_bytes)) {
        PyObject *names[2] = {str_rx_packets, str_rx_bytes};
        int64_t adds[2] = {self->rx_packets, self->rx_bytes};
        for (int i = 0; i < 2; i++) {
            PyObject *old = PyObject_GetAttr(self->transport, names[i]);
            if (old == NULL)
                return -1;
            long long before = PyLong_AsLongLong(old);
            Py_DECREF(old);
            if (before == -1 && PyErr_Occurred())
                return -1;
            if (set_int(self->transport, names[i], before + adds[i]) < 0)
                return -1;
        }
        self->rx_packets = self->rx_bytes = 0;
    }
    return 0;
}

/* Hand the NACKs, PLIs, REMB samples and learned routes of this call to Python. */
static int
flush_events(Receiver *self)
{
    PyObject *learned = NULL;
    for (int i = 0; i < self->nsources; i++) {
        Source *source = &self->sources[i];
        if (source->learned != 1)
            continue;
        source->learned = 2;
        if (learned == NULL && (learned = PyList_New(0)) == NULL)
            return -1;
        PyObject *item = Py_BuildValue("(ki)", (unsigned long)source->ssrc, source->track);
        if (item == NULL || PyList_Append(learned, item) < 0) {
            Py_XDECREF(item);
            Py_DECREF(learned);
            return -1;
        }
        Py_DECREF(item);
    }
    if (self->nremb == 0 && self->nacks == NULL && self->plis == NULL && learned == NULL)
        return 0;
    PyObject *remb = PyList_New(self->nremb);
    if (remb == NULL) {
        Py_XDECREF(learned);
        return -1;
    }
    for (int i = 0; i < self->nremb; i++) {
        RembSample *s = &self->remb[i];
        PyObject *item = Py_BuildValue("(kLkLk)", (unsigned long)s->ssrc, (long long)s->arrival_ms,
                                       (unsigned long)s->abs_send_time, (long long)s->size,
                                       (unsigned long)s->timestamp);
        if (item == NULL) {
            Py_DECREF(remb);
            Py_XDECREF(learned);
            return -1;
        }
        PyList_SET_ITEM(remb, i, item);
    }
    self->nremb = 0;
    PyObject *nacks = self->nacks ? self->nacks : Py_NewRef(Py_None);
    PyObject *plis = self->plis ? self->plis : Py_NewRef(Py_None);
    self->nacks = self->plis = NULL;
    PyObject *result = PyObject_CallFunction(self->on_events, "OOOO", nacks, plis, remb,
                                             learned ? learned : Py_None);
    Py_DECREF(nacks);
    Py_DECREF(plis);
    Py_DECREF(remb);
    Py_XDECREF(learned);
    if (result == NULL)
        return -1;
    Py_DECREF(result);
    return 0;
}

/* ---- one datagram ---------------------------------------------------------------------- */

static void
remb_push(Receiver *self, const RembSample *sample)
{
    /* beyond MAX_EVENTS in one call the last is overwritten: bounded, and the estimator only
     * sees fewer samples of a burst it could not have been fed in time anyway */
    if (self->remb != NULL) /* (there is none before a track, which makes the samples) */
        self->remb[self->nremb < MAX_EVENTS ? self->nremb++ : MAX_EVENTS - 1] = *sample;
}

static int
note_nack(Receiver *self, Track *track, uint32_t ssrc)
{
    if (self->nacks == NULL && (self->nacks = PyList_New(0)) == NULL)
        return -1;
    /* one NACK per SSRC per call, with the missing set as it is last */
    PyObject *lost = nack_list(track);
    if (lost == NULL)
        return -1;
    Py_ssize_t n = PyList_GET_SIZE(self->nacks);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PyList_GET_ITEM(self->nacks, i);
        if (PyLong_AsUnsignedLong(PyTuple_GET_ITEM(item, 0)) == ssrc) {
            PyObject *replaced = Py_BuildValue("(kN)", (unsigned long)ssrc, lost);
            if (replaced == NULL)
                return -1;
            return PyList_SetItem(self->nacks, i, replaced);
        }
    }
    PyObject *item = Py_BuildValue("(kN)", (unsigned long)ssrc, lost);
    if (item == NULL)
        return -1;
    int result = PyList_Append(self->nacks, item);
    Py_DECREF(item);
    return result;
}

static int
note_pli(Receiver *self, uint32_t ssrc)
{
    if (self->plis == NULL && (self->plis = PyList_New(0)) == NULL)
        return -1;
    PyObject *value = PyLong_FromUnsignedLong(ssrc);
    if (value == NULL)
        return -1;
    int result = 0;
    if (!PySequence_Contains(self->plis, value))
        result = PyList_Append(self->plis, value);
    Py_DECREF(value);
    return result;
}

static int
valid_ascii(const uint8_t *data, int length)
{
    for (int i = 0; i < length; i++)
        if (data[i] & 0x80)
            return 0;
    return 1;
}

/* One header extension, as aiortc's HeaderExtensionsMap.get: 0, or -1 when aiortc's parse
 * would fail (a bad value it decodes, a wrong length it unpacks). */
static int
check_extension(Receiver *self, int id, const uint8_t *value, int length, int64_t *abs_send_time)
{
    if (id == self->mid_id) {
        if (!valid_ascii(value, length)) {
            PyObject *text = PyUnicode_DecodeUTF8((const char *)value, length, NULL);
            if (text == NULL) {
                PyErr_Clear();
                return -1;
            }
            Py_DECREF(text);
        }
    }
    else if (id == self->rrid_id || id == self->rid_id) {
        if (!valid_ascii(value, length))
            return -1;
    }
    else if (id == self->abs_send_time_id) {
        if (length != 3)
            return -1;
        *abs_send_time = ((int64_t)value[0] << 16) | (value[1] << 8) | value[2];
    }
    else if (id == self->toffset_id) {
        if (length != 3)
            return -1;
    }
    else if (id == self->audio_level_id) {
        if (length != 1)
            return -1;
    }
    else if (id == self->twcc_id) {
        if (length != 2)
            return -1;
    }
    return 0;
}

static int
parse_extensions(Receiver *self, int profile, const uint8_t *data, int length,
                 int64_t *abs_send_time)
{
    int pos = 0;
    if (profile == 0xBEDE) {
        while (pos < length) {
            if (data[pos] == 0) {
                pos++;
                continue;
            }
            int id = data[pos] >> 4;
            int size = (data[pos] & 0x0F) + 1;
            pos++;
            if (length < pos + size)
                return -1;
            if (check_extension(self, id, data + pos, size, abs_send_time) < 0)
                return -1;
            pos += size;
        }
    }
    else if (profile == 0x1000) {
        while (pos < length) {
            if (data[pos] == 0) {
                pos++;
                continue;
            }
            if (length < pos + 2)
                return -1;
            int id = data[pos], size = data[pos + 1];
            pos += 2;
            if (length < pos + size)
                return -1;
            if (check_extension(self, id, data + pos, size, abs_send_time) < 0)
                return -1;
            pos += size;
        }
    }
    return 0;
}

/* aiortc's VpxPayloadDescriptor.parse: the descriptor's length, -1 when truncated. */
static int
vp8_descriptor_length(const uint8_t *data, int length)
{
    if (length < 1)
        return -1;
    int pos = 1;
    if (data[0] & 0x80) {
        if (length < pos + 1)
            return -1;
        uint8_t octet = data[pos];
        int has_i = (octet >> 7) & 1, has_l = (octet >> 6) & 1, has_t = (octet >> 5) & 1,
            has_k = (octet >> 4) & 1;
        pos++;
        if (has_i) {
            if (length < pos + 1)
                return -1;
            if (data[pos] & 0x80) {
                if (length < pos + 2)
                    return -1;
                pos += 2;
            }
            else
                pos += 1;
        }
        if (has_l) {
            if (length < pos + 1)
                return -1;
            pos += 1;
        }
        if (has_t || has_k) {
            if (length < pos + 1)
                return -1;
            pos += 1;
        }
    }
    return pos;
}

/* The route of an RTP packet by SSRC and payload type (aiortc's RtpRouter.route_rtp), looked up
 * before decryption; -2: hand back to Python (unsupported codec, too many SSRCs), -1: none. */
static int
route(Receiver *self, uint32_t ssrc, int payload_type, Source **found)
{
    Source *source = find_source(self, ssrc);
    *found = NULL;
    if (source != NULL && source->track >= 0) {
        Track *track = &self->tracks[source->track];
        if (track_codec(track, payload_type) == NULL)
            return -1;
        Codec *final = track_final_codec(track, payload_type);
        if (final != NULL && final->kind == CODEC_UNSUPPORTED)
            return -2;
        *found = source;
        return source->track;
    }
    int match = -1, matches = 0;
    for (int t = 0; t < MAX_TRACKS; t++)
        if (self->tracks[t].used && track_codec(&self->tracks[t], payload_type) != NULL) {
            match = t;
            matches++;
        }
    if (source != NULL || matches != 1)
        return -1;
    Codec *final = track_final_codec(&self->tracks[match], payload_type);
    if (final != NULL && final->kind == CODEC_UNSUPPORTED)
        return -2;
    if (self->nsources >= MAX_SSRCS)
        return -2; /* more SSRCs than kept here: Python's router takes them */
    return match;  /* learned once the packet decrypts and parses (*found stays NULL) */
}

/* A decrypted RTP packet for track `t`: aiortc's ForwardingReceiver._handle_rtp_packet. */
static int
handle_rtp(Receiver *self, int t, Source *source, uint8_t *data, int length, int64_t arrival_ms)
{
    Track *track = &self->tracks[t];
    if (length < RTP_HEADER || (data[0] >> 6) != 2) {
        self->parse_failures++;
        return 0;
    }
    int padding = (data[0] >> 5) & 1, extension = (data[0] >> 4) & 1, cc = data[0] & 0x0F;
    int marker = data[1] >> 7, payload_type = data[1] & 0x7F;
    uint16_t seq = (uint16_t)((data[2] << 8) | data[3]);
    uint32_t timestamp = ((uint32_t)data[4] << 24) | ((uint32_t)data[5] << 16) |
                         ((uint32_t)data[6] << 8) | data[7];
    (void)marker;
    int pos = RTP_HEADER + 4 * cc;
    if (length < pos) {
        self->parse_failures++;
        return 0;
    }
    int64_t abs_send_time = -1;
    if (extension) {
        if (length < pos + 4) {
            self->parse_failures++;
            return 0;
        }
        int profile = (data[pos] << 8) | data[pos + 1];
        int ext_length = ((data[pos + 2] << 8) | data[pos + 3]) * 4;
        pos += 4;
        if (length < pos + ext_length ||
            parse_extensions(self, profile, data + pos, ext_length, &abs_send_time) < 0) {
            self->parse_failures++;
            return 0;
        }
        pos += ext_length;
    }
    int padding_size = 0;
    if (padding) {
        padding_size = data[length - 1];
        if (padding_size == 0 || padding_size > length - pos) {
            self->parse_failures++;
            return 0;
        }
    }
    if (source == NULL) {
        /* aiortc's router learns an unknown SSRC from its payload type */
        source = add_source(self, ((uint32_t)data[8] << 24) | ((uint32_t)data[9] << 16) |
                                      ((uint32_t)data[10] << 8) | data[11],
                            t);
        if (source == NULL) {
            self->dropped++;
            return 0; /* not reached: route() checked there was room */
        }
        source->learned = 1;
    }
    uint32_t ssrc = source->ssrc;
    uint8_t *payload = data + pos;
    int payload_length = length - pos - padding_size;
    self->packets++;
    source->octets += payload_length;
    source->touched = 1;

    if (track->video && abs_send_time >= 0) {
        RembSample sample = {ssrc, arrival_ms, (uint32_t)abs_send_time,
                             payload_length + padding_size, timestamp};
        if (!self->remb_per_frame)
            remb_push(self, &sample);
        else if (track->has_pending && track->pending.ssrc == ssrc &&
                 track->pending.timestamp == timestamp) {
            track->pending.size += sample.size;
            track->pending.arrival_ms = arrival_ms;
            track->pending.abs_send_time = sample.abs_send_time;
        }
        else {
            if (track->has_pending)
                remb_push(self, &track->pending);
            track->pending = sample;
            track->has_pending = 1;
        }
    }
    Codec *codec = track_codec(track, payload_type);
    if (codec == NULL)
        return 0;
    if (!source->has_stats)
        source->clockrate = codec->clockrate;
    stats_add(self, source, seq, timestamp);

    if (codec->kind == CODEC_RTX) {
        int found = -1;
        for (int i = 0; i < track->nrtx; i++)
            if (track->rtx_from[i] == ssrc)
                found = i;
        if (found < 0 || payload_length < 2 || codec->apt < 0)
            return 0;
        Codec *original = track_codec(track, codec->apt);
        if (original == NULL)
            return 0;
        ssrc = track->rtx_to[found];
        seq = (uint16_t)((payload[0] << 8) | payload[1]);
        payload += 2;
        payload_length -= 2;
        payload_type = codec->apt;
        codec = original;
    }
    if (codec->kind == CODEC_UNSUPPORTED || codec->kind == CODEC_RTX)
        return 0; /* not reached: route() hands H.264 back before decryption */

    if (track->video && nack_add(track, seq) && note_nack(self, track, ssrc) < 0)
        return -1;

    if (payload_length > 0 && codec->kind == CODEC_VP8) {
        int skip = vp8_descriptor_length(payload, payload_length);
        if (skip < 0) {
            self->parse_failures++;
            return 0;
        }
        payload += skip;
        payload_length -= skip;
    }
    int pli = 0;
    uint32_t frame_timestamp = 0;
    PyObject *frame = jitter_add(track, seq, timestamp, payload, payload_length, &pli,
                                 &frame_timestamp);
    if (frame == NULL && PyErr_Occurred())
        return -1;
    if (pli && note_pli(self, ssrc) < 0) {
        Py_XDECREF(frame);
        return -1;
    }
    if (frame != NULL) {
        self->frames++;
        PyObject *result = PyObject_CallFunction(track->on_frame, "iNk", payload_type, frame,
                                                 (unsigned long)frame_timestamp);
        if (result == NULL)
            return -1;
        Py_DECREF(result);
    }
    return 0;
}

static int
call_fallback(Receiver *self, const uint8_t *data, Py_ssize_t length, PyObject *addr)
{
    self->fallbacks++;
    PyObject *result =
        PyObject_CallFunction(self->fallback, "y#O", (const char *)data, length, addr);
    if (result == NULL)
        return -1;
    Py_DECREF(result);
    return 0;
}

static inline uint32_t
be32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

/* aiortc's RtcpSdesPacket.parse, without keeping anything: whether it would parse. */
static int
sdes_parses(const uint8_t *data, int length, int count)
{
    int pos = 0;
    for (int chunk = 0; chunk < count; chunk++) {
        if (length < pos + 4)
            return 0;
        pos += 4;
        while (pos < length - 1) {
            int type = data[pos], size = data[pos + 1];
            pos += 2;
            if (length < pos + size)
                return 0;
            pos += size;
            if (type == 0)
                break;
        }
    }
    return 1;
}

/* The report blocks of a compound packet made of receiver reports and SDES only (what a viewer
 * sends most), as aiortc's RtcpPacket.parse reads them: a list of (reporter, ssrc,
 * fraction_lost, packets_lost, highest_sequence, jitter, lsr, dlsr). Py_None for any other
 * compound (another packet type, padding, or one aiortc would refuse): Python parses those.
 * NULL on a Python error. */
static PyObject *
report_blocks(const uint8_t *data, int length)
{
    int pos = 0, reports = 0;
    while (pos < length) { /* first pass: only well-formed RR and SDES */
        if (length < pos + 4)
            Py_RETURN_NONE;
        int first = data[pos], type = data[pos + 1];
        int count = first & 0x1F;
        int size = ((data[pos + 2] << 8) | data[pos + 3]) * 4;
        if (first >> 6 != 2 || (first & 0x20) || length < pos + 4 + size)
            Py_RETURN_NONE;
        const uint8_t *payload = data + pos + 4;
        if (type == 201) {
            if (size != 4 + 24 * count)
                Py_RETURN_NONE;
            reports += count;
        } else if (type != 202 || !sdes_parses(payload, size, count)) {
            Py_RETURN_NONE;
        }
        pos += 4 + size;
    }
    PyObject *blocks = PyList_New(reports);
    if (blocks == NULL)
        return NULL;
    int index = 0;
    for (pos = 0; pos < length;) {
        int count = data[pos] & 0x1F;
        int size = ((data[pos + 2] << 8) | data[pos + 3]) * 4;
        if (data[pos + 1] == 201) {
            uint32_t reporter = be32(data + pos + 4);
            for (int r = 0; r < count; r++) {
                const uint8_t *b = data + pos + 8 + 24 * r;
                int32_t lost = (int32_t)(((uint32_t)b[5] << 16) | ((uint32_t)b[6] << 8) | b[7]);
                if (lost & 0x800000)
                    lost -= 0x1000000; /* 24-bit two's complement, as unpack_packets_lost */
                PyObject *block = Py_BuildValue("(kkiikkkk)", (unsigned long)reporter,
                                                (unsigned long)be32(b), (int)b[4], (int)lost,
                                                (unsigned long)be32(b + 8),
                                                (unsigned long)be32(b + 12),
                                                (unsigned long)be32(b + 16),
                                                (unsigned long)be32(b + 20));
                if (block == NULL) {
                    Py_DECREF(blocks);
                    return NULL;
                }
                PyList_SET_ITEM(blocks, index++, block);
            }
        }
        pos += 4 + size;
    }
    return blocks;
}

/* An SRTCP datagram, as aiortc's RTCDtlsTransport._recv_next: counted, decrypted (dropped when
 * that fails) and given to `on_rtcp(compound, blocks)`, `blocks` as report_blocks() reads them
 * (None: Python parses). DONE, or -1 on a Python error. */
static int
handle_rtcp(Receiver *self, const uint8_t *data, Py_ssize_t length)
{
    self->rx_packets++;
    self->rx_bytes += length;
    if (length > DGRAM_SIZE) {
        self->dropped++;
        return DONE;
    }
    memcpy(self->work, data, (size_t)length);
    int size = (int)length;
    if (self->srtp != NULL) {
        int status = srtp_unprotect_rtcp_ptr(self->srtp, self->work, &size);
        if (status != 0 || size < 0 || size > length) {
            self->srtp_failures++;
            return DONE;
        }
    }
    self->rtcp++;
    PyObject *blocks = report_blocks(self->work, size);
    if (blocks == NULL)
        return -1;
    PyObject *result = PyObject_CallFunction(self->on_rtcp, "y#N", (const char *)self->work,
                                             (Py_ssize_t)size, blocks);
    if (result == NULL)
        return -1;
    Py_DECREF(result);
    return DONE;
}

/* One datagram from the pair's remote address: DONE, FALLBACK (to Python as it is), HANDBACK
 * (to Python as it is, and the native mode ends), -1 on a Python error. */
static int
handle_datagram(Receiver *self, const uint8_t *data, Py_ssize_t length, int64_t arrival_ms)
{
    if (length < 1)
        return FALLBACK;
    uint8_t first = data[0];
    if (first < 128 || first > 191)
        return FALLBACK; /* STUN, DTLS, ZRTP, TURN channels: Python's */
    if (length >= 2 && data[1] >= 192 && data[1] <= 208)
        return self->on_rtcp == NULL ? FALLBACK : handle_rtcp(self, data, length);
    self->rx_packets++;
    self->rx_bytes += length;
    if (length < RTP_HEADER || length > DGRAM_SIZE) {
        self->dropped++;
        return DONE; /* aiortc's unprotect fails on it */
    }
    uint32_t ssrc = ((uint32_t)data[8] << 24) | ((uint32_t)data[9] << 16) |
                    ((uint32_t)data[10] << 8) | data[11];
    Source *source;
    int t = route(self, ssrc, data[1] & 0x7F, &source);
    if (t == -2) {
        self->rx_packets--;
        self->rx_bytes -= length;
        return HANDBACK;
    }
    memcpy(self->work, data, (size_t)length);
    int size = (int)length;
    if (self->srtp != NULL) {
        int status = srtp_unprotect_ptr(self->srtp, self->work, &size);
        if (status != 0 || size < 0 || size > length) {
            self->srtp_failures++;
            return DONE;
        }
    }
    if (t < 0) {
        self->dropped++;
        return DONE; /* unprotected, as aiortc does, and not routed */
    }
    return handle_rtp(self, t, source, self->work, size, arrival_ms) < 0 ? -1 : DONE;
}

static int64_t
arrival_ms_now(Receiver *self)
{
    return (int64_t)((now_seconds(self) + NTP_UNIX_OFFSET) * 1000.0);
}

static PyObject *
address_tuple(const struct sockaddr_in *addr)
{
    char host[INET_ADDRSTRLEN];
    if (inet_ntop(AF_INET, &addr->sin_addr, host, sizeof(host)) == NULL)
        host[0] = '\0';
    return Py_BuildValue("(si)", host, ntohs(addr->sin_port));
}

static int
same_address(Receiver *self, const struct sockaddr_in *addr)
{
    return addr->sin_family == AF_INET && addr->sin_port == self->remote.sin_port &&
           addr->sin_addr.s_addr == self->remote.sin_addr.s_addr;
}

/* End the native mode: the rest of the batch and its reason go to Python. */
static int
hand_back(Receiver *self, const char *reason)
{
    self->active = 0;
    self->handbacks++;
    PyObject *result = PyObject_CallFunction(self->on_handback, "s", reason);
    if (result == NULL)
        return -1;
    Py_DECREF(result);
    return 0;
}

static int
finish_call(Receiver *self)
{
    if (sync_python(self) < 0 || flush_events(self) < 0)
        return -1;
    return 0;
}

/* A Python error raised under this call (a frame's consumer, the fallback): reported as
 * unraisable, and the native mode ends after this call, so that the event loop never sees it
 * (uvloop would close the socket) and the Python path takes over as it would have been. */
static void
python_error(Receiver *self, const char **reason)
{
    PyErr_WriteUnraisable((PyObject *)self);
    self->errors++;
    *reason = "a Python error in the native receive path";
}

/* datagram_received(data, addr): the ICE protocol's, while native. Never raises once native:
 * see python_error. */
static PyObject *
Receiver_datagram_received(Receiver *self, PyObject *args)
{
    Py_buffer view;
    PyObject *addr;
    if (!PyArg_ParseTuple(args, "y*O", &view, &addr))
        return NULL;
    if (!self->active || self->in_call) {
        PyObject *result = PyObject_CallFunction(self->fallback, "y#O", view.buf, view.len, addr);
        PyBuffer_Release(&view);
        return result;
    }
    Py_INCREF(self);
    self->in_call = 1;
    self->wakeups++;
    int status = FALLBACK;
    const char *reason = NULL;
    int64_t arrival_ms = arrival_ms_now(self);
    int same = PyObject_RichCompareBool(addr, self->remote_addr, Py_EQ);
    if (same < 0)
        python_error(self, &reason);
    else if (same) {
        status = handle_datagram(self, view.buf, view.len, arrival_ms);
        if (status < 0)
            python_error(self, &reason); /* this datagram is lost (already decrypted) */
        else if (status == HANDBACK)
            reason = "a packet the native path does not handle";
    }
    if (status == FALLBACK || status == HANDBACK)
        if (call_fallback(self, view.buf, view.len, addr) < 0)
            python_error(self, &reason);
    PyBuffer_Release(&view);
    /* then the rest of the socket's queue, bounded; once a reason to stop came up, what was
     * read already goes to Python as it is */
    int draining = !batch_busy; /* (a nested call leaves the rest for the loop's next turn) */
    batch_busy = 1;
    for (int batch = 0;
         draining && reason == NULL && self->active && self->fd >= 0 && batch < MAX_BATCHES;
         batch++) {
        struct mmsghdr messages[BATCH];
        struct iovec vectors[BATCH];
        memset(messages, 0, sizeof(messages));
        for (int i = 0; i < BATCH; i++) {
            vectors[i].iov_base = batch_buffers[i];
            vectors[i].iov_len = DGRAM_SIZE;
            messages[i].msg_hdr.msg_iov = &vectors[i];
            messages[i].msg_hdr.msg_iovlen = 1;
            messages[i].msg_hdr.msg_name = &batch_addrs[i];
            messages[i].msg_hdr.msg_namelen = sizeof(batch_addrs[i]);
        }
        int count = recvmmsg(self->fd, messages, BATCH, MSG_DONTWAIT, NULL);
        if (count <= 0)
            break;
        self->batches++;
        arrival_ms = arrival_ms_now(self);
        for (int i = 0; i < count; i++) {
            const uint8_t *data = batch_buffers[i];
            Py_ssize_t length = messages[i].msg_len;
            struct sockaddr_in *from = &batch_addrs[i];
            if (messages[i].msg_hdr.msg_flags & MSG_TRUNC) {
                self->truncated++;
                continue;
            }
            int ipv4 = messages[i].msg_hdr.msg_namelen == sizeof(struct sockaddr_in);
            status = FALLBACK;
            if (ipv4 && same_address(self, from) && self->active && reason == NULL) {
                status = handle_datagram(self, data, length, arrival_ms);
                if (status < 0)
                    python_error(self, &reason);
                else if (status == HANDBACK)
                    reason = "a packet the native path does not handle";
            }
            if (status == FALLBACK || status == HANDBACK) {
                PyObject *from_tuple = ipv4 ? address_tuple(from) : Py_BuildValue("(si)", "", 0);
                if (from_tuple == NULL || call_fallback(self, data, length, from_tuple) < 0)
                    python_error(self, &reason);
                Py_XDECREF(from_tuple);
            }
        }
        if (count < BATCH)
            break;
    }
    if (draining)
        batch_busy = 0;
    if (finish_call(self) < 0)
        python_error(self, &reason);
    self->in_call = 0;
    if (reason != NULL && self->active && hand_back(self, reason) < 0)
        python_error(self, &reason);
    Py_DECREF(self);
    Py_RETURN_NONE;
}

/* ---- the Python interface ---------------------------------------------------------------- */

static void
Receiver_release(Receiver *self)
{
    for (int t = 0; t < MAX_TRACKS; t++) {
        track_free(&self->tracks[t]);
        Py_CLEAR(self->octets_dicts[t]);
        Py_CLEAR(self->receivers[t]);
    }
    for (int i = 0; i < self->nsources; i++)
        Py_CLEAR(self->sources[i].stats);
    self->nsources = 0;
    Py_CLEAR(self->nacks);
    Py_CLEAR(self->plis);
    PyMem_Free(self->remb);
    self->remb = NULL;
    self->nremb = 0;
    if (self->fd >= 0) {
        close(self->fd);
        self->fd = -1;
    }
    self->srtp = NULL;
}

static PyObject *
Receiver_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    Receiver *self = (Receiver *)type->tp_alloc(type, 0);
    if (self != NULL)
        self->fd = -1;
    return (PyObject *)self;
}

static int
Receiver_clear(Receiver *self)
{
    Receiver_release(self);
    Py_CLEAR(self->session);
    Py_CLEAR(self->remote_addr);
    Py_CLEAR(self->fallback);
    Py_CLEAR(self->on_events);
    Py_CLEAR(self->on_handback);
    Py_CLEAR(self->stats_factory);
    Py_CLEAR(self->transport);
    Py_CLEAR(self->now_datetime);
    Py_CLEAR(self->on_rtcp);
    return 0;
}

static int
Receiver_traverse(Receiver *self, visitproc visit, void *arg)
{
    Py_VISIT(self->session);
    Py_VISIT(self->remote_addr);
    Py_VISIT(self->fallback);
    Py_VISIT(self->on_events);
    Py_VISIT(self->on_handback);
    Py_VISIT(self->stats_factory);
    Py_VISIT(self->transport);
    Py_VISIT(self->now_datetime);
    Py_VISIT(self->on_rtcp);
    for (int t = 0; t < MAX_TRACKS; t++) {
        Py_VISIT(self->tracks[t].on_frame);
        Py_VISIT(self->octets_dicts[t]);
        Py_VISIT(self->receivers[t]);
    }
    for (int i = 0; i < self->nsources; i++)
        Py_VISIT(self->sources[i].stats);
    Py_VISIT(self->nacks);
    Py_VISIT(self->plis);
    return 0;
}

static void
Receiver_dealloc(Receiver *self)
{
    PyObject_GC_UnTrack(self);
    Receiver_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* Receiver(session, srtp, fd, remote, fallback, on_events, on_handback, stats_factory,
 *          transport, now_datetime, extensions) -- `srtp` 0 for clear RTP (tests), `fd` -1 for
 * no socket (tests), `extensions` (abs_send_time, mid, rid, repaired_rid, toffset,
 * audio_level, twcc) ids, 0 for none. */
static int
Receiver_init(Receiver *self, PyObject *args, PyObject *kwds)
{
    PyObject *session, *remote, *fallback, *on_events, *on_handback, *stats_factory, *transport,
        *now_datetime;
    unsigned long long srtp;
    int fd;
    int ids[7];
    if (!PyArg_ParseTuple(args, "OKiO!OOOOOO(iiiiiii)", &session, &srtp, &fd, &PyTuple_Type,
                          &remote, &fallback, &on_events, &on_handback, &stats_factory,
                          &transport, &now_datetime, &ids[0], &ids[1], &ids[2], &ids[3],
                          &ids[4], &ids[5], &ids[6]))
        return -1;
    if (srtp != 0 && srtp_unprotect_ptr == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "set_srtp_unprotect() was not called");
        return -1;
    }
    if (PyTuple_GET_SIZE(remote) != 2) {
        PyErr_SetString(PyExc_ValueError, "remote must be (host, port)");
        return -1;
    }
    const char *host = PyUnicode_AsUTF8(PyTuple_GET_ITEM(remote, 0));
    if (host == NULL)
        return -1;
    long port = PyLong_AsLong(PyTuple_GET_ITEM(remote, 1));
    if (port == -1 && PyErr_Occurred())
        return -1;
    memset(&self->remote, 0, sizeof(self->remote));
    self->remote.sin_family = AF_INET;
    self->remote.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, host, &self->remote.sin_addr) != 1) {
        PyErr_SetString(PyExc_ValueError, "remote must be an IPv4 address");
        return -1;
    }
    Receiver_clear(self);
    self->fd = -1;
    if (fd >= 0) {
        self->fd = dup(fd);
        if (self->fd < 0) {
            PyErr_SetFromErrno(PyExc_OSError);
            return -1;
        }
    }
    self->srtp = (void *)(uintptr_t)srtp;
    self->session = Py_NewRef(session);
    self->remote_addr = Py_NewRef(remote);
    self->fallback = Py_NewRef(fallback);
    self->on_events = Py_NewRef(on_events);
    self->on_handback = Py_NewRef(on_handback);
    self->stats_factory = Py_NewRef(stats_factory);
    self->transport = transport == Py_None ? NULL : Py_NewRef(transport);
    self->now_datetime = Py_NewRef(now_datetime);
    self->abs_send_time_id = ids[0];
    self->mid_id = ids[1];
    self->rid_id = ids[2];
    self->rrid_id = ids[3];
    self->toffset_id = ids[4];
    self->audio_level_id = ids[5];
    self->twcc_id = ids[6];
    /* an id of 0 never matches: aiortc's map compares against None */
    for (int *id = &self->abs_send_time_id; id <= &self->twcc_id; id++)
        if (*id == 0)
            *id = -1;
    self->active = 1;
    self->remb_per_frame = 1;
    return 0;
}

/* add_track(index, video, capacity, prefetch, codecs, rtx, on_frame, receiver, octets):
 * codecs [(payload_type, kind, apt, clockrate)], rtx [(rtx_ssrc, ssrc)]. */
static PyObject *
Receiver_add_track(Receiver *self, PyObject *args)
{
    int index, video, capacity, prefetch;
    PyObject *codecs, *rtx, *on_frame, *receiver, *octets;
    if (!PyArg_ParseTuple(args, "iiiiO!O!OOO", &index, &video, &capacity, &prefetch, &PyList_Type,
                          &codecs, &PyList_Type, &rtx, &on_frame, &receiver, &octets))
        return NULL;
    if (index < 0 || index >= MAX_TRACKS || self->tracks[index].used) {
        PyErr_SetString(PyExc_ValueError, "bad or used track index");
        return NULL;
    }
    if (capacity <= 0 || capacity > 4096 || (capacity & (capacity - 1)) || prefetch < 0) {
        PyErr_SetString(PyExc_ValueError, "capacity must be a power of 2 up to 4096");
        return NULL;
    }
    if (PyList_GET_SIZE(codecs) > MAX_CODECS || PyList_GET_SIZE(rtx) > MAX_SSRCS) {
        PyErr_SetString(PyExc_ValueError, "too many codecs or RTX streams");
        return NULL;
    }
    Track *track = &self->tracks[index];
    memset(track, 0, sizeof(*track));
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(codecs); i++) {
        Codec *codec = &track->codecs[i];
        unsigned long clockrate;
        if (!PyArg_ParseTuple(PyList_GET_ITEM(codecs, i), "iiik", &codec->payload_type,
                              &codec->kind, &codec->apt, &clockrate))
            return NULL;
        codec->clockrate = (uint32_t)clockrate;
        track->ncodecs++;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(rtx); i++) {
        unsigned long from, to;
        if (!PyArg_ParseTuple(PyList_GET_ITEM(rtx, i), "kk", &from, &to))
            return NULL;
        track->rtx_from[i] = (uint32_t)from;
        track->rtx_to[i] = (uint32_t)to;
        track->nrtx++;
    }
    track->video = video;
    track->capacity = capacity;
    track->prefetch = prefetch;
    track->present = PyMem_Calloc((size_t)capacity, 1);
    track->seqs = PyMem_Calloc((size_t)capacity, sizeof(uint16_t));
    track->stamps = PyMem_Calloc((size_t)capacity, sizeof(uint32_t));
    track->lengths = PyMem_Calloc((size_t)capacity, sizeof(uint16_t));
    track->data = PyMem_Malloc((size_t)capacity * DGRAM_SIZE);
    track->missing = PyMem_Calloc(MISSING_BYTES, 1);
    if (self->remb == NULL)
        self->remb = PyMem_Calloc(MAX_EVENTS, sizeof(RembSample));
    if (self->remb == NULL) {
        track_free(track);
        return PyErr_NoMemory();
    }
    if (!track->present || !track->seqs || !track->stamps || !track->lengths || !track->data ||
        !track->missing) {
        track_free(track);
        return PyErr_NoMemory();
    }
    track->on_frame = Py_NewRef(on_frame);
    self->receivers[index] = receiver == Py_None ? NULL : Py_NewRef(receiver);
    self->octets_dicts[index] = octets == Py_None ? NULL : Py_NewRef(octets);
    track->used = 1;
    Py_RETURN_NONE;
}

/* Track `t` of a call from Python, or NULL with ValueError when there is none. */
static Track *
used_track(Receiver *self, int t)
{
    if (t < 0 || t >= MAX_TRACKS || !self->tracks[t].used) {
        PyErr_SetString(PyExc_ValueError, "no such track");
        return NULL;
    }
    return &self->tracks[t];
}

/* add_source(ssrc, track, stats, fields): a known SSRC; `fields` (base_seq, max_seq, cycles,
 * packets_received, jitter_q4, last_arrival, last_timestamp, clockrate) or None. */
static PyObject *
Receiver_add_source(Receiver *self, PyObject *args)
{
    unsigned long ssrc;
    int t;
    PyObject *stats, *fields;
    if (!PyArg_ParseTuple(args, "kiOO", &ssrc, &t, &stats, &fields))
        return NULL;
    if (used_track(self, t) == NULL)
        return NULL;
    if (find_source(self, (uint32_t)ssrc) != NULL) {
        PyErr_SetString(PyExc_ValueError, "SSRC already known");
        return NULL;
    }
    Source *source = add_source(self, (uint32_t)ssrc, t);
    if (source == NULL) {
        PyErr_SetString(PyExc_OverflowError, "too many SSRCs");
        return NULL;
    }
    if (fields != Py_None) {
        int base, max;
        long long cycles, received, jitter, arrival;
        unsigned long timestamp, clockrate;
        if (!PyArg_ParseTuple(fields, "iiLLLLkk", &base, &max, &cycles, &received, &jitter,
                              &arrival, &timestamp, &clockrate)) {
            self->nsources--;
            return NULL;
        }
        source->has_stats = 1;
        source->base_seq = (uint16_t)base;
        source->max_seq = (uint16_t)max;
        source->cycles = cycles;
        source->received = received;
        source->jitter_q4 = jitter;
        source->last_arrival = arrival;
        source->last_timestamp = (uint32_t)timestamp;
        source->clockrate = (uint32_t)clockrate;
    }
    source->stats = stats == Py_None ? NULL : Py_NewRef(stats);
    Py_RETURN_NONE;
}

/* set_jitter(track, origin, [(seq, timestamp, data)]) and jitter(track) -> (origin, [...]) */
static PyObject *
Receiver_set_jitter(Receiver *self, PyObject *args)
{
    int t;
    PyObject *origin, *packets;
    if (!PyArg_ParseTuple(args, "iOO!", &t, &origin, &PyList_Type, &packets))
        return NULL;
    Track *track = used_track(self, t);
    if (track == NULL)
        return NULL;
    memset(track->present, 0, (size_t)track->capacity);
    track->has_origin = origin != Py_None;
    if (track->has_origin) {
        long value = PyLong_AsLong(origin);
        if (value == -1 && PyErr_Occurred())
            return NULL;
        track->origin = (uint16_t)value;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(packets); i++) {
        int seq;
        unsigned long timestamp;
        Py_buffer data;
        if (!PyArg_ParseTuple(PyList_GET_ITEM(packets, i), "iky*", &seq, &timestamp, &data))
            return NULL;
        if (data.len > DGRAM_SIZE) {
            PyBuffer_Release(&data);
            PyErr_SetString(PyExc_ValueError, "packet too big");
            return NULL;
        }
        int pos = (uint16_t)seq % track->capacity;
        track->present[pos] = 1;
        track->seqs[pos] = (uint16_t)seq;
        track->stamps[pos] = (uint32_t)timestamp;
        track->lengths[pos] = (uint16_t)data.len;
        memcpy(track->data + (size_t)pos * DGRAM_SIZE, data.buf, (size_t)data.len);
        PyBuffer_Release(&data);
    }
    Py_RETURN_NONE;
}

static PyObject *
Receiver_jitter(Receiver *self, PyObject *args)
{
    int t;
    if (!PyArg_ParseTuple(args, "i", &t))
        return NULL;
    Track *track = used_track(self, t);
    if (track == NULL)
        return NULL;
    PyObject *packets = PyList_New(0);
    if (packets == NULL)
        return NULL;
    for (int pos = 0; pos < track->capacity; pos++) {
        if (!track->present[pos])
            continue;
        PyObject *item = Py_BuildValue("(iky#)", track->seqs[pos], (unsigned long)track->stamps[pos],
                                       track->data + (size_t)pos * DGRAM_SIZE,
                                       (Py_ssize_t)track->lengths[pos]);
        if (item == NULL || PyList_Append(packets, item) < 0) {
            Py_XDECREF(item);
            Py_DECREF(packets);
            return NULL;
        }
        Py_DECREF(item);
    }
    if (!track->has_origin)
        return Py_BuildValue("(ON)", Py_None, packets);
    return Py_BuildValue("(iN)", track->origin, packets);
}

/* set_nack(track, max_seq or None, missing) and nack(track) -> (max_seq or None, missing) */
static PyObject *
Receiver_set_nack(Receiver *self, PyObject *args)
{
    int t;
    PyObject *max_seq, *missing;
    if (!PyArg_ParseTuple(args, "iOO", &t, &max_seq, &missing))
        return NULL;
    Track *track = used_track(self, t);
    if (track == NULL)
        return NULL;
    memset(track->missing, 0, MISSING_BYTES);
    track->nack_has_max = max_seq != Py_None;
    if (track->nack_has_max) {
        long value = PyLong_AsLong(max_seq);
        if (value == -1 && PyErr_Occurred())
            return NULL;
        track->nack_max = (uint16_t)value;
    }
    PyObject *iterator = PyObject_GetIter(missing);
    if (iterator == NULL)
        return NULL;
    PyObject *item;
    while ((item = PyIter_Next(iterator)) != NULL) {
        long seq = PyLong_AsLong(item);
        Py_DECREF(item);
        if (seq == -1 && PyErr_Occurred()) {
            Py_DECREF(iterator);
            return NULL;
        }
        uint16_t s = (uint16_t)seq;
        /* only what truncate keeps: within NACK_WINDOW below the highest */
        if (track->nack_has_max && (uint16_t)(track->nack_max - s) >= 1 &&
            (uint16_t)(track->nack_max - s) <= NACK_WINDOW)
            missing_set(track, s, 1);
    }
    Py_DECREF(iterator);
    if (PyErr_Occurred())
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *
Receiver_nack(Receiver *self, PyObject *args)
{
    int t;
    if (!PyArg_ParseTuple(args, "i", &t))
        return NULL;
    Track *track = used_track(self, t);
    if (track == NULL)
        return NULL;
    PyObject *missing = nack_list(track);
    if (missing == NULL)
        return NULL;
    if (!track->nack_has_max)
        return Py_BuildValue("(ON)", Py_None, missing);
    return Py_BuildValue("(iN)", track->nack_max, missing);
}

/* process(datagrams): datagrams as if read from the pair's remote address (tests). */
static PyObject *
Receiver_process(Receiver *self, PyObject *args)
{
    PyObject *datagrams;
    if (!PyArg_ParseTuple(args, "O!", &PyList_Type, &datagrams))
        return NULL;
    Py_INCREF(self);
    int failed = 0;
    const char *reason = NULL;
    int64_t arrival_ms = arrival_ms_now(self);
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(datagrams) && !failed; i++) {
        Py_buffer view;
        if (PyObject_GetBuffer(PyList_GET_ITEM(datagrams, i), &view, PyBUF_SIMPLE) < 0) {
            failed = 1;
            break;
        }
        int status = FALLBACK;
        if (self->active && reason == NULL) {
            self->in_call = 1;
            status = handle_datagram(self, view.buf, view.len, arrival_ms);
            self->in_call = 0;
        }
        if (status < 0)
            failed = 1;
        else if (status != DONE) {
            if (status == HANDBACK)
                reason = "a packet the native path does not handle";
            if (call_fallback(self, view.buf, view.len, self->remote_addr) < 0)
                failed = 1;
        }
        PyBuffer_Release(&view);
    }
    if (!failed && finish_call(self) < 0)
        failed = 1;
    if (!failed && reason != NULL && self->active && hand_back(self, reason) < 0)
        failed = 1;
    Py_DECREF(self);
    if (failed)
        return NULL;
    Py_RETURN_NONE;
}

/* stop(): no more native handling (what arrives goes to the fallback); Python state is written
 * first. Idempotent. */
static PyObject *
Receiver_stop(Receiver *self, PyObject *Py_UNUSED(ignored))
{
    if (self->active || !self->in_call) {
        /* also after a hand-back: the last frame's REMB sample is still pending */
        self->active = 0;
        for (int t = 0; t < MAX_TRACKS; t++)
            if (self->tracks[t].used && self->tracks[t].has_pending) {
                remb_push(self, &self->tracks[t].pending);
                self->tracks[t].has_pending = 0;
            }
        if (finish_call(self) < 0)
            return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
Receiver_close(Receiver *self, PyObject *Py_UNUSED(ignored))
{
    self->active = 0;
    Receiver_release(self);
    Py_RETURN_NONE;
}

static PyObject *
Receiver_set_clock(Receiver *self, PyObject *args)
{
    double seconds;
    if (!PyArg_ParseTuple(args, "d", &seconds))
        return NULL;
    self->fixed_clock = seconds;
    Py_RETURN_NONE;
}

/* set_rtcp(on_rtcp or None): decrypt RTCP here and give it to `on_rtcp`, or leave it to the
 * fallback (the default). */
static PyObject *
Receiver_set_rtcp(Receiver *self, PyObject *args)
{
    PyObject *on_rtcp;
    if (!PyArg_ParseTuple(args, "O", &on_rtcp))
        return NULL;
    if (on_rtcp != Py_None && self->srtp != NULL && srtp_unprotect_rtcp_ptr == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "set_srtp_unprotect() got no srtp_unprotect_rtcp");
        return NULL;
    }
    Py_XSETREF(self->on_rtcp, on_rtcp == Py_None ? NULL : Py_NewRef(on_rtcp));
    Py_RETURN_NONE;
}

static PyObject *
Receiver_counters(Receiver *self, PyObject *Py_UNUSED(ignored))
{
    return Py_BuildValue("{sKsKsKsKsKsKsKsKsKsKsKsKsi}", "packets", self->packets, "frames",
                         self->frames, "dropped", self->dropped, "fallbacks", self->fallbacks,
                         "batches", self->batches, "wakeups", self->wakeups, "handbacks",
                         self->handbacks, "srtp_failures", self->srtp_failures,
                         "parse_failures", self->parse_failures, "truncated", self->truncated,
                         "errors", self->errors, "rtcp", self->rtcp,
                         "sources", self->nsources);
}

static PyObject *
Receiver_get_active(Receiver *self, void *closure)
{
    return PyBool_FromLong(self->active);
}

static PyObject *
Receiver_get_remb_per_frame(Receiver *self, void *closure)
{
    return PyBool_FromLong(self->remb_per_frame);
}

static int
Receiver_set_remb_per_frame(Receiver *self, PyObject *value, void *closure)
{
    int flag = value == NULL ? 0 : PyObject_IsTrue(value);
    if (flag < 0)
        return -1;
    self->remb_per_frame = flag;
    return 0;
}

static PyMethodDef Receiver_methods[] = {
    {"datagram_received", (PyCFunction)Receiver_datagram_received, METH_VARARGS, NULL},
    {"add_track", (PyCFunction)Receiver_add_track, METH_VARARGS, NULL},
    {"add_source", (PyCFunction)Receiver_add_source, METH_VARARGS, NULL},
    {"set_jitter", (PyCFunction)Receiver_set_jitter, METH_VARARGS, NULL},
    {"jitter", (PyCFunction)Receiver_jitter, METH_VARARGS, NULL},
    {"set_nack", (PyCFunction)Receiver_set_nack, METH_VARARGS, NULL},
    {"nack", (PyCFunction)Receiver_nack, METH_VARARGS, NULL},
    {"process", (PyCFunction)Receiver_process, METH_VARARGS, NULL},
    {"stop", (PyCFunction)Receiver_stop, METH_NOARGS, NULL},
    {"close", (PyCFunction)Receiver_close, METH_NOARGS, NULL},
    {"set_clock", (PyCFunction)Receiver_set_clock, METH_VARARGS, NULL},
    {"set_rtcp", (PyCFunction)Receiver_set_rtcp, METH_VARARGS, NULL},
    {"counters", (PyCFunction)Receiver_counters, METH_NOARGS, NULL},
    {NULL},
};

static PyGetSetDef Receiver_getset[] = {
    {"active", (getter)Receiver_get_active, NULL, NULL, NULL},
    {"remb_per_frame", (getter)Receiver_get_remb_per_frame, (setter)Receiver_set_remb_per_frame,
     NULL, NULL},
    {NULL},
};

static PyTypeObject ReceiverType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "mediaserver._receive.Receiver",
    .tp_basicsize = sizeof(Receiver),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = Receiver_new,
    .tp_init = (initproc)Receiver_init,
    .tp_dealloc = (destructor)Receiver_dealloc,
    .tp_traverse = (traverseproc)Receiver_traverse,
    .tp_clear = (inquiry)Receiver_clear,
    .tp_methods = Receiver_methods,
    .tp_getset = Receiver_getset,
};

static PyObject *
set_srtp_unprotect(PyObject *module, PyObject *args)
{
    unsigned long long address, rtcp_address = 0;
    PyObject *error;
    if (!PyArg_ParseTuple(args, "KO|K", &address, &error, &rtcp_address))
        return NULL;
    if (address == 0) {
        PyErr_SetString(PyExc_ValueError, "a null srtp_unprotect");
        return NULL;
    }
    srtp_unprotect_ptr = (srtp_unprotect_fn)(uintptr_t)address;
    if (rtcp_address != 0)
        srtp_unprotect_rtcp_ptr = (srtp_unprotect_fn)(uintptr_t)rtcp_address;
    Py_INCREF(error);
    Py_XSETREF(srtp_error, error);
    Py_RETURN_NONE;
}

static PyMethodDef module_methods[] = {
    {"set_srtp_unprotect", set_srtp_unprotect, METH_VARARGS, NULL},
    {NULL},
};

static struct PyModuleDef receive_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "mediaserver._receive",
    .m_doc = "Native receive path (see mediaserver/receive.py).",
    .m_size = -1,
    .m_methods = module_methods,
};

PyMODINIT_FUNC
PyInit__receive(void)
{
    if (PyType_Ready(&ReceiverType) < 0)
        return NULL;
    struct {
        PyObject **slot;
        const char *name;
    } names[] = {
        {&str_base_seq, "base_seq"},
        {&str_max_seq, "max_seq"},
        {&str_cycles, "cycles"},
        {&str_packets_received, "packets_received"},
        {&str_jitter_q4, "_jitter_q4"},
        {&str_last_arrival, "_last_arrival"},
        {&str_last_timestamp, "_last_timestamp"},
        {&str_last_heard_at, "last_heard_at"},
        {&str_rx_packets, "_RTCDtlsTransport__rx_packets"},
        {&str_rx_bytes, "_RTCDtlsTransport__rx_bytes"},
        {&str_active_ssrc, "_RTCRtpReceiver__active_ssrc"},
    };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if ((*names[i].slot = PyUnicode_InternFromString(names[i].name)) == NULL)
            return NULL;
    PyObject *module = PyModule_Create(&receive_module);
    if (module == NULL)
        return NULL;
    if (PyModule_AddIntConstant(module, "BATCH", BATCH) < 0 ||
        PyModule_AddIntConstant(module, "MAX_BATCHES", MAX_BATCHES) < 0 ||
        PyModule_AddIntConstant(module, "MAX_SSRCS", MAX_SSRCS) < 0 ||
        PyModule_AddIntConstant(module, "DGRAM_SIZE", DGRAM_SIZE) < 0 ||
        PyModule_AddIntConstant(module, "CODEC_IDENTITY", CODEC_IDENTITY) < 0 ||
        PyModule_AddIntConstant(module, "CODEC_VP8", CODEC_VP8) < 0 ||
        PyModule_AddIntConstant(module, "CODEC_UNSUPPORTED", CODEC_UNSUPPORTED) < 0 ||
        PyModule_AddIntConstant(module, "CODEC_RTX", CODEC_RTX) < 0 ||
        PyModule_AddObjectRef(module, "Receiver", (PyObject *)&ReceiverType) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
