/* The link FIFO arithmetic of simulator/network.py in C: Link, Path and the template-train
 * fast path (plan / take / send_chain). The model sends every packet through here, so this is
 * the simulator's hottest code; in C its state is a few doubles and small ring buffers per
 * link instead of Python deques, which also keeps the cost per packet nearly flat as a
 * topology grows to thousands of links.
 *
 * Semantics, operation order and float arithmetic are those of the pure-Python reference
 * (tests/simulator/network_reference.py); tests/simulator/test_netcore.py checks that both give
 * bit-identical times and link states on random traffic. Built with -ffp-contract=off so no
 * multiply-add is fused (it would change the last bit).
 *
 * Names: a link's "q" holds departure times of packets possibly still in it, oldest first
 * (len <= qcap at all times, see Link); "tqd" is the last template train's departure offsets
 * (a tuple of floats shared with its Template, departures tqb + tqd[i]), older than every entry
 * of q; "hist" the last HIST_LEN template trains as (first arrival, last departure before it). */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>

#define HIST_LEN 8
#define CHAIN_MAX 64 /* links in one send_chain without a heap allocation */

/* ---------------------------------------------------------------------------------------- */
/* Link                                                                                      */
/* ---------------------------------------------------------------------------------------- */
typedef struct {
    PyObject_HEAD
    PyObject *u, *v;
    PyObject *shape;    /* (k8, delay_s, qcap): what templates over this link depend on */
    double bps, k8, delay_s;
    long qcap;
    double last;        /* departure of the last accepted packet */
    double *qbuf;       /* ring of departures: qbuf[(qhead + i) & qmask], i < qlen */
    Py_ssize_t qsize, qhead, qlen; /* qsize: power of two (0 before the first packet) */
    double tqb;
    PyObject *tqd;      /* tuple of float offsets, or NULL for none */
    Py_ssize_t tqd_len;
    double hist_first[HIST_LEN], hist_last[HIST_LEN]; /* ring, oldest at hist_head */
    int hist_head, hist_len;
    long long drops;
} LinkObject;

static PyTypeObject LinkType;

#define QAT(lk, i) ((lk)->qbuf[((lk)->qhead + (i)) & ((lk)->qsize - 1)])

static int q_reserve(LinkObject *lk, Py_ssize_t need) {
    if (need <= lk->qsize) return 0;
    Py_ssize_t size = lk->qsize ? lk->qsize : 16;
    while (size < need) size *= 2;
    double *buf = PyMem_Malloc((size_t)size * sizeof(double));
    if (!buf) { PyErr_NoMemory(); return -1; }
    for (Py_ssize_t i = 0; i < lk->qlen; i++) buf[i] = QAT(lk, i);
    PyMem_Free(lk->qbuf);
    lk->qbuf = buf;
    lk->qsize = size;
    lk->qhead = 0;
    return 0;
}

static inline int q_append(LinkObject *lk, double d) {
    if (lk->qlen == lk->qsize && q_reserve(lk, lk->qlen + 1) < 0) return -1;
    QAT(lk, lk->qlen) = d;
    lk->qlen++;
    return 0;
}

static inline void q_popleft(LinkObject *lk) {
    lk->qhead = (lk->qhead + 1) & (lk->qsize - 1);
    lk->qlen--;
}

static inline void tqd_clear(LinkObject *lk) {
    Py_CLEAR(lk->tqd);
    lk->tqd_len = 0;
}

static inline void tqd_set(LinkObject *lk, double base, PyObject *deps) {
    Py_INCREF(deps);
    Py_XSETREF(lk->tqd, deps);
    lk->tqd_len = PyTuple_GET_SIZE(deps);
    lk->tqb = base;
}

/* Put the lazily kept template departures in front of q. */
static int materialise(LinkObject *lk) {
    Py_ssize_t n = lk->tqd_len;
    if (!n) return 0;
    if (q_reserve(lk, lk->qlen + n) < 0) return -1;
    double b = lk->tqb;
    Py_ssize_t mask = lk->qsize - 1;
    for (Py_ssize_t i = n - 1; i >= 0; i--) {
        lk->qhead = (lk->qhead - 1) & mask;
        lk->qbuf[lk->qhead] = b + PyFloat_AS_DOUBLE(PyTuple_GET_ITEM(lk->tqd, i));
    }
    lk->qlen += n;
    tqd_clear(lk);
    return 0;
}

static inline void hist_append(LinkObject *lk, double first, double last) {
    int i;
    if (lk->hist_len < HIST_LEN) {
        i = (lk->hist_head + lk->hist_len) % HIST_LEN;
        lk->hist_len++;
    } else { /* full: drop the oldest */
        i = lk->hist_head;
        lk->hist_head = (lk->hist_head + 1) % HIST_LEN;
    }
    lk->hist_first[i] = first;
    lk->hist_last[i] = last;
}

static inline double hist_newest_first(const LinkObject *lk) {
    return lk->hist_first[(lk->hist_head + lk->hist_len - 1) % HIST_LEN];
}

/* ``last`` of the link just before the earliest recorded train that arrives after t. */
static double pre_before(const LinkObject *lk, double t) {
    double pre = 0.0;
    for (int k = lk->hist_len - 1; k >= 0; k--) {
        int i = (lk->hist_head + k) % HIST_LEN;
        if (lk->hist_first[i] <= t) break;
        pre = lk->hist_last[i];
    }
    return pre;
}

static int Link_init(LinkObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"u", "v", "bandwidth_bps", "delay_s", "queue_pkts", NULL};
    PyObject *u, *v;
    double bps, delay;
    long qcap;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOddl", kwlist, &u, &v, &bps, &delay, &qcap))
        return -1;
    if (!(bps > 0.0) || !(delay >= 0.0) || qcap < 1) {
        PyErr_Format(PyExc_ValueError, "Link %R->%R: bandwidth_bps must be > 0, delay_s >= 0 and "
                     "queue_pkts >= 1 (got %R, %R, %ld)", u, v, PyTuple_GET_ITEM(args, 2),
                     PyTuple_GET_ITEM(args, 3), qcap);
        return -1;
    }
    Py_INCREF(u);
    Py_XSETREF(self->u, u);
    Py_INCREF(v);
    Py_XSETREF(self->v, v);
    self->bps = bps;
    self->k8 = 8.0 / bps;
    self->delay_s = delay;
    self->qcap = qcap;
    Py_XSETREF(self->shape, Py_BuildValue("(ddl)", self->k8, delay, qcap));
    if (!self->shape) return -1;
    self->last = 0.0;
    self->qlen = self->qhead = 0;
    tqd_clear(self);
    self->tqb = 0.0;
    self->hist_head = self->hist_len = 0;
    self->drops = 0;
    return 0;
}

static void Link_dealloc(LinkObject *self) {
    Py_XDECREF(self->u);
    Py_XDECREF(self->v);
    Py_XDECREF(self->shape);
    Py_XDECREF(self->tqd);
    PyMem_Free(self->qbuf);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* Offer one packet at t (FIFO, drop-tail): its departure from the link, or -1.0 when dropped.
 * Link.send and the path walk both take this step. */
static inline double fifo_depart(LinkObject *lk, double t, double size, int *err) {
    double start;
    if (t >= lk->last) {
        if (lk->qlen + lk->tqd_len >= lk->qcap) {
            lk->qlen = 0;
            tqd_clear(lk);
        }
        start = t;
    } else {
        if (lk->qlen + lk->tqd_len >= lk->qcap) {
            if (materialise(lk) < 0) { *err = 1; return 0.0; }
            while (lk->qlen && QAT(lk, 0) <= t) q_popleft(lk);
            if (lk->qlen >= lk->qcap) {
                lk->drops++;
                return -1.0;
            }
        }
        start = lk->last;
    }
    double d = start + size * lk->k8;
    lk->last = d;
    if (q_append(lk, d) < 0) { *err = 1; return 0.0; }
    return d;
}

/* Offer one packet at t; its arrival at v, or -1.0 when drop-tail drops it. */
static double link_send(LinkObject *lk, double t, double size, int *err) {
    double d = fifo_depart(lk, t, size, err);
    return d < 0.0 ? -1.0 : d + lk->delay_s;
}

static PyObject *Link_send(LinkObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "send(t_s, size)");
        return NULL;
    }
    double t = PyFloat_AsDouble(args[0]), size = PyFloat_AsDouble(args[1]);
    if (PyErr_Occurred()) return NULL;
    int err = 0;
    double r = link_send(self, t, size, &err);
    return err ? NULL : PyFloat_FromDouble(r);
}

