/* The native fan-out send path (see fanout.py): per-subscriber RTP stream state in C, and one
 * call per frame that writes, SRTP-protects and sends every subscriber's packets.
 *
 * A `Writer` is one subscriber's outgoing RTP stream of one kind (what rtp_send.RtpWriter keeps:
 * SSRC, payload type, sequence numbers, timestamp origin, the extension block split around the
 * 3-byte abs-send-time, RTX numbering, counters, a NACK history). A `Group` is the set of writers
 * one hub's frames go to. fanout.py has the same two classes in Python, byte for byte the same.
 *
 * SRTP: the writer protects in place with libsrtp's `srtp_protect(srtp_t, void *, int *)`, the
 * one bundled in pylibsrtp (2.7.0), reached through a function pointer fanout.py hands over
 * (`set_srtp_protect`), on the very srtp_t the route's pylibsrtp Session wraps; the writer keeps
 * a reference to that Session (and to the datagram transport) while it uses the pointer. No
 * libsrtp is linked here: Debian's libsrtp2 has other struct layouts.
 *
 * RTCP: a writer whose sender reports the group sends (`set_reports`, see forwarding.py) gets, on
 * each `Group.send_reports`, the sender report and SDES CNAME chunk aiortc's
 * RTCRtpSender._run_rtcp would have sent, byte for byte, protected with `srtp_protect_rtcp`
 * (also by address, `set_srtp_protect_rtcp`) on the same srtp_t and sent the same way as RTP.
 *
 * Sending: with a socket (a dup of the ICE pair's UDP socket, so a socket closed by its owner
 * is never confused with a reused descriptor) packets go out with sendmmsg in batches of at most
 * 64. On EAGAIN or a partial send the rest of the batch, already protected, goes to the
 * transport's Python `sendto`, which queues it in order; until that queue drains, every packet
 * of the writer takes the same way. Without a socket (TURN, tests) every packet takes that way.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define HISTORY_SIZE 128        /* aiortc's RTP_HISTORY_SIZE: packets a NACK can reach back */
#define BATCH 64                /* packets per sendmmsg */
#define SLOT_SIZE 2048          /* one packet being written, protected in place */
#define SRTP_MAX_TRAILER_LEN (16 + 128) /* libsrtp 2.7.0: SRTP_MAX_TAG_LEN + SRTP_MAX_MKI_LEN */
#define MAX_EXTENSIONS 255
#define MARKER 0x80
#define MAX_CNAME 255           /* an SDES item's length is one octet */
#define RTCP_SR 200
#define RTCP_SDES 202
#define SDES_CNAME 1

typedef int (*srtp_protect_fn)(void *ctx, void *rtp_hdr, int *len_ptr);

static srtp_protect_fn srtp_protect_ptr = NULL;
static srtp_protect_fn srtp_protect_rtcp_ptr = NULL; /* same signature in libsrtp 2.7.0 */
static PyObject *srtp_error = NULL; /* pylibsrtp.Error, raised by retransmit on failure */

/* Where one batch of packets is written. A single buffer: the GIL serializes callers, and
 * `busy` refuses re-entry (a Python protect or sendto that would call back into a send). */
static unsigned char slots[BATCH][SLOT_SIZE];
static int slot_lengths[BATCH];
static int busy = 0;

typedef struct {
    PyObject *payloads; /* the frame's payload list (a reference, not a copy) */
    uint64_t ntp_time;  /* abs-send-time is rebuilt from it */
    uint32_t timestamp; /* on this stream (origin added) */
    uint16_t first;     /* sequence number of its first packet */
    uint16_t count;     /* packets sent from it */
    uint16_t total;     /* packets in the frame: the last one has the marker */
} FrameRecord;

typedef struct {
    PyObject_HEAD
    uint32_t ssrc, rtx_ssrc, timestamp_origin;
    int payload_type, rtx_payload_type; /* rtx_payload_type < 0: no RTX */
    uint16_t sequence_number, rtx_sequence_number;
    unsigned char first_byte;
    unsigned char before[MAX_EXTENSIONS];
    unsigned char after[MAX_EXTENSIONS];
    int before_len, after_len, has_send_time;
    /* route */
    PyObject *session;   /* pylibsrtp.Session (or anything with protect()) */
    PyObject *protect;   /* session.protect, used when srtp is NULL */
    void *srtp;          /* the session's srtp_t, or NULL */
    PyObject *datagrams; /* the datagram transport */
    PyObject *sendto;    /* datagrams.sendto */
    PyObject *get_write_buffer_size;
    PyObject *address;   /* (host, port) */
    int fd;              /* our dup of the transport's socket, or -1 */
    struct sockaddr_storage sockaddr;
    socklen_t sockaddr_len;
    int queued;          /* packets went through sendto: keep that way until its buffer drains */
    /* counters */
    unsigned long long packets, octets, wire_packets, wire_octets;
    long long last_wire_octets;
    uint32_t rtp_timestamp;
    uint64_t ntp_timestamp;
    long long meter_second, meter_octets, bitrate;
    /* history */
    FrameRecord history[HISTORY_SIZE];
    int history_next;
    int sent_any;
    /* sender reports (Group.send_reports) */
    int reporting;      /* the group sends this stream's sender reports */
    unsigned char cname[MAX_CNAME];
    int cname_len;      /* -1: no SDES chunk (aiortc's sender without a CNAME) */
    uint64_t report_ntp; /* the NTP timestamp the last report carried */
    double report_time;  /* when it was sent (the caller's time.time()) */
    unsigned long long rtcp_packets, rtcp_octets;
} Writer;

static PyTypeObject WriterType;

static void
route_clear(Writer *self)
{
    Py_CLEAR(self->session);
    Py_CLEAR(self->protect);
    Py_CLEAR(self->datagrams);
    Py_CLEAR(self->sendto);
    Py_CLEAR(self->get_write_buffer_size);
    Py_CLEAR(self->address);
    self->srtp = NULL;
    if (self->fd >= 0) {
        close(self->fd);
        self->fd = -1;
    }
    self->queued = 0;
}

