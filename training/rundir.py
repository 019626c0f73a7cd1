"""Run directories: every file written atomically (``training.io``), the manifest first, and
``load_run`` to read a finished run back; every run file is read through one loader,
``read_run_file``, so that a damaged one is one line naming it (``errors.RunFileError``).

A run of one model (``train``) writes into its directory::

    manifest.json   status, iteration, checkpoint_iteration, config, device, versions, git commit,
                    torch threads, timings; rewritten at the start, at every checkpoint and at the
                    end.  status: running (also after a SIGKILL, which no handler sees),
                    interrupted (Ctrl-C), error (stopped by an exception), diverged, finished or
                    failed (the run ended; failed: ``verdict.judge`` found its model unusable)
    metrics.jsonl   one JSON object per evaluation point, appended and fsynced line by line
    checkpoint.pt   model, optimiser, data-stream states, histories: what ``resume`` continues from
    params.pt       final ``{"V", "W", "param", "d"}`` (D x D tensors)
    summary.json    the run's summary (``engine.TrainResult.summary``, with ``status`` and ``verdict``)

A run of M > 1 models (``train_models``) writes ``manifest.json`` (with ``configs``, one per
model) and ``checkpoint.pt`` at the top, and a directory of the first kind, without checkpoint,
per model under ``models/`` (``model_dir_name``), so that ``load_run`` reads any single model.

This module owns those files: their names (``MANIFEST``, ``METRICS``, ``CHECKPOINT``, ``PARAMS``,
``SUMMARY``; ``RUN_FILES``), their paths (``run_file``), their writers (``write_manifest``,
``write_checkpoint``, ``write_params``, ``write_summary``, ``RunDir`` for the metrics) and their
readers (``read_run_file`` and, by file, ``load_manifest`` / ``read_manifest``,
``load_checkpoint``, ``load_params``, ``read_summary``, ``read_metrics``).  No other module
spells a file name (tests/training/test_rundir.py).
"""
from __future__ import annotations

import io
import json
import os
import platform
import subprocess
from dataclasses import dataclass

import numpy as np
import torch

from .config import TrainConfig
from .errors import RunFileError, one_line
from .io import atomic_write_bytes, atomic_write_text

#: The files of a run directory (module docstring), each named here and nowhere else.
MANIFEST = "manifest.json"
METRICS = "metrics.jsonl"
CHECKPOINT = "checkpoint.pt"
PARAMS = "params.pt"
SUMMARY = "summary.json"
#: The files that make a directory a run directory.
RUN_FILES = (MANIFEST, CHECKPOINT, PARAMS, SUMMARY, METRICS)

CHECKPOINT_KEYS = ("configs", "iteration", "model", "optimizer", "streams", "histories", "train_seconds",
                   "seconds", "acc", "loss_count", "last_loss", "skipped_total", "theory", "threads")
#: The keys of a checkpoint written before the engine held M models (one config, one history);
#: ``load_checkpoint`` reads it as a run of one model.
SINGLE_MODEL_KEYS = ("config", "iteration", "model", "optimizer", "data_generator", "history",
                     "train_seconds", "seconds", "acc", "loss_count", "last_loss", "skipped_total",
                     "theory", "threads")


def to_json(payload) -> str:
    """``payload`` as indented JSON text (non-finite floats allowed: a diverged loss is inf)."""
    return json.dumps(payload, indent=2, allow_nan=True) + "\n"


def versions() -> dict:
    """The versions of Python and the numerical libraries a run used."""
    import scipy
    import sympy
    return {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
            "scipy": scipy.__version__, "sympy": sympy.__version__}


