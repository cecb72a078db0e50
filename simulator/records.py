"""What a run records of its requests and LB steps while it runs.

The :class:`~simulator.model.Simulation` hands its recorder every request when it arrives and
again when it finishes -- completed (last response byte sent on its way, ``t_done`` known) or
dropped. Nothing changes a finished request afterwards: its server, times and status are final
(a completion whose last byte lands after ``duration_s`` stays "in_flight" for good), so its row
of the requests table can be made at once. Each LB step's per-server rows come the same way.

Recorders (the Simulation takes a factory ``(end_s, warmup_s, n_servers) -> Recorder``):

* :class:`Recorder` -- the summary statistics only (:class:`RequestStats`);
* :class:`MemoryRecorder` -- also keeps every Request and step row, and builds the two tables at
  the end (the default: tests, short runs, the RL envs; ~0.6 KB per request);
* :class:`ParquetRecorder` -- streams both tables to Parquet files while the run goes on
  (``run_experiment(out_dir=...)``, ``marllb sim run``).

The streamed requests.parquet holds the same rows as the in-memory table but in the order the
requests finished, then the ones still in flight at the end in id order (``id`` is always the
arrival index); readers sort by id (experiments.runs.read_table). Row order is deterministic,
so the same seed gives byte-identical files.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import pandas as pd

from simulator.features import FEATURE_NAMES

__all__ = ["PENDING", "COMPLETED", "DROPPED", "STEP_COLUMNS", "RecorderFactory", "RequestStats",
           "Recorder", "MemoryRecorder", "ParquetRecorder", "request_frame", "steps_frame"]

PENDING, COMPLETED, DROPPED = 0, 1, 2
STATUS_NAMES = ["completed", "dropped", "in_flight"]
#: columns of the steps table (one row per LB step and server)
STEP_COLUMNS = ("t_s", "lb", "server", "n_flow_on", "weight", *FEATURE_NAMES[1:])


def request_frame(reqs: Sequence[Any], end_s: float) -> pd.DataFrame:
    """The requests table rows of ``reqs`` (Request objects) as they stand at the run's end
    ``end_s``: completed means the last response byte reached the client by end_s."""
    n = len(reqs)
    status = np.empty(n, dtype=object)
    st = np.array([r.status for r in reqs], dtype=np.int8)
    t_done = np.array([r.t_done for r in reqs], dtype=float)
    completed = (st == COMPLETED) & (t_done <= end_s)
    dropped = st == DROPPED
    status[:] = "in_flight"
    status[completed] = "completed"
    status[dropped] = "dropped"
    t0 = np.array([r.t0 for r in reqs], dtype=float)
    t_sa = np.array([r.t_srv_arrive for r in reqs], dtype=float)
    t_sd = np.array([r.t_srv_done for r in reqs], dtype=float)
    srv_done = (t_sd >= 0) & (t_sd <= end_s)
    return pd.DataFrame({
        "id": np.array([r.id for r in reqs], dtype=np.int64),
        "client": np.array([r.client for r in reqs], dtype=np.int32),
        "lb": np.array([r.lb for r in reqs], dtype=np.int32),
        "server": np.array([r.server for r in reqs], dtype=np.int32),
        "t_arrive_s": t0,
        "t_done_s": np.where(completed | dropped, t_done, np.nan),
        "jct_s": np.where(completed, t_done - t0, np.nan),
        "work_s": np.array([r.work_s for r in reqs], dtype=float),
        "status": pd.Categorical(status, categories=STATUS_NAMES),
        "t_server_arrive_s": np.where(t_sa >= 0, t_sa, np.nan),
        "t_server_done_s": np.where(srv_done, t_sd, np.nan),
        "sojourn_s": np.where(srv_done, t_sd - t_sa, np.nan),
    })


def steps_frame(rows: Sequence[dict[str, np.ndarray]]) -> pd.DataFrame:
    """The steps table of ``rows`` (one dict of per-server arrays per LB step)."""
    steps = pd.DataFrame({c: np.concatenate([r[c] for r in rows]) if rows else np.empty(0)
                          for c in STEP_COLUMNS})
    steps["lb"] = steps["lb"].astype(np.int32)
    steps["server"] = steps["server"].astype(np.int32)
    steps["n_flow_on"] = steps["n_flow_on"].astype(np.int64)
    return steps


class RequestStats:
    """Exact counts of a run's requests, from its table rows.

    With ``keep_jct`` the JCTs of the *measured* requests (completed by ``end_s``, sent at or
    after ``warmup_s``) are also kept, 8 bytes each, for the mean and percentiles of a recorder
    that has no other copy of them. A recorder that streams its rows to disk reads them back
    instead (:mod:`simulator.jct_stats`), and nothing here grows with the run's length."""

    def __init__(self, warmup_s: float, n_servers: int, *, keep_jct: bool = True) -> None:
        self.warmup_s = warmup_s
        self.keep_jct = keep_jct
        self.arrived = 0  # counted by the recorder as requests arrive
        self.completed = 0
        self.dropped = 0
        self.measured = 0  # completed requests sent at or after warmup_s
        self.measured_per_server = np.zeros(n_servers, dtype=np.int64)
        self._jct: list[np.ndarray] = []  # measured JCTs, a chunk per add_rows

    def add_rows(self, rows: pd.DataFrame) -> None:
        """Count rows of the requests table (each request once, in its final state)."""
        status = rows["status"].cat.codes.to_numpy()  # codes follow STATUS_NAMES
        done = status == 0
        self.completed += int(done.sum())
        self.dropped += int((status == 1).sum())
        meas = done & (rows["t_arrive_s"].to_numpy() >= self.warmup_s)
        if not meas.any():
            return
        self.measured += int(meas.sum())
        self.measured_per_server += np.bincount(rows["server"].to_numpy()[meas],
                                                minlength=len(self.measured_per_server))
        if self.keep_jct:
            self._jct.append(rows["jct_s"].to_numpy()[meas].copy())

    @property
    def in_flight(self) -> int:
        return self.arrived - self.completed - self.dropped

    @property
    def nbytes(self) -> int:
        """Bytes held for the measured JCTs."""
        return sum(a.nbytes for a in self._jct)

    def jct_chunks(self) -> Iterator[np.ndarray]:
        """The kept JCTs of the measured requests, in chunks."""
        return iter(self._jct)


