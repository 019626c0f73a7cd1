"""Hypothesis strategies for property tests of the theory (imports ``hypothesis``, a test extra;
``import numerics`` does not import this module).

* ``problem_sizes(max_d, max_n, max_k)``: ``(d, n, k)``, ``n < d`` included.
* ``stable_etas(lambda_max)``: steps with ``eta lambda_max`` in ``[2 margin, 2 (1 - margin)]``,
  i.e. GD contracts on a prompt whose ``S`` has top eigenvalue ``lambda_max`` (docs/theory.md section 2).
* ``spd_covariances(d, max_condition)``: symmetric positive definite Sigma with condition number
  at most ``max_condition``.
* ``prompts(d, n, sigma)``: ``(X, y, w_star)`` float64 with ``w* ~ N(0, I)``, ``x ~ N(0, Sigma)``.
* ``gd_problems(...)``: all of the above drawn coherently, a ``GDProblem``.

Gaussian draws come from a ``numpy.random.Generator`` seeded by an integer that hypothesis draws
(reproducible, and shrinking moves towards small seeds); eigenvalues, sizes and steps are drawn by
hypothesis directly and shrink towards simple cases (Sigma = I, eta small, d = n = 1, k = 0).

Example::

    from hypothesis import given
    from numerics.strategies import gd_problems

    @given(gd_problems(max_d=6))
    def test_my_model_is_gd(p):
        assert_allclose(my_rollout(p.X, p.y, p.k), gd_iterates(p.X, p.y, p.eta, p.k))
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
from hypothesis import strategies as st

from theory.validation import check_int, check_positive_finite

from .checks import check_sigma

_SEEDS = st.integers(min_value=0, max_value=2 ** 32 - 1)


def problem_sizes(max_d: int = 12, max_n: int = 40, max_k: int = 40, *, min_d: int = 1,
                  min_n: int = 1, min_k: int = 0) -> st.SearchStrategy:
    """``(d, n, k)`` with ``min_d <= d <= max_d`` etc.; ``n < d`` is allowed (singular S)."""
    min_d, max_d = check_int("min_d", min_d), check_int("max_d", max_d)
    min_n, max_n = check_int("min_n", min_n), check_int("max_n", max_n)
    min_k, max_k = check_int("min_k", min_k, 0), check_int("max_k", max_k, 0)
    return st.tuples(st.integers(min_d, max_d), st.integers(min_n, max_n), st.integers(min_k, max_k))


def stable_etas(lambda_max: float, *, margin: float = 0.05) -> st.SearchStrategy:
    """Steps ``eta`` with ``eta lambda_max`` in ``[2 margin, 2 (1 - margin)]``: every factor
    ``|1 - eta lambda_j|`` is below 1 for the positive eigenvalues of S (docs/theory.md section 2).
    Use the largest eigenvalue of the prompt's S (``numpy.linalg.eigvalsh(S)[-1]``)."""
    lambda_max = check_positive_finite("lambda_max", lambda_max)
    margin = check_positive_finite("margin", margin)
    if margin >= 0.5:
        raise ValueError(f"margin must be < 0.5, got {margin}")
    bound = 2.0 / lambda_max
    return st.floats(margin * bound, (1 - margin) * bound)


def _rotation(d: int, seed: int) -> np.ndarray:
    """A Haar-distributed orthogonal d x d matrix (QR of a Gaussian with the sign fix)."""
    Q, R = np.linalg.qr(np.random.default_rng(seed).standard_normal((d, d)))
    return Q * np.sign(np.diag(R))


def spd_covariances(d: int, max_condition: float = 100.0) -> st.SearchStrategy:
    """Symmetric positive definite ``d x d`` float64 Sigma, ``Q diag(lambda) Q^T`` with ``Q``
    Haar-random and ``lambda_j = max_condition^(u_j - 1/2)``, ``u_j`` in [0, 1] drawn by
    hypothesis: condition number at most ``max_condition``, eigenvalues around 1."""
    d = check_int("d", d)
    max_condition = check_positive_finite("max_condition", max_condition)
    if max_condition < 1:
        raise ValueError(f"max_condition must be >= 1, got {max_condition}")

    def build(args):
        u, seed = args
        lam = max_condition ** (np.asarray(u) - 0.5)
        Q = _rotation(d, seed)
        sigma = (Q * lam) @ Q.T
        return (sigma + sigma.T) / 2

    return st.tuples(st.lists(st.floats(0.0, 1.0), min_size=d, max_size=d), _SEEDS).map(build)


def _prompt(d: int, n: int, L, seed: int):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((d, n))
    if L is not None:
        X = L @ X
    w_star = rng.standard_normal(d)
    return X, X.T @ w_star, w_star


def prompts(d: int, n: int, sigma=None) -> st.SearchStrategy:
    """``(X, y, w_star)``: ``X`` d x n with columns ``N(0, Sigma)`` (``sigma=None``: identity),
    ``w* ~ N(0, I_d)``, ``y = X^T w*`` (docs/theory.md section 1)."""
    d = check_int("d", d)
    n = check_int("n", n)
    _, L = check_sigma(sigma, d)
    return _SEEDS.map(lambda seed: _prompt(d, n, L, seed))


class GDProblem(NamedTuple):
    """One drawn case: a prompt, a step stable for it, a number of steps, the covariance."""

    X: np.ndarray
    y: np.ndarray
    w_star: np.ndarray
    eta: float
    k: int
    sigma: np.ndarray | None


@st.composite
def gd_problems(draw, max_d: int = 12, max_n: int = 40, max_k: int = 40, *,
                max_condition: float = 100.0, with_sigma: bool = True, margin: float = 0.05):
    """A ``GDProblem``: sizes from ``problem_sizes``, Sigma from ``spd_covariances`` (or the
    identity, also drawn when ``with_sigma``), a prompt, and a step from ``stable_etas`` for that
    prompt's ``lambda_max(S)``."""
    d, n, k = draw(problem_sizes(max_d, max_n, max_k))
    sigma = draw(st.none() | spd_covariances(d, max_condition)) if with_sigma else None
    X, y, w_star = draw(prompts(d, n, sigma))
    lambda_max = float(np.linalg.eigvalsh(X @ X.T / n)[-1])
    eta = draw(stable_etas(lambda_max, margin=margin))
    return GDProblem(X, y, w_star, eta, k, sigma)
