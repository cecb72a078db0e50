/* The processor-sharing server's hot path in C: simulator.server.PsServer's base.
 *
 * PsServer (simulator/server.py) documents the model. Every request crosses a server four
 * times (admit, request arrival, completion timer, finish); at 1,024 servers those visits
 * found the server cold, and in Python its state was a dozen float objects plus a heapq of
 * (v_finish, seq, request) tuples, each number a separate allocation to miss on. Here the
 * state is one struct and the jobs in CPU service one array of 24-byte entries.
 *
 * The arithmetic is the Python model's, operation for operation, in the same order (built
 * with -ffp-contract=off), and the heap is heapq's algorithm on the same keys, so the jobs
 * sit in the same array order; tests/simulator/test_psserver_c.py drives this and the Python
 * model it replaced (tests/simulator/server_reference.py) through random schedules and
 * requires equal logs to the bit. Capacity changes, effects, I/O, failures and statistics
 * stay in Python (the subclass), calling the methods below. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <structmember.h>

#include "_request.h"

typedef struct {
    double vf;    /* virtual time at which the job's work is done */
    uint64_t seq; /* start order: ties in vf finish first-started first */
    PyObject *req;
} Job;

typedef struct {
    PyObject_HEAD
    double cores, background, logical, capacity;
    int has_effects; /* total rate R(n) from the effect parameters below, else min(n, logical) */
    double e_speed, e_threads_per_core, e_smt_gain, e_contention;
    long long workers, backlog, busy_workers, n_jobs, completed, refused;
    char failed;
    double v, rate, t, timer_t;
    unsigned long long seq, token;
    double jobs_area, busy_area, stats_t0;
    Job *heap; /* jobs in CPU service: a binary heap on (vf, seq), heapq's layout */
    Py_ssize_t n, cap;
    PyObject *schedule, *on_done, *on_drop;
    PyObject *on_timer; /* the bound method self._on_timer, made once */
    PyObject *waitq;    /* collections.deque: connections waiting for a worker */
    PyObject *awaiting; /* dict id -> connection holding a worker, request not here yet */
} PsCore;

static PyTypeObject *RecordType; /* simulator._request.RequestRecord */
static PyObject *deque_type;
static PyObject *s_id, *s_work_s, *s_io_s, *s_t_srv_arrive, *s_t_srv_done, *s_append, *s_popleft,
    *s_begin_io;

/* -- a request's fields: in place for a RequestRecord, by attribute for anything else -------- */

static inline RequestObject *as_record(PyObject *req) {
    return PyObject_TypeCheck(req, RecordType) ? (RequestObject *)req : NULL;
}

static int as_double(PyObject *o, double *out) {
    *out = PyFloat_AsDouble(o);
    return (*out == -1.0 && PyErr_Occurred()) ? -1 : 0;
}

static int get_double(PyObject *req, PyObject *name, double *out) {
    PyObject *o = PyObject_GetAttr(req, name);
    if (!o)
        return -1;
    int rc = as_double(o, out);
    Py_DECREF(o);
    return rc;
}

static int set_double(PyObject *req, PyObject *name, double x) {
    PyObject *o = PyFloat_FromDouble(x);
    if (!o)
        return -1;
    int rc = PyObject_SetAttr(req, name, o);
    Py_DECREF(o);
    return rc;
}

static PyObject *req_id(PyObject *req) {
    RequestObject *r = as_record(req);
    return r ? PyLong_FromLongLong(r->id) : PyObject_GetAttr(req, s_id);
}

static int req_work(PyObject *req, double *out) {
    RequestObject *r = as_record(req);
    if (r) {
        *out = r->work_s;
        return 0;
    }
    return get_double(req, s_work_s, out);
}

static int req_io(PyObject *req, double *out) { /* getattr(req, "io_s", 0.0) */
    RequestObject *r = as_record(req);
    if (r) {
        *out = r->io_s;
        return 0;
    }
    if (get_double(req, s_io_s, out) == 0)
        return 0;
    if (!PyErr_ExceptionMatches(PyExc_AttributeError))
        return -1;
    PyErr_Clear();
    *out = 0.0;
    return 0;
}

static int req_arrive(PyObject *req, double *out) {
    RequestObject *r = as_record(req);
    if (r) {
        *out = r->t_srv_arrive;
        return 0;
    }
    return get_double(req, s_t_srv_arrive, out);
}