static void
history_clear(Writer *self)
{
    for (int i = 0; i < HISTORY_SIZE; i++)
        Py_CLEAR(self->history[i].payloads);
}

static int
Writer_traverse(Writer *self, visitproc visit, void *arg)
{
    Py_VISIT(self->session);
    Py_VISIT(self->protect);
    Py_VISIT(self->datagrams);
    Py_VISIT(self->sendto);
    Py_VISIT(self->get_write_buffer_size);
    Py_VISIT(self->address);
    for (int i = 0; i < HISTORY_SIZE; i++)
        Py_VISIT(self->history[i].payloads);
    return 0;
}

static int
Writer_clear(Writer *self)
{
    route_clear(self);
    history_clear(self);
    return 0;
}

static void
Writer_dealloc(Writer *self)
{
    PyObject_GC_UnTrack(self);
    Writer_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
Writer_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    Writer *self = (Writer *)type->tp_alloc(type, 0);
    if (self != NULL) {
        self->fd = -1;
        self->cname_len = -1;
    }
    return (PyObject *)self;
}

static int
copy_block(PyObject *value, unsigned char *into, int *length, const char *name)
{
    char *data;
    Py_ssize_t size;
    if (PyBytes_AsStringAndSize(value, &data, &size) < 0)
        return -1;
    if (size > MAX_EXTENSIONS) {
        PyErr_Format(PyExc_ValueError, "%s: extension block too long", name);
        return -1;
    }
    memcpy(into, data, size);
    *length = (int)size;
    return 0;
}

static int
Writer_init(Writer *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"ssrc", "payload_type", "rtx_ssrc", "rtx_payload_type",
                             "sequence_number", "rtx_sequence_number", "timestamp_origin",
                             "before", "after", NULL};
    unsigned long ssrc, rtx_ssrc, origin;
    int payload_type, sequence_number, rtx_sequence_number;
    PyObject *rtx_payload_type, *before, *after;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "$kikOiikSO", kwlist, &ssrc, &payload_type,
                                     &rtx_ssrc, &rtx_payload_type, &sequence_number,
                                     &rtx_sequence_number, &origin, &before, &after))
        return -1;
    self->ssrc = (uint32_t)ssrc;
    self->rtx_ssrc = (uint32_t)rtx_ssrc;
    self->timestamp_origin = (uint32_t)origin;
    self->payload_type = payload_type & 0x7F;
    if (rtx_payload_type == Py_None) {
        self->rtx_payload_type = -1;
    } else {
        long value = PyLong_AsLong(rtx_payload_type);
        if (value == -1 && PyErr_Occurred())
            return -1;
        self->rtx_payload_type = (int)(value & 0x7F);
    }
    self->sequence_number = (uint16_t)sequence_number;
    self->rtx_sequence_number = (uint16_t)rtx_sequence_number;
    if (copy_block(before, self->before, &self->before_len, "before") < 0)
        return -1;
    if (after == Py_None) {
        self->has_send_time = 0;
        self->after_len = 0;
    } else {
        if (copy_block(after, self->after, &self->after_len, "after") < 0)
            return -1;
        self->has_send_time = 1;
    }
    if (self->before_len + 3 + self->after_len > MAX_EXTENSIONS) {
        PyErr_SetString(PyExc_ValueError, "extension block too long");
        return -1;
    }
    /* version 2, and the X bit when there is an extension block */
    self->first_byte = self->before_len ? 0x90 : 0x80;
    return 0;
}

/* set_route(session, srtp, datagrams, address, fd): send through `session` (its srtp_t when
 * `srtp` is a non-zero address, else its protect()) to `address` over `fd` when >= 0 (dup'd
 * here), else through `datagrams.sendto`. */
static PyObject *
Writer_set_route(Writer *self, PyObject *args)
{
    PyObject *session, *datagrams, *address;
    unsigned long long srtp;
    int fd;
    if (!PyArg_ParseTuple(args, "OKOO!i", &session, &srtp, &datagrams, &PyTuple_Type, &address,
                          &fd))
        return NULL;
    if (srtp != 0 && srtp_protect_ptr == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "set_srtp_protect() was not called");
        return NULL;
    }
    PyObject *protect = srtp ? NULL : PyObject_GetAttrString(session, "protect");
    if (!srtp && protect == NULL)
        return NULL;
    PyObject *sendto = PyObject_GetAttrString(datagrams, "sendto");
    if (sendto == NULL) {
        Py_XDECREF(protect);
        return NULL;
    }
    PyObject *buffer_size = PyObject_GetAttrString(datagrams, "get_write_buffer_size");
    if (buffer_size == NULL)
        PyErr_Clear(); /* a transport without a buffer to drain */

    struct sockaddr_storage sockaddr;
    socklen_t sockaddr_len = 0;
    memset(&sockaddr, 0, sizeof(sockaddr));
    if (fd >= 0) {
        const char *host;
        int port;
        PyObject *host_obj = PyTuple_GetItem(address, 0);
        PyObject *port_obj = PyTuple_GetItem(address, 1);
        host = host_obj && PyUnicode_Check(host_obj) ? PyUnicode_AsUTF8(host_obj) : NULL;
        port = port_obj ? (int)PyLong_AsLong(port_obj) : -1;
        if (PyErr_Occurred())
            PyErr_Clear();
        struct sockaddr_in *v4 = (struct sockaddr_in *)&sockaddr;
        struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&sockaddr;
        if (host && port >= 0 && port <= 65535 && inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
            v4->sin_family = AF_INET;
            v4->sin_port = htons((uint16_t)port);
            sockaddr_len = sizeof(*v4);
        } else if (host && port >= 0 && port <= 65535 &&
                   inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
            v6->sin6_family = AF_INET6;
            v6->sin6_port = htons((uint16_t)port);
            sockaddr_len = sizeof(*v6);
        } else {
            fd = -1; /* not a numeric address: the transport's sendto resolves it */
        }
    }
    int own_fd = -1;
    if (fd >= 0) {
        own_fd = dup(fd);
        if (own_fd < 0) {
            Py_XDECREF(protect);
            Py_DECREF(sendto);
            Py_XDECREF(buffer_size);
            return PyErr_SetFromErrno(PyExc_OSError);
        }
    }
    route_clear(self);
    Py_INCREF(session);
    self->session = session;
    self->protect = protect;
    self->srtp = (void *)(uintptr_t)srtp;
    Py_INCREF(datagrams);
    self->datagrams = datagrams;
    self->sendto = sendto;
    self->get_write_buffer_size = buffer_size;
    Py_INCREF(address);
    self->address = address;
    self->fd = own_fd;
    self->sockaddr = sockaddr;
    self->sockaddr_len = sockaddr_len;
    Py_RETURN_NONE;
}

