"""One cell of a sweep, run in a worker: ``run_cell`` trains (or resumes) the cell's run in its
directory and returns its record; the record's files and the results table's rows.

The cell's directory (``cell_path``: ``DIR/cells/<cell name>``) is a run directory
(``training.rundir``) with the cell's own files beside it: ``cell.json`` (``CELL_RECORD``, the
record: ``RECORD_KEYS``, written atomically when the cell ends) and ``worker.json``
(``WORKER_RECORD``: which worker runs which attempt, every start of the cell in ``runs``, written
when an attempt starts).  A cell works under an exclusive lock on its directory, so that one
attempt runs at a time.  Its task (``cell_task``) is a plain dict, so that it travels to spawned
processes and Dask workers; it carries the driver's ``software_versions``, and a worker whose
versions differ refuses it (``WorkerMismatch``): its numbers would not be the driver's.

A cell that raises or diverges, or whose trained model fails the run's verdict
(``training.verdict``: diverging on most prompts, or worse than predicting w = 0), is recorded
(``status`` failed / diverged, ``error`` the reason), never raised.  The table's row of a cell
(``record_row``; columns ``row_columns``: the config fields, ``RESULT_COLUMNS``, the OOD
columns, ``RUN_COLUMNS``) is derived from its record when the table is written.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import socket
import time
import warnings

from ..config import TrainConfig, ood_sigma_matrices
from ..errors import one_line
from ..io import atomic_write_text
from .grid import LIST_FIELDS, SWEEP_OWNED, TABLE_FIELDS, Cell, Grid, cell_id, config_fields, identity_dict, same_config

#: The cells' directories under the sweep's: ``DIR/cells/<cell name>`` (``cell_path``).
CELLS_DIR = "cells"
#: A cell's record in its directory (``RECORD_KEYS``): what the cell found.
CELL_RECORD = "cell.json"
#: Which worker runs which attempt of a cell, in its directory (``attempt_started``).
WORKER_RECORD = "worker.json"

#: The table's columns after the config fields (``row_columns``), in order.
RESULT_COLUMNS = (
    "n_over_d", "sigma_max", "train", "status", "error", "warnings",
    "theory_eval_loss", "theory_se", "theory_method", "theory_step", "exact_eval_loss", "theory_mc",
    "theory_mc_se",
    "final_eval_loss", "eval_se", "median", "q10", "q90", "diverged_frac", "final_train_loss",
    "theory_same_prompts", "theory_same_prompts_median", "relative_gap", "relative_gap_same_prompts",
    "v31_w13", "w24_v31", "offdiag_energy", "functional_deviation", "learned_step", "lr_used",
    "iterations", "skipped_steps",
)
#: Per ``ood_sigmas`` name: ``ood_<name>_<stat>`` columns.
OOD_STATS = ("lambda_max", "mean", "median", "q90", "diverged_frac")
#: Columns that describe the execution, not the result (they differ between identical runs): the
#: worker's Dask address (else host:pid), its host, its SLURM job id (None outside SLURM).
RUN_COLUMNS = ("seconds", "train_seconds", "worker", "host", "job_id", "attempts")
#: The software whose versions a worker must share with the driver (``software_versions``).
VERSION_KEYS = ("cotgd", "python", "torch", "numpy", "scipy", "sympy")


class WorkerMismatch(RuntimeError):
    """A worker's software differs from the driver's (``software_versions``): it refuses the cell."""


_VERSIONS: dict = {}


def software_versions() -> dict:
    """This process's versions of cotgd and of what its numbers depend on (``VERSION_KEYS``;
    ``rundir.versions``)."""
    if not _VERSIONS:
        from importlib.metadata import PackageNotFoundError, version

        from ..rundir import versions
        try:
            mine = version("cotgd")
        except PackageNotFoundError:
            mine = None
        _VERSIONS.update({"cotgd": mine, **{k: v for k, v in versions().items() if k in VERSION_KEYS}})
    return dict(_VERSIONS)


def version_mismatch(driver: dict, worker: dict, where: str) -> str | None:
    """One line naming what differs between the driver's and a worker's ``software_versions``
    (None when nothing does)."""
    diff = [f"{k} {worker.get(k)} (driver {driver.get(k)})" for k in VERSION_KEYS if driver.get(k) != worker.get(k)]
    if not diff:
        return None
    return f"version mismatch: {where} runs " + ", ".join(diff) + "; install the driver's versions on every worker"


def job_id() -> str | None:
    """The batch job this process runs in (``SLURM_JOB_ID``), else None."""
    return os.environ.get("SLURM_JOB_ID") or None


def cell_path(out: str, name: str) -> str:
    """The run directory of the cell ``name`` in the sweep directory ``out``."""
    return os.path.join(out, CELLS_DIR, name)


def cell_task(grid: Grid, cell: Cell, out: str, attempt: int, retry_failed: bool = False) -> dict:
    """The task of ``run_cell`` for attempt ``attempt`` of ``cell`` of the sweep into ``out``."""
    return {"name": cell.name, "config": cell.run_config.to_dict(), "dir": cell_path(out, cell.name),
            "train": grid.train, "attempt": attempt, "retry_failed": retry_failed, "versions": software_versions()}


def _lambda_max(matrix) -> float:
    import numpy as np
    return float(np.linalg.eigvalsh(np.asarray(matrix, dtype=float)).max())


def _json_or_none(value):
    return None if value is None else json.dumps(value, separators=(",", ":"))


def config_columns(config: TrainConfig) -> dict:
    """The cell's config fields as table cells (matrices and tables as JSON text), then
    ``n_over_d`` and ``sigma_max`` (largest eigenvalue of sigma; 1 for the identity)."""
    out = {}
    for key, value in identity_dict(config).items():
        out[key] = _json_or_none(value) if key in LIST_FIELDS + TABLE_FIELDS else value
    out["n_over_d"] = config.n / config.d
    out["sigma_max"] = 1.0 if config.sigma is None else _lambda_max(config.sigma)
    return out


def ood_names(config: TrainConfig) -> list:
    return list(ood_sigma_matrices(config))


def theory_columns(config: TrainConfig, reference: dict | None) -> dict:
    """The theory's columns from ``evaluate.theory_reference``'s dict: ``theory_eval_loss`` is the
    exact value where there is one (``theory.gd_eval_loss`` for cot up to
    ``evaluate.EXACT_THEORY_MAX_K``; Theorem 3.1's floor for nocot), else the Monte Carlo mean
    with its standard error; ``theory_mc`` the Monte Carlo value when it was computed."""
    empty = {key: None for key in ("theory_eval_loss", "theory_se", "theory_method", "theory_step",
                                   "exact_eval_loss", "theory_mc", "theory_mc_se")}
    if reference is None:
        return empty
    out = dict(empty, theory_step=reference.get("step"))
    method = reference.get("method") or ""
    if method.startswith("monte_carlo"):
        out.update(theory_mc=reference.get("value"), theory_mc_se=reference.get("se"))
    exact = reference.get("exact")
    if exact is None and config.mode == "nocot" and method.startswith("exact"):
        exact = reference.get("value")
    if exact is not None:
        out.update(theory_eval_loss=float(exact), theory_se=0.0, exact_eval_loss=float(exact),
                   theory_method=method if config.mode == "nocot" else "exact theory.gd_eval_loss")
    else:
        out.update(theory_eval_loss=reference.get("value"), theory_se=reference.get("se"), theory_method=method)
    return out


def summary_columns(summary: dict | None, config: TrainConfig) -> dict:
    """The training columns from a run's summary (None: all empty)."""
    keys = [c for c in RESULT_COLUMNS[RESULT_COLUMNS.index("final_eval_loss"):]]
    out = {key: None for key in keys}
    for name in ood_names(config):
        for stat in OOD_STATS:
            out[f"ood_{name}_{stat}"] = None
    if summary is None:
        return out
    ev, same, st = summary.get("eval") or {}, summary.get("theory_same_prompts") or {}, summary.get("structure") or {}
    out.update(final_eval_loss=summary.get("final_eval_loss"), eval_se=ev.get("se"), median=ev.get("median"),
               q10=ev.get("q10"), q90=ev.get("q90"), diverged_frac=ev.get("diverged_frac"),
               final_train_loss=summary.get("final_train_loss"),
               theory_same_prompts=same.get("mean"), theory_same_prompts_median=same.get("median"),
               relative_gap=summary.get("relative_gap"), relative_gap_same_prompts=summary.get("relative_gap_same_prompts"),
               learned_step=summary.get("learned_step"), lr_used=summary.get("lr"),
               iterations=summary.get("iterations"), skipped_steps=summary.get("skipped_steps"))
    for key in ("v31_w13", "w24_v31", "offdiag_energy", "functional_deviation"):
        out[key] = st.get(key)
    matrices = ood_sigma_matrices(config)
    for name, report in (summary.get("eval_ood") or {}).items():
        if name in matrices:
            out[f"ood_{name}_lambda_max"] = _lambda_max(matrices[name])
            for stat in OOD_STATS[1:]:
                out[f"ood_{name}_{stat}"] = report.get(stat)
    return out


def make_row(config: TrainConfig, *, name: str, train: bool, status: str, error: str | None,
             reference: dict | None, summary: dict | None, seconds: float | None, worker: str | None,
             attempts: int | None, warnings: str | None = None, host: str | None = None,
             job_id: str | None = None) -> dict:
    """One table row (``row_columns`` order)."""
    row = {"cell": name, **config_columns(config), "train": train, "status": status, "error": error,
           "warnings": warnings}
    row.update(theory_columns(config, reference))
    row.update(summary_columns(summary, config))
    row.update(seconds=seconds, train_seconds=None if summary is None else summary.get("train_seconds"),
               worker=worker, host=host, job_id=job_id, attempts=attempts)
    return row


def row_columns(cells: list) -> list:
    """The table's columns for these cells: ``cell``, the config fields, ``RESULT_COLUMNS``, the
    OOD columns of every ``ood_sigmas`` name that occurs, ``RUN_COLUMNS``."""
    names = list(dict.fromkeys(n for c in cells for n in ood_names(c.config)))
    fields = [k for k in config_fields() if k not in SWEEP_OWNED]
    return (["cell"] + fields + list(RESULT_COLUMNS)
            + [f"ood_{n}_{s}" for n in names for s in OOD_STATS] + list(RUN_COLUMNS))


def worker_name() -> str:
    """The name of the worker this runs in: its Dask address, else ``host:pid``."""
    with contextlib.suppress(Exception):
        from distributed import get_worker
        return get_worker().address
    return f"{socket.gethostname()}:{os.getpid()}"


def _dask_name():
    """The Dask worker's own name (``dask worker --name``; a nanny's restart keeps it), else None."""
    with contextlib.suppress(Exception):
        from distributed import get_worker
        return str(get_worker().name)
    return None


@contextlib.contextmanager
def _locked(path: str):
    """An exclusive ``flock`` on ``path`` for the duration (blocking): one attempt of a cell at a
    time, even when a driver that was killed left one running; released when its holder dies."""
    import fcntl
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


#: The keys of a cell's record (``cell.json``): what the cell found; its row is ``record_row``.
RECORD_KEYS = ("status", "error", "warnings", "train", "reference", "summary", "seconds", "worker", "attempts")
#: Keys a record has since the sweep ran on clusters (absent in older records, which stay valid):
#: the worker's host and job id, the iteration its run resumed from (None: not resumed), and
#: every start of the cell (``runs``: worker, host, pid, job id, attempt, time).
RECORD_EXTRA_KEYS = ("host", "job_id", "resumed_from", "runs")


def read_record(cell_dir: str, config: TrainConfig) -> dict | None:
    """The record in ``cell_dir/cell.json`` when it is this cell's, else None."""
    try:
        with open(os.path.join(cell_dir, CELL_RECORD), encoding="utf-8") as f:
            record = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("id") != cell_id(config) \
            or any(key not in record for key in RECORD_KEYS) or not same_config(record.get("config"), config):
        return None
    return record


def record_row(cell: Cell, record: dict) -> dict:
    """A cell's table row from its record (the row is derived when the table is written, so a
    table of a newer version of the toolkit reads old cells)."""
    return make_row(cell.config, name=cell.name, **{key: record[key] for key in RECORD_KEYS if key != "summary"},
                    summary=record["summary"], host=record.get("host"), job_id=record.get("job_id"))


def _run_matches(cell_dir: str, config: TrainConfig) -> bool:
    """Whether the run directory holds this cell's run (its manifest's config is the cell's);
    False for no run, or a stale one (``training.train`` then starts the directory afresh)."""
    from ..rundir import read_manifest
    manifest = read_manifest(cell_dir)
    return manifest is not None and same_config(manifest.get("config"), config)


def _finished_summary(cell_dir: str) -> dict | None:
    """The summary of the run that ended in ``cell_dir`` (status finished or failed), None when
    there is none or it is damaged (the cell is then trained again)."""
    from ..errors import RunFileError
    from ..rundir import ENDED, read_manifest, read_summary
    manifest = read_manifest(cell_dir)
    if manifest is None or manifest.get("status") not in ENDED:
        return None
    try:
        return read_summary(cell_dir)
    except RunFileError:
        return None


def run_cell(task: dict) -> dict:
    """Run one cell in a worker and return its record (never raises for the cell's own failures).

    ``task``: ``{"name", "config" (TrainConfig.to_dict()), "dir", "train", "attempt",
    "retry_failed"}``.  Under an exclusive lock on the cell's directory: a ``cell.json`` of this
    cell is returned as it is (one of a failed cell too, unless ``retry_failed``); a
    finished run (``summary.json``) gives its record without training; a run killed mid-way is
    continued with ``training.resume`` (from its checkpoint); otherwise ``training.train``.  The
    theory's value comes with the summary (``evaluate.theory_reference``), or is computed alone
    when training is off, raised or diverged.  The record (``RECORD_KEYS``: status, error,
    warnings, the theory's reference, the run's summary, seconds, worker, attempt) goes to
    ``cell.json`` (atomically) and is returned."""
    import torch

    started = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _run_cell(task, started)
    finally:
        torch.set_num_threads(threads)


def _run_cell(task: dict, started: float) -> dict:
    from ..engine import resume, train
    from ..errors import NoCheckpointWarning, TrainingDiverged
    from ..evaluate import theory_reference
    from ..verdict import summary_verdict

    config = TrainConfig(**task["config"])
    worker = worker_name()
    if task.get("versions"):
        mismatch = version_mismatch(task["versions"], software_versions(), f"worker {worker}")
        if mismatch:
            raise WorkerMismatch(mismatch)
    cell_dir = task["dir"]
    os.makedirs(cell_dir, exist_ok=True)
    with _locked(os.path.join(cell_dir, ".lock")):
        record = read_record(cell_dir, config)
        if record is not None and not (task.get("retry_failed") and record["status"] == "failed"):
            return record
        start = {"worker": worker, "name": _dask_name(), "host": socket.gethostname(), "pid": os.getpid(),
                 "job_id": job_id(),
                 "attempt": task.get("attempt", 1), "started": time.time()}
        runs = _previous_runs(cell_dir) + [start]
        atomic_write_text(os.path.join(cell_dir, WORKER_RECORD), json.dumps(dict(start, runs=runs)) + "\n")
        status, error, summary, reference, resumed_from = "done", None, None, None, None
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            if task.get("train", True):
                run_config = dataclasses.replace(config, out=cell_dir)
                try:
                    matches = _run_matches(cell_dir, config)
                    summary = _finished_summary(cell_dir) if matches else None
                    if summary is None and matches:
                        resumed_from = _checkpoint_iteration(cell_dir)
                    if summary is None:
                        # a run of another config in the cell's directory is stale (a default of
                        # TrainConfig changed since): it is replaced.  A resumed cell that restarts
                        # from iteration 0 ends as an uninterrupted one (the restart costs time, not
                        # numbers), so its NoCheckpointWarning is not one of the cell's warnings
                        warnings.simplefilter("ignore", NoCheckpointWarning)
                        result = resume(cell_dir) if matches else train(run_config, overwrite=True)
                        summary = result.summary
                    reference = summary.get("theory")
                    verdict = summary_verdict(summary)
                    if verdict["status"] == "failed":
                        status, error = "failed", verdict["message"]
                except TrainingDiverged as exc:
                    status, error = "diverged", one_line(exc, 500)
                except Exception as exc:           # the cell's failure is recorded; the sweep goes on
                    status, error = "failed", f"{type(exc).__name__}: {one_line(exc, 500)}"
            if reference is None:
                try:
                    reference = theory_reference(config)
                except Exception as exc:
                    error = (error + "; " if error else "") + f"theory: {type(exc).__name__}: {one_line(exc, 500)}"
                    if status == "done":
                        status = "failed"
        texts = list(dict.fromkeys(f"{w.category.__name__}: {one_line(w.message, 500)}" for w in seen))
        record = {"id": cell_id(config), "name": task["name"], "config": identity_dict(config), "status": status,
                  "error": error, "warnings": " | ".join(texts) or None, "train": bool(task.get("train", True)),
                  "reference": reference, "summary": summary, "seconds": time.perf_counter() - started,
                  "worker": worker, "attempts": task.get("attempt", 1), "host": start["host"],
                  "job_id": start["job_id"], "resumed_from": resumed_from, "runs": runs}
        atomic_write_text(os.path.join(cell_dir, CELL_RECORD), json.dumps(record, indent=1, allow_nan=True) + "\n")
        return record


def _previous_runs(cell_dir: str) -> list:
    """The starts of the cell recorded in its ``worker.json`` (a run killed mid-way left it)."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        with open(os.path.join(cell_dir, WORKER_RECORD), encoding="utf-8") as f:
            runs = json.load(f).get("runs")
        if isinstance(runs, list):
            return runs
    return []


def _checkpoint_iteration(cell_dir: str) -> int | None:
    """The iteration of the checkpoint ``training.resume`` continues the cell's run from."""
    from ..rundir import CHECKPOINT, read_manifest
    manifest = read_manifest(cell_dir) or {}
    value = manifest.get("checkpoint_iteration")
    return value if isinstance(value, int) and os.path.isfile(os.path.join(cell_dir, CHECKPOINT)) else None


def attempt_started(cell_dir: str, attempt: int) -> bool:
    """Whether attempt ``attempt`` of the cell in ``cell_dir`` began in a worker (its
    ``worker.json`` says so)."""
    try:
        with open(os.path.join(cell_dir, WORKER_RECORD), encoding="utf-8") as f:
            return json.load(f).get("attempt") == attempt
    except (OSError, ValueError, AttributeError):
        return False
