/* unbroken.media._fastpath: the forwarding hot path in C.
 *
 * For one forwarded packet and many subscribers: copy the serialized packet (a
 * "template"), patch sequence number, timestamp and SSRC, SRTP-protect it with each
 * subscriber's own libsrtp context, and send the lot with sendmmsg(2), one call per
 * UDP socket (consecutive entries on the same socket share a call).
 *
 * No libsrtp is linked here. The contexts are the srtp_t of aiortc's pylibsrtp
 * sessions, and srtp_protect is called through the function pointer that pylibsrtp's
 * own cffi binding exports (set once with set_protect): the same library build, key
 * state and ROC/sequence tracking as aiortc's own protect calls. Only the libsrtp 2.x
 * ABI of that one function is assumed:
 *     srtp_err_status_t srtp_protect(srtp_t ctx, void *rtp_hdr, int *len_ptr);
 * and rtc_internals.check_hooks() checks pylibsrtp's declaration of it.
 *
 * Slot + Sender.spread: the whole steady-state fan-out of one packet in one call. A Slot
 * is one subscriber track's sending state while it is "armed" (connected, anchored on
 * the current source): its SRTP context, its own duplicate of the socket's descriptor
 * (a closed and reused descriptor can never receive its packets) and the sequence /
 * timestamp rewrite of media/munger.py, done here exactly as RtpMunger.rewrite does it.
 * Anything else (another source's packet, an unarmed slot) goes back to Python.
 *
 * The GIL is held while Python objects are read, released while packets are
 * protected and sent (the contexts are only ever used from the event loop's thread,
 * which is the caller, blocked here).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <fcntl.h>
#include <unistd.h>
#include <structmember.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>

#define BUFFER_SIZE 2048
#define MAX_TRAILER 144 /* SRTP_MAX_TRAILER_LEN */
#define MAX_PLAINTEXT (BUFFER_SIZE - MAX_TRAILER)
#define CHUNK 64 /* packets protected and sent per round */
#define RTP_HEADER 12

#define STATUS_PROTECT_FAILED (-1000)

typedef int (*protect_fn)(void *ctx, void *rtp_hdr, int *len_ptr);

static protect_fn srtp_protect_ptr = NULL;

/* Fill addr/addr_len from a numeric host and port; -1 with a ValueError set if not. */
static int resolve(const char *host, int port, struct sockaddr_storage *addr,
                   socklen_t *addr_len) {
    char service[8];
    snprintf(service, sizeof service, "%d", port);
    struct addrinfo hints = {0}, *found = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_DGRAM;
    hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
    int rc = getaddrinfo(host, service, &hints, &found);
    if (rc != 0 || found == NULL || found->ai_addrlen > sizeof *addr) {
        PyErr_Format(PyExc_ValueError, "not a numeric address: %s (%s)", host,
                     rc ? gai_strerror(rc) : "too long");
        if (found)
            freeaddrinfo(found);
        return -1;
    }
    memcpy(addr, found->ai_addr, found->ai_addrlen);
    *addr_len = found->ai_addrlen;
    freeaddrinfo(found);
    return 0;
}

/* ---- Target: where one subscriber's packets go ------------------------------------ */

typedef struct {
    PyObject_HEAD
    void *srtp;                     /* srtp_t, owned by `owner` */
    int fd;
    struct sockaddr_storage addr;
    socklen_t addr_len;
    PyObject *owner;                /* keeps the srtp_t (pylibsrtp Session) alive */
} TargetObject;

static void Target_dealloc(TargetObject *self) {
    Py_XDECREF(self->owner);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int Target_init(TargetObject *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"srtp", "fd", "host", "port", "owner", NULL};
    unsigned long long srtp;
    int fd, port;
    const char *host;
    PyObject *owner;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "KisiO", kwlist, &srtp, &fd, &host,
                                     &port, &owner))
        return -1;
    if (srtp == 0 || fd < 0 || port <= 0 || port > 65535) {
        PyErr_SetString(PyExc_ValueError, "Target: null srtp_t, bad fd or bad port");
        return -1;
    }
    if (resolve(host, port, &self->addr, &self->addr_len) < 0)
        return -1;
    self->srtp = (void *)(uintptr_t)srtp;
    self->fd = fd;
    Py_INCREF(owner);
    Py_XSETREF(self->owner, owner);
    return 0;
}