static PyObject *
Writer_clear_route(Writer *self, PyObject *unused)
{
    route_clear(self);
    Py_RETURN_NONE;
}

static void
put16(unsigned char *p, uint16_t v)
{
    p[0] = v >> 8;
    p[1] = v & 0xFF;
}

static void
put32(unsigned char *p, uint32_t v)
{
    p[0] = v >> 24;
    p[1] = (v >> 16) & 0xFF;
    p[2] = (v >> 8) & 0xFF;
    p[3] = v & 0xFF;
}

/* The header extension block for a frame sent at `ntp_time`, into `into`; its length. */
static int
write_extensions(Writer *self, uint64_t ntp_time, unsigned char *into)
{
    int n = self->before_len;
    memcpy(into, self->before, n);
    if (self->has_send_time) {
        uint32_t send_time = (uint32_t)((ntp_time >> 14) & 0xFFFFFF);
        into[n++] = send_time >> 16;
        into[n++] = (send_time >> 8) & 0xFF;
        into[n++] = send_time & 0xFF;
        memcpy(into + n, self->after, self->after_len);
        n += self->after_len;
    }
    return n;
}

/* Copy a packet a Python protect returned (a new reference, or NULL with an exception) back
 * into its slot: 0, or -1 with an exception set. */
static int
take_protected(PyObject *protected, unsigned char *slot, int *length)
{
    if (protected == NULL)
        return -1;
    char *data;
    Py_ssize_t size;
    if (PyBytes_AsStringAndSize(protected, &data, &size) < 0) {
        Py_DECREF(protected);
        return -1;
    }
    if (size > SLOT_SIZE) {
        Py_DECREF(protected);
        PyErr_SetString(PyExc_ValueError, "protected packet too long");
        return -1;
    }
    memcpy(slot, data, size);
    *length = (int)size;
    Py_DECREF(protected);
    return 0;
}

/* Protect the packet in `slot` in place; 0 on success. With an exception set on failure. */
static int
protect_slot(Writer *self, unsigned char *slot, int *length)
{
    if (self->srtp != NULL) {
        int status = srtp_protect_ptr(self->srtp, slot, length);
        if (status != 0) {
            PyErr_Format(srtp_error ? srtp_error : PyExc_RuntimeError, "srtp_protect failed: %d",
                         status);
            return -1;
        }
        return 0;
    }
    PyObject *clear = PyBytes_FromStringAndSize((char *)slot, *length);
    if (clear == NULL)
        return -1;
    PyObject *protected = PyObject_CallOneArg(self->protect, clear);
    Py_DECREF(clear);
    return take_protected(protected, slot, length);
}

/* Report an exception raised while sending and go on: a datagram is lost, like on the wire. */
static void
report_send_error(void)
{
    if (PyErr_ExceptionMatches(PyExc_OSError))
        PyErr_Clear();
    else
        PyErr_WriteUnraisable(NULL);
}

/* Hand one protected packet to the transport's Python sendto. */
static void
sendto_python(Writer *self, unsigned char *slot, int length)
{
    PyObject *data = PyBytes_FromStringAndSize((char *)slot, length);
    if (data == NULL) {
        report_send_error();
        return;
    }
    PyObject *result = PyObject_CallFunctionObjArgs(self->sendto, data, self->address, NULL);
    Py_DECREF(data);
    if (result == NULL)
        report_send_error();
    else
        Py_DECREF(result);
}

/* Whether packets must still go through the transport's queue (it has not drained yet). */
static int
still_queued(Writer *self)
{
    if (!self->queued)
        return 0;
    if (self->get_write_buffer_size == NULL)
        return 1;
    PyObject *size = PyObject_CallNoArgs(self->get_write_buffer_size);
    if (size == NULL) {
        PyErr_Clear();
        return 1;
    }
    long value = PyLong_AsLong(size);
    Py_DECREF(size);
    if (value == -1 && PyErr_Occurred()) {
        PyErr_Clear();
        return 1;
    }
    if (value == 0)
        self->queued = 0;
    return self->queued;
}

/* Send slots [0, count) in order. */
static void
flush(Writer *self, int count)
{
    int start = 0;
    if (self->fd >= 0 && !self->queued) {
        struct mmsghdr messages[BATCH];
        struct iovec vectors[BATCH];
        memset(messages, 0, sizeof(struct mmsghdr) * count);
        for (int i = 0; i < count; i++) {
            vectors[i].iov_base = slots[i];
            vectors[i].iov_len = slot_lengths[i];
            messages[i].msg_hdr.msg_name = &self->sockaddr;
            messages[i].msg_hdr.msg_namelen = self->sockaddr_len;
            messages[i].msg_hdr.msg_iov = &vectors[i];
            messages[i].msg_hdr.msg_iovlen = 1;
        }
        while (start < count) {
            int sent = sendmmsg(self->fd, messages + start, count - start, MSG_DONTWAIT);
            if (sent > 0) {
                start += sent;
                continue;
            }
            if (sent < 0 && errno == EINTR)
                continue;
            if (sent < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != ENOBUFS) {
                start += 1; /* this datagram is refused (e.g. unreachable): lost, go on */
                continue;
            }
            break; /* the socket's buffer is full: the transport queues the rest */
        }
        if (start == count)
            return;
        self->queued = 1;
    }
    for (int i = start; i < count; i++)
        sendto_python(self, slots[i], slot_lengths[i]);
    if (self->fd >= 0)
        self->queued = 1;
}

