"""``cotgd verify``: every claim of the paper checked three ways, in one report.

The checks form a registry: each is a small function registered with ``@check(name, kind=...)``
under a unique, stable name (``<kind>.<what>``, e.g. ``symbolic.thm32-lsa-step-is-gd``), a kind
and a description (the first paragraph of its docstring).  Kinds:

* ``symbolic``: exact sympy identities (docs/theory.md sections 2, 4, 5, 9);
* ``numeric``: float64 computations, tolerance near machine precision (sections 2, 4);
* ``statistical``: Monte Carlo against an exact value, tolerance in standard errors (sections 5, 7, 9);
* ``training``: a trained PyTorch model against the theory's number (sections 6, 7, 8).

The checks named ``*.noise-*`` cover label noise (docs/theory.md section 16): the exact noisy GD
loss and no-CoT floor against Monte Carlo, the best CoT length k*, and CoT models trained on
noisy prompts (``cot_noise``: two k of one run) against the exact noisy loss.

How each kind is judged: docs/theory.md section 11.

A check function takes its inputs as explicit arguments, by name: ``settings`` (a frozen
``VerifySettings``: quick, seed, device, out) and, when it needs trained models, ``models`` (a
frozen ``TrainedModels``: cot, nocot, looped, built by ``train_models_for_verify``, which trains
only the models the selected checks declared in ``needs``).  It returns one ``Check`` row (or a
list of them): measured and expected values, the tolerance in words, whether it passed, details.

``run_verify(only=...)`` runs the checks whose names match the patterns (all by default);
a check that raises is reported as a failed row with its error, never skipped.
``format_report`` prints the rows as a table whose long cells wrap inside their column.
"""
from __future__ import annotations

import dataclasses
import fnmatch
import functools
import inspect
import os
import re
import sys
import textwrap
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np
import sympy

import theory

from .. import PAPER, TrainConfig, evaluate_params, train, train_models
from ..evaluate import stable_scale
from ..data import exact_noise_var
from ..device import resolve_device

#: The kinds of check, in the order the report lists them.
KINDS = ("symbolic", "numeric", "statistical", "training")
#: The trained models a check can ask for (``TrainedModels`` fields).
MODEL_NAMES = ("cot", "nocot", "looped", "looped_full", "cot_noise")
#: How each model is trained (``TrainConfig`` fields on top of ``PAPER``); ``quick`` adds the
#: ``quick`` overrides; ``ks``: several k trained as one run (``train_models``), the model is
#: then a dict k -> ``TrainResult``.
MODEL_SPECS = {
    "cot": {"mode": "cot", "param": "full"},
    "nocot": {"mode": "nocot", "param": "full"},
    # The sparse looped model (V31, W13 free, W24 = -1) learns fast; quick trains it less.
    "looped": {"mode": "looped", "param": "sparse", "quick": {"iters": 300, "batch": 200}},
    # The full looped model (every entry of V, W; config.LOOPED_LR), at full size even when quick:
    # with batches of 250 it ended at median 0.23 (the target: 0.108; seed 0, 750 steps).
    "looped_full": {"mode": "looped", "param": "full"},
    # Label noise s = 1 (docs/theory.md section 16), k = 5 and 10 in one run (about the time of one
    # model on two cores); the paper's size even when quick.
    "cot_noise": {"mode": "cot", "param": "full", "noise": 1.0, "ks": (5, 10)},
}
_NAME = re.compile(r"[a-z0-9]+(?:[.-][a-z0-9]+)*\Z")
_GLOB = set("*?[")


# ---------------------------------------------------------------- rows, settings, models
@dataclass(frozen=True)
class Check:
    """One row of the report.  ``measured`` / ``expected``: numbers, sympy expressions or text;
    ``tolerance``: the pass criterion in words; ``detail``: where, how many samples, the error."""

    name: str
    kind: str
    measured: object
    expected: object
    tolerance: str
    passed: bool
    detail: str = ""


def result(measured, expected, tolerance: str, passed, detail: str = "") -> Check:
    """A ``Check`` row whose name and kind the registry fills in (``@check``)."""
    return Check("", "", measured, expected, tolerance, bool(passed), detail)


@dataclass(frozen=True)
class VerifySettings:
    """What a run of ``cotgd verify`` is: ``quick`` (smaller samples, shorter looped training),
    ``seed`` (of every sampled prompt and of the training runs), ``device`` (a resolved torch
    device name, for training) and ``out`` (directory for the training runs, or None)."""

    quick: bool = False
    seed: int = 0
    device: str = "cpu"
    out: str | None = None


@dataclass(frozen=True)
class TrainedModels:
    """The trained models the selected checks need (``training.TrainResult`` or None when not
    trained): ``cot`` (full V, W, CoT objective), ``nocot`` (full, no-CoT objective), ``looped``
    (sparse, looped objective), ``looped_full`` (full, looped objective), ``cot_noise`` (full, CoT
    objective on prompts with label noise s = 1: a dict k -> result for k 5 and 10); ``errors``:
    model name -> error text for a model whose training raised."""

    cot: object = None
    nocot: object = None
    looped: object = None
    looped_full: object = None
    cot_noise: object = None
    errors: dict = field(default_factory=dict)

    def missing(self, names: Iterable[str]) -> list:
        """The error texts of the models among ``names`` that are not available."""
        out = []
        for name in names:
            if getattr(self, name) is None:
                out.append(f"the {name} model did not train: {self.errors[name]}" if name in self.errors
                           else f"the {name} model was not trained")
        return out


# ---------------------------------------------------------------- the registry
@dataclass(frozen=True)
class RegisteredCheck:
    """A registered check: ``name``, ``kind``, ``description``, the models it ``needs`` and the
    function (called with the arguments it names: ``settings``, ``models``)."""

    name: str
    kind: str
    description: str
    needs: tuple
    func: Callable
    params: tuple

    def __call__(self, settings: VerifySettings, models: TrainedModels | None = None) -> list:
        inputs = {"settings": settings, "models": models}
        return self.func(**{p: inputs[p] for p in self.params})


#: name -> ``RegisteredCheck``, in registration order (the order of the report).
REGISTRY: dict = {}