static PyObject *Link_materialise(LinkObject *self, PyObject *unused) {
    if (materialise(self) < 0) return NULL;
    Py_RETURN_NONE;
}

static PyObject *Link_get_q(LinkObject *self, void *c) {
    PyObject *out = PyList_New(self->qlen);
    if (!out) return NULL;
    for (Py_ssize_t i = 0; i < self->qlen; i++) {
        PyObject *x = PyFloat_FromDouble(QAT(self, i));
        if (!x) { Py_DECREF(out); return NULL; }
        PyList_SET_ITEM(out, i, x);
    }
    return out;
}

static PyObject *Link_get_tqd(LinkObject *self, void *c) {
    if (!self->tqd) return PyTuple_New(0);
    Py_INCREF(self->tqd);
    return self->tqd;
}

static PyObject *Link_get_hist(LinkObject *self, void *c) {
    PyObject *out = PyList_New(self->hist_len);
    if (!out) return NULL;
    for (int k = 0; k < self->hist_len; k++) {
        int i = (self->hist_head + k) % HIST_LEN;
        PyObject *x = Py_BuildValue("(dd)", self->hist_first[i], self->hist_last[i]);
        if (!x) { Py_DECREF(out); return NULL; }
        PyList_SET_ITEM(out, k, x);
    }
    return out;
}

static PyMethodDef Link_methods[] = {
    {"send", (PyCFunction)(void (*)(void))Link_send, METH_FASTCALL,
     "send(t_s, size): offer a packet of size bytes at t_s; its arrival time at v, or -1.0 "
     "when the queue is full (drop-tail)"},
    {"materialise", (PyCFunction)Link_materialise, METH_NOARGS,
     "put the lazily kept template departures into q"},
    {NULL}};

static PyMemberDef Link_members[] = {
    {"u", T_OBJECT, offsetof(LinkObject, u), READONLY, NULL},
    {"v", T_OBJECT, offsetof(LinkObject, v), READONLY, NULL},
    {"bps", T_DOUBLE, offsetof(LinkObject, bps), READONLY, "bandwidth, bits/s"},
    {"k8", T_DOUBLE, offsetof(LinkObject, k8), READONLY, "transmission seconds per byte"},
    {"delay_s", T_DOUBLE, offsetof(LinkObject, delay_s), READONLY, "propagation delay"},
    {"qcap", T_LONG, offsetof(LinkObject, qcap), READONLY, "packets the link holds at most"},
    {"shape", T_OBJECT, offsetof(LinkObject, shape), READONLY, "(k8, delay_s, qcap)"},
    {"last", T_DOUBLE, offsetof(LinkObject, last), 0, "departure of the last accepted packet"},
    {"tqb", T_DOUBLE, offsetof(LinkObject, tqb), READONLY, "base time of tqd"},
    {"drops", T_LONGLONG, offsetof(LinkObject, drops), 0, "packets dropped here"},
    {NULL}};

static PyGetSetDef Link_getset[] = {
    {"q", (getter)Link_get_q, NULL, "departures possibly still in the link, oldest first (a copy)", NULL},
    {"tqd", (getter)Link_get_tqd, NULL, "the last template train's departure offsets, () when none", NULL},
    {"hist", (getter)Link_get_hist, NULL, "the last template trains: (first arrival, last before it), oldest first (a copy)", NULL},
    {NULL}};

static PyTypeObject LinkType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "simulator._netcore.Link",
    .tp_basicsize = sizeof(LinkObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "Link(u, v, bandwidth_bps, delay_s, queue_pkts): one direction of a graph edge, "
              "a drop-tail FIFO (see simulator.network)",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Link_init,
    .tp_dealloc = (destructor)Link_dealloc,
    .tp_methods = Link_methods,
    .tp_members = Link_members,
    .tp_getset = Link_getset,
};

/* ---------------------------------------------------------------------------------------- */
/* Train: the link-independent part of a Template or a Chain                                 */
/* ---------------------------------------------------------------------------------------- */
typedef struct {
    PyObject_HEAD
    Py_ssize_t nlinks;
    double *first, *last_in, *lastdep; /* per link, in path order */
    char *tight;
    PyObject *deps;  /* tuple (per link) of tuples of floats: departure offsets */
    PyObject *first_t, *last_in_t, *lastdep_t, *tight_t; /* the same as tuples, for Python */
    Py_ssize_t *ends;    /* per path of a chain: index of its last link */
    Py_ssize_t nends;
    PyObject *ends_t;
    int fits;
} TrainObject;

static PyTypeObject TrainType;

static void Train_free_arrays(TrainObject *self) {
    PyMem_Free(self->first);
    PyMem_Free(self->last_in);
    PyMem_Free(self->lastdep);
    PyMem_Free(self->tight);
    PyMem_Free(self->ends);
    self->first = self->last_in = self->lastdep = NULL;
    self->tight = NULL;
    self->ends = NULL;
    self->nends = 0;
}

static int Train_clear(TrainObject *self) {
    Py_CLEAR(self->deps);
    Py_CLEAR(self->first_t);
    Py_CLEAR(self->last_in_t);
    Py_CLEAR(self->lastdep_t);
    Py_CLEAR(self->tight_t);
    Py_CLEAR(self->ends_t);
    return 0;
}

