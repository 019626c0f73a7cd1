"""Sweeps: a grid of training configurations, each cell with the theory's value, its Monte Carlo
and (unless ``train = false``) a trained and evaluated model, on local worker processes or a Dask
cluster, resumable at every level (``cotgd sweep run GRID.toml --out DIR``).

A grid file (TOML) names ``TrainConfig`` fields::

    name = "phase"          # optional: the sweep's name (default: the file's stem)
    train = true            # optional: false computes the theory's values only
    retries = 2             # optional: attempts after a lost worker (default RETRIES)

    [grid]                  # each field -> a list of values; the cells are their Cartesian product
    n = [5, 10, 20]
    k = [1, 2, 4, 8]
    mode = ["cot", "nocot"]

    [fixed]                 # scalar fields shared by every cell
    d = 5
    iters = 2000

    [[cells]]               # optional explicit cells (fields over [fixed]), after the product
    n = 40
    k = 16

``sigma`` (the covariance of x) takes a d x d matrix or a number c, meaning ``c I`` in the cell's
dimension (1: the identity, the default); ``ood_sigmas`` a table ``{name = c or matrix}``.  ``out`` and ``progress`` belong to
the sweep.  A cell's ``checkpoint_every`` defaults to its ``eval_every``, its ``prefetch`` to
False (``CELL_DEFAULTS``).

A cell is identified by its full config (``cell_id``: a hash of the fields that differ from
``TrainConfig``'s defaults, aside from ``out``, ``progress`` and the ``NEUTRAL_FIELDS`` that do not
change its numbers; ``same_config`` compares whole configs before anything is reused), and its run directory is ``DIR/cells/<cell name>`` (``cell_name``), so
a rerun with an edited grid reuses the identical cells and never mixes different ones.

The engine (``CellExecutor``) is a ``concurrent.futures.Executor``: worker processes started with
``spawn`` (``local_executor``, the default) or a Dask cluster (``dask_executor``: a
``LocalCluster`` of N worker processes, or the scheduler at an address), one code path
(``run_sweep``).  Each cell runs ``run_cell`` in a worker with one torch thread.

Nothing is lost: ``DIR/sweep.json`` (grid, cells, versions, commit) is written first; each
finished cell writes ``cell.json`` in its directory, and the driver rewrites
``DIR/results.parquet`` and ``DIR/results.csv`` (one row per finished cell, ``RESULT_COLUMNS``)
atomically after every cell.  A rerun skips cells with a ``cell.json`` (or a finished
``summary.json``), resumes a cell killed mid-run from its checkpoint (``training.resume``), so a
sweep whose driver was killed ends with the table of an uninterrupted one (bitwise for seeded CPU
cells).  A cell that raises or diverges, or whose trained model fails the run's verdict
(``training.verdict``: diverging on most prompts, or worse than predicting w = 0), is recorded
(``status`` failed / diverged, ``error`` the reason) and the sweep goes on; a cell whose worker died is retried (``retries`` times; a last attempt runs
alone, so that only the cell that kills its worker is blamed).
"""
from __future__ import annotations

import concurrent.futures as cf
import contextlib
import dataclasses
import hashlib
import itertools
import json
import math
import os
import socket
import sys
import threading
import time
import warnings
from dataclasses import dataclass, field

from .config import TrainConfig, ood_sigma_matrices
from .errors import one_line
from .io import atomic_write_bytes, atomic_write_text

#: Attempts after the first for a cell whose worker died (``retries`` in the grid, ``--retries``).
RETRIES = 2
#: Grid-file keys outside the tables.
TOP_KEYS = ("name", "train", "retries", "grid", "fixed", "cells")
#: Fields the sweep sets itself: the cell's run directory and its (absent) progress bar.
SWEEP_OWNED = ("out", "progress")
#: Fields that do not change a run's numbers (the engine's runs are bitwise the same either
#: way): not part of a cell's identity, so a rerun that changes them reuses the cell.  A cell is
#: one model, which ``fused_models`` (a choice for runs of several) leaves alone.
NEUTRAL_FIELDS = ("prefetch", "checkpoint_every", "fused_models")
#: Defaults of the sweep's cells where they differ from ``TrainConfig``'s: cells run one per
#: core, so the background batch thread of ``prefetch`` would only compete with the other
#: workers (measured: a cell's CPU time 1.1-1.3x with it).
CELL_DEFAULTS = {"prefetch": False}
#: Fields whose single value is a list (a matrix, a pair).
LIST_FIELDS = ("sigma", "init_ab")
#: Fields whose single value is a table.
TABLE_FIELDS = ("ood_sigmas",)
MANIFEST = "sweep.json"
KIND = "cotgd-sweep"
CELL_RECORD = "cell.json"

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
#: Columns that describe the execution, not the result (they differ between identical runs).
RUN_COLUMNS = ("seconds", "train_seconds", "worker", "attempts")


