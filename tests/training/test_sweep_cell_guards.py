"""Guards from the mutation campaign (tests/mutation): one cell of a sweep (training/sweep/cell.py),
run in this process (``run_cell`` directly, or ``run_sweep`` on ``sweep_helpers.inline_executor``).

What a user relies on from a cell: its row's numbers are its run directory's (the summary, the
theory's exact values, sigma's largest eigenvalue, the OOD columns by name); its status follows
the verdict (done / failed / diverged) and its error is one line; a finished cell or run is
reused, never retrained, and a run of another config is replaced; a run killed mid-way resumes
from its checkpoint and says from which iteration; its record names where it ran (host, SLURM
job, worker, every start); a worker of other versions refuses the cell, naming what differs.
Tiny CPU cells (d 2, n 6, 6 iterations of 8 prompts)."""
import fcntl
import json
import os
import socket
import sys
import threading
import time
import types
import warnings
from importlib.metadata import version as package_version

import numpy as np
import pytest
import sympy
import torch
from sweep_helpers import inline_executor

import numerics
import theory
import training.engine
import training.evaluate
from training import TrainConfig
from training.errors import TrainingDiverged
from training.rundir import read_manifest, read_summary
from training.sweep import (OOD_STATS, RECORD_EXTRA_KEYS, RECORD_KEYS, RESULT_COLUMNS, RUN_COLUMNS, VERSION_KEYS,
                            WorkerMismatch, attempt_started, cell_path, cell_task, config_columns, identity_dict,
                            job_id, make_row, ood_names, parse_grid, read_record, record_row, row_columns, run_cell,
                            run_sweep, software_versions, summary_columns, theory_columns, version_mismatch,
                            worker_name)
from training.sweep import cell as cellmod

FIXED = {"d": 2, "n": 6, "k": 2, "iters": 6, "batch": 8, "eval_every": 3, "eval_samples": 200,
         "theory_samples": 200, "structure_samples": 16, "device": "cpu"}
OOD = {"wide": 2.0, "tilted": [[2.0, 1.0], [1.0, 2.0]]}
TILTED = [[2.0, 1.0], [1.0, 2.0]]          # eigenvalues 3 and 1


def one_cell(**fields):
    grid = parse_grid({"name": "g", "fixed": {**FIXED, **fields}})
    return grid, grid.expand()[0]


def cell_files(cell_dir) -> dict:
    return {name: os.stat(os.path.join(cell_dir, name)).st_mtime_ns for name in sorted(os.listdir(cell_dir))}


def nan_or_none(value) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))


@pytest.fixture(autouse=True)
def no_slurm(monkeypatch):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)