static void Train_dealloc(TrainObject *self) {
    PyObject_GC_UnTrack(self);
    Train_clear(self);
    Train_free_arrays(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int Train_traverse(TrainObject *self, visitproc visit, void *arg) {
    Py_VISIT(self->deps);
    Py_VISIT(self->first_t);
    Py_VISIT(self->last_in_t);
    Py_VISIT(self->lastdep_t);
    Py_VISIT(self->tight_t);
    Py_VISIT(self->ends_t);
    return 0;
}

/* _set_links(first, last_in, deps, tight, fits, ends=None): the per-link data (sequences of
 * equal length; deps a sequence of tuples of floats, each non-empty); ends: per path of a
 * chain the index of its last link (default: one path). */
static PyObject *Train_set_links(TrainObject *self, PyObject *args) {
    PyObject *first, *last_in, *deps, *tight, *ends = Py_None;
    int fits;
    if (!PyArg_ParseTuple(args, "OOOOp|O", &first, &last_in, &deps, &tight, &fits, &ends))
        return NULL;
    PyObject *f = PySequence_Tuple(first), *l = PySequence_Tuple(last_in),
             *d = PySequence_Tuple(deps), *t = PySequence_Tuple(tight);
    PyObject *ld = NULL, *e = NULL;
    if (!f || !l || !d || !t) goto fail;
    Py_ssize_t n = PyTuple_GET_SIZE(f);
    if (PyTuple_GET_SIZE(l) != n || PyTuple_GET_SIZE(d) != n || PyTuple_GET_SIZE(t) != n) {
        PyErr_SetString(PyExc_ValueError, "first, last_in, deps and tight need one entry per link");
        goto fail;
    }
    e = ends == Py_None ? Py_BuildValue("(n)", n - 1) : PySequence_Tuple(ends);
    if (!e) goto fail;
    Train_free_arrays(self);
    self->nends = PyTuple_GET_SIZE(e);
    self->ends = PyMem_Malloc((size_t)(self->nends ? self->nends : 1) * sizeof(Py_ssize_t));
    if (!self->ends) {
        PyErr_NoMemory();
        goto fail;
    }
    for (Py_ssize_t k = 0; k < self->nends; k++) {
        self->ends[k] = PyLong_AsSsize_t(PyTuple_GET_ITEM(e, k));
        if (self->ends[k] == -1 && PyErr_Occurred()) goto fail;
        if (self->ends[k] < 0 || self->ends[k] >= n || (k && self->ends[k] <= self->ends[k - 1])) {
            PyErr_SetString(PyExc_ValueError, "ends: increasing link indices, one per path");
            goto fail;
        }
    }
    self->first = PyMem_Malloc((size_t)(n ? n : 1) * sizeof(double));
    self->last_in = PyMem_Malloc((size_t)(n ? n : 1) * sizeof(double));
    self->lastdep = PyMem_Malloc((size_t)(n ? n : 1) * sizeof(double));
    self->tight = PyMem_Malloc((size_t)(n ? n : 1));
    ld = PyTuple_New(n);
    if (!self->first || !self->last_in || !self->lastdep || !self->tight) {
        PyErr_NoMemory();
        goto fail;
    }
    if (!ld) goto fail;
    for (Py_ssize_t j = 0; j < n; j++) {
        PyObject *dj = PyTuple_GET_ITEM(d, j);
        if (!PyTuple_CheckExact(dj) || PyTuple_GET_SIZE(dj) == 0) {
            PyErr_SetString(PyExc_TypeError, "deps: one non-empty tuple of floats per link");
            goto fail;
        }
        for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(dj); i++) {
            if (!PyFloat_CheckExact(PyTuple_GET_ITEM(dj, i))) {
                PyErr_SetString(PyExc_TypeError, "deps: one non-empty tuple of floats per link");
                goto fail;
            }
        }
        PyObject *last = PyTuple_GET_ITEM(dj, PyTuple_GET_SIZE(dj) - 1);
        Py_INCREF(last);
        PyTuple_SET_ITEM(ld, j, last);
        self->lastdep[j] = PyFloat_AS_DOUBLE(last);
        self->first[j] = PyFloat_AsDouble(PyTuple_GET_ITEM(f, j));
        self->last_in[j] = PyFloat_AsDouble(PyTuple_GET_ITEM(l, j));
        if (PyErr_Occurred()) goto fail;
        int tt = PyObject_IsTrue(PyTuple_GET_ITEM(t, j));
        if (tt < 0) goto fail;
        self->tight[j] = (char)tt;
    }
    self->nlinks = n;
    self->fits = fits;
    Py_XSETREF(self->first_t, f);
    Py_XSETREF(self->last_in_t, l);
    Py_XSETREF(self->deps, d);
    Py_XSETREF(self->tight_t, t);
    Py_XSETREF(self->lastdep_t, ld);
    Py_XSETREF(self->ends_t, e);
    Py_RETURN_NONE;
fail:
    Train_free_arrays(self);
    self->nlinks = 0;
    Py_XDECREF(f);
    Py_XDECREF(l);
    Py_XDECREF(d);
    Py_XDECREF(t);
    Py_XDECREF(ld);
    Py_XDECREF(e);
    return NULL;
}

static PyObject *Train_get(PyObject *x) {
    if (!x) return PyTuple_New(0);
    Py_INCREF(x);
    return x;
}
static PyObject *Train_get_first(TrainObject *s, void *c) { return Train_get(s->first_t); }
static PyObject *Train_get_last_in(TrainObject *s, void *c) { return Train_get(s->last_in_t); }
static PyObject *Train_get_deps(TrainObject *s, void *c) { return Train_get(s->deps); }
static PyObject *Train_get_lastdep(TrainObject *s, void *c) { return Train_get(s->lastdep_t); }
static PyObject *Train_get_tight(TrainObject *s, void *c) { return Train_get(s->tight_t); }
static PyObject *Train_get_ends(TrainObject *s, void *c) { return Train_get(s->ends_t); }
static PyObject *Train_get_fits(TrainObject *s, void *c) { return PyBool_FromLong(s->fits); }

static PyMethodDef Train_methods[] = {
    {"_set_links", (PyCFunction)Train_set_links, METH_VARARGS,
     "_set_links(first, last_in, deps, tight, fits, ends=None): the per-link data, in path "
     "order; ends: per path of a chain the index of its last link (default: one path)"},
    {NULL}};

static PyGetSetDef Train_getset[] = {
    {"first", (getter)Train_get_first, NULL, "per link: arrival offset of the first packet", NULL},
    {"last_in", (getter)Train_get_last_in, NULL, "per link: arrival offset of the last packet", NULL},
    {"deps", (getter)Train_get_deps, NULL, "per link: departure offsets", NULL},
    {"lastdep", (getter)Train_get_lastdep, NULL, "per link: the last departure offset", NULL},
    {"tight", (getter)Train_get_tight, NULL, "per link: the train is back-to-back there", NULL},
    {"ends", (getter)Train_get_ends, NULL, "per path: index of its last link", NULL},
    {"fits", (getter)Train_get_fits, NULL, "every link has room for the whole train", NULL},
    {NULL}};

static PyTypeObject TrainType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "simulator._netcore.Train",
    .tp_basicsize = sizeof(TrainObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Per-link arrival and departure offsets of a train of fixed shape (the base of "
              "simulator.network's Template and Chain)",
    .tp_new = PyType_GenericNew,
    .tp_dealloc = (destructor)Train_dealloc,
    .tp_traverse = (traverseproc)Train_traverse,
    .tp_clear = (inquiry)Train_clear,
    .tp_methods = Train_methods,
    .tp_getset = Train_getset,
};

/* ---------------------------------------------------------------------------------------- */
/* plan / take: a template train over links, all or nothing                                 */
/* ---------------------------------------------------------------------------------------- */
enum { PLAN_NONE = -1, PLAN_ALL_IDLE = 0, PLAN_MIXED = 1 };

typedef struct {
    char *ahead, *behind; /* per link */
    double *shifts;       /* per link, valid when has_shifts */
    int has_shifts, any_behind;
} Plan;

/* Whether a train over [t_first, t_last] at lk is served ahead of the trains computed ahead
 * of time there, as on an idle link. */
static inline int fits_before(const LinkObject *lk, double t_first, double t_last) {
    return lk->hist_len && t_last < hist_newest_first(lk) && pre_before(lk, t_last) <= t_first;
}

/* Whether n packets arriving from t0 on all fit; forgets departures up to t0 if needed. */
static int room(LinkObject *lk, double t0, Py_ssize_t n, int *err) {
    if (lk->qlen + lk->tqd_len + n <= lk->qcap) return 1;
    if (materialise(lk) < 0) { *err = 1; return 0; }
    while (lk->qlen && QAT(lk, 0) <= t0) q_popleft(lk);
    return lk->qlen + n <= lk->qcap;
}

/* How a template train sent at base_s goes over links: PLAN_NONE when some link needs the
 * link-by-link arithmetic (send_train), PLAN_ALL_IDLE when every link is idle when the train
 * arrives (the common case: it takes its idle-link times), else PLAN_MIXED with per link:
 * - ahead: the train fits ahead of trains computed ahead of time (fits_before); it is not
 *   recorded there;
 * - behind: the link is still busy when the train arrives, no train computed ahead of time
 *   arrives later, there is room for the whole train, and the train is back-to-back there
 *   (tight: each packet reaches the link before the previous one left it). FIFO then starts
 *   its first packet when the link empties, at last, and every later packet right after the
 *   one before, as on the idle link: the whole train, and everything it triggers downstream,
 *   is shifted by the wait (exact: d_i = max(a_0, last) + sum of transmission times, the
 *   Lindley recursion of a tight train);
 * - shifts (when has_shifts): how much later than on idle links the train departs there. */
static int plan(LinkObject **links, Py_ssize_t n, const TrainObject *tr, double base_s, Plan *p,
                int *err) {
    Py_ssize_t j;
    for (j = 0; j < n; j++)
        if (links[j]->last > base_s + tr->first[j]) break;
    if (j == n) return PLAN_ALL_IDLE;
    p->has_shifts = 0;
    p->any_behind = 0;
    double delta = 0.0;
    for (j = 0; j < n; j++) {
        LinkObject *lk = links[j];
        double f = tr->first[j];
        double t0 = base_s + delta + f;
        p->ahead[j] = p->behind[j] = 0;
        if (lk->last > t0) {
            if (fits_before(lk, t0, base_s + delta + tr->last_in[j])) {
                p->ahead[j] = 1;
            } else if (tr->tight[j] && !(lk->hist_len && hist_newest_first(lk) > t0) &&
                       room(lk, t0, PyTuple_GET_SIZE(PyTuple_GET_ITEM(tr->deps, j)), err)) {
                p->behind[j] = 1;
                p->any_behind = 1;
                if (!p->has_shifts) {
                    for (Py_ssize_t k = 0; k < j; k++) p->shifts[k] = 0.0;
                    p->has_shifts = 1;
                }
                delta = lk->last - base_s - f;
            } else {
                return PLAN_NONE;
            }
        }
        if (p->has_shifts) p->shifts[j] = delta;
    }
    return PLAN_MIXED;
}

static int take(LinkObject **links, Py_ssize_t n, const TrainObject *tr, double base_s, int kind,
                const Plan *p, int record_at_base) {
    if (kind == PLAN_ALL_IDLE) {
        for (Py_ssize_t j = 0; j < n; j++) {
            LinkObject *lk = links[j];
            double f = tr->first[j];
            lk->qlen = 0;
            tqd_set(lk, base_s, PyTuple_GET_ITEM(tr->deps, j));
            if (record_at_base || f > 0.0) hist_append(lk, base_s + f, lk->last);
            lk->last = base_s + tr->lastdep[j];
        }
        return 0;
    }
    for (Py_ssize_t j = 0; j < n; j++) {
        LinkObject *lk = links[j];
        if (p->ahead[j]) continue;
        double b, f;
        if (!p->has_shifts) {
            b = base_s;
            f = tr->first[j];
        } else {
            b = base_s + p->shifts[j];
            f = tr->first[j] + (j ? p->shifts[j - 1] : 0.0);
        }
        if (record_at_base || f > 0.0) hist_append(lk, base_s + f, lk->last);
        PyObject *dj = PyTuple_GET_ITEM(tr->deps, j);
        if (p->behind[j]) {
            if (materialise(lk) < 0) return -1;
            Py_ssize_t m = PyTuple_GET_SIZE(dj);
            if (q_reserve(lk, lk->qlen + m) < 0) return -1;
            for (Py_ssize_t i = 0; i < m; i++) {
                QAT(lk, lk->qlen) = b + PyFloat_AS_DOUBLE(PyTuple_GET_ITEM(dj, i));
                lk->qlen++;
            }
        } else {
            lk->qlen = 0;
            tqd_set(lk, b, dj);
        }
        lk->last = b + tr->lastdep[j];
    }
    return 0;
}

/* Scratch for plan() of up to CHAIN_MAX links on the stack, else on the heap. */
typedef struct {
    char ahead[CHAIN_MAX], behind[CHAIN_MAX];
    double shifts[CHAIN_MAX];
    LinkObject *links[CHAIN_MAX];
} Scratch;

static int plan_alloc(Plan *p, Scratch *s, LinkObject ***links, Py_ssize_t n) {
    if (n <= CHAIN_MAX) {
        p->ahead = s->ahead;
        p->behind = s->behind;
        p->shifts = s->shifts;
        *links = s->links;
        return 0;
    }
    p->ahead = PyMem_Malloc((size_t)n);
    p->behind = PyMem_Malloc((size_t)n);
    p->shifts = PyMem_Malloc((size_t)n * sizeof(double));
    *links = PyMem_Malloc((size_t)n * sizeof(LinkObject *));
    if (!p->ahead || !p->behind || !p->shifts || !*links) {
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

static void plan_free(Plan *p, Scratch *s, LinkObject **links) {
    if (links == s->links) return;
    PyMem_Free(p->ahead);
    PyMem_Free(p->behind);
    PyMem_Free(p->shifts);
    PyMem_Free(links);
}

/* ---------------------------------------------------------------------------------------- */
/* Path                                                                                      */
/* ---------------------------------------------------------------------------------------- */
/* Path.shape -> Path.sid: a small int per distinct shape in this process (a handful per
 * topology), so callers can key template sets by it */
static PyObject *shape_ids;

typedef struct {
    PyObject_HEAD
    PyObject *links_t;    /* tuple of Link */
    PyObject *shape;      /* tuple of the links' shapes: what templates depend on */
    Py_ssize_t sid;       /* shape_ids[shape] */
    LinkObject **links;   /* borrowed from links_t */
    Py_ssize_t n;
    double delay_s;
    long long drops;
    char reordered;
} PathObject;

static PyTypeObject PathType;

static int Path_init(PathObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"links", NULL};
    PyObject *seq;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O", kwlist, &seq)) return -1;
    PyObject *t = PySequence_Tuple(seq);
    if (!t) return -1;
    Py_ssize_t n = PyTuple_GET_SIZE(t);
    LinkObject **links = PyMem_Malloc((size_t)(n ? n : 1) * sizeof(LinkObject *));
    if (!links) { Py_DECREF(t); PyErr_NoMemory(); return -1; }
    double delay = 0.0;
    PyObject *shape = PyTuple_New(n), *sid = NULL;
    if (!shape) goto fail;
    for (Py_ssize_t j = 0; j < n; j++) {
        PyObject *x = PyTuple_GET_ITEM(t, j);
        if (!PyObject_TypeCheck(x, &LinkType) || !((LinkObject *)x)->shape) {
            PyErr_SetString(PyExc_TypeError, "Path: links must be Link objects (initialised)");
            goto fail;
        }
        links[j] = (LinkObject *)x;
        delay += links[j]->delay_s;
        Py_INCREF(links[j]->shape);
        PyTuple_SET_ITEM(shape, j, links[j]->shape);
    }
    PyObject *next = PyLong_FromSsize_t(PyDict_GET_SIZE(shape_ids));
    if (!next) goto fail;
    sid = PyDict_SetDefault(shape_ids, shape, next); /* borrowed */
    Py_DECREF(next);
    if (!sid) goto fail;
    self->sid = PyLong_AsSsize_t(sid);
    Py_XSETREF(self->shape, shape);
    PyMem_Free(self->links);
    Py_XSETREF(self->links_t, t);
    self->links = links;
    self->n = n;
    self->delay_s = delay;
    self->drops = 0;
    self->reordered = 0;
    return 0;
fail:
    PyMem_Free(links);
    Py_DECREF(t);
    Py_XDECREF(shape);
    return -1;
}

static void Path_dealloc(PathObject *self) {
    Py_XDECREF(self->links_t);
    Py_XDECREF(self->shape);
    PyMem_Free(self->links);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* One packet along the path; the arrival of the first copy that gets through. */
static double path_send(PathObject *self, double t_s, double size, double rto_s, int *err) {
    for (;;) {
        double t = t_s;
        Py_ssize_t j;
        for (j = 0; j < self->n; j++) {
            LinkObject *lk = self->links[j];
            if (lk->hist_len && t < hist_newest_first(lk)) {
                /* trains computed ahead of time arrive here after t: served before them,
                 * after what was there before the earliest of them, not recorded */
                double pre = pre_before(lk, t);
                t = (t >= pre ? t : pre) + size * lk->k8 + lk->delay_s;
                continue;
            }
            double d = fifo_depart(lk, t, size, err);
            if (*err) return 0.0;
            if (d < 0.0) break; /* dropped here */
            t = d + lk->delay_s;
        }
        if (j == self->n) return t;
        self->drops++;
        t_s += rto_s;
    }
}

static PyObject *Path_send(PathObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "send(t_s, size, rto_s)");
        return NULL;
    }
    double t = PyFloat_AsDouble(args[0]), size = PyFloat_AsDouble(args[1]),
           rto = PyFloat_AsDouble(args[2]);
    if (PyErr_Occurred()) return NULL;
    int err = 0;
    double r = path_send(self, t, size, rto, &err);
    return err ? NULL : PyFloat_FromDouble(r);
}

/* send_train(times, sizes, rto_s) -> arrival times (a new list). */
static PyObject *Path_send_train(PathObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "send_train(times, sizes, rto_s)");
        return NULL;
    }
    double rto = PyFloat_AsDouble(args[2]);
    if (PyErr_Occurred()) return NULL;
    PyObject *times = PySequence_Fast(args[0], "times must be a sequence");
    if (!times) return NULL;
    PyObject *sizes = PySequence_Fast(args[1], "sizes must be a sequence");
    if (!sizes) { Py_DECREF(times); return NULL; }
    Py_ssize_t m = PySequence_Fast_GET_SIZE(times);
    if (PySequence_Fast_GET_SIZE(sizes) < m) m = PySequence_Fast_GET_SIZE(sizes); /* zip */
    double *ts = PyMem_Malloc((size_t)(m ? m : 1) * sizeof(double) * 3);
    PyObject *out = NULL;
    if (!ts) { PyErr_NoMemory(); goto done; }
    double *sz = ts + m, *sent = ts + 2 * m;
    for (Py_ssize_t i = 0; i < m; i++) {
        sent[i] = ts[i] = PyFloat_AsDouble(PySequence_Fast_GET_ITEM(times, i));
        sz[i] = PyFloat_AsDouble(PySequence_Fast_GET_ITEM(sizes, i));
        if (PyErr_Occurred()) goto done;
    }
    int dropped = 0, err = 0;
    for (Py_ssize_t j = 0; j < self->n; j++) {
        LinkObject *lk = self->links[j];
        double k8 = lk->k8, dly = lk->delay_s, last = lk->last;
        if (lk->tqd_len && materialise(lk) < 0) goto done;
        double h_first = lk->hist_len ? hist_newest_first(lk) : -1.0;
        double ins_last = -1.0, first = -1.0;
        for (Py_ssize_t i = 0; i < m; i++) {
            double t = ts[i], size = sz[i];
            if (0.0 <= t && t < h_first) { /* trains computed ahead of time arrive after t */
                double pre = pre_before(lk, t);
                if (pre < ins_last) pre = ins_last;
                ins_last = (t >= pre ? t : pre) + size * k8;
                ts[i] = ins_last + dly;
                continue;
            }
            if (first < 0.0 && 0.0 <= t) {
                first = t;
                hist_append(lk, t, last);
            }
            if (t >= last) {
                if (lk->qlen >= lk->qcap) lk->qlen = 0;
                last = t + size * k8;
            } else if (t < 0.0) { /* dropped on an earlier link */
                ts[i] = -1.0;
                continue;
            } else {
                if (lk->qlen >= lk->qcap) {
                    while (lk->qlen && QAT(lk, 0) <= t) q_popleft(lk);
                    if (lk->qlen >= lk->qcap) {
                        lk->drops++;
                        dropped = 1;
                        ts[i] = -1.0;
                        continue;
                    }
                }
                last += size * k8;
            }
            if (q_append(lk, last) < 0) { lk->last = last; goto done; }
            ts[i] = last + dly;
        }
        lk->last = last;
    }
    self->reordered = (char)dropped;
    if (dropped) {
        for (Py_ssize_t i = 0; i < m; i++) {
            if (ts[i] < 0.0) {
                self->drops++;
                ts[i] = path_send(self, sent[i] + rto, sz[i], rto, &err);
                if (err) goto done;
            }
        }
    }
    out = PyList_New(m);
    if (!out) goto done;
    for (Py_ssize_t i = 0; i < m; i++) {
        PyObject *x = PyFloat_FromDouble(ts[i]);
        if (!x) { Py_CLEAR(out); goto done; }
        PyList_SET_ITEM(out, i, x);
    }
done:
    PyMem_Free(ts);
    Py_DECREF(times);
    Py_DECREF(sizes);
    return out;
}

