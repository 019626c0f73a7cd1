"""The configuration of a training run: ``PAPER`` (the paper's setting, one object) and
``TrainConfig`` (everything that defines a run, its defaults read from ``PAPER``), with the
defaults that depend on the parametrisation or the mode and the reasons for them.

Every place that needs the paper's setting (the CLI's defaults, ``cotgd verify``, the figures,
the benchmark) reads ``PAPER``; the command line's ``train`` options are generated from
``TrainConfig``'s fields (``training.app.cli``).

A leaf of the package: no torch, no sympy, no numpy at import (``cotgd --help`` reads the fields
without loading the engine).  Each field declares its own check in its metadata (``_field``: the
kind from its annotation, ``minimum`` / ``above``, ``choices``, or a ``check`` of its own);
``check_field`` applies it, ``TrainConfig.validate`` is one loop over the fields (then the checks
of combinations), ``parse_field`` reads a field from a command-line text or a grid file's value,
and ``covariance`` holds the rule "a number c means c I".  The validators of ``theory.validation``
(which imports sympy), ``numerics.covariance_root`` and ``training.device`` (torch) are imported
when a check needs them.
"""
from __future__ import annotations

import dataclasses
import numbers
import os
from dataclasses import dataclass, field

#: The objectives (``training.kernels``): chain of thought (teacher forced), no CoT, looped.
MODES = ("cot", "nocot", "looped")
#: The parametrisations of (V, W) (``training.model``).
PARAMS = ("full", "sparse", "isotropic")
#: The training precisions, by name (``TrainConfig.dtype``); the torch dtype is
#: ``getattr(torch, name)``, looked up where the tensors are made.
DTYPE_NAMES = ("float32", "float64")
OPTIMIZERS = ("adam", "sgd")
#: How a run of several models computes its losses and gradients (``TrainConfig.fused_models``).
FUSED_MODELS = ("auto", "loop", "fused")
#: The devices a config may name (``training.device.resolve_device``); ``cuda:N`` too.
DEVICE_NAMES = ("auto", "cpu", "cuda")


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


def _field(default, help: str, *, cli: bool = True, minimum: int | None = None, above: int | None = None,
           choices: tuple | None = None, check=None):
    """A ``TrainConfig`` field with its check and what the command line needs to offer it
    (``training.app.cli`` generates the ``train`` options from these).  The check
    (``check_field``): ``choices``, the values allowed; else ``check(name, value, config)``, a
    function returning the value to keep; else by the kind of the annotation: ``int`` an integer
    >= ``minimum``, ``float`` a finite number > ``above`` (0) or >= ``minimum`` (0) (or any finite
    number), ``bool`` True or False.  None passes when the annotation allows it."""
    return field(default=default, metadata={"help": help, "cli": cli, "minimum": minimum, "above": above,
                                            "choices": choices, "check": check})


def _check_device(name: str, value, config=None) -> str:
    """'auto', 'cpu', 'cuda' or 'cuda:N'; a CUDA device must be there (``resolve_device``, which
    imports torch, asked only for a CUDA name)."""
    if not isinstance(value, str) or not (value in DEVICE_NAMES or value.startswith("cuda:")):
        raise ValueError(f"{name} must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {value!r}")
    if value.startswith("cuda"):
        from .device import resolve_device
        resolve_device(value)
    return value


def _check_path(name: str, value, config=None):
    if not isinstance(value, (str, os.PathLike)):
        raise ValueError(f"{name} must be a directory path or None, got {value!r}")
    return value


def _check_sigma(name: str, value, config):
    """A d x d covariance (``numerics.covariance_root``: symmetric PSD, singular allowed)."""
    from numerics import covariance_root
    matrix = value.detach().cpu().double().numpy() if hasattr(value, "detach") else value   # a torch tensor
    covariance_root(matrix, config.d, name=name)
    return value


def _check_ood_sigmas(name: str, value, config):
    _ood_matrices(name, value, config.d)
    return value


def _check_init_ab(name: str, value, config) -> list:
    from theory.validation import check_finite
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise ValueError(f"{name} must be a pair [a, b], got {value!r}")
    return [check_finite(f"{name}[0]", value[0]), check_finite(f"{name}[1]", value[1])]


