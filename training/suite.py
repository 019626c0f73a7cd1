"""The out-of-distribution suite: a trained model on the covariance shifts of Garg et al.'s
in-context-learning benchmark, adapted to weight prediction, each case judged against the theory
(docs/theory.md sections 7 and 10).

A case changes the prompt distribution of docs/theory.md section 1: ``x ~ N(0, Sigma)`` with a
covariance the model never saw, and/or ``w* ~ N(0, c^2 I)``.  The cases are defined here, once,
each a ``Case`` built by a small function (``standard_suite`` lists them; add your own the same
way, or pass any covariance with ``covariance_case``):

* ``skewed``: eigenvalues proportional to ``1/i^2`` (``i = 1 .. d``), trace d, eigenbasis
  ``numerics.random_rotation(d, SUITE_SEED)``;
* ``half_subspace``: x confined to a random ``d//2``-dimensional subspace (the first ``d//2``
  columns of ``numerics.random_rotation(d, SUITE_SEED + 1)``), trace d: singular Sigma;
* ``scale-x=c`` for c in ``X_SCALES``: x multiplied by c, ``Sigma = c^2 Sigma_train``;
* ``scale-w=c`` for c in ``W_SCALES``: w* multiplied by c (``Sigma = Sigma_train``);
* ``noisy``: Garg et al.'s label noise, ``y = X^T w* + eps``, ``eps ~ N(0, NOISY_S^2)`` (``Sigma =
  Sigma_train``); losses are still against ``w*`` (docs/theory.md section 16).

A run is judged against its own training distribution: ``Sigma_train`` is the covariance it was
trained on (``TrainConfig.sigma``; I when None) and the in-distribution reference row, scale-x and
scale-w keep its label noise as well (``standard_suite(d, sigma=, noise=)``; ``evaluate_run``
passes the run's).  skewed and half_subspace are fixed covariances, the same for every run.

What each case reports (``evaluate_case``; every loss is ``(1/2) ||w_hat - w*||^2`` in float64):

* the model's ``mean``, ``se``, ``median``, ``q10``, ``q90``, ``diverged_frac`` on ``samples``
  fresh prompts from ``evaluate.eval_generator(seed)``;
* ``gd_*``: GD with the model's own learned ``step`` on the same prompts (``gd_steps`` = k for
  cot and looped, 1 for nocot), the function Theorem 3.2 says a CoT model learns;
* ``nocot_*``: Theorem 3.1's optimum for the model's training distribution, ``numerics.nocot_params(d,
  n, sigma, noise_var=noise^2)`` with the model's ``sigma`` and label ``noise`` (``Sigma = I``
  without noise for a run at the paper's distribution; the model a no-CoT run on that
  distribution converges to) on the same prompts;
  ``nocot_sigma_median``: Theorem 3.1's optimum for the case's own Sigma,
  ``numerics.nocot_params(d, n, Sigma)`` (the best any no-CoT model can do there);
  ``nocot_expected``: the exact mean of the first, ``theory.linear_prediction_loss``;
* Theorem 4.2's verdict, ``theory.stability_verdict`` (the one rule, also behind ``cotgd
  train``'s warning and the figures; ``evaluate.predicted_stability``): ``spectrum_interval``
  ``[lo, hi]`` predicted for ``S_Sigma`` on ``range(Sigma)`` (Sigma's positive eigenvalues at
  dimension ``r = rank Sigma``, docs/theory.md sections 7 and 10), ``eta_top = step * hi``,
  ``predicted_stable`` (``step * hi < 2``) and ``stable_step_bound = 2 / hi``
  (``spectrum_top_ambient`` reports the top with the ambient d instead of r, which overstates
  it for a singular Sigma); ``unstable_frac``: the sampled share of prompts with ``step *
  lambda_max(S) >= 2`` (``numerics.sample_gram``);
  ``loss_bound`` is ``theory.ood_loss_bound`` there plus the unrecoverable part;
* ``expected_loss`` of GD with the learned step and its ``expected_method``: exact
  (``theory.gd_eval_loss``) for ``Sigma = s I`` (S scales to ``s S_0``, so GD with step eta on it
  is GD with step ``eta s`` on ``Sigma = I``) and ``k <= evaluate.EXACT_THEORY_MAX_K``; exact
  ``theory.linear_prediction_loss`` for one step; ``numerics.eval_loss_mc`` otherwise (with
  ``expected_se``; None when the Monte Carlo mean is infinite).  GD is linear in w*, so a
  ``w_scale`` c multiplies it by ``c^2``;
* ``rank``, ``unrecoverable`` = ``c^2 (d - r)/2``, the part of w* outside ``range(Sigma)`` that no
  estimator recovers, and ``limit_loss`` = ``c^2 theory.gd_limit_loss(d, n, Sigma)`` =
  ``c^2 (d - min(n, r))/2``, GD's large-k loss when every prompt is stable.

The model's learned step (``learned_step``): the mean diagonal of ``W24 V31``
(``training.w24_v31``, the coefficient of ``S w*`` in its step; docs/theory.md section 4) in every
mode: Theorem 3.2's eta for a CoT model, Theorem 3.1's ``eta_1 = n/(n + d + 1)`` for a no-CoT
model (whose step from ``w_0 = 0`` is ``W24 V31 S w*`` alone), the best single step for a looped
one.  For a run trained on a singular Sigma it is read on ``range(Sigma_train)``, ``U^T W24 V31
U`` for an orthonormal basis U of the range (``training.structure``): the directions without
data are never trained and would dilute the mean.  The run's ``summary["structure_step"]`` (what
the theory says it should be) is reported as ``target_step``; ``step=`` overrides the learned
step.

The model, GD and the no-CoT references see the same prompts in a case (paired comparisons);
``w* -> c w*`` is sampled honestly: the trained model is not linear in w* (its rollout reads
``y^T y``), so its loss is measured, never derived.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import numpy as np
import sympy
import torch

import numerics
import theory
from theory.validation import check_int, check_positive_finite, exact_real

from .data import derived_seed, exact_noise_var
from .device import resolve_device
from .evaluate import (EXACT_THEORY_MAX_K, SigmaSpectrum, as_models, eval_generator, eval_losses, loss_reports,
                       predicted_stability, report_dict, sigma_spectrum)
from .config import check_field
from .structure import w24_v31

#: Seed of the random eigenbases of the standard suite (``numerics.random_rotation``): skewed uses
#: ``SUITE_SEED``, half_subspace ``SUITE_SEED + 1``; fixed, so the suite is the same everywhere.
SUITE_SEED = 2025
#: The input scales c of the ``scale-x=c`` cases (Sigma = c^2 I) and the w* scales of ``scale-w=c``.
X_SCALES = (0.333, 0.5, 2, 3)
W_SCALES = (0.5, 2)
#: Label-noise standard deviation s of the ``noisy`` case (labels <w*, x> have variance d).
NOISY_S = 1.0
#: Defaults of ``evaluate_suite``: prompts per case, Monte Carlo prompts for the expected loss.
DEFAULT_SAMPLES = 10_000
DEFAULT_THEORY_SAMPLES = 100_000


@dataclass(frozen=True, eq=False)
class Case:
    """One prompt distribution: ``x ~ N(0, sigma)`` (``sigma=None``: identity; any symmetric PSD
    d x d matrix, singular allowed), ``w* ~ N(0, w_scale^2 I)``, labels ``y = X^T w* + eps`` with
    ``eps ~ N(0, label_noise^2 I)`` (docs/theory.md section 16)."""

    name: str
    sigma: np.ndarray | None = None
    w_scale: float = 1.0
    label_noise: float = 0.0
    description: str = ""
    kind: str = field(default="custom")

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f"case name must be a non-empty string, got {self.name!r}")
        check_positive_finite(f"{self.name}: w_scale", self.w_scale)
        if not (isinstance(self.label_noise, (int, float)) and math.isfinite(self.label_noise)
                and self.label_noise >= 0):
            raise ValueError(f"{self.name}: label_noise must be a finite number >= 0, got {self.label_noise!r}")
        if self.sigma is not None:
            object.__setattr__(self, "sigma", np.array(self.sigma, dtype=np.float64))


def _training_text(sigma, noise: float) -> tuple[str, str]:
    """How a case names the training covariance (``Sigma_train`` or ``I``) and the run's label
    noise (``, label noise s = ...`` or nothing)."""
    return ("I" if sigma is None else "Sigma_train"), ("" if not noise else f", label noise s = {noise:g}")


def in_distribution_case(noise: float = 0.0, sigma=None) -> Case:
    """The training distribution, the reference row: ``x ~ N(0, sigma)`` (the run's training
    covariance; None: I), ``w* ~ N(0, I)``, and the run's label noise of standard deviation
    ``noise``."""
    base, text = _training_text(sigma, noise)
    return Case("in_distribution", sigma, description=f"Sigma = {base}, w* ~ N(0, I){text}: the training distribution",
                label_noise=noise, kind="reference")


def skewed_case(d: int, seed: int = SUITE_SEED) -> Case:
    """``Sigma = Q diag(lambda) Q^T``, ``lambda_i`` proportional to ``1/i^2`` with trace d,
    ``Q = numerics.random_rotation(d, seed)``."""
    d = check_int("d", d)
    lam = 1.0 / np.arange(1, d + 1) ** 2
    lam *= d / lam.sum()
    Q = numerics.random_rotation(d, seed)
    sigma = (Q * lam) @ Q.T
    return Case("skewed", (sigma + sigma.T) / 2, kind="skewed",
                description=f"eigenvalues ~ 1/i^2 (top {lam[0]:.3g}), trace d, random eigenbasis (seed {seed})")


def half_subspace_case(d: int, seed: int = SUITE_SEED + 1) -> Case:
    """x confined to a random ``r = max(1, d//2)``-dimensional subspace (the first r columns
    ``Q_r`` of ``numerics.random_rotation(d, seed)``): ``Sigma = (d/r) Q_r Q_r^T``, trace d,
    singular for d >= 2 (docs/theory.md section 10)."""
    d = check_int("d", d)
    r = max(1, d // 2)
    Q = numerics.random_rotation(d, seed)[:, :r]
    sigma = (d / r) * (Q @ Q.T)
    return Case("half_subspace", (sigma + sigma.T) / 2, kind="half_subspace",
                description=f"x in a random {r}-dimensional subspace, trace d (seed {seed})")


def scale_x_case(d: int, c: float, *, sigma=None, noise: float = 0.0) -> Case:
    """x multiplied by c on the training distribution: ``Sigma = c^2 sigma`` (``sigma`` the
    training covariance; None: I), the run's label noise ``noise`` unchanged."""
    c = check_positive_finite("c", c)
    base, text = _training_text(sigma, noise)
    train = np.eye(check_int("d", d)) if sigma is None else np.asarray(sigma, dtype=np.float64)
    return Case(f"scale-x={c:g}", c * c * train, label_noise=noise, kind="scale-x",
                description=f"x multiplied by {c:g}: Sigma = {c * c:.4g} {base}{text}")