/* send_template_at(base_s, tm) -> shift (float) or None (nothing sent). */
static PyObject *Path_send_template_at(PathObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2 || !PyObject_TypeCheck(args[1], &TrainType)) {
        PyErr_SetString(PyExc_TypeError, "send_template_at(base_s, template)");
        return NULL;
    }
    double base = PyFloat_AsDouble(args[0]);
    if (PyErr_Occurred()) return NULL;
    TrainObject *tm = (TrainObject *)args[1];
    if (tm->nlinks != self->n) {
        PyErr_SetString(PyExc_ValueError, "send_template_at: the template is for a path of another length");
        return NULL;
    }
    if (!tm->fits) Py_RETURN_NONE;
    Scratch s;
    Plan p;
    LinkObject **unused;
    if (plan_alloc(&p, &s, &unused, self->n) < 0) return NULL;
    int err = 0;
    int kind = plan(self->links, self->n, tm, base, &p, &err);
    PyObject *out = NULL;
    if (err) goto done;
    if (kind == PLAN_NONE) {
        Py_INCREF(Py_None);
        out = Py_None;
        goto done;
    }
    if (take(self->links, self->n, tm, base, kind, &p, 1) < 0) goto done;
    self->reordered = 0;
    out = PyFloat_FromDouble(kind == PLAN_ALL_IDLE || !p.has_shifts ? 0.0 : p.shifts[self->n - 1]);