def check(name: str, *, kind: str, needs: Iterable[str] = (), description: str | None = None):
    """Register the decorated function as the check ``name`` of ``kind``.

    ``name``: unique, lower-case words joined by ``-`` or ``.``, starting with ``<kind>.``.
    ``needs``: the trained models (``MODEL_NAMES``) the function reads from its ``models``
    argument.  ``description``: defaults to the first paragraph of the docstring.  The function's
    parameters are among ``settings`` and ``models`` (``models`` exactly when ``needs``).  The
    decorated function returns a list of complete ``Check`` rows: rows built with ``result``
    get the registered name and kind."""
    needs = tuple(needs)
    if kind not in KINDS:
        raise ValueError(f"check {name!r}: kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if not _NAME.match(name) or not name.startswith(kind + "."):
        raise ValueError(f"check name {name!r}: expected '{kind}.' followed by lower-case words "
                         "joined by '-' or '.'")
    if unknown := [m for m in needs if m not in MODEL_NAMES]:
        raise ValueError(f"check {name!r}: unknown models {unknown} (known: {', '.join(MODEL_NAMES)})")

    def register(func):
        if name in REGISTRY:
            raise ValueError(f"check {name!r} is registered twice")
        params = tuple(inspect.signature(func).parameters)
        if not set(params) <= {"settings", "models"} or ("models" in params) != bool(needs):
            raise ValueError(f"check {name!r}: parameters must be among settings, models "
                             f"(models exactly when the check needs trained models), got {params}")
        text = description or (inspect.getdoc(func) or "").split("\n\n")[0]
        if not text.strip():
            raise ValueError(f"check {name!r} needs a description (or a docstring)")

        @functools.wraps(func)
        def run(*args, **kwargs) -> list:
            rows = func(*args, **kwargs)
            rows = [rows] if isinstance(rows, Check) else list(rows)
            return [dataclasses.replace(r, name=r.name or name, kind=r.kind or kind, passed=bool(r.passed))
                    for r in rows]

        REGISTRY[name] = RegisteredCheck(name, kind, " ".join(text.split()), needs, run, params)
        return run

    return register


def select_checks(only=None) -> list:
    """The registered checks whose names match ``only`` (all when None), in registry order.

    ``only``: a string of comma-separated patterns, or a list of patterns.  A pattern with one of
    ``* ? [`` is a shell-style glob matched against the whole name (``fnmatch``); any other is a
    substring of the name.  Case-insensitive.  A pattern that matches no check is a ValueError."""
    if only is None:
        return list(REGISTRY.values())
    parts = only.split(",") if isinstance(only, str) else list(only)
    patterns = [p.strip().lower() for p in parts if p.strip()]
    if not patterns:
        raise ValueError(f"--only {only!r}: no pattern given (cotgd verify --list shows the check names)")
    chosen = set()
    for pattern in patterns:
        hits = {name for name in REGISTRY if _matches(name, pattern)}
        if not hits:
            raise ValueError(f"--only: no check matches {pattern!r} (a glob if it has * ? [, else a "
                             "substring; cotgd verify --list shows the check names)")
        chosen |= hits
    return [entry for name, entry in REGISTRY.items() if name in chosen]


def _matches(name: str, pattern: str) -> bool:
    if _GLOB & set(pattern):
        return fnmatch.fnmatchcase(name, pattern)
    return pattern in name


def models_needed(entries: Iterable[RegisteredCheck]) -> tuple:
    """The models (in ``MODEL_NAMES`` order) that the checks ``entries`` need."""
    needed = {m for e in entries for m in e.needs}
    return tuple(m for m in MODEL_NAMES if m in needed)


# ---------------------------------------------------------------- symbolic (exact)
def _exact(measured, expected, detail: str = "") -> Check:
    """Exact comparison: ``is`` for booleans, ``simplify(measured - expected) == 0`` otherwise."""
    if isinstance(expected, bool):
        passed = measured is expected
    else:
        passed = sympy.simplify(sympy.sympify(measured) - sympy.sympify(expected)) == 0
    return result(measured, expected, "exact identity", passed, detail)


_ETA = theory.validation.exact_real("eta", PAPER.eta)     # 2/5 (docs/theory.md section 17)


@check("symbolic.thm32-lsa-step-is-gd", kind="symbolic")
def thm32_lsa_step_is_gd():
    """Thm 3.2 (docs/theory.md section 4): one step of the constructed LSA is one GD step, proved
    for symbolic d, n and step index i with block matrices."""
    import theory
    return _exact(theory.prove_lsa_step_is_gd(), True, "symbolic d, n, i; block matrices")


@check("symbolic.thm32-rejects-v31-minus-2eta", kind="symbolic")
def thm32_rejects_wrong_v31():
    """Thm 3.2 (docs/theory.md section 4): the same proof rejects a wrong transformer,
    V31 = -2 eta I, at d = 10 (the check can fail)."""
    import theory
    V, W = theory.gd_transformer_params(PAPER.d, _ETA)
    return _exact(theory.prove_lsa_step_is_gd(2 * V, W, eta=_ETA), False, f"d = {PAPER.d}, eta = {_ETA}")


@check("symbolic.gd-closed-form", kind="symbolic")
def gd_closed_form():
    """GD from w_0 = 0 has the closed form w_k = (I - (I - eta S)^k) w*, proved by induction
    (docs/theory.md section 2)."""
    import theory
    return _exact(theory.prove_gd_closed_form(), True, "induction on k")


@check("symbolic.thm31-nocot-optimal-step", kind="symbolic")
def thm31_nocot_optimal_step():
    """Thm 3.1 (docs/theory.md section 5): the best one-step (no-CoT) step is n / (n + d + 1),
    from the exact Wishart moments."""
    import theory
    d, n = sympy.symbols("d n", positive=True, integer=True)
    return _exact(theory.nocot_optimal_eta(d, n), n / (n + d + 1), "symbolic d, n")


@check("symbolic.thm31-nocot-floor", kind="symbolic")
def thm31_nocot_floor():
    """Thm 3.1 (docs/theory.md section 5): the no-CoT loss floor is d (d + 1) / (2 (n + d + 1)),
    from the exact Wishart moments."""
    import theory
    d, n = sympy.symbols("d n", positive=True, integer=True)
    return _exact(theory.nocot_min_loss(d, n), sympy.factor(d * (d + 1) / (2 * (n + d + 1))), "symbolic d, n")


@check("symbolic.wishart-third-moment", kind="symbolic")
def wishart_third_moment():
    """E tr(S^3) of the sample Gram matrix S = X^T X / n (docs/theory.md section 9) equals
    d (n^2 + d^2 + 3nd + 3n + 3d + 4) / n^2."""
    import theory
    d, n = sympy.symbols("d n", positive=True, integer=True)
    return _exact(theory.wishart_moment(3, d, n), d * (n**2 + d**2 + 3*n*d + 3*n + 3*d + 4) / n**2,
                  "symbolic d, n")


# ---------------------------------------------------------------- numeric (float64)
#: (d, n, k) of the equivalence grid: n < d included; quick uses the first six.
EQUIVALENCE_GRID = ((1, 1, 5), (3, 2, 10), (5, 20, 20), (10, 20, 10), (12, 7, 40), (8, 40, 30),
                    (2, 30, 40), (11, 5, 25), (6, 6, 35), (12, 40, 40))
EQUIVALENCE_TOL = 1e-10


def equivalence_worst(key: str, *, grid, prompts: int, seed: int, eta: float = 0.2) -> tuple:
    """The largest relative deviation ``key`` of ``numerics.check_gd_equivalence`` over the
    (d, n, k) ``grid`` (every other point with a random Sigma = A A^T / d + I / 2), and where:
    ``(worst, (d, n, k, 'Sigma = I' | 'random Sigma'))``."""
    import numerics
    rng = np.random.default_rng(seed)
    worst, where = 0.0, None
    for j, (d, n, k) in enumerate(grid):
        sigma = None
        if j % 2:
            A = rng.standard_normal((d, d))
            sigma = A @ A.T / d + 0.5 * np.eye(d)
        report = numerics.check_gd_equivalence(d, n, k, eta, seed=seed + j, sigma=sigma, prompts=prompts)
        rel = float(report.deviations[key][1])
        if rel >= worst or where is None:
            worst, where = rel, (d, n, k, "random Sigma" if sigma is not None else "Sigma = I")
    return worst, where


def _equivalence_check(settings: VerifySettings, key: str) -> Check:
    grid = EQUIVALENCE_GRID[:6] if settings.quick else EQUIVALENCE_GRID
    prompts = 8 if settings.quick else 32
    worst, where = equivalence_worst(key, grid=grid, prompts=prompts, seed=settings.seed)
    return result(worst, 0.0, f"<= {EQUIVALENCE_TOL:g} relative", worst <= EQUIVALENCE_TOL,
                  f"{len(grid)} (d, n, k) incl. n < d, {prompts} prompts each; worst at (d, n, k) = {where}")


@check("numeric.thm32-cot-rollout-is-gd", kind="numeric")
def cot_rollout_is_gd(settings):
    """Thm 3.2 (docs/theory.md section 4): the CoT rollout of the constructed transformer gives
    the k-step GD iterates, in float64 over a (d, n, k) grid incl. n < d and random Sigma."""
    return _equivalence_check(settings, "cot_vs_gd")


@check("numeric.thm32-looped-is-gd", kind="numeric")
def looped_is_gd(settings):
    """Thm 3.2 (docs/theory.md section 4): the looped constructed transformer gives the k-step GD
    iterates, in float64 over a (d, n, k) grid incl. n < d and random Sigma."""
    return _equivalence_check(settings, "looped_vs_gd")


@check("numeric.gd-recursion-is-closed-form", kind="numeric")
def gd_recursion_is_closed_form(settings):
    """The GD recursion equals the closed form (I - (I - eta S)^k) w* through eigh of S
    (docs/theory.md section 2), in float64 over a (d, n, k) grid incl. n < d and random Sigma."""
    return _equivalence_check(settings, "gd_vs_closed_form")


# ---------------------------------------------------------------- label noise: numeric
# Label noise: docs/theory.md section 16.
#: (d, n, eta, s, k) at which the exact noisy GD loss meets Monte Carlo: n < d and n = d included,
#: each with a negligible share of the mean on unstable prompts (eta lambda_max(S) >= 2), which
#: a Monte Carlo cannot see; quick uses the first three.
NOISE_GRID = ((10, 20, 0.4, 1.0, 10), (10, 5, 0.15, 0.5, 6), (4, 12, 0.4, 2.0, 8), (8, 6, 0.2, 1.0, 12),
              (6, 6, 0.2, 1.0, 5))
#: (d, n, eta, s, k_max) of the best-CoT-length check (an interior k* each; n < d included);
#: quick uses the first two with k_max at most 12.
NOISE_KSTAR_GRID = ((10, 20, 0.4, 2.0, 20), (8, 6, 0.2, 2.0, 10), (5, 10, 0.3, 1.5, 14))
#: (d, n, s) of the no-CoT floor with noise; n < d included.
NOISE_NOCOT_GRID = ((10, 20, 1.0), (10, 5, 0.5), (4, 12, 2.0))


def _kstar_grid(settings: VerifySettings) -> list:
    if settings.quick:
        return [(d, n, eta, s, min(k_max, 12)) for d, n, eta, s, k_max in NOISE_KSTAR_GRID[:2]]
    return list(NOISE_KSTAR_GRID)


@check("numeric.noise-best-cot-length-brute-force", kind="numeric")
def noise_best_cot_length_brute_force(settings):
    """Label noise (docs/theory.md section 16): k* of theory.best_cot_length (exact argmin over
    0 .. k_max) is the argmin of the float64 losses at every k, and its loss is theirs to 1e-12."""
    import numerics
    import theory
    out, passed = [], True
    for d, n, eta, s, k_max in _kstar_grid(settings):
        best = theory.best_cot_length(d, n, eta, k_max,
                                      noise_var=exact_noise_var(s))
        values = [float(numerics.gd_eval_loss_value(d, n, eta, k, noise_var=s * s)) for k in range(k_max + 1)]
        brute = int(np.argmin(values))
        ok = best.k_star == brute and abs(float(best.loss) - values[brute]) <= 1e-12 * values[brute]
        passed &= ok
        out.append((best.k_star, brute, f"k* {best.k_star} (loss {float(best.loss):.6g}) at (d, n, eta, s) = "
                                        f"({d}, {n}, {eta}, {s}), k <= {k_max}"))
    return result(" / ".join(str(o[0]) for o in out), " / ".join(str(o[1]) for o in out),
                  "equal k*; losses to 1e-12 relative", passed, "; ".join(o[2] for o in out))


# ---------------------------------------------------------------- statistical (Monte Carlo)
Z_SE = 4.0


def within_se(measured: float, expected: float, se: float, z: float = Z_SE) -> bool:
    """``|measured - expected| <= z se``."""
    return abs(measured - expected) <= z * se


@check("statistical.gd-loss-mc-vs-exact", kind="statistical")
def gd_loss_mc_vs_exact(settings):
    """The k-step GD evaluation loss (docs/theory.md sections 2, 9): an independent Monte Carlo
    estimate against the exact value from the Wishart moments (d 10, n 20, eta 0.4)."""
    import numerics
    import theory
    samples = 200_000 if settings.quick else 1_000_000
    k = min(PAPER.k, theory.MAX_EXACT_MOMENT // 2)
    exact = float(theory.gd_eval_loss(PAPER.d, PAPER.n, _ETA, k))
    mc = numerics.eval_loss_mc(PAPER.d, PAPER.n, PAPER.eta, k, samples=samples, seed=settings.seed)
    return result(mc["mean"], exact, f"{Z_SE:g} SE (independent Monte Carlo vs exact)",
                  within_se(mc["mean"], exact, mc["se"]), f"k {k}; SE {mc['se']:.2g}, {samples} prompts")


@check("statistical.nocot-floor-mc-vs-exact", kind="statistical")
def nocot_floor_mc_vs_exact(settings):
    """Thm 3.1 (docs/theory.md section 5): the loss of the optimal no-CoT transformer, an
    independent Monte Carlo estimate against the exact floor d (d + 1) / (2 (n + d + 1))."""
    import numerics
    import theory
    samples = 200_000 if settings.quick else 1_000_000
    floor = float(theory.nocot_min_loss(PAPER.d, PAPER.n))
    mc = numerics.nocot_loss_mc(PAPER.d, PAPER.n, samples=samples, seed=settings.seed + 1)
    return result(mc["mean"], floor, f"{Z_SE:g} SE (independent Monte Carlo vs exact)",
                  within_se(mc["mean"], floor, mc["se"]), f"SE {mc['se']:.2g}, {samples} prompts")


@check("statistical.mp-limit-vs-mc", kind="statistical")
def mp_limit_vs_mc(settings):
    """The Marchenko-Pastur limit of the per-coordinate GD loss (docs/theory.md section 9) against
    an independent Monte Carlo at d = 100, n = 200 (k 10, eta 0.4).

    The finite-d gap is O(1/d), so the tolerance adds the exact gap at d = 10, n = 20 scaled by
    10 / 100 to 4 standard errors."""
    import numerics
    d, n, eta, k = PAPER.d, PAPER.n, PAPER.eta, PAPER.k
    mp = float(numerics.mp_gd_eval_loss(d / n, eta, k))
    gap10 = abs(float(numerics.gd_eval_loss_value(d, n, eta, k)) / d - mp)
    dl, nl = 10 * d, 10 * n
    samples = 2_000 if settings.quick else 10_000
    mc = numerics.eval_loss_mc(dl, nl, eta, k, samples=samples, seed=settings.seed + 2)
    per_coord, se = mc["mean"] / dl, mc["se"] / dl
    tol = Z_SE * se + gap10 * d / dl
    return result(per_coord, mp, f"{Z_SE:g} SE + gap(d=10) / 10 = {tol:.2g} (independent Monte Carlo vs exact limit)",
                  abs(per_coord - mp) <= tol,
                  f"d {dl}, n {nl}, k {k}; SE {se:.2g}, {samples} prompts; exact gap at d = 10: {gap10:.3g}")


@check("statistical.ood-thm42-boundary-predicted-fraction", kind="statistical")
def thm42_boundary_predicted_fraction(settings):
    """Thm 4.2 (docs/theory.md section 7): GD on a prompt with Sigma = c I is stable iff
    eta c lambda_max(S) < 2; from sampled spectra of S, the fraction of unstable prompts is below
    0.05 at 0.8 c* and above 0.95 at 2 c*."""
    import numerics
    d, n, eta = PAPER.d, PAPER.n, PAPER.eta
    samples = 5_000 if settings.quick else 20_000
    boundary = stable_scale(eta, None, d, n)       # c*: Sigma = c I is predicted stable iff c < c*
    lam_max = np.linalg.eigvalsh(numerics.sample_gram(d, n, samples, settings.seed + 9))[:, -1]
    p_lo, p_hi = (float(np.mean(eta * f * boundary * lam_max >= 2)) for f in (0.8, 2.0))
    return result(f"{p_lo:.3f} / {p_hi:.3f}", "< 0.05 / > 0.95", "fractions at 0.8 c* / 2 c*",
                  p_lo < 0.05 and p_hi > 0.95, f"c* = {boundary:.3g}; {samples} sampled spectra of S")


# ---------------------------------------------------------------- label noise: statistical
def _grid_rows(rows: list, name: str) -> Check:
    """One row for a grid of ``(where, measured, expected, se, passed)``: the worst point in SE."""
    worst = max(rows, key=lambda r: (not r[4], abs(r[1] - r[2]) / r[3] if r[3] > 0 else np.inf))
    where, measured, expected, se, _ = worst
    z = (measured - expected) / se if se > 0 else float("inf")
    return result(measured, expected, f"{Z_SE:g} SE at every point (independent Monte Carlo vs exact)",
                  all(r[4] for r in rows), f"{len(rows)} {name} incl. n < d; worst {z:+.2f} SE at {where}")


@check("statistical.noise-gd-loss-mc-vs-exact", kind="statistical")
def noise_gd_loss_mc_vs_exact(settings):
    """Label noise (docs/theory.md section 16): the exact noisy k-step GD loss (Wishart moments)
    against an independent Monte Carlo of GD on noisy prompts, within 4 SE at every (d, n, eta,
    s, k) of a grid incl. n < d."""
    import numerics
    grid = NOISE_GRID[:3] if settings.quick else NOISE_GRID
    samples = 100_000 if settings.quick else 400_000
    rows = []
    for j, (d, n, eta, s, k) in enumerate(grid):
        exact = float(numerics.gd_eval_loss_value(d, n, eta, k, noise_var=s * s))
        mc = numerics.eval_loss_mc(d, n, eta, k, samples=samples, seed=settings.seed + 20 + j, noise_var=s * s)
        rows.append(((d, n, eta, s, k), mc["mean"], exact, mc["se"], within_se(mc["mean"], exact, mc["se"])))
    row = _grid_rows(rows, "(d, n, eta, s, k)")
    return dataclasses.replace(row, detail=row.detail + f"; {samples} prompts each")


def argmin_consistency(exact: list, losses: np.ndarray, k_star: int, z: float = Z_SE) -> dict:
    """Is the exact ``k_star`` the argmin of a Monte Carlo loss curve, up to its noise?  ``exact``:
    the exact mean loss at k = 0 .. K; ``losses``: (K + 1, prompts) per-prompt losses of the same
    prompts at every k, so gaps between two k are paired (their SE is small).  Passes when

    * no k beats ``k_star``: every paired gap ``mean(loss_k - loss_{k*})`` is above ``-z`` of
      its SE (fails for a wrong k*);
    * at the Monte Carlo argmin ``k_mc`` the paired gap matches the exact gap
      ``exact[k_mc] - exact[k*]`` within ``z`` SE, and the mean at ``k*`` is within ``z`` SE of
      ``exact[k*]`` (fails for a wrong curve).

    Returns ``{k_mc, gap_mc, gap_exact, gap_se, worst_z (the most negative gap in SE, 0 when
    none), mean_at_k_star, se_at_k_star, passed}``."""
    losses = np.asarray(losses, dtype=float)
    n = losses.shape[1]
    means = losses.mean(axis=1)
    diffs = losses - losses[k_star]
    gaps = diffs.mean(axis=1)
    ses = diffs.std(axis=1, ddof=1) / np.sqrt(n)
    others = [k for k in range(len(means)) if k != k_star and ses[k] > 0]
    worst_z = min([0.0] + [float(gaps[k] / ses[k]) for k in others])
    k_mc = int(np.argmin(means))
    gap_mc, gap_se = float(gaps[k_mc]), float(ses[k_mc])
    gap_exact = float(exact[k_mc] - exact[k_star])
    se_star = float(losses[k_star].std(ddof=1) / np.sqrt(n))
    passed = (worst_z >= -z
              and abs(gap_mc - gap_exact) <= z * gap_se + 1e-12 * abs(exact[k_star])
              and within_se(float(means[k_star]), float(exact[k_star]), se_star, z))
    return {"k_mc": k_mc, "gap_mc": gap_mc, "gap_exact": gap_exact, "gap_se": gap_se, "worst_z": worst_z,
            "mean_at_k_star": float(means[k_star]), "se_at_k_star": se_star, "passed": bool(passed)}


@check("statistical.noise-best-cot-length-mc-argmin", kind="statistical")
def noise_best_cot_length_mc_argmin(settings):
    """Label noise (docs/theory.md section 16): on a Monte Carlo loss curve (the same prompts at
    every k) no k beats the exact k* by 4 paired SE, the gap from k* to the curve's own argmin
    matches the exact gap within 4 SE, and its mean at k* is within 4 SE of the exact minimum."""
    import numerics
    import theory
    samples = 20_000 if settings.quick else 100_000
    out, passed = [], True
    for j, (d, n, eta, s, k_max) in enumerate(_kstar_grid(settings)):
        best = theory.best_cot_length(d, n, eta, k_max,
                                      noise_var=exact_noise_var(s))
        exact = [float(numerics.gd_eval_loss_value(d, n, eta, k, noise_var=s * s)) for k in range(k_max + 1)]
        losses = np.stack([numerics.eval_loss_mc(d, n, eta, k, samples=samples, seed=settings.seed + 30 + j,
                                                 noise_var=s * s, keep_losses=True).losses
                           for k in range(k_max + 1)])
        c = argmin_consistency(exact, losses, best.k_star)
        passed &= c["passed"]
        below = f"best other k {c['worst_z']:+.2f} SE" if c["worst_z"] < 0 else "no k below k*"
        out.append((c["k_mc"], best.k_star,
                    f"({d}, {n}, {eta}, {s}): {below}; gap to k_mc {c['gap_mc']:+.3g} vs exact "
                    f"{c['gap_exact']:+.3g} (SE {c['gap_se']:.2g}), mean at k* {c['mean_at_k_star']:.4g} vs "
                    f"{exact[best.k_star]:.4g} (SE {c['se_at_k_star']:.2g})"))
    return result(" / ".join(str(o[0]) for o in out), " / ".join(str(o[1]) for o in out),
                  f"Monte Carlo argmin vs exact k*: no k below k* by {Z_SE:g} paired SE; gap, mean at k* "
                  f"within {Z_SE:g} SE", passed,
                  "; ".join(o[2] for o in out) + f"; {samples} prompts")


@check("statistical.noise-nocot-floor-mc-vs-exact", kind="statistical")
def noise_nocot_floor_mc_vs_exact(settings):
    """Label noise (docs/theory.md sections 5, 16): the no-CoT optimum for noisy labels (step
    n / (n + d + 1 + s^2)), an independent Monte Carlo of its loss against the exact floor
    d (d + 1 + s^2) / (2 (n + d + 1 + s^2)), within 4 SE at every (d, n, s) incl. n < d."""
    import numerics
    import theory
    samples = 100_000 if settings.quick else 400_000
    rows = []
    for j, (d, n, s) in enumerate(NOISE_NOCOT_GRID):
        floor = float(theory.nocot_min_loss(d, n, noise_var=exact_noise_var(s)))
        mc = numerics.nocot_loss_mc(d, n, samples=samples, seed=settings.seed + 40 + j, noise_var=s * s)
        rows.append(((d, n, s), mc["mean"], floor, mc["se"], within_se(mc["mean"], floor, mc["se"])))
    row = _grid_rows(rows, "(d, n, s)")
    return dataclasses.replace(row, detail=row.detail + f"; {samples} prompts each")


# ---------------------------------------------------------------- training
def _train_config(settings: VerifySettings, name: str) -> TrainConfig:
    spec = dict(MODEL_SPECS[name])
    quick = spec.pop("quick", {})
    spec.pop("ks", None)
    config = dict(PAPER.problem(), seed=settings.seed, device=settings.device, progress=False, threads=1,
                  eval_every=250, eval_samples=5_000 if settings.quick else 20_000,
                  theory_samples=50_000 if settings.quick else 200_000, **spec)
    if settings.quick:
        config.update(quick)
    if settings.out:
        noise = f"-noise{spec['noise']:g}" if spec.get("noise") else ""
        config["out"] = os.path.join(settings.out, f"{spec['mode']}-{spec['param']}{noise}")
    return TrainConfig(**config)


def train_models_for_verify(settings: VerifySettings, needed: Iterable[str] = MODEL_NAMES,
                            on_model: Callable | None = None) -> TrainedModels:
    """Train the models ``needed`` (names from ``MODEL_NAMES``) in the paper's setting
    (docs/theory.md section 8; ``MODEL_SPECS``) and return them as ``TrainedModels``.  A model
    whose training raises is left None and its error recorded (the checks that need it fail with
    it).  ``on_model(name)`` is called before each model (progress).  A spec with ``ks`` trains
    them as one run (``train_models``) and gives a dict k -> ``TrainResult``."""
    trained, errors = {}, {}
    for name in MODEL_NAMES:
        if name not in needed:
            continue
        if on_model is not None:
            on_model(name)
        try:
            config, ks = _train_config(settings, name), MODEL_SPECS[name].get("ks")
            if ks:
                trained[name] = dict(zip(ks, train_models(config, ks=list(ks), overwrite=True)))
            else:
                trained[name] = train(config, overwrite=True)
        except Exception as exc:   # reported by every check that needs the model
            errors[name] = f"{type(exc).__name__}: {exc}"
    return TrainedModels(**trained, errors=errors)


def _relative(measured: float, expected: float) -> float:
    return abs(measured - expected) / abs(expected)


@check("training.cot-loss-vs-gd-independent-mc", kind="training", needs=("cot",))
def cot_loss_vs_gd(models):
    """Thm 3.2 learned (docs/theory.md sections 6, 8): the trained CoT model's (full V, W)
    evaluation loss against the k-step GD loss (k 10) from an independent Monte Carlo."""
    s = models.cot.summary
    rel = _relative(s["final_eval_loss"], s["theory_eval_loss"])
    return result(s["final_eval_loss"], s["theory_eval_loss"], "10% relative (independent Monte Carlo)",
                  rel <= 0.10, f"{rel:.1%} off")


def _structure(models, key: str, target: float, tolerance: float) -> Check:
    value = models.cot.summary["structure"][key]
    rel = _relative(value, target)
    return result(value, target, f"{tolerance:.0%} relative", rel <= tolerance, f"{rel:.1%} off")


@check("training.cot-structure-v31-w13", kind="training", needs=("cot",))
def cot_structure_v31_w13(models):
    """The trained CoT model's structure (docs/theory.md sections 4, 6): the mean diagonal of
    V31 W13 is -eta, as in the Thm 3.2 transformer."""
    return _structure(models, "v31_w13", -PAPER.eta, 0.03)


@check("training.cot-structure-w24-v31", kind="training", needs=("cot",))
def cot_structure_w24_v31(models):
    """The trained CoT model's structure (docs/theory.md sections 4, 6): the mean diagonal of
    W24 V31 is eta, as in the Thm 3.2 transformer."""
    return _structure(models, "w24_v31", PAPER.eta, 0.03)


@check("training.cot-structure-offdiag-energy", kind="training", needs=("cot",))
def cot_structure_offdiag_energy(models):
    """The trained CoT model's structure (docs/theory.md section 6): the off-diagonal share of
    the energy of V31 W13 is near 0 (the Thm 3.2 transformer's is 0)."""
    value = models.cot.summary["structure"]["offdiag_energy"]
    return result(value, 0.0, "<= 0.05", value <= 0.05)


@check("training.cot-structure-functional-deviation", kind="training", needs=("cot",))
def cot_structure_functional_deviation(models):
    """The trained CoT model's function (docs/theory.md sections 4, 6): one model step against
    one GD step with step eta on the same prompts, relative deviation near 0."""
    value = models.cot.summary["structure"]["functional_deviation"]
    return result(value, 0.0, "<= 0.03 (GD step on the same prompts)", value <= 0.03)


@check("training.nocot-at-thm31-floor-exact", kind="training", needs=("nocot",))
def nocot_at_floor(models):
    """Thm 3.1 (docs/theory.md sections 5, 8): the trained no-CoT model's evaluation loss sits at
    the exact floor d (d + 1) / (2 (n + d + 1)), within 5% and not below it by more than 4 SE."""
    import theory
    s = models.nocot.summary
    floor = float(theory.nocot_min_loss(PAPER.d, PAPER.n))
    rel = (s["final_eval_loss"] - floor) / floor
    se = (s.get("eval") or {}).get("se", 0.0)
    return result(s["final_eval_loss"], floor, "within 5% of the exact floor, not below by > 4 SE",
                  abs(rel) <= 0.05 and s["final_eval_loss"] >= floor - 4 * se, f"{rel:+.1%}; SE {se:.2g}")


@check("training.cot-beats-nocot", kind="training", needs=("cot", "nocot"))
def cot_beats_nocot(models):
    """CoT against no CoT (docs/theory.md section 8): the trained no-CoT model's evaluation loss
    is at least twice the trained CoT model's."""
    ratio = models.nocot.summary["final_eval_loss"] / max(models.cot.summary["final_eval_loss"], 1e-12)
    return result(ratio, ">= 2", "ratio of eval losses (no-CoT / CoT)", ratio >= 2.0)


@check("training.looped-median-below-cot", kind="training", needs=("cot", "looped"))
def looped_median_below_cot(models):
    """Looped against CoT (docs/theory.md section 8): the trained sparse looped model's (k 10)
    median evaluation loss is below the trained CoT model's."""
    looped, cot = models.looped.summary["eval"]["median"], models.cot.summary["eval"]["median"]
    return result(looped, cot, "measured < expected", looped < cot)


@check("training.looped-vs-best-gd-step-same-prompts", kind="training", needs=("looped",))
def looped_vs_best_gd_step(models):
    """Looped against GD (docs/theory.md section 8): the trained sparse looped model's median
    loss is at most 5% above that of k GD steps with the best single step, on the same prompts.

    The sparse parametrisation (V31, W13 free, W24 = -1) contains every single-step GD
    (V31 = -eta I, W13 = I), so training reaches at most the best single step's loss; it can do
    better (a rescaled GD).  Compared by median on the very prompts of the final evaluation,
    where one heavy-tailed prompt cannot decide the outcome."""
    s = models.looped.summary
    same = s["theory_same_prompts"]
    rel = (s["eval"]["median"] - same["median"]) / same["median"]
    return result(s["eval"]["median"], same["median"], "at most +5% (GD on the same prompts)", rel <= 0.05,
                  f"{rel:+.1%}; best single step {s['structure_step']:.4f}; learned step -V31 W13 = "
                  f"{s['learned_contraction_step']:.4f}, W24 V31 = {s['learned_step']:.4f}; "
                  f"mean {s['final_eval_loss']:.4g} vs {same['mean']:.4g}")


@check("training.looped-full-vs-best-gd-step-same-prompts", kind="training", needs=("looped_full",))
def looped_full_vs_best_gd_step(models):
    """The full looped model (every entry of V, W; k 10 loops; docs/theory.md section 3): its
    median loss is at most that of k GD steps with the best single step on the same prompts, its
    mean over non-diverged prompts is below the exact k-step GD (= CoT) loss, and at most 1e-3
    of the prompts diverge."""
    import theory
    s = models.looped_full.summary
    same, ev = s["theory_same_prompts"], s["eval"]
    cot = float(theory.gd_eval_loss(PAPER.d, PAPER.n, PAPER.eta, PAPER.k))
    rescaled = s.get("rescaled_gd_same_prompts") or {}
    ok = ev["median"] <= same["median"] and ev["mean_without_diverged"] < cot and ev["diverged_frac"] <= 1e-3
    return result(f"median {ev['median']:.4g}; mean {ev['mean_without_diverged']:.4g}; diverged {ev['diverged_frac']:.2g}",
                  f"<= {same['median']:.4g}; < {cot:.4g}; <= 0.001",
                  "median vs best single GD step (same prompts); mean without diverged vs exact CoT loss",
                  ok, f"best isotropic looped model (stretched GD) on the same prompts: median "
                      f"{rescaled.get('median', float('nan')):.4g}, mean {rescaled.get('mean', float('nan')):.4g}")


def _ood_samples(settings: VerifySettings) -> int:
    return 5_000 if settings.quick else 20_000


def _ood_vs_gd(settings: VerifySettings, models: TrainedModels, scale: float) -> Check:
    import numerics
    d, n, k, eta = PAPER.d, PAPER.n, PAPER.k, PAPER.eta
    samples, seed, sigma = _ood_samples(settings), settings.seed + 7, scale * np.eye(d)
    V_gd, W_gd = numerics.gd_params(d, eta)
    model = evaluate_params(models.cot.V, models.cot.W, d=d, n=n, k=k, samples=samples, seed=seed, sigma=sigma,
                            device=settings.device)
    gd = evaluate_params(V_gd, W_gd, d=d, n=n, k=k, samples=samples, seed=seed, sigma=sigma, device=settings.device)
    rel = _relative(model["median"], gd["median"])
    return result(model["median"], gd["median"], "10% relative (GD on the same prompts)", rel <= 0.10,
                  f"{rel:.1%} off; median losses, {samples} prompts")


@check("training.ood-sigma-0.5-vs-gd-same-prompts", kind="training", needs=("cot",))
def ood_half_vs_gd(settings, models):
    """Out of distribution (docs/theory.md section 7): at Sigma = 0.5 I the trained CoT model's
    median loss is within 10% of the Thm 3.2 transformer's (= GD's) on the same prompts."""
    return _ood_vs_gd(settings, models, 0.5)


@check("training.ood-sigma-1.5-vs-gd-same-prompts", kind="training", needs=("cot",))
def ood_one_and_half_vs_gd(settings, models):
    """Out of distribution (docs/theory.md section 7): at Sigma = 1.5 I the trained CoT model's
    median loss is within 10% of the Thm 3.2 transformer's (= GD's) on the same prompts."""
    return _ood_vs_gd(settings, models, 1.5)


@check("training.ood-thm42-boundary-median-crossing", kind="training", needs=("cot",))
def thm42_boundary_median_crossing(settings, models):
    """Thm 4.2 (docs/theory.md section 7): the trained CoT model's median loss at Sigma = c I
    crosses the exact loss d/2 of w_0 = 0 at the boundary c*: below it at 0.8 c*, above it at 2 c*."""
    d, n, k = PAPER.d, PAPER.n, PAPER.k
    samples, boundary = _ood_samples(settings), stable_scale(PAPER.eta, None, PAPER.d, PAPER.n)
    ratios, diverged = [], []
    for factor in (0.8, 2.0):
        c = factor * boundary
        report = evaluate_params(models.cot.V, models.cot.W, d=d, n=n, k=k, samples=samples,
                                 seed=settings.seed + 8, sigma=c * np.eye(d), device=settings.device)
        ratios.append(report["median"] / (d / 2))
        diverged.append(report["diverged_frac"])
    return result(f"{ratios[0]:.3g} / {ratios[1]:.3g}", "< 1 / > 1",
                  "median loss / (d/2) at 0.8 c* / 2 c* (exact loss of w_0 = 0)", ratios[0] < 1 < ratios[1],
                  f"c* = {boundary:.3g}; diverged fraction {diverged[0]:.3f} / {diverged[1]:.3f}; {samples} prompts")


def _noise_vs_exact(models, k: int) -> Check:
    import numerics
    s = models.cot_noise[k].summary
    noise = MODEL_SPECS["cot_noise"]["noise"]
    exact = float(numerics.gd_eval_loss_value(PAPER.d, PAPER.n, PAPER.eta, k, noise_var=noise ** 2))
    rel = _relative(s["final_eval_loss"], exact)
    se = (s.get("eval") or {}).get("se", float("nan"))
    return result(s["final_eval_loss"], exact, "10% relative (exact noisy GD loss)", rel <= 0.10,
                  f"{rel:.1%} off; s {noise:g}, k {k}; SE {se:.2g}; Monte Carlo of GD {s['theory_eval_loss']:.4g}")


@check("training.noise-cot-k10-vs-exact", kind="training", needs=("cot_noise",))
def noise_cot_k10_vs_exact(models):
    """Label noise (docs/theory.md section 16): a CoT model (full V, W) trained on prompts with
    noise s = 1 at the paper's d, n, eta, k = 10 lands within 10% of the exact noisy 10-step GD
    loss."""
    return _noise_vs_exact(models, 10)


@check("training.noise-cot-k5-vs-exact", kind="training", needs=("cot_noise",))
def noise_cot_k5_vs_exact(models):
    """Label noise (docs/theory.md section 16): the CoT model trained with noise s = 1 at k = 5 (in
    the same run as k = 10) lands within 10% of the exact noisy 5-step GD loss."""
    return _noise_vs_exact(models, 5)


# ---------------------------------------------------------------- running
def run_check(entry: RegisteredCheck, settings: VerifySettings, models: TrainedModels | None = None) -> list:
    """Run one registered check: its rows, or one failed row with the error when it raises or a
    model it needs is missing.  Each row's detail ends with the check's time."""
    start = time.perf_counter()
    missing = (models or TrainedModels()).missing(entry.needs)
    if missing:
        rows = [Check(entry.name, entry.kind, "error: " + "; ".join(missing), "no error", "-", False)]
    else:
        try:
            rows = entry(settings, models)
            if not rows:
                raise RuntimeError("the check returned no rows")
        except Exception as exc:   # a crashing check is a failed row with its error, never skipped
            rows = [Check(entry.name, entry.kind, f"error: {type(exc).__name__}: {exc}", "no error", "-", False)]
    seconds = time.perf_counter() - start
    return [dataclasses.replace(r, detail=(r.detail + "; " if r.detail else "") + f"{seconds:.2f} s")
            for r in rows]


def _json_value(value):
    if isinstance(value, np.generic):
        value = value.item()
    return value if value is None or isinstance(value, (bool, int, float, str)) else str(value)


def run_verify(*, quick: bool = False, device: str = "auto", out: str | None = None, seed: int = 0,
               only=None) -> dict:
    """Run the registered checks (``only``: the patterns of ``select_checks``; None: all), training
    only the models they need; return the JSON-ready report ``{"passed", "quick", "device"
    (resolved), "seed", "seconds", "checks": [{name, kind, measured, expected, tolerance, passed,
    detail}]}``.  Raises ValueError for a pattern that matches no check, a bad seed or device."""
    from tqdm import tqdm
    from theory.validation import check_int
    selected = select_checks(only)
    seed = check_int("seed", seed, 0)
    settings = VerifySettings(quick=bool(quick), seed=seed, device=str(resolve_device(device)), out=out)
    start = time.perf_counter()
    needed = models_needed(selected)
    with tqdm(total=len(needed) + len(selected), desc="cotgd verify", disable=not sys.stderr.isatty(),
              leave=False) as bar:
        def step(label):
            bar.set_postfix_str(label)
            bar.update()

        models = TrainedModels()
        if needed:
            models = train_models_for_verify(settings, needed, on_model=lambda name: step(f"training {name}"))
        rows = []
        for entry in selected:
            step(entry.name)
            rows.extend(run_check(entry, settings, models))
    checks = [{k: _json_value(v) for k, v in dataclasses.asdict(r).items()} for r in rows]
    return {"passed": all(c["passed"] for c in checks), "quick": settings.quick, "device": settings.device,
            "seed": seed, "seconds": time.perf_counter() - start, "checks": checks}


# ---------------------------------------------------------------- text
def _fmt(value) -> str:
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, (float, np.floating)):
        return f"{value:.6g}"
    return str(value)


def _table(header: tuple, rows: list, caps: tuple) -> list:
    """Lines of a table whose cells wrap (textwrap, breaking long words and after hyphens) inside
    columns at most ``caps`` wide: nothing is cut."""
    widths = [max(1, min(max(len(str(r[i])) for r in rows + [header]), cap)) for i, cap in enumerate(caps)]

    def physical(r):
        cells = [textwrap.wrap(str(v), w) or [""] for v, w in zip(r, widths)]
        for j in range(max(len(c) for c in cells)):
            yield "  ".join((c[j] if j < len(c) else "").ljust(w) for c, w in zip(cells, widths)).rstrip()

    out = list(physical(header)) + ["  ".join("-" * w for w in widths)]
    for r in rows:
        out.extend(physical(r))
    return out


#: Column caps of the report: check, kind, measured, expected, tolerance, result, detail.
REPORT_WIDTHS = (50, 11, 13, 13, 24, 6, 34)


def format_report(report: dict) -> str:
    """The report as a plain-text table (check, kind, measured, expected, tolerance, result,
    detail; long cells wrap inside their column, never cut) and the summary line."""
    header = ("check", "kind", "measured", "expected", "tolerance", "result", "detail")
    rows = [(c["name"], c["kind"], _fmt(c["measured"]), _fmt(c["expected"]), c["tolerance"],
             "PASS" if c["passed"] else "FAIL", c.get("detail", "")) for c in report["checks"]]
    n_pass = sum(bool(c["passed"]) for c in report["checks"])
    out = _table(header, rows, REPORT_WIDTHS)
    out.append(f"{n_pass}/{len(rows)} checks passed in {report['seconds']:.1f} s "
               f"({'quick' if report['quick'] else 'full'}, device {report['device']}): "
               f"{'ALL PASS' if report['passed'] else 'FAILURES'}")
    return "\n".join(out)


def format_check_list(only=None) -> str:
    """The registered checks (those matching ``only``): name, kind, the models they train, and
    description, as a table whose cells wrap."""
    entries = select_checks(only)
    rows = [(e.name, e.kind, ", ".join(e.needs) or "-", e.description) for e in entries]
    lines = _table(("check", "kind", "trains", "description"), rows, (60, 11, 11, 64))
    lines.append(f"{len(rows)} checks; run some with --only PATTERN (a glob if it has * ? [, else a substring; "
                 "comma-separated)")
    return "\n".join(lines)