RecorderFactory = Callable[[float, float, int], "Recorder"]


class Recorder:
    """Summary statistics only: finished requests become table rows ``batch`` at a time, which
    are counted (:class:`RequestStats`) and dropped. Subclasses keep or write the rows
    (:meth:`_rows`) and the steps."""

    def __init__(self, end_s: float, warmup_s: float, n_servers: int, *, batch: int = 4096,
                 keep_jct: bool = True) -> None:
        self.end_s = end_s
        self.stats = RequestStats(warmup_s, n_servers, keep_jct=keep_jct)
        self._batch = batch
        self._done: list[Any] = []  # finished requests not yet turned into rows

    def arrived(self, req: Any) -> None:
        """A new request (ids are consecutive from 0)."""
        self.stats.arrived += 1

    def finished(self, req: Any) -> None:
        """``req`` completed or was dropped; it will not change again."""
        done = self._done
        done.append(req)
        if len(done) >= self._batch:
            self._rows(request_frame(done, self.end_s))
            self._done = []

    def _rows(self, rows: pd.DataFrame) -> None:
        """Rows of the requests table in their final state, each request once."""
        self.stats.add_rows(rows)

    def step(self, row: dict[str, np.ndarray]) -> None:
        """One LB's step: per-server arrays for every column of STEP_COLUMNS (and possibly more)."""

    def close(self) -> tuple[pd.DataFrame | None, pd.DataFrame | None]:
        """End of the run: the (requests, steps) tables if this recorder keeps them in memory,
        else (None, None) once everything is counted and written. Calling it again is harmless."""
        if self._done:
            self._rows(request_frame(self._done, self.end_s))
            self._done = []
        return None, None

    def measured_jct(self) -> Iterator[np.ndarray]:
        """After :meth:`close`: the JCTs of the measured requests, in chunks (any order); a
        :data:`simulator.jct_stats.Source` may call it more than once."""
        return self.stats.jct_chunks()


class MemoryRecorder(Recorder):
    """Keeps every Request (``requests``, index = id) and step row in memory; the tables and
    the statistics are made once, at the end, from the whole table."""

    def __init__(self, end_s: float, warmup_s: float, n_servers: int) -> None:
        super().__init__(end_s, warmup_s, n_servers)
        self.requests: list[Any] = []
        self.step_rows: list[dict[str, np.ndarray]] = []
        self._tables: tuple[pd.DataFrame, pd.DataFrame] | None = None

    def arrived(self, req: Any) -> None:
        self.stats.arrived += 1
        self.requests.append(req)

    def finished(self, req: Any) -> None:
        pass  # its row is made at the end, with everyone's

    def step(self, row: dict[str, np.ndarray]) -> None:
        self.step_rows.append(row)

    def close(self) -> tuple[pd.DataFrame | None, pd.DataFrame | None]:
        if self._tables is None:
            requests = request_frame(self.requests, self.end_s)
            self._rows(requests)
            self._tables = requests, steps_frame(self.step_rows)
        return self._tables