done:
    plan_free(&p, &s, unused);
    return out;
}

/* send_template(base_s, tm) -> arrival times at the path end (base_s + shift + tm.arr), or
 * None (nothing sent). */
static PyObject *Path_send_template(PathObject *self, PyObject *const *args, Py_ssize_t nargs) {
    PyObject *shift = Path_send_template_at(self, args, nargs);
    if (!shift || shift == Py_None) return shift;
    double b = PyFloat_AsDouble(args[0]) + PyFloat_AS_DOUBLE(shift);
    Py_DECREF(shift);
    PyObject *arr = PyObject_GetAttrString(args[1], "arr");
    if (!arr) return NULL;
    PyObject *seq = PySequence_Fast(arr, "template arr must be a sequence");
    Py_DECREF(arr);
    if (!seq) return NULL;
    Py_ssize_t m = PySequence_Fast_GET_SIZE(seq);
    PyObject *out = PyList_New(m);
    for (Py_ssize_t i = 0; out && i < m; i++) {
        double x = PyFloat_AsDouble(PySequence_Fast_GET_ITEM(seq, i));
        PyObject *v = (x == -1.0 && PyErr_Occurred()) ? NULL : PyFloat_FromDouble(b + x);
        if (!v) Py_CLEAR(out);
        else PyList_SET_ITEM(out, i, v);
    }
    Py_DECREF(seq);
    return out;
}

static PyMethodDef Path_methods[] = {
    {"send_template", (PyCFunction)(void (*)(void))Path_send_template, METH_FASTCALL,
     "send_template(base_s, tm): send_template_at, then the train's arrival times at the path "
     "end, or None (nothing sent: use send_train)"},
    {"send", (PyCFunction)(void (*)(void))Path_send, METH_FASTCALL,
     "send(t_s, size, rto_s): deliver one packet sent at t_s; the arrival time of the first "
     "copy that gets through (a dropped copy is resent rto_s after its send time)"},
    {"send_train", (PyCFunction)(void (*)(void))Path_send_train, METH_FASTCALL,
     "send_train(times, sizes, rto_s): deliver packets sent at times (non-decreasing); their "
     "arrival times (a dropped copy is resent rto_s after its send time, then reordered is set)"},
    {"send_template_at", (PyCFunction)(void (*)(void))Path_send_template_at, METH_FASTCALL,
     "send_template_at(base_s, tm): send template tm's train at base_s if every link takes it "
     "whole (idle, ahead of trains computed ahead of time, or back-to-back behind its backlog); "
     "by how much it arrives later than on idle links, or None (nothing sent)"},
    {NULL}};

static PyMemberDef Path_members[] = {
    {"links", T_OBJECT, offsetof(PathObject, links_t), READONLY, "the links, in order (tuple)"},
    {"shape", T_OBJECT, offsetof(PathObject, shape), READONLY,
     "the links' (k8, delay_s, qcap), in order: what templates depend on"},
    {"sid", T_PYSSIZET, offsetof(PathObject, sid), READONLY,
     "a small int per distinct shape in this process (callers key template sets by it)"},
    {"delay_s", T_DOUBLE, offsetof(PathObject, delay_s), READONLY, "sum of propagation delays"},
    {"drops", T_LONGLONG, offsetof(PathObject, drops), 0, "copies dropped and resent"},
    {"reordered", T_BOOL, offsetof(PathObject, reordered), 0,
     "the last train may arrive out of order (a drop and a retransmission)"},
    {NULL}};

static PyTypeObject PathType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "simulator._netcore.Path",
    .tp_basicsize = sizeof(PathObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "Path(links): links from one node to another, in order (see simulator.network)",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Path_init,
    .tp_dealloc = (destructor)Path_dealloc,
    .tp_methods = Path_methods,
    .tp_members = Path_members,
};