static void
meter_add(Writer *self, long long octets, double now)
{
    long long second = (long long)now;
    if (second != self->meter_second) {
        self->bitrate = second == self->meter_second + 1 ? self->meter_octets * 8 : 0;
        self->meter_second = second;
        self->meter_octets = 0;
    }
    self->meter_octets += octets;
}

/* One frame's packets of one writer: payload pointers prepared by the caller. Returns 0, or -1
 * with an exception set (nothing sent for a frame that cannot be written). */
static int
writer_send(Writer *self, PyObject *payloads, char **data, Py_ssize_t *sizes, Py_ssize_t count,
            uint32_t timestamp, uint64_t ntp_time, double now)
{
    unsigned char extensions[MAX_EXTENSIONS];
    int extensions_len = write_extensions(self, ntp_time, extensions);
    uint32_t stream_timestamp = self->timestamp_origin + timestamp;
    uint16_t sequence_number = self->sequence_number;
    uint16_t first = sequence_number;
    long long wire = 0, octets = 0;
    Py_ssize_t done = 0;
    int batched = 0;
    int failed = 0;

    still_queued(self);
    for (Py_ssize_t i = 0; i < count; i++) {
        Py_ssize_t length = 12 + extensions_len + sizes[i];
        if (length > SLOT_SIZE - SRTP_MAX_TRAILER_LEN) {
            PyErr_SetString(PyExc_ValueError, "packet is too long");
            failed = 1;
            break;
        }
        unsigned char *p = slots[batched];
        p[0] = self->first_byte;
        p[1] = (i == count - 1 ? MARKER : 0) | self->payload_type;
        put16(p + 2, sequence_number);
        put32(p + 4, stream_timestamp);
        put32(p + 8, self->ssrc);
        memcpy(p + 12, extensions, extensions_len);
        memcpy(p + 12 + extensions_len, data[i], sizes[i]);
        int protected_len = (int)length;
        if (protect_slot(self, p, &protected_len) < 0) {
            failed = 1;
            break;
        }
        slot_lengths[batched++] = protected_len;
        wire += protected_len;
        octets += sizes[i];
        sequence_number++;
        done++;
        if (batched == BATCH) {
            flush(self, batched);
            batched = 0;
        }
    }
    if (batched)
        flush(self, batched);
    if (failed) {
        /* as rtp_send did: logged, the rest of this frame is not sent */
        if (PyErr_ExceptionMatches(PyExc_ValueError) ||
            (srtp_error && PyErr_ExceptionMatches(srtp_error)) ||
            PyErr_ExceptionMatches(PyExc_OSError))
            PyErr_Clear();
        else
            PyErr_WriteUnraisable(NULL);
    }
    if (done) {
        FrameRecord *record = &self->history[self->history_next];
        Py_INCREF(payloads);
        Py_XSETREF(record->payloads, payloads);
        record->ntp_time = ntp_time;
        record->timestamp = stream_timestamp;
        record->first = first;
        record->count = (uint16_t)done;
        record->total = (uint16_t)count;
        self->history_next = (self->history_next + 1) % HISTORY_SIZE;
        self->sent_any = 1;
    }
    self->sequence_number = sequence_number;
    self->packets += done;
    self->octets += octets;
    self->wire_packets += done;
    self->wire_octets += wire;
    self->last_wire_octets = wire;
    self->rtp_timestamp = stream_timestamp;
    self->ntp_timestamp = ntp_time;
    meter_add(self, wire, now);
    return 0;
}

/* The payloads of a frame as pointers and sizes (borrowed from the list's bytes). */
typedef struct {
    char *data[1024];
    Py_ssize_t sizes[1024];
    Py_ssize_t count;
} Frame;

static int
frame_parse(PyObject *payloads, Frame *frame)
{
    if (!PyList_Check(payloads)) {
        PyErr_SetString(PyExc_TypeError, "payloads must be a list of bytes");
        return -1;
    }
    Py_ssize_t count = PyList_GET_SIZE(payloads);
    if (count > 1024) {
        PyErr_SetString(PyExc_ValueError, "too many packets in one frame");
        return -1;
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *item = PyList_GET_ITEM(payloads, i);
        if (!PyBytes_Check(item)) {
            PyErr_SetString(PyExc_TypeError, "payloads must be a list of bytes");
            return -1;
        }
        frame->data[i] = PyBytes_AS_STRING(item);
        frame->sizes[i] = PyBytes_GET_SIZE(item);
    }
    frame->count = count;
    return 0;
}

static int
parse_send_args(PyObject *const *args, Py_ssize_t nargs, PyObject **payloads,
                uint32_t *timestamp, uint64_t *ntp_time, double *now)
{
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "send(payloads, timestamp, ntp_time, now)");
        return -1;
    }
    *payloads = args[0];
    unsigned long long ts = PyLong_AsUnsignedLongLongMask(args[1]);
    if (ts == (unsigned long long)-1 && PyErr_Occurred())
        return -1;
    unsigned long long ntp = PyLong_AsUnsignedLongLongMask(args[2]);
    if (ntp == (unsigned long long)-1 && PyErr_Occurred())
        return -1;
    double value = PyFloat_AsDouble(args[3]);
    if (value == -1.0 && PyErr_Occurred())
        return -1;
    *timestamp = (uint32_t)ts;
    *ntp_time = (uint64_t)ntp;
    *now = value;
    return 0;
}

static Frame the_frame; /* payload pointers of the frame being sent (under `busy`) */

