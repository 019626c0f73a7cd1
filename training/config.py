"""The configuration of a training run: ``PAPER`` (the paper's setting, one object) and
``TrainConfig`` (everything that defines a run, its defaults read from ``PAPER``), with the
defaults that depend on the parametrisation or the mode and the reasons for them.

Every place that needs the paper's setting (the CLI's defaults, ``cotgd verify``, the figures,
the benchmark) reads ``PAPER``; the command line's ``train`` options are generated from
``TrainConfig``'s fields (``training.app.cli``).
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field

import numpy as np
import torch

from theory.validation import check_finite, check_int, check_nonnegative_finite, check_positive_finite

from .data import sigma_root
from .device import resolve_device
from .model import PARAMS
from .kernels import MODES


@dataclass(frozen=True)
class PaperSetting:
    """The experiment of the paper (docs/theory.md section 8): dimension ``d``, examples per
    prompt ``n``, CoT steps ``k``, GD step ``eta`` of the target iterates, ``batch`` prompts per
    Adam step of learning rate ``lr``, ``iters`` iterations."""

    d: int = 10
    n: int = 20
    k: int = 10
    eta: float = 0.4
    batch: int = 1000
    iters: int = 750
    lr: float = 1e-3

    def problem(self) -> dict:
        """``{d, n, k, eta}``: the problem without the optimiser."""
        return {"d": self.d, "n": self.n, "k": self.k, "eta": self.eta}


#: The paper's setting; the single place it is written down.
PAPER = PaperSetting()

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def _field(default, help: str, *, cli: bool = True, minimum: int | None = None, choices=None):
    """A ``TrainConfig`` field with what the command line needs to offer it (``training.app.cli``
    generates the ``train`` options from these)."""
    return field(default=default, metadata={"help": help, "cli": cli, "minimum": minimum, "choices": choices})


OPTIMIZERS = ("adam", "sgd")
#: How a run of several models computes its losses and gradients (``TrainConfig.fused_models``).
FUSED_MODELS = ("auto", "loop", "fused")


@dataclass
class TrainConfig:
    """Everything that defines a run; the defaults are the paper's experiment (``PAPER``,
    docs/theory.md section 8).  Each field's help text is in its metadata (``cotgd train --help``
    shows them all); ``validate()`` checks every field."""

    mode: str = _field("cot", "objective: chain of thought (teacher forced), no CoT (one pass), "
                       "or looped (the layer applied k times in place)", choices=MODES)
    param: str = _field("full", "parametrisation of V, W: every entry, sparse (V31, W13 free, W24 = -1), "
                        "or isotropic (V31 = a I, W13 = b I, W24 = -1)", choices=PARAMS)
    d: int = _field(PAPER.d, "dimension of x and w*", minimum=1)
    n: int = _field(PAPER.n, "examples per prompt", minimum=1)
    k: int = _field(PAPER.k, "CoT steps (looped: loops)", minimum=1)
    eta: float = _field(PAPER.eta, "GD step of the target iterates")
    batch: int = _field(PAPER.batch, "fresh prompts per optimiser step", minimum=1)
    iters: int = _field(PAPER.iters, "optimiser steps", minimum=1)
    lr: float | None = _field(None, "learning rate (default: DEFAULT_LR[param]: 1e-3 for full, the "
                              "paper's; 3e-3 for sparse and isotropic; LOOPED_LR = 3e-3 for looped)")
    seed: int = _field(0, "seed of the run's random streams (init, data, eval, structure, theory)", minimum=0)
    device: str = _field("auto", "auto (CUDA when torch sees it, else CPU), cpu, cuda or cuda:N")
    eval_every: int = _field(50, "iterations between evaluation points", minimum=1)
    eval_samples: int = _field(20000, "fresh prompts per evaluation point", minimum=1)
    sigma: list | None = _field(None, "covariance of x for training and in-distribution evaluation "
                                "(d x d, symmetric positive semi-definite; None: identity)", cli=False)
    ood_sigmas: dict | None = _field(None, "extra evaluation covariances {name: d x d matrix or c "
                                     "(meaning c I)}", cli=False)
    noise: float = _field(0.0, "label noise: standard deviation s of eps in y = <w*, x> + eps, in training "
                          "and evaluation (CoT targets are GD on the noisy prompt; losses are against w*; "
                          "docs/theory.md section 16)")
    init_scale: float | None = _field(None, "initialisation scale (default: model.DEFAULT_INIT_SCALE[param])")
    checkpoint_every: int = _field(0, "iterations between resumable checkpoints (0: only at the end; "
                                   "needs --out)", minimum=0)
    out: str | None = _field(None, "run directory", cli=False)
    progress: bool | None = _field(None, "progress bar (None: when stderr is a terminal)", cli=False)
    dtype: str = _field("float32", "training precision (evaluation is always float64)", choices=tuple(DTYPES))
    theory_samples: int = _field(200_000, "Monte Carlo prompts for the theory's value", minimum=1)
    structure_samples: int = _field(4096, "prompts for the functional deviation", minimum=1)
    clip_grad: float | None = _field(None, "per-model gradient-norm clip (default: DEFAULT_CLIP[mode]); "
                                     "a step whose gradient is not finite is always skipped and counted")
    threads: int | None = _field(None, "torch CPU threads (default: DEFAULT_CPU_THREADS on a CPU, torch's "
                                 "own on CUDA; a CPU run is bitwise reproducible for a fixed count)", minimum=1)
    prefetch: bool = _field(True, "on a CPU, draw the next batch on a background thread while the "
                            "current step runs (the same batches, so the same run, bitwise)")
    optimizer: str = _field("adam", "optimiser: Adam (the paper's) or plain gradient descent (SGD "
                            "without momentum, as in the dynamics of docs/theory.md section 6)",
                            choices=OPTIMIZERS)
    pool: int | None = _field(None, "train on a fixed set of this many prompts, drawn once, in "
                              "shuffled passes (default: fresh prompts every step)", minimum=1)
    init_ab: list | None = _field(None, "isotropic only: start at V31 = a I, W13 = b I, given as [a, b]",
                                  cli=False)
    loop_curriculum: int = _field(0, "looped only: iterations over which the number of loops trained grows "
                                  "linearly from 1 to k (0: k loops from the start)", minimum=0)
    loop_window: int = _field(1, "looped only: the loss averages the estimates after each of the last "
                              "this many loops (1: the final estimate only, the paper's)", minimum=1)
    fused_models: str = _field("auto", "a run of several models (train_models; one model is its single run "
                               "either way): one objective call for all of them (fused: their prompts stacked, "
                               "each loss masked to its own k) or one call per model (loop: each model bitwise "
                               "its single run); auto: fused on CUDA, loop on a CPU (docs/architecture.md "
                               "section 5)", choices=FUSED_MODELS)

    def validate(self) -> "TrainConfig":
        """Check every field; raise ValueError naming the first bad one.  Returns self."""
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.param not in PARAMS:
            raise ValueError(f"param must be one of {', '.join(PARAMS)}, got {self.param!r}")
        for name in ("d", "n", "k", "batch", "iters", "eval_every", "eval_samples", "theory_samples",
                     "structure_samples"):
            check_int(name, getattr(self, name), 1)
        for name in ("seed", "checkpoint_every"):
            check_int(name, getattr(self, name), 0)
        if self.threads is not None:
            check_int("threads", self.threads, 1)
        check_positive_finite("eta", self.eta)
        check_nonnegative_finite("noise", self.noise)
        if self.lr is not None:
            check_positive_finite("lr", self.lr)
        if self.clip_grad is not None:
            check_positive_finite("clip_grad", self.clip_grad)
        if self.init_scale is not None:
            check_positive_finite("init_scale", self.init_scale)
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if not isinstance(self.device, str):
            raise ValueError(f"device must be a string ('auto', 'cpu', 'cuda', 'cuda:N'), got {self.device!r}")
        resolve_device(self.device)
        sigma_root(self.sigma, self.d)
        ood_sigma_matrices(self)
        if self.out is not None and not isinstance(self.out, (str, os.PathLike)):
            raise ValueError(f"out must be a directory path or None, got {self.out!r}")
        if self.prefetch not in (True, False):
            raise ValueError(f"prefetch must be True or False, got {self.prefetch!r}")
        if self.progress not in (None, True, False):
            raise ValueError(f"progress must be True, False or None, got {self.progress!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.pool is not None:
            check_int("pool", self.pool, 1)
            if self.pool < self.batch:
                raise ValueError(f"pool must be >= batch, got pool = {self.pool}, batch = {self.batch}")
        check_int("loop_curriculum", self.loop_curriculum, 0)
        check_int("loop_window", self.loop_window, 1)
        if self.mode != "looped" and (self.loop_curriculum or self.loop_window != 1):
            raise ValueError(f"loop_curriculum and loop_window are for mode 'looped', got mode {self.mode!r}")
        if self.fused_models not in FUSED_MODELS:
            raise ValueError(f"fused_models must be one of {', '.join(FUSED_MODELS)}, got {self.fused_models!r}")
        if self.init_ab is not None:
            if self.param != "isotropic":
                raise ValueError(f"init_ab is for param 'isotropic' only, got param {self.param!r}")
            if not isinstance(self.init_ab, (list, tuple)) or len(self.init_ab) != 2:
                raise ValueError(f"init_ab must be a pair [a, b], got {self.init_ab!r}")
            self.init_ab = [check_finite("init_ab[0]", self.init_ab[0]), check_finite("init_ab[1]", self.init_ab[1])]
        return self

    def to_dict(self) -> dict:
        """The config as a JSON-ready dict (``TrainConfig(**d)`` rebuilds it)."""
        out = dataclasses.asdict(self)
        if out["out"] is not None:
            out["out"] = os.fspath(out["out"])
        return out


#: Adam learning rate when ``config.lr`` is None.  ``full``: the paper's 1e-3.  ``sparse`` and
#: ``isotropic`` keep ``W24 = -1`` fixed, so ``W13`` must travel from about 0 to ``I``; Adam moves
#: a parameter by about lr per step, and 750 steps of 1e-3 do not quite get there (measured at
#: the paper's config, seed 0: functional deviation 0.049), so they take 3e-3.
DEFAULT_LR = {"full": PAPER.lr, "sparse": 3e-3, "isotropic": 3e-3}

#: Adam learning rate of a looped run when ``config.lr`` is None, for every parametrisation.  The
#: full model at the paper's configuration (k = 10 loops, 750 steps, seed 0): with 1e-3 its
#: median evaluation loss was still 0.47 at the end (the best single GD step: 0.108); with 3e-3
#: it reached 0.037, mean 0.081, no prompt diverged (README, Looped transformer).
LOOPED_LR = 3e-3

#: Per-model gradient-norm clip when ``config.clip_grad`` is None: none for cot and nocot (the
#: paper's plain Adam); 1.0 for looped, whose loss is a polynomial of very high degree in the
#: parameters: rare batches with an exploding prompt give gradients 1e4 times the typical one,
#: which wreck Adam's moment estimates (measured at d 3, lr 3e-3: one 6e4 spike near iteration
#: 800 undoes the training).  Prompts that diverge outright are frozen (kernels.LOOPED_FREEZE).
DEFAULT_CLIP = {"cot": None, "nocot": None, "looped": 1.0}


#: torch threads of a CPU run when ``config.threads`` is None.  A step is a few dozen products of
#: small matrices, which gain little from more OpenMP threads and lose much when another process
#: holds a core (``cotgd bench`` reports ``train_ms_per_iter_by_threads``; README, Speed).
DEFAULT_CPU_THREADS = 1


def resolved_threads(config: TrainConfig) -> int | None:
    """``config.threads``, or ``DEFAULT_CPU_THREADS`` for a CPU run when it is None (None on
    CUDA: torch's setting stays)."""
    if config.threads is not None:
        return config.threads
    return DEFAULT_CPU_THREADS if resolve_device(config.device).type == "cpu" else None


def resolved_lr(config: TrainConfig) -> float:
    """``config.lr``, or when it is None ``LOOPED_LR`` for a looped run, else
    ``DEFAULT_LR[config.param]``."""
    if config.lr is not None:
        return config.lr
    return LOOPED_LR if config.mode == "looped" else DEFAULT_LR[config.param]


def resolved_clip(config: TrainConfig) -> float | None:
    """``config.clip_grad``, or ``DEFAULT_CLIP[config.mode]`` when it is None."""
    return DEFAULT_CLIP[config.mode] if config.clip_grad is None else config.clip_grad


def ood_sigma_matrices(config: TrainConfig) -> dict:
    """``config.ood_sigmas`` as ``{name: d x d nested list}`` (a number c becomes ``c I``);
    ValueError naming ``ood_sigmas[name]`` when one is not a d x d covariance."""
    if config.ood_sigmas is None:
        return {}
    if not isinstance(config.ood_sigmas, dict):
        raise ValueError(f"ood_sigmas must be a dict {{name: sigma}}, got {config.ood_sigmas!r}")
    out = {}
    for name, value in config.ood_sigmas.items():
        label = f"ood_sigmas[{name!r}]"
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = (check_positive_finite(label, value) * np.eye(config.d)).tolist()
        sigma_root(value, config.d, name=label)
        out[str(name)] = np.asarray(value, dtype=float).tolist()
    return out


