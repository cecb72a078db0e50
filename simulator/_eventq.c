/* The simulation's event queue in C (simulator.model.Simulation): calls fn(arg) due at a
 * simulated time, served in (time, insertion) order, and the loop that runs them.
 *
 * It replaces a heapq list of (t, seq, fn, arg) tuples popped by a Python loop. Each event
 * used to cost a tuple, Python-level tuple comparisons that dereference both tuples at every
 * heap level, and a turn of the Python loop; here an entry is 32 bytes inline in one array,
 * compared on two numbers. The order is exactly heapq's: keys (t, seq) are unique, so any
 * correct heap pops them in the same sequence (tests/simulator/test_eventq.py checks it against
 * heapq on random reentrant schedules). */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>

typedef struct {
    double t;
    uint64_t seq; /* insertion number: ties in t run first-scheduled first */
    PyObject *fn;
    PyObject *arg;
} Entry;

typedef struct {
    PyObject_HEAD
    Entry *heap; /* binary min-heap on (t, seq) */
    Py_ssize_t n, cap;
    uint64_t seq;
    PyObject *env; /* the simpy.Environment whose _now the loop advances and schedule() reads */
} EventQueueObject;

static PyObject *str_now; /* interned "_now" */

static inline int before(const Entry *a, const Entry *b) {
    return a->t < b->t || (a->t == b->t && a->seq < b->seq);
}

/* Steals nothing: takes new references to fn and arg. */
static int eq_push(EventQueueObject *q, double t, PyObject *fn, PyObject *arg) {
    if (isnan(t)) {
        PyErr_SetString(PyExc_ValueError, "EventQueue: an event's time is NaN");
        return -1;
    }
    if (q->n == q->cap) {
        Py_ssize_t cap = q->cap ? 2 * q->cap : 256;
        Entry *h = PyMem_Realloc(q->heap, (size_t)cap * sizeof(Entry));
        if (!h) {
            PyErr_NoMemory();
            return -1;
        }
        q->heap = h;
        q->cap = cap;
    }
    Entry e = {t, ++q->seq, Py_NewRef(fn), Py_NewRef(arg)};
    Entry *h = q->heap;
    Py_ssize_t i = q->n++;
    while (i > 0) { /* sift up */
        Py_ssize_t parent = (i - 1) / 2;
        if (!before(&e, &h[parent])) break;
        h[i] = h[parent];
        i = parent;
    }
    h[i] = e;
    return 0;
}

/* Removes and returns the head (q->n > 0); the caller owns its references. */
static Entry eq_pop(EventQueueObject *q) {
    Entry *h = q->heap;
    Entry top = h[0];
    Entry last = h[--q->n];
    Py_ssize_t n = q->n, i = 0;
    if (n > 0) {
        for (;;) { /* sift down the former last entry from the root */
            Py_ssize_t child = 2 * i + 1;
            if (child >= n) break;
            if (child + 1 < n && before(&h[child + 1], &h[child])) child++;
            if (!before(&h[child], &last)) break;
            h[i] = h[child];
            i = child;
        }
        h[i] = last;
    }
    return top;
}

static int EventQueue_init(EventQueueObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"env", NULL};
    PyObject *env;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O:EventQueue", kwlist, &env)) return -1;
    Py_XSETREF(self->env, Py_NewRef(env));
    return 0;
}

static int EventQueue_clear(EventQueueObject *self) {
    /* detach the entries first: a decref below may run code that touches this queue */
    Entry *h = self->heap;
    Py_ssize_t n = self->n;
    self->heap = NULL;
    self->n = self->cap = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_DECREF(h[i].fn);
        Py_DECREF(h[i].arg);
    }
    PyMem_Free(h);
    Py_CLEAR(self->env);
    return 0;
}

static int EventQueue_traverse(EventQueueObject *self, visitproc visit, void *arg) {
    for (Py_ssize_t i = 0; i < self->n; i++) {
        Py_VISIT(self->heap[i].fn);
        Py_VISIT(self->heap[i].arg);
    }
    Py_VISIT(self->env);
    return 0;
}

static void EventQueue_dealloc(EventQueueObject *self) {
    PyObject_GC_UnTrack(self);
    EventQueue_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int check_env(EventQueueObject *self) {
    if (self->env) return 0;
    PyErr_SetString(PyExc_TypeError, "EventQueue was not initialised with an env");
    return -1;
}

/* push(t_s, fn, arg): fn(arg) at t_s as given (the model's own handlers, never in the past). */
static PyObject *EventQueue_push(EventQueueObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "push(t_s, fn, arg) takes 3 arguments");
        return NULL;
    }
    double t = PyFloat_AsDouble(args[0]);
    if (t == -1.0 && PyErr_Occurred()) return NULL;
    if (eq_push(self, t, args[1], args[2]) < 0) return NULL;
    Py_RETURN_NONE;
}