def scale_w_case(c: float, *, sigma=None, noise: float = 0.0) -> Case:
    """w* multiplied by c on the training distribution: ``w* ~ N(0, c^2 I)``, ``Sigma = sigma``
    (the training covariance; None: I), the run's label noise ``noise``."""
    c = check_positive_finite("c", c)
    base, text = _training_text(sigma, noise)
    return Case(f"scale-w={c:g}", sigma, w_scale=c, label_noise=noise, kind="scale-w",
                description=f"w* multiplied by {c:g}: w* ~ N(0, {c * c:.4g} I), Sigma = {base}{text}")


def noisy_case(s: float = None, *, sigma=None) -> Case:
    """Label noise of standard deviation ``s`` (default ``NOISY_S``): ``y = X^T w* + eps``,
    ``eps ~ N(0, s^2 I)``, ``Sigma = sigma`` (the training covariance; None: I; docs/theory.md
    section 16)."""
    s = check_positive_finite("s", NOISY_S if s is None else s)
    base = _training_text(sigma, 0.0)[0]
    return Case("noisy", sigma, label_noise=s, kind="noisy",
                description=f"labels y = <w*, x> + eps, eps ~ N(0, {s * s:.4g}), Sigma = {base}")


def covariance_case(name: str, sigma, d: int) -> Case:
    """A covariance of your own (any symmetric PSD d x d matrix but 0, singular allowed), validated
    by ``numerics.covariance_root`` (ValueError naming ``name``)."""
    root = numerics.covariance_root(sigma, check_int("d", d), name=name)
    if not np.any(root):
        raise ValueError(f"{name}: Sigma = 0 (x = 0 carries no information on w*): no case to evaluate")
    return Case(name, sigma, kind="custom", description="user covariance")