/* ---------------------------------------------------------------------------------------- */
/* send_chain                                                                                */
/* ---------------------------------------------------------------------------------------- */
static PyObject *send_chain(PyObject *mod, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3 || !PyObject_TypeCheck(args[2], &TrainType)) {
        PyErr_SetString(PyExc_TypeError, "send_chain(base_s, paths, chain)");
        return NULL;
    }
    double base = PyFloat_AsDouble(args[0]);
    if (PyErr_Occurred()) return NULL;
    TrainObject *ch = (TrainObject *)args[2];
    if (!ch->fits) Py_RETURN_NONE;
    PyObject *paths = PySequence_Fast(args[1], "paths must be a sequence");
    if (!paths) return NULL;
    Py_ssize_t np = PySequence_Fast_GET_SIZE(paths), n = 0;
    for (Py_ssize_t k = 0; k < np; k++) {
        PyObject *x = PySequence_Fast_GET_ITEM(paths, k);
        if (!PyObject_TypeCheck(x, &PathType)) {
            Py_DECREF(paths);
            PyErr_SetString(PyExc_TypeError, "send_chain: paths must be Path objects");
            return NULL;
        }
        n += ((PathObject *)x)->n;
    }
    if (n != ch->nlinks || ch->nends != np) {
        Py_DECREF(paths);
        PyErr_SetString(PyExc_ValueError, "send_chain: the chain is for paths of other lengths");
        return NULL;
    }
    Scratch s;
    Plan p;
    LinkObject **links;
    PyObject *out = NULL;
    if (plan_alloc(&p, &s, &links, n) < 0) goto done_nofree;
    Py_ssize_t j = 0;
    for (Py_ssize_t k = 0; k < np; k++) {
        PathObject *pk = (PathObject *)PySequence_Fast_GET_ITEM(paths, k);
        for (Py_ssize_t i = 0; i < pk->n; i++) links[j++] = pk->links[i];
    }
    /* a directed link twice: the trains interact, all or nothing cannot hold */
    for (Py_ssize_t a = 1; a < n; a++)
        for (Py_ssize_t b = 0; b < a; b++)
            if (links[a] == links[b]) {
                Py_INCREF(Py_None);
                out = Py_None;
                goto done;
            }
    int err = 0;
    int kind = plan(links, n, ch, base, &p, &err);
    if (err) goto done;
    if (kind == PLAN_NONE) {
        Py_INCREF(Py_None);
        out = Py_None;
        goto done;
    }
    /* the train reaches a link after base_s: only there is it recorded (see Path.send) */
    if (take(links, n, ch, base, kind, &p, 0) < 0) goto done;
    for (Py_ssize_t k = 0; k < np; k++) ((PathObject *)PySequence_Fast_GET_ITEM(paths, k))->reordered = 0;
    out = PyList_New(np);
    if (!out) goto done;
    for (Py_ssize_t k = 0; k < np; k++) {
        double shift = 0.0;
        if (kind != PLAN_ALL_IDLE && p.has_shifts) shift = p.shifts[ch->ends[k]];
        PyObject *x = PyFloat_FromDouble(shift);
        if (!x) { Py_CLEAR(out); goto done; }
        PyList_SET_ITEM(out, k, x);
    }
done:
    plan_free(&p, &s, links);
done_nofree:
    Py_DECREF(paths);
    return out;
}

/* ---------------------------------------------------------------------------------------- */
/* ECMP routes                                                                               */
/* ---------------------------------------------------------------------------------------- */
static uint32_t crc_table[256];

static void crc_init(void) {
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = n;
        for (int k = 0; k < 8; k++) c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        crc_table[n] = c;
    }
}

/* CRC-32 as zlib.crc32(data, crc): chained calls give the CRC of the concatenation. */
static uint32_t crc32_update(uint32_t crc, const char *buf, Py_ssize_t len) {
    uint32_t c = crc ^ 0xFFFFFFFFu;
    for (Py_ssize_t i = 0; i < len; i++) c = crc_table[(c ^ (uint8_t)buf[i]) & 0xFF] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}

/* The Path from root to leaf (from leaf to root when toward_root) on the shortest-path DAG
 * pred over links[(a, b)]: simulator.network.ecmp_path's walk from leaf up to root, where
 * several predecessors remain taking the one at crc32(f"{flow}|{node}") % their number
 * (flow_crc: the CRC of f"{flow}|" so far). None if leaf is not in pred (unreachable). */
static PyObject *ecmp_route(PyObject *pred, PyObject *links, PyObject *root, PyObject *leaf,
                            uint32_t flow_crc, int toward_root) {
    PyObject *options = PyDict_GetItemWithError(pred, leaf);
    if (!options) {
        if (PyErr_Occurred()) return NULL;
        Py_RETURN_NONE;
    }
    PyObject *nodes = PyList_New(0), *path_links = NULL, *out = NULL;
    if (!nodes || PyList_Append(nodes, leaf) < 0) goto done;
    PyObject *cur = leaf; /* borrowed: from nodes */
    for (;;) {
        int at_root = PyObject_RichCompareBool(cur, root, Py_EQ);
        if (at_root < 0) goto done;
        if (at_root) break;
        options = PyDict_GetItemWithError(pred, cur);
        if (!options) {
            if (!PyErr_Occurred()) PyErr_SetObject(PyExc_KeyError, cur);
            goto done;
        }
        if (!PyList_Check(options) || PyList_GET_SIZE(options) == 0) {
            PyErr_SetString(PyExc_TypeError, "ecmp_routes: pred values must be non-empty lists");
            goto done;
        }
        Py_ssize_t k = PyList_GET_SIZE(options), pick = 0;
        if (k > 1) {
            Py_ssize_t len;
            const char *name = PyUnicode_AsUTF8AndSize(cur, &len);
            if (!name) goto done;
            pick = (Py_ssize_t)(crc32_update(flow_crc, name, len) % (uint32_t)k);
        }
        cur = PyList_GET_ITEM(options, pick);
        if (PyList_Append(nodes, cur) < 0) goto done;
        if (PyList_GET_SIZE(nodes) > PyDict_GET_SIZE(pred) + 1) {
            PyErr_SetString(PyExc_ValueError, "ecmp_routes: pred has a cycle");
            goto done;
        }
    }
    Py_ssize_t n = PyList_GET_SIZE(nodes) - 1;
    path_links = PyTuple_New(n);
    if (!path_links) goto done;
    for (Py_ssize_t j = 0; j < n; j++) {
        /* hop j of the path: walk order toward the root, else reversed */
        PyObject *a = toward_root ? PyList_GET_ITEM(nodes, j) : PyList_GET_ITEM(nodes, n - j);
        PyObject *b = toward_root ? PyList_GET_ITEM(nodes, j + 1) : PyList_GET_ITEM(nodes, n - j - 1);
        PyObject *key = PyTuple_Pack(2, a, b);
        if (!key) goto done;
        PyObject *lk = PyDict_GetItemWithError(links, key);
        if (!lk && !PyErr_Occurred()) PyErr_SetObject(PyExc_KeyError, key);
        Py_DECREF(key);
        if (!lk) goto done;
        Py_INCREF(lk);
        PyTuple_SET_ITEM(path_links, j, lk);
    }
    out = PyObject_CallOneArg((PyObject *)&PathType, path_links);
done:
    Py_XDECREF(nodes);
    Py_XDECREF(path_links);
    return out;
}

/* ecmp_routes(pred, links, root, leaves, toward_root) -> list: the Path between root and each
 * of leaves (see ecmp_route; None for a leaf pred does not reach), the flow of each being
 * f"{min(root, leaf)}|{max(root, leaf)}" as in simulator.network.PathTable. One call per
 * searched root: a data center's 65,536 LB->server paths are 64 calls, built while the DAG,
 * names and links are in cache rather than one by one as traffic first needs them. */