# ------------------------------------------------------------------------------ the grid
@dataclass
class Cell:
    """One cell: its ``name`` (directory), ``config`` (validated, without ``out``), the values of
    the grid's axes (``axes``) and its ``index`` in the sweep."""

    name: str
    config: TrainConfig
    axes: dict
    index: int

    @property
    def id(self) -> str:
        return cell_id(self.config)


@dataclass
class Grid:
    """A parsed grid: ``name``, ``train``, ``retries``, the ``grid`` axes, the ``fixed`` fields,
    explicit ``cells``, and the ``raw`` table it came from (for the manifest)."""

    name: str
    grid: dict
    fixed: dict
    cells: list = field(default_factory=list)
    train: bool = True
    retries: int = RETRIES
    raw: dict = field(default_factory=dict)
    source: str | None = None

    def expand(self) -> list[Cell]:
        """The cells: the product of the axes (first axis slowest) over ``fixed``, then the
        explicit cells; duplicates (the same config) once, at their first place."""
        keys = list(self.grid)
        combos = [dict(zip(keys, values)) for values in itertools.product(*(self.grid[k] for k in keys))]
        where = [f"[grid] cell {', '.join(f'{k} = {_show(v)}' for k, v in c.items()) or '(fixed only)'}"
                 for c in combos]
        combos += self.cells
        where += [f"[[cells]] entry {i + 1}" for i in range(len(self.cells))]
        out, seen = [], set()
        for fields, label in zip(combos, where):
            config = make_config({**self.fixed, **fields}, label)
            ident = cell_id(config)
            if ident in seen:
                continue
            seen.add(ident)
            out.append(Cell(name=cell_name(config), config=config, axes=dict(fields), index=len(out)))
        return out


def _show(value) -> str:
    return json.dumps(value) if isinstance(value, (str, list, dict)) else repr(value)


def config_fields() -> dict:
    """``{name: dataclasses.Field}`` of ``TrainConfig``."""
    return {f.name: f for f in dataclasses.fields(TrainConfig)}


def _field_kind(f) -> str:
    return str(f.type).split("|")[0].strip()


def _normalise(name: str, value, where: str):
    """A TOML value as the field expects it: ints where a float is meant become floats (so
    ``eta = 1`` and ``eta = 1.0`` are the same cell), numbers inside matrices and tables too."""
    f = config_fields()[name]
    kind = _field_kind(f)
    if kind == "float" and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if name in LIST_FIELDS + TABLE_FIELDS:
        return _floats(value)
    return value