def standard_suite(d: int, seed: int = SUITE_SEED, *, sigma=None, noise: float = 0.0) -> list[Case]:
    """The standard suite (module docstring): skewed, half_subspace, scale-x=c for c in
    ``X_SCALES``, scale-w=c for c in ``W_SCALES``, noisy; the last three relative to the training
    distribution, covariance ``sigma`` (None: I) and label noise ``noise``."""
    training = dict(sigma=sigma, noise=noise)
    return ([skewed_case(d, seed), half_subspace_case(d, seed + 1)]
            + [scale_x_case(d, c, **training) for c in X_SCALES] + [scale_w_case(c, **training) for c in W_SCALES]
            + [noisy_case(sigma=sigma)])


#: Named suites (``cotgd evaluate --suite``): each a function ``(d, seed, *, sigma, noise) ->
#: list[Case]`` of the run's training covariance and label noise; ``none`` evaluates only the
#: covariances passed by the user.
SUITES = {"standard": standard_suite, "none": lambda d, seed=SUITE_SEED, *, sigma=None, noise=0.0: []}


def load_covariance(path, d: int, name: str | None = None) -> Case:
    """A ``covariance_case`` read from a file: ``.npy`` (``numpy.load``, no pickles) or text
    (``numpy.loadtxt``); named after the file's stem unless ``name`` is given."""
    path = os.fspath(path)
    label = name or os.path.splitext(os.path.basename(path))[0] or path
    if path.endswith(".npy"):
        try:
            sigma = np.load(path, allow_pickle=False)
        except ValueError as exc:
            raise ValueError(f"{path!r} is not a numeric .npy array ({' '.join(str(exc).split())})") from None
    else:
        sigma = np.loadtxt(path, ndmin=2)
    return covariance_case(label, sigma, d)


