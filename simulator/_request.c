/* The simulator's per-request record in C (simulator.model.Request's base).
 *
 * A request lives from its SYN to its last ACK, about 0.3 simulated s; at 1,024 servers and
 * 64 LBs thousands are in flight, so by the time a handler touches one again it has left the
 * caches. As a Python object with slots, each of its numbers was an object of its own (a
 * float or a large int elsewhere on the heap): reading ``req.work_s`` missed twice, once for
 * the request and once for the float. Here the numbers are stored inline, so a request is
 * one 144-byte block (with the collector's header); reading a field makes a fresh float or int
 * from it (the same value). */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include "_request.h"

static int Request_init(RequestObject *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"rid", "client", "kidx", "lb", "t0", "work_s", "io_s", NULL};
    double io_s = 0.0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "LLLLdd|d:Request", kwlist, &self->id,
                                     &self->client, &self->kidx, &self->lb, &self->t0,
                                     &self->work_s, &io_s))
        return -1;
    self->io_s = io_s;
    self->server = -1;
    self->t_srv_arrive = self->t_srv_done = self->t_done = -1.0;
    self->status = 0;
    Py_XSETREF(self->paths, Py_NewRef(Py_None));
    Py_XSETREF(self->resp_tms, Py_NewRef(Py_None));
    return 0;
}

static int Request_traverse(RequestObject *self, visitproc visit, void *arg) {
    Py_VISIT(self->paths);
    Py_VISIT(self->resp_tms);
    return 0;
}

static int Request_clear(RequestObject *self) {
    Py_CLEAR(self->paths);
    Py_CLEAR(self->resp_tms);
    return 0;
}

/* A Python subclass's dealloc and traverse (subtype_dealloc / subtype_traverse) call these and
 * handle the reference to the subclass themselves. */
static void Request_dealloc(RequestObject *self) {
    PyObject_GC_UnTrack(self);
    Request_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

#define LL(name, doc) {#name, T_LONGLONG, offsetof(RequestObject, name), 0, doc}
#define DBL(name, doc) {#name, T_DOUBLE, offsetof(RequestObject, name), 0, doc}

static PyMemberDef Request_members[] = {
    LL(id, "arrival index (ids are consecutive from 0)"),
    LL(client, "client index"),
    LL(kidx, "row of the flow's key in the simulation's key table"),
    LL(lb, "LB index"),
    LL(server, "chosen server (-1: none yet)"),
    DBL(t0, "time the client sends the SYN, s"),
    DBL(work_s, "CPU work, s"),
    DBL(io_s, "time holding a worker without the CPU, s"),
    DBL(t_srv_arrive, "time the request reached its server (-1.0: not yet)"),
    DBL(t_srv_done, "time the server finished its CPU work (-1.0: not yet)"),
    DBL(t_done, "time the last response byte reached the client, or of the drop (-1.0: not yet)"),
    {"status", T_INT, offsetof(RequestObject, status), 0, "PENDING, COMPLETED or DROPPED"},
    {"paths", T_OBJECT, offsetof(RequestObject, paths), 0,
     "(s -> c, c -> lb, lb -> s) from the server's admission, or None"},
    {"resp_tms", T_OBJECT, offsetof(RequestObject, resp_tms), 0,
     "the response's templates (Simulation._flow_templates), or None"},
    {NULL}};

static PyTypeObject RequestType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "simulator._request.RequestRecord",
    .tp_doc = "One request/flow; times in simulated seconds (-1.0 = not reached). "
              "RequestRecord(rid, client, kidx, lb, t0, work_s, io_s=0.0)",
    .tp_basicsize = sizeof(RequestObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Request_init,
    .tp_dealloc = (destructor)Request_dealloc,
    .tp_traverse = (traverseproc)Request_traverse,
    .tp_clear = (inquiry)Request_clear,
    .tp_members = Request_members,
};

static struct PyModuleDef request_module = {PyModuleDef_HEAD_INIT, "simulator._request",
                                            "The simulator's per-request record in C.", -1, NULL};

PyMODINIT_FUNC PyInit__request(void) {
    if (PyType_Ready(&RequestType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&request_module);
    if (!m)
        return NULL;
    if (PyModule_AddObjectRef(m, "RequestRecord", (PyObject *)&RequestType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