/* schedule(t_s, fn, arg): fn(arg) at t_s, or now if t_s is in the past. */
static PyObject *EventQueue_schedule(EventQueueObject *self, PyObject *const *args,
                                     Py_ssize_t nargs) {
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "schedule(t_s, fn, arg) takes 3 arguments");
        return NULL;
    }
    if (check_env(self) < 0) return NULL;
    double t = PyFloat_AsDouble(args[0]);
    if (t == -1.0 && PyErr_Occurred()) return NULL;
    PyObject *now_o = PyObject_GetAttr(self->env, str_now);
    if (!now_o) return NULL;
    double now = PyFloat_AsDouble(now_o);
    Py_DECREF(now_o);
    if (now == -1.0 && PyErr_Occurred()) return NULL;
    if (!isnan(t) && !(t > now)) t = now;
    if (eq_push(self, t, args[1], args[2]) < 0) return NULL;
    Py_RETURN_NONE;
}

/* The time of SimPy's next event (the head of its heap of (time, priority, eid, event)), or
 * inf when it has none; -1 with an exception set on a malformed queue. */
static int simpy_head(PyObject *sq, double *t) {
    if (PyList_GET_SIZE(sq) == 0) {
        *t = INFINITY;
        return 0;
    }
    PyObject *head = PyList_GET_ITEM(sq, 0);
    if (!PyTuple_Check(head) || PyTuple_GET_SIZE(head) < 1) {
        PyErr_SetString(PyExc_TypeError, "run: simpy_queue holds a non-tuple");
        return -1;
    }
    *t = PyFloat_AsDouble(PyTuple_GET_ITEM(head, 0));
    return *t == -1.0 && PyErr_Occurred() ? -1 : 0;
}

/* run(end_s, simpy_queue): call the due events in order while the head is at or before end_s
 * and not after SimPy's next event (simpy_queue, SimPy's heap; at equal times ours run first);
 * sets env._now to each event's time before its call. Returns how many ran; the caller steps
 * SimPy's event when it stops there. */
static PyObject *EventQueue_run(EventQueueObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2 || !PyList_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "run(end_s, simpy_queue: list) takes 2 arguments");
        return NULL;
    }
    if (check_env(self) < 0) return NULL;
    double end = PyFloat_AsDouble(args[0]);
    if (end == -1.0 && PyErr_Occurred()) return NULL;
    PyObject *sq = args[1], *env = self->env;
    long long n = 0;
    while (self->n > 0 && !(self->heap[0].t > end)) {
        if (PyList_GET_SIZE(sq)) { /* rare: a SimPy process (e.g. a controller's) is pending */
            double t_simpy;
            if (simpy_head(sq, &t_simpy) < 0) return NULL;
            if (t_simpy < self->heap[0].t) break;
        }
        Entry e = eq_pop(self);
        PyObject *now = PyFloat_FromDouble(e.t);
        int err = !now || PyObject_SetAttr(env, str_now, now) < 0;
        Py_XDECREF(now);
        PyObject *r = err ? NULL : PyObject_CallOneArg(e.fn, e.arg);
        Py_DECREF(e.fn);
        Py_DECREF(e.arg);
        if (!r) return NULL;
        Py_DECREF(r);
        n++;
    }
    return PyLong_FromLongLong(n);
}

/* peek(): the head's time, inf when empty. */
static PyObject *EventQueue_peek(EventQueueObject *self, PyObject *unused) {
    return PyFloat_FromDouble(self->n ? self->heap[0].t : INFINITY);
}

static Py_ssize_t EventQueue_len(EventQueueObject *self) { return self->n; }

static PyMethodDef EventQueue_methods[] = {
    {"push", (PyCFunction)(void (*)(void))EventQueue_push, METH_FASTCALL,
     "push(t_s, fn, arg): call fn(arg) at simulated time t_s"},
    {"schedule", (PyCFunction)(void (*)(void))EventQueue_schedule, METH_FASTCALL,
     "schedule(t_s, fn, arg): call fn(arg) at simulated time t_s, or now if that is past"},
    {"run", (PyCFunction)(void (*)(void))EventQueue_run, METH_FASTCALL,
     "run(end_s, simpy_queue): run the events due by end_s while simpy_queue is empty; "
     "returns how many ran"},
    {"peek", (PyCFunction)EventQueue_peek, METH_NOARGS, "peek(): the next event's time (inf if none)"},
    {NULL}};

static PySequenceMethods EventQueue_as_sequence = {.sq_length = (lenfunc)EventQueue_len};

static PyTypeObject EventQueueType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "simulator._eventq.EventQueue",
    .tp_basicsize = sizeof(EventQueueObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "EventQueue(env): calls fn(arg) at simulated times, in (time, insertion) order",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)EventQueue_init,
    .tp_dealloc = (destructor)EventQueue_dealloc,
    .tp_traverse = (traverseproc)EventQueue_traverse,
    .tp_clear = (inquiry)EventQueue_clear,
    .tp_methods = EventQueue_methods,
    .tp_as_sequence = &EventQueue_as_sequence,
};

static struct PyModuleDef moduledef = {PyModuleDef_HEAD_INIT, "simulator._eventq",
                                       "The simulation's event queue in C.", -1, NULL};

PyMODINIT_FUNC PyInit__eventq(void) {
    if (PyType_Ready(&EventQueueType) < 0) return NULL;
    str_now = PyUnicode_InternFromString("_now");
    if (!str_now) return NULL;
    PyObject *m = PyModule_Create(&moduledef);
    if (!m) return NULL;
    if (PyModule_AddObjectRef(m, "EventQueue", (PyObject *)&EventQueueType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