# ------------------------------------------------------------------------------ the table's numbers
def test_rows_hold_the_run_directorys_numbers_and_the_theorys_exact_values(tmp_path):
    """Three cells (cot, nocot, cot with a tilted sigma) with two OOD covariances, through
    run_sweep in this process: every row's training columns are its summary.json's, the theory
    columns the exact values (theory.gd_eval_loss, Theorem 3.1's floor) or the Monte Carlo mean
    with its se, sigma_max sigma's largest eigenvalue, the OOD columns each name's report."""
    table = {"name": "rows", "grid": {"mode": ["cot", "nocot"]}, "fixed": {**FIXED, "ood_sigmas": OOD},
             "cells": [{"mode": "cot", "sigma": TILTED}]}
    grid = parse_grid(table)
    cells = grid.expand()
    with inline_executor() as ex:
        result = run_sweep(grid, tmp_path / "s", executor=ex, progress=False)
    frame = result.table
    assert result.counts == {"done": 3, "failed": 0, "diverged": 0} and result.ran == 3
    assert list(frame.columns) == row_columns(cells)
    assert [c for c in frame.columns if c.startswith("ood_") and c != "ood_sigmas"] == [f"ood_{n}_{s}" for n in ("wide", "tilted")
                                                                   for s in OOD_STATS]
    assert list(frame["cell"]) == [c.name for c in cells]
    for cell, (_, row) in zip(cells, frame.iterrows(), strict=True):
        s = read_summary(cell_path(str(tmp_path / "s"), cell.name))
        ev, same, st = s["eval"], s["theory_same_prompts"], s["structure"]
        assert row["status"] == "done" and nan_or_none(row["error"])
        assert bool(row["train"]) is True
        assert row["attempts"] == 1 and row["host"] == socket.gethostname() and nan_or_none(row["job_id"])
        assert row["worker"] == worker_name()
        assert row["n_over_d"] == 3.0 and row["d"] == 2 and row["n"] == 6 and row["mode"] == cell.config.mode
        expected = {"final_eval_loss": s["final_eval_loss"], "eval_se": ev["se"], "median": ev["median"],
                    "q10": ev["q10"], "q90": ev["q90"], "diverged_frac": ev["diverged_frac"],
                    "final_train_loss": s["final_train_loss"], "theory_same_prompts": same["mean"],
                    "theory_same_prompts_median": same["median"], "relative_gap": s["relative_gap"],
                    "relative_gap_same_prompts": s["relative_gap_same_prompts"], "learned_step": s["learned_step"],
                    "lr_used": s["lr"], "iterations": s["iterations"], "skipped_steps": s["skipped_steps"],
                    "train_seconds": s["train_seconds"], **{k: st[k] for k in ("v31_w13", "w24_v31",
                                                                                  "offdiag_energy",
                                                                                  "functional_deviation")}}
        assert all(v is not None for v in expected.values())
        assert {k: row[k] for k in expected} == expected
        assert row["iterations"] == 6 and row["lr_used"] == 0.001 and row["skipped_steps"] == 0
        for name, lam in (("wide", 2.0), ("tilted", 3.0)):
            report = s["eval_ood"][name]
            assert row[f"ood_{name}_lambda_max"] == pytest.approx(lam, rel=1e-12)
            assert {st_: row[f"ood_{name}_{st_}"] for st_ in OOD_STATS[1:]} == {st_: report[st_]
                                                                                 for st_ in OOD_STATS[1:]}
        assert 0 < row["seconds"] < result.seconds
    cot, nocot, tilted = (frame.iloc[i] for i in range(3))
    exact = numerics.gd_eval_loss_value(2, 6, 0.4, 2)
    assert exact == pytest.approx(float(theory.gd_eval_loss(2, 6, sympy.Rational(2, 5), 2)), rel=1e-12)
    mc = read_summary(cell_path(str(tmp_path / "s"), cells[0].name))["theory"]
    assert (cot["theory_eval_loss"], cot["exact_eval_loss"], cot["theory_se"], cot["theory_method"],
            cot["theory_step"]) == (exact, exact, 0.0, "exact theory.gd_eval_loss", 0.4)
    assert (cot["theory_mc"], cot["theory_mc_se"]) == (mc["value"], mc["se"]) and mc["se"] > 0
    assert cot["sigma_max"] == 1.0 and nan_or_none(cot["sigma"])
    floor = 2 * 3 / (2 * (6 + 2 + 1))
    assert nocot["theory_eval_loss"] == pytest.approx(floor, rel=1e-14) and nocot["exact_eval_loss"] == nocot[
        "theory_eval_loss"]
    assert (nocot["theory_se"], nocot["theory_method"]) == (0.0, "exact theory.nocot_min_loss")
    assert nocot["theory_step"] == pytest.approx(float(theory.nocot_optimal_eta(2, 6)), rel=1e-14)
    assert nan_or_none(nocot["theory_mc"]) and nan_or_none(nocot["theory_mc_se"])
    mc = read_summary(cell_path(str(tmp_path / "s"), cells[2].name))["theory"]
    assert (tilted["theory_eval_loss"], tilted["theory_se"], tilted["theory_method"]) == (
        mc["value"], mc["se"], "monte_carlo numerics.eval_loss_mc")
    assert (tilted["theory_mc"], tilted["theory_mc_se"]) == (mc["value"], mc["se"]) and mc["se"] > 0
    assert nan_or_none(tilted["exact_eval_loss"])
    # sigma's spectrum puts eta past the stable step: the engine's warning is the cell's, on its row
    assert nan_or_none(cot["warnings"]) and nan_or_none(nocot["warnings"])
    assert tilted["warnings"].startswith("RuntimeWarning: eta = 0.4 is past the stable step 0.2679")
    assert tilted["sigma_max"] == pytest.approx(3.0, rel=1e-12) and tilted["sigma"] == "[[2.0,1.0],[1.0,2.0]]"
    assert tilted["ood_sigmas"] == '{"wide":2.0,"tilted":[[2.0,1.0],[1.0,2.0]]}'


def test_theory_columns_take_the_exact_value_where_there_is_one():
    """theory_columns' rule on references as evaluate.theory_reference gives them."""
    cot, nocot = TrainConfig(**FIXED), TrainConfig(**FIXED, mode="nocot")
    looped = TrainConfig(**FIXED, mode="looped")
    keys = ("theory_eval_loss", "theory_se", "theory_method", "theory_step", "exact_eval_loss", "theory_mc",
            "theory_mc_se")
    assert theory_columns(cot, None) == dict.fromkeys(keys)
    mc = {"value": 0.33, "method": "monte_carlo numerics.eval_loss_mc", "se": 0.03, "step": 0.4}
    assert theory_columns(cot, {**mc, "exact": 0.25}) == {
        "theory_eval_loss": 0.25, "theory_se": 0.0, "theory_method": "exact theory.gd_eval_loss", "theory_step": 0.4,
        "exact_eval_loss": 0.25, "theory_mc": 0.33, "theory_mc_se": 0.03}
    assert theory_columns(cot, mc) == {
        "theory_eval_loss": 0.33, "theory_se": 0.03, "theory_method": "monte_carlo numerics.eval_loss_mc",
        "theory_step": 0.4, "exact_eval_loss": None, "theory_mc": 0.33, "theory_mc_se": 0.03}
    floor = {"value": 1 / 3, "method": "exact theory.nocot_min_loss", "se": 0.0, "step": 2 / 3}
    assert theory_columns(nocot, floor) == {
        "theory_eval_loss": 1 / 3, "theory_se": 0.0, "theory_method": "exact theory.nocot_min_loss",
        "theory_step": 2 / 3, "exact_eval_loss": 1 / 3, "theory_mc": None, "theory_mc_se": None}
    # an exact method of another mode is not the nocot floor: its value and se as they are
    exact_looped = {"value": 0.5, "method": "exact numerics.looped_optimal_eta", "se": 0.01, "step": 0.7}
    assert theory_columns(looped, exact_looped) == {
        "theory_eval_loss": 0.5, "theory_se": 0.01, "theory_method": "exact numerics.looped_optimal_eta",
        "theory_step": 0.7, "exact_eval_loss": None, "theory_mc": None, "theory_mc_se": None}
    # a nocot reference that is not exact (Monte Carlo) stays one
    assert theory_columns(nocot, {**mc, "step": 0.6})["exact_eval_loss"] is None
    assert theory_columns(nocot, {**mc, "step": 0.6})["theory_mc"] == 0.33
    # an unavailable value with no method
    assert theory_columns(looped, {"value": None, "se": None, "step": None}) == {
        **dict.fromkeys(keys), "theory_method": ""}
    # an integer exact value is a float in the table
    out = theory_columns(cot, {**mc, "exact": 1})
    assert out["theory_eval_loss"] == 1.0 and isinstance(out["theory_eval_loss"], float)
    assert isinstance(out["exact_eval_loss"], float)
    out = theory_columns(nocot, {**floor, "value": 1})
    assert isinstance(out["theory_eval_loss"], float) and isinstance(out["exact_eval_loss"], float)
    # the real references
    ref = training.evaluate.theory_reference(cot)
    assert theory_columns(cot, ref)["theory_eval_loss"] == numerics.gd_eval_loss_value(2, 6, 0.4, 2)
    ref = training.evaluate.theory_reference(nocot)
    assert theory_columns(nocot, ref)["theory_eval_loss"] == float(theory.nocot_min_loss(2, 6))


