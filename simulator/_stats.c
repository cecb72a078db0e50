/* Reservoir statistics in one compiled pass (simulator.features.reservoir_stats).
 *
 * At 64 LBs x 1,024 servers a step has 131,072 reservoirs of up to 32 samples; the vectorised
 * numpy version handles them as padded (R, K) matrices, about thirty whole-matrix passes plus an
 * argsort, ~0.6 s per step. Here each reservoir is one small loop over its filled slots: a
 * stable insertion sort of at most K values, then the sums. The definitions are the module
 * docstring's of simulator/features.py; tests/simulator/test_features_c.py checks this against
 * that numpy version (kept there as the reference) on random reservoirs with ties.
 *
 * Arrays come through the buffer protocol (C-contiguous float64 samples[R][K][2] of (time,
 * value), the layout of a msg_out frame's reservoir snapshots; int64 fill[R]; float64
 * out[R][n_stats] pre-filled with NaN), so no numpy headers are needed to build it. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#define N_PAPER 5  /* mean, p90, std, decayed mean, decayed p90 */
#define N_ROBUST 4 /* geometric mean, median, recent geometric mean, recent count */
#define MIN_LOG_S 1e-6
#define RECENT_S 1.0 /* features.RECENT_S and _MIN_LOG_S: test_features_c compares with numpy using those */

/* Interpolated quantile q of sorted vs[0..c) (numpy's default "linear" method). */
static inline double quantile(const double *vs, Py_ssize_t c, double q) {
    double h = (double)(c - 1) * q;
    double lo_f = floor(h);
    Py_ssize_t lo = (Py_ssize_t)lo_f, hi = lo + 1 < c - 1 ? lo + 1 : c - 1;
    return vs[lo] + (h - lo_f) * (vs[hi] - vs[lo]);
}

#define T(i) tv[2 * (i)]     /* sample i's time */
#define V(i) tv[2 * (i) + 1] /* sample i's value */

/* One reservoir of c >= 1 samples tv = (t, v) pairs; order, vs, w, cum: scratch of >= c entries. */
static void one_reservoir(const double *tv, Py_ssize_t c, double decay, int robust,
                          Py_ssize_t *order, double *vs, double *w, double *cum, double *out) {
    for (Py_ssize_t i = 0; i < c; i++) { /* stable insertion sort of the slot indices by value */
        Py_ssize_t j = i;
        while (j > 0 && V(order[j - 1]) > V(i)) {
            order[j] = order[j - 1];
            j--;
        }
        order[j] = i;
    }
    double sum = 0.0, newest = -INFINITY;
    for (Py_ssize_t i = 0; i < c; i++) {
        vs[i] = V(order[i]);
        sum += V(i);
        if (T(i) > newest) newest = T(i);
    }
    double mean = sum / (double)c, sq = 0.0, wsum = 0.0, wv = 0.0;
    for (Py_ssize_t i = 0; i < c; i++) {
        double d = V(i) - mean;
        sq += d * d;
        w[i] = pow(decay, newest - T(i)); /* <= 1: relative to the newest sample */
        wsum += w[i];
        wv += w[i] * V(i);
    }
    /* decayed p90: the first sorted value whose cumulative weight reaches 90 % of the total */
    double cw = 0.0;
    for (Py_ssize_t i = 0; i < c; i++) cum[i] = cw += w[order[i]];
    double bar = 0.9 * cum[c - 1];
    Py_ssize_t idx = 0;
    while (idx < c - 1 && cum[idx] < bar) idx++;
    out[0] = mean;
    out[1] = quantile(vs, c, 0.9);
    out[2] = sqrt(sq / (double)c);
    out[3] = wv / (wsum > 0 ? wsum : 1.0);
    out[4] = vs[idx];
    if (!robust) return;
    double logsum = 0.0, recent_logsum = 0.0;
    Py_ssize_t n_recent = 0;
    for (Py_ssize_t i = 0; i < c; i++) {
        double lv = log(V(i) > MIN_LOG_S ? V(i) : MIN_LOG_S);
        logsum += lv;
        if (T(i) >= newest - RECENT_S) {
            recent_logsum += lv;
            n_recent++;
        }
    }
    out[5] = exp(logsum / (double)c);
    out[6] = quantile(vs, c, 0.5);
    out[7] = exp(recent_logsum / (double)(n_recent > 0 ? n_recent : 1));
    out[8] = (double)n_recent;
}

static int get_buffer(PyObject *o, Py_buffer *b, const char *fmt, int writable, const char *name) {
    if (PyObject_GetBuffer(o, b, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0)) < 0)
        return -1;
    if (strcmp(b->format, fmt) != 0 && !(fmt[0] == 'q' && strcmp(b->format, "l") == 0 && b->itemsize == 8)) {
        PyErr_Format(PyExc_TypeError, "reservoir_stats: %s must be C-contiguous of format '%s', not '%s'",
                     name, fmt, b->format);
        PyBuffer_Release(b);
        return -1;
    }
    return 0;
}