/* send(payloads, timestamp, ntp_time, now) -> bool: whether it was sent (a route is set). */
static PyObject *
Writer_send(Writer *self, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *payloads;
    uint32_t timestamp;
    uint64_t ntp_time;
    double now;
    if (parse_send_args(args, nargs, &payloads, &timestamp, &ntp_time, &now) < 0)
        return NULL;
    if (self->sendto == NULL)
        Py_RETURN_FALSE;
    if (busy) {
        PyErr_SetString(PyExc_RuntimeError, "fan-out send re-entered");
        return NULL;
    }
    busy = 1;
    int status = frame_parse(payloads, &the_frame);
    if (status == 0 && the_frame.count)
        status = writer_send(self, payloads, the_frame.data, the_frame.sizes, the_frame.count,
                             timestamp, ntp_time, now);
    busy = 0;
    if (status < 0)
        return NULL;
    Py_RETURN_TRUE;
}

/* retransmit(sequence_number) -> int: the wire octets of the packet resent (as RTX when
 * negotiated), or 0 when it is no longer kept (or there is no route). */
static PyObject *
Writer_retransmit(Writer *self, PyObject *arg)
{
    long wanted = PyLong_AsLong(arg);
    if (wanted == -1 && PyErr_Occurred())
        return NULL;
    uint16_t sequence_number = (uint16_t)wanted;
    if (!self->sent_any || self->sendto == NULL)
        return PyLong_FromLong(0);
    uint16_t newest = (uint16_t)(self->sequence_number - 1);
    if ((uint16_t)(newest - sequence_number) >= HISTORY_SIZE)
        return PyLong_FromLong(0);
    FrameRecord *record = NULL;
    for (int back = 1; back <= HISTORY_SIZE; back++) {
        FrameRecord *r = &self->history[(self->history_next - back + HISTORY_SIZE) % HISTORY_SIZE];
        if (r->payloads == NULL)
            break;
        if ((uint16_t)(sequence_number - r->first) < r->count) {
            record = r;
            break;
        }
    }
    if (record == NULL)
        return PyLong_FromLong(0);
    Py_ssize_t index = (uint16_t)(sequence_number - record->first);
    if (!PyList_Check(record->payloads) || index >= PyList_GET_SIZE(record->payloads))
        return PyLong_FromLong(0);
    PyObject *payload = PyList_GET_ITEM(record->payloads, index);
    if (!PyBytes_Check(payload))
        return PyLong_FromLong(0);
    if (busy) {
        PyErr_SetString(PyExc_RuntimeError, "fan-out send re-entered");
        return NULL;
    }
    unsigned char extensions[MAX_EXTENSIONS];
    int extensions_len = write_extensions(self, record->ntp_time, extensions);
    int rtx = self->rtx_payload_type >= 0;
    Py_ssize_t size = PyBytes_GET_SIZE(payload);
    Py_ssize_t length = 12 + extensions_len + (rtx ? 2 : 0) + size;
    if (length > SLOT_SIZE - SRTP_MAX_TRAILER_LEN)
        return PyLong_FromLong(0);
    busy = 1;
    unsigned char *p = slots[0];
    int marker = index == record->total - 1 ? MARKER : 0;
    p[0] = self->first_byte;
    p[1] = marker | (rtx ? self->rtx_payload_type : self->payload_type);
    put16(p + 2, rtx ? self->rtx_sequence_number : sequence_number);
    put32(p + 4, record->timestamp);
    put32(p + 8, rtx ? self->rtx_ssrc : self->ssrc);
    memcpy(p + 12, extensions, extensions_len);
    unsigned char *q = p + 12 + extensions_len;
    if (rtx) {
        /* RFC 4588: the original sequence number before the original payload */
        put16(q, sequence_number);
        q += 2;
    }
    memcpy(q, PyBytes_AS_STRING(payload), size);
    int protected_len = (int)length;
    if (protect_slot(self, p, &protected_len) < 0) {
        busy = 0;
        if ((srtp_error && PyErr_ExceptionMatches(srtp_error)) ||
            PyErr_ExceptionMatches(PyExc_ValueError)) {
            PyErr_Clear();
            return PyLong_FromLong(0);
        }
        return NULL;
    }
    if (rtx)
        self->rtx_sequence_number++;
    still_queued(self);
    slot_lengths[0] = protected_len;
    flush(self, 1);
    busy = 0;
    self->wire_packets += 1;
    self->wire_octets += protected_len;
    self->last_wire_octets = protected_len;
    return PyLong_FromLong(protected_len);
}

/* current(now) -> int: bits per second sent over the last complete second. */
static PyObject *
Writer_current(Writer *self, PyObject *arg)
{
    double now = PyFloat_AsDouble(arg);
    if (now == -1.0 && PyErr_Occurred())
        return NULL;
    long long second = (long long)now;
    return PyLong_FromLongLong(second <= self->meter_second + 1 ? self->bitrate : 0);
}

/* -- sender reports --------------------------------------------------------------------------- */

/* The compound RTCP packet aiortc's RTCRtpSender._run_rtcp sends (aiortc 1.16.0, rtp.py's
 * RtcpSrPacket and RtcpSdesPacket serialization): a sender report without report blocks
 * carrying the last packet's NTP and RTP timestamps and the packet and octet counts, then, with
 * a CNAME, an SDES chunk of that one item, two zero octets and padding to 32 bits. Its length. */
static int
write_report(Writer *self, unsigned char *p)
{
    p[0] = 0x80; /* version 2, no padding, no report blocks */
    p[1] = RTCP_SR;
    put16(p + 2, 6); /* length in 32-bit words, minus one */
    put32(p + 4, self->ssrc);
    put32(p + 8, (uint32_t)(self->ntp_timestamp >> 32));
    put32(p + 12, (uint32_t)self->ntp_timestamp);
    put32(p + 16, self->rtp_timestamp);
    put32(p + 20, (uint32_t)self->packets);
    put32(p + 24, (uint32_t)self->octets);
    int n = 28;
    if (self->cname_len < 0)
        return n;
    int payload = (4 + 2 + self->cname_len + 2 + 3) & ~3;
    unsigned char *q = p + n;
    memset(q, 0, 4 + payload);
    q[0] = 0x81; /* version 2, one chunk */
    q[1] = RTCP_SDES;
    put16(q + 2, (uint16_t)(payload / 4));
    put32(q + 4, self->ssrc);
    q[8] = SDES_CNAME;
    q[9] = (unsigned char)self->cname_len;
    memcpy(q + 10, self->cname, self->cname_len);
    return n + 4 + payload;
}