def test_config_columns_write_matrices_and_tables_as_compact_json():
    config = TrainConfig(**{**FIXED, "sigma": TILTED, "ood_sigmas": {"wide": 2.0}})
    cols = config_columns(config)
    assert list(cols) == list(identity_dict(config)) + ["n_over_d", "sigma_max"]
    assert cols["sigma"] == "[[2.0,1.0],[1.0,2.0]]" and cols["ood_sigmas"] == '{"wide":2.0}'
    assert cols["init_ab"] is None and cols["d"] == 2 and cols["mode"] == "cot" and cols["eta"] == 0.4
    assert cols["n_over_d"] == 3.0 and cols["sigma_max"] == pytest.approx(3.0, rel=1e-12)
    iso = TrainConfig(**{**FIXED, "param": "isotropic", "init_ab": [0.1, 0.2], "n": 5})
    cols = config_columns(iso)
    assert cols["init_ab"] == "[0.1,0.2]" and cols["sigma"] is None and cols["ood_sigmas"] is None
    assert cols["sigma_max"] == 1.0 and cols["n_over_d"] == 2.5
    assert cellmod._lambda_max([[1, 0], [0, 4]]) == 4.0
    assert ood_names(TrainConfig(**FIXED, ood_sigmas=OOD)) == ["wide", "tilted"] and ood_names(iso) == []


def test_summary_columns_empty_and_partial_summaries():
    config = TrainConfig(**FIXED, ood_sigmas={"wide": 2.0})
    keys = list(RESULT_COLUMNS[RESULT_COLUMNS.index("final_eval_loss"):]) + [f"ood_wide_{s}" for s in OOD_STATS]
    assert summary_columns(None, config) == dict.fromkeys(keys)
    assert summary_columns({}, config) == dict.fromkeys(keys)
    partial = {"final_eval_loss": 0.5, "eval_ood": {"wide": {"mean": 1.5, "median": 1.0, "q90": 3.0,
                                                             "diverged_frac": 0.25},
                                                    "gone": {"mean": 9.0}}}
    out = summary_columns(partial, config)
    assert list(out) == keys
    assert out["final_eval_loss"] == 0.5 and out["median"] is None
    assert (out["ood_wide_lambda_max"], out["ood_wide_mean"], out["ood_wide_median"], out["ood_wide_q90"],
            out["ood_wide_diverged_frac"]) == (2.0, 1.5, 1.0, 3.0, 0.25)


def test_a_row_has_the_tables_columns_in_order_and_old_records_read():
    grid, cell = one_cell(ood_sigmas={"wide": 2.0})
    record = {"status": "failed", "error": "E: x", "warnings": "W: y", "train": False, "reference": None,
              "summary": None, "seconds": 1.5, "worker": "w:1", "attempts": 2}
    row = record_row(cell, record)
    assert list(row) == row_columns([cell])
    assert (row["cell"], row["status"], row["error"], row["warnings"], row["train"], row["seconds"], row["worker"],
            row["attempts"]) == (cell.name, "failed", "E: x", "W: y", False, 1.5, "w:1", 2)
    assert row["host"] is None and row["job_id"] is None and row["train_seconds"] is None
    row = record_row(cell, {**record, "host": "h", "job_id": "77", "summary": {"train_seconds": 0.25}})
    assert (row["host"], row["job_id"], row["train_seconds"]) == ("h", "77", 0.25)
    row = make_row(cell.config, name="x", train=True, status="done", error=None, reference=None, summary=None,
                   seconds=None, worker=None, attempts=None)
    assert row["warnings"] is None and row["host"] is None and row["job_id"] is None