def _floats(value):
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return float(value)
    if isinstance(value, list):
        return [_floats(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _floats(v) for k, v in value.items()}
    return value


def make_config(fields: dict, where: str = "cell") -> TrainConfig:
    """The validated ``TrainConfig`` of a cell from its fields (``sigma = c`` becomes ``c I``, and
    ``sigma = 1`` the default identity, None; ``checkpoint_every`` defaults to ``eval_every``,
    and ``CELL_DEFAULTS`` apply); ValueError naming ``where`` and the field."""
    known = config_fields()
    fields = {k: (_normalise(k, v, where) if k in known else v) for k, v in fields.items()}
    sigma = fields.get("sigma")
    if isinstance(sigma, (int, float)) and not isinstance(sigma, bool):
        d = fields.get("d", TrainConfig.d)
        if isinstance(d, int) and not isinstance(d, bool) and d >= 1:
            if not (math.isfinite(sigma) and sigma >= 0):
                raise ValueError(f"{where}: sigma must be a d x d matrix or a number c >= 0 (c I), got {sigma!r}")
            fields["sigma"] = None if sigma == 1 else [[float(sigma) if i == j else 0.0 for j in range(d)]
                                                      for i in range(d)]
    fields.setdefault("checkpoint_every", fields.get("eval_every", TrainConfig.eval_every))
    for key, value in CELL_DEFAULTS.items():
        fields.setdefault(key, value)
    try:
        config = TrainConfig(**fields, progress=False)
        config.validate()
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: {' '.join(str(exc).split())}") from None
    return config


def identity_dict(config: TrainConfig) -> dict:
    """The cell's full config: every field but ``out`` and ``progress``."""
    return {k: v for k, v in config.to_dict().items() if k not in SWEEP_OWNED}


def _defining(fields: dict) -> dict:
    return {k: v for k, v in fields.items() if k not in NEUTRAL_FIELDS}


def _defaults() -> dict:
    return _defining(identity_dict(TrainConfig()))


def cell_id(config: TrainConfig) -> str:
    """A stable hash of the cell's full config: 12 hex digits of SHA-256 of the fields that
    differ from ``TrainConfig``'s defaults (so a field added to ``TrainConfig`` later, with a
    default, leaves every cell's identity as it was; ``same_config`` compares the whole config),
    but the ``NEUTRAL_FIELDS``, which do not change a run's numbers."""
    defaults = _defaults()
    fields = {k: v for k, v in _defining(identity_dict(config)).items() if k not in defaults or v != defaults[k]}
    text = json.dumps(fields, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def same_config(saved, config: TrainConfig) -> bool:
    """Whether saved config fields (a cell record's, a run manifest's) are ``config``: both
    through ``TrainConfig``, so that a field added since they were saved takes its default and
    compares equal, and a default that changed since does not."""
    if not isinstance(saved, dict):
        return False
    try:
        theirs = TrainConfig(**{k: v for k, v in saved.items() if k not in SWEEP_OWNED})
    except (TypeError, ValueError):
        return False
    return _defining(identity_dict(theirs)) == _defining(identity_dict(config))


def cell_name(config: TrainConfig) -> str:
    """The cell's directory name: readable fields and the hash, e.g.
    ``cot-full-d5-n10-k8-eta0.4-seed0-3f2a9c01b7d4``."""
    c = config
    return f"{c.mode}-{c.param}-d{c.d}-n{c.n}-k{c.k}-eta{c.eta:g}-seed{c.seed}-{cell_id(c)}"


def parse_grid(table: dict, *, name: str = "sweep", source: str | None = None) -> Grid:
    """A ``Grid`` from a grid file's table (``load_grid``); one-line ValueError naming the table
    and the field for an unknown field, a non-list in ``[grid]``, a list in ``[fixed]``, a bad
    value (``TrainConfig.validate``) or a bad top-level key."""
    if not isinstance(table, dict):
        raise ValueError(f"a grid must be a table, got {type(table).__name__}")
    unknown = [k for k in table if k not in TOP_KEYS]
    if unknown:
        raise ValueError(f"unknown top-level key {unknown[0]!r} in the grid (expected {', '.join(TOP_KEYS)}; "
                         f"fields go in [grid] or [fixed])")
    name = table.get("name", name)
    if not isinstance(name, str) or not name.strip() or "/" in name:
        raise ValueError(f"name must be a non-empty string without '/', got {name!r}")
    train = table.get("train", True)
    if train not in (True, False):
        raise ValueError(f"train must be true or false, got {train!r}")
    retries = table.get("retries", RETRIES)
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ValueError(f"retries must be an integer >= 0, got {retries!r}")
    grid = _table(table, "grid")
    fixed = _table(table, "fixed")
    axes = {}
    for key, values in grid.items():
        _check_field("[grid]", key)
        if not isinstance(values, list):
            raise ValueError(f"[grid] {key}: expected a list of values, got {_show(values)} "
                             f"(a single value goes in [fixed])")
        if not values:
            raise ValueError(f"[grid] {key}: the list of values is empty")
        axes[key] = [_normalise(key, v, f"[grid] {key}") for v in values]
    fixed_fields = {}
    for key, value in fixed.items():
        _check_field("[fixed]", key)
        if key in axes:
            raise ValueError(f"[fixed] {key}: also an axis in [grid]; give it in one table")
        if isinstance(value, list) and key not in LIST_FIELDS:
            raise ValueError(f"[fixed] {key}: expected a single value, got the list {_show(value)} "
                             f"(a list of values goes in [grid])")
        fixed_fields[key] = _normalise(key, value, f"[fixed] {key}")
    cells = table.get("cells", [])
    if not isinstance(cells, list) or not all(isinstance(c, dict) for c in cells):
        raise ValueError("cells must be an array of tables ([[cells]])")
    explicit = []
    for i, cell in enumerate(cells):
        fields = {}
        for key, value in cell.items():
            _check_field(f"[[cells]] entry {i + 1}", key)
            if isinstance(value, list) and key not in LIST_FIELDS:
                raise ValueError(f"[[cells]] entry {i + 1} {key}: expected a single value, got the list {_show(value)}")
            fields[key] = _normalise(key, value, f"[[cells]] {key}")
        explicit.append(fields)
    g = Grid(name=name, grid=axes, fixed=fixed_fields, cells=explicit, train=train, retries=retries,
             raw=table, source=source)
    if not g.expand():
        raise ValueError("the grid has no cells")
    return g


def _table(table: dict, key: str) -> dict:
    value = table.get(key, {})
    if not isinstance(value, dict):
        raise ValueError(f"{key} must be a table ([{key}]), got {_show(value)}")
    return value


def _check_field(where: str, key: str) -> None:
    if key in SWEEP_OWNED:
        raise ValueError(f"{where} {key}: set by the sweep (each cell's run directory is DIR/cells/<cell>)")
    if key not in config_fields():
        known = ", ".join(config_fields())
        raise ValueError(f"{where} {key}: unknown field (TrainConfig fields: {known})")


def load_grid(path) -> Grid:
    """Read a grid file (TOML) as a ``Grid`` (``parse_grid``); its name defaults to the file's
    stem.  ValueError for a file that is not TOML."""
    try:
        import tomllib
    except ImportError:                          # Python 3.10
        import tomli as tomllib
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            table = tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"grid {path!r} is not valid TOML: {exc}") from None
    stem = os.path.splitext(os.path.basename(path))[0]
    return parse_grid(table, name=stem, source=os.path.abspath(path))


# ------------------------------------------------------------------------------ one cell (in a worker)
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
             attempts: int | None, warnings: str | None = None) -> dict:
    """One table row (``row_columns`` order)."""
    row = {"cell": name, **config_columns(config), "train": train, "status": status, "error": error,
           "warnings": warnings}
    row.update(theory_columns(config, reference))
    row.update(summary_columns(summary, config))
    row.update(seconds=seconds, train_seconds=None if summary is None else summary.get("train_seconds"),
               worker=worker, attempts=attempts)
    return row


