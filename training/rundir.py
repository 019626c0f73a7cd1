"""Run directories: every file written atomically (``training.io``), the manifest first, and
``load_run`` to read a finished run back.

A run of one model (``train``) writes into its directory::

    manifest.json   status (running / finished / diverged), config, device, versions, git commit,
                    torch threads, timings
    metrics.jsonl   one JSON object per evaluation point, appended and fsynced line by line
    checkpoint.pt   model, optimiser, data-stream states, histories: what ``resume`` continues from
    params.pt       final ``{"V", "W", "param", "d"}`` (D x D tensors)
    summary.json    the run's summary (``engine.TrainResult.summary``)

A run of M > 1 models (``train_models``) writes ``manifest.json`` (with ``configs``, one per
model) and ``checkpoint.pt`` at the top, and a directory of the first kind, without checkpoint,
per model under ``models/`` (``model_dir_name``), so that ``load_run`` reads any single model.
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
from .io import atomic_write_bytes, atomic_write_text

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


def model_dir_name(index: int, config: TrainConfig) -> str:
    """The directory of model ``index`` of a many-model run, e.g. ``03-seed1-k20-eta0.4``."""
    return f"{index:02d}-seed{config.seed}-k{config.k}-eta{config.eta:g}"


class RunDir:
    """The files of one model's run directory; metrics.jsonl is rewritten atomically from the
    history at (re)start, then appended line by line (flush + fsync)."""

    def __init__(self, path, history: list):
        self.path = os.fspath(path)
        os.makedirs(self.path, exist_ok=True)
        atomic_write_text(self.file("metrics.jsonl"), "".join(json.dumps(row) + "\n" for row in history))

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)

    def append_metrics(self, row: dict) -> None:
        with open(self.file("metrics.jsonl"), "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def write_json(self, name: str, payload) -> None:
        atomic_write_text(self.file(name), to_json(payload))

    def write_torch(self, name: str, payload) -> None:
        write_torch(self.file(name), payload)


def write_torch(path: str, payload) -> None:
    """``torch.save(payload)`` to ``path``, atomically."""
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def read_manifest(out_dir: str) -> dict | None:
    """``manifest.json`` of a run directory as a dict, None when missing or unreadable."""
    try:
        with open(os.path.join(out_dir, "manifest.json"), encoding="utf-8") as f:
            manifest = json.load(f)
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def config_from(fields, where: str) -> TrainConfig:
    """A validated ``TrainConfig`` from saved fields; ValueError naming ``where`` otherwise.  Fields
    added to ``TrainConfig`` after the run was saved take their defaults."""
    if not isinstance(fields, dict):
        raise ValueError(f"{where} holds no run config")
    try:
        return TrainConfig(**fields).validate()
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where} holds a bad run config: {' '.join(str(exc).split())[:200]}") from None


def manifest_configs(manifest: dict, where: str) -> list[TrainConfig]:
    """The configs of every model of a run from its manifest (one for ``train``, M for
    ``train_models``)."""
    if isinstance(manifest.get("configs"), list):
        return [config_from(c, where) for c in manifest["configs"]]
    return [config_from(manifest.get("config"), where)]


def load_checkpoint(path: str) -> dict:
    """A checkpoint's state; ValueError when it is torn, foreign or incomplete."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a torn or foreign file
        raise ValueError(f"checkpoint {path!r} cannot be read ({type(exc).__name__}): it is corrupt "
                         f"or not a checkpoint of this toolkit") from None
    if isinstance(state, dict) and "configs" not in state and all(key in state for key in SINGLE_MODEL_KEYS):
        seed = state["config"].get("seed", 0) if isinstance(state["config"], dict) else 0
        state = dict(state, configs=[state["config"]], histories=[state["history"]],
                     streams={seed: {"generator": state["data_generator"]}}, acc=state["acc"].reshape(3, 1),
                     last_loss=state["last_loss"].reshape(1), skipped_total=[state["skipped_total"]],
                     theory=[state["theory"]])
    missing = [key for key in CHECKPOINT_KEYS if not isinstance(state, dict) or key not in state]
    if missing:
        raise ValueError(f"checkpoint {path!r} is not a training checkpoint (missing {', '.join(missing)})")
    return state


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
    under ``models/`` of a ``train_models`` run).  ValueError (one line) when it is not one."""
    if not isinstance(path, (str, os.PathLike)):
        raise ValueError(f"path must be a run directory, got {path!r}")
    path = os.fspath(path)
    manifest = read_manifest(path)
    if manifest is None:
        raise ValueError(f"{path!r} is not a run directory (no readable manifest.json)")
    if isinstance(manifest.get("configs"), list):
        raise ValueError(f"{path!r} holds {len(manifest['configs'])} models: load one of "
                         f"{os.path.join(path, 'models', '*')}")
    config = config_from(manifest.get("config"), f"manifest.json in {path!r}")
    V = W = summary = None
    if os.path.isfile(os.path.join(path, "params.pt")):
        params = torch.load(os.path.join(path, "params.pt"), map_location="cpu", weights_only=True)
        V, W = params["V"], params["W"]
    if os.path.isfile(os.path.join(path, "summary.json")):
        with open(os.path.join(path, "summary.json"), encoding="utf-8") as f:
            summary = json.load(f)
    metrics = []
    if os.path.isfile(os.path.join(path, "metrics.jsonl")):
        with open(os.path.join(path, "metrics.jsonl"), encoding="utf-8") as f:
            metrics = [json.loads(line) for line in f if line.strip()]
    return Run(path=path, config=config, V=V, W=W, summary=summary, metrics=metrics, manifest=manifest)