def test_row_columns_collect_every_ood_name_once_in_order():
    cells = parse_grid({"name": "c", "fixed": FIXED, "cells": [{"ood_sigmas": {"a": 2.0, "b": 3.0}},
                                                                {"ood_sigmas": {"b": 3.0, "c": 0.5}},
                                                                {"seed": 1}]}).expand()
    cols = row_columns(cells)
    names = [k for k in TrainConfig().to_dict() if k not in ("out", "progress")]
    assert cols == (["cell"] + names + list(RESULT_COLUMNS)
                    + [f"ood_{n}_{s}" for n in ("a", "b", "c") for s in OOD_STATS] + list(RUN_COLUMNS))
    assert "out" not in cols and "progress" not in cols


# ------------------------------------------------------------------------------ status and errors
def test_a_cell_whose_model_fails_the_verdict_is_failed_with_the_verdicts_line(tmp_path):
    grid, cell = one_cell(lr=3.0)
    record = run_cell(cell_task(grid, cell, str(tmp_path), 1))
    assert record["status"] == "failed" and record["summary"]["verdict"]["status"] == "failed"
    assert record["error"] == record["summary"]["verdict"]["message"]
    assert record["error"].startswith("training failed: the trained model diverges on")
    assert record["reference"] == record["summary"]["theory"]
    row = record_row(cell, record)
    assert row["final_eval_loss"] == record["summary"]["final_eval_loss"] and row["status"] == "failed"


def test_diverged_raising_and_theoryless_cells_are_recorded_as_one_line(tmp_path, monkeypatch):
    grid, cell = one_cell(lr=1e8)
    record = run_cell(cell_task(grid, cell, str(tmp_path / "a"), 1))
    assert record["status"] == "diverged" and record["summary"] is None
    assert record["error"].startswith("training diverged at iteration") and "\n" not in record["error"]
    assert record["reference"] == training.evaluate.theory_reference(cell.config)
    # a training that raises: its type and message on one line, cut at 500 characters
    real_train = training.engine.train
    long = "first line\n   second " + "x" * 600

    def raising(config, **kw):
        raise ValueError(long)

    monkeypatch.setattr(training.engine, "train", raising)
    grid, cell = one_cell()
    record = run_cell(cell_task(grid, cell, str(tmp_path / "b"), 1))
    assert record["status"] == "failed"
    assert record["error"] == "ValueError: " + ("first line second " + "x" * 600)[:500]
    assert record["reference"] == training.evaluate.theory_reference(cell.config)

    def diverging(config, **kw):
        raise TrainingDiverged(3, "y\n" + "z" * 600)

    monkeypatch.setattr(training.engine, "train", diverging)
    exc = TrainingDiverged(3, "y\n" + "z" * 600)
    record = run_cell(cell_task(grid, cell, str(tmp_path / "c"), 1))
    assert record["status"] == "diverged" and record["error"] == " ".join(str(exc).split())[:500]
    assert len(record["error"]) == 500

    # the theory raising too: both reasons, the status of the training's
    def no_theory(config):
        raise ValueError("no\n theory here")

    monkeypatch.setattr(training.evaluate, "theory_reference", no_theory)
    record = run_cell(cell_task(grid, cell, str(tmp_path / "d"), 1))
    assert record["status"] == "diverged" and record["reference"] is None
    assert record["error"] == " ".join(str(exc).split())[:500] + "; theory: ValueError: no theory here"
    monkeypatch.setattr(training.engine, "train", raising)
    record = run_cell(cell_task(grid, cell, str(tmp_path / "e"), 1))
    assert record["status"] == "failed"
    assert record["error"] == ("ValueError: " + ("first line second " + "x" * 600)[:500]
                               + "; theory: ValueError: no theory here")
    # no training, the theory raising: failed with the theory's reason alone
    monkeypatch.setattr(training.engine, "train", real_train)
    nogrid = parse_grid({"name": "t", "train": False, "fixed": FIXED})
    record = run_cell(cell_task(nogrid, nogrid.expand()[0], str(tmp_path / "f"), 1))
    assert (record["status"], record["error"], record["train"]) == ("failed", "theory: ValueError: no theory here",
                                                                    False)
    long_theory = "t\n" + "w" * 700

    def long_no_theory(config):
        raise RuntimeError(long_theory)

    monkeypatch.setattr(training.evaluate, "theory_reference", long_no_theory)
    record = run_cell(cell_task(nogrid, nogrid.expand()[0], str(tmp_path / "g"), 1))
    assert record["error"] == "theory: RuntimeError: " + ("t " + "w" * 700)[:500]


def test_an_error_in_one_cell_is_its_row_and_the_others_finish(tmp_path):
    """A cell whose run directory cannot be written fails with one line; the other cell of the
    sweep is done; the theory columns are filled for both."""
    table = {"name": "errs", "grid": {"seed": [0, 1]}, "fixed": FIXED}
    cells = parse_grid(table).expand()
    out = tmp_path / "s"
    (out / "cells" / cells[1].name / "manifest.json").mkdir(parents=True)
    (out / "sweep.json").write_text(json.dumps({"kind": "cotgd-sweep", "name": "errs", "cells": []}))
    with inline_executor() as ex:
        result = run_sweep(table, out, executor=ex, progress=False)
    frame = result.table
    assert list(frame["status"]) == ["done", "failed"] and result.counts == {"done": 1, "failed": 1, "diverged": 0}
    error = frame.loc[1, "error"]
    assert error.startswith("IsADirectoryError: ") and "\n" not in error and "Traceback" not in error
    assert frame["theory_eval_loss"].notna().all() and np.isnan(frame.loc[1, "final_eval_loss"])
    assert frame.loc[0, "theory_eval_loss"] == frame.loc[1, "theory_eval_loss"] == numerics.gd_eval_loss_value(
        2, 6, 0.4, 2)
    record = json.loads((out / "cells" / cells[1].name / "cell.json").read_text())
    assert record["status"] == "failed" and record["error"] == error