@dataclass
class TrainConfig:
    """Everything that defines a run; the defaults are the paper's experiment (``PAPER``,
    docs/theory.md section 8).  Each field's help text and check are in its metadata (``cotgd
    train --help`` shows them all); ``validate()`` checks every field."""

    mode: str = _field("cot", "objective: chain of thought (teacher forced), no CoT (one pass), "
                       "or looped (the layer applied k times in place)", choices=MODES)
    param: str = _field("full", "parametrisation of V, W: every entry, sparse (V31, W13 free, W24 = -1), "
                        "or isotropic (V31 = a I, W13 = b I, W24 = -1)", choices=PARAMS)
    d: int = _field(PAPER.d, "dimension of x and w*", minimum=1)
    n: int = _field(PAPER.n, "examples per prompt", minimum=1)
    k: int = _field(PAPER.k, "CoT steps (looped: loops)", minimum=1)
    eta: float = _field(PAPER.eta, "GD step of the target iterates", above=0)
    batch: int = _field(PAPER.batch, "fresh prompts per optimiser step", minimum=1)
    iters: int = _field(PAPER.iters, "optimiser steps", minimum=1)
    lr: float | None = _field(None, "learning rate (default: DEFAULT_LR[param]: 1e-3 for full, the "
                              "paper's; 3e-3 for sparse and isotropic; LOOPED_LR = 3e-3 for looped)", above=0)
    seed: int = _field(0, "seed of the run's random streams (init, data, eval, structure, theory)", minimum=0)
    device: str = _field("auto", "auto (CUDA when torch sees it, else CPU), cpu, cuda or cuda:N",
                         check=_check_device)
    eval_every: int = _field(50, "iterations between evaluation points", minimum=1)
    eval_samples: int = _field(20000, "fresh prompts per evaluation point", minimum=1)
    sigma: list | None = _field(None, "covariance of x for training and in-distribution evaluation "
                                "(d x d, symmetric positive semi-definite; None: identity)", cli=False,
                                check=_check_sigma)
    ood_sigmas: dict | None = _field(None, "extra evaluation covariances {name: d x d matrix or c "
                                     "(meaning c I)}", cli=False, check=_check_ood_sigmas)
    noise: float = _field(0.0, "label noise: standard deviation s of eps in y = <w*, x> + eps, in training "
                          "and evaluation (CoT targets are GD on the noisy prompt; losses are against w*; "
                          "docs/theory.md section 16)", minimum=0)
    init_scale: float | None = _field(None, "initialisation scale (default: model.DEFAULT_INIT_SCALE[param])",
                                      above=0)
    checkpoint_every: int = _field(0, "iterations between resumable checkpoints (0: only at the end; "
                                   "needs --out)", minimum=0)
    out: str | None = _field(None, "run directory", cli=False, check=_check_path)
    progress: bool | None = _field(None, "progress bar (None: when stderr is a terminal)", cli=False)
    dtype: str = _field("float32", "training precision (evaluation is always float64)", choices=DTYPE_NAMES)
    theory_samples: int = _field(200_000, "Monte Carlo prompts for the theory's value", minimum=1)
    structure_samples: int = _field(4096, "prompts for the functional deviation", minimum=1)
    clip_grad: float | None = _field(None, "per-model gradient-norm clip (default: DEFAULT_CLIP[mode]); "
                                     "a step whose gradient is not finite is always skipped and counted",
                                     above=0)
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
                                  cli=False, check=_check_init_ab)
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
        """Check every field (``check_field``, in the order of the fields), then the
        combinations; raise ValueError naming the first bad one.  Returns self."""
        for f in dataclasses.fields(self):
            setattr(self, f.name, check_field(f.name, getattr(self, f.name), self))
        if self.pool is not None and self.pool < self.batch:
            raise ValueError(f"pool must be >= batch, got pool = {self.pool}, batch = {self.batch}")
        if self.mode != "looped" and (self.loop_curriculum or self.loop_window != 1):
            raise ValueError(f"loop_curriculum and loop_window are for mode 'looped', got mode {self.mode!r}")
        if self.init_ab is not None and self.param != "isotropic":
            raise ValueError(f"init_ab is for param 'isotropic' only, got param {self.param!r}")
        return self

    def to_dict(self) -> dict:
        """The config as a JSON-ready dict (``TrainConfig(**d)`` rebuilds it)."""
        out = dataclasses.asdict(self)
        if out["out"] is not None:
            out["out"] = os.fspath(out["out"])
        return out


def config_fields() -> dict:
    """``{name: dataclasses.Field}`` of ``TrainConfig``, in order."""
    return {f.name: f for f in dataclasses.fields(TrainConfig)}