static int req_set(PyObject *req, PyObject *name, size_t offset, double x) {
    RequestObject *r = as_record(req);
    if (r) {
        *(double *)((char *)r + offset) = x;
        return 0;
    }
    return set_double(req, name, x);
}

/* -- the jobs' heap: heapq's _siftdown / _siftup on (vf, seq) ------------------------------ */

static inline int job_lt(const Job *a, const Job *b) {
    return a->vf < b->vf || (a->vf == b->vf && a->seq < b->seq);
}

static void sift_down(Job *h, Py_ssize_t start, Py_ssize_t pos) {
    Job item = h[pos];
    while (pos > start) {
        Py_ssize_t parent = (pos - 1) >> 1;
        if (!job_lt(&item, &h[parent]))
            break;
        h[pos] = h[parent];
        pos = parent;
    }
    h[pos] = item;
}

static void sift_up(Job *h, Py_ssize_t n, Py_ssize_t pos) {
    Py_ssize_t start = pos, child = 2 * pos + 1;
    Job item = h[pos];
    while (child < n) {
        Py_ssize_t right = child + 1;
        if (right < n && !job_lt(&h[child], &h[right]))
            child = right;
        h[pos] = h[child];
        pos = child;
        child = 2 * pos + 1;
    }
    h[pos] = item;
    sift_down(h, start, pos);
}

static int heap_push(PsCore *s, double vf, PyObject *req) {
    if (s->n == s->cap) {
        Py_ssize_t cap = s->cap ? 2 * s->cap : 8;
        Job *h = PyMem_Realloc(s->heap, (size_t)cap * sizeof(Job));
        if (!h) {
            PyErr_NoMemory();
            return -1;
        }
        s->heap = h;
        s->cap = cap;
    }
    s->heap[s->n] = (Job){vf, ++s->seq, Py_NewRef(req)};
    sift_down(s->heap, 0, s->n++);
    return 0;
}

static PyObject *heap_pop(PsCore *s) { /* a new reference to the head's request; n > 0 */
    Job last = s->heap[--s->n];
    if (!s->n)
        return last.req;
    PyObject *req = s->heap[0].req;
    s->heap[0] = last;
    sift_up(s->heap, s->n, 0);
    return req;
}

/* -- the model --------------------------------------------------------------------------------- */

static void advance(PsCore *s, double now) {
    double dt = now - s->t;
    if (dt > 0) {
        Py_ssize_t n = s->n;
        if (n) {
            s->v += dt * s->rate;
            double c = s->logical;
            s->busy_area += dt * ((double)n < c ? (double)n : c) / s->cores;
        }
        s->jobs_area += dt * (double)s->n_jobs;
        s->t = now;
    }
}

static double total_rate(PsCore *s, Py_ssize_t n_jobs) { /* PsServer.total_rate with effects */
    double n = (double)n_jobs, c = s->logical;
    double p = c / s->e_threads_per_core;
    double over = n - p > 0.0 ? n - p : 0.0;
    double r = (p < n ? p : n) + s->e_smt_gain * (c - p < over ? c - p : over);
    if (n > c)
        r /= 1.0 + s->e_contention * (n - c);
    return s->e_speed * r;
}

static int rearm(PsCore *s, double now) {
    Py_ssize_t n = s->n;
    if (!n) {
        s->rate = 0.0;
        s->token++;
        s->timer_t = -1.0;
        return 0;
    }
    if (!s->has_effects) {
        double c = s->logical;
        s->rate = (double)n <= c ? 1.0 : c / (double)n;
    } else {
        s->rate = total_rate(s, n) / (double)n;
    }
    double t_next = now + (s->heap[0].vf - s->v) / s->rate;
    if (t_next != s->timer_t) {
        s->token++;
        s->timer_t = t_next;
        PyObject *args[3] = {PyFloat_FromDouble(t_next), s->on_timer,
                             PyLong_FromUnsignedLongLong(s->token)};
        PyObject *r = NULL;
        if (args[0] && args[2])
            r = PyObject_Vectorcall(s->schedule, args, 3, NULL);
        Py_XDECREF(args[0]);
        Py_XDECREF(args[2]);
        if (!r)
            return -1;
        Py_DECREF(r);
    }
    return 0;
}

static int start(PsCore *s, PyObject *req) {
    double work;
    if (req_work(req, &work) < 0)
        return -1;
    return heap_push(s, s->v + work, req);
}

