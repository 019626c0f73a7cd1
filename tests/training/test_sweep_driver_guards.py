"""Guards from the mutation campaign (tests/mutation): the sweep's driver (training/sweep/driver.py)
run in this process.

What a user of ``run_sweep`` relies on: the table (one row per grid point, in grid order, the
columns of ``row_columns``, each row its cell's record), ``results.parquet`` / ``results.csv``
equal to it, the counts (ran / reused / distinct, the status counts), ``sweep.json`` (status,
counts, executor), a rerun that reuses every finished cell, an ``out`` that holds something else
or another sweep refused in one line, one driver at a time, a cell whose worker is lost retried
(``retries`` times, its last attempt alone) and then recorded failed, ``retry_failed`` rerunning
the failed cells only, the progress bar's counts.

Real cells (tiny CPU runs) run on ``sweep_helpers.inline_executor``; the driver's scheduling
(slots, retries, a broken pool, a lost cluster) runs on ``Scripted``: an engine whose futures
complete only when the driver waits for them (one at a time, oldest first, as a pool of workers
would finish them), or raise as a lost worker's would, with ``stub_cell`` records (the keys of a
real record) instead of training.
"""
import concurrent.futures as cf
import fcntl
import io
import json
import os
import re
import shutil
import sys
import threading
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import pandas as pd
import pytest
import tqdm as tqdm_module

from sweep_helpers import inline_executor
from training import TrainConfig
from training.rundir import git_commit, versions
from training.sweep import (CELL_RECORD, CELLS_DIR, CellExecutor, ClusterError, Grid, cell_id, cell_path,
                            identity_dict, load_results, parse_grid, read_record, record_row, row_columns, run_cell,
                            run_sweep, table_frame, write_results)
from training.sweep import driver

FIXED = {"n": 4, "iters": 6, "batch": 8, "eval_every": 3, "eval_samples": 200, "theory_samples": 200,
         "structure_samples": 16, "device": "cpu"}
#: 8 grid points, 6 runs: a no-CoT model reads no k, so its two k points are one cell.
MAIN = {"name": "guards", "grid": {"d": [2, 3], "mode": ["cot", "nocot"], "k": [2, 3]}, "fixed": FIXED}
#: Cells of the scheduling tests (stub records, nothing trained).
STUB_FIXED = {"d": 2, "n": 4, "k": 2, "iters": 2}
TIME_FORMAT = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4}$"


def stub_grid(seeds=4, **top) -> dict:
    return {"name": "stub", "grid": {"seed": list(range(seeds))}, "fixed": dict(STUB_FIXED), **top}


# ------------------------------------------------------------------------------ the scripted engine
def stub_cell(task: dict, status: str = "done", error: str | None = None) -> dict:
    """What ``run_cell`` does, without training: a record of this cell (a recorded one is reused,
    a failed one again only with retry_failed), its start in worker.json, the record in cell.json."""
    config = TrainConfig(**task["config"])
    record = read_record(task["dir"], config)
    if record is not None and not (task["retry_failed"] and record["status"] == "failed"):
        return record
    os.makedirs(task["dir"], exist_ok=True)
    Path(task["dir"], "worker.json").write_text(json.dumps({"attempt": task["attempt"]}))
    record = {"id": cell_id(config), "name": task["name"], "config": identity_dict(config), "status": status,
              "error": error, "warnings": None, "train": task["train"], "reference": None,
              "summary": {"final_eval_loss": 1.0 + config.seed / 8, "iterations": config.iters},
              "seconds": 0.25, "worker": "stub-worker", "attempts": task["attempt"]}
    Path(task["dir"], CELL_RECORD).write_text(json.dumps(record))
    return record


class LazyFuture(cf.Future):
    """A future that runs its cell when the driver waits on it; ``collected`` once the driver
    asked for its result (until then it is in flight)."""

    def __init__(self, pool, fn, task):
        super().__init__()
        self.pool, self.fn, self.task, self.collected = pool, fn, task, False

    def result(self, timeout=None):
        self.collected = True
        if not self.done():
            self.pool.blocked.append(timeout)     # the driver asked a cell still in flight
        return super().result(timeout)


class ScriptedPool(cf.Executor):
    """``script``: cell seed -> outcomes of its successive runs: None (run it), ("lost", exc) (the
    worker started it, then it raises exc), ("never", exc) (raises exc before the cell started),
    ("status", status, error) (a stub record of that status).  ``runner``: stub_cell or run_cell."""

    def __init__(self, owner, script, runner, out):
        self.owner, self.script, self.runner, self.out = owner, script, runner, out
        self.futures, self.log, self.broken, self.blocked = [], [], 0, []

    def submit(self, fn, task):
        if fn is not run_cell:
            raise AssertionError(f"the engine was given {fn!r} to run, not run_cell")
        if self.broken:
            self.broken -= 1
            raise BrokenProcessPool("the pool was broken before this submit")
        seed = TrainConfig(**task["config"]).seed
        entry = {"seed": seed, "attempt": task["attempt"], "retry_failed": task["retry_failed"],
                 "in_flight": sum(1 for f in self.futures if not f.collected)}
        if self.out is not None:
            entry["table"] = table_seeds(self.out)
            manifest = json.loads(Path(self.out, "sweep.json").read_text())
            entry.update(status=manifest["status"], created=manifest["created"], executor=manifest["executor"],
                         counts=manifest["counts"], retries=manifest["retries"])
            entry["lock_held"] = lock_held(self.out)
        self.log.append(entry)
        future = LazyFuture(self, fn, task)
        self.futures.append(future)
        return future

    def complete(self, future) -> None:
        task = future.task
        seed = TrainConfig(**task["config"]).seed
        outcomes = self.script.get(seed, [])
        outcome = outcomes.pop(0) if outcomes else None
        if outcome is None:
            future.set_result(future.fn(task) if self.runner is None else self.runner(task))
        elif outcome[0] == "lost":
            os.makedirs(task["dir"], exist_ok=True)
            Path(task["dir"], "worker.json").write_text(json.dumps({"attempt": task["attempt"]}))
            future.set_exception(outcome[1])
        elif outcome[0] == "never":
            future.set_exception(outcome[1])
        else:
            future.set_result(stub_cell(task, outcome[1], outcome[2]))

    def shutdown(self, wait=True, *, cancel_futures=False):
        pass