class _ParquetSink:
    """DataFrame chunks -> one Parquet file, a row group of at least ``group_rows`` rows at a
    time (the last one may be smaller). The writer opens on the first row group, with the
    first chunk's schema; every chunk must have the same columns and dtypes."""

    def __init__(self, path: Path, group_rows: int) -> None:
        self.path = path
        self.group_rows = group_rows
        self._chunks: list[Any] = []  # pyarrow Tables not yet written
        self._rows = 0
        self._writer: Any = None

    def add(self, df: pd.DataFrame) -> None:
        import pyarrow as pa

        # one thread: the chunks are small, a thread pool per call costs more than it saves
        self._chunks.append(pa.Table.from_pandas(df, preserve_index=False, nthreads=1))
        self._rows += len(df)
        if self._rows >= self.group_rows:
            self._flush()

    def _flush(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.concat_tables(self._chunks)
        if self._writer is None:
            self._writer = pq.ParquetWriter(self.path, table.schema)
        self._writer.write_table(table, row_group_size=len(table))
        self._chunks, self._rows = [], 0

    def close(self, empty: pd.DataFrame) -> None:
        """Write what is left; a file that got no rows at all is written from ``empty``."""
        if self._rows:
            self._flush()
        if self._writer is None:
            empty.to_parquet(self.path, index=False)
        else:
            self._writer.close()


class ParquetRecorder(Recorder):
    """Streams the requests and steps tables to ``out_dir``/requests.parquet and steps.parquet.

    Finished requests become rows ``batch`` at a time and are dropped; rows go to disk a row
    group (>= ``group_rows`` rows) at a time. In memory: the requests in flight, at most
    ``batch`` finished requests (~0.5 KB each) and step dicts, one row group of columns (~100 B
    per row); nothing that grows with the run's length. Requests still in flight at the end are
    written last, in id order. The JCT statistics are read back from the file."""

    def __init__(self, end_s: float, warmup_s: float, n_servers: int, *, out_dir: str | Path,
                 group_rows: int = 1 << 16, batch: int = 4096) -> None:
        super().__init__(end_s, warmup_s, n_servers, batch=batch, keep_jct=False)
        out = Path(out_dir)
        self._requests = _ParquetSink(out / "requests.parquet", group_rows)
        self._steps = _ParquetSink(out / "steps.parquet", group_rows)
        self._live: dict[int, Any] = {}  # id -> request not finished yet
        self._step_rows: list[dict[str, np.ndarray]] = []
        self._step_batch = max(1, math.ceil(batch / max(1, n_servers)))
        self._closed = False

    def arrived(self, req: Any) -> None:
        self.stats.arrived += 1
        self._live[req.id] = req

    def finished(self, req: Any) -> None:
        del self._live[req.id]
        super().finished(req)

    def _rows(self, rows: pd.DataFrame) -> None:
        self.stats.add_rows(rows)
        self._requests.add(rows)

    def step(self, row: dict[str, np.ndarray]) -> None:
        self._step_rows.append(row)
        if len(self._step_rows) >= self._step_batch:
            self._steps.add(steps_frame(self._step_rows))
            self._step_rows = []

    def close(self) -> tuple[pd.DataFrame | None, pd.DataFrame | None]:
        if self._closed:
            return None, None
        self._closed = True
        super().close()  # the finished requests left
        rest = [self._live[i] for i in sorted(self._live)]  # in flight: last, by id
        self._live = {}
        for k in range(0, len(rest), self._batch):
            self._rows(request_frame(rest[k:k + self._batch], self.end_s))
        self._requests.close(request_frame([], self.end_s))
        if self._step_rows:
            self._steps.add(steps_frame(self._step_rows))
            self._step_rows = []
        self._steps.close(steps_frame([]))
        return None, None

    def measured_jct(self) -> Iterator[np.ndarray]:
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        warm = self.stats.warmup_s
        cols = ["status", "t_arrive_s", "jct_s"]
        # pre_buffer=False: pyarrow would otherwise keep every column chunk it has read (the
        # file's size in memory while the ParquetFile lives); one thread: decoding threads each
        # keep an allocator heap (measured: +30 MB RSS per pass over a 2 M-row file)
        table = pq.ParquetFile(self._requests.path, pre_buffer=False)
        for batch in table.iter_batches(batch_size=1 << 16, columns=cols, use_threads=False):
            status = batch.column("status").dictionary_decode()
            keep = pc.and_(pc.equal(status, STATUS_NAMES[0]),
                           pc.greater_equal(batch.column("t_arrive_s"), warm))
            yield batch.column("jct_s").filter(keep).to_numpy()