/* A request that holds a worker and has arrived: its non-CPU part (Python), then its CPU work. */
static int begin(PsCore *s, PyObject *req, double now) {
    double io;
    if (req_io(req, &io) < 0)
        return -1;
    if (io > 0.0) {
        PyObject *t = PyFloat_FromDouble(now);
        if (!t)
            return -1;
        PyObject *r = PyObject_CallMethodObjArgs((PyObject *)s, s_begin_io, req, t, NULL);
        Py_DECREF(t);
        if (!r)
            return -1;
        Py_DECREF(r);
        return 0;
    }
    return start(s, req);
}

static int finish(PsCore *s, PyObject *req, double now) {
    s->n_jobs--;
    s->busy_workers--;
    s->completed++;
    if (req_set(req, s_t_srv_done, offsetof(RequestObject, t_srv_done), now) < 0)
        return -1;
    while (s->busy_workers < s->workers) {
        Py_ssize_t waiting = PyObject_Size(s->waitq);
        if (waiting < 0)
            return -1;
        if (!waiting)
            break;
        PyObject *nxt = PyObject_CallMethodNoArgs(s->waitq, s_popleft);
        if (!nxt)
            return -1;
        s->busy_workers++;
        double arrive;
        int rc = req_arrive(nxt, &arrive);
        if (rc == 0) {
            if (arrive >= 0) {
                rc = begin(s, nxt, now);
            } else {
                PyObject *id = req_id(nxt);
                rc = id ? PyDict_SetItem(s->awaiting, id, nxt) : -1;
                Py_XDECREF(id);
            }
        }
        Py_DECREF(nxt);
        if (rc < 0)
            return -1;
    }
    return 0;
}

static PyObject *PsCore_on_timer(PsCore *s, PyObject *token) {
    unsigned long long tok = PyLong_AsUnsignedLongLong(token);
    if (tok == (unsigned long long)-1 && PyErr_Occurred())
        return NULL;
    if (tok != s->token)
        Py_RETURN_NONE; /* superseded by a later rearm */
    if (!s->n) { /* a live token always has a job: only a broken subclass gets here */
        PyErr_SetString(PyExc_RuntimeError, "PsCore: a completion timer with no job in service");
        return NULL;
    }
    double now = s->timer_t;
    advance(s, now);
    PyObject *done = PyList_New(0);
    if (!done)
        return NULL;
    PyObject *req = heap_pop(s); /* the head is due by construction */
    int rc = PyList_Append(done, req);
    Py_DECREF(req);
    double v_eps = s->v + 1e-12 * (1.0 + s->v);
    while (rc == 0 && s->n && s->heap[0].vf <= v_eps) {
        req = heap_pop(s);
        rc = PyList_Append(done, req);
        Py_DECREF(req);
    }
    Py_ssize_t k, n_done = PyList_GET_SIZE(done);
    for (k = 0; rc == 0 && k < n_done; k++)
        rc = finish(s, PyList_GET_ITEM(done, k), now);
    if (rc == 0)
        rc = rearm(s, now);
    PyObject *t = rc == 0 ? PyFloat_FromDouble(now) : NULL;
    for (k = 0; t && k < n_done; k++) {
        PyObject *args[2] = {PyList_GET_ITEM(done, k), t};
        PyObject *r = PyObject_Vectorcall(s->on_done, args, 2, NULL);
        if (!r)
            rc = -1;
        Py_XDECREF(r);
        if (rc < 0)
            break;
    }
    Py_XDECREF(t);
    Py_DECREF(done);
    if (rc < 0 || !t)
        return NULL;
    Py_RETURN_NONE;
}

static int parse_req_now(PyObject *const *args, Py_ssize_t nargs, const char *fn, double *now) {
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError, "%s(req, now_s) takes 2 arguments (%zd given)", fn, nargs);
        return -1;
    }
    return as_double(args[1], now);
}