def load_average() -> list | None:
    """The machine's 1, 5 and 15 minute load averages (None where the platform has none): runs
    and benchmarks record them, since other processes on a small machine move every timing."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def git_commit() -> str | None:
    """The toolkit's git commit, when it runs from a checkout."""
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        out = subprocess.run(["git", "-C", here, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return (out.stdout.strip() or None) if out.returncode == 0 else None


#: The folder of a many-model run that holds one run directory per model.
MODELS_DIR = "models"


def model_dir(out, index: int, config: TrainConfig) -> str:
    """The run directory of model ``index`` inside the many-model run ``out``."""
    return os.path.join(out, MODELS_DIR, model_dir_name(index, config))


def model_dir_name(index: int, config: TrainConfig) -> str:
    """The directory of model ``index`` of a many-model run, e.g. ``03-seed1-k20-eta0.4``."""
    return f"{index:02d}-seed{config.seed}-k{config.k}-eta{config.eta:g}"


def run_file(run_dir, name: str) -> str:
    """The path of the file ``name`` (one of ``RUN_FILES``) of the run directory ``run_dir``."""
    if name not in RUN_FILES:
        raise ValueError(f"name must be one of the run files {', '.join(RUN_FILES)}, got {name!r}")
    return os.path.join(os.fspath(run_dir), name)


class RunDir:
    """The metrics of one model's run directory: ``metrics.jsonl`` is rewritten atomically from
    the history at (re)start, then appended line by line (flush + fsync)."""

    def __init__(self, path, history: list):
        self.path = os.fspath(path)
        os.makedirs(self.path, exist_ok=True)
        atomic_write_text(run_file(self.path, METRICS), "".join(json.dumps(row) + "\n" for row in history))

    def append_metrics(self, row: dict) -> None:
        with open(run_file(self.path, METRICS), "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())


def write_torch(path: str, payload) -> None:
    """``torch.save(payload)`` to ``path``, atomically."""
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def write_manifest(run_dir, manifest: dict) -> None:
    """``manifest.json`` of ``run_dir``, atomically (indented JSON, ``to_json``)."""
    atomic_write_text(run_file(run_dir, MANIFEST), to_json(manifest))


def write_summary(run_dir, summary: dict) -> None:
    """``summary.json`` of ``run_dir``, atomically (indented JSON, ``to_json``)."""
    atomic_write_text(run_file(run_dir, SUMMARY), to_json(summary))


def write_checkpoint(run_dir, state: dict) -> None:
    """``checkpoint.pt`` of ``run_dir`` (the engine's state, ``load_checkpoint``), atomically."""
    write_torch(run_file(run_dir, CHECKPOINT), state)


def write_params(run_dir, V: torch.Tensor, W: torch.Tensor, config: TrainConfig) -> None:
    """``params.pt`` of ``run_dir``: ``{"V", "W", "param", "d"}`` (``load_params``), atomically."""
    write_torch(run_file(run_dir, PARAMS), {"V": V, "W": W, "param": config.param, "d": config.d})


#: The statuses of a run that has ended: ``resume`` reads it back instead of training.
#: The manifest and summary statuses of a run that ended (``training.verdict`` decides which).
FINISHED, FAILED = "finished", "failed"
ENDED = (FINISHED, FAILED)


def _short(exc: BaseException, limit: int = 120) -> str:
    """The exception's type and the first sentence of its message, on one line."""
    text = one_line(exc).split(". ")[0][:limit]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def read_run_file(path, *, missing_ok: bool = False):
    """The content of one run file, by its kind: ``*.pt`` a ``torch.load`` (weights only, on the
    CPU), ``*.json`` a JSON object (dict), ``*.jsonl`` a list of JSON objects (one per line).
    The one loader of run files: params.pt, checkpoint.pt, summary.json, manifest.json,
    metrics.jsonl.  A missing file is None with ``missing_ok``; anything else wrong (missing,
    unreadable, empty, truncated, not the format, not an object) raises ``RunFileError``, one
    line naming the file and the problem."""
    path = os.fspath(path)
    if not os.path.exists(path):
        if missing_ok:
            return None
        raise RunFileError(path, "the file is missing")
    if os.path.isdir(path):
        raise RunFileError(path, "it is a directory, expected a file")
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise RunFileError(path, f"the file cannot be read ({exc.strerror or _short(exc)})") from None
    name = os.path.basename(path)
    if name.endswith(".jsonl"):
        return _json_lines(path, data)
    if not data:
        raise RunFileError(path, "the file is empty (0 bytes)")
    if name.endswith(".pt"):
        try:
            return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises many types for a torn or foreign file
            raise RunFileError(path, f"truncated, or not a torch file of this toolkit ({_short(exc)})") from None
    return _json_object(path, _text(path, data))


def _text(path: str, data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RunFileError(path, f"not UTF-8 text (byte {exc.start}): not a file this toolkit wrote") from None


def _json_object(path: str, text: str, line: int | None = None) -> dict:
    where = "" if line is None else f"line {line} "
    try:
        value = json.loads(text)
    except ValueError as exc:
        at = f" at line {exc.lineno} column {exc.colno}" if line is None else f" at column {exc.colno}"
        if not text.strip():
            raise RunFileError(path, "the file holds only white space") from None
        raise RunFileError(path, f"{where}is not valid JSON ({exc.msg}{at}): truncated or edited") from None
    if not isinstance(value, dict):
        raise RunFileError(path, f"{where}holds a JSON {type(value).__name__}, expected an object")
    return value


def _json_lines(path: str, data: bytes) -> list:
    rows = []
    for number, line in enumerate(_text(path, data).split("\n"), 1):
        if line.strip():
            rows.append(_json_object(path, line, number))
    return rows


def load_manifest(out_dir) -> dict | None:
    """``manifest.json`` of a run directory as a dict; None when there is none; ``RunFileError``
    when it is damaged."""
    return read_run_file(run_file(out_dir, MANIFEST), missing_ok=True)


def read_manifest(out_dir: str) -> dict | None:
    """``manifest.json`` of a run directory as a dict, None when missing or damaged (for callers
    that only look: ``load_manifest`` says what is wrong)."""
    try:
        return load_manifest(out_dir)
    except RunFileError:
        return None


def read_summary(run_dir, *, missing_ok: bool = False) -> dict | None:
    """``summary.json`` of a run directory as a dict (``read_run_file``: None when missing with
    ``missing_ok``, else ``RunFileError``)."""
    return read_run_file(run_file(run_dir, SUMMARY), missing_ok=missing_ok)


def read_metrics(run_dir, *, missing_ok: bool = False) -> list | None:
    """The rows of ``metrics.jsonl`` of a run directory (``read_run_file``: None when missing
    with ``missing_ok``, else ``RunFileError``)."""
    return read_run_file(run_file(run_dir, METRICS), missing_ok=missing_ok)


def config_from(fields, where: str) -> TrainConfig:
    """A validated ``TrainConfig`` from the fields saved in the file ``where``; ``RunFileError``
    naming it otherwise.  Fields added to ``TrainConfig`` after the run was saved take their
    defaults."""
    if not isinstance(fields, dict):
        raise RunFileError(where, "it holds no run config")
    try:
        return TrainConfig(**fields).validate()
    except (TypeError, ValueError) as exc:
        raise RunFileError(where, f"it holds a bad run config: {' '.join(str(exc).split())[:200]}") from None


def manifest_configs(manifest: dict, where: str) -> list[TrainConfig]:
    """The configs of every model of a run from its manifest (one for ``train``, M for
    ``train_models``); ``where``: the manifest's path."""
    if isinstance(manifest.get("configs"), list):
        return [config_from(c, where) for c in manifest["configs"]]
    return [config_from(manifest.get("config"), where)]


def load_checkpoint(path: str) -> dict:
    """A checkpoint's state; ``RunFileError`` when it is missing, torn, foreign or incomplete."""
    state = read_run_file(path)
    if isinstance(state, dict) and "configs" not in state and all(key in state for key in SINGLE_MODEL_KEYS):
        seed = state["config"].get("seed", 0) if isinstance(state["config"], dict) else 0
        state = dict(state, configs=[state["config"]], histories=[state["history"]],
                     streams={seed: {"generator": state["data_generator"]}}, acc=state["acc"].reshape(3, 1),
                     last_loss=state["last_loss"].reshape(1), skipped_total=[state["skipped_total"]],
                     theory=[state["theory"]])
    missing = [key for key in CHECKPOINT_KEYS if not isinstance(state, dict) or key not in state]
    if missing:
        raise RunFileError(path, f"not a training checkpoint of this toolkit (missing {', '.join(missing)})")
    if not isinstance(state["configs"], list) or not state["configs"]:
        raise RunFileError(path, "not a training checkpoint of this toolkit (no model configs)")
    return state


def load_params(path: str, config: TrainConfig | None = None) -> tuple:
    """``(V, W)`` of a ``params.pt``: (D, D) floating tensors, D = 2d + 2 (``config.d`` when
    given); ``RunFileError`` naming the file otherwise."""
    params = read_run_file(path)
    if not isinstance(params, dict) or not all(isinstance(params.get(key), torch.Tensor) for key in ("V", "W")):
        raise RunFileError(path, "not the parameters of a run (expected a dict with tensors V and W)")
    V, W = params["V"], params["W"]
    if V.dim() != 2 or V.shape != W.shape or V.shape[0] != V.shape[1] or not V.is_floating_point():
        raise RunFileError(path, f"V and W must be square floating-point matrices of one shape, got "
                                 f"{tuple(V.shape)} and {tuple(W.shape)}")
    if config is not None and V.shape[0] != 2 * config.d + 2:
        raise RunFileError(path, f"V is {V.shape[0]} x {V.shape[0]}, but the run's d = {config.d} needs "
                                 f"{2 * config.d + 2} x {2 * config.d + 2}: the file belongs to another run")
    if not (torch.isfinite(V).all() and torch.isfinite(W).all()):
        raise RunFileError(path, "V or W holds non-finite entries")
    return V, W


@dataclass
class Run:
    """A run directory read back (``load_run``): its ``config``, final ``V`` and ``W`` (D x D
    tensors, None while unfinished), ``summary`` (None while unfinished), ``metrics`` (the rows of
    metrics.jsonl) and ``manifest``."""

    path: str
    config: TrainConfig
    V: torch.Tensor | None
    W: torch.Tensor | None
    summary: dict | None
    metrics: list
    manifest: dict


def load_run(path) -> Run:
    """Read the run directory ``path`` of one model (a ``train`` run, or one model's directory
    under ``models/`` of a ``train_models`` run).  ValueError (one line) when it is not one;
    ``RunFileError`` (a ValueError, one line naming the file and the problem) when one of its
    files is damaged."""
    if not isinstance(path, (str, os.PathLike)):
        raise ValueError(f"path must be a run directory, got {path!r}")
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise ValueError(f"{path!r} is not a run directory (" + ("a file" if os.path.exists(path) else "no such directory")
                         + ")")
    manifest = load_manifest(path)
    if manifest is None:
        raise ValueError(f"{path!r} is not a run directory (no {MANIFEST})")
    where = run_file(path, MANIFEST)
    if isinstance(manifest.get("configs"), list):
        raise ValueError(f"{path!r} holds {len(manifest['configs'])} models: load one of "
                         f"{os.path.join(path, 'models', '*')}")
    config = config_from(manifest.get("config"), where)
    V = W = None
    if os.path.exists(run_file(path, PARAMS)):
        V, W = load_params(run_file(path, PARAMS), config)
    summary = read_summary(path, missing_ok=True)
    metrics = read_metrics(path, missing_ok=True) or []
    return Run(path=path, config=config, V=V, W=W, summary=summary, metrics=metrics, manifest=manifest)
