"""Exact evaluation losses (docs/theory.md sections 2, 5 and 9), derived from Wishart moments.

All losses are ``(1/2) E ||w_hat - w*||^2`` with ``w* ~ N(0, I_d)`` and ``x ~ N(0, Sigma)``,
Sigma symmetric positive semi-definite where it appears (singular allowed, docs/theory.md section 10).
"""
from __future__ import annotations

import sympy

from .params import _nocot_gamma_inverse
from .validation import check_covariance, check_dim, check_eta_exact, check_int, covariance_and_rank
from .wishart import check_steps_exact, trace_moment

_s = sympy.Dummy("s")  # eigenvalue variable of S


def gd_eval_loss(d, n, eta, k: int):
    """Exact k-step GD evaluation loss ``(1/2) E tr((I - eta S)^{2k})`` (docs/theory.md section 2).

    Expanded into ``sum_j C(2k, j) (-eta)^j E tr(S^j) / 2`` with exact Wishart moments
    (``trace_moment``), so it is a polynomial in ``eta`` (a Symbol is allowed) with rational
    coefficients for int d, n.  Needs moments up to ``2k``; beyond ``MAX_EXACT_MOMENT`` a
    ValueError says so.  This is the mean over all prompts: for ``eta lambda_max(S) >= 2`` on
    some prompts it can be dominated by rare diverging prompts (see numerics.eval_loss_mc).

    >>> gd_eval_loss(10, 20, sympy.Rational(2, 5), 0)
    5
    >>> gd_eval_loss(1, 1, sympy.Symbol("eta"), 1)
    3*eta**2/2 - eta + 1/2
    """
    d = check_dim("d", d)
    n = check_dim("n", n)
    k = check_int("k", k, 0)
    eta = check_eta_exact("eta", eta)
    check_steps_exact("gd_eval_loss", k)
    return sympy.expand(trace_moment((1 - eta * _s) ** (2 * k), _s, d, n) / 2)


def nocot_loss(d, n, eta):
    """Evaluation loss of the one-step no-CoT prediction ``eta S w*`` (docs/theory.md section 5):
    ``(1/2) (eta^2 E tr(S^2) - 2 eta E tr(S) + d)``, a quadratic in ``eta``.

    >>> nocot_loss(1, 1, sympy.Symbol("eta"))
    3*eta**2/2 - eta + 1/2
    """
    d = check_dim("d", d)
    n = check_dim("n", n)
    eta = check_eta_exact("eta", eta)
    return sympy.expand(trace_moment((1 - eta * _s) ** 2, _s, d, n) / 2)


def _nocot_optimum(d, n):
    eta = sympy.Symbol("eta")
    loss = nocot_loss(d, n, eta)
    (eta_1,) = sympy.solve(sympy.diff(loss, eta), eta)
    eta_1 = sympy.factor(eta_1)
    return eta_1, sympy.factor(loss.subs(eta, eta_1))


def nocot_optimal_eta(d, n):
    """Theorem 3.1: the best no-CoT step ``eta_1 = n / (n + d + 1)``, derived by minimising the
    exact quadratic ``nocot_loss`` in ``eta`` (not typed in).

    >>> nocot_optimal_eta(10, 20)
    20/31
    """
    return _nocot_optimum(d, n)[0]


def nocot_min_loss(d, n):
    """Theorem 3.1: the minimum no-CoT evaluation loss ``(1/2) d (d + 1) / (n + d + 1)``,
    derived from the exact moments (docs/theory.md section 5).

    >>> nocot_min_loss(10, 20)
    55/31
    """
    return _nocot_optimum(d, n)[1]


def second_moment_S(n, Sigma):
    """``E[S^2] = (1 + 1/n) Sigma^2 + tr(Sigma)/n Sigma`` for ``S = X X^T / n``, columns of X
    i.i.d. ``N(0, Sigma)`` (Isserlis: ``E[x x^T x x^T] = 2 Sigma^2 + tr(Sigma) Sigma``), for any
    symmetric positive semi-definite Sigma, singular included (docs/theory.md sections 5 and 10).

    >>> second_moment_S(2, sympy.eye(1))
    Matrix([[2]])
    """
    n = check_int("n", n, 1)
    Sigma = check_covariance("Sigma", Sigma)
    return (1 + sympy.Integer(1) / n) * Sigma ** 2 + Sigma.trace() / sympy.Integer(n) * Sigma