def row_columns(cells: list) -> list:
    """The table's columns for these cells: ``cell``, the config fields, ``RESULT_COLUMNS``, the
    OOD columns of every ``ood_sigmas`` name that occurs, ``RUN_COLUMNS``."""
    names = list(dict.fromkeys(n for c in cells for n in ood_names(c.config)))
    fields = [k for k in config_fields() if k not in SWEEP_OWNED]
    return (["cell"] + fields + list(RESULT_COLUMNS)
            + [f"ood_{n}_{s}" for n in names for s in OOD_STATS] + list(RUN_COLUMNS))


def _worker_name() -> str:
    with contextlib.suppress(Exception):
        from distributed import get_worker
        return get_worker().address
    return f"{socket.gethostname()}:{os.getpid()}"


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


def record_row(cell: "Cell", record: dict) -> dict:
    """A cell's table row from its record (the row is derived when the table is written, so a
    table of a newer version of the toolkit reads old cells)."""
    return make_row(cell.config, name=cell.name, **{key: record[key] for key in RECORD_KEYS if key != "summary"},
                    summary=record["summary"])


def _run_matches(cell_dir: str, config: TrainConfig) -> bool:
    """Whether the run directory holds this cell's run (its manifest's config is the cell's);
    False for no run, or a stale one (``training.train`` then starts the directory afresh)."""
    from .rundir import read_manifest
    manifest = read_manifest(cell_dir)
    return manifest is not None and same_config(manifest.get("config"), config)