/* Protect the RTCP packet in `slot` in place; 0 on success, -1 with an exception set. */
static int
protect_report(Writer *self, unsigned char *slot, int *length)
{
    if (self->srtp != NULL && srtp_protect_rtcp_ptr != NULL) {
        int status = srtp_protect_rtcp_ptr(self->srtp, slot, length);
        if (status != 0) {
            PyErr_Format(srtp_error ? srtp_error : PyExc_RuntimeError,
                         "srtp_protect_rtcp failed: %d", status);
            return -1;
        }
        return 0;
    }
    PyObject *protected =
        PyObject_CallMethod(self->session, "protect_rtcp", "y#", (char *)slot, (Py_ssize_t)*length);
    return take_protected(protected, slot, length);
}

/* Send this writer's sender report now (the caller holds `busy`): the octets put on the wire,
 * 0 when it does not report or has no route, -1 with an exception set. A failed protection is
 * logged by the caller's rules: the report is lost, as aiortc's would be. */
static long long
writer_report(Writer *self, double now)
{
    if (!self->reporting || self->sendto == NULL)
        return 0;
    int length = write_report(self, slots[0]);
    if (protect_report(self, slots[0], &length) < 0) {
        if (PyErr_ExceptionMatches(PyExc_ValueError) ||
            PyErr_ExceptionMatches(PyExc_AttributeError) || /* a session without RTCP */
            (srtp_error && PyErr_ExceptionMatches(srtp_error))) {
            PyErr_Clear();
            return 0;
        }
        return -1;
    }
    still_queued(self);
    slot_lengths[0] = length;
    flush(self, 1);
    self->report_ntp = self->ntp_timestamp;
    self->report_time = now;
    self->rtcp_packets += 1;
    self->rtcp_octets += length;
    return length;
}

/* set_reports(cname): the group sends this stream's sender reports from now on, with an SDES
 * chunk for `cname` (bytes, at most 255) or none (None). */
static PyObject *
Writer_set_reports(Writer *self, PyObject *cname)
{
    if (cname == Py_None) {
        self->cname_len = -1;
    } else {
        char *data;
        Py_ssize_t size;
        if (PyBytes_AsStringAndSize(cname, &data, &size) < 0)
            return NULL;
        if (size > MAX_CNAME) {
            PyErr_SetString(PyExc_ValueError, "CNAME too long for an SDES item");
            return NULL;
        }
        memcpy(self->cname, data, size);
        self->cname_len = (int)size;
    }
    self->reporting = 1;
    Py_RETURN_NONE;
}

static PyObject *
Writer_stop_reports(Writer *self, PyObject *unused)
{
    self->reporting = 0;
    Py_RETURN_NONE;
}

/* send_report(now) -> int: send the sender report now (see writer_report). */
static PyObject *
Writer_send_report(Writer *self, PyObject *arg)
{
    double now = PyFloat_AsDouble(arg);
    if (now == -1.0 && PyErr_Occurred())
        return NULL;
    if (busy) {
        PyErr_SetString(PyExc_RuntimeError, "fan-out send re-entered");
        return NULL;
    }
    busy = 1;
    long long sent = writer_report(self, now);
    busy = 0;
    if (sent < 0)
        return NULL;
    return PyLong_FromLongLong(sent);
}

/* report(): the clear compound packet the next sender report would carry. */
static PyObject *
Writer_report(Writer *self, PyObject *unused)
{
    unsigned char packet[28 + 4 + 4 + 2 + MAX_CNAME + 2 + 3];
    int length = write_report(self, packet);
    return PyBytes_FromStringAndSize((char *)packet, length);
}

static PyObject *
Writer_get_reporting(Writer *self, void *closure)
{
    return PyBool_FromLong(self->reporting);
}

static PyObject *
Writer_get_native(Writer *self, void *closure)
{
    return PyBool_FromLong(self->fd >= 0 && self->srtp != NULL);
}

static PyObject *
Writer_get_routed(Writer *self, void *closure)
{
    return PyBool_FromLong(self->sendto != NULL);
}

static PyObject *
Writer_get_rtx_payload_type(Writer *self, void *closure)
{
    if (self->rtx_payload_type < 0)
        Py_RETURN_NONE;
    return PyLong_FromLong(self->rtx_payload_type);
}

