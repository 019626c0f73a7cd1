"""Sweeps (training/sweep/, issue 13): grid parsing and its errors, a tiny sweep on local worker
processes and on a Dask LocalCluster giving the same table (bitwise in the training columns), the
theory's and training's columns against independent numbers, reruns that skip finished cells,
cells that diverge, raise or fail the run's verdict recorded while the others finish, a killed
worker's cell retried.

Kinds of check: argument checks (parsing), exact (the theory columns against theory / numerics),
training (tiny CPU runs, one torch thread per worker; the columns against ``training.train`` run
here).  One local pool and one Dask LocalCluster (2 workers each) serve the whole module; the
command line's side, with a driver killed by SIGKILL, is tests/cli/test_cli_sweep.py.
"""
import json
import os
import signal
import socket
import threading
import time

import numpy as np
import pandas as pd
import pytest
import sympy
import torch

import numerics
import theory
from training import TrainConfig, train
from training.sweep import (RUN_COLUMNS, DaskExecutor, LocalExecutor, cell_id, load_grid, load_results,
                            make_config, parse_grid, run_sweep)

#: A tiny sweep: 4 cells of d 2..3, 20 iterations of 32 prompts, small evaluation and theory samples.
TINY = {
    "name": "tiny",
    "grid": {"d": [2, 3], "mode": ["cot", "nocot"]},
    "fixed": {"n": 6, "k": 3, "iters": 20, "batch": 32, "eval_every": 10, "eval_samples": 500,
              "theory_samples": 2000, "structure_samples": 64, "device": "cpu"},
}
WAIT = 240          # seconds: no test may hang longer on a sweep


@pytest.fixture(scope="module")
def local_pool():
    with LocalExecutor(2) as pool:
        yield pool


@pytest.fixture(scope="module")
def dask_pool():
    with DaskExecutor(n_workers=2) as pool:
        yield pool


def sweep(grid, out, executor, **options):
    """``run_sweep`` in a thread with a deadline (a hung sweep fails the test instead of the run)."""
    box = {}

    def target():
        try:
            box["result"] = run_sweep(grid, out, executor=executor, progress=False, **options)
        except BaseException as exc:           # re-raised in the test's thread
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(WAIT)
    assert not thread.is_alive(), f"the sweep into {out} did not finish within {WAIT} s"
    if "error" in box:
        raise box["error"]
    return box["result"]


def result_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """The table without the execution columns (worker, seconds, attempts)."""
    return frame[[c for c in frame.columns if c not in RUN_COLUMNS]]


# ------------------------------------------------------------------------------ the grid
def test_grid_cells_are_the_product_then_the_explicit_cells(tmp_path):
    """Argument checks: [grid] x [fixed] in order (first axis slowest), [[cells]] after, a
    duplicate once; ints where a float is meant are the same cell; sigma = c is c I;
    checkpoint_every defaults to eval_every."""
    path = tmp_path / "g.toml"
    path.write_text('[grid]\nn = [4, 8]\nk = [1, 2]\n[fixed]\nd = 2\neta = 1\niters = 30\neval_every = 15\n'
                    'sigma = 0.5\n[[cells]]\nn = 16\nk = 3\n[[cells]]\nn = 4\nk = 1\n')
    grid = load_grid(path)
    cells = grid.expand()
    assert grid.name == "g" and grid.train is True
    assert [(c.config.n, c.config.k) for c in cells] == [(4, 1), (4, 2), (8, 1), (8, 2), (16, 3)]
    c = cells[0].config
    assert c.eta == 1.0 and isinstance(c.eta, float) and c.checkpoint_every == 15
    assert c.sigma == [[0.5, 0.0], [0.0, 0.5]]
    assert cells[0].name.startswith("cot-full-d2-n4-k1-eta1-seed0-") and cells[0].name.endswith(cells[0].id)
    same = make_config({"d": 2, "n": 4, "k": 1, "eta": 1.0, "iters": 30, "eval_every": 15, "sigma": [[0.5, 0], [0, 0.5]]})
    assert cell_id(same) == cells[0].id
    assert cell_id(make_config({"d": 2, "n": 4, "k": 1, "eta": 1.0, "iters": 31})) != cells[0].id


