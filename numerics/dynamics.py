"""The reduced training dynamics in float64 (docs/theory.md section 6, Theorem 4.1).

The isotropic reduction ``V31 = a I``, ``W13 = b I``, ``W24 = -1`` turns the CoT population loss
into a polynomial ``L(a, b)`` (``theory.reduced``) whose coefficients are the expectations
``E tr(S^2 P_i^2)``, ``E tr(S^2 P_i)``, ``E tr(S^2)``, ``P_i = I - (I - eta S)^i``.  Here:

* the coefficients as floats, exact (from the Wishart moments) or by Monte Carlo with standard
  errors (``reduced_coefficient_values``);
* ``L``, its gradient and Hessian, lambdified from the theory's symbolic loss (not retyped);
* gradient flow ``(a', b') = -grad L(a, b)`` by ``scipy.integrate.solve_ivp`` (``gradient_flow``);
* the two stages and their times (``stage_times``).

numpy and scipy only: importing this module does not import torch.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import sympy
from scipy.integrate import solve_ivp

from theory.reduced import (reduced_argmin_a, reduced_coefficients, reduced_loss_symbolic,
                            reduced_moment_symbols, reduced_symbols)
from theory.validation import check_finite, check_int, check_positive_finite
from theory.wishart import MAX_EXACT_MOMENT

__all__ = ["gradient_flow", "reduced_argmin_a_value", "reduced_coefficient_values",
           "reduced_coefficients_exact", "reduced_coefficients_mc", "reduced_gradient_value",
           "reduced_hessian_value", "reduced_loss_value", "stage_times"]

_ETA = sympy.Symbol("eta")


def _coefficient_dict(d, n, eta, k, method, samples, A_i, B_i, C, se_A_i, se_B_i, se_C,
                      se_A, se_B) -> dict:
    return {"method": method, "d": d, "n": n, "eta": eta, "k": k, "samples": samples,
            "tr_S2_P2": np.asarray(A_i, dtype=float), "tr_S2_P": np.asarray(B_i, dtype=float),
            "tr_S2": float(C),
            "se_tr_S2_P2": np.asarray(se_A_i, dtype=float), "se_tr_S2_P": np.asarray(se_B_i, dtype=float),
            "se_tr_S2": float(se_C),
            "A": float(np.sum(A_i)), "B": float(np.sum(B_i)), "C": float(k * C),
            "se_A": float(se_A), "se_B": float(se_B), "se_C": float(k * se_C)}


def reduced_coefficients_exact(d: int, n: int, eta: float, k: int) -> dict:
    """The coefficients of the reduced loss (docs/theory.md section 6) as float64, from the exact
    values of ``theory.reduced.reduced_coefficients`` (needs ``2k <= MAX_EXACT_MOMENT``).

    Returns a dict: ``tr_S2_P2[i] = E tr(S^2 P_i^2)``, ``tr_S2_P[i] = E tr(S^2 P_i)`` (arrays of
    length k), ``tr_S2 = E tr(S^2)``, the sums ``A``, ``B`` and ``C = k E tr(S^2)`` of
    ``theory.reduced.reduced_gram``, standard errors ``se_*`` (all 0 here), ``method = "exact"``,
    ``samples = 0`` and the arguments.
    """
    d = check_int("d", d, 1)
    n = check_int("n", n, 1)
    k = check_int("k", k, 1)
    eta = check_positive_finite("eta", eta)
    exact = reduced_coefficients(d, n, eta, k)
    A, B, C = reduced_moment_symbols(k)
    A_i = [float(exact[x]) for x in A]
    B_i = [float(exact[x]) for x in B]
    zeros = np.zeros(k)
    return _coefficient_dict(d, n, eta, k, "exact", 0, A_i, B_i, float(exact[C]), zeros, zeros,
                             0.0, 0.0, 0.0)


def reduced_coefficients_mc(d: int, n: int, eta: float, k: int, *, samples: int, seed: int,
                            chunk: int = 20000) -> dict:
    """Monte Carlo estimates of the reduced-loss coefficients (docs/theory.md section 6) with standard
    errors: ``samples`` draws of ``S = X X^T / n`` (``X`` a ``d x n`` standard Gaussian matrix,
    ``numpy.random.default_rng(seed)``), each giving ``tr(S^2 P_i^2)``, ``tr(S^2 P_i)`` and
    ``tr(S^2)`` from the eigenvalues of S.  Same keys as ``reduced_coefficients_exact``, with
    ``method = "monte_carlo"``; ``se_A`` and ``se_B`` are the standard errors of the sums over i
    (computed per sample, so the correlation between steps is accounted for).
    """
    d = check_int("d", d, 1)
    n = check_int("n", n, 1)
    k = check_int("k", k, 1)
    eta = check_positive_finite("eta", eta)
    samples = check_int("samples", samples, 2)
    seed = check_int("seed", seed, 0)
    chunk = check_int("chunk", chunk, 1)
    rng = np.random.default_rng(seed)
    powers = np.arange(k)
    # Per sample: the 2k + 3 quantities A_0..A_{k-1}, B_0..B_{k-1}, C, sum A, sum B.
    total = np.zeros(2 * k + 3)
    total_sq = np.zeros(2 * k + 3)
    done = 0
    while done < samples:
        m = min(chunk, samples - done)
        X = rng.standard_normal((m, d, n))
        lam = np.linalg.eigvalsh(X @ X.transpose(0, 2, 1) / n)           # (m, d)
        P = 1.0 - (1.0 - eta * lam[:, None, :]) ** powers[None, :, None]  # (m, k, d)
        lam2 = lam[:, None, :] ** 2
        A_i = np.sum(lam2 * P ** 2, axis=2)
        B_i = np.sum(lam2 * P, axis=2)
        C = np.sum(lam ** 2, axis=1)
        q = np.concatenate([A_i, B_i, C[:, None], A_i.sum(1, keepdims=True),
                            B_i.sum(1, keepdims=True)], axis=1)
        total += q.sum(0)
        total_sq += (q ** 2).sum(0)
        done += m
    mean = total / samples
    var = np.maximum(total_sq / samples - mean ** 2, 0.0) * samples / (samples - 1)
    se = np.sqrt(var / samples)
    return _coefficient_dict(d, n, eta, k, "monte_carlo", samples, mean[:k], mean[k:2 * k],
                             mean[2 * k], se[:k], se[k:2 * k], se[2 * k], se[2 * k + 1],
                             se[2 * k + 2])


def reduced_coefficient_values(d: int, n: int, eta: float, k: int, *, method: str = "auto",
                               samples: int = 400_000, seed: int = 0) -> dict:
    """The reduced-loss coefficients by ``method``: ``"exact"`` (Wishart moments, needs
    ``2k <= MAX_EXACT_MOMENT``), ``"monte_carlo"`` (``samples`` draws, standard errors reported)
    or ``"auto"`` (exact when available, else Monte Carlo).  docs/theory.md section 6.
    """
    if method not in ("auto", "exact", "monte_carlo"):
        raise ValueError(f"method must be 'auto', 'exact' or 'monte_carlo', got {method!r}")
    k_checked = check_int("k", k, 1)
    if method == "exact" or (method == "auto" and 2 * k_checked <= MAX_EXACT_MOMENT):
        return reduced_coefficients_exact(d, n, eta, k)
    return reduced_coefficients_mc(d, n, eta, k, samples=samples, seed=seed)


def _substitution(coeffs: dict) -> dict:
    k = check_int("k", coeffs["k"], 1)
    A, B, C = reduced_moment_symbols(k)
    subs = {_ETA: float(coeffs["eta"]), C: float(coeffs["tr_S2"])}
    subs.update({x: float(v) for x, v in zip(A, coeffs["tr_S2_P2"])})
    subs.update({x: float(v) for x, v in zip(B, coeffs["tr_S2_P"])})
    return subs


def _polynomial(coeffs: dict):
    """``(a, b) -> (L, dL/da, dL/db)``: theory.reduced's symbolic loss with the float
    coefficients substituted, expanded and lambdified."""
    key = (check_int("k", coeffs["k"], 1), float(coeffs["eta"]), float(coeffs["tr_S2"]),
           tuple(map(float, coeffs["tr_S2_P2"])), tuple(map(float, coeffs["tr_S2_P"])))
    return _polynomial_cached(key)


@lru_cache(maxsize=64)
def _polynomial_cached(key: tuple):
    k, eta, C, A_i, B_i = key
    a, b = reduced_symbols()
    L = sympy.expand(reduced_loss_symbolic(k, _ETA).subs(
        _substitution({"k": k, "eta": eta, "tr_S2": C, "tr_S2_P2": A_i, "tr_S2_P": B_i})))
    H = sympy.hessian(L, (a, b))
    return (sympy.lambdify([a, b], [L, sympy.diff(L, a), sympy.diff(L, b)], "numpy"),
            sympy.lambdify([a, b], H, "numpy"))


def _evaluate(coeffs: dict, a, b):
    a, b = np.broadcast_arrays(np.asarray(a, dtype=float), np.asarray(b, dtype=float))
    return [np.broadcast_to(np.asarray(x, dtype=float), a.shape)[()] for x in _polynomial(coeffs)[0](a, b)]


def reduced_loss_value(coeffs: dict, a, b):
    """``L(a, b)`` of docs/theory.md section 6 in float64 (arrays broadcast), for coefficients from
    ``reduced_coefficient_values``."""
    return _evaluate(coeffs, a, b)[0]


def reduced_gradient_value(coeffs: dict, a, b) -> tuple:
    """``(dL/da, dL/db)`` of the reduced loss (docs/theory.md section 6) in float64."""
    _, ga, gb = _evaluate(coeffs, a, b)
    return ga, gb


def reduced_hessian_value(coeffs: dict, a: float, b: float) -> np.ndarray:
    """The 2 x 2 Hessian of the reduced loss at ``(a, b)`` (docs/theory.md section 6) in float64.  At
    the minimum ``(-eta, 1)`` its smallest eigenvalue ``mu`` sets the final, linear stage of the
    flow: ``L(t) ~ exp(-2 mu t)``."""
    return np.array(_polynomial(coeffs)[1](float(a), float(b)), dtype=float)


def reduced_argmin_a_value(coeffs: dict, b):
    """``a*(b)``, the minimiser of ``L(., b)`` (theory.reduced.reduced_argmin_a): the slow
    manifold that stage 1 reaches, in float64."""
    k = check_int("k", coeffs["k"], 1)
    b = np.asarray(b, dtype=float)
    out = _argmin_function(k)(b, float(coeffs["eta"]), list(map(float, coeffs["tr_S2_P2"])),
                              list(map(float, coeffs["tr_S2_P"])), float(coeffs["tr_S2"]))
    return np.broadcast_to(np.asarray(out, dtype=float), b.shape)[()]


@lru_cache(maxsize=None)
def _argmin_function(k: int):
    _, b = reduced_symbols()
    A, B, C = reduced_moment_symbols(k)
    return sympy.lambdify([b, _ETA, A, B, C], reduced_argmin_a(k, _ETA), "numpy")


def gradient_flow(coeffs: dict, a0: float, b0: float, t_end: float, *, t_eval=None,
                  points: int = 2001, rtol: float = 1e-10, atol: float = 1e-12) -> dict:
    """Gradient flow ``(a', b') = -grad L(a, b)`` of the reduced loss from ``(a0, b0)`` on
    ``[0, t_end]`` (docs/theory.md section 6, Theorem 4.1), by ``scipy.integrate.solve_ivp`` (DOP853).

    The solution is reported at ``t_eval`` (increasing times in ``[0, t_end]``) or, if None, on
    ``points`` equally spaced times.  Returns a dict of float64 arrays ``t``, ``a``, ``b``,
    ``loss``.
    """
    a0 = check_finite("a0", a0)
    b0 = check_finite("b0", b0)
    t_end = check_positive_finite("t_end", t_end)
    if t_eval is None:
        points = check_int("points", points, 2)
        t_eval = np.linspace(0.0, t_end, points)
    else:
        t_eval = np.asarray(t_eval, dtype=float)
        if t_eval.ndim != 1 or t_eval.size == 0 or not np.all(np.isfinite(t_eval)) \
                or np.any(np.diff(t_eval) < 0) or t_eval[0] < 0 or t_eval[-1] > t_end:
            raise ValueError("t_eval must be a non-empty increasing 1-d array of times in [0, t_end]")

    def rhs(_t, y):
        ga, gb = reduced_gradient_value(coeffs, y[0], y[1])
        return [-ga, -gb]

    sol = solve_ivp(rhs, (0.0, t_end), [a0, b0], method="DOP853", t_eval=t_eval, rtol=rtol,
                    atol=atol)
    if not sol.success:
        raise RuntimeError(f"gradient flow integration failed: {sol.message}")
    a, b = sol.y
    return {"t": sol.t, "a": a, "b": b, "loss": np.asarray(reduced_loss_value(coeffs, a, b))}


def _first_crossing(t: np.ndarray, progress: np.ndarray, level: float):
    """First time (linear interpolation) at which ``progress`` reaches ``level`` from below;
    None if it never does."""
    hit = np.nonzero(progress >= level)[0]
    if hit.size == 0:
        return None
    j = int(hit[0])
    if j == 0:
        return float(t[0])
    p0, p1 = progress[j - 1], progress[j]
    return float(t[j - 1] + (level - p0) / (p1 - p0) * (t[j] - t[j - 1]))


def stage_times(t, a, b, coeffs: dict, *, fraction: float = 0.9) -> dict:
    """The two stages of the reduced flow from a small initialisation (docs/theory.md section 6), timed
    on a recorded path ``(t, a, b)`` (ODE or training; same definition for both).

    * ``stage1_end``: stage 1 is ``a`` relaxing onto the slow manifold ``a = a*(b)`` (the
      minimiser of ``L(., b)``, ``reduced_argmin_a_value``) while ``b`` hardly moves; it ends
      when ``a`` has done ``fraction`` of its way there:
      ``|a(t) - a*(b(t))| <= (1 - fraction) |a(0) - a*(b(0))|``.
    * ``a_90``, ``b_90`` (for ``fraction = 0.9``; the suffix is ``round(100 fraction)``): when
      ``a`` has done ``fraction`` of its way from ``a(0)`` to ``-eta``, and ``b`` from ``b(0)`` to 1.
    * ``stage2_end``: the later of the two; stage 2 is the joint drift along ``a = a*(b)`` to
      ``(-eta, 1)``.

    Times are interpolated linearly between recorded points; a stage not completed on the path is
    None.  A coordinate starting at its target has time ``t[0]``.
    """
    fraction = check_positive_finite("fraction", fraction)
    if fraction >= 1:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    t, a, b = (np.asarray(x, dtype=float) for x in (t, a, b))
    if not (t.ndim == a.ndim == b.ndim == 1 and t.size == a.size == b.size and t.size >= 1):
        raise ValueError("t, a, b must be 1-d arrays of the same non-zero length")
    eta = float(coeffs["eta"])
    suffix = str(round(100 * fraction))

    def progress(x, target):
        gap = target - x[0]
        return np.ones_like(x) if gap == 0 else (x - x[0]) / gap

    off = a - reduced_argmin_a_value(coeffs, b)
    stage1 = np.ones_like(off) if off[0] == 0 else 1.0 - np.abs(off) / abs(off[0])
    out = {"stage1_end": _first_crossing(t, stage1, fraction),
           f"a_{suffix}": _first_crossing(t, progress(a, -eta), fraction),
           f"b_{suffix}": _first_crossing(t, progress(b, 1.0), fraction)}
    ends = [out[f"a_{suffix}"], out[f"b_{suffix}"]]
    out["stage2_end"] = None if None in ends else max(ends)
    return out