def test_the_cells_warnings_are_recorded_once_each_on_one_line(tmp_path, monkeypatch):
    real_train = training.engine.train

    def warning_train(config, **kw):
        for _ in range(2):
            warnings.warn("first\n  warning", UserWarning, stacklevel=1)
        warnings.warn("second " + "v" * 600, DeprecationWarning, stacklevel=1)
        return real_train(config, **kw)

    monkeypatch.setattr(training.engine, "train", warning_train)
    grid, cell = one_cell()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")       # the cell records its warnings whatever the caller's filters
        record = run_cell(cell_task(grid, cell, str(tmp_path), 1))
    assert record["status"] == "done"
    assert record["warnings"] == "UserWarning: first warning | DeprecationWarning: " + ("second " + "v" * 600)[:500]
    assert record_row(cell, record)["warnings"] == record["warnings"]


# ------------------------------------------------------------------------------ reuse, retrain, resume
def test_a_finished_cell_is_returned_as_recorded_and_nothing_is_rewritten(tmp_path):
    grid, cell = one_cell()
    task = cell_task(grid, cell, str(tmp_path), 1)
    first = run_cell(task)
    files = cell_files(task["dir"])
    assert {"cell.json", "worker.json", "manifest.json", "summary.json", "params.pt", "checkpoint.pt"} <= set(files)
    again = run_cell(task)
    assert again == first and cell_files(task["dir"]) == files
    assert run_cell({**task, "retry_failed": True}) == first and cell_files(task["dir"]) == files
    assert json.loads((tmp_path / "cells" / cell.name / "cell.json").read_text()) == first


def test_a_finished_run_without_a_record_is_read_back_not_retrained(tmp_path, monkeypatch):
    grid, cell = one_cell()
    task = cell_task(grid, cell, str(tmp_path), 1)
    first = run_cell(task)
    os.remove(os.path.join(task["dir"], "cell.json"))
    params = os.stat(os.path.join(task["dir"], "params.pt")).st_mtime_ns
    calls = []
    monkeypatch.setattr(training.evaluate, "theory_reference", lambda config: calls.append(config))
    record = run_cell({**task, "attempt": 2})
    assert os.stat(os.path.join(task["dir"], "params.pt")).st_mtime_ns == params
    assert record["summary"] == first["summary"] == read_summary(task["dir"])
    assert record["reference"] == first["summary"]["theory"] and calls == []
    assert record["status"] == "done" and record["resumed_from"] is None and record["attempts"] == 2
    assert [r["attempt"] for r in record["runs"]] == [1, 2]


def test_a_failed_record_is_kept_unless_retry_failed(tmp_path):
    grid, cell = one_cell()
    task = cell_task(grid, cell, str(tmp_path), 1)
    blocked = os.path.join(task["dir"], "manifest.json")
    os.makedirs(blocked)
    failed = run_cell(task)
    assert failed["status"] == "failed" and failed["error"].startswith("IsADirectoryError")
    os.rmdir(blocked)
    assert run_cell({**task, "attempt": 2}) == failed
    retried = run_cell(cell_task(grid, cell, str(tmp_path), 2, retry_failed=True))
    assert retried["status"] == "done" and retried["error"] is None and retried["attempts"] == 2
    assert [r["attempt"] for r in retried["runs"]] == [1, 2]


def test_a_run_of_another_config_in_the_cells_directory_is_replaced(tmp_path):
    """A stale run (another config, with its checkpoint) is trained afresh: not resumed."""
    grid, cell = one_cell()
    cell_dir = cell_path(str(tmp_path), cell.name)
    stale = training.engine.train(TrainConfig(**{**FIXED, "iters": 3, "out": cell_dir, "progress": False}))
    assert stale.summary["iterations"] == 3 and read_manifest(cell_dir)["checkpoint_iteration"] == 3
    record = run_cell(cell_task(grid, cell, str(tmp_path), 1))
    assert record["status"] == "done" and record["resumed_from"] is None
    assert record["summary"]["iterations"] == 6 and read_summary(cell_dir)["iterations"] == 6
    fresh = run_cell(cell_task(grid, cell, str(tmp_path / "fresh"), 1))
    assert record["summary"]["final_eval_loss"] == fresh["summary"]["final_eval_loss"]