#define U16_PROPERTY(field)                                                                 \
    static PyObject *Writer_get_##field(Writer *self, void *closure)                       \
    {                                                                                       \
        return PyLong_FromLong(self->field);                                                \
    }                                                                                       \
    static int Writer_set_##field(Writer *self, PyObject *value, void *closure)            \
    {                                                                                       \
        if (value == NULL) {                                                                \
            PyErr_SetString(PyExc_AttributeError, "cannot delete " #field);                 \
            return -1;                                                                      \
        }                                                                                   \
        long v = PyLong_AsLong(value);                                                      \
        if (v == -1 && PyErr_Occurred())                                                    \
            return -1;                                                                      \
        self->field = (uint16_t)v;                                                          \
        return 0;                                                                           \
    }

U16_PROPERTY(sequence_number)
U16_PROPERTY(rtx_sequence_number)

static PyObject *
Writer_get_extensions(Writer *self, void *closure)
{
    /* (before, after|None), as extension_block() gave them */
    PyObject *before = PyBytes_FromStringAndSize((char *)self->before, self->before_len);
    if (before == NULL)
        return NULL;
    if (!self->has_send_time)
        return Py_BuildValue("(NO)", before, Py_None);
    return Py_BuildValue("(Ny#)", before, (char *)self->after, (Py_ssize_t)self->after_len);
}

static PyGetSetDef Writer_getset[] = {
    {"native", (getter)Writer_get_native, NULL, "whether sends go straight to a socket", NULL},
    {"routed", (getter)Writer_get_routed, NULL, "whether a route is set", NULL},
    {"rtx_payload_type", (getter)Writer_get_rtx_payload_type, NULL, NULL, NULL},
    {"sequence_number", (getter)Writer_get_sequence_number, (setter)Writer_set_sequence_number,
     "the next packet's sequence number", NULL},
    {"rtx_sequence_number", (getter)Writer_get_rtx_sequence_number,
     (setter)Writer_set_rtx_sequence_number, NULL, NULL},
    {"extensions", (getter)Writer_get_extensions, NULL, NULL, NULL},
    {"reporting", (getter)Writer_get_reporting, NULL, "whether the group sends its reports", NULL},
    {NULL},
};

static PyMemberDef Writer_members[] = {
    {"ssrc", T_UINT, offsetof(Writer, ssrc), READONLY, NULL},
    {"rtx_ssrc", T_UINT, offsetof(Writer, rtx_ssrc), READONLY, NULL},
    {"payload_type", T_INT, offsetof(Writer, payload_type), READONLY, NULL},
    {"timestamp_origin", T_UINT, offsetof(Writer, timestamp_origin), READONLY, NULL},
    {"packets", T_ULONGLONG, offsetof(Writer, packets), READONLY, "RTP packets sent"},
    {"octets", T_ULONGLONG, offsetof(Writer, octets), READONLY, "RTP payload octets sent"},
    {"wire_packets", T_ULONGLONG, offsetof(Writer, wire_packets), READONLY,
     "datagrams sent, retransmissions included"},
    {"wire_octets", T_ULONGLONG, offsetof(Writer, wire_octets), READONLY,
     "octets sent, SRTP and retransmissions included"},
    {"last_wire_octets", T_LONGLONG, offsetof(Writer, last_wire_octets), READONLY,
     "octets the last send() or retransmit() put on the wire"},
    {"rtp_timestamp", T_UINT, offsetof(Writer, rtp_timestamp), READONLY, NULL},
    {"ntp_timestamp", T_ULONGLONG, offsetof(Writer, ntp_timestamp), READONLY, NULL},
    {"report_ntp", T_ULONGLONG, offsetof(Writer, report_ntp), READONLY,
     "the NTP timestamp of the last sender report sent"},
    {"report_time", T_DOUBLE, offsetof(Writer, report_time), READONLY,
     "when the last sender report was sent (time.time(); 0.0: never)"},
    {"rtcp_packets", T_ULONGLONG, offsetof(Writer, rtcp_packets), READONLY,
     "sender reports sent"},
    {"rtcp_octets", T_ULONGLONG, offsetof(Writer, rtcp_octets), READONLY,
     "octets of sender reports sent, SRTCP included"},
    {NULL},
};

static PyMethodDef Writer_methods[] = {
    {"set_route", (PyCFunction)Writer_set_route, METH_VARARGS, NULL},
    {"clear_route", (PyCFunction)Writer_clear_route, METH_NOARGS, NULL},
    {"send", (PyCFunction)(void (*)(void))Writer_send, METH_FASTCALL, NULL},
    {"retransmit", (PyCFunction)Writer_retransmit, METH_O, NULL},
    {"current", (PyCFunction)Writer_current, METH_O, NULL},
    {"set_reports", (PyCFunction)Writer_set_reports, METH_O, NULL},
    {"stop_reports", (PyCFunction)Writer_stop_reports, METH_NOARGS, NULL},
    {"send_report", (PyCFunction)Writer_send_report, METH_O, NULL},
    {"report", (PyCFunction)Writer_report, METH_NOARGS, NULL},
    {NULL},
};

static PyTypeObject WriterType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "mediaserver._fanout.Writer",
    .tp_doc = "One subscriber's outgoing RTP stream of one kind.",
    .tp_basicsize = sizeof(Writer),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = Writer_new,
    .tp_init = (initproc)Writer_init,
    .tp_dealloc = (destructor)Writer_dealloc,
    .tp_traverse = (traverseproc)Writer_traverse,
    .tp_clear = (inquiry)Writer_clear,
    .tp_methods = Writer_methods,
    .tp_members = Writer_members,
    .tp_getset = Writer_getset,
};

/* -- Group ------------------------------------------------------------------------------------ */

typedef struct {
    PyObject_HEAD
    PyObject *writers; /* list of Writer */
} Group;

static int
Group_traverse(Group *self, visitproc visit, void *arg)
{
    Py_VISIT(self->writers);
    return 0;
}

static int
Group_clear(Group *self)
{
    Py_CLEAR(self->writers);
    return 0;
}