def field_kind(name: str) -> tuple:
    """``(kind, optional)`` of ``TrainConfig`` field ``name``: the first type of its annotation
    ('int', 'float', 'str', 'bool', 'list', 'dict') and whether None is allowed.

    >>> field_kind("lr")
    ('float', True)
    """
    fields = config_fields()
    if name not in fields:
        raise ValueError(f"unknown TrainConfig field {name!r} (known: {', '.join(fields)})")
    kinds = [part.strip() for part in str(fields[name].type).split("|")]
    return kinds[0], "None" in kinds


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_field(name: str, value, config: TrainConfig | None = None):
    """``value`` checked as ``TrainConfig`` field ``name`` declares (``_field``): the value to
    keep (the value itself but for ``init_ab``, whose numbers become floats), else one ValueError
    naming the field.  ``config``: the rest of the config, for the checks that need it (sigma
    and ood_sigmas read ``config.d``; None: the defaults).

    >>> check_field("mode", "looped")
    'looped'
    >>> check_field("mode", "loop")
    Traceback (most recent call last):
    ...
    ValueError: mode must be one of cot, nocot, looped, got 'loop'
    """
    kind, optional = field_kind(name)
    meta = config_fields()[name].metadata
    if value is None and optional:
        return None
    if meta["choices"] is not None:
        if value not in meta["choices"]:
            raise ValueError(f"{name} must be one of {', '.join(meta['choices'])}, got {value!r}")
        return value
    if meta["check"] is not None:
        return meta["check"](name, value, TrainConfig() if config is None else config)
    if kind == "int":
        from theory.validation import check_int
        check_int(name, value, meta["minimum"])
    elif kind == "float":
        from theory.validation import check_finite, check_nonnegative_finite, check_positive_finite
        if meta["above"] == 0:
            check_positive_finite(name, value)
        elif meta["minimum"] == 0:
            check_nonnegative_finite(name, value)
        elif meta["above"] is None and meta["minimum"] is None:
            check_finite(name, value)
        else:
            raise TypeError(f"TrainConfig.{name}: no check for a float bound other than 0")
    elif kind == "bool":
        if value not in (True, False):
            raise ValueError(f"{name} must be True{', False or None' if optional else ' or False'}, got {value!r}")
    else:
        raise TypeError(f"TrainConfig.{name}: no check declared for its kind {kind!r}")
    return value


def parse_field(name: str, value):
    """``value`` as ``TrainConfig`` field ``name`` holds it, from a command-line text or a value
    read from a file (TOML, JSON): a text (``str``) for a field that is not a string is read as
    the field's kind ('3' -> 3, '0.4' -> 0.4, 'true' -> True); an integer where a float is meant
    becomes a float (``eta = 1`` and ``eta = 1.0`` are one config), and so do the integers inside
    the matrices and tables (``sigma``, ``ood_sigmas``, ``init_ab``).  ValueError naming the field
    for a text that is not of its kind; the range is ``check_field``'s (``validate``).

    >>> parse_field("eta", 1), parse_field("d", "3"), parse_field("sigma", [[1, 0], [0, 2]])
    (1.0, 3, [[1.0, 0.0], [0.0, 2.0]])
    """
    kind, optional = field_kind(name)
    if isinstance(value, str) and kind != "str":
        value = _from_text(name, kind, value)
    if kind == "float" and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind in ("list", "dict"):
        return _floats(value)
    return value


def _from_text(name: str, kind: str, text: str):
    try:
        if kind == "int":
            return int(text)
        if kind == "float":
            return float(text)
    except ValueError:
        raise ValueError(f"{name} must be {'an integer' if kind == 'int' else 'a number'}, got {text!r}") from None
    if kind == "bool" and text.strip().lower() in ("true", "false"):
        return text.strip().lower() == "true"
    raise ValueError(f"{name} must be a {kind}, got the text {text!r}")


def _floats(value):
    """Integers (not bools) inside nested lists and dicts as floats; dict keys as strings."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return float(value)
    if isinstance(value, list):
        return [_floats(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _floats(v) for k, v in value.items()}
    return value


def identity_scale(name: str, value) -> float:
    """The number ``c`` of a covariance given as ``c I`` (``covariance``), as a float: finite and
    ``> 0`` (``0 I`` would put every x at 0: a singular covariance is given as a matrix); else one
    ValueError naming ``name``.

    >>> identity_scale("half", 0.5)
    0.5
    """
    from theory.validation import check_positive_finite
    try:
        return check_positive_finite(name, value)
    except ValueError:
        raise ValueError(f"{name} must be a number c > 0 (meaning c I) or a covariance matrix, "
                         f"got {value!r}") from None


def covariance(name: str, value, d: int) -> list | None:
    """A covariance of x as a d x d nested list of floats, by the rule of ``sigma`` and
    ``ood_sigmas``: a number ``c`` means ``c I`` (``identity_scale``: ``c > 0``), a matrix is checked by ``numerics.covariance_root`` (symmetric positive
    semi-definite, singular allowed, docs/theory.md section 10), None stays None (the identity).
    One ValueError naming ``name`` otherwise.

    >>> covariance("ood_sigmas['wide']", 2, 2)
    [[2.0, 0.0], [0.0, 2.0]]
    """
    if value is None:
        return None
    if _is_number(value):
        c = identity_scale(name, value)
        value = [[c if i == j else 0.0 for j in range(d)] for i in range(d)]
    import numpy as np
    from numerics import covariance_root
    covariance_root(value, d, name=name)
    return np.asarray(value, dtype=float).tolist()


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
    from .device import resolve_device
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
    """``config.ood_sigmas`` as ``{name: d x d nested list}`` (``covariance``: a number c becomes
    ``c I``); ValueError naming ``ood_sigmas[name]`` when one is not a d x d covariance."""
    return _ood_matrices("ood_sigmas", config.ood_sigmas, config.d)


def _ood_matrices(name: str, value, d: int) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"{name} must be a dict {{name: sigma}}, got {value!r}")
    return {str(key): covariance(f"{name}[{key!r}]", sigma, d) for key, sigma in value.items()}