def test_a_cell_killed_after_a_checkpoint_resumes_from_it_and_ends_as_an_uninterrupted_one(tmp_path, monkeypatch):
    grid, cell = one_cell()
    task = cell_task(grid, cell, str(tmp_path), 1)
    real = training.engine.write_checkpoint
    calls = []

    def killed_at_second(out, state):
        calls.append(state["iteration"])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(out, state)

    monkeypatch.setattr(training.engine, "write_checkpoint", killed_at_second)
    with pytest.raises(KeyboardInterrupt):
        run_cell(task)
    monkeypatch.setattr(training.engine, "write_checkpoint", real)
    assert not os.path.exists(os.path.join(task["dir"], "cell.json")) and attempt_started(task["dir"], 1)
    assert cellmod._checkpoint_iteration(task["dir"]) == 3
    calls = []
    real_resume, real_train = training.engine.resume, training.engine.train
    monkeypatch.setattr(training.engine, "resume", lambda out: calls.append(("resume", out)) or real_resume(out))
    monkeypatch.setattr(training.engine, "train", lambda c, **kw: calls.append(("train", c.out)) or real_train(c, **kw))
    record = run_cell({**task, "attempt": 2})
    assert calls == [("resume", task["dir"])]
    assert record["status"] == "done" and record["resumed_from"] == 3 and record["attempts"] == 2
    assert [r["attempt"] for r in record["runs"]] == [1, 2] and attempt_started(task["dir"], 2)
    whole = run_cell(cell_task(grid, cell, str(tmp_path / "whole"), 1))
    assert whole["resumed_from"] is None
    assert record["summary"]["final_eval_loss"] == whole["summary"]["final_eval_loss"]
    assert record["summary"]["eval"] == whole["summary"]["eval"]


def test_a_cell_killed_before_its_first_checkpoint_restarts_without_a_warning(tmp_path, monkeypatch):
    grid, cell = one_cell()
    task = cell_task(grid, cell, str(tmp_path), 1)
    real = training.engine.write_checkpoint

    def killed(out, state):
        raise KeyboardInterrupt

    monkeypatch.setattr(training.engine, "write_checkpoint", killed)
    with pytest.raises(KeyboardInterrupt):
        run_cell(task)
    monkeypatch.setattr(training.engine, "write_checkpoint", real)
    assert cellmod._checkpoint_iteration(task["dir"]) is None
    record = run_cell({**task, "attempt": 2})
    assert record["status"] == "done" and record["warnings"] is None and record["resumed_from"] is None
    whole = run_cell(cell_task(grid, cell, str(tmp_path / "whole"), 1))
    assert record["summary"]["final_eval_loss"] == whole["summary"]["final_eval_loss"]


def test_finished_summary_and_checkpoint_iteration_read_the_run_directory(tmp_path):
    grid, cell = one_cell()
    task = cell_task(grid, cell, str(tmp_path), 1)
    run_cell(task)
    cell_dir = task["dir"]
    assert cellmod._finished_summary(cell_dir) == read_summary(cell_dir)
    assert cellmod._checkpoint_iteration(cell_dir) == 6
    assert cellmod._run_matches(cell_dir, cell.config)
    assert not cellmod._run_matches(cell_dir, TrainConfig(**{**FIXED, "seed": 1}))
    assert not cellmod._run_matches(str(tmp_path / "none"), cell.config)
    manifest_path = os.path.join(cell_dir, "manifest.json")
    manifest = json.loads(open(manifest_path).read())
    with open(manifest_path, "w") as f:
        json.dump({**manifest, "checkpoint_iteration": "6"}, f)
    assert cellmod._checkpoint_iteration(cell_dir) is None
    with open(manifest_path, "w") as f:
        json.dump({**manifest, "status": "running"}, f)
    assert cellmod._finished_summary(cell_dir) is None and cellmod._checkpoint_iteration(cell_dir) == 6
    with open(manifest_path, "w") as f:
        json.dump({**manifest, "status": "failed"}, f)
    assert cellmod._finished_summary(cell_dir) == read_summary(cell_dir)
    os.remove(os.path.join(cell_dir, "checkpoint.pt"))
    assert cellmod._checkpoint_iteration(cell_dir) is None
    with open(os.path.join(cell_dir, "summary.json"), "w") as f:
        f.write("{damaged")
    assert cellmod._finished_summary(cell_dir) is None
    assert cellmod._finished_summary(str(tmp_path / "none")) is None
    assert cellmod._checkpoint_iteration(str(tmp_path / "none")) is None