static PyObject *PsCore_admit(PsCore *s, PyObject *const *args, Py_ssize_t nargs) {
    double now;
    if (parse_req_now(args, nargs, "admit", &now) < 0)
        return NULL;
    PyObject *req = args[0];
    if (s->failed) {
        s->refused++;
        Py_RETURN_FALSE;
    }
    if (s->busy_workers < s->workers) {
        PyObject *id = req_id(req);
        if (!id)
            return NULL;
        int rc = PyDict_SetItem(s->awaiting, id, req);
        Py_DECREF(id);
        if (rc < 0)
            return NULL;
        s->busy_workers++;
        Py_RETURN_TRUE;
    }
    Py_ssize_t waiting = PyObject_Size(s->waitq);
    if (waiting < 0)
        return NULL;
    if (waiting < s->backlog) {
        PyObject *r = PyObject_CallMethodOneArg(s->waitq, s_append, req);
        if (!r)
            return NULL;
        Py_DECREF(r);
        Py_RETURN_TRUE;
    }
    s->refused++;
    Py_RETURN_FALSE;
}

static PyObject *PsCore_request_arrived(PsCore *s, PyObject *const *args, Py_ssize_t nargs) {
    double now;
    if (parse_req_now(args, nargs, "request_arrived", &now) < 0)
        return NULL;
    PyObject *req = args[0];
    advance(s, now);
    s->n_jobs++;
    if (req_set(req, s_t_srv_arrive, offsetof(RequestObject, t_srv_arrive), now) < 0)
        return NULL;
    PyObject *id = req_id(req);
    if (!id)
        return NULL;
    int rc = PyDict_Contains(s->awaiting, id); /* holds a worker: its CPU work starts now */
    if (rc == 1) {
        rc = PyDict_DelItem(s->awaiting, id);
        if (rc == 0)
            rc = begin(s, req, now);
        if (rc == 0)
            rc = rearm(s, now);
    }
    Py_DECREF(id);
    if (rc < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *PsCore_advance(PsCore *s, PyObject *now) {
    double t;
    if (as_double(now, &t) < 0)
        return NULL;
    advance(s, t);
    Py_RETURN_NONE;
}

static PyObject *PsCore_rearm(PsCore *s, PyObject *now) {
    double t;
    if (as_double(now, &t) < 0 || rearm(s, t) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *PsCore_start(PsCore *s, PyObject *req) {
    if (start(s, req) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *PsCore_jobs(PsCore *s, PyObject *unused) {
    PyObject *out = PyList_New(s->n);
    for (Py_ssize_t i = 0; out && i < s->n; i++) {
        PyObject *e = Py_BuildValue("(dKO)", s->heap[i].vf, (unsigned long long)s->heap[i].seq,
                                    s->heap[i].req);
        if (!e) {
            Py_CLEAR(out);
            break;
        }
        PyList_SET_ITEM(out, i, e);
    }
    return out;
}

/* [v_finish - V(now)] per job in CPU service, heap order: the srt oracle asks every server on
 * every SYN, and the caller's sum() keeps Python's own summation */
static PyObject *PsCore_cpu_left(PsCore *s, PyObject *now) {
    double t;
    if (as_double(now, &t) < 0)
        return NULL;
    double v = s->v + (s->n ? s->rate * (t - s->t) : 0.0);
    PyObject *out = PyList_New(s->n);
    for (Py_ssize_t i = 0; out && i < s->n; i++) {
        PyObject *x = PyFloat_FromDouble(s->heap[i].vf - v);
        if (!x) {
            Py_CLEAR(out);
            break;
        }
        PyList_SET_ITEM(out, i, x);
    }
    return out;
}

static void clear_jobs(PsCore *s) {
    Py_ssize_t n = s->n;
    s->n = 0;
    for (Py_ssize_t i = 0; i < n; i++)
        Py_DECREF(s->heap[i].req);
}

static PyObject *PsCore_clear_jobs(PsCore *s, PyObject *unused) {
    clear_jobs(s);
    Py_RETURN_NONE;
}

static PyObject *PsCore_n_in_cpu(PsCore *s, PyObject *unused) { return PyLong_FromSsize_t(s->n); }

static PyObject *PsCore_busy_workers_m(PsCore *s, PyObject *unused) {
    return PyLong_FromLongLong(s->busy_workers);
}

static PyObject *PsCore_n_requests(PsCore *s, PyObject *unused) {
    Py_ssize_t waiting = PyObject_Size(s->waitq);
    return waiting < 0 ? NULL : PyLong_FromLongLong(s->busy_workers + waiting);
}

static PyObject *PsCore_effect_params(PsCore *s, PyObject *args) {
    PyObject *e;
    if (!PyArg_ParseTuple(args, "O:_effect_params", &e))
        return NULL;
    if (e == Py_None) {
        s->has_effects = 0;
        Py_RETURN_NONE;
    }
    if (!PyArg_ParseTuple(e, "dddd:_effect_params", &s->e_speed, &s->e_threads_per_core,
                          &s->e_smt_gain, &s->e_contention))
        return NULL;
    s->has_effects = 1;
    Py_RETURN_NONE;
}

static int PsCore_init(PsCore *s, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"cores", "workers", "backlog", "schedule", "on_done", "on_drop", NULL};
    PyObject *schedule, *on_done, *on_drop;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "dLLOOO:PsCore", kwlist, &s->cores, &s->workers,
                                     &s->backlog, &schedule, &on_done, &on_drop))
        return -1;
    s->logical = s->capacity = s->cores;
    s->background = 0.0;
    s->timer_t = -1.0;
    Py_XSETREF(s->schedule, Py_NewRef(schedule));
    Py_XSETREF(s->on_done, Py_NewRef(on_done));
    Py_XSETREF(s->on_drop, Py_NewRef(on_drop));
    Py_XSETREF(s->waitq, PyObject_CallNoArgs(deque_type));
    Py_XSETREF(s->awaiting, PyDict_New());
    Py_XSETREF(s->on_timer, PyObject_GetAttrString((PyObject *)s, "_on_timer"));
    return (s->waitq && s->awaiting && s->on_timer) ? 0 : -1;
}

static int PsCore_traverse(PsCore *s, visitproc visit, void *arg) {
    for (Py_ssize_t i = 0; i < s->n; i++)
        Py_VISIT(s->heap[i].req);
    Py_VISIT(s->schedule);
    Py_VISIT(s->on_done);
    Py_VISIT(s->on_drop);
    Py_VISIT(s->on_timer);
    Py_VISIT(s->waitq);
    Py_VISIT(s->awaiting);
    return 0;
}

static int PsCore_clear(PsCore *s) {
    clear_jobs(s);
    Py_CLEAR(s->schedule);
    Py_CLEAR(s->on_done);
    Py_CLEAR(s->on_drop);
    Py_CLEAR(s->on_timer);
    Py_CLEAR(s->waitq);
    Py_CLEAR(s->awaiting);
    return 0;
}

static void PsCore_dealloc(PsCore *s) { /* a subclass's subtype_dealloc handles its type's ref */
    PyObject_GC_UnTrack(s);
    PsCore_clear(s);
    PyMem_Free(s->heap);
    Py_TYPE(s)->tp_free((PyObject *)s);
}

static PyMethodDef PsCore_methods[] = {
    {"admit", (PyCFunction)(void (*)(void))PsCore_admit, METH_FASTCALL,
     "admit(req, now_s) -> bool: a SYN takes a worker, else a backlog slot, else is refused"},
    {"request_arrived", (PyCFunction)(void (*)(void))PsCore_request_arrived, METH_FASTCALL,
     "request_arrived(req, now_s): the request reached the server"},
    {"_on_timer", (PyCFunction)PsCore_on_timer, METH_O, "the completion timer (token)"},
    {"_advance", (PyCFunction)PsCore_advance, METH_O, "integrate the state up to now_s"},
    {"_rearm", (PyCFunction)PsCore_rearm, METH_O, "new rate and completion timer at now_s"},
    {"_start", (PyCFunction)PsCore_start, METH_O, "req's CPU work starts (at the current V)"},
    {"_jobs", (PyCFunction)PsCore_jobs, METH_NOARGS,
     "[(v_finish, seq, req)] of the jobs in CPU service, in heap order"},
    {"_clear_jobs", (PyCFunction)PsCore_clear_jobs, METH_NOARGS, "drop every job in CPU service"},
    {"_cpu_left", (PyCFunction)PsCore_cpu_left, METH_O,
     "[v_finish - V(now_s)] of the jobs in CPU service, in heap order"},
    {"n_in_cpu", (PyCFunction)PsCore_n_in_cpu, METH_NOARGS, "requests in CPU service"},
    {"busy_workers", (PyCFunction)PsCore_busy_workers_m, METH_NOARGS, "workers holding a connection"},
    {"n_requests", (PyCFunction)PsCore_n_requests, METH_NOARGS,
     "connections at the server: holding a worker or in the backlog"},
    {"_effect_params", (PyCFunction)PsCore_effect_params, METH_VARARGS,
     "_effect_params((speed, threads_per_core, smt_gain, contention) or None)"},
    {NULL}};

#define MEMBER(name, type, field, doc) {name, type, offsetof(PsCore, field), 0, doc}

static PyMemberDef PsCore_members[] = {
    MEMBER("cores", T_DOUBLE, cores, "CPU cores"),
    MEMBER("background", T_DOUBLE, background, "fraction of the cores taken by co-located load"),
    MEMBER("logical", T_DOUBLE, logical, "cores * (1 - background): logical CPUs shared"),
    MEMBER("capacity", T_DOUBLE, capacity, "R(logical): the saturated service rate"),
    MEMBER("workers", T_LONGLONG, workers, "worker slots"),
    MEMBER("backlog", T_LONGLONG, backlog, "backlog slots"),
    MEMBER("failed", T_BOOL, failed, "refusing every SYN (fail() until recover())"),
    MEMBER("completed", T_LONGLONG, completed, "requests completed since reset_stats"),
    MEMBER("refused", T_LONGLONG, refused, "SYNs refused since reset_stats"),
    MEMBER("jobs_area", T_DOUBLE, jobs_area, "integral of the requests at the server over time"),
    MEMBER("busy_area", T_DOUBLE, busy_area, "integral of min(n_cpu, logical) / cores over time"),
    MEMBER("stats_t0", T_DOUBLE, stats_t0, "start of the statistics' window"),
    MEMBER("_busy_workers", T_LONGLONG, busy_workers, NULL),
    MEMBER("_n_jobs", T_LONGLONG, n_jobs, "requests at the server (arrived, not completed)"),
    MEMBER("_v", T_DOUBLE, v, "virtual time: service attained by each job in CPU service"),
    MEMBER("_rate", T_DOUBLE, rate, "progress rate of each job in CPU service"),
    MEMBER("_t", T_DOUBLE, t, "time the state was last integrated to"),
    MEMBER("_timer_t", T_DOUBLE, timer_t, "time of the pending completion timer (-1: none)"),
    {"_waitq", T_OBJECT, offsetof(PsCore, waitq), READONLY, NULL},
    {"_awaiting", T_OBJECT, offsetof(PsCore, awaiting), READONLY, NULL},
    {"_schedule", T_OBJECT, offsetof(PsCore, schedule), READONLY, NULL},
    {"_on_drop", T_OBJECT, offsetof(PsCore, on_drop), READONLY, NULL},
    {NULL}};

static PyTypeObject PsCoreType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "simulator._psserver.PsCore",
    .tp_doc = "The processor-sharing server's state and hot path (see simulator.server.PsServer). "
              "PsCore(cores, workers, backlog, schedule, on_done, on_drop)",
    .tp_basicsize = sizeof(PsCore),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)PsCore_init,
    .tp_dealloc = (destructor)PsCore_dealloc,
    .tp_traverse = (traverseproc)PsCore_traverse,
    .tp_clear = (inquiry)PsCore_clear,
    .tp_methods = PsCore_methods,
    .tp_members = PsCore_members,
};

static struct PyModuleDef psserver_module = {PyModuleDef_HEAD_INIT, "simulator._psserver",
                                             "The processor-sharing server's hot path in C.", -1,
                                             NULL};

PyMODINIT_FUNC PyInit__psserver(void) {
    PyObject *rec = PyImport_ImportModule("simulator._request");
    if (!rec)
        return NULL;
    RecordType = (PyTypeObject *)PyObject_GetAttrString(rec, "RequestRecord");
    Py_DECREF(rec);
    PyObject *coll = PyImport_ImportModule("collections");
    if (!RecordType || !coll)
        return NULL;
    deque_type = PyObject_GetAttrString(coll, "deque");
    Py_DECREF(coll);
    if (!deque_type)
        return NULL;
#define INTERN(var, text)                                                                          \
    if (!(var = PyUnicode_InternFromString(text)))                                                 \
        return NULL;
    INTERN(s_id, "id");
    INTERN(s_work_s, "work_s");
    INTERN(s_io_s, "io_s");
    INTERN(s_t_srv_arrive, "t_srv_arrive");
    INTERN(s_t_srv_done, "t_srv_done");
    INTERN(s_append, "append");
    INTERN(s_popleft, "popleft");
    INTERN(s_begin_io, "_begin_io");
    if (PyType_Ready(&PsCoreType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&psserver_module);
    if (!m)
        return NULL;
    if (PyModule_AddObjectRef(m, "PsCore", (PyObject *)&PsCoreType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