def linear_prediction_loss(n, Sigma, A):
    """Loss of the prediction ``A S w*`` (any d x d matrix A, e.g. a trained no-CoT model's
    ``-V31 W24``) on prompts with covariance Sigma (symmetric positive semi-definite, singular
    allowed): ``(1/2)(tr(A E[S^2] A^T) - 2 tr(A Sigma) + d)``.  docs/theory.md sections 5, 7 and 10
    (the no-CoT model out of distribution).  For singular Sigma only ``A`` on ``range(Sigma)``
    matters (``S w*`` lies there).

    >>> linear_prediction_loss(20, sympy.eye(10), sympy.Rational(20, 31) * sympy.eye(10))
    55/31
    """
    n = check_int("n", n, 1)
    Sigma = check_covariance("Sigma", Sigma)
    d = Sigma.shape[0]
    try:
        A = sympy.Matrix(A)
    except (TypeError, ValueError):
        raise ValueError(f"A must be a {d} x {d} matrix, got {type(A).__name__}") from None
    if A.shape != (d, d):
        raise ValueError(f"A must be {d} x {d}, got {A.shape[0]} x {A.shape[1]}")
    M2 = second_moment_S(n, Sigma)
    return ((A * M2 * A.T).trace() - 2 * (A * Sigma).trace() + d) / 2


def nocot_min_loss_sigma(n, Sigma):
    """Theorem 3.1 for general Sigma: with ``A = Gamma^{-1}`` the loss is
    ``(1/2)(d - tr(Gamma^{-1} Sigma))``; computed from ``linear_prediction_loss``.

    Holds for every non-zero symmetric positive semi-definite Sigma (docs/theory.md section 10):
    ``E[S^2] = Sigma Gamma`` with ``Gamma`` invertible and commuting with Sigma, so ``A =
    Gamma^{-1}`` zeroes the gradient ``A E[S^2] - Sigma`` of the convex loss.  With eigenvalues
    ``lambda_j`` of Sigma the value is ``(1/2) sum_j (1 - lambda_j / ((1 + 1/n) lambda_j +
    tr(Sigma)/n))``: each direction of the null space of Sigma costs ``1/2`` (never learned).
    ``Sigma = 0`` is refused (Gamma = 0 has no inverse).

    >>> nocot_min_loss_sigma(20, sympy.eye(10))
    55/31
    >>> nocot_min_loss_sigma(3, sympy.diag(1, 0))           # (1/2)(1 - 1/(4/3 + 1/3)) + 1/2
    7/10
    """
    n = check_int("n", n, 1)
    Sigma = check_covariance("Sigma", Sigma)
    inverse = _nocot_gamma_inverse(Sigma.shape[0], n, Sigma)
    return sympy.simplify(linear_prediction_loss(n, Sigma, inverse))


def gd_limit_loss(d, n, Sigma=None):
    """Large-k limit of the GD evaluation loss from ``w_0 = 0`` when every prompt is stable:
    ``(d - n)/2`` for ``n < d`` (minimum-norm interpolant), 0 otherwise (docs/theory.md section 2).

    With a covariance ``Sigma`` of rank ``r`` (symmetric positive semi-definite, singular allowed,
    docs/theory.md section 10) the limit is ``(d - min(n, r))/2``: GD from 0 stays in
    ``range(S)``, inside ``range(Sigma)``, so the part of ``w*`` outside it, ``(1/2) E ||P_perp
    w*||^2 = (d - r)/2``, is never learned; on ``range(Sigma)`` the problem is the same one in
    dimension ``r``, with limit ``(r - n)/2`` for ``n < r`` and 0 otherwise.

    >>> gd_limit_loss(10, 4), gd_limit_loss(10, 20)
    (3, 0)
    >>> gd_limit_loss(3, 20, sympy.diag(1, 2, 0))
    1/2
    """
    d = check_int("d", d)
    n = check_int("n", n)
    rank = d if Sigma is None else covariance_and_rank("Sigma", Sigma, d)[1]
    return sympy.Rational(d - min(n, rank), 2)