@pytest.mark.parametrize("text, names", [
    ("[grid]\nfoo = [1, 2]\n", "[grid] foo: unknown field"),
    ("[grid]\nd = 3\n", "[grid] d: expected a list"),
    ("[grid]\nd = []\n", "[grid] d: the list of values is empty"),
    ("[fixed]\nd = [2, 3]\n", "[fixed] d: expected a single value"),
    ("[fixed]\nbogus = 1\n", "[fixed] bogus: unknown field"),
    ("[fixed]\nout = 'x'\n", "[fixed] out: set by the sweep"),
    ("[grid]\nd = [2, 0]\n", "d must be an integer >= 1"),
    ("[grid]\neta = [0.4, -1.0]\n", "eta must be"),
    ("[grid]\nmode = ['cot', 'loop']\n", "mode must be one of"),
    ("[fixed]\nlr = 'fast'\n", "lr must be"),
    ("[grid]\nd = [2]\n[fixed]\nd = 3\n", "[fixed] d: also an axis"),
    ("trian = false\n", "unknown top-level key 'trian'"),
    ("train = 'no'\n", "train must be true or false"),
    ("[[cells]]\nk = [1, 2]\n", "[[cells]] entry 1 k: expected a single value"),
    ("[grid\n", "is not valid TOML"),
])
def test_bad_grids_are_one_line_errors_naming_the_field(tmp_path, text, names):
    """Argument checks: every bad grid is one ValueError line that names the table and field."""
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ValueError) as info:
        load_grid(path)
    message = str(info.value)
    assert names in message and "\n" not in message


def test_out_that_holds_something_else_is_refused(tmp_path, local_pool):
    """Argument checks: an --out that is a file, a non-empty directory that is not a sweep, or a
    sweep of another name is a ValueError; nothing is written into it."""
    afile = tmp_path / "file"
    afile.write_text("x")
    with pytest.raises(ValueError, match="not a directory"):
        run_sweep(TINY, afile, executor=local_pool, progress=False)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="holds no sweep"):
        run_sweep(TINY, busy, executor=local_pool, progress=False)
    assert sorted(p.name for p in busy.iterdir() if not p.name.startswith(".")) == ["notes.txt"]
    other = tmp_path / "other"
    other.mkdir()
    (other / "sweep.json").write_text(json.dumps({"kind": "cotgd-sweep", "name": "phase", "cells": []}))
    with pytest.raises(ValueError, match="holds the sweep 'phase', not 'tiny'"):
        run_sweep(TINY, other, executor=local_pool, progress=False)


# ------------------------------------------------------------------------------ running
@pytest.fixture(scope="module")
def tiny_local(tmp_path_factory, local_pool):
    out = tmp_path_factory.mktemp("local") / "tiny"
    return out, sweep(TINY, out, local_pool)


def test_tiny_sweep_table_has_a_row_per_cell_with_theory_and_training(tiny_local):
    """Exact and training: one row per cell in grid order, in results.parquet and results.csv;
    exact_eval_loss is theory.gd_eval_loss (cot) or Theorem 3.1's floor (nocot); the Monte Carlo
    column agrees with it within 5 standard errors; the training columns are what
    training.train gives for the cell's config in this process (bitwise, one torch thread)."""
    out, result = tiny_local
    assert result.counts == {"done": 4, "failed": 0, "diverged": 0} and result.ran == 4
    frame = load_results(out)
    csv = pd.read_csv(out / "results.csv")
    assert list(frame["cell"]) == list(csv["cell"]) == [c.name for c in parse_grid(TINY).expand()]
    assert [(r.d, r.mode) for r in frame.itertuples()] == [(2, "cot"), (2, "nocot"), (3, "cot"), (3, "nocot")]
    np.testing.assert_array_equal(frame["final_eval_loss"].to_numpy(), csv["final_eval_loss"].to_numpy())
    for row in frame.itertuples():
        if row.mode == "cot":
            exact = float(theory.gd_eval_loss(row.d, row.n, sympy.Rational(2, 5), row.k))
            assert row.exact_eval_loss == pytest.approx(exact, rel=1e-12)
            assert row.exact_eval_loss == numerics.gd_eval_loss_value(row.d, row.n, row.eta, row.k)
            assert abs(row.theory_mc - exact) < 5 * row.theory_mc_se
            assert row.theory_method == "exact theory.gd_eval_loss"
        else:
            assert row.exact_eval_loss == pytest.approx(row.d * (row.d + 1) / (2 * (row.n + row.d + 1)), rel=1e-14)
            assert np.isnan(row.theory_mc)
        assert row.theory_eval_loss == row.exact_eval_loss and row.status == "done" and row.attempts == 1
    d3 = frame[(frame["d"] == 3) & (frame["mode"] == "cot")].iloc[0]
    config = TrainConfig(**{**TINY["fixed"], "d": 3, "mode": "cot", "eta": 0.4, "checkpoint_every": 10,
                            "progress": False})
    s = train(config).summary
    assert d3["final_eval_loss"] == s["final_eval_loss"] and d3["median"] == s["eval"]["median"]
    assert d3["functional_deviation"] == s["structure"]["functional_deviation"]
    assert d3["theory_same_prompts"] == s["theory_same_prompts"]["mean"]
    manifest = json.loads((out / "sweep.json").read_text())
    assert manifest["name"] == "tiny" and manifest["status"] == "finished" and len(manifest["cells"]) == 4
    assert manifest["versions"]["torch"] == torch.__version__ and "git_commit" in manifest