def _finished_summary(cell_dir: str) -> dict | None:
    """The summary of the run that ended in ``cell_dir`` (status finished or failed), None when
    there is none or it is damaged (the cell is then trained again)."""
    from .errors import RunFileError
    from .rundir import ENDED, read_manifest, read_run_file
    manifest = read_manifest(cell_dir)
    if manifest is None or manifest.get("status") not in ENDED:
        return None
    try:
        return read_run_file(os.path.join(cell_dir, "summary.json"))
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
    from .engine import resume, train
    from .errors import NoCheckpointWarning, TrainingDiverged
    from .evaluate import theory_reference
    from .verdict import summary_verdict

    config = TrainConfig(**task["config"])
    cell_dir = task["dir"]
    os.makedirs(cell_dir, exist_ok=True)
    with _locked(os.path.join(cell_dir, ".lock")):
        record = read_record(cell_dir, config)
        if record is not None and not (task.get("retry_failed") and record["status"] == "failed"):
            return record
        worker = _worker_name()
        atomic_write_text(os.path.join(cell_dir, "worker.json"),
                          json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "worker": worker,
                                      "attempt": task.get("attempt", 1), "started": time.time()}) + "\n")
        status, error, summary, reference = "done", None, None, None
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            if task.get("train", True):
                run_config = dataclasses.replace(config, out=cell_dir)
                try:
                    matches = _run_matches(cell_dir, config)
                    summary = _finished_summary(cell_dir) if matches else None
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
                  "worker": worker, "attempts": task.get("attempt", 1)}
        atomic_write_text(os.path.join(cell_dir, CELL_RECORD), json.dumps(record, indent=1, allow_nan=True) + "\n")
        return record



# ------------------------------------------------------------------------------ executors
def _watch_parent(parent: int) -> None:
    """In a local worker: exit at once when the driver that started it is gone (a SIGKILLed
    driver must not leave workers training behind it)."""
    def watch():
        while True:
            time.sleep(0.5)
            if os.getppid() != parent:
                os._exit(1)
    threading.Thread(target=watch, daemon=True, name="cotgd-parent-watch").start()


def _init_worker(parent: int) -> None:
    import torch
    torch.set_num_threads(1)
    _watch_parent(parent)


def _warm(_=None) -> str:
    """A task that imports what a cell needs (used to start workers before timing them)."""
    import torch  # noqa: F401

    from . import engine  # noqa: F401
    time.sleep(0.2)
    return _worker_name()


def _warm_cell(fields: dict) -> str:
    """A task that runs a one-iteration cell of ``fields`` in a temporary directory: imports and
    the theory's caches (exact moments) warm, as in a worker that has run cells before."""
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        grid = parse_grid({"name": "warm", "fixed": dict(fields, iters=1, eval_every=1)})
        cell = grid.expand()[0]
        run_cell(_task(grid, cell, tmp, 1))
    time.sleep(0.5)                     # long enough for every idle worker to take one
    return _worker_name()


#: Environment of local worker processes: one thread for every numerical library.
WORKER_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


class CellExecutor:
    """The engine cells run on: a ``concurrent.futures.Executor`` (``executor``) with ``slots()``
    (how many cells run at once), ``renew()`` (a fresh executor after a broken one) and
    ``close()``.  ``local_executor`` and ``dask_executor`` make them."""

    kind = "executor"
    #: Cells submitted beyond ``slots()``, so that a worker that finishes a cell starts the next
    #: at once, without the driver's round trip: one for a process pool (its workers share one
    #: queue); every pending cell for Dask, whose scheduler queues them itself (and whose
    #: adaptive clusters scale on what it sees queued).
    queued = 0

    def __init__(self, executor: cf.Executor, workers: int, description: str):
        self.executor, self.workers, self.description = executor, workers, description

    def slots(self) -> int:
        return self.workers

    def renew(self) -> None:
        pass

    def close(self, abort: bool = False) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class LocalExecutor(CellExecutor):
    """``max_workers`` worker processes (``concurrent.futures.ProcessPoolExecutor``, ``spawn``),
    one torch thread each; ``renew`` replaces a pool broken by a killed worker."""

    kind = "local"
    queued = 1

    def __init__(self, workers: int):
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
        self._saved_env = {k: os.environ.get(k) for k in WORKER_ENV}
        os.environ.update(WORKER_ENV)           # inherited by the spawned workers
        super().__init__(self._pool(workers), workers, f"local-{workers}")

    def _pool(self, workers: int) -> cf.ProcessPoolExecutor:
        import multiprocessing
        return cf.ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                                      initializer=_init_worker, initargs=(os.getpid(),))

    def renew(self) -> None:
        with contextlib.suppress(Exception):
            self.executor.shutdown(wait=True, cancel_futures=True)
        self.executor = self._pool(self.workers)

    def close(self, abort: bool = False) -> None:
        """Stop the workers: after the running cells end, or at once with ``abort`` (an
        interrupted sweep: the killed cells resume from their checkpoints next time)."""
        if abort:
            for process in list((getattr(self.executor, "_processes", None) or {}).values()):
                with contextlib.suppress(Exception):
                    process.kill()
        with contextlib.suppress(Exception):
            self.executor.shutdown(wait=not abort, cancel_futures=True)
        for key, value in self._saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