static PyObject *Target_get_fd(TargetObject *self, void *closure) {
    return PyLong_FromLong(self->fd);
}

static PyGetSetDef Target_getset[] = {
    {"fd", (getter)Target_get_fd, NULL, "the UDP socket's file descriptor", NULL},
    {NULL},
};

static PyTypeObject TargetType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "unbroken.media._fastpath.Target",
    .tp_doc = "Target(srtp, fd, host, port, owner): one subscriber's SRTP context and "
              "UDP destination; owner keeps the srtp_t alive.",
    .tp_basicsize = sizeof(TargetObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Target_init,
    .tp_dealloc = (destructor)Target_dealloc,
    .tp_getset = Target_getset,
};

/* ---- Slot: one armed subscriber track (munger state + where its packets go) -------- */

#define MAX_REORDER 1000

typedef struct {
    PyObject_HEAD
    void *srtp;                     /* srtp_t, owned by `owner` */
    int fd;                         /* the socket's descriptor, or our own dup() of it */
    int owns_fd;                    /* fd is our dup(): closed with the slot */
    struct sockaddr_storage addr;
    socklen_t addr_len;
    PyObject *owner;
    /* the rewrite (RtpMunger's fields while armed) */
    int armed;
    unsigned int source_ssrc;
    unsigned int out_ssrc;
    unsigned int seq_offset;
    unsigned int ts_offset;
    unsigned int highest_in_seq;
    unsigned int start_in_seq;
    unsigned int last_out_seq;
    unsigned int last_out_ts;
    double last_out_time;
    unsigned int last_in_ts;
    /* counters, since the slot was made */
    unsigned long long packets;
    unsigned long long octets;
    unsigned long long dropped;
} SlotObject;

static void Slot_dealloc(SlotObject *self) {
    if (self->owns_fd && self->fd >= 0)
        close(self->fd);
    Py_XDECREF(self->owner);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *Slot_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    SlotObject *self = (SlotObject *)type->tp_alloc(type, 0);
    if (self != NULL) {
        self->fd = -1;
        self->owns_fd = 0;
    }
    return (PyObject *)self;
}

static int Slot_init(SlotObject *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"srtp", "fd", "host", "port", "owner", "ssrc", "dup", NULL};
    unsigned long long srtp;
    int fd, port, dup = 1;
    unsigned int ssrc;
    const char *host;
    PyObject *owner;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "KisiOI|p", kwlist, &srtp, &fd, &host,
                                     &port, &owner, &ssrc, &dup))
        return -1;
    if (srtp == 0 || fd < 0 || port <= 0 || port > 65535) {
        PyErr_SetString(PyExc_ValueError, "Slot: null srtp_t, bad fd or bad port");
        return -1;
    }
    if (resolve(host, port, &self->addr, &self->addr_len) < 0)
        return -1;
    int own = dup ? fcntl(fd, F_DUPFD_CLOEXEC, 0) : fd;
    if (own < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    if (self->owns_fd && self->fd >= 0)
        close(self->fd);
    self->fd = own;
    self->owns_fd = dup;
    self->srtp = (void *)(uintptr_t)srtp;
    self->out_ssrc = ssrc;
    self->armed = 0;
    Py_INCREF(owner);
    Py_XSETREF(self->owner, owner);
    return 0;
}

