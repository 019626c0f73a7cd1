"""Theorem 3.2 in float64: the constructed transformer's iterates equal k-step GD and its closed
form (docs/theory.md sections 2-4).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from theory.validation import check_int, check_positive_finite

from .gd import gd_closed_form, gd_iterates
from .lsa import cot_rollout, cot_rollout_reference, looped_rollout, looped_rollout_reference
from .params import gd_params
from .sampling import sample_prompts


def iterate_deviation(A, B) -> tuple[float, float]:
    """``(max |A - B|, max |A - B| / scale)`` with ``scale = max(max |A|, max |B|)``: absolute
    and relative deviation of two arrays of iterates, relative to the largest entry seen (so
    ``w_0 = 0`` and small coordinates cause no division by zero).  ``(0, 0)`` when both are
    zero; ``(inf, inf)`` when anything is non-finite.

    >>> iterate_deviation(np.array([0.0, 2.0]), np.array([0.0, 2.5]))
    (0.5, 0.2)
    """
    A = np.asarray(A, dtype=np.float64)
    B = np.asarray(B, dtype=np.float64)
    if A.shape != B.shape:
        raise ValueError(f"A and B must have the same shape, got {A.shape} and {B.shape}")
    if not (np.all(np.isfinite(A)) and np.all(np.isfinite(B))):
        return float("inf"), float("inf")
    if A.size == 0:
        return 0.0, 0.0
    deviation = float(np.max(np.abs(A - B)))
    scale = float(max(np.max(np.abs(A)), np.max(np.abs(B))))
    return deviation, (deviation / scale if scale > 0 else 0.0)


@dataclass(frozen=True)
class EquivalenceReport:
    """Deviations between the routes to the k-step GD iterates (``check_gd_equivalence``).

    ``deviations`` maps a comparison to ``(abs, rel)`` (``iterate_deviation``):
    ``cot_vs_gd``, ``cot_vs_closed_form``, ``gd_vs_closed_form``, ``looped_vs_gd``,
    ``cot_vs_cot_reference`` (fast rollout vs literal ``lsa_forward``) and
    ``looped_vs_looped_reference``.  ``max_abs`` / ``max_rel`` are the worst over all of them.
    ``eta_lambda_max`` is the largest ``eta lambda_max(S)`` over the prompts: at ``>= 2`` GD
    diverges on that prompt and the iterates grow (the comparison is still relative).
    """

    d: int
    n: int
    k: int
    eta: float
    prompts: int
    max_abs: float
    max_rel: float
    eta_lambda_max: float
    deviations: dict = field(default_factory=dict)

    def passed(self, rtol: float = 1e-10) -> bool:
        """True when every route agrees to ``rtol`` relative."""
        return self.max_rel <= rtol


def check_gd_equivalence(d: int, n: int, k: int, eta: float, *, seed, sigma=None,
                         prompts: int = 1) -> EquivalenceReport:
    """Draw ``prompts`` prompts (``w* ~ N(0, I)``, ``x ~ N(0, Sigma)``; ``sigma=None`` is the
    identity, any symmetric PSD Sigma is allowed, singular included, docs/theory.md section 10)
    and compare, for
    ``(V, W) = gd_params(d, eta)``: the CoT rollout (fast and literal), the looped rollout (fast
    and literal), plain GD (``gd_iterates``) and the closed form (``gd_closed_form``).  Theorem
    3.2 says they are the same ``w_0 .. w_k``; the report gives the float64 deviations.

    >>> r = check_gd_equivalence(4, 8, 10, 0.3, seed=0)
    >>> r.passed(1e-10), r.k, sorted(r.deviations)[0]
    (True, 10, 'cot_vs_closed_form')
    """
    d = check_int("d", d)
    n = check_int("n", n)
    k = check_int("k", k, 0)
    eta = check_positive_finite("eta", eta)
    prompts = check_int("prompts", prompts, 1)
    X, y, w_star = sample_prompts(d, n, prompts, seed, sigma=sigma)
    V, W = gd_params(d, eta)
    routes = {
        "cot": cot_rollout(X, y, V, W, k),
        "cot_reference": cot_rollout_reference(X, y, V, W, k),
        "looped": looped_rollout(X, y, V, W, k),
        "looped_reference": looped_rollout_reference(X, y, V, W, k),
        "gd": gd_iterates(X, y, eta, k),
        "closed_form": gd_closed_form(X, w_star, eta, k),
    }
    pairs = [("cot", "gd"), ("cot", "closed_form"), ("gd", "closed_form"), ("looped", "gd"),
             ("cot", "cot_reference"), ("looped", "looped_reference")]
    deviations = {f"{a}_vs_{b}": iterate_deviation(routes[a], routes[b]) for a, b in pairs}
    S = X @ np.swapaxes(X, -1, -2) / n
    return EquivalenceReport(
        d=d, n=n, k=k, eta=eta, prompts=prompts,
        max_abs=max(v[0] for v in deviations.values()),
        max_rel=max(v[1] for v in deviations.values()),
        eta_lambda_max=float(eta * np.linalg.eigvalsh(S)[:, -1].max()),
        deviations=deviations)