class Scripted(CellExecutor):
    """An engine of ``slots`` slots and ``queued`` more in flight; ``fatal(exc)`` -> the error of
    ``failure`` (None: go on); records renewals, closes and failure calls."""

    def __init__(self, out=None, *, slots=1, queued=0, script=None, runner=stub_cell, fatal=None,
                 description="scripted"):
        self.pool = ScriptedPool(self, script or {}, runner, out)
        super().__init__(self.pool, slots, description)
        self.queued, self.fatal = queued, fatal
        self.renewals, self.closes, self.failures = 0, [], []

    def renew(self):
        self.renewals += 1
        self.pool.broken = 0

    def close(self, abort=False):
        self.closes.append(abort)

    def failure(self, exc=None):
        self.failures.append(exc)
        if self.fatal is not None:
            return self.fatal(exc)
        return super().failure(exc)

    @property
    def log(self):
        return self.pool.log


def table_seeds(out) -> list:
    path = Path(out, "results.parquet")
    return list(pd.read_parquet(path)["seed"]) if path.exists() else None


def lock_held(out) -> bool:
    fd = os.open(os.path.join(out, ".sweep.lock"), os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


class Waits:
    """``concurrent.futures.wait`` as the driver calls it: completes the oldest pending scripted
    future when none of those waited on is done; ``timeouts`` calls return nothing done (a quiet
    period); a driver that spins on nothing fails the test instead of hanging."""

    def __init__(self):
        self.calls, self.timeouts, self.empty, self.eager = [], 0, 0, False

    def __call__(self, fs, timeout=None, return_when=cf.ALL_COMPLETED):
        fs = list(fs)
        self.calls.append((len(fs), timeout, return_when))
        if len(self.calls) > 500:
            raise AssertionError("the driver waited 500 times")
        if not fs:
            self.empty += 1
            if self.empty > 20:
                raise AssertionError("the driver waits on nothing in a loop")
        if self.timeouts:
            self.timeouts -= 1
            return set(), set(fs)
        lazy = [f for f in fs if isinstance(f, LazyFuture)]
        if not lazy:
            return REAL_WAIT(fs, timeout=timeout, return_when=return_when)
        pool = lazy[0].pool
        order = [f for f in pool.futures if any(f is g for g in lazy)]          # submission order
        if self.eager:                  # every cell in flight finishes before the driver looks
            for f in order:
                if not f.done():
                    pool.complete(f)
        elif not any(f.done() for f in order):
            pool.complete(next(f for f in order if not f.done()))
        return [f for f in order if f.done()], [f for f in order if not f.done()]


REAL_WAIT = cf.wait


@pytest.fixture(autouse=True)
def waits(monkeypatch):
    spy = Waits()
    monkeypatch.setattr(cf, "wait", spy)
    return spy


class Bar(tqdm_module.tqdm):
    """tqdm, recording how the driver builds and moves its bar."""

    made = []

    def __init__(self, *args, **kwargs):
        self.kwargs, self.postfixes, self.updates = kwargs, [], []
        Bar.made.append(self)
        super().__init__(*args, **kwargs)

    def set_postfix_str(self, s="", refresh=True):
        self.postfixes.append(s)
        return super().set_postfix_str(s, refresh=refresh)

    def update(self, n=1):
        self.updates.append(n)
        return super().update(n)


@pytest.fixture
def bars(monkeypatch):
    Bar.made = []
    monkeypatch.setattr(tqdm_module, "tqdm", Bar)
    return Bar.made


def one_error(call) -> str:
    with pytest.raises(ValueError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message
    return message


# ------------------------------------------------------------------------------ real cells
# One test runs the real sweep and checks everything on it: mutmut runs a test for a mutant only
# when the test itself calls the mutated function (a module fixture's sweep would link one test).
def check_table(out, result, cells) -> None:
    """One row per grid point in grid order, the columns of row_columns, each row its cell's record."""
    table = result.table
    assert list(table.columns) == row_columns(cells)
    assert list(table["cell"]) == [c.name for c in cells]
    assert [(r.d, r.mode, r.k) for r in table.itertuples()] == [
        (d, m, k) for d in (2, 3) for m in ("cot", "nocot") for k in (2, 3)]
    records = [read_record(cell_path(str(out), c.name), c.run_config) for c in cells]
    assert all(r is not None and r["status"] == "done" for r in records)
    expected = table_frame([record_row(c, r) for c, r in zip(cells, records, strict=True)], row_columns(cells))
    pd.testing.assert_frame_equal(table, expected, check_exact=True)
    assert list(table["final_eval_loss"]) == [r["summary"]["final_eval_loss"] for r in records]
    assert list(table["attempts"]) == [1] * 8 and list(table["status"]) == ["done"] * 8
    assert table["final_eval_loss"].dtype == "float64" and table["d"].dtype == "int64"
    assert table["train"].dtype == bool and table["train"].all()


def check_sharing(out, result) -> None:
    """No-CoT points of other k share one run and keep their own k."""
    table = result.table
    assert (result.ran, result.reused, result.distinct) == (8, 0, 6)
    assert result.counts == {"done": 8, "failed": 0, "diverged": 0}
    assert len(os.listdir(out / CELLS_DIR)) == 6
    for d in (2, 3):
        nocot = table[(table["d"] == d) & (table["mode"] == "nocot")]
        assert list(nocot["k"]) == [2, 3] and nocot["cell"].nunique() == 1
        assert nocot["final_eval_loss"].nunique() == 1 and nocot["seconds"].nunique() == 1
        cot = table[(table["d"] == d) & (table["mode"] == "cot")]
        assert cot["cell"].nunique() == 2 and cot["final_eval_loss"].nunique() == 2
    assert result.name == "guards" and result.out == str(out) and os.path.isabs(result.out)
    assert 0 < result.seconds < 300


def check_files(out, result, cells) -> None:
    pd.testing.assert_frame_equal(load_results(out), result.table, check_exact=True)
    pd.testing.assert_frame_equal(load_results(str(out)), result.table, check_exact=True)
    import pyarrow.parquet as pq
    assert pq.read_schema(out / "results.parquet").names == row_columns(cells)
    csv = (out / "results.csv").read_text()
    assert csv.splitlines()[0] == ",".join(row_columns(cells))
    assert len(csv.splitlines()) == 9
    from_csv = pd.read_csv(out / "results.csv")
    assert list(from_csv["final_eval_loss"]) == list(result.table["final_eval_loss"])


def check_manifest(out, cells) -> None:
    text = (out / "sweep.json").read_text()
    manifest = json.loads(text)
    assert text == json.dumps(manifest, indent=2) + "\n"
    assert manifest["kind"] == "cotgd-sweep" and manifest["version"] == 1 and manifest["name"] == "guards"
    assert manifest["status"] == "finished" and manifest["executor"] == "inline-1"
    assert manifest["counts"] == {"done": 8, "failed": 0, "diverged": 0}
    assert manifest["grid"] == MAIN and manifest["grid_file"] is None
    assert manifest["train"] is True and manifest["retries"] == 2
    assert manifest["cells"] == [{"name": c.name, "id": c.id, "axes": c.axes} for c in cells]
    assert manifest["cells"][2]["axes"] == {"d": 2, "mode": "nocot", "k": 2}
    assert manifest["versions"] == versions() and manifest["git_commit"] == git_commit()
    assert re.match(TIME_FORMAT, manifest["created"]) and manifest["updated"] == manifest["created"]


def check_rerun(out, result, tmp_path) -> None:
    """A rerun reuses every cell (nothing submitted, no record rewritten) and keeps when the sweep
    was created."""
    copy = tmp_path / "rerun"
    shutil.copytree(out, copy)
    manifest = json.loads((copy / "sweep.json").read_text())
    manifest["created"] = "2001-02-03T04:05:06+0000"
    (copy / "sweep.json").write_text(json.dumps(manifest))
    records = sorted(copy.glob("cells/*/cell.json"))
    before = {p: p.stat().st_mtime_ns for p in records}
    engine = Scripted(copy)
    again = run_sweep(MAIN, copy, executor=engine, progress=False)
    assert engine.log == [] and engine.closes == []
    assert (again.ran, again.reused, again.distinct) == (0, 8, 6)
    assert again.counts == {"done": 8, "failed": 0, "diverged": 0}
    pd.testing.assert_frame_equal(again.table, result.table, check_exact=True)
    pd.testing.assert_frame_equal(load_results(copy), result.table, check_exact=True)
    assert {p: p.stat().st_mtime_ns for p in records} == before
    manifest = json.loads((copy / "sweep.json").read_text())
    assert manifest["created"] == "2001-02-03T04:05:06+0000" and re.match(TIME_FORMAT, manifest["updated"])
    assert manifest["executor"] == "scripted" and manifest["status"] == "finished"


def check_grid_forms(out, tmp_path) -> None:
    """The grid as a file path (str or Path) or a Grid: the same cells, all reused."""
    path = tmp_path / "guards.toml"
    path.write_text('[grid]\nd = [2, 3]\nmode = ["cot", "nocot"]\nk = [2, 3]\n[fixed]\n'
                    + "".join(f"{k} = {json.dumps(v)}\n" for k, v in FIXED.items()))
    for n, grid in enumerate((str(path), path, parse_grid(MAIN))):
        copy = tmp_path / f"form{n}"
        shutil.copytree(out, copy)
        again = run_sweep(grid, copy, executor=Scripted(), progress=False)
        assert again.reused == 8 and again.ran == 0 and again.name == "guards"
    assert json.loads((tmp_path / "form1" / "sweep.json").read_text())["grid_file"] == str(path)


def check_changed_grids(out, result, tmp_path) -> None:
    """A grid sharing no cell, or of another name, is refused and the sweep left as it was; an
    edited grid reuses the cells it shares and runs the others."""
    copy = tmp_path / "changed"
    shutil.copytree(out, copy)
    text = (copy / "sweep.json").read_text()
    other = dict(MAIN, grid={"d": [4]})
    assert one_error(lambda: run_sweep(other, copy, executor=Scripted(), progress=False)) == (
        f"--out {str(copy)!r} holds a different sweep 'guards' that shares no cell with this grid: use another --out")
    renamed = dict(MAIN, name="renamed")
    assert one_error(lambda: run_sweep(renamed, copy, executor=Scripted(), progress=False)) == (
        f"--out {str(copy)!r} holds the sweep 'guards', not 'renamed' (a grid's name is its 'name' key, else its "
        f"file name): use another --out")
    assert (copy / "sweep.json").read_text() == text
    edited = dict(MAIN, grid={"d": [3], "mode": ["cot", "nocot"], "k": [2, 4]})
    with inline_executor() as ex:
        more = run_sweep(edited, copy, executor=ex, progress=False)
    assert (more.ran, more.reused, more.distinct) == (1, 3, 3)
    assert list(more.table["mode"]) == ["cot", "cot", "nocot", "nocot"] and list(more.table["k"]) == [2, 4, 2, 4]
    first = result.table.set_index(["d", "mode", "k"])["final_eval_loss"]
    losses = list(more.table["final_eval_loss"])
    assert losses[0] == first[(3, "cot", 2)] and losses[2] == losses[3] == first[(3, "nocot", 2)]
    assert losses[1] not in list(first)


def test_a_real_sweep_its_table_files_manifest_rerun_and_edits(tmp_path):
    out = tmp_path / "sweep"
    with inline_executor() as ex:
        result = run_sweep(MAIN, out, executor=ex, progress=False)
    cells = parse_grid(MAIN).expand()
    check_table(out, result, cells)
    check_sharing(out, result)
    check_files(out, result, cells)
    check_manifest(out, cells)
    check_rerun(out, result, tmp_path)
    check_grid_forms(out, tmp_path)
    check_changed_grids(out, result, tmp_path)


# ------------------------------------------------------------------------------ out and arguments
def manifest_of(name="stub", cells=None, **extra) -> str:
    return json.dumps({"kind": "cotgd-sweep", "name": name, **({} if cells is None else {"cells": cells}), **extra})


@pytest.mark.parametrize("setup, message", [
    (lambda d: (d / "notes.txt").write_text("mine"),
     "--out {out!r} is not empty and holds no sweep (sweep.json missing): choose a new or empty directory"),
    (lambda d: (d / "cells").write_text("a file"), "is not empty and holds no sweep"),
    (lambda d: (d / "cells" / "x").mkdir(parents=True), "is not empty and holds no sweep"),
    (lambda d: (d / "sweep.json").write_text("{not json"),
     "--out {out!r}: sweep.json is unreadable; choose another directory"),
    (lambda d: (d / "sweep.json").mkdir(), "sweep.json is unreadable"),
    (lambda d: (d / "sweep.json").write_text("[1, 2]"), "--out {out!r}: sweep.json is not a cotgd sweep manifest"),
    (lambda d: (d / "sweep.json").write_text(json.dumps({"kind": "cotgd-run", "name": "stub"})),
     "is not a cotgd sweep manifest"),
    (lambda d: (d / "sweep.json").write_text(manifest_of(name="phase")), "holds the sweep 'phase', not 'stub'"),
])
def test_an_out_holding_something_else_is_refused_and_left_alone(tmp_path, setup, message):
    out = tmp_path / "out"
    out.mkdir()
    setup(out)
    before = sorted(p.name for p in out.rglob("*"))
    engine = Scripted()
    got = one_error(lambda: run_sweep(stub_grid(1), out, executor=engine, progress=False))
    assert message.format(out=str(out)) in got
    assert sorted(p.name for p in out.rglob("*") if p.name != ".sweep.lock") == before and engine.log == []


@pytest.mark.parametrize("setup", [
    lambda d: None,
    lambda d: (d / ".hidden").write_text("x"),
    lambda d: (d / "cells").mkdir(),
    lambda d: (d / "sweep.json").write_text(manifest_of()),
    lambda d: (d / "sweep.json").write_text(manifest_of(cells=[])),
    lambda d: (d / "sweep.json").write_text(manifest_of(cells=[7, {"id": parse_grid(stub_grid(1)).expand()[0].id}])),
    lambda d: (d / "sweep.json").write_text(manifest_of(cells=[{"id": parse_grid(stub_grid(1)).expand()[0].id},
                                                               {"id": "other"}])),
])
def test_an_out_that_is_empty_or_holds_this_sweep_is_taken(tmp_path, setup):
    out = tmp_path / "out"
    out.mkdir()
    setup(out)
    result = run_sweep(stub_grid(1), out, executor=Scripted(), progress=False)
    assert result.ran == 1 and result.counts["done"] == 1


def test_a_missing_out_is_made_with_its_parents_and_a_relative_one_is_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = run_sweep(stub_grid(1), os.path.join("a", "b"), executor=Scripted(), progress=False)
    assert result.out == str(tmp_path / "a" / "b") and (tmp_path / "a" / "b" / "sweep.json").is_file()
    assert os.listdir(tmp_path) == ["a"] and os.listdir(tmp_path / "a") == ["b"]
    mode = (tmp_path / "a" / "b" / ".sweep.lock").stat().st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask


def test_an_out_that_is_a_file_is_refused(tmp_path):
    afile = tmp_path / "file"
    afile.write_text("x")
    assert one_error(lambda: run_sweep(stub_grid(1), afile, executor=Scripted(), progress=False)) == (
        f"--out {str(afile)!r} exists and is not a directory")
    assert afile.read_text() == "x"


@pytest.mark.parametrize("grid, out, retries, message", [
    (3, "x", None, "grid must be a grid file, a table or a Grid, got int"),
    ([stub_grid()], "x", None, "grid must be a grid file, a table or a Grid, got list"),
    (None, "x", None, "grid must be a grid file, a table or a Grid, got NoneType"),
    (stub_grid(), None, None, "out must be a directory path, got None"),
    (stub_grid(), 7, None, "out must be a directory path, got 7"),
    (stub_grid(), "", None, "out must be a directory path, got ''"),
    (stub_grid(), "  ", None, "out must be a directory path, got '  '"),
    (stub_grid(), "x", -1, "retries must be an integer >= 0, got -1"),
    (stub_grid(), "x", True, "retries must be an integer >= 0, got True"),
    (stub_grid(), "x", 1.0, "retries must be an integer >= 0, got 1.0"),
    (stub_grid(), "x", "2", "retries must be an integer >= 0, got '2'"),
])
def test_bad_arguments_are_one_line_errors(tmp_path, monkeypatch, grid, out, retries, message):
    monkeypatch.chdir(tmp_path)
    assert one_error(lambda: run_sweep(grid, out, executor=Scripted(), progress=False, retries=retries)) == message
    assert os.listdir(tmp_path) == []


def test_a_second_driver_is_refused_while_one_holds_the_directory(tmp_path):
    out = tmp_path / "out"
    first = run_sweep(stub_grid(2), out, executor=Scripted(), progress=False)
    assert first.ran == 2
    fd = os.open(out / ".sweep.lock", os.O_RDWR)
    box = {}

    def second():
        try:
            box["result"] = run_sweep(stub_grid(3), out, executor=Scripted(), progress=False)
        except Exception as exc:
            box["error"] = exc

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        thread = threading.Thread(target=second, daemon=True)
        thread.start()
        thread.join(20)
        blocked = thread.is_alive()
    finally:
        os.close(fd)
    thread.join(20)
    assert not blocked, "the second driver waited for the lock instead of refusing"
    assert isinstance(box.get("error"), ValueError)
    assert str(box["error"]) == f"--out {str(out)!r}: another cotgd sweep is running in this directory"
    assert json.loads((out / "sweep.json").read_text())["status"] == "finished"
    assert len(load_results(out)) == 2
    assert not lock_held(out)
    assert run_sweep(stub_grid(3), out, executor=Scripted(), progress=False).ran == 1


# ------------------------------------------------------------------------------ scheduling
def test_the_next_cell_starts_before_the_table_is_written_and_the_manifest_says_running(tmp_path, waits):
    out = tmp_path / "s"
    engine = Scripted(out)
    result = run_sweep(stub_grid(4), out, executor=engine, progress=False)
    assert [e["seed"] for e in engine.log] == [0, 1, 2, 3]
    assert [e["table"] for e in engine.log] == [[], [], [0], [0, 1]]
    assert [e["in_flight"] for e in engine.log] == [0, 0, 0, 0]
    assert all(e["status"] == "running" and e["lock_held"] and e["counts"] == {} for e in engine.log)
    assert all(e["executor"] == "scripted" and re.match(TIME_FORMAT, e["created"]) for e in engine.log)
    assert all(e["retry_failed"] is False and e["attempt"] == 1 for e in engine.log)
    assert list(result.table["seed"]) == [0, 1, 2, 3] and list(result.table["attempts"]) == [1] * 4
    assert list(result.table["final_eval_loss"]) == [1.0, 1.125, 1.25, 1.375]
    assert all(n >= 1 and timeout is not None and 0 < timeout <= 5.0 and when == cf.FIRST_COMPLETED
               for n, timeout, when in waits.calls)


def test_slots_and_queued_cells_are_kept_in_flight(tmp_path, bars):
    out = tmp_path / "s"
    engine = Scripted(out, slots=1, queued=1)
    result = run_sweep(stub_grid(5), out, executor=engine, progress=False)
    assert [e["seed"] for e in engine.log] == [0, 1, 2, 3, 4]
    assert [e["in_flight"] for e in engine.log] == [0, 1, 1, 1, 1]
    assert [e["table"] for e in engine.log] == [[], [], [], [0], [0, 1]]
    assert bars[0].postfixes == [f"done {i} running {1 if i < 5 else 0} failed 0" for i in range(1, 6)]
    assert bars[0].updates == [1] * 5
    assert result.counts == {"done": 5, "failed": 0, "diverged": 0}
    wide = Scripted(tmp_path / "w", slots=3, queued=0)
    run_sweep(stub_grid(5), tmp_path / "w", executor=wide, progress=False)
    assert [e["in_flight"] for e in wide.log] == [0, 1, 2, 2, 2]


def test_cells_finishing_out_of_order_fill_the_table_in_grid_order(tmp_path):
    out = tmp_path / "s"
    lost = RuntimeError("worker died")
    engine = Scripted(out, slots=2, script={0: [("lost", lost)]})
    result = run_sweep(stub_grid(3), out, executor=engine, progress=False)
    assert [(e["seed"], e["attempt"]) for e in engine.log] == [(0, 1), (1, 1), (0, 2), (2, 1)]
    assert list(result.table["seed"]) == [0, 1, 2] and list(result.table["attempts"]) == [2, 1, 1]
    assert list(load_results(out)["seed"]) == [0, 1, 2]


def test_a_lost_worker_is_retried_then_its_cell_recorded_failed_in_the_table_only(tmp_path, capsys):
    out = tmp_path / "s"
    long = BrokenProcessPool("worker\nexited " + "x" * 600)
    engine = Scripted(out, slots=1, script={1: [("lost", long)] * 3})
    result = run_sweep(stub_grid(3), out, executor=engine, progress=False)
    assert [(e["seed"], e["attempt"]) for e in engine.log] == [(0, 1), (1, 1), (1, 2), (1, 3), (2, 1)]
    assert result.counts == {"done": 2, "failed": 1, "diverged": 0} and result.ran == 3
    row = result.table.iloc[1]
    error = "worker lost 3 times: BrokenProcessPool: " + ("worker exited " + "x" * 600)[:500]
    assert row["status"] == "failed" and row["error"] == error and row["attempts"] == 3
    assert row["train"] == True and pd.isna(row["seconds"]) and pd.isna(row["worker"])  # noqa: E712
    assert pd.isna(row["theory_eval_loss"]) and pd.isna(row["final_eval_loss"]) and pd.isna(row["warnings"])
    assert list(result.table["status"]) == ["done", "failed", "done"]
    assert engine.renewals == 3 and capsys.readouterr().err == ""
    manifest = json.loads((out / "sweep.json").read_text())
    assert manifest["counts"] == {"done": 2, "failed": 1, "diverged": 0}
    assert not (out / "cells" / result.table.iloc[1]["cell"] / CELL_RECORD).exists()
    rerun = Scripted(out)
    again = run_sweep(stub_grid(3), out, executor=rerun, progress=False)
    assert [e["seed"] for e in rerun.log] == [1] and (again.ran, again.reused) == (1, 2)
    assert again.counts == {"done": 3, "failed": 0, "diverged": 0}


def test_the_last_attempt_of_a_lost_cell_runs_alone(tmp_path):
    out = tmp_path / "s"
    lost = RuntimeError("gone")
    engine = Scripted(out, slots=2, script={0: [("lost", lost)] * 3})
    result = run_sweep(stub_grid(4), out, executor=engine, progress=False)
    log = [(e["seed"], e["attempt"], e["in_flight"]) for e in engine.log]
    assert log == [(0, 1, 0), (1, 1, 1), (0, 2, 1), (2, 1, 1), (0, 3, 0), (3, 1, 0)]
    assert result.table.iloc[0]["error"] == "worker lost 3 times: RuntimeError: gone"
    assert list(result.table["status"]) == ["failed", "done", "done", "done"]


def test_retries_from_the_argument_else_the_grid(tmp_path):
    lost = RuntimeError("lost")
    for n, (top, retries, attempts) in enumerate([({}, None, 3), ({"retries": 0}, None, 1), ({"retries": 0}, 1, 2),
                                                  ({}, 0, 1), ({"retries": 1}, None, 2)]):
        out = tmp_path / f"s{n}"
        engine = Scripted(out, script={0: [("lost", lost)] * 5})
        result = run_sweep(stub_grid(1, **top), out, executor=engine, progress=False, retries=retries)
        assert [e["attempt"] for e in engine.log] == list(range(1, attempts + 1))
        assert result.table.iloc[0]["error"] == f"worker lost {attempts} times: RuntimeError: lost"
        assert result.table.iloc[0]["attempts"] == attempts
        assert json.loads((out / "sweep.json").read_text())["retries"] == attempts - 1   # the ones that ran
        assert all(e["retries"] == attempts - 1 for e in engine.log)                    # and while running


def test_a_task_that_never_started_is_tried_again_without_counting_until_it_stalls(tmp_path):
    out = tmp_path / "s"
    never = OSError("cannot reach the worker")
    engine = Scripted(out, slots=1, script={0: [("never", never)] * 9})
    result = run_sweep(stub_grid(2), out, executor=engine, progress=False)
    assert [(e["seed"], e["attempt"]) for e in engine.log] == [(0, 1)] * 4 + [(0, 2), (0, 3), (1, 1)]
    assert result.table.iloc[0]["error"] == "worker lost 3 times: OSError: cannot reach the worker"
    zero = Scripted(tmp_path / "z", script={0: [("never", never)] * 9})
    result = run_sweep(stub_grid(1), tmp_path / "z", executor=zero, progress=False, retries=0)
    assert [e["attempt"] for e in zero.log] == [1, 1]
    assert result.table.iloc[0]["error"] == "worker lost 1 times: OSError: cannot reach the worker"


def test_a_broken_pool_sends_every_cell_in_flight_back_and_is_renewed(tmp_path):
    out = tmp_path / "s"
    broken = BrokenProcessPool("a worker was killed")
    engine = Scripted(out, slots=3, script={0: [("lost", broken)]})
    result = run_sweep(stub_grid(4), out, executor=engine, progress=False)
    assert [(e["seed"], e["attempt"]) for e in engine.log] == [(0, 1), (1, 1), (2, 1), (2, 1), (1, 1), (0, 2),
                                                               (3, 1)]
    assert engine.renewals == 1 and engine.pool.blocked == [0, 0]   # the cells in flight, never waited for
    assert result.counts == {"done": 4, "failed": 0, "diverged": 0}
    assert list(result.table["attempts"]) == [2, 1, 1, 1]


def test_a_broken_pool_counts_the_attempts_of_the_cells_that_had_started(tmp_path):
    out = tmp_path / "s"
    broken = BrokenProcessPool("killed")
    engine = Scripted(out, slots=2, script={0: [("lost", broken)]})
    grid = parse_grid(stub_grid(2))
    second = grid.expand()[1]
    # the second cell's attempt 1 had begun in a worker when the pool broke
    os.makedirs(cell_path(str(out), second.name))
    Path(cell_path(str(out), second.name), "worker.json").write_text(json.dumps({"attempt": 1}))
    (out / "sweep.json").write_text(manifest_of())
    result = run_sweep(grid, out, executor=engine, progress=False)
    assert [(e["seed"], e["attempt"]) for e in engine.log] == [(0, 1), (1, 1), (1, 2), (0, 2)]
    assert list(result.table["attempts"]) == [2, 2]


def test_a_pool_broken_at_submit_is_renewed_and_the_cell_submitted_again(tmp_path):
    out = tmp_path / "s"
    engine = Scripted(out)
    engine.pool.broken = 1
    result = run_sweep(stub_grid(2), out, executor=engine, progress=False)
    assert engine.renewals == 1 and [(e["seed"], e["attempt"]) for e in engine.log] == [(0, 1), (1, 1)]
    assert result.counts["done"] == 2


def test_a_cluster_that_cannot_go_on_ends_the_sweep_keeping_what_finished(tmp_path, monkeypatch):
    out = tmp_path / "s"
    made = []

    def local(workers=None):
        made.append(workers)
        return engine

    def fatal(exc):
        return ClusterError(f"cannot go on after {exc}") if isinstance(exc, KeyError) else None

    engine = Scripted(out, script={2: [("never", KeyError("w"))]}, fatal=fatal)
    monkeypatch.setattr(driver, "local_executor", local)
    with pytest.raises(ClusterError, match="^cannot go on after 'w'$"):
        run_sweep(stub_grid(4), out, workers=2, progress=False)
    assert made == [2] and engine.closes == [True]
    assert list(load_results(out)["seed"]) == [0, 1]
    manifest = json.loads((out / "sweep.json").read_text())
    assert manifest["status"] == "running" and manifest["executor"] == "local-2" and manifest["counts"] == {}
    assert [e["seed"] for e in engine.log] == [0, 1, 2]
    assert not lock_held(out)


def test_a_quiet_period_asks_the_engine_whether_it_can_go_on(tmp_path, waits):
    out = tmp_path / "s"
    engine = Scripted(out)
    waits.timeouts = 3
    result = run_sweep(stub_grid(2), out, executor=engine, progress=False)
    assert engine.failures == [None, None, None] and result.counts["done"] == 2
    assert engine.closes == []
    lost = Scripted(tmp_path / "l", fatal=lambda exc: ClusterError("lost the scheduler") if exc is None else None)
    waits.timeouts = 1
    with pytest.raises(ClusterError, match="^lost the scheduler$"):
        run_sweep(stub_grid(2), tmp_path / "l", executor=lost, progress=False)
    assert lost.failures == [None]
    assert json.loads((tmp_path / "l" / "sweep.json").read_text())["status"] == "running"


def test_the_engine_is_made_from_the_arguments_and_named_in_the_manifest(tmp_path, monkeypatch):
    made = []

    def local(workers=None):
        made.append(("local", workers))
        return Scripted()

    def dask(n_workers=None, *, address=None, client=None, cluster=None):
        made.append(("dask", n_workers, address))
        return Scripted()

    monkeypatch.setattr(driver, "local_executor", local)
    monkeypatch.setattr(driver, "dask_executor", dask)
    monkeypatch.setattr(driver, "default_workers", lambda: 7)
    cases = [({"workers": 3}, ("local", 3), "local-3"), ({}, ("local", None), "local-7"),
             ({"dask_workers": 2}, ("dask", 2, None), "dask-2"),
             ({"scheduler": "tcp://h:1"}, ("dask", None, "tcp://h:1"), "dask-tcp://h:1"),
             ({"dask_workers": 4, "scheduler": "tcp://h:1"}, ("dask", 4, None), "dask-4"),
             ({"workers": 3, "executor": Scripted(description="mine")}, None, "mine")]
    for n, (options, call, label) in enumerate(cases):
        made.clear()
        out = tmp_path / f"s{n}"
        result = run_sweep(stub_grid(1), out, progress=False, **options)
        assert result.ran == 1 and made == ([call] if call else [])
        assert json.loads((out / "sweep.json").read_text())["executor"] == label
        again = run_sweep(stub_grid(1), out, progress=False, **options)
        assert again.reused == 1 and made == ([call] if call else []), "an engine made for nothing to run"


def test_the_engine_made_by_the_driver_is_closed_and_one_given_is_not(tmp_path, monkeypatch):
    own = Scripted()
    monkeypatch.setattr(driver, "local_executor", lambda workers=None: own)
    run_sweep(stub_grid(2), tmp_path / "a", workers=1, progress=False)
    assert own.closes == [False]
    given = Scripted()
    run_sweep(stub_grid(2), tmp_path / "b", executor=given, progress=False)
    assert given.closes == []


# ------------------------------------------------------------------------------ failed cells
def test_failed_cells_are_kept_and_retry_failed_reruns_them_only(tmp_path):
    out = tmp_path / "s"
    script = {1: [("status", "failed", "RuntimeError: boom")], 2: [("status", "diverged", "training diverged")]}
    engine = Scripted(out, script=script)
    result = run_sweep(stub_grid(4), out, executor=engine, progress=False)
    assert list(result.table["status"]) == ["done", "failed", "diverged", "done"]
    assert result.counts == {"done": 2, "failed": 1, "diverged": 1}
    assert result.table.iloc[1]["error"] == "RuntimeError: boom"
    again = Scripted(out)
    kept = run_sweep(stub_grid(4), out, executor=again, progress=False)
    assert again.log == [] and (kept.ran, kept.reused) == (0, 4) and kept.counts == result.counts
    retry = Scripted(out)
    retried = run_sweep(stub_grid(4), out, executor=retry, progress=False, retry_failed=True)
    assert [(e["seed"], e["retry_failed"]) for e in retry.log] == [(1, True)]
    assert (retried.ran, retried.reused) == (1, 3)
    assert list(retried.table["status"]) == ["done", "done", "diverged", "done"]
    assert retried.counts == {"done": 3, "failed": 0, "diverged": 1}


def test_retry_failed_reruns_a_real_failed_cell(tmp_path):
    grid = {"name": "fail", "grid": {"mode": ["cot", "nocot"], "k": [2, 3]}, "fixed": dict(FIXED, d=2)}
    cells = parse_grid(grid).expand()
    out = tmp_path / "s"
    blocked = out / "cells" / cells[2].name / "manifest.json"
    blocked.mkdir(parents=True)                     # writing the no-CoT run's manifest raises
    (out / "sweep.json").write_text(manifest_of(name="fail"))
    with inline_executor() as ex:
        result = run_sweep(grid, out, executor=ex, progress=False)
        assert list(result.table["status"]) == ["done", "done", "failed", "failed"]
        assert result.table.iloc[2]["error"].startswith("IsADirectoryError")
        assert result.counts == {"done": 2, "failed": 2, "diverged": 0} and result.distinct == 3
        blocked.rmdir()
        assert run_sweep(grid, out, executor=ex, progress=False).counts["failed"] == 2
        retried = run_sweep(grid, out, executor=ex, progress=False, retry_failed=True)
    assert (retried.ran, retried.reused) == (2, 2)
    assert list(retried.table["status"]) == ["done"] * 4
    assert retried.table.iloc[2]["final_eval_loss"] == retried.table.iloc[3]["final_eval_loss"]
    assert list(retried.table["final_eval_loss"][:2]) == list(result.table["final_eval_loss"][:2])
    assert list(retried.table["seconds"][:2]) == list(result.table["seconds"][:2])


# ------------------------------------------------------------------------------ the bar
def test_the_bar_counts_cells_and_names_each_failed_one(tmp_path, capsys, bars):
    out = tmp_path / "s"
    long = BrokenProcessPool("y" * 400)
    script = {1: [("lost", long)] * 3, 2: [("status", "diverged", "training diverged at iteration 3")],
              3: [("status", "failed", None)]}
    engine = Scripted(out, script=script)
    result = run_sweep(stub_grid(4), out, executor=engine, progress=True)
    captured = capsys.readouterr()
    name1, name2 = result.table["cell"][1], result.table["cell"][2]
    lost_line = f"cell {name1} failed: " + ("worker lost 3 times: BrokenProcessPool: " + "y" * 400)[:200]
    assert lost_line + "\n" in captured.err and lost_line + "y" not in captured.err
    assert f"cell {name2} diverged on stub-worker: training diverged at iteration 3\n" in captured.err
    assert f"cell {result.table['cell'][3]} failed on stub-worker: \n" in captured.err
    assert captured.out == ""
    bar = bars[0]
    assert (bar.kwargs["total"], bar.kwargs["initial"], bar.kwargs["unit"]) == (4, 0, "cell")
    assert bar.kwargs["desc"] == "sweep stub" and bar.kwargs["disable"] is False
    assert bar.postfixes == ["done 1 running 1 failed 0", "done 1 running 1 failed 1", "done 1 running 1 failed 2",
                             "done 1 running 0 failed 3"] and bar.n == 4
    assert "sweep stub: 100%" in captured.err and "4/4" in captured.err and "done 1 running 0 failed 3" in captured.err
    quiet = Scripted(tmp_path / "q", script={0: [("lost", long)] * 3})
    run_sweep(stub_grid(2), tmp_path / "q", executor=quiet, progress=False)
    assert capsys.readouterr().err == "" and bars[1].kwargs["disable"] is True


def test_the_bar_starts_at_the_reused_points_and_counts_every_point_a_cell_fills(tmp_path, bars, capsys):
    grid = {"name": "share", "grid": {"mode": ["nocot", "cot"], "k": [2, 3], "seed": [0, 1]},
            "fixed": {"d": 2, "n": 4, "iters": 2}}
    out = tmp_path / "s"
    first = run_sweep(dict(grid, grid={"mode": ["nocot"], "k": [2, 3], "seed": [0, 1]}), out,
                      executor=Scripted(), progress=False)
    assert (first.ran, first.distinct) == (4, 2)
    result = run_sweep(grid, out, executor=Scripted(), progress=True)
    assert (result.ran, result.reused, result.distinct) == (4, 4, 6)
    assert "4/8" in capsys.readouterr().err
    assert bars[1].kwargs["initial"] == 4 and bars[1].kwargs["total"] == 8
    assert bars[1].updates == [1, 1, 1, 1] and bars[1].n == 8
    assert bars[0].updates == [2, 2] and bars[0].kwargs["total"] == 4


def test_progress_none_shows_the_bar_on_a_terminal_only(tmp_path, monkeypatch, bars):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    run_sweep(stub_grid(1), tmp_path / "t", executor=Scripted(), progress=None)
    assert bars[0].kwargs["disable"] is False and "sweep stub: 100%" in terminal.getvalue()
    pipe = io.StringIO()
    monkeypatch.setattr(sys, "stderr", pipe)
    run_sweep(stub_grid(1), tmp_path / "p", executor=Scripted(), progress=None)
    assert bars[1].kwargs["disable"] is True and pipe.getvalue() == ""
    run_sweep(stub_grid(1), tmp_path / "f", executor=Scripted(), progress=0)
    assert bars[2].kwargs["disable"] is True and pipe.getvalue() == ""


# ------------------------------------------------------------------------------ the table's files
def test_table_frame_types_each_column_by_its_values():
    rows = [{"i": 1, "f": 0.5, "mixed": 1, "gap": 2, "b": True, "bgap": True, "none": None, "s": "a", "extra": 9},
            {"i": 2, "f": 1.5, "mixed": 2.5, "gap": None, "b": False, "bgap": None, "none": None, "s": None},
            {"i": 3, "f": float("nan"), "mixed": 3, "b": True, "bgap": False, "s": "c"}]
    columns = ["s", "i", "f", "mixed", "gap", "b", "bgap", "none", "missing"]
    frame = table_frame(rows, columns)
    assert list(frame.columns) == columns and len(frame) == 3
    assert {c: str(frame[c].dtype) for c in columns[1:]} == {
        "i": "int64", "f": "float64", "mixed": "float64", "gap": "float64", "b": "bool",
        "bgap": "object", "none": "object", "missing": "object"}
    assert list(frame["i"]) == [1, 2, 3] and list(frame["mixed"]) == [1.0, 2.5, 3.0]
    assert frame["gap"].iloc[0] == 2.0 and frame["gap"].isna().tolist() == [False, True, True]
    assert [None if pd.isna(v) else v for v in frame["s"]] == ["a", None, "c"] and list(frame["none"]) == [None] * 3
    assert list(frame["bgap"]) == [True, None, False] and list(frame["b"]) == [True, False, True]
    ints_with_bool = table_frame([{"x": 1}, {"x": True}], ["x"])
    assert str(ints_with_bool["x"].dtype) == "object" and list(ints_with_bool["x"]) == [1, True]
    empty = table_frame([], ["a", "b"])
    assert list(empty.columns) == ["a", "b"] and len(empty) == 0 and (empty.dtypes == object).all()


def test_write_results_writes_both_files_and_load_results_prefers_parquet(tmp_path):
    rows = [{"cell": "a", "x": 1, "y": 0.25}, {"cell": "b", "x": 2, "y": None}]
    frame = write_results(str(tmp_path), rows, ["cell", "x", "y"])
    assert sorted(os.listdir(tmp_path)) == ["results.csv", "results.parquet"]
    pd.testing.assert_frame_equal(frame, table_frame(rows, ["cell", "x", "y"]))
    pd.testing.assert_frame_equal(load_results(tmp_path), frame)
    assert (tmp_path / "results.csv").read_text() == "cell,x,y\na,1,0.25\nb,2,\n"
    (tmp_path / "results.csv").write_text("cell,x\nz,9\n")
    assert list(load_results(tmp_path)["cell"]) == ["a", "b"]
    (tmp_path / "results.parquet").unlink()
    assert list(load_results(str(tmp_path))["cell"]) == ["z"] and list(load_results(tmp_path)["x"]) == [9]


def test_load_results_refuses_a_directory_without_results(tmp_path):
    assert one_error(lambda: load_results(tmp_path)) == (
        f"{str(tmp_path)!r} holds no sweep results (results.parquet / results.csv)")
    (tmp_path / "results.parquet").mkdir()
    (tmp_path / "results.csv").mkdir()
    assert "holds no sweep results" in one_error(lambda: load_results(str(tmp_path)))
    assert "holds no sweep results" in one_error(lambda: load_results(tmp_path / "absent"))


def test_a_grid_object_is_taken_as_it_is(tmp_path):
    grid = Grid(name="obj", grid={"seed": [0, 1]}, fixed=dict(STUB_FIXED), retries=0, train=False)
    engine = Scripted(tmp_path / "s", script={1: [("lost", RuntimeError("x"))] * 2})
    result = run_sweep(grid, tmp_path / "s", executor=engine, progress=False)
    assert result.name == "obj" and [e["attempt"] for e in engine.log] == [1, 1]
    row = result.table.iloc[1]
    assert row["train"] == False and row["error"] == "worker lost 1 times: RuntimeError: x"  # noqa: E712
    manifest = json.loads((tmp_path / "s" / "sweep.json").read_text())
    assert manifest["train"] is False and manifest["retries"] == 0 and manifest["grid"] == {}
    assert result.table.iloc[0]["train"] == False  # noqa: E712


def test_with_no_retries_no_cell_runs_alone(tmp_path):
    out = tmp_path / "s"
    engine = Scripted(out, slots=2, script={0: [("lost", RuntimeError("gone"))]})
    result = run_sweep(stub_grid(3), out, executor=engine, progress=False, retries=0)
    assert [(e["seed"], e["attempt"], e["in_flight"]) for e in engine.log] == [(0, 1, 0), (1, 1, 1), (2, 1, 1)]
    assert list(result.table["status"]) == ["failed", "done", "done"]
    assert result.table.iloc[0]["error"] == "worker lost 1 times: RuntimeError: gone"


def test_with_one_retry_the_second_attempt_runs_alone(tmp_path):
    out = tmp_path / "s"
    engine = Scripted(out, slots=2, script={0: [("lost", RuntimeError("gone"))] * 2})
    result = run_sweep(stub_grid(4), out, executor=engine, progress=False, retries=1)
    assert [(e["seed"], e["attempt"], e["in_flight"]) for e in engine.log] == [
        (0, 1, 0), (1, 1, 1), (0, 2, 0), (2, 1, 0), (3, 1, 1)]
    assert result.table.iloc[0]["error"] == "worker lost 2 times: RuntimeError: gone"


def test_cells_done_beside_a_lost_one_are_recorded_in_the_same_round(tmp_path, waits):
    out = tmp_path / "s"
    waits.eager = True
    engine = Scripted(out, slots=2, script={0: [("lost", RuntimeError("gone"))]})
    result = run_sweep(stub_grid(3), out, executor=engine, progress=False)
    assert [(e["seed"], e["attempt"], e["in_flight"], e["table"]) for e in engine.log] == [
        (0, 1, 0, []), (1, 1, 1, []), (0, 2, 0, []), (2, 1, 1, [])]
    assert list(result.table["attempts"]) == [2, 1, 1] and result.counts["done"] == 3


def test_a_rerun_says_running_with_the_first_creation_time_while_it_runs(tmp_path):
    out = tmp_path / "s"
    run_sweep(stub_grid(1), out, executor=Scripted(), progress=False)
    manifest = json.loads((out / "sweep.json").read_text())
    manifest["created"] = "2001-02-03T04:05:06+0000"
    (out / "sweep.json").write_text(json.dumps(manifest))
    engine = Scripted(out, description="second")
    result = run_sweep(stub_grid(2), out, executor=engine, progress=False)
    assert [(e["seed"], e["status"], e["created"], e["executor"]) for e in engine.log] == [
        (1, "running", "2001-02-03T04:05:06+0000", "second")]
    assert (result.ran, result.reused) == (1, 1)


def test_a_cell_no_worker_starts_keeps_its_attempts_while_other_cells_finish(tmp_path):
    """Failures of a task that never began count against nobody as long as cells finish beside
    it (a round with a finished cell ends a stall), even with retries 0."""
    out = tmp_path / "s"
    never = OSError("refused")
    engine = Scripted(out, slots=2, script={0: [("never", never)] * 3})
    result = run_sweep(stub_grid(4), out, executor=engine, progress=False, retries=0)
    assert [(e["seed"], e["attempt"]) for e in engine.log] == [(0, 1), (1, 1), (0, 1), (2, 1), (0, 1), (3, 1),
                                                               (0, 1)]
    assert list(result.table["status"]) == ["done"] * 4 and list(result.table["attempts"]) == [1] * 4


def test_the_cells_directory_is_made_even_when_no_cell_began(tmp_path):
    out = tmp_path / "s"
    engine = Scripted(out, script={0: [("never", OSError("refused"))] * 2})
    result = run_sweep(stub_grid(1), out, executor=engine, progress=False, retries=0)
    assert result.table.iloc[0]["error"] == "worker lost 1 times: OSError: refused"
    assert (out / "cells").is_dir() and os.listdir(out / "cells") == []
    assert sorted(os.listdir(tmp_path)) == ["s"]


def test_a_failed_cells_line_names_where_it_ran_only_when_the_record_says():
    where = CellExecutor.where
    assert where(None, {"worker": "tcp://10.0.0.2:4100", "job_id": "77"}) == "tcp://10.0.0.2:4100, job 77"
    assert where(None, {"worker": "local-1", "job_id": None}) == "local-1"
    assert where(None, {"worker": None, "job_id": "77"}) == "job 77"
    assert where(None, {"worker": None}) == "" and where(None, {}) == ""     # a lost worker's record