#define SLOT_MEMBER(name, type, doc) \
    {#name, type, offsetof(SlotObject, name), 0, doc}

static PyMemberDef Slot_members[] = {
    SLOT_MEMBER(armed, T_INT, "1 while Sender.spread forwards for this track"),
    SLOT_MEMBER(source_ssrc, T_UINT, "the anchored source's SSRC"),
    SLOT_MEMBER(out_ssrc, T_UINT, "the SSRC this track sends with"),
    SLOT_MEMBER(seq_offset, T_UINT, "RtpMunger.seq_offset"),
    SLOT_MEMBER(ts_offset, T_UINT, "RtpMunger.ts_offset"),
    SLOT_MEMBER(highest_in_seq, T_UINT, "RtpMunger.highest_in_seq"),
    SLOT_MEMBER(start_in_seq, T_UINT, "RtpMunger.start_in_seq"),
    SLOT_MEMBER(last_out_seq, T_UINT, "RtpMunger.last_out_seq"),
    SLOT_MEMBER(last_out_ts, T_UINT, "RtpMunger.last_out_ts"),
    SLOT_MEMBER(last_out_time, T_DOUBLE, "RtpMunger.last_out_time"),
    SLOT_MEMBER(last_in_ts, T_UINT, "the source timestamp of the last packet sent"),
    {"packets", T_ULONGLONG, offsetof(SlotObject, packets), READONLY, "packets sent"},
    {"octets", T_ULONGLONG, offsetof(SlotObject, octets), READONLY, "payload octets sent"},
    {"dropped", T_ULONGLONG, offsetof(SlotObject, dropped), READONLY,
     "packets not protected or not sent"},
    {NULL},
};

static PyTypeObject SlotType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "unbroken.media._fastpath.Slot",
    .tp_doc = "Slot(srtp, fd, host, port, owner, ssrc, dup=True): one subscriber track's "
              "SRTP context, UDP destination and, while armed, its sequence/timestamp "
              "rewrite; owner keeps the srtp_t alive. It sends on a duplicate of fd of "
              "its own unless dup is false (a socket that outlives every slot: slots on "
              "one such socket share their sendmmsg calls).",
    .tp_basicsize = sizeof(SlotObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = Slot_new,
    .tp_init = (initproc)Slot_init,
    .tp_dealloc = (destructor)Slot_dealloc,
    .tp_members = Slot_members,
};

/* ---- Sender: reusable buffers for one batch at a time ----------------------------- */

typedef struct {
    PyObject_HEAD
    unsigned char (*buffers)[BUFFER_SIZE];   /* CHUNK buffers */
    struct mmsghdr *messages;
    struct iovec *iovecs;
    void *contexts[CHUNK];
    int fds[CHUNK];
    struct sockaddr_storage addrs[CHUNK];    /* copied: no Python object is read unlocked */
    int status[CHUNK];                       /* protected length, or a negative error */
    int busy;
} SenderObject;

static void Sender_dealloc(SenderObject *self) {
    PyMem_RawFree(self->buffers);
    PyMem_RawFree(self->messages);
    PyMem_RawFree(self->iovecs);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int Sender_init(SenderObject *self, PyObject *args, PyObject *kwds) {
    if (!PyArg_ParseTuple(args, ":Sender"))
        return -1;
    if (self->buffers == NULL) {
        self->buffers = PyMem_RawCalloc(CHUNK, BUFFER_SIZE);
        self->messages = PyMem_RawCalloc(CHUNK, sizeof(struct mmsghdr));
        self->iovecs = PyMem_RawCalloc(CHUNK, sizeof(struct iovec));
        if (!self->buffers || !self->messages || !self->iovecs) {
            PyErr_NoMemory();
            return -1;
        }
    }
    return 0;
}

static inline void put_be16(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)(v >> 8);
    p[1] = (unsigned char)v;
}

static inline void put_be32(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

/* Protect the first `count` prepared buffers and send them; fills self->status.
 * Runs without the GIL: touches only self's C arrays. */
static void protect_and_send(SenderObject *self, int count, Py_ssize_t size) {
    for (int i = 0; i < count; i++) {
        int length = (int)size;
        if (srtp_protect_ptr(self->contexts[i], self->buffers[i], &length) != 0
                || length <= 0 || length > BUFFER_SIZE) {
            self->status[i] = STATUS_PROTECT_FAILED;
            continue;
        }
        self->status[i] = length;
        self->iovecs[i].iov_len = (size_t)length;
    }
    /* one sendmmsg per run of entries on the same socket, skipping failed ones */
    int i = 0;
    while (i < count) {
        if (self->status[i] < 0) {
            i++;
            continue;
        }
        int end = i + 1;
        while (end < count && self->fds[end] == self->fds[i] && self->status[end] >= 0)
            end++;
        int next = i;
        while (next < end) {
            int sent = sendmmsg(self->fds[i], self->messages + next, (unsigned)(end - next), 0);
            if (sent < 0 && errno == EINTR)
                continue;
            if (sent <= 0) {  /* the first message failed: it is dropped, go on */
                self->status[next] = -(errno ? errno : EIO);
                next++;
            } else {
                next += sent;
            }
        }
        i = end;
    }
}

PyDoc_STRVAR(Sender_send_doc,
"send(template, entries, patch=True) -> list[tuple[int, int]]\n\n"
"For each entry (target, seq, ts, ssrc): copy `template` (a serialized RTP packet),\n"
"patch seq/timestamp/SSRC (unless patch is False), SRTP-protect it with the target's\n"
"context and send it to the target. Returns the entries that were not sent, as\n"
"(index, status): -1000 when protection failed, -errno when the send failed.");

/* What Sender.send and Sender.spread need before they touch a packet: libsrtp's protect,
 * a template that is an RTP packet we can hold, and no call already under way. */
static int check_call(SenderObject *self, Py_buffer *template, const char *what) {
    if (srtp_protect_ptr == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "_fastpath: set_protect() was not called");
        return -1;
    }
    if (template->len < RTP_HEADER || template->len > MAX_PLAINTEXT) {
        PyErr_Format(PyExc_ValueError, "template of %zd bytes (RTP: 12 to %d)",
                     template->len, MAX_PLAINTEXT);
        return -1;
    }
    if (self->busy) {
        PyErr_Format(PyExc_RuntimeError, "%s is not reentrant", what);
        return -1;
    }
    return 0;
}

static PyObject *Sender_send(SenderObject *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"template", "entries", "patch", NULL};
    Py_buffer template;
    PyObject *entries;
    int patch = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "y*O|p", kwlist, &template, &entries,
                                     &patch))
        return NULL;
    PyObject *result = NULL, *seq_fast = NULL;
    if (check_call(self, &template, "Sender.send") < 0)
        goto done;
    seq_fast = PySequence_Fast(entries, "entries must be a sequence");
    if (seq_fast == NULL)
        goto done;
    Py_ssize_t total = PySequence_Fast_GET_SIZE(seq_fast);
    PyObject **items = PySequence_Fast_ITEMS(seq_fast);
    result = PyList_New(0);
    if (result == NULL)
        goto done;
    self->busy = 1;
    for (Py_ssize_t base = 0; base < total; base += CHUNK) {
        int count = (int)(total - base < CHUNK ? total - base : CHUNK);
        for (int i = 0; i < count; i++) {
            PyObject *entry = items[base + i];
            PyObject *target;
            unsigned long seq = 0, ts = 0, ssrc = 0;
            if (!PyTuple_Check(entry) || PyTuple_GET_SIZE(entry) != 4) {
                PyErr_SetString(PyExc_TypeError, "entries are (target, seq, ts, ssrc)");
                goto fail;
            }
            target = PyTuple_GET_ITEM(entry, 0);
            if (!PyObject_TypeCheck(target, &TargetType)) {
                PyErr_SetString(PyExc_TypeError, "an entry's first item must be a Target");
                goto fail;
            }
            if (patch) {
                seq = PyLong_AsUnsignedLongMask(PyTuple_GET_ITEM(entry, 1));
                ts = PyLong_AsUnsignedLongMask(PyTuple_GET_ITEM(entry, 2));
                ssrc = PyLong_AsUnsignedLongMask(PyTuple_GET_ITEM(entry, 3));
                if (PyErr_Occurred())
                    goto fail;
            }
            TargetObject *t = (TargetObject *)target;
            unsigned char *buffer = self->buffers[i];
            memcpy(buffer, template.buf, (size_t)template.len);
            if (patch) {
                put_be16(buffer + 2, (uint32_t)seq);
                put_be32(buffer + 4, (uint32_t)ts);
                put_be32(buffer + 8, (uint32_t)ssrc);
            }
            self->contexts[i] = t->srtp;
            self->fds[i] = t->fd;
            self->iovecs[i].iov_base = buffer;
            struct msghdr *m = &self->messages[i].msg_hdr;
            memset(m, 0, sizeof *m);
            memcpy(&self->addrs[i], &t->addr, t->addr_len);
            m->msg_name = &self->addrs[i];
            m->msg_namelen = t->addr_len;
            m->msg_iov = &self->iovecs[i];
            m->msg_iovlen = 1;
        }
        Py_BEGIN_ALLOW_THREADS
        protect_and_send(self, count, template.len);
        Py_END_ALLOW_THREADS
        for (int i = 0; i < count; i++) {
            if (self->status[i] >= 0)
                continue;
            PyObject *failed = Py_BuildValue("(ni)", base + i, self->status[i]);
            if (failed == NULL || PyList_Append(result, failed) < 0) {
                Py_XDECREF(failed);
                goto fail;
            }
            Py_DECREF(failed);
        }
    }
    self->busy = 0;
    goto done;