# --------------------------------------------------------------------------------- the model
@dataclass
class SuiteModel:
    """The parameters evaluated by the suite: ``V``, ``W`` (D x D), ``mode``, sizes ``d, n, k``,
    the GD ``step`` it is compared with and where that came from, the theory's
    ``target_step`` (None when unknown), a ``label``, the label ``noise`` and the covariance
    ``sigma`` of x (None: I) it was trained with (its in-distribution row and the scaled cases
    have them; its learned step is read on ``range(sigma)``)."""

    V: torch.Tensor
    W: torch.Tensor
    mode: str
    d: int
    n: int
    k: int
    step: float
    step_source: str
    target_step: float | None = None
    eta: float | None = None
    label: str = ""
    noise: float = 0.0
    sigma: np.ndarray | None = None

    @property
    def gd_steps(self) -> int:
        """GD steps the model is compared with: k (cot, looped) or 1 (nocot)."""
        return 1 if self.mode == "nocot" else self.k


def suite_model(V, W, *, mode: str, n: int, k: int, step: float | None = None,
                target_step: float | None = None, eta: float | None = None, label: str = "",
                noise: float = 0.0, sigma=None) -> SuiteModel:
    """A ``SuiteModel`` from parameters; ``step=None`` takes the learned step ``w24_v31``
    (module docstring; on ``range(sigma)`` for a singular training covariance ``sigma``), which
    must be a positive number."""
    check_field("mode", mode)
    V, W, single = as_models(V, W)
    if not single:
        raise ValueError(f"the suite evaluates one model: V, W must be (D, D), got {tuple(V.shape)}")
    V, W = V[0].detach().double().cpu(), W[0].detach().double().cpu()
    d = (V.shape[-1] - 2) // 2
    basis = sigma_spectrum(sigma, d).basis
    if sigma is not None:
        sigma = np.asarray(sigma, dtype=np.float64)
    if step is None:
        source = "mean diagonal of W24 V31" + ("" if basis is None else " on range(Sigma)")
        step = float(w24_v31(V.unsqueeze(0), W.unsqueeze(0), basis)[0])
        if not (math.isfinite(step) and step > 0):
            raise ValueError(f"the model's learned step ({source}) is {step:.4g}, not a "
                             f"positive step: pass step= (--step) to compare it with GD")
    else:
        step, source = check_positive_finite("step", step), "given"
    return SuiteModel(V=V, W=W, mode=mode, d=d, n=check_int("n", n), k=check_int("k", k), step=step,
                      step_source=source, target_step=target_step, eta=eta, label=label, noise=noise, sigma=sigma)


def model_from_run(run, *, step: float | None = None) -> SuiteModel:
    """The ``SuiteModel`` of a run directory (a path or a ``training.load_run`` result): its final
    V, W, mode, n, k, label noise and training covariance; ``target_step`` from its summary's
    ``structure_step``."""
    from .rundir import Run, load_run
    if not isinstance(run, Run):
        run = load_run(run)
    if run.V is None or run.W is None:
        raise ValueError(f"{run.path!r} has no params.pt: the run is not finished (resume it first)")
    c = run.config
    target = None if run.summary is None else run.summary.get("structure_step")
    return suite_model(run.V, run.W, mode=c.mode, n=c.n, k=c.k, step=step, target_step=target, eta=c.eta,
                       label=run.path, noise=c.noise, sigma=c.sigma)


