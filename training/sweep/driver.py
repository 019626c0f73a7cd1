"""The sweep's driver: ``run_sweep`` runs every cell of a grid on an executor into a directory,
resumable at every level, and writes the results table after every cell.

Nothing is lost: ``DIR/sweep.json`` (``MANIFEST``: grid, cells, versions, commit) is written
first; each finished cell writes its record in its directory (``cell.CELL_RECORD``), and the
driver rewrites ``DIR/results.parquet`` and ``DIR/results.csv`` (``RESULTS_PARQUET``,
``RESULTS_CSV``; one row per finished cell, ``cell.row_columns``) atomically after every cell.
A rerun skips cells with a record (or a finished run), resumes a cell killed mid-run from its
checkpoint (``training.resume``), so a sweep whose driver was killed ends with the table of an
uninterrupted one (bitwise for seeded CPU cells).  One driver at a time holds a directory (an
exclusive lock).  The driver keeps the executor's slots full, submitting the next cell before it
writes the table; a cell whose worker died is retried (``retries`` times; a last attempt runs
alone, so that only the cell that kills its worker is blamed).  Grid points of one cell identity
(``grid.cell_id``: a no-CoT model for every k) run once and fill each of their rows.  A cluster
that cannot go on (``executors.ClusterError``: its scheduler lost, a worker without cotgd or of
other versions) ends the sweep with that one-line error; what finished is kept.
"""
from __future__ import annotations

import concurrent.futures as cf
import contextlib
import json
import os
import sys
import time
from dataclasses import dataclass

from ..errors import one_line
from ..io import atomic_write_bytes, atomic_write_text
from .cell import CELLS_DIR, attempt_started, cell_path, cell_task, read_record, record_row, row_columns, run_cell
from .executors import dask_executor, default_workers, local_executor
from .grid import Cell, Grid, load_grid, parse_grid

#: The sweep's files in its directory (a cell's own are in ``cell``).
MANIFEST = "sweep.json"
RESULTS_PARQUET = "results.parquet"
RESULTS_CSV = "results.csv"
#: The ``kind`` of a sweep's manifest.
KIND = "cotgd-sweep"


@dataclass
class SweepResult:
    """A finished ``run_sweep``: the ``table`` (pandas, one row per grid point in grid order),
    the directory, how many rows were filled now and how many were reused, the status counts,
    and ``distinct``: how many distinct cells (runs) the grid's points need."""

    table: object
    name: str
    out: str
    ran: int
    reused: int
    counts: dict
    seconds: float
    distinct: int = 0