fail:
    self->busy = 0;
    Py_CLEAR(result);
done:
    Py_XDECREF(seq_fast);
    PyBuffer_Release(&template);
    return result;
}

static inline int seq_delta(unsigned int a, unsigned int b) {
    int d = (int)((a - b) & 0xFFFF);
    return d >= 0x8000 ? d - 0x10000 : d;
}

PyDoc_STRVAR(Sender_spread_doc,
"spread(template, slots, ssrc, seq, ts, payload_size, now) -> list[int]\n\n"
"Forward one packet of source `ssrc` (sequence number `seq`, timestamp `ts`, its\n"
"payload `payload_size` bytes, arrived at `now`) to every armed slot of `slots` (a\n"
"tuple) anchored on that source: rewrite its sequence number and timestamp as\n"
"RtpMunger.rewrite does (dropping what it drops), patch the copy of `template` (the\n"
"packet serialized for the slots' output profile), protect it with the slot's context\n"
"and send it, one sendmmsg per run of slots on one socket. Counts packets, octets and\n"
"drops per slot. Returns the indices of the slots Python must handle: not armed, or\n"
"anchored on another source.");

static PyObject *Sender_spread(SenderObject *self, PyObject *args) {
    Py_buffer template;
    PyObject *slots;
    unsigned int ssrc, seq, ts;
    Py_ssize_t payload_size;
    double now;
    if (!PyArg_ParseTuple(args, "y*O!IIInd:spread", &template, &PyTuple_Type, &slots, &ssrc,
                          &seq, &ts, &payload_size, &now))
        return NULL;
    PyObject *result = NULL;
    SlotObject *queued[CHUNK];
    if (check_call(self, &template, "Sender.spread") < 0)
        goto done;
    Py_ssize_t total = PyTuple_GET_SIZE(slots);
    for (Py_ssize_t i = 0; i < total; i++) {
        if (!PyObject_TypeCheck(PyTuple_GET_ITEM(slots, i), &SlotType)) {
            PyErr_SetString(PyExc_TypeError, "spread: slots must be Slot objects");
            goto done;
        }
    }
    result = PyList_New(0);
    if (result == NULL)
        goto done;
    seq &= 0xFFFF;
    self->busy = 1;
    Py_ssize_t index = 0;
    while (index < total) {
        int count = 0;
        for (; index < total && count < CHUNK; index++) {
            SlotObject *slot = (SlotObject *)PyTuple_GET_ITEM(slots, index);
            if (!slot->armed || slot->source_ssrc != ssrc) {
                PyObject *number = PyLong_FromSsize_t(index);
                if (number == NULL || PyList_Append(result, number) < 0) {
                    Py_XDECREF(number);
                    self->busy = 0;
                    Py_CLEAR(result);
                    goto done;
                }
                Py_DECREF(number);
                continue;
            }
            int delta = seq_delta(seq, slot->highest_in_seq);
            if (delta > 0)
                slot->highest_in_seq = seq;
            else if (delta < -MAX_REORDER || seq_delta(seq, slot->start_in_seq) < 0)
                continue;  /* too old, or from before the anchor: RtpMunger drops it */
            unsigned int out_seq = (seq + slot->seq_offset) & 0xFFFF;
            unsigned int out_ts = (unsigned int)(((uint64_t)ts + slot->ts_offset) & 0xFFFFFFFFu);
            if (delta > 0) {
                slot->last_out_seq = out_seq;
                slot->last_out_ts = out_ts;
                slot->last_out_time = now;
            }
            unsigned char *buffer = self->buffers[count];
            memcpy(buffer, template.buf, (size_t)template.len);
            put_be16(buffer + 2, out_seq);
            put_be32(buffer + 4, out_ts);
            put_be32(buffer + 8, slot->out_ssrc);
            self->contexts[count] = slot->srtp;
            self->fds[count] = slot->fd;
            self->iovecs[count].iov_base = buffer;
            struct msghdr *m = &self->messages[count].msg_hdr;
            memset(m, 0, sizeof *m);
            memcpy(&self->addrs[count], &slot->addr, slot->addr_len);
            m->msg_name = &self->addrs[count];
            m->msg_namelen = slot->addr_len;
            m->msg_iov = &self->iovecs[count];
            m->msg_iovlen = 1;
            queued[count] = slot;
            count++;
        }
        if (count == 0)
            continue;
        Py_BEGIN_ALLOW_THREADS
        protect_and_send(self, count, template.len);
        Py_END_ALLOW_THREADS
        for (int i = 0; i < count; i++) {
            SlotObject *slot = queued[i];
            if (self->status[i] >= 0) {
                slot->packets++;
                slot->octets += (unsigned long long)payload_size;
                slot->last_in_ts = ts;
            } else {
                slot->dropped++;
            }
        }
    }
    self->busy = 0;
done:
    PyBuffer_Release(&template);
    return result;
}