static PyObject *ecmp_routes(PyObject *mod, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 5 || !PyDict_Check(args[0]) || !PyDict_Check(args[1]) || !PyUnicode_Check(args[2]) ||
        !PyList_Check(args[3])) {
        PyErr_SetString(PyExc_TypeError, "ecmp_routes(pred: dict, links: dict, root: str, leaves: list, toward_root)");
        return NULL;
    }
    PyObject *pred = args[0], *links = args[1], *root = args[2], *leaves = args[3];
    int toward_root = PyObject_IsTrue(args[4]);
    if (toward_root < 0) return NULL;
    Py_ssize_t root_len, m = PyList_GET_SIZE(leaves);
    const char *root_s = PyUnicode_AsUTF8AndSize(root, &root_len);
    if (!root_s) return NULL;
    PyObject *out = PyList_New(m);
    if (!out) return NULL;
    for (Py_ssize_t i = 0; i < m; i++) {
        PyObject *leaf = PyList_GET_ITEM(leaves, i);
        Py_ssize_t leaf_len;
        const char *leaf_s = PyUnicode_Check(leaf) ? PyUnicode_AsUTF8AndSize(leaf, &leaf_len) : NULL;
        if (!leaf_s) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "ecmp_routes: leaves must be str");
            Py_DECREF(out);
            return NULL;
        }
        /* Python orders str by code point, as memcmp orders their UTF-8 bytes */
        int c = memcmp(root_s, leaf_s, (size_t)(root_len < leaf_len ? root_len : leaf_len));
        int root_first = c < 0 || (c == 0 && root_len <= leaf_len);
        const char *lo = root_first ? root_s : leaf_s, *hi = root_first ? leaf_s : root_s;
        Py_ssize_t lo_len = root_first ? root_len : leaf_len, hi_len = root_first ? leaf_len : root_len;
        uint32_t crc = crc32_update(0, lo, lo_len);
        crc = crc32_update(crc32_update(crc32_update(crc, "|", 1), hi, hi_len), "|", 1);
        PyObject *path = ecmp_route(pred, links, root, leaf, crc, toward_root);
        if (!path) {
            Py_DECREF(out);
            return NULL;
        }
        PyList_SET_ITEM(out, i, path);
    }
    return out;
}

/* dag_search(names, offsets, neighbours, costs, carries, root) -> dict: simulator.network's
 * shortest_path_dag over a graph in compressed rows (node i's neighbours are
 * neighbours[offsets[i]:offsets[i + 1]] with the edge costs alongside; offsets and neighbours
 * int64, costs float64, carries one byte per node: may a path pass through it). The same
 * Dijkstra as the Python it replaced, step for step: a heap of (distance, push count, node), a
 * shorter distance replaces a node's predecessors, an equal one appends to them; so the
 * predecessor lists and their order (which ECMP indexes by hash) are identical. The dict maps
 * each reached node's name to its predecessors' names, in the order nodes were first reached. */
typedef struct { double d; long long pushed; Py_ssize_t v; } DagItem;

static int dag_before(const DagItem *a, const DagItem *b) {
    return a->d < b->d || (a->d == b->d && a->pushed < b->pushed);
}

static void dag_push(DagItem *h, Py_ssize_t *n, DagItem x) {
    Py_ssize_t i = (*n)++;
    while (i > 0) {
        Py_ssize_t up = (i - 1) / 2;
        if (!dag_before(&x, &h[up])) break;
        h[i] = h[up];
        i = up;
    }
    h[i] = x;
}

static DagItem dag_pop(DagItem *h, Py_ssize_t *n) {
    DagItem top = h[0], last = h[--(*n)];
    Py_ssize_t i = 0;
    for (;;) {
        Py_ssize_t c = 2 * i + 1;
        if (c >= *n) break;
        if (c + 1 < *n && dag_before(&h[c + 1], &h[c])) c++;
        if (!dag_before(&h[c], &last)) break;
        h[i] = h[c];
        i = c;
    }
    if (*n > 0) h[i] = last;
    return top;
}

static PyObject *dag_search(PyObject *mod, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 6 || !PyList_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "dag_search(names: list, offsets, neighbours, costs, carries, root: int)");
        return NULL;
    }
    PyObject *names = args[0], *out = NULL;
    Py_ssize_t n = PyList_GET_SIZE(names), root = PyLong_AsSsize_t(args[5]);
    if (root == -1 && PyErr_Occurred()) return NULL;
    Py_buffer bo = {0}, bn = {0}, bc = {0}, bk = {0};
    DagItem *heap = NULL;
    double *seen = NULL;
    char *settled = NULL, *reached = NULL;
    Py_ssize_t *order = NULL, *plen = NULL, *pool = NULL;
    if (PyObject_GetBuffer(args[1], &bo, PyBUF_SIMPLE) < 0 || PyObject_GetBuffer(args[2], &bn, PyBUF_SIMPLE) < 0 ||
        PyObject_GetBuffer(args[3], &bc, PyBUF_SIMPLE) < 0 || PyObject_GetBuffer(args[4], &bk, PyBUF_SIMPLE) < 0)
        goto done;
    const int64_t *offs = bo.buf, *nbr = bn.buf;
    const double *cost = bc.buf;
    const char *carries = bk.buf;
    Py_ssize_t m = bn.len / (Py_ssize_t)sizeof(int64_t);
    if (bo.len != (n + 1) * (Py_ssize_t)sizeof(int64_t)) {
        PyErr_Format(PyExc_ValueError, "dag_search: offsets need %zd int64 (nodes + 1)", n + 1);
        goto done;
    }
    if (bn.len % (Py_ssize_t)sizeof(int64_t) || bc.len != m * (Py_ssize_t)sizeof(double)) {
        PyErr_SetString(PyExc_ValueError, "dag_search: neighbours are int64, costs one float64 each");
        goto done;
    }
    if (bk.len != n) {
        PyErr_Format(PyExc_ValueError, "dag_search: carries need one byte per node (%zd)", n);
        goto done;
    }
    if (root < 0 || root >= n) {
        PyErr_Format(PyExc_ValueError, "dag_search: root %zd is not a node index (0..%zd)", root, n - 1);
        goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++)
        if (offs[i] < 0 || offs[i] > offs[i + 1] || offs[i + 1] > m) {
            PyErr_SetString(PyExc_ValueError, "dag_search: offsets must rise within the neighbours");
            goto done;
        }
    for (Py_ssize_t e = 0; e < m; e++)
        if (nbr[e] < 0 || nbr[e] >= n) {
            PyErr_SetString(PyExc_ValueError, "dag_search: a neighbour index is out of range");
            goto done;
        }
    /* every edge pushes at most once, plus the root; a node's predecessors are among its
     * neighbours (the graph is undirected: in-degree = out-degree), so pool[offs[u]..] holds them */
    heap = PyMem_Malloc((size_t)(m + 1) * sizeof *heap);
    seen = PyMem_Malloc((size_t)(n ? n : 1) * sizeof *seen);
    settled = PyMem_Calloc((size_t)(n ? n : 1), 1);
    reached = PyMem_Calloc((size_t)(n ? n : 1), 1);
    order = PyMem_Malloc((size_t)(n ? n : 1) * sizeof *order);
    plen = PyMem_Calloc((size_t)(n ? n : 1), sizeof *plen);
    pool = PyMem_Malloc((size_t)(m ? m : 1) * sizeof *pool);
    if (!heap || !seen || !settled || !reached || !order || !plen || !pool) {
        PyErr_NoMemory();
        goto done;
    }
    Py_ssize_t hn = 0, n_order = 0;
    long long pushed = 1;
    seen[root] = 0.0;
    reached[root] = 1;
    order[n_order++] = root;
    dag_push(heap, &hn, (DagItem){0.0, 0, root});
    while (hn > 0) {
        DagItem it = dag_pop(heap, &hn);
        Py_ssize_t v = it.v;
        if (settled[v]) continue;
        settled[v] = 1;
        if (v != root && !carries[v]) continue; /* a path may end here but not go on */
        for (int64_t e = offs[v]; e < offs[v + 1]; e++) {
            Py_ssize_t u = (Py_ssize_t)nbr[e];
            double du = it.d + cost[e];
            if (settled[u]) continue;
            int better = !reached[u] || du < seen[u];
            if (!better && du != seen[u]) continue;
            Py_ssize_t slot = better ? 0 : plen[u];
            if (slot >= offs[u + 1] - offs[u]) {
                PyErr_SetString(PyExc_ValueError, "dag_search: the graph must be undirected "
                                                  "(a node has more predecessors than neighbours)");
                goto done;
            }
            pool[offs[u] + slot] = v;
            plen[u] = slot + 1;
            if (better) {
                if (!reached[u]) order[n_order++] = u;
                reached[u] = 1;
                seen[u] = du;
                dag_push(heap, &hn, (DagItem){du, pushed++, u});
            }
        }
    }
    out = PyDict_New();
    if (!out) goto done;
    for (Py_ssize_t k = 0; k < n_order; k++) {
        Py_ssize_t u = order[k];
        PyObject *lst = PyList_New(plen[u]);
        if (!lst) { Py_CLEAR(out); goto done; }
        for (Py_ssize_t j = 0; j < plen[u]; j++) {
            PyObject *name = PyList_GET_ITEM(names, pool[offs[u] + j]);
            Py_INCREF(name);
            PyList_SET_ITEM(lst, j, name);
        }
        int rc = PyDict_SetItem(out, PyList_GET_ITEM(names, u), lst);
        Py_DECREF(lst);
        if (rc < 0) { Py_CLEAR(out); goto done; }
    }