#: Dask settings of the LocalCluster's workers (``--dask-local``; for a cluster of your own, put
#: them in its Dask configuration): no statistical profiler (it samples every 10 ms, CPU a cell
#: would use), and glibc's own malloc trimming instead of the nanny's MALLOC_TRIM_THRESHOLD_ =
#: 65536, which returns freed blocks to the kernel at every step of training (measured: a cell
#: 1.25-1.4x slower with it).
DASK_WORKER_CONFIG = {"distributed.worker.profile.enabled": False,
                      "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}


class DaskExecutor(CellExecutor):
    """A Dask ``Client``'s executor (``client.get_executor()``): of a ``LocalCluster`` of
    ``n_workers`` processes with one thread each that it starts (and closes), or of the running
    scheduler at ``address``.  The scheduler reschedules the cell of a lost worker itself."""

    kind = "dask"
    queued = 1 << 30

    def __init__(self, *, n_workers: int | None = None, address: str | None = None, client=None):
        import logging

        from distributed import Client, LocalCluster
        self.cluster, self.own_client = None, client is None
        if client is None:
            if address is not None:
                if not isinstance(address, str) or not address.strip():
                    raise ValueError(f"dask scheduler address must be a non-empty string, got {address!r}")
                try:
                    client = Client(address, timeout="20s")
                except (OSError, TimeoutError) as exc:
                    raise ValueError(f"cannot reach the Dask scheduler at {address!r}: {one_line(exc, 500)}") from None
                description = f"dask-{address}"
            else:
                if isinstance(n_workers, bool) or not isinstance(n_workers, int) or n_workers < 1:
                    raise ValueError(f"dask workers must be an integer >= 1, got {n_workers!r}")
                import dask
                with dask.config.set(DASK_WORKER_CONFIG):
                    self.cluster = LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                                                dashboard_address=":0", silence_logs=logging.ERROR)
                client = Client(self.cluster)
                description = f"dask-{n_workers}"
        else:
            description = "dask-client"
        self.client = client
        self._slots_at = (0.0, 1)
        super().__init__(client.get_executor(pure=False), n_workers or 0, description)

    def slots(self) -> int:
        now = time.monotonic()
        if now - self._slots_at[0] > 5.0:
            with contextlib.suppress(Exception):
                self._slots_at = (now, max(1, sum(self.client.nthreads().values())))
        return self._slots_at[1]

    def renew(self) -> None:
        self.executor = self.client.get_executor(pure=False)

    def close(self, abort: bool = False) -> None:
        with contextlib.suppress(Exception):
            self.executor.shutdown(wait=False)
        if self.own_client:
            with contextlib.suppress(Exception):
                self.client.close()
        if self.cluster is not None:
            with contextlib.suppress(Exception):
                self.cluster.close()


def local_executor(workers: int | None = None) -> LocalExecutor:
    """``workers`` local worker processes (default: the cores this process may use)."""
    return LocalExecutor(default_workers() if workers is None else workers)


def dask_executor(n_workers: int | None = None, *, address: str | None = None, client=None) -> DaskExecutor:
    """A Dask engine: ``LocalCluster(n_workers)``, or the scheduler at ``address``, or ``client``."""
    return DaskExecutor(n_workers=n_workers, address=address, client=client)


def default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


# ------------------------------------------------------------------------------ the driver
@dataclass
class SweepResult:
    """A finished ``run_sweep``: the ``table`` (pandas, one row per cell in grid order), the
    directory, how many cells ran now and how many were reused, and the status counts."""

    table: object
    name: str
    out: str
    ran: int
    reused: int
    counts: dict
    seconds: float


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
                  and not (n == "cells" and os.path.isdir(os.path.join(out, n)) and not os.listdir(os.path.join(out, n)))]
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
              counts: dict | None = None) -> dict:
    from .rundir import git_commit, versions
    now = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    return {"kind": KIND, "version": 1, "name": grid.name, "status": status,
            "grid_file": grid.source, "grid": grid.raw, "train": grid.train, "retries": grid.retries,
            "cells": [{"name": c.name, "id": c.id, "axes": c.axes} for c in cells],
            "executor": executor, "versions": versions(), "git_commit": git_commit(),
            "created": (previous or {}).get("created", now), "updated": now, "counts": counts or {}}


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
    atomic_write_bytes(os.path.join(out, "results.parquet"), buffer.getvalue())
    atomic_write_text(os.path.join(out, "results.csv"), frame.to_csv(index=False))
    return frame