static PyMethodDef Sender_methods[] = {
    {"send", (PyCFunction)(void (*)(void))Sender_send, METH_VARARGS | METH_KEYWORDS,
     Sender_send_doc},
    {"spread", (PyCFunction)Sender_spread, METH_VARARGS, Sender_spread_doc},
    {NULL},
};

static PyTypeObject SenderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "unbroken.media._fastpath.Sender",
    .tp_doc = "Sender(): protects and sends batches of packets (reusable buffers; one "
              "batch at a time).",
    .tp_basicsize = sizeof(SenderObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Sender_init,
    .tp_dealloc = (destructor)Sender_dealloc,
    .tp_methods = Sender_methods,
};

/* ---- module ------------------------------------------------------------------------ */

static PyObject *set_protect(PyObject *module, PyObject *arg) {
    unsigned long long address = PyLong_AsUnsignedLongLong(arg);
    if (PyErr_Occurred())
        return NULL;
    if (address == 0) {
        PyErr_SetString(PyExc_ValueError, "set_protect: null function pointer");
        return NULL;
    }
    srtp_protect_ptr = (protect_fn)(uintptr_t)address;
    Py_RETURN_NONE;
}

static PyMethodDef module_methods[] = {
    {"set_protect", set_protect, METH_O,
     "set_protect(address): the address of srtp_protect (pylibsrtp's binding)."},
    {NULL},
};

static struct PyModuleDef fastpath_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "unbroken.media._fastpath",
    .m_doc = "The forwarding hot path: header patch, SRTP protect, sendmmsg.",
    .m_size = -1,
    .m_methods = module_methods,
};

PyMODINIT_FUNC PyInit__fastpath(void) {
    if (PyType_Ready(&TargetType) < 0 || PyType_Ready(&SlotType) < 0
            || PyType_Ready(&SenderType) < 0)
        return NULL;
    PyObject *module = PyModule_Create(&fastpath_module);
    if (module == NULL)
        return NULL;
    if (PyModule_AddObjectRef(module, "Target", (PyObject *)&TargetType) < 0
            || PyModule_AddObjectRef(module, "Slot", (PyObject *)&SlotType) < 0
            || PyModule_AddObjectRef(module, "Sender", (PyObject *)&SenderType) < 0
            || PyModule_AddIntConstant(module, "MAX_PLAINTEXT", MAX_PLAINTEXT) < 0
            || PyModule_AddIntConstant(module, "PROTECT_FAILED", STATUS_PROTECT_FAILED) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