static void
Group_dealloc(Group *self)
{
    PyObject_GC_UnTrack(self);
    Group_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
Group_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    if (PyTuple_GET_SIZE(args) || (kwds && PyDict_GET_SIZE(kwds))) {
        PyErr_SetString(PyExc_TypeError, "Group() takes no arguments");
        return NULL;
    }
    Group *self = (Group *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->writers = PyList_New(0);
    if (self->writers == NULL) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static PyObject *
Group_add(Group *self, PyObject *writer)
{
    if (!PyObject_TypeCheck(writer, &WriterType)) {
        PyErr_SetString(PyExc_TypeError, "a Writer");
        return NULL;
    }
    int present = PySequence_Contains(self->writers, writer);
    if (present < 0 || (!present && PyList_Append(self->writers, writer) < 0))
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *
Group_remove(Group *self, PyObject *writer)
{
    Py_ssize_t n = PyList_GET_SIZE(self->writers);
    for (Py_ssize_t i = 0; i < n; i++) {
        if (PyList_GET_ITEM(self->writers, i) == writer) {
            if (PySequence_DelItem(self->writers, i) < 0)
                return NULL;
            break;
        }
    }
    Py_RETURN_NONE;
}

/* send(payloads, timestamp, ntp_time, now): one frame to every writer of the group (each
 * must have a route). */
static PyObject *
Group_send(Group *self, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *payloads;
    uint32_t timestamp;
    uint64_t ntp_time;
    double now;
    if (parse_send_args(args, nargs, &payloads, &timestamp, &ntp_time, &now) < 0)
        return NULL;
    if (busy) {
        PyErr_SetString(PyExc_RuntimeError, "fan-out send re-entered");
        return NULL;
    }
    busy = 1;
    if (frame_parse(payloads, &the_frame) < 0) {
        busy = 0;
        return NULL;
    }
    if (the_frame.count) {
        /* a list of our own: a Python sendto may not change the group under us */
        PyObject *writers = PyList_GetSlice(self->writers, 0, PyList_GET_SIZE(self->writers));
        if (writers == NULL) {
            busy = 0;
            return NULL;
        }
        Py_ssize_t n = PyList_GET_SIZE(writers);
        for (Py_ssize_t i = 0; i < n; i++) {
            Writer *writer = (Writer *)PyList_GET_ITEM(writers, i);
            if (writer->sendto == NULL)
                continue;
            writer_send(writer, payloads, the_frame.data, the_frame.sizes, the_frame.count,
                        timestamp, ntp_time, now);
        }
        Py_DECREF(writers);
    }
    busy = 0;
    Py_RETURN_NONE;
}

/* send_reports(now) -> int: the sender report of every reporting writer of the group (see
 * writer_report), `now` being time.time(); how many were sent. */
static PyObject *
Group_send_reports(Group *self, PyObject *arg)
{
    double now = PyFloat_AsDouble(arg);
    if (now == -1.0 && PyErr_Occurred())
        return NULL;
    if (busy) {
        PyErr_SetString(PyExc_RuntimeError, "fan-out send re-entered");
        return NULL;
    }
    PyObject *writers = PyList_GetSlice(self->writers, 0, PyList_GET_SIZE(self->writers));
    if (writers == NULL)
        return NULL;
    busy = 1;
    long sent = 0;
    Py_ssize_t n = PyList_GET_SIZE(writers);
    for (Py_ssize_t i = 0; i < n; i++) {
        long long octets = writer_report((Writer *)PyList_GET_ITEM(writers, i), now);
        if (octets < 0)
            PyErr_WriteUnraisable(NULL); /* not expected; the others still get theirs */
        else if (octets > 0)
            sent++;
    }
    busy = 0;
    Py_DECREF(writers);
    return PyLong_FromLong(sent);
}

static Py_ssize_t
Group_len(Group *self)
{
    return PyList_GET_SIZE(self->writers);
}

static PyObject *
Group_get_writers(Group *self, void *closure)
{
    return PyList_AsTuple(self->writers);
}

static PyMethodDef Group_methods[] = {
    {"add", (PyCFunction)Group_add, METH_O, NULL},
    {"remove", (PyCFunction)Group_remove, METH_O, NULL},
    {"send", (PyCFunction)(void (*)(void))Group_send, METH_FASTCALL, NULL},
    {"send_reports", (PyCFunction)Group_send_reports, METH_O, NULL},
    {NULL},
};

static PyGetSetDef Group_getset[] = {
    {"writers", (getter)Group_get_writers, NULL, NULL, NULL},
    {NULL},
};

static PySequenceMethods Group_as_sequence = {
    .sq_length = (lenfunc)Group_len,
};

static PyTypeObject GroupType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "mediaserver._fanout.Group",
    .tp_doc = "The writers one hub's frames go to, sent in one call per frame.",
    .tp_basicsize = sizeof(Group),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = Group_new,
    .tp_dealloc = (destructor)Group_dealloc,
    .tp_traverse = (traverseproc)Group_traverse,
    .tp_clear = (inquiry)Group_clear,
    .tp_methods = Group_methods,
    .tp_getset = Group_getset,
    .tp_as_sequence = &Group_as_sequence,
};

/* set_srtp_protect(address, error): libsrtp's srtp_protect as pylibsrtp bundles it, and the
 * exception a failed protection raises (pylibsrtp.Error). */
static PyObject *
set_srtp_protect(PyObject *module, PyObject *args)
{
    unsigned long long address;
    PyObject *error;
    if (!PyArg_ParseTuple(args, "KO", &address, &error))
        return NULL;
    if (address == 0) {
        PyErr_SetString(PyExc_ValueError, "a null srtp_protect");
        return NULL;
    }
    srtp_protect_ptr = (srtp_protect_fn)(uintptr_t)address;
    Py_INCREF(error);
    Py_XSETREF(srtp_error, error);
    Py_RETURN_NONE;
}

/* set_srtp_protect_rtcp(address): libsrtp's srtp_protect_rtcp as pylibsrtp bundles it. */
static PyObject *
set_srtp_protect_rtcp(PyObject *module, PyObject *arg)
{
    unsigned long long address = PyLong_AsUnsignedLongLong(arg);
    if (address == (unsigned long long)-1 && PyErr_Occurred())
        return NULL;
    if (address == 0) {
        PyErr_SetString(PyExc_ValueError, "a null srtp_protect_rtcp");
        return NULL;
    }
    srtp_protect_rtcp_ptr = (srtp_protect_fn)(uintptr_t)address;
    Py_RETURN_NONE;
}

static PyMethodDef module_methods[] = {
    {"set_srtp_protect", set_srtp_protect, METH_VARARGS, NULL},
    {"set_srtp_protect_rtcp", set_srtp_protect_rtcp, METH_O, NULL},
    {NULL},
};

static struct PyModuleDef fanout_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "mediaserver._fanout",
    .m_doc = "Native fan-out send path (see mediaserver/fanout.py).",
    .m_size = -1,
    .m_methods = module_methods,
};

PyMODINIT_FUNC
PyInit__fanout(void)
{
    if (PyType_Ready(&WriterType) < 0 || PyType_Ready(&GroupType) < 0)
        return NULL;
    PyObject *module = PyModule_Create(&fanout_module);
    if (module == NULL)
        return NULL;
    if (PyModule_AddIntConstant(module, "HISTORY_SIZE", HISTORY_SIZE) < 0 ||
        PyModule_AddIntConstant(module, "BATCH", BATCH) < 0 ||
        PyModule_AddObjectRef(module, "Writer", (PyObject *)&WriterType) < 0 ||
        PyModule_AddObjectRef(module, "Group", (PyObject *)&GroupType) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
