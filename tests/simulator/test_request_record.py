"""The per-request record in C (simulator/_request.c, the base of simulator.model.Request): its
fields hold exactly what was stored (doubles to the bit, 64-bit ints, objects), start at the
documented defaults, refuse unknown attributes and bad constructor arguments, and a request in
a reference cycle is collected."""

from __future__ import annotations

import copy
import gc
import math
import pickle
import struct
import sys
import weakref

import pytest

from simulator.model import Request
from simulator.records import PENDING, request_frame

INT_FIELDS = ("id", "client", "kidx", "lb", "server")
FLOAT_FIELDS = ("t0", "work_s", "io_s", "t_srv_arrive", "t_srv_done", "t_done")


def bits(x: float) -> bytes:
    return struct.pack("<d", x)


def test_defaults_after_construction():
    r = Request(7, 2, 123_456, 3, 0.125, 0.2)
    assert (r.id, r.client, r.kidx, r.lb, r.server) == (7, 2, 123_456, 3, -1)
    assert (r.t0, r.work_s, r.io_s) == (0.125, 0.2, 0.0)
    assert (r.t_srv_arrive, r.t_srv_done, r.t_done) == (-1.0, -1.0, -1.0)
    assert r.status == PENDING
    assert r.paths is None and r.resp_tms is None
    assert Request(0, 0, 0, 0, 0.0, 1.0, io_s=0.5).io_s == 0.5
    assert Request(rid=1, client=0, kidx=0, lb=0, t0=1.0, work_s=2.0).t0 == 1.0


@pytest.mark.parametrize("value", [0.1, -1.0, 1e-300, 5e-324, 1.7976931348623157e308, -0.0,
                                   math.inf, 0.30000000000000004])
def test_float_fields_keep_every_bit(value):
    r = Request(0, 0, 0, 0, 0.0, 0.0)
    for name in FLOAT_FIELDS:
        setattr(r, name, value)
        got = getattr(r, name)
        assert type(got) is float and bits(got) == bits(value), name
    r.t_done = math.nan
    assert math.isnan(r.t_done)


@pytest.mark.parametrize("value", [0, -1, 255, 2**31, 2**62 + 12_345, -(2**63), 2**63 - 1])
def test_int_fields_keep_64_bit_values(value):
    r = Request(0, 0, 0, 0, 0.0, 0.0)
    for name in INT_FIELDS:
        setattr(r, name, value)
        got = getattr(r, name)
        assert type(got) is int and got == value, name


def test_int_fields_refuse_what_does_not_fit():
    r = Request(0, 0, 0, 0, 0.0, 0.0)
    with pytest.raises(OverflowError):
        r.server = 2**63
    with pytest.raises(TypeError):
        r.server = 1.5
    with pytest.raises(TypeError):
        r.t_done = "soon"
    assert r.server == -1 and r.t_done == -1.0  # a refused store leaves the field as it was


def test_object_fields_and_unknown_attributes():
    r = Request(0, 0, 0, 0, 0.0, 0.0)
    paths, tms = ("a", "b", "c"), (1, 2)
    r.paths, r.resp_tms = paths, tms
    assert r.paths is paths and r.resp_tms is tms
    r.paths = None
    assert r.paths is None
    with pytest.raises(AttributeError):
        r.colour = "blue"  # no __dict__: a misspelt field is an error, as with __slots__
    assert not hasattr(r, "__dict__")


@pytest.mark.parametrize("args", [(), (1, 2, 3, 4, 0.0), ("x", 0, 0, 0, 0.0, 0.0),
                                  (0, 0, 0, 0, "t0", 0.0), (0, 0, 0, 0, 0.0, 0.0, 0.0, 9)])
def test_bad_constructor_arguments(args):
    with pytest.raises(TypeError):
        Request(*args)


def test_numbers_are_inline_one_block_per_request():
    """The point of the type: a request is one allocation, not one per number."""
    r = Request(10**12, 3, 10**9, 5, 0.5, 0.25)
    assert sys.getsizeof(r) <= 144
    assert gc.get_referents(r) == [type(r), None, None]  # its type and the two object fields


def test_a_request_in_a_reference_cycle_is_collected():
    class Holder:
        pass

    h = Holder()
    r = Request(0, 0, 0, 0, 0.0, 0.0)
    h.req = r
    r.paths = (h,)  # r -> tuple -> h -> r
    gone = weakref.ref(h)
    del h, r
    gc.collect()
    assert gone() is None


def test_the_requests_table_reads_the_fields():
    r = Request(4, 1, 99, 0, 1.0, 0.3)
    r.server, r.t_srv_arrive, r.t_srv_done, r.t_done, r.status = 2, 1.01, 1.31, 1.35, 1
    row = request_frame([r], end_s=10.0).iloc[0]
    assert (row["id"], row["client"], row["lb"], row["server"]) == (4, 1, 0, 2)
    assert row["status"] == "completed" and row["jct_s"] == pytest.approx(0.35)
    assert row["sojourn_s"] == pytest.approx(0.3)


def test_pickle_and_copy_keep_every_field():
    r = Request(3, 1, 2**40, 7, 0.1, 0.2, io_s=0.05)
    r.server, r.t_srv_arrive, r.t_srv_done, r.t_done, r.status = 5, 0.3, 0.5, 0.55, 1
    r.paths, r.resp_tms = ("p",), ("t", 1)
    names = INT_FIELDS + FLOAT_FIELDS + ("status", "paths", "resp_tms")
    for twin in (pickle.loads(pickle.dumps(r)), copy.copy(r), copy.deepcopy(r)):
        assert type(twin) is Request and twin is not r
        assert [getattr(twin, n) for n in names] == [getattr(r, n) for n in names]
        assert twin.key == r.key