def test_dask_local_cluster_gives_the_local_table(tiny_local, dask_pool, tmp_path):
    """Training: the same sweep on a Dask LocalCluster (2 worker processes) gives the local
    pool's table, bitwise, but for the execution columns."""
    out, _ = tiny_local
    result = sweep(TINY, tmp_path / "dask", dask_pool)
    assert result.counts["done"] == 4
    local, dask = load_results(out), load_results(tmp_path / "dask")
    pd.testing.assert_frame_equal(result_columns(local), result_columns(dask), check_exact=True)
    assert dask["worker"].str.startswith("tcp://").all()


def test_rerun_skips_finished_cells_and_edited_grid_reuses_identical_ones(tiny_local, local_pool):
    """Training: rerunning runs nothing (no cell file is rewritten); a grid with one more value of
    d reuses the four cells and runs two; the table holds exactly the grid's cells."""
    out, _ = tiny_local
    files = sorted((out / "cells").glob("*/*.json")) + sorted((out / "cells").glob("*/*.pt"))
    before = {p: p.stat().st_mtime_ns for p in files}
    again = sweep(TINY, out, local_pool)
    assert again.ran == 0 and again.reused == 4
    assert {p: p.stat().st_mtime_ns for p in files} == before
    edited = dict(TINY, grid={"d": [2, 3, 4], "mode": ["cot", "nocot"]})
    more = sweep(edited, out, local_pool)
    assert more.ran == 2 and more.reused == 4 and len(more.table) == 6
    assert {p: p.stat().st_mtime_ns for p in files} == before
    back = sweep(TINY, out, local_pool)
    assert back.ran == 0 and len(back.table) == 4


def test_diverging_and_raising_cells_are_recorded_and_the_others_finish(tmp_path, local_pool):
    """Training: a cell whose training diverges (eta 20) is 'diverged' with the message, one whose
    training raises (its run directory cannot be written) is 'failed' with the error, the others
    are done; theory columns are filled for all; a rerun keeps the records, retry_failed runs
    the failed cell again.  The no-CoT points of eta 0.4 and 20 are one cell (no-CoT reads no
    eta): both rows carry its failure, then its result."""
    grid = {"name": "failing", "grid": {"eta": [0.4, 20.0], "mode": ["cot", "nocot"]},
            "fixed": dict(TINY["fixed"], d=2, k=4)}
    cells = parse_grid(grid).expand()
    assert cells[1].name == cells[3].name and len({c.name for c in cells}) == 3
    blocked = tmp_path / "s" / "cells" / cells[1].name / "manifest.json"      # nocot (any eta)
    blocked.mkdir(parents=True)                                                # a directory: writing it raises
    (tmp_path / "s" / "sweep.json").write_text(json.dumps({"kind": "cotgd-sweep", "name": "failing", "cells": []}))
    result = sweep(grid, tmp_path / "s", local_pool)
    frame = result.table
    assert list(frame["cell"]) == [c.name for c in cells] and list(frame["eta"]) == [0.4, 0.4, 20.0, 20.0]
    assert list(frame["status"]) == ["done", "failed", "diverged", "failed"]
    assert frame.loc[1, "error"].startswith("IsADirectoryError") and frame.loc[3, "error"] == frame.loc[1, "error"]
    assert "diverged at iteration" in frame.loc[2, "error"]
    assert np.isnan(frame.loc[2, "final_eval_loss"])
    assert frame["theory_eval_loss"].notna().all()
    assert result.counts == {"done": 1, "failed": 2, "diverged": 1} and result.distinct == 3
    assert sweep(grid, tmp_path / "s", local_pool).ran == 0
    blocked.rmdir()
    retried = sweep(grid, tmp_path / "s", local_pool, retry_failed=True)
    assert retried.ran == 2 and retried.counts == {"done": 3, "failed": 0, "diverged": 1}
    again = retried.table
    assert again.loc[1, "final_eval_loss"] == again.loc[3, "final_eval_loss"] and again.loc[3, "eta"] == 20.0