def _check_out(out: str, grid: Grid, cells: list) -> dict | None:
    """ValueError when ``out`` is a file, holds something else, or another sweep; the previous
    manifest when it holds this one."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise ValueError(f"--out {out!r} exists and is not a directory")
    if not os.path.isdir(out):
        return None
    path = os.path.join(out, MANIFEST)
    if not os.path.exists(path):
        others = [n for n in os.listdir(out) if not n.startswith(".")
                  and not (n == CELLS_DIR and os.path.isdir(os.path.join(out, n))
                           and not os.listdir(os.path.join(out, n)))]
        if others:
            raise ValueError(f"--out {out!r} is not empty and holds no sweep ({MANIFEST} missing): "
                             f"choose a new or empty directory")
        return None
    try:
        with open(path, encoding="utf-8") as f:
            manifest = json.load(f)
    except (OSError, ValueError):
        raise ValueError(f"--out {out!r}: {MANIFEST} is unreadable; choose another directory") from None
    if not isinstance(manifest, dict) or manifest.get("kind") != KIND:
        raise ValueError(f"--out {out!r}: {MANIFEST} is not a cotgd sweep manifest")
    if manifest.get("name") != grid.name:
        raise ValueError(f"--out {out!r} holds the sweep {manifest.get('name')!r}, not {grid.name!r} "
                         f"(a grid's name is its 'name' key, else its file name): use another --out")
    before = {c.get("id") for c in manifest.get("cells", []) if isinstance(c, dict)}
    if before and not before & {c.id for c in cells}:
        raise ValueError(f"--out {out!r} holds a different sweep {grid.name!r} that shares no cell with "
                         f"this grid: use another --out")
    return manifest


def _manifest(grid: Grid, cells: list, out: str, previous: dict | None, executor: str, status: str,
              counts: dict | None = None, retries: int | None = None) -> dict:
    """``sweep.json``'s content; ``retries``: the attempts after a lost worker this run allowed
    (None: the grid's)."""
    from ..rundir import git_commit, versions
    now = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    return {"kind": KIND, "version": 1, "name": grid.name, "status": status,
            "grid_file": grid.source, "grid": grid.raw, "train": grid.train,
            "retries": grid.retries if retries is None else retries,
            "cells": [{"name": c.name, "id": c.id, "axes": c.axes} for c in cells],
            "executor": executor, "versions": versions(), "git_commit": git_commit(),
            "created": (previous or {}).get("created", now), "updated": now, "counts": counts or {}}


def _write_manifest(out: str, manifest: dict) -> None:
    atomic_write_text(os.path.join(out, MANIFEST), json.dumps(manifest, indent=2) + "\n")


def table_frame(rows: list, columns: list):
    """The rows as a pandas DataFrame with these columns (numbers as float64, absent values
    NaN / None)."""
    import pandas as pd
    frame = pd.DataFrame.from_records([{c: r.get(c) for c in columns} for r in rows], columns=columns)
    for column in columns:
        values = [r.get(column) for r in rows]
        present = [v for v in values if v is not None]
        if present and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
            if all(isinstance(v, int) for v in present) and len(present) == len(values):
                frame[column] = frame[column].astype("int64")
            else:
                frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("float64")
        elif present and all(isinstance(v, bool) for v in present) and len(present) == len(values):
            frame[column] = frame[column].astype(bool)
        elif not present:
            frame[column] = frame[column].astype("object")
    return frame


def write_results(out: str, rows: list, columns: list) -> object:
    """``results.parquet`` and ``results.csv`` from the rows, each written atomically."""
    import io
    frame = table_frame(rows, columns)
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False, engine="pyarrow")
    atomic_write_bytes(os.path.join(out, RESULTS_PARQUET), buffer.getvalue())
    atomic_write_text(os.path.join(out, RESULTS_CSV), frame.to_csv(index=False))
    return frame


def load_results(out) -> object:
    """``DIR/results.parquet`` as a DataFrame (``results.csv`` when there is no parquet file);
    ValueError when the directory has neither."""
    import pandas as pd
    out = os.fspath(out)
    parquet, csv = os.path.join(out, RESULTS_PARQUET), os.path.join(out, RESULTS_CSV)
    if os.path.isfile(parquet):
        return pd.read_parquet(parquet)
    if os.path.isfile(csv):
        return pd.read_csv(csv)
    raise ValueError(f"{out!r} holds no sweep results ({RESULTS_PARQUET} / {RESULTS_CSV})")


def _lost_record(cell: Cell, grid: Grid, error: str, attempts: int) -> dict:
    return {"id": cell.id, "name": cell.name, "status": "failed", "error": error, "warnings": None,
            "train": grid.train, "reference": None, "summary": None, "seconds": None, "worker": None,
            "attempts": attempts}