# ------------------------------------------------------------------------------- per-prompt losses
def case_losses(mode: str, V, W, *, n: int, k: int, samples: int, seed: int, case: Case,
                device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    """Per-prompt losses (M, samples) and ``||w*||^2`` (samples,) of (M, D, D) parameters on the
    case's prompts from ``eval_generator(seed)``: ``evaluate.eval_losses`` (at ``w_scale == 1`` the
    numbers of ``evaluate_params``; else the same draws with w* multiplied by ``w_scale``)."""
    return eval_losses(mode, V, W, n=n, k=k, samples=samples, generator=eval_generator(seed, device),
                       sigma=case.sigma, w_scale=case.w_scale, noise=case.label_noise)


def _report(mode: str, V, W, *, model: SuiteModel, k: int, samples: int, seed: int, case: Case, device):
    V, W = torch.as_tensor(V, dtype=torch.float64), torch.as_tensor(W, dtype=torch.float64)
    if V.dim() == 2:
        V, W = V.unsqueeze(0), W.unsqueeze(0)
    losses, norms = case_losses(mode, V, W, n=model.n, k=k, samples=samples, seed=seed, case=case, device=device)
    return loss_reports(losses, norms)[0]


# ------------------------------------------------------------------------------------ the theory
def _isotropic(case: Case, d: int) -> float | None:
    """s when the case's Sigma is exactly ``s I`` (1 for the identity), else None."""
    if case.sigma is None:
        return 1.0
    S = case.sigma
    diag = np.diag(S)
    if np.any(S - np.diag(diag)) or np.any(diag != diag[0]):
        return None
    return float(diag[0])


def theorem_42(step: float, spectrum: SigmaSpectrum, d: int, n: int, gd_steps: int) -> dict:
    """Theorem 4.2's verdict for GD with ``step`` on a covariance with ``spectrum``
    (``evaluate.sigma_spectrum``): ``evaluate.predicted_stability``, i.e.
    ``theory.stability_verdict`` (the interval on ``range(Sigma)``: positive eigenvalues,
    dimension r; docs/theory.md sections 7 and 10), as ``spectrum_interval``, ``spectrum_top``,
    ``eta_top``, ``predicted_stable`` and ``stable_step_bound``; ``loss_bound``:
    ``theory.ood_loss_bound`` on range(Sigma) plus ``(d - r)/2``.  ``spectrum_top_ambient``:
    ``lambda_max(Sigma) (1 + sqrt(d/n))^2``, the top with the ambient d, for comparison: the same
    as ``spectrum_top`` for a non-singular Sigma, above it for a singular one, where it
    overstates the top of S."""
    verdict = predicted_stability(step, spectrum, d, n)
    rank, (lo, hi) = verdict.rank, verdict.interval
    out = {"spectrum_interval": [float(lo), float(hi)], "spectrum_top": float(hi), "eta_top": step * float(hi),
           "predicted_stable": verdict.stable, "stable_step_bound": float(verdict.bound)}
    if rank == 0:
        return dict(out, spectrum_top_ambient=0.0, loss_bound=d / 2)
    positive = [float(v) for v in spectrum.eigenvalues[:rank]]
    loss_bound = theory.ood_loss_bound(step, positive, rank, n, gd_steps)
    ambient = theory.spectrum_interval(positive[:1], d, n)[1]          # the top with d, not r
    return dict(out, spectrum_top_ambient=float(ambient), loss_bound=float(loss_bound) + (d - rank) / 2)


def relative_noise_var(case: Case):
    """The case's label-noise variance over ``w_scale^2``, exactly (theory's number rule): the
    loss with ``w* ~ N(0, c^2 I)`` and noise ``v`` is ``c^2`` times that with ``w* ~ N(0, I)`` and
    noise ``v / c^2`` (docs/theory.md section 16)."""
    return exact_noise_var(case.label_noise) / exact_real("w_scale", case.w_scale) ** 2


def expected_gd_loss(step: float, gd_steps: int, case: Case, d: int, n: int, exact_sigma, *,
                     theory_samples: int, seed: int) -> dict:
    """The expected loss of ``gd_steps`` GD steps with ``step`` on the case (module docstring):
    ``{expected_loss, expected_se, expected_method}``; ``expected_loss`` None when infinite.

    With ``w* ~ N(0, c^2 I)`` and label noise of variance ``v`` the loss is ``c^2`` times the loss
    for ``w* ~ N(0, I)`` and noise ``v / c^2``; with ``Sigma = s I`` GD with step eta is GD with
    step ``eta s`` on ``S_0`` and noise ``v / s`` (docs/theory.md section 16)."""
    c2 = case.w_scale ** 2
    v = case.label_noise ** 2 / c2
    s = _isotropic(case, d)
    if s is not None:
        if s == 0:
            return {"expected_loss": c2 * d / 2, "expected_se": 0.0,
                    "expected_method": "exact: Sigma = 0, GD never moves"}
        if gd_steps <= EXACT_THEORY_MAX_K and 2 * gd_steps <= theory.MAX_EXACT_MOMENT:
            value = c2 * float(numerics.gd_eval_loss_value(d, n, step * s, gd_steps, noise_var=v / s))
            how = "exact theory.gd_eval_loss" + ("" if s == 1 else f" at step eta s, Sigma = s I (s = {s:.4g})")
            return {"expected_loss": value if math.isfinite(value) else None, "expected_se": 0.0,
                    "expected_method": how}
    if gd_steps == 1:
        Sigma = exact_sigma if exact_sigma is not None else sympy.eye(d)
        value = c2 * float(theory.linear_prediction_loss(n, Sigma, exact_real("step", step) * sympy.eye(d),
                                                         noise_var=relative_noise_var(case)))
        return {"expected_loss": value, "expected_se": 0.0, "expected_method": "exact theory.linear_prediction_loss"}
    mc = numerics.eval_loss_mc(d, n, step, gd_steps, samples=theory_samples, seed=derived_seed(seed, "suite-theory"),
                               sigma=case.sigma, noise_var=v)
    how = f"monte_carlo numerics.eval_loss_mc ({theory_samples} prompts)"
    if not math.isfinite(mc["mean"]):
        return {"expected_loss": None, "expected_se": None,
                "expected_method": how + f": infinite ({mc['diverged_frac']:.1%} of prompts diverge)"}
    return {"expected_loss": c2 * mc["mean"], "expected_se": c2 * mc["se"], "expected_method": how}


def unstable_fraction(step: float, case: Case, d: int, n: int, *, samples: int, seed: int) -> float:
    """The sampled share of prompts with ``step * lambda_max(S) >= 2`` (``numerics.sample_gram``
    from the case's Sigma; GD does not contract there)."""
    S = numerics.sample_gram(d, n, samples, seed=derived_seed(seed, "suite-spectrum"), sigma=case.sigma)
    return float(np.mean(step * np.linalg.eigvalsh(S)[:, -1] >= 2))


def nocot_expected(case: Case, model: SuiteModel, exact_sigma) -> float:
    """Exact mean loss on the case of Theorem 3.1's optimum for the model's training distribution,
    ``Gamma^{-1} X y / n`` with ``Gamma = theory.nocot_gamma(d, n, sigma, noise_var=noise^2)``
    (``eta_1 X y / n`` for Sigma = I without noise; ``A = -V31`` of ``theory.nocot_params``):
    ``theory.linear_prediction_loss`` with the case's label noise, times ``w_scale^2``."""
    d, n = model.d, model.n
    Sigma = exact_sigma if exact_sigma is not None else sympy.eye(d)
    trained_on = sigma_spectrum(model.sigma, d, name="the model's training sigma").exact
    V, _ = theory.nocot_params(d, n, trained_on, noise_var=exact_noise_var(model.noise))
    layout = theory.Layout(d)
    A = -V[layout.w, layout.x]
    c2 = case.w_scale ** 2
    return c2 * float(theory.linear_prediction_loss(n, Sigma, A, noise_var=relative_noise_var(case)))


# ------------------------------------------------------------------------------------ the suite
def evaluate_case(model: SuiteModel, case: Case, *, samples: int = DEFAULT_SAMPLES, seed: int = 0,
                  theory_samples: int = DEFAULT_THEORY_SAMPLES, device: str | torch.device = "cpu") -> dict:
    """One case (module docstring): a JSON-ready dict with ``name``, the model's statistics, GD's
    and no-CoT's on the same prompts, Theorem 4.2's verdict, the expected loss and the
    unrecoverable part."""
    samples = check_int("samples", samples)
    theory_samples = check_int("theory_samples", theory_samples)
    seed = check_int("seed", seed, 0)
    device = resolve_device(device)
    d, n = model.d, model.n
    spectrum = sigma_spectrum(case.sigma, d, name=case.name)
    lam, rank, exact = spectrum.eigenvalues, spectrum.rank, spectrum.exact
    run = dict(model=model, samples=samples, seed=seed, case=case, device=device)
    m = _report(model.mode, model.V.unsqueeze(0), model.W.unsqueeze(0), k=model.k, **run)
    gd = _report("cot", *numerics.gd_params(d, model.step), k=model.gd_steps, **run)
    nocot = _report("nocot", *numerics.nocot_params(d, n, model.sigma, noise_var=model.noise ** 2), k=1, **run)
    # Theorem 3.1's optimum for the case's Sigma, noise-free: the training one when they coincide
    same = case.sigma is None and model.sigma is None and not model.noise
    nocot_sigma = nocot if same else _report("nocot", *numerics.nocot_params(d, n, case.sigma), k=1, **run)
    c2 = case.w_scale ** 2
    out = {"name": case.name, "kind": case.kind, "description": case.description, "w_scale": case.w_scale,
           "sigma_eigenvalues": [float(v) for v in lam], "rank": rank, "samples": samples,
           "mean": m["mean"], "se": m["se"], "median": m["median"], "q10": m["q10"], "q90": m["q90"],
           "diverged_frac": m["diverged_frac"],
           "gd_median": gd["median"], "gd_q10": gd["q10"], "gd_q90": gd["q90"], "gd_mean": gd["mean"],
           "gd_diverged_frac": gd["diverged_frac"],
           "nocot_median": nocot["median"], "nocot_q10": nocot["q10"], "nocot_q90": nocot["q90"],
           "nocot_mean": nocot["mean"], "nocot_expected": nocot_expected(case, model, exact),
           "nocot_sigma_median": nocot_sigma["median"],
           "step": model.step, "gd_steps": model.gd_steps}
    out.update(theorem_42(model.step, spectrum, d, n, model.gd_steps))
    out["loss_bound"] *= c2
    out["unstable_frac"] = unstable_fraction(model.step, case, d, n, samples=samples, seed=seed)
    out.update(expected_gd_loss(model.step, model.gd_steps, case, d, n, exact, theory_samples=theory_samples,
                                seed=seed))
    try:
        limit = c2 * float(theory.gd_limit_loss(d, n, exact, noise_var=relative_noise_var(case)))
    except ValueError:                     # noise with n < rank for a Sigma with no closed form
        limit = None
    out.update(unrecoverable=c2 * (d - rank) / 2, limit_loss=limit)
    out["reports"] = {"model": report_dict(m), "gd": report_dict(gd), "nocot": report_dict(nocot),
                      "nocot_sigma": report_dict(nocot_sigma)}
    return out


def evaluate_suite(model: SuiteModel, cases=None, *, samples: int = DEFAULT_SAMPLES, seed: int = 0,
                   theory_samples: int = DEFAULT_THEORY_SAMPLES, device: str | torch.device = "cpu",
                   reference: bool = True, threads: int | None = None) -> dict:
    """``model`` on ``cases`` (a list of ``Case``; None: ``standard_suite`` of the model's d,
    training covariance and label noise): ``{"model": {...}, "samples", "seed",
    "theory_samples", "suite_seed", "in_distribution": case dict or None, "cases": [case
    dicts]}`` (``evaluate_case``).  ``reference`` adds the in-distribution row (the model's
    training covariance and noise).  Every case uses the prompts of ``seed``.  ``threads``: torch CPU
    threads while it runs (None: ``config.DEFAULT_CPU_THREADS`` on a CPU, as for training: the
    rollouts are small products that lose much when another process holds a core)."""
    from .config import DEFAULT_CPU_THREADS
    from .engine import torch_threads
    if threads is None and resolve_device(device).type == "cpu":
        threads = DEFAULT_CPU_THREADS
    with torch_threads(None if threads is None else check_int("threads", threads)):
        return _evaluate_suite(model, cases, samples=samples, seed=seed, theory_samples=theory_samples,
                               device=device, reference=reference)


def _evaluate_suite(model, cases, *, samples, seed, theory_samples, device, reference) -> dict:
    cases = standard_suite(model.d, sigma=model.sigma, noise=model.noise) if cases is None else list(cases)
    names = [c.name for c in cases]
    for c in cases:
        if not isinstance(c, Case):
            raise ValueError(f"cases must be Case objects, got {type(c).__name__}")
        if names.count(c.name) > 1:
            raise ValueError(f"case names must be unique, {c.name!r} appears {names.count(c.name)} times")
    options = dict(samples=samples, seed=seed, theory_samples=theory_samples, device=device)
    return {
        "model": {"label": model.label, "mode": model.mode, "d": model.d, "n": model.n, "k": model.k,
                  "eta": model.eta, "learned_step": model.step, "step_source": model.step_source,
                  "target_step": model.target_step, "gd_steps": model.gd_steps, "noise": model.noise,
                  "sigma": None if model.sigma is None else model.sigma.tolist()},
        "samples": samples, "seed": seed, "theory_samples": theory_samples, "suite_seed": SUITE_SEED,
        "in_distribution": (evaluate_case(model, in_distribution_case(model.noise, model.sigma), **options)
                            if reference else None),
        "cases": [evaluate_case(model, case, **options) for case in cases],
    }


def evaluate_run(run, *, suite: str = "standard", sigmas=(), samples: int = DEFAULT_SAMPLES, seed: int = 0,
                 theory_samples: int = DEFAULT_THEORY_SAMPLES, step: float | None = None,
                 device: str | torch.device = "cpu", reference: bool = True, threads: int | None = None) -> dict:
    """A run directory's model (any mode) on the suite named ``suite`` (``SUITES``) plus one case
    per covariance in ``sigmas`` (file paths, read by ``load_covariance``, or ``(name, matrix)``
    pairs); ``evaluate_suite``'s dict with ``"run"`` and ``"suite"`` added."""
    model = model_from_run(run, step=step)
    if suite not in SUITES:
        raise ValueError(f"suite must be one of {', '.join(SUITES)}, got {suite!r}")
    cases = SUITES[suite](model.d, SUITE_SEED, sigma=model.sigma, noise=model.noise)
    for item in sigmas:
        if isinstance(item, (str, os.PathLike)):
            cases.append(load_covariance(item, model.d))
        else:
            name, sigma = item
            cases.append(covariance_case(name, sigma, model.d))
    if not cases:
        raise ValueError("no cases to evaluate: the suite is empty and no covariance was given")
    out = evaluate_suite(model, cases, samples=samples, seed=seed, theory_samples=theory_samples, device=device,
                         reference=reference, threads=threads)
    return dict({"run": model.label, "suite": suite}, **out)


# ------------------------------------------------------------------------------------ the table
def _num(x) -> str:
    if x is None:
        return "-"
    if isinstance(x, float) and math.isinf(x):
        return "inf"
    return f"{x:.4g}"


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


#: The table's columns: title and the text of a case dict's cell.
TABLE_COLUMNS = (
    ("median", lambda c: _num(c["median"])), ("q10", lambda c: _num(c["q10"])), ("q90", lambda c: _num(c["q90"])),
    ("mean", lambda c: _num(c["mean"])), ("div%", lambda c: _pct(c["diverged_frac"])),
    ("GD med", lambda c: _num(c["gd_median"])), ("noCoT med", lambda c: _num(c["nocot_median"])),
    ("eta*top", lambda c: f"{c['eta_top']:.3g}"),
    ("Thm4.2", lambda c: "stable" if c["predicted_stable"] else "UNSTABLE"),
    ("unst%", lambda c: _pct(c["unstable_frac"])), ("E[GD]", lambda c: _num(c["expected_loss"])),
    ("how", lambda c: "-" if not c["expected_method"] else "MC" if c["expected_method"].startswith("monte") else "ex"),
    ("unrecov", lambda c: _num(c["unrecoverable"])),
)


def _aligned(rows: list[list[str]]) -> list[str]:
    """Rows of cells as lines: the first column left-aligned, the others right-aligned, each
    column as wide as its widest cell."""
    widths = [max(len(row[j]) for row in rows) for j in range(len(rows[0]))]
    return ["  ".join([row[0].ljust(widths[0])] + [cell.rjust(w) for cell, w in zip(row[1:], widths[1:])])
            for row in rows]


def format_table(result: dict) -> str:
    """The suite as a plain-text table: one row per case (the in-distribution reference first),
    a header naming the model and the legend below."""
    m = result["model"]
    head = (f"{result.get('run') or m['label'] or 'model'}: mode {m['mode']}, d {m['d']}, n {m['n']}, k {m['k']}"
            + (f", trained eta {m['eta']:g}" if m.get("eta") is not None else "")
            + f"; learned step {m['learned_step']:.4g} ({m['step_source']})"
            + (f", theory's {m['target_step']:.4g}" if m.get("target_step") is not None else "")
            + f"; {result['samples']} prompts per case, seed {result['seed']}")
    rows = [["case"] + [title for title, _ in TABLE_COLUMNS]]
    if result.get("in_distribution"):
        rows.append(["(in distribution)"] + [cell(result["in_distribution"]) for _, cell in TABLE_COLUMNS])
    rows += [[case["name"]] + [cell(case) for _, cell in TABLE_COLUMNS] for case in result["cases"]]
    header, *body = _aligned(rows)
    lines = [head, header, "-" * len(header)] + body
    gd_what = f"{m['gd_steps']}-step GD with the model's step {m['learned_step']:.4g}"
    lines += ["",
              f"median q10 q90 mean div%: the model's loss (1/2)||w_hat - w*||^2 over prompts, % diverged; "
              f"GD med: {gd_what}; noCoT med: Theorem 3.1's optimum (eta_1 S w*); same prompts in a row.",
              "eta*top: step x top of Theorem 4.2's predicted spectrum of S (on range(Sigma) when singular); "
              "Thm4.2: stable iff < 2; unst%: sampled prompts with step x lambda_max(S) >= 2"
              + (" (one step cannot blow up: UNSTABLE means the step overshoots)." if m["gd_steps"] == 1 else "."),
              f"E[GD]: expected loss of {gd_what} (how: ex = exact theory, MC = Monte Carlo, "
              f"{result['theory_samples']} prompts); unrecov: (d - rank Sigma)/2 x scale-w^2, never learned."]
    if m.get("sigma") is not None or m.get("noise"):
        lines.append("Trained on its own distribution (Sigma_train" + (f", label noise s = {m['noise']:g}" if m.get("noise")
                     else "") + "): the in-distribution row, scale-x (Sigma = c^2 Sigma_train), scale-w and noisy "
                     "use it.")
    return "\n".join(lines)