def test_cell_whose_model_fails_the_verdict_is_recorded_failed_and_the_others_finish(tmp_path, local_pool):
    """Training: of two 60-iteration cells of d 3, the one at lr 1 ends with a model worse than
    predicting 0 (training.verdict): its row is 'failed' with the verdict's line as error, and
    keeps its training columns; the cell at lr 0.1 is done.  A rerun keeps both records;
    retry_failed reads the failed run back (it ended: nothing is retrained) and it stays failed."""
    grid = {"name": "verdict", "grid": {"lr": [0.1, 1.0]},
            "fixed": dict(TINY["fixed"], d=3, n=8, iters=60, batch=64, eval_every=30, eval_samples=2000)}
    cells = parse_grid(grid).expand()
    result = sweep(grid, tmp_path / "s", local_pool)
    frame = result.table.set_index("cell")
    good, bad = frame.loc[cells[0].name], frame.loc[cells[1].name]
    assert good["status"] == "done" and pd.isna(good["error"])
    assert bad["status"] == "failed"
    assert bad["error"].startswith("training failed: the mean loss over the non-diverged prompts")
    assert bad["final_eval_loss"] > 1.05 * 1.5 and bad["diverged_frac"] <= 0.5
    assert result.counts == {"done": 1, "failed": 1, "diverged": 0}
    assert load_results(tmp_path / "s").set_index("cell").loc[cells[1].name, "status"] == "failed"
    params = tmp_path / "s" / "cells" / cells[1].name / "params.pt"
    before = params.stat().st_mtime_ns
    assert sweep(grid, tmp_path / "s", local_pool).ran == 0
    retried = sweep(grid, tmp_path / "s", local_pool, retry_failed=True)
    assert retried.ran == 1 and retried.counts == {"done": 1, "failed": 1, "diverged": 0}
    assert params.stat().st_mtime_ns == before


def kill_when_checkpointed(cell_dir, box: dict, deadline: float = 120.0) -> None:
    """Wait for the cell's first attempt to write a checkpoint, then SIGKILL its worker; what
    was killed goes to ``box["killed"]``."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        worker, checkpoint = cell_dir / "worker.json", cell_dir / "checkpoint.pt"
        if worker.exists() and checkpoint.exists():
            info = json.loads(worker.read_text())
            os.kill(info["pid"], signal.SIGKILL)
            box["killed"] = info
            return
        time.sleep(0.02)


def killing(cell_dir) -> tuple:
    box = {}
    thread = threading.Thread(target=kill_when_checkpointed, args=(cell_dir, box), daemon=True)
    thread.start()
    return thread, box


def killed_sweep(tmp_path, pool, name: str, *, seed: int, iters: int) -> tuple:
    """A one-cell sweep (``seed``, ``iters`` steps, a checkpoint every 100) whose worker is
    SIGKILLed after the cell's first checkpoint: ``(result row, kill record, fixed fields)``."""
    fixed = dict(TINY["fixed"], d=3, iters=iters, batch=128, eval_every=500, checkpoint_every=100)
    grid = {"name": name, "grid": {"seed": [seed]}, "fixed": fixed}
    cell = parse_grid(grid).expand()[0]
    killer, box = killing(tmp_path / "s" / "cells" / cell.name)
    result = sweep(grid, tmp_path / "s", pool)
    killer.join()
    return result.table.iloc[0], box, fixed


