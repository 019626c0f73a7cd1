"""Hypothesis strategies for property tests of the theory (imports ``hypothesis``, a test extra;
``import numerics`` does not import this module).

* ``problem_sizes(max_d, max_n, max_k)``: ``(d, n, k)``, ``n < d`` included.
* ``stable_etas(lambda_max)``: steps with ``eta lambda_max`` in ``[2 margin, 2 (1 - margin)]``,
  i.e. GD contracts on a prompt whose ``S`` has top eigenvalue ``lambda_max`` (docs/theory.md section 2).
* ``spd_covariances(d, max_condition)``: symmetric positive definite Sigma with condition number
  at most ``max_condition``.
* ``psd_covariances(d, rank, max_condition)``: symmetric positive semi-definite Sigma of a given
  (or drawn) rank, singular when ``rank < d`` (x confined to a random subspace, docs/theory.md
  section 10); non-zero eigenvalues within a ratio ``max_condition``.
* ``prompts(d, n, sigma)``: ``(X, y, w_star)`` float64 with ``w* ~ N(0, I)``, ``x ~ N(0, Sigma)``.
* ``gd_problems(...)``: all of the above drawn coherently, a ``GDProblem`` (singular Sigma with
  ``singular=True``).

Gaussian draws come from a ``numpy.random.Generator`` seeded by an integer that hypothesis draws
(reproducible, and shrinking moves towards small seeds); rotations are ``numerics.random_rotation``
of such a seed; eigenvalues, ranks, sizes and steps are drawn by hypothesis directly and shrink
towards simple cases (Sigma = I, eta small, d = n = 1, k = 0, rank 1).

Example::

    from hypothesis import given, settings
    from numerics.strategies import gd_problems

    settings.load_profile("cotgd")          # no deadline (see below)

    @given(gd_problems(max_d=6))
    def test_my_model_is_gd(p):
        assert_allclose(my_rollout(p.X, p.y, p.k), gd_iterates(p.X, p.y, p.eta, p.k))

Deadlines.  Hypothesis fails a test whose example takes longer than its default deadline
(200 ms), and reports a test whose timing varies as flaky.  The strategies draw in about a
millisecond, but the tests they feed vary d, n and k, and the toolkit's exact functions
(``numerics.nocot_params`` at a drawn Sigma, the first ``numerics.gd_params`` or
``numerics.gd_eval_loss_value`` of each size, ...) and any model of your own can take longer,
above all on a busy machine.  Importing this module registers the hypothesis settings profile
``PROFILE = "cotgd"``: hypothesis' defaults with ``deadline=None`` and the ``too_slow`` health
check off.  Load it once per test session (a ``conftest.py`` or the test file:
``settings.load_profile("cotgd")``), or give one test ``@settings(deadline=None)``.  The
toolkit's own tests load their profiles in tests/conftest.py, which has the same two settings.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from theory.validation import check_int, check_positive_finite

from .checks import covariance_root
from .rotations import random_rotation

_SEEDS = st.integers(min_value=0, max_value=2 ** 32 - 1)

#: The hypothesis settings profile for tests that use these strategies (module docstring,
#: Deadlines): ``settings.load_profile(PROFILE)``.
PROFILE = "cotgd"
settings.register_profile(PROFILE, parent=settings.get_profile("default"), deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])


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


def psd_covariances(d: int, rank: int | None = None, max_condition: float = 100.0) -> st.SearchStrategy:
    """Symmetric positive semi-definite ``d x d`` float64 Sigma of rank ``rank`` (``None``: drawn
    in ``1 .. d``; ``0`` gives the zero matrix): ``Q_r diag(lambda) Q_r^T`` with ``Q_r`` the first
    ``rank`` columns of a Haar-random orthogonal ``Q`` (``numerics.random_rotation``) and
    ``lambda_j = max_condition^(u_j - 1/2)``, ``u_j`` in [0, 1] drawn by hypothesis: non-zero
    eigenvalues around 1 with ratio at most ``max_condition``; for ``rank < d`` the inputs
    ``x ~ N(0, Sigma)`` lie in a random ``rank``-dimensional subspace (docs/theory.md section 10).
    Exactly rank ``rank`` up to rounding (the other eigenvalues are ~1e-16, which
    ``numerics.checks.check_sigma`` sets to 0)."""
    d = check_int("d", d)
    if rank is not None:
        rank = check_int("rank", rank, 0)
        if rank > d:
            raise ValueError(f"rank must be <= d = {d}, got {rank}")
    max_condition = check_positive_finite("max_condition", max_condition)
    if max_condition < 1:
        raise ValueError(f"max_condition must be >= 1, got {max_condition}")

    def build(args):
        u, seed = args
        lam = max_condition ** (np.asarray(u, dtype=np.float64) - 0.5)
        Q = random_rotation(d, seed)[:, :len(u)]
        sigma = (Q * lam) @ Q.T
        return (sigma + sigma.T) / 2

    def of_rank(r: int) -> st.SearchStrategy:
        return st.tuples(st.lists(st.floats(0.0, 1.0), min_size=r, max_size=r), _SEEDS).map(build)

    return of_rank(rank) if rank is not None else st.integers(1, d).flatmap(of_rank)


def spd_covariances(d: int, max_condition: float = 100.0) -> st.SearchStrategy:
    """Symmetric positive definite ``d x d`` float64 Sigma, ``Q diag(lambda) Q^T`` with ``Q``
    Haar-random and ``lambda_j = max_condition^(u_j - 1/2)``, ``u_j`` in [0, 1] drawn by
    hypothesis: condition number at most ``max_condition``, eigenvalues around 1.  This is
    ``psd_covariances(d, rank=d, max_condition)``."""
    return psd_covariances(d, check_int("d", d), max_condition)


def _prompt(d: int, n: int, root, seed: int):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((d, n))
    if root is not None:
        X = root @ X
    w_star = rng.standard_normal(d)
    return X, X.T @ w_star, w_star


def prompts(d: int, n: int, sigma=None) -> st.SearchStrategy:
    """``(X, y, w_star)``: ``X`` d x n with columns ``N(0, Sigma)`` (``X = Sigma^{1/2} G``;
    ``sigma=None``: identity; any symmetric PSD Sigma, singular allowed), ``w* ~ N(0, I_d)``,
    ``y = X^T w*`` (docs/theory.md sections 1 and 10)."""
    d = check_int("d", d)
    n = check_int("n", n)
    root = covariance_root(sigma, d)
    return _SEEDS.map(lambda seed: _prompt(d, n, root, seed))


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
                max_condition: float = 100.0, with_sigma: bool = True, singular: bool = False,
                margin: float = 0.05):
    """A ``GDProblem``: sizes from ``problem_sizes``, Sigma from ``spd_covariances`` (or the
    identity, also drawn when ``with_sigma``; with ``singular=True`` also ``psd_covariances`` of
    a drawn rank ``1 .. d``), a prompt, and a step from ``stable_etas`` for that prompt's
    ``lambda_max(S)``."""
    d, n, k = draw(problem_sizes(max_d, max_n, max_k))
    sigma = None
    if with_sigma:
        options = st.none() | spd_covariances(d, max_condition)
        if singular:
            options = options | psd_covariances(d, None, max_condition)
        sigma = draw(options)
    X, y, w_star = draw(prompts(d, n, sigma))
    lambda_max = float(np.linalg.eigvalsh(X @ X.T / n)[-1])
    eta = draw(stable_etas(lambda_max, margin=margin))
    return GDProblem(X, y, w_star, eta, k, sigma)
