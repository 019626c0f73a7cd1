"""The configuration of a training run: ``PAPER`` (the paper's setting, one object) and
``TrainConfig`` (everything that defines a run, its defaults read from ``PAPER``), with the
defaults that depend on the parametrisation or the mode and the reasons for them.

Every place that needs the paper's setting (the CLI's defaults, ``cotgd verify``, the figures,
the benchmark) reads ``PAPER``; the command line's ``train`` options are generated from
``TrainConfig``'s fields (``training.cli``).
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

import numpy as np
import torch

from theory.validation import check_int, check_positive_finite

from .data import sigma_root
from .device import resolve_device
from .model import PARAMS
from .objectives import MODES


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


@dataclass
class TrainConfig:
    """Everything that defines a run; the defaults are the paper's experiment (docs/theory.md section 8).

    ``sigma``: covariance of x for training and in-distribution evaluation (d x d nested list;
    None = identity).  ``ood_sigmas``: extra evaluation distributions, ``{name: sigma}`` with sigma
    a d x d nested list or a positive number c meaning ``c I``.  ``init_scale``: None takes
    ``model.DEFAULT_INIT_SCALE[param]``.  ``progress``: tqdm bar (None: when stderr is a
    terminal).  ``checkpoint_every``: iterations between checkpoints (0: only at the end; needs
    ``out``).  ``theory_samples``: Monte Carlo prompts for the theory value; ``structure_samples``:
    prompts for the functional deviation.  ``lr`` None: ``DEFAULT_LR[param]`` (the paper's 1e-3 for
    the full model); ``clip_grad`` None: ``DEFAULT_CLIP[mode]`` (per-model gradient-norm clip; a
    batch whose gradient is not finite is always skipped and counted).  ``threads``: torch CPU
    threads for the run (None: ``DEFAULT_CPU_THREADS`` on a CPU, torch's setting on CUDA;
    restored afterwards).  ``prefetch``: on a CPU, draw the next batch on a background thread
    while the current step computes (``_Batches``; the same batches, so the same run, bitwise).
    """

    mode: str = "cot"
    param: str = "full"
    d: int = PAPER.d
    n: int = PAPER.n
    k: int = PAPER.k
    eta: float = PAPER.eta
    batch: int = PAPER.batch
    iters: int = PAPER.iters
    lr: float | None = None
    seed: int = 0
    device: str = "auto"
    eval_every: int = 50
    eval_samples: int = 20000
    sigma: list | None = None
    ood_sigmas: dict | None = None
    init_scale: float | None = None
    checkpoint_every: int = 0
    out: str | None = None
    progress: bool | None = None
    dtype: str = "float32"
    theory_samples: int = 200_000
    structure_samples: int = 4096
    clip_grad: float | None = None
    threads: int | None = None
    prefetch: bool = True

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

#: Per-model gradient-norm clip when ``config.clip_grad`` is None: none for cot and nocot (the
#: paper's plain Adam); 1.0 for looped, whose loss is a polynomial of very high degree in the
#: parameters: rare batches with an exploding prompt give gradients 1e4 times the typical one,
#: which wreck Adam's moment estimates (measured at d 3, lr 3e-3: one 6e4 spike near iteration
#: 800 undoes the training).  Prompts that diverge outright are frozen (objectives.LOOPED_FREEZE).
DEFAULT_CLIP = {"cot": None, "nocot": None, "looped": 1.0}


#: torch threads of a CPU run when ``config.threads`` is None.  A step is a few dozen products of
#: small matrices: on the 2-core test machine two OpenMP threads gained about 1.2x when the other
#: core was idle and made the step 3 to 30 times slower when another process held it
#: (``cotgd bench``, ``train_ms_per_iter_by_threads``).
DEFAULT_CPU_THREADS = 1


def resolved_threads(config: TrainConfig) -> int | None:
    """``config.threads``, or ``DEFAULT_CPU_THREADS`` for a CPU run when it is None (None on
    CUDA: torch's setting stays)."""
    if config.threads is not None:
        return config.threads
    return DEFAULT_CPU_THREADS if resolve_device(config.device).type == "cpu" else None


def resolved_lr(config: TrainConfig) -> float:
    """``config.lr``, or ``DEFAULT_LR[config.param]`` when it is None."""
    return DEFAULT_LR[config.param] if config.lr is None else config.lr


def resolved_clip(config: TrainConfig) -> float | None:
    """``config.clip_grad``, or ``DEFAULT_CLIP[config.mode]`` when it is None."""
    return DEFAULT_CLIP[config.mode] if config.clip_grad is None else config.clip_grad


def ood_sigma_matrices(config: TrainConfig) -> dict:
    """``config.ood_sigmas`` as ``{name: d x d nested list}`` (a number c becomes ``c I``);
    ValueError naming ``ood_sigmas`` when malformed."""
    if config.ood_sigmas is None:
        return {}
    if not isinstance(config.ood_sigmas, dict):
        raise ValueError(f"ood_sigmas must be a dict {{name: sigma}}, got {config.ood_sigmas!r}")
    out = {}
    for name, value in config.ood_sigmas.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            check_positive_finite(f"ood_sigmas[{name!r}]", value)
            value = (float(value) * np.eye(config.d)).tolist()
        try:
            sigma_root(value, config.d)
        except ValueError as exc:
            raise ValueError(f"ood_sigmas[{name!r}]: {exc}") from None
        out[str(name)] = np.asarray(value, dtype=float).tolist()
    return out


