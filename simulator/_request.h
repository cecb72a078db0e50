/* The layout of simulator._request.RequestRecord, shared with the C server model
 * (simulator/_psserver.c), which reads and writes a request's fields in place. */

#ifndef MARLLB_SIM_REQUEST_H
#define MARLLB_SIM_REQUEST_H

#include <Python.h>

typedef struct {
    PyObject_HEAD
    long long id;     /* arrival index */
    long long client; /* client index */
    long long kidx;   /* row of the flow's key in the simulation's key table */
    long long lb;     /* LB index */
    long long server; /* chosen server, -1 before */
    double t0, work_s, io_s, t_srv_arrive, t_srv_done, t_done; /* -1.0: not reached */
    int status;                                                 /* records.PENDING / ... */
    PyObject *paths;    /* (s -> c, c -> lb, lb -> s) from the server's admission, or None */
    PyObject *resp_tms; /* the response's templates, or None */
} RequestObject;

#endif