def run_sweep(grid, out, *, executor=None, workers: int | None = None, dask_workers: int | None = None,
              scheduler: str | None = None, progress: bool | None = None, retries: int | None = None,
              retry_failed: bool = False) -> SweepResult:
    """Run every cell of ``grid`` (a ``Grid``, a grid file path, or a table) into ``out`` and
    return the ``SweepResult`` (module docstring).

    The engine: ``executor`` (a ``CellExecutor`` the caller keeps and closes), else
    ``dask_workers`` (a Dask ``LocalCluster`` of that many processes), else ``scheduler`` (a
    running Dask scheduler's address), else ``workers`` local processes (default: the usable
    cores).  ``progress``: a bar over cells with an ETA (None: when stderr is a terminal).
    ``retries``: attempts after a lost worker (None: the grid's).  ``retry_failed``: rerun the
    cells recorded as failed.  ValueError for a bad grid or ``out``; another driver running in
    ``out`` is a ValueError too."""
    import fcntl

    from tqdm import tqdm
    started = time.perf_counter()
    if isinstance(grid, (str, os.PathLike)):
        grid = load_grid(grid)
    elif isinstance(grid, dict):
        grid = parse_grid(grid)
    elif not isinstance(grid, Grid):
        raise ValueError(f"grid must be a grid file, a table or a Grid, got {type(grid).__name__}")
    if not isinstance(out, (str, os.PathLike)) or not os.fspath(out).strip():
        raise ValueError(f"out must be a directory path, got {out!r}")
    retries = grid.retries if retries is None else retries
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ValueError(f"retries must be an integer >= 0, got {retries!r}")
    out = os.path.abspath(os.fspath(out))
    cells = grid.expand()
    if os.path.exists(out) and not os.path.isdir(out):
        raise ValueError(f"--out {out!r} exists and is not a directory")
    os.makedirs(out, exist_ok=True)
    lock_fd = os.open(os.path.join(out, ".sweep.lock"), os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ValueError(f"--out {out!r}: another cotgd sweep is running in this directory") from None
        previous = _check_out(out, grid, cells)
        return _drive(grid, cells, out, previous, executor=executor, workers=workers, dask_workers=dask_workers,
                      scheduler=scheduler, progress=progress, retries=retries, retry_failed=retry_failed,
                      started=started, tqdm=tqdm)
    finally:
        os.close(lock_fd)


def _executor_label(executor, workers, dask_workers, scheduler) -> str:
    if executor is not None:
        return executor.description
    if dask_workers is not None:
        return f"dask-{dask_workers}"
    if scheduler is not None:
        return f"dask-{scheduler}"
    return f"local-{workers or default_workers()}"


def _drive(grid, cells, out, previous, *, executor, workers, dask_workers, scheduler, progress, retries,
           retry_failed, started, tqdm) -> SweepResult:
    columns = row_columns(cells)
    label = _executor_label(executor, workers, dask_workers, scheduler)
    _write_manifest(out, _manifest(grid, cells, out, previous, label, "running", retries=retries))
    os.makedirs(os.path.join(out, CELLS_DIR), exist_ok=True)
    points: dict = {}                   # cell id -> its grid points (the first one runs it)
    for cell in cells:
        points.setdefault(cell.id, []).append(cell)
    rows = {}                           # grid point index -> row
    for first, *_ in points.values():
        record = read_record(cell_path(out, first.name), first.run_config)
        if record is not None and not (retry_failed and record["status"] == "failed"):
            for point in points[first.id]:
                rows[point.index] = record_row(point, record)
    reused = len(rows)

    def ordered():
        return [rows[c.index] for c in cells if c.index in rows]

    write_results(out, ordered(), columns)
    pending = [group[0] for group in points.values() if group[0].index not in rows]
    show = sys.stderr.isatty() if progress is None else bool(progress)
    bar = tqdm(total=len(cells), initial=reused, unit="cell", desc=f"sweep {grid.name}", disable=not show,
               dynamic_ncols=True, file=sys.stderr)
    own, finished = None, False
    try:
        if pending:
            if executor is None:
                if dask_workers is not None:
                    own = executor = dask_executor(dask_workers)
                elif scheduler is not None:
                    own = executor = dask_executor(address=scheduler)
                else:
                    own = executor = local_executor(workers)
            _run_pending(grid, pending, out, executor, rows, retries, bar,
                         lambda: write_results(out, ordered(), columns), retry_failed, points=points)
        finished = True
    finally:
        bar.close()
        if own is not None:
            own.close(abort=not finished)
    frame = write_results(out, ordered(), columns)
    counts = _counts(rows)
    _write_manifest(out, _manifest(grid, cells, out, previous, label, "finished", counts, retries))
    return SweepResult(table=frame, name=grid.name, out=out, ran=len(rows) - reused, reused=reused, counts=counts,
                       seconds=time.perf_counter() - started, distinct=len(points))


def _counts(rows: dict) -> dict:
    return {s: sum(1 for r in rows.values() if r.get("status") == s) for s in ("done", "failed", "diverged")}


def _run_pending(grid, pending, out, executor, rows, retries, bar, save, retry_failed=False, *,
                 points: dict | None = None) -> None:
    """Keep ``executor.slots() + executor.queued`` cells in flight, submitting the next before
    the driver writes the table; record each cell's row, and those of the grid points that share
    it (``points``: cell id -> points), as it comes (``save``).  A future that raises is an
    infrastructure failure (the cell's own errors come back as records): the cell is retried up
    to ``retries`` times, its last attempt alone; a broken local pool is renewed.  A failure the
    engine cannot go on from (``executor.failure``: a lost scheduler, a worker without cotgd or
    of other versions) raises its ``ClusterError``.  The bar shows done / running / failed and a
    line per failed cell with the worker (and job) it ran on."""
    points = points if points is not None else {c.id: [c] for c in pending}
    queue = list(pending)
    attempts = {c.name: 0 for c in pending}
    running: dict = {}                  # future -> cell
    stalls = 0                          # rounds of failures of cells that never started, in a row
    alone = []                          # a cell on its last attempt runs with nothing beside it

    def top_up():
        while queue and not alone and len(running) < executor.slots() + executor.queued:
            cell = queue[0]
            if attempts[cell.name] >= retries and retries > 0:
                if running:
                    return
                alone.append(cell)
            queue.pop(0)
            attempts[cell.name] += 1
            task = cell_task(grid, cell, out, attempts[cell.name], retry_failed)
            try:
                future = executor.executor.submit(run_cell, task)
            except cf.BrokenExecutor:
                executor.renew()
                future = executor.executor.submit(run_cell, task)
            running[future] = cell

    def spent(cell) -> None:
        """A failed future: its attempt counts only if the cell had started (or after too many
        failures of cells that never started, so that the sweep ends)."""
        nonlocal stalled
        if stalls <= retries and not attempt_started(cell_path(out, cell.name), attempts[cell.name]):
            attempts[cell.name] -= 1
            stalled = True

    while queue or running:
        top_up()
        done, _ = cf.wait(list(running), timeout=5.0, return_when=cf.FIRST_COMPLETED)
        if not done:
            fatal = executor.failure()
            if fatal is not None:
                raise fatal
        broken = stalled = False
        finished = []
        for future in done:
            cell = running.pop(future)
            if cell in alone:
                alone.remove(cell)
            try:
                record = future.result()
            except Exception as exc:        # a lost worker, a broken pool, a task that could not run
                fatal = executor.failure(exc)
                if fatal is not None:
                    raise fatal from None
                broken = broken or isinstance(exc, cf.BrokenExecutor)
                spent(cell)
                if attempts[cell.name] <= retries:
                    queue.insert(0, cell)
                    continue
                # in the table, not in cell.json: a rerun tries the cell again
                record = _lost_record(cell, grid, f"worker lost {attempts[cell.name]} times: "
                                      f"{type(exc).__name__}: {one_line(exc, 500)}", attempts[cell.name])
            finished.append((cell, record))
        if broken:
            # every cell in flight went down with the pool; the pool is replaced
            for future in list(running):
                cell = running.pop(future)
                with contextlib.suppress(Exception):
                    future.result(timeout=0)
                spent(cell)
                queue.insert(0, cell)
            executor.renew()
        stalls = 0 if finished else stalls + stalled
        if not finished:
            continue
        top_up()                        # the next cells start before the table is written
        filled = 0
        for cell, record in finished:
            for point in points[cell.id]:
                rows[point.index] = record_row(point, record)
                filled += 1
            if record.get("status") in ("failed", "diverged") and not bar.disable:
                where = executor.where(record)
                bar.write(f"cell {cell.name} {record['status']}{' on ' + where if where else ''}: "
                          f"{one_line(record.get('error') or '', 200)}", file=sys.stderr)
        save()
        c = _counts(rows)
        bar.set_postfix_str(f"done {c['done']} running {min(len(running), executor.slots())} "
                            f"failed {c['failed'] + c['diverged']}", refresh=False)
        bar.update(filled)
