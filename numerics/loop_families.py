"""Algorithm families to compare a looped model with, in float64 (docs/theory.md section 18).

Each family maps prompts ``(X, y)`` and a few scalars to the estimates after ``0 .. k`` loops,
``(B, k + 1, d)``, starting from ``w_0 = 0`` as the looped model does:

* ``gd`` (``eta``): k GD steps, ``numerics.gd_iterates``.
* ``stretched_gd`` (``c``, ``u``): ``u`` times k GD steps of step ``c`` (the isotropic looped
  model ``(V31, W13) = (a I, b I)``, ``numerics.looped_rescaled_optimum``).
* ``preconditioned_gd`` (``eta``, ``alpha``): ``w <- w - P (S w - S w*)`` with
  ``P = eta Sigma^(-alpha)`` (the pseudo-power on ``range(Sigma)``), a preconditioner adapted to the
  training distribution (Gatmiry et al. 2024); ``alpha = 0`` is GD.  One loop implements it
  (``theory.loop_family_params("preconditioned", d, P=P)``).
* ``gd++`` (``gamma``, ``eta``): the looped model with ``theory.loop_family_params("gd++", ...)``,
  GD with von Oswald et al. 2023's input transformation ``x_j <- (I - gamma S) x_j`` (one loop
  is one step, ``theory.prove_loop_step``).
* ``heavy_ball`` (``eta``, ``beta``): GD with momentum (Polyak),
  ``w_{t+1} = w_t - eta (S w_t - S w*) + beta (w_t - w_{t-1})``, ``w_{-1} = w_0 = 0``: an
  accelerated method whose error after k loops is a polynomial of degree k in S, as GD's is.
* ``newton_schulz`` (``alpha``, ``u``): a reference one loop cannot implement (Fu et al. 2024):
  ``Y_1 = alpha I``, ``Y_{t+1} = Y_t (2 I - S Y_t)``, the estimate after t loops ``u Y_t S w*``.

``fit_family`` finds a family's member with the least mean loss after k loops on given prompts
(its scalars shared by all loops), and its functional deviation from given estimates (a learned
model's): ``E ||w_t^learned - w_t^family||^2 / E ||w_t^learned - w*||^2`` per loop, over the
prompts neither diverges on.  Losses are Monte Carlo over the given prompts (mean with standard
error, median); GD's and stretched GD's exact values are ``theory.gd_eval_loss`` and
``numerics.looped_rescaled_optimum``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import scipy.optimize
import sympy

import theory
from theory.validation import check_int

from .checks import _covariance_eigen, check_prompt, check_seed
from .gd import gd_iterates
from .lsa import looped_rollout
from .montecarlo import diverged_mask, loss_report
from .rotations import haar_orthogonal

__all__ = ["FAMILIES", "FamilyFit", "family_iterates", "family_params", "fit_family", "functional_deviation",
           "loss_summary", "per_loop_losses", "symmetry_floor", "symmetry_group_sample"]

FAMILIES = {
    "gd": ("eta",),
    "stretched_gd": ("c", "u"),
    "preconditioned_gd": ("eta", "alpha"),
    "gd++": ("gamma", "eta"),
    "newton_schulz": ("alpha", "u"),
    "heavy_ball": ("eta", "beta"),
}


def _check_family(name: str, params) -> dict:
    if name not in FAMILIES:
        raise ValueError(f"family must be one of {', '.join(FAMILIES)}, got {name!r}")
    names = FAMILIES[name]
    if not isinstance(params, dict):
        values = list(params) if isinstance(params, (list, tuple, np.ndarray)) else [params]
        if len(values) != len(names):
            raise ValueError(f"family {name} takes {len(names)} scalar(s) ({', '.join(names)}), got {len(values)}")
        params = dict(zip(names, values))
    if set(params) != set(names):
        raise ValueError(f"family {name} takes {', '.join(names)}, got {', '.join(sorted(params)) or 'nothing'}")
    out = {}
    for key in names:
        raw = params[key]
        value = None
        if not isinstance(raw, (bool, str, np.bool_)) and np.ndim(raw) == 0:
            try:
                value = float(raw)
            except (TypeError, ValueError):
                value = None
        if value is None or not np.isfinite(value):
            raise ValueError(f"{name}'s {key} must be a finite real number, got {raw!r}")
        out[key] = value
    return out


def _sigma_power(sigma, d: int, alpha: float) -> np.ndarray:
    """``Sigma^(-alpha)`` on ``range(Sigma)`` (0 on its null space); ``I`` for ``sigma=None``."""
    if sigma is None:
        return np.eye(d)
    _, lam, Q = _covariance_eigen(sigma, d, "sigma")
    Q = np.eye(d) if Q is None else Q
    power = np.zeros(d)
    power[lam > 0] = lam[lam > 0] ** (-alpha)
    return (Q * power) @ Q.T


@lru_cache(maxsize=None)
def _family_params_function(family: str, d: int):
    if family == "gd++":
        gamma, eta = sympy.symbols("gamma eta")
        V, W = theory.loop_family_params("gd++", d, gamma=gamma, eta=eta)
        return sympy.lambdify((gamma, eta), (V, W), modules="numpy")
    P = sympy.MatrixSymbol("P", d, d)
    V, W = theory.loop_family_params("preconditioned", d, P=P)
    return sympy.lambdify(P, (V, W), modules="numpy")


def family_params(name: str, d: int, params, *, sigma=None) -> tuple[np.ndarray, np.ndarray]:
    """The float64 ``(V, W)`` of a family one loop implements ("gd", "preconditioned_gd",
    "gd++"), read off ``theory.loop_family_params``."""
    d = check_int("d", d)
    p = _check_family(name, params)
    if name == "gd++":
        V, W = _family_params_function("gd++", d)(p["gamma"], p["eta"])
    elif name in ("gd", "preconditioned_gd"):
        P = p["eta"] * (_sigma_power(sigma, d, p["alpha"]) if name == "preconditioned_gd" else np.eye(d))
        V, W = _family_params_function("preconditioned", d)(P)
    else:
        raise ValueError(f"{name} is a reference family: the toolkit has no (V, W) whose loop is its step")
    return np.array(V, dtype=np.float64), np.array(W, dtype=np.float64)


def family_iterates(name: str, X, y, params, k: int, *, sigma=None) -> np.ndarray:
    """The estimates of family ``name`` (module docstring) after ``0 .. k`` loops on prompts
    ``X`` (``(B, d, n)``), ``y`` (``(B, n)``): shape ``(B, k + 1, d)``.  ``params``: a mapping of
    the family's scalars (``FAMILIES[name]``) or a sequence in that order; ``sigma``: the
    training covariance (used by ``preconditioned_gd``).

    >>> X, y = np.array([[[2.0]]]), np.array([[4.0]])
    >>> family_iterates("gd", X, y, {"eta": 0.125}, 3)[0, :, 0].tolist()
    [0.0, 1.0, 1.5, 1.75]
    >>> family_iterates("newton_schulz", X, y, {"alpha": 0.125, "u": 1.0}, 3)[0, :, 0].tolist()
    [0.0, 1.0, 1.5, 1.875]
    """
    X, y = check_prompt(X, y)
    k = check_int("k", k, 0)
    p = _check_family(name, params)
    d, n = X.shape[-2:]
    with np.errstate(over="ignore", invalid="ignore"):
        if name in ("gd", "stretched_gd"):
            step, scale = (p["eta"], 1.0) if name == "gd" else (p["c"], p["u"])
            if step <= 0:
                return np.full(X.shape[:-2] + (k + 1, d), np.inf)
            return scale * gd_iterates(X, y, step, k)
        if name == "gd++":
            return looped_rollout(X, y, *family_params(name, d, p), k)
        S = X @ np.swapaxes(X, -1, -2) / n
        b = (X @ y[..., None])[..., 0] / n
        out = np.zeros(X.shape[:-2] + (k + 1, d))
        if name == "preconditioned_gd":
            P = p["eta"] * _sigma_power(sigma, d, p["alpha"])
            w = out[..., 0, :]
            for t in range(k):
                w = w - ((S @ w[..., None])[..., 0] - b) @ P.T
                out[..., t + 1, :] = w
            return out
        if name == "heavy_ball":
            w = previous = out[..., 0, :]
            for t in range(k):
                w, previous = w - p["eta"] * ((S @ w[..., None])[..., 0] - b) + p["beta"] * (w - previous), w
                out[..., t + 1, :] = w
            return out
        Y = p["alpha"] * np.broadcast_to(np.eye(d), S.shape)
        for t in range(k):
            out[..., t + 1, :] = p["u"] * (Y @ b[..., None])[..., 0]
            Y = Y @ (2 * np.eye(d) - S @ Y)
        return out


def per_loop_losses(iterates: np.ndarray, w_star: np.ndarray) -> np.ndarray:
    """``(1/2) ||w_t - w*||^2`` per prompt and loop, ``(B, k + 1)``; non-finite -> inf."""
    with np.errstate(over="ignore", invalid="ignore"):
        losses = 0.5 * np.sum((iterates - w_star[:, None, :]) ** 2, axis=-1)
    losses[~np.isfinite(losses)] = np.inf
    return losses


def loss_summary(iterates: np.ndarray, w_star: np.ndarray) -> dict:
    """Estimates ``(B, k + 1, d)`` judged on their prompts' ``w*`` (Monte Carlo): after k loops
    ``median``, ``mean`` and ``se`` over the prompts that did not diverge
    (``numerics.diverged_mask``), ``diverged_frac``; per loop ``curve_median`` and ``curve_mean``."""
    losses = per_loop_losses(iterates, w_star)
    w2 = np.sum(w_star ** 2, axis=-1)
    reports = [loss_report(losses[:, t], diverged_mask(2 * losses[:, t], w2)) for t in range(losses.shape[1])]
    last = reports[-1]
    return {"median": last.median, "mean": last.mean_without_diverged, "se": last.se_without_diverged,
            "diverged_frac": last.diverged_frac, "curve_median": [r.median for r in reports],
            "curve_mean": [r.mean_without_diverged for r in reports]}


def functional_deviation(learned: np.ndarray, family: np.ndarray, w_star: np.ndarray, *,
                         statistic: str = "mean") -> np.ndarray:
    """``E ||w_t^learned - w_t^family||^2 / E ||w_t^learned - w*||^2`` per loop ``t >= 1``
    (``(k,)``), over the prompts on which neither diverges (``numerics.diverged_mask`` on the
    last loop).  ``statistic="median"``: the ratio of the medians instead, for heavy tails."""
    if statistic not in ("mean", "median"):
        raise ValueError(f"statistic must be 'mean' or 'median', got {statistic!r}")
    average = np.mean if statistic == "mean" else np.median
    w2 = np.sum(w_star ** 2, axis=-1)
    with np.errstate(over="ignore", invalid="ignore"):
        keep = ~(diverged_mask(2 * per_loop_losses(learned, w_star)[:, -1], w2)
                 | diverged_mask(2 * per_loop_losses(family, w_star)[:, -1], w2))
        if not keep.any():
            return np.full(learned.shape[1] - 1, np.inf)
        num = average(np.sum((learned[keep, 1:] - family[keep, 1:]) ** 2, axis=-1), axis=0)
        den = average(np.sum((learned[keep, 1:] - w_star[keep, None, :]) ** 2, axis=-1), axis=0)
    return num / den


@dataclass(frozen=True)
class FamilyFit:
    """A family's member fitted on given prompts (``fit_family``).  ``params``: the fitted
    scalars; ``mean``, ``se``, ``median``, ``diverged_frac``: its loss after k loops on the prompts
    (Monte Carlo); ``curve_mean``, ``curve_median``: per loop ``0 .. k``; ``deviation``: the
    functional deviation from the target per loop ``1 .. k`` (None without a target), and
    ``deviation_median`` the same with medians (heavy tails make the means noisy); ``exact``: the
    member's exact in-distribution mean loss where a closed form exists (GD: ``theory.gd_eval_loss``,
    label noise included; stretched GD without noise: ``numerics.rescaled_gd_loss_value``; Sigma = I
    and ``2k <= theory.MAX_EXACT_MOMENT``), else None."""

    name: str
    params: dict
    mean: float
    se: float
    median: float
    diverged_frac: float
    curve_mean: list
    curve_median: list
    deviation: list | None = None
    deviation_median: list | None = None
    exact: float | None = None
    iterates: np.ndarray | None = field(default=None, repr=False, compare=False)


_STARTS = {
    "gd": [(0.4,), (0.2,), (0.6,)],
    "stretched_gd": [(0.45, 1.05), (0.3, 1.0)],
    "preconditioned_gd": [(0.4, 0.0), (0.4, 0.5), (0.3, 1.0)],
    "gd++": [(0.1, 0.4), (0.02, 0.45), (0.2, 0.3)],
    "newton_schulz": [(0.2, 1.0), (0.4, 1.0)],
    "heavy_ball": [(0.4, 0.2), (0.6, 0.4)],
}


def fit_family(name: str, X, y, w_star, k: int, *, sigma=None, target: np.ndarray | None = None,
               fit_on: int | None = 2000, criterion: str = "loss", noise_var: float = 0.0) -> FamilyFit:
    """The member of family ``name`` with the least mean loss ``(1/2) ||w_k - w*||^2`` on the
    prompts (``criterion="loss"``: the family's best member), or with the least functional
    deviation from ``target`` after k loops (``criterion="deviation"``: the member closest to the
    learned model), by Nelder-Mead from a few starts on the first ``fit_on`` prompts (a member that
    diverges on a prompt scores its capped loss), then measured on all of them.  ``target``: a
    learned model's estimates ``(B, k + 1, d)`` on the same prompts, for ``deviation``;
    ``noise_var``: the prompts' label-noise variance, for ``exact``."""
    X, y = check_prompt(X, y)
    k = check_int("k", k, 1)
    w_star = np.asarray(w_star, dtype=np.float64)
    if name not in FAMILIES:
        raise ValueError(f"family must be one of {', '.join(FAMILIES)}, got {name!r}")
    if w_star.shape != X.shape[:-2] + (X.shape[-2],) or X.ndim != 3:
        raise ValueError(f"w_star must have shape {X.shape[:-2] + (X.shape[-2],)} for X of shape {X.shape} "
                         f"(a batch of prompts), got {w_star.shape}")
    m = X.shape[0] if fit_on is None else min(fit_on, X.shape[0])
    cap = 0.5 * 1e6 * (1 + np.sum(w_star[:m] ** 2, axis=-1))

    if criterion not in ("loss", "deviation"):
        raise ValueError(f"criterion must be 'loss' or 'deviation', got {criterion!r}")
    if criterion == "deviation" and target is None:
        raise ValueError("criterion='deviation' needs the target's estimates")

    def objective(vector) -> float:
        if criterion == "deviation":
            dev = functional_deviation(target[:m, [0, -1]], family_iterates(name, X[:m], y[:m], vector, k,
                                                                              sigma=sigma)[:, [0, -1]], w_star[:m])
            return float(dev[-1]) if np.isfinite(dev[-1]) else 1e6
        it = family_iterates(name, X[:m], y[:m], vector, k, sigma=sigma)[:, -1]
        with np.errstate(over="ignore", invalid="ignore"):
            loss = 0.5 * np.sum((it - w_star[:m]) ** 2, axis=-1)
        loss = np.where(np.isfinite(loss), np.minimum(loss, cap), cap)
        return float(loss.mean())

    best = None
    for start in _STARTS[name]:
        result = scipy.optimize.minimize(objective, np.array(start), method="Nelder-Mead",
                                         options={"xatol": 1e-5, "fatol": 1e-7, "maxiter": 400})
        if best is None or result.fun < best.fun:
            best = result
    params = dict(zip(FAMILIES[name], (float(v) for v in best.x)))
    iterates = family_iterates(name, X, y, params, k, sigma=sigma)
    summary = loss_summary(iterates, w_star)
    deviation = None if target is None else functional_deviation(target, iterates, w_star).tolist()
    robust = None if target is None else functional_deviation(target, iterates, w_star, statistic="median").tolist()
    exact = _exact_loss(name, params, X.shape[-2], X.shape[-1], k, sigma, noise_var)
    return FamilyFit(name, params, summary["mean"], summary["se"], summary["median"], summary["diverged_frac"],
                     summary["curve_mean"], summary["curve_median"], deviation, robust, exact, iterates)


def _exact_loss(name: str, params: dict, d: int, n: int, k: int, sigma, noise_var: float) -> float | None:
    """The exact mean loss of a GD or stretched-GD member (``FamilyFit.exact``), or None."""
    from .exact import gd_eval_loss_value
    from .optimize import rescaled_gd_loss_value
    if sigma is not None or 2 * k > theory.MAX_EXACT_MOMENT:
        return None
    if name == "gd" and params["eta"] > 0:
        return float(gd_eval_loss_value(d, n, params["eta"], k, noise_var=noise_var))
    if name == "stretched_gd" and not noise_var:
        return rescaled_gd_loss_value(d, n, params["c"], params["u"], k)
    return None


def symmetry_group_sample(sigma, d: int, size: int, seed) -> np.ndarray:
    """``size`` random orthogonal ``Q`` (``(size, d, d)``) from the symmetry group of the prompt
    distribution: ``x ~ N(0, Sigma)``, ``w* ~ N(0, I)`` are invariant under ``x -> Q x``,
    ``w* -> Q w*`` exactly when ``Q Sigma Q^T = Sigma``.  ``sigma=None`` or a multiple of ``I``:
    Haar on ``O(d)`` (``numerics.haar_orthogonal``); otherwise Haar on the orthogonal group of each
    eigenspace of Sigma (sign flips for simple eigenvalues)."""
    d = check_int("d", d)
    size = check_int("size", size, 1)
    rng = check_seed(seed)
    if sigma is None:
        return haar_orthogonal(rng.standard_normal((size, d, d)))
    _, lam, Q = _covariance_eigen(sigma, d, "sigma")
    Q = np.eye(d) if Q is None else Q
    order = np.argsort(lam)
    lam, Q = lam[order], Q[:, order]
    out = np.zeros((size, d, d))
    start = 0
    scale = max(1.0, float(np.max(np.abs(lam))))
    while start < d:                                   # eigenspaces: equal eigenvalues up to round-off
        stop = start + 1
        while stop < d and abs(lam[stop] - lam[start]) <= 1e-12 * scale:
            stop += 1
        m = stop - start
        block = haar_orthogonal(rng.standard_normal((size, m, m)))
        out[:, start:stop, start:stop] = block
        start = stop
    return Q @ out @ Q.T


def symmetry_floor(estimates, X, y, w_star, *, sigma=None, rotations: int = 16, seed=0) -> dict:
    """The least functional deviation from a model that any algorithm equivariant under the
    prompt distribution's symmetries can have (``symmetry_group_sample``; every family in
    ``FAMILIES`` is such an algorithm), per loop ``1 .. k``.

    ``estimates(X, y)`` gives the model's ``(B, k + 1, d)`` estimates.  Since the distribution
    is invariant, the closest equivariant algorithm in mean square is the group average
    ``g_bar(X) = E_Q Q^T g(Q X, y)``, and its deviation is ``E ||g - g_bar||^2 / E ||g - w*||^2``.
    With ``m = rotations`` sampled ``Q`` per prompt, ``E ||g - g_bar_m||^2 = (1 + 1/m)
    E ||g - g_bar||^2`` (the same invariance), so the floor is the measured ratio divided by
    ``1 + 1/m`` (Monte Carlo; prompts on which the model diverges, on them or on a rotated copy, are
    left out and counted in ``excluded``).  Returns
    ``{"floor": [per loop], "equivariance_error": [E ||g(X) - Q^T g(Q X)||^2 / E ||g - w*||^2
    per loop, for one Q per prompt], "rotations": m, "prompts", "excluded", "averaged_median",
    "averaged_mean"}``: a model that is equivariant has both 0; ``averaged_*`` is the loss after k
    loops of the group average ``g_bar_m`` (an equivariant algorithm, not a loop of the layer; by
    convexity and invariance its mean is at most the model's as m grows)."""
    X, y = check_prompt(X, y)
    rotations = check_int("rotations", rotations, 1)
    w_star = np.asarray(w_star, dtype=np.float64)
    B, d = X.shape[0], X.shape[-2]
    g = np.asarray(estimates(X, y), dtype=np.float64)
    rng = check_seed(seed)
    total = np.zeros_like(g)
    first = None
    w2 = np.sum(w_star ** 2, axis=-1)
    bad = np.zeros(B, dtype=bool)
    for _ in range(rotations):
        Q = symmetry_group_sample(sigma, d, B, rng)
        with np.errstate(over="ignore", invalid="ignore"):
            back = np.einsum("bji,btj->bti", Q, np.asarray(estimates(Q @ X, y), dtype=np.float64))
            bad |= diverged_mask(np.sum((back[:, -1] - w_star) ** 2, axis=-1), w2)
        total += np.where(np.isfinite(back), back, 0.0)
        if first is None:
            first = back
    g_bar = total / rotations
    with np.errstate(over="ignore", invalid="ignore"):
        err = np.sum((g - w_star[:, None, :]) ** 2, axis=-1)
        keep = ~diverged_mask(err[:, -1], w2) & ~bad
        den = np.mean(err[keep, 1:], axis=0)
        floor = np.mean(np.sum((g[keep, 1:] - g_bar[keep, 1:]) ** 2, axis=-1), axis=0) / den / (1 + 1 / rotations)
        single = np.mean(np.sum((g[keep, 1:] - first[keep, 1:]) ** 2, axis=-1), axis=0) / den
        averaged = 0.5 * np.sum((g_bar[keep, -1] - w_star[keep]) ** 2, axis=-1)
    return {"floor": floor.tolist(), "equivariance_error": single.tolist(), "rotations": rotations,
            "prompts": int(keep.sum()), "excluded": int(B - keep.sum()),
            "averaged_median": float(np.median(averaged)), "averaged_mean": float(np.mean(averaged))}