done:
    if (bo.obj) PyBuffer_Release(&bo);
    if (bn.obj) PyBuffer_Release(&bn);
    if (bc.obj) PyBuffer_Release(&bc);
    if (bk.obj) PyBuffer_Release(&bk);
    PyMem_Free(heap); PyMem_Free(seen); PyMem_Free(settled); PyMem_Free(reached);
    PyMem_Free(order); PyMem_Free(plen); PyMem_Free(pool);
    return out;
}

/* -- PathRow: one source's paths by target index ------------------------------------------- */

/* A row of simulator.network.PathTable: a fixed array of Paths (NULL until built) indexed
 * by target, and the row's ``missing(j)`` callback that builds a path on its first use (with
 * the rest of its search) and returns it. It replaces a dict subclass with __missing__: at
 * 64 LBs x 1,024 servers the model looks up three paths per request, and a dict subclass's
 * subscript is a Python-level method call plus a probe that compares the stored int key
 * objects, each a cache miss at that size; here it is one array read. */
typedef struct {
    PyObject_HEAD
    Py_ssize_t n;
    PyObject **items;
    PyObject *missing;
} PathRowObject;

static PyTypeObject PathRowType;

static int row_index(PathRowObject *r, PyObject *key, Py_ssize_t *j) {
    *j = PyNumber_AsSsize_t(key, PyExc_IndexError);
    if (*j == -1 && PyErr_Occurred()) return -1;
    if (*j < 0 || *j >= r->n) {
        PyErr_Format(PyExc_IndexError, "no target %zd (of %zd)", *j, r->n);
        return -1;
    }
    return 0;
}

static PyObject *PathRow_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    Py_ssize_t n;
    PyObject *missing;
    static char *kwlist[] = {"n", "missing", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "nO:PathRow", kwlist, &n, &missing)) return NULL;
    if (n < 0) {
        PyErr_SetString(PyExc_ValueError, "PathRow: n must be >= 0");
        return NULL;
    }
    PathRowObject *r = (PathRowObject *)type->tp_alloc(type, 0);
    if (!r) return NULL;
    r->items = PyMem_Calloc(n ? (size_t)n : 1, sizeof(PyObject *));
    if (!r->items) {
        Py_DECREF(r);
        return PyErr_NoMemory();
    }
    r->n = n;
    r->missing = Py_NewRef(missing);
    return (PyObject *)r;
}

static PyObject *PathRow_subscript(PathRowObject *r, PyObject *key) {
    Py_ssize_t j;
    if (row_index(r, key, &j) < 0) return NULL;
    PyObject *p = r->items[j];
    if (p) return Py_NewRef(p);
    return PyObject_CallOneArg(r->missing, key); /* builds it (or raises) and returns it */
}

static int PathRow_ass_subscript(PathRowObject *r, PyObject *key, PyObject *value) {
    Py_ssize_t j;
    if (row_index(r, key, &j) < 0) return -1;
    Py_XSETREF(r->items[j], Py_XNewRef(value)); /* del row[j]: missing again */
    return 0;
}

static Py_ssize_t PathRow_length(PathRowObject *r) { return r->n; }

static int PathRow_contains(PathRowObject *r, PyObject *key) { /* built already? */
    Py_ssize_t j = PyNumber_AsSsize_t(key, PyExc_IndexError);
    if (j == -1 && PyErr_Occurred()) return -1;
    return j >= 0 && j < r->n && r->items[j] != NULL;
}

static int PathRow_traverse(PathRowObject *r, visitproc visit, void *arg) {
    for (Py_ssize_t j = 0; j < r->n; j++) Py_VISIT(r->items[j]);
    Py_VISIT(r->missing);
    return 0;
}

static int PathRow_clear(PathRowObject *r) {
    for (Py_ssize_t j = 0; j < r->n; j++) Py_CLEAR(r->items[j]);
    Py_CLEAR(r->missing);
    return 0;
}

static void PathRow_dealloc(PathRowObject *r) {
    PyObject_GC_UnTrack(r);
    PathRow_clear(r);
    PyMem_Free(r->items);
    Py_TYPE(r)->tp_free((PyObject *)r);
}

static PyMappingMethods PathRow_as_mapping = {
    .mp_length = (lenfunc)PathRow_length,
    .mp_subscript = (binaryfunc)PathRow_subscript,
    .mp_ass_subscript = (objobjargproc)PathRow_ass_subscript,
};

static PySequenceMethods PathRow_as_sequence = {.sq_contains = (objobjproc)PathRow_contains};

static PyTypeObject PathRowType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "simulator._netcore.PathRow",
    .tp_doc = "PathRow(n, missing): n paths by target index, each built on first use by "
              "missing(j), which returns it (or raises); row[j] = path stores one; j in row: built",
    .tp_basicsize = sizeof(PathRowObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = PathRow_new,
    .tp_dealloc = (destructor)PathRow_dealloc,
    .tp_traverse = (traverseproc)PathRow_traverse,
    .tp_clear = (inquiry)PathRow_clear,
    .tp_as_mapping = &PathRow_as_mapping,
    .tp_as_sequence = &PathRow_as_sequence,
};

static PyMethodDef module_methods[] = {
    {"ecmp_routes", (PyCFunction)(void (*)(void))ecmp_routes, METH_FASTCALL,
     "ecmp_routes(pred, links, root, leaves, toward_root): per leaf the Path along "
     "simulator.network.ecmp_path(pred, root, leaf, f'{min(root, leaf)}|{max(root, leaf)}') over "
     "links[(a, b)], from root to leaf (toward_root: from leaf to root), or None if pred lacks it"},
    {"dag_search", (PyCFunction)(void (*)(void))dag_search, METH_FASTCALL,
     "dag_search(names, offsets, neighbours, costs, carries, root): every reached node's "
     "predecessors on the shortest paths from names[root] (simulator.network.shortest_path_dag "
     "over a graph in compressed rows)"},
    {"send_chain", (PyCFunction)(void (*)(void))send_chain, METH_FASTCALL,
     "send_chain(base_s, paths, chain): send the trains of chain on paths at base_s, all or "
     "none; per path by how much its train arrives later than on idle links, or None (nothing "
     "sent), also when a directed link appears twice (the trains would interact)"},
    {NULL}};

static struct PyModuleDef moduledef = {PyModuleDef_HEAD_INIT, "simulator._netcore",
                                       "Link FIFO arithmetic of simulator.network in C.", -1,
                                       module_methods};

PyMODINIT_FUNC PyInit__netcore(void) {
    if (PyType_Ready(&LinkType) < 0 || PyType_Ready(&TrainType) < 0 || PyType_Ready(&PathType) < 0 ||
        PyType_Ready(&PathRowType) < 0)
        return NULL;
    shape_ids = PyDict_New();
    if (!shape_ids) return NULL;
    crc_init();
    PyObject *m = PyModule_Create(&moduledef);
    if (!m) return NULL;
    if (PyModule_AddObjectRef(m, "Link", (PyObject *)&LinkType) < 0 ||
        PyModule_AddObjectRef(m, "Train", (PyObject *)&TrainType) < 0 ||
        PyModule_AddObjectRef(m, "Path", (PyObject *)&PathType) < 0 ||
        PyModule_AddObjectRef(m, "PathRow", (PyObject *)&PathRowType) < 0 ||
        PyModule_AddIntConstant(m, "HIST_LEN", HIST_LEN) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