def load_results(out) -> object:
    """``DIR/results.parquet`` as a DataFrame (``results.csv`` when there is no parquet file);
    ValueError when the directory has neither."""
    import pandas as pd
    out = os.fspath(out)
    parquet, csv = os.path.join(out, "results.parquet"), os.path.join(out, "results.csv")
    if os.path.isfile(parquet):
        return pd.read_parquet(parquet)
    if os.path.isfile(csv):
        return pd.read_csv(csv)
    raise ValueError(f"{out!r} holds no sweep results (results.parquet / results.csv)")


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
    atomic_write_text(os.path.join(out, MANIFEST),
                      json.dumps(_manifest(grid, cells, out, previous, label, "running"), indent=2) + "\n")
    os.makedirs(os.path.join(out, "cells"), exist_ok=True)
    rows = {}
    for cell in cells:
        record = read_record(os.path.join(out, "cells", cell.name), cell.config)
        if record is not None and not (retry_failed and record["status"] == "failed"):
            rows[cell.name] = record_row(cell, record)
    reused = len(rows)

    def ordered():
        return [rows[c.name] for c in cells if c.name in rows]

    write_results(out, ordered(), columns)
    pending = [c for c in cells if c.name not in rows]
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
                         lambda: write_results(out, ordered(), columns), retry_failed)
        finished = True
    finally:
        bar.close()
        if own is not None:
            own.close(abort=not finished)
    frame = write_results(out, ordered(), columns)
    counts = {s: sum(1 for r in rows.values() if r.get("status") == s) for s in ("done", "failed", "diverged")}
    atomic_write_text(os.path.join(out, MANIFEST),
                      json.dumps(_manifest(grid, cells, out, previous, label, "finished", counts), indent=2) + "\n")
    return SweepResult(table=frame, name=grid.name, out=out, ran=len(rows) - reused, reused=reused, counts=counts,
                       seconds=time.perf_counter() - started)


def _task(grid: Grid, cell: Cell, out: str, attempt: int, retry_failed: bool = False) -> dict:
    return {"name": cell.name, "config": cell.config.to_dict(), "dir": os.path.join(out, "cells", cell.name),
            "train": grid.train, "attempt": attempt, "retry_failed": retry_failed}


def _run_pending(grid, pending, out, executor, rows, retries, bar, save, retry_failed=False) -> None:
    """Keep ``executor.slots() + executor.queued`` cells in flight, submitting the next before
    the driver writes the table; record each row as it comes (``save``).  A future that raises
    is an infrastructure failure (the cell's own errors come back as records): the cell is
    retried up to ``retries`` times, its last attempt alone; a broken local pool is renewed."""
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
            task = _task(grid, cell, out, attempts[cell.name], retry_failed)
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
        if stalls <= retries and not _started(out, cell, attempts[cell.name]):
            attempts[cell.name] -= 1
            stalled = True

    while queue or running:
        top_up()
        done, _ = cf.wait(list(running), timeout=5.0, return_when=cf.FIRST_COMPLETED)
        broken = stalled = False
        finished = []
        for future in done:
            cell = running.pop(future)
            if cell in alone:
                alone.remove(cell)
            try:
                record = future.result()
            except Exception as exc:        # a lost worker, a broken pool, a task that could not run
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
        for cell, record in finished:
            rows[cell.name] = record_row(cell, record)
        save()
        bar.set_postfix_str(" ".join(f"{s} {sum(1 for r in rows.values() if r.get('status') == s)}"
                                     for s in ("done", "failed", "diverged")), refresh=False)
        bar.update(len(finished))


def _started(out: str, cell: Cell, attempt: int) -> bool:
    """Whether the cell's attempt ``attempt`` began in a worker (its ``worker.json`` says so)."""
    try:
        with open(os.path.join(out, "cells", cell.name, "worker.json"), encoding="utf-8") as f:
            return json.load(f).get("attempt") == attempt
    except (OSError, ValueError, AttributeError):
        return False