def test_killed_worker_cell_is_retried_and_resumes(tmp_path, local_pool):
    """Training: SIGKILL of the local worker running a cell (after its first checkpoint) breaks
    the pool; the pool is renewed, the cell retried (attempts 2) and resumed from its checkpoint,
    and its numbers are those of an uninterrupted run (training.train here, bitwise)."""
    row, box, fixed = killed_sweep(tmp_path, local_pool, "kill", seed=5, iters=1500)
    assert box["killed"]["attempt"] == 1, "the worker was not killed mid-cell"
    assert row["status"] == "done" and row["attempts"] == 2
    s = train(TrainConfig(**fixed, seed=5, progress=False)).summary
    assert row["final_eval_loss"] == s["final_eval_loss"] and row["q90"] == s["eval"]["q90"]


@pytest.mark.slow
def test_killed_dask_worker_cell_is_rescheduled(tmp_path, dask_pool, slow_scale):
    """Training: SIGKILL of the Dask worker running a cell; the cluster restarts the worker and
    reschedules the cell, which resumes from its checkpoint and ends as an uninterrupted run."""
    row, box, fixed = killed_sweep(tmp_path, dask_pool, "kill-dask", seed=6,
                                   iters=1500 if slow_scale == "reduced" else 4000)
    assert "killed" in box, "the worker was not killed mid-cell"
    assert row["status"] == "done" and row["worker"] != box["killed"]["worker"]
    s = train(TrainConfig(**fixed, seed=6, progress=False)).summary
    assert row["final_eval_loss"] == s["final_eval_loss"]


@pytest.mark.slow
def test_bench_sweep_reports_cells_per_minute_for_each_engine():
    """Speed figures only (no timed assertion): ``bench_sweep`` reports cells per minute for
    local-1, local-2, dask-2 and the external cluster dask-external-2 on identical cells, with
    its details."""
    from training.app.sweep_bench import bench_sweep
    figures = bench_sweep(quick=True, cells=2, seconds=0.5)
    per = figures["sweep_cells_per_minute"]
    assert set(per) == {"local-1", "local-2", "dask-2", "dask-external-2"} and all(v > 0 for v in per.values())
    assert figures["sweep_bench"]["dask_external_over_local2"] > 0
    details = figures["sweep_bench"]
    assert details["cells"] == 2 and details["parallel_speedup_matmul"] > 0
    assert set(details["sweep_seconds"]) == set(per)


def test_plots_draw_cells_judged_failed_but_not_cells_that_raised():
    """A cell trained to the end but judged failed (training.verdict: worse than predicting 0,
    e.g. GD past Theorem 4.2's bound at n/d <= 1) is a measurement and stays in the phase
    diagram; a cell that raised has no loss and drops out."""
    from training.app.sweep_plot import _trained, pair_modes
    rows = []
    for mode, k, status, loss in (("cot", 2, "done", 0.5), ("nocot", 2, "done", 1.0),
                                  ("cot", 4, "failed", 9.0), ("nocot", 4, "done", 1.0),
                                  ("cot", 6, "failed", None), ("nocot", 6, "done", 1.0)):
        rows.append({"mode": mode, "k": k, "d": 5, "n": 4, "status": status, "train": True,
                     "final_eval_loss": loss, "theory_eval_loss": 0.4})
    frame = pd.DataFrame(rows)
    trained = _trained(frame)
    assert sorted(trained[trained["mode"] == "cot"]["k"]) == [2, 4]
    pairs = pair_modes(trained)
    assert dict(zip(pairs["k"], pairs["ratio_trained"])) == {2: 0.5, 4: 9.0}


def test_progress_bar_counts_done_running_failed_and_names_the_worker_of_a_failure(tmp_path, local_pool, capsys):
    """The bar (progress=True) shows done / running / failed, and a line per failed cell naming
    the worker (host:pid) it ran on; the table records that worker's host and, outside SLURM, no
    job id."""
    grid = {"name": "bar", "grid": {"eta": [0.4, 20.0]}, "fixed": dict(TINY["fixed"], d=2, k=4)}
    cells = parse_grid(grid).expand()
    result = run_sweep(grid, tmp_path / "s", executor=local_pool, progress=True)
    err = capsys.readouterr().err
    row = result.table.iloc[1]
    assert row["status"] == "diverged" and row["host"] == socket.gethostname() and pd.isna(row["job_id"])
    assert f"cell {cells[1].name} diverged on {row['worker']}: training diverged at iteration" in err
    assert "done 1 running 0 failed 1" in err