/* reservoir_stats(samples_RK2, fill_R, k, decay, robust, out, rows): row i of out holds the
 * statistics of reservoir rows[i] (rows None: of reservoir i); empty reservoirs keep their NaN. */
static PyObject *reservoir_stats(PyObject *mod, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 7) {
        PyErr_SetString(PyExc_TypeError,
                        "reservoir_stats(samples, fill, k, decay, robust, out, rows) takes 7 arguments");
        return NULL;
    }
    Py_ssize_t k = PyLong_AsSsize_t(args[2]);
    double decay = PyFloat_AsDouble(args[3]);
    int robust = PyObject_IsTrue(args[4]);
    if (PyErr_Occurred() || robust < 0) return NULL;
    Py_buffer bs, bf, bo, brows = {0};
    if (get_buffer(args[0], &bs, "d", 0, "samples") < 0) return NULL;
    if (get_buffer(args[1], &bf, "q", 0, "fill") < 0) goto fail_s;
    if (get_buffer(args[5], &bo, "d", 1, "out") < 0) goto fail_f;
    if (args[6] != Py_None && get_buffer(args[6], &brows, "q", 0, "rows") < 0) goto fail_o;
    const int64_t *rows = args[6] != Py_None ? brows.buf : NULL;
    Py_ssize_t n_r = bf.len / 8, width = N_PAPER + (robust ? N_ROBUST : 0);
    Py_ssize_t n_out = rows ? brows.len / 8 : n_r;
    if (k < 1 || bs.len != n_r * k * 2 * 8 || bo.len != n_out * width * 8) {
        PyErr_SetString(PyExc_ValueError, "reservoir_stats: array sizes do not match R, K and the width");
        goto fail_rows;
    }
    for (Py_ssize_t i = 0; rows && i < n_out; i++)
        if (rows[i] < 0 || rows[i] >= n_r) {
            PyErr_Format(PyExc_ValueError, "reservoir_stats: row %lld is not a reservoir (0..%zd)",
                         (long long)rows[i], n_r - 1);
            goto fail_rows;
        }
    const double *samples = bs.buf;
    const int64_t *fill = bf.buf;
    double *out = bo.buf;
    for (Py_ssize_t r = 0; r < n_r; r++)
        if (fill[r] < 0 || fill[r] > k) {
            PyErr_Format(PyExc_ValueError, "reservoir_stats: reservoir %zd has fill %lld, not in 0..%zd",
                         r, (long long)fill[r], k);
            goto fail_rows;
        }
    Py_ssize_t *order = PyMem_Malloc((size_t)k * sizeof(Py_ssize_t));
    double *vs = PyMem_Malloc(3 * (size_t)k * sizeof(double)); /* vs, w, cum */
    if (!order || !vs) {
        PyMem_Free(order);
        PyMem_Free(vs);
        PyErr_NoMemory();
        goto fail_rows;
    }
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n_out; i++) {
        Py_ssize_t r = rows ? (Py_ssize_t)rows[i] : i;
        if (fill[r] > 0)
            one_reservoir(samples + 2 * r * k, (Py_ssize_t)fill[r], decay, robust, order, vs, vs + k,
                          vs + 2 * k, out + i * width);
    }
    Py_END_ALLOW_THREADS
    PyMem_Free(order);
    PyMem_Free(vs);
    if (rows) PyBuffer_Release(&brows);
    PyBuffer_Release(&bo);
    PyBuffer_Release(&bf);
    PyBuffer_Release(&bs);
    Py_RETURN_NONE;
fail_rows:
    if (rows) PyBuffer_Release(&brows);
fail_o:
    PyBuffer_Release(&bo);
fail_f:
    PyBuffer_Release(&bf);
fail_s:
    PyBuffer_Release(&bs);
    return NULL;
}

static PyMethodDef module_methods[] = {
    {"reservoir_stats", (PyCFunction)(void (*)(void))reservoir_stats, METH_FASTCALL,
     "reservoir_stats(samples_RK2, fill_R, k, decay, robust, out, rows): the statistics of "
     "simulator.features.reservoir_stats of reservoirs rows (None: all) into out's rows"},
    {NULL}};

static struct PyModuleDef moduledef = {PyModuleDef_HEAD_INIT, "simulator._stats",
                                       "Reservoir statistics in C.", -1, module_methods};

PyMODINIT_FUNC PyInit__stats(void) { return PyModule_Create(&moduledef); }