# ------------------------------------------------------------------------------ the record
def test_the_record_names_the_host_job_worker_and_every_start(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    grid, cell = one_cell()
    task = cell_task(grid, cell, str(tmp_path), 3)
    previous = {"worker": "gone:1", "name": None, "host": "elsewhere", "pid": 1, "job_id": "41", "attempt": 2,
                "started": 1.0}
    os.makedirs(task["dir"])
    with open(os.path.join(task["dir"], "worker.json"), "w") as f:
        json.dump(dict(previous, runs=[previous]), f)
    before = time.time()
    record = run_cell(task)
    after = time.time()
    assert set(record) == {"id", "name", "config", *RECORD_KEYS, *RECORD_EXTRA_KEYS}
    assert (record["id"], record["name"], record["config"]) == (cell.id, cell.name, identity_dict(cell.config))
    assert (record["host"], record["job_id"], record["worker"], record["attempts"], record["train"]) == (
        socket.gethostname(), "4242", f"{socket.gethostname()}:{os.getpid()}", 3, True)
    start = record["runs"][-1]
    assert record["runs"][:-1] == [previous] and len(record["runs"]) == 2
    assert {k: v for k, v in start.items() if k != "started"} == {
        "worker": worker_name(), "name": None, "host": socket.gethostname(), "pid": os.getpid(), "job_id": "4242",
        "attempt": 3}
    assert before <= start["started"] <= after
    text = open(os.path.join(task["dir"], "worker.json")).read()
    assert text.endswith("}\n") and text.count("\n") == 1
    assert json.loads(text) == dict(start, runs=record["runs"])
    assert attempt_started(task["dir"], 3) and not attempt_started(task["dir"], 2)
    row = record_row(cell, record)
    assert (row["host"], row["job_id"], row["worker"], row["attempts"]) == (socket.gethostname(), "4242",
                                                                             worker_name(), 3)
    written = open(os.path.join(task["dir"], "cell.json")).read()
    assert written == json.dumps(record, indent=1, allow_nan=True) + "\n"
    assert 0 < record["seconds"] < after - before


def test_a_task_without_attempt_or_train_is_a_first_trained_attempt(tmp_path):
    grid, cell = one_cell()
    task = cell_task(grid, cell, str(tmp_path), 1)
    del task["attempt"], task["train"], task["retry_failed"], task["versions"]
    record = run_cell(task)
    assert record["attempts"] == 1 and record["runs"][0]["attempt"] == 1 and record["train"] is True
    assert record["summary"]["iterations"] == 6 and record["status"] == "done"


def test_job_id_is_slurms_or_none(monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "123")
    assert job_id() == "123"
    monkeypatch.setenv("SLURM_JOB_ID", "")
    assert job_id() is None
    monkeypatch.delenv("SLURM_JOB_ID")
    assert job_id() is None


def test_a_dask_workers_address_and_name_are_recorded(tmp_path, monkeypatch):
    fake = types.SimpleNamespace(address="tcp://10.0.0.7:4000", name=7)
    monkeypatch.setitem(sys.modules, "distributed", types.SimpleNamespace(get_worker=lambda: fake))
    assert worker_name() == "tcp://10.0.0.7:4000" and cellmod._dask_name() == "7"
    grid, cell = one_cell()
    record = run_cell(cell_task(grid, cell, str(tmp_path), 1))
    assert record["worker"] == "tcp://10.0.0.7:4000" and record["runs"][0]["worker"] == "tcp://10.0.0.7:4000"
    assert record["runs"][0]["name"] == "7"
    monkeypatch.delitem(sys.modules, "distributed")
    assert worker_name() == f"{socket.gethostname()}:{os.getpid()}" and cellmod._dask_name() is None


def test_a_cell_without_training_records_the_theory_alone(tmp_path):
    grid = parse_grid({"name": "t", "train": False, "grid": {"mode": ["cot", "nocot"]}, "fixed": FIXED})
    with inline_executor() as ex:
        result = run_sweep(grid, tmp_path / "s", executor=ex, progress=False)
    frame = result.table
    assert list(frame["status"]) == ["done", "done"] and not frame["train"].any()
    assert frame["final_eval_loss"].isna().all() and frame["train_seconds"].isna().all()
    assert frame.loc[0, "theory_eval_loss"] == numerics.gd_eval_loss_value(2, 6, 0.4, 2)
    assert frame.loc[1, "theory_eval_loss"] == pytest.approx(2 * 3 / (2 * 9), rel=1e-14)
    for cell in grid.expand():
        d = cell_path(str(tmp_path / "s"), cell.name)
        assert sorted(os.listdir(d)) == [".lock", "cell.json", "worker.json"]
        record = json.loads(open(os.path.join(d, "cell.json")).read())
        assert record["reference"] == training.evaluate.theory_reference(cell.run_config)
        assert record["summary"] is None and record["resumed_from"] is None


def test_a_records_non_finite_values_are_written(tmp_path, monkeypatch):
    monkeypatch.setattr(training.evaluate, "theory_reference",
                        lambda config: {"value": float("inf"), "method": "m", "se": float("nan"), "step": 0.4})
    grid = parse_grid({"name": "t", "train": False, "fixed": FIXED})
    record = run_cell(cell_task(grid, grid.expand()[0], str(tmp_path), 1))
    assert record["status"] == "done" and record["reference"]["value"] == float("inf")
    assert "Infinity" in open(os.path.join(record_dir := cell_path(str(tmp_path), record["name"]),
                                           "cell.json")).read()
    assert read_record(record_dir, grid.expand()[0].config)["reference"]["value"] == float("inf")


# ------------------------------------------------------------------------------ reading records
def test_read_record_returns_only_this_cells_complete_record(tmp_path):
    grid, cell = one_cell()
    task = cell_task(grid, cell, str(tmp_path), 1)
    record = run_cell(task)
    path = os.path.join(task["dir"], "cell.json")
    assert read_record(task["dir"], cell.config) == record
    assert read_record(task["dir"], TrainConfig(**{**FIXED, "seed": 1})) is None
    for bad in ("[1, 2]", "{broken", json.dumps({**record, "id": "000000000000"}),
                json.dumps({k: v for k, v in record.items() if k != "attempts"}),
                json.dumps({**record, "config": {**record["config"], "iters": 7}})):
        with open(path, "w") as f:
            f.write(bad)
        assert read_record(task["dir"], cell.config) is None, bad
    os.remove(path)
    assert read_record(task["dir"], cell.config) is None
    # an old record without the cluster keys is this cell's
    with open(path, "w") as f:
        json.dump({k: v for k, v in record.items() if k not in RECORD_EXTRA_KEYS}, f)
    old = read_record(task["dir"], cell.config)
    assert old["status"] == "done" and record_row(cell, old)["host"] is None


def test_previous_runs_and_attempt_started_tolerate_damaged_worker_files(tmp_path):
    d = str(tmp_path)
    path = os.path.join(d, "worker.json")
    assert cellmod._previous_runs(d) == [] and not attempt_started(d, 1)
    for bad in ("{broken", "[1, 2]", json.dumps({"attempt": 1, "runs": "no list"})):
        with open(path, "w") as f:
            f.write(bad)
        assert cellmod._previous_runs(d) == []
    assert attempt_started(d, 1) and not attempt_started(d, 2)
    for bad in ("{broken", "[1, 2]"):
        with open(path, "w") as f:
            f.write(bad)
        assert not attempt_started(d, 1)
    with open(path, "w") as f:
        json.dump({"attempt": 2, "runs": [{"attempt": 1}, {"attempt": 2}]}, f)
    assert cellmod._previous_runs(d) == [{"attempt": 1}, {"attempt": 2}] and attempt_started(d, 2)


# ------------------------------------------------------------------------------ versions, task, lock
def test_version_mismatch_names_each_package_and_both_versions():
    driver = {k: f"{k}-1" for k in VERSION_KEYS}
    assert version_mismatch(driver, dict(driver), "worker w") is None
    assert version_mismatch(driver, {**driver, "torch": "9.9"}, "worker tcp://h:1") == (
        "version mismatch: worker tcp://h:1 runs torch 9.9 (driver torch-1); install the driver's versions on every "
        "worker")
    assert version_mismatch(driver, {**driver, "sympy": "2", "cotgd": None}, "w") == (
        "version mismatch: w runs cotgd None (driver cotgd-1), sympy 2 (driver sympy-1); install the driver's "
        "versions on every worker")


def test_software_versions_are_this_processs(monkeypatch):
    import platform

    import numpy
    import scipy
    import sympy
    monkeypatch.setattr(cellmod, "_VERSIONS", {})
    mine = software_versions()
    assert mine == {"cotgd": package_version("cotgd"), "python": platform.python_version(),
                    "torch": torch.__version__, "numpy": numpy.__version__, "scipy": scipy.__version__,
                    "sympy": sympy.__version__}
    assert list(mine) == ["cotgd", "python", "torch", "numpy", "scipy", "sympy"]
    mine["torch"] = "changed"
    assert software_versions()["torch"] == torch.__version__


def test_software_versions_without_an_installed_toolkit(monkeypatch):
    from importlib import metadata

    def missing(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "version", missing)
    monkeypatch.setattr(cellmod, "_VERSIONS", {})
    assert software_versions()["cotgd"] is None and software_versions()["torch"] == torch.__version__


def test_a_worker_of_other_versions_refuses_the_cell(tmp_path):
    grid, cell = one_cell()
    task = cell_task(grid, cell, str(tmp_path), 1)
    assert task["versions"] == software_versions()
    task["versions"] = {**task["versions"], "numpy": "0.0.1"}
    with pytest.raises(WorkerMismatch) as info:
        run_cell(task)
    assert str(info.value) == (f"version mismatch: worker {worker_name()} runs numpy {np.__version__} (driver 0.0.1); "
                               "install the driver's versions on every worker")
    assert not os.path.exists(task["dir"])


def test_the_task_travels_as_a_plain_dict(tmp_path):
    grid, cell = one_cell()
    out = str(tmp_path)
    assert cell_task(grid, cell, out, 2) == {
        "name": cell.name, "config": cell.run_config.to_dict(), "dir": os.path.join(out, "cells", cell.name),
        "train": True, "attempt": 2, "retry_failed": False, "versions": software_versions()}
    assert cell_task(grid, cell, out, 1, retry_failed=True)["retry_failed"] is True
    assert cell_path(out, cell.name) == os.path.join(out, "cells", cell.name)


def test_run_cell_runs_on_one_torch_thread_and_restores_the_callers(monkeypatch):
    seen = []

    def fake(task, started):
        seen.append((torch.get_num_threads(), time.perf_counter() - started))
        if task.get("boom"):
            raise RuntimeError("boom")
        return {"ok": task["x"]}

    monkeypatch.setattr(cellmod, "_run_cell", fake)
    torch.set_num_threads(2)
    assert run_cell({"x": 5}) == {"ok": 5} and torch.get_num_threads() == 2
    with pytest.raises(RuntimeError):
        run_cell({"boom": True})
    assert torch.get_num_threads() == 2
    assert [n for n, _ in seen] == [1, 1] and all(0 <= dt < 5 for _, dt in seen)


def test_a_cell_waits_for_the_lock_on_its_directory(tmp_path):
    grid, cell = one_cell()
    task = cell_task(grid, cell, str(tmp_path), 1)
    os.makedirs(task["dir"])
    lock = os.path.join(task["dir"], ".lock")
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    box = {}
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        thread = threading.Thread(target=lambda: box.update(record=run_cell(task)), daemon=True)
        thread.start()
        thread.join(1.0)
        assert thread.is_alive() and not os.path.exists(os.path.join(task["dir"], "worker.json"))
    finally:
        os.close(fd)
    thread.join(60)
    assert box["record"]["status"] == "done"
    # the lock is released when the cell ends: another holder gets it at once
    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        os.close(fd)


def test_the_lock_file_is_created_readable_and_writable_by_all(tmp_path):
    umask = os.umask(0)
    os.umask(umask)
    with cellmod._locked(str(tmp_path / ".lock")):
        fd = os.open(str(tmp_path / ".lock"), os.O_RDWR)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)
    assert os.stat(tmp_path / ".lock").st_mode & 0o777 == 0o666 & ~umask

