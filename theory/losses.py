"""Exact evaluation losses (docs/theory.md sections 2, 5, 9 and 13), derived from Wishart moments.

All losses are ``(1/2) E ||w_hat - w*||^2`` with ``w* ~ N(0, I_d)`` and ``x ~ N(0, Sigma)``,
Sigma symmetric positive semi-definite where it appears (singular allowed, docs/theory.md section 10).
``n`` may be a Symbol everywhere; ``d`` too where no explicit Sigma fixes it.
"""
from __future__ import annotations

from typing import NamedTuple

import sympy

from .gd import gd_noise_factor
from .params import _nocot_gamma_inverse
from .validation import (check_covariance, check_dim, check_eta_exact, check_int, check_noise_var,
                         covariance_and_rank, covariance_or_symbol, exact_matrix)
from .wishart import check_sigma_steps_exact, check_steps_exact, trace_moment

_s = sympy.Dummy("s")  # eigenvalue variable of S


def gd_eval_loss(d, n, eta, k: int, *, sigma=None, noise_var=0):
    """Exact k-step GD evaluation loss ``(1/2) E tr((I - eta S)^{2k})`` (docs/theory.md section 2).

    Expanded into ``sum_j C(2k, j) (-eta)^j E tr(S^j) / 2`` with exact Wishart moments
    (``trace_moment``), so it is a polynomial in ``eta`` (a Symbol is allowed) with rational
    coefficients for int d, n.  Needs moments up to ``2k``; beyond ``MAX_EXACT_MOMENT`` a
    ValueError says so.  This is the mean over all prompts: for ``eta lambda_max(S) >= 2`` on
    some prompts it can be dominated by rare diverging prompts (see numerics.eval_loss_mc).

    ``sigma``: prompts with ``x ~ N(0, Sigma)`` (out of distribution, docs/theory.md sections 7
    and 13; ``w* ~ N(0, I)`` still, so the loss is still ``(1/2) E tr((I - eta S)^{2k})``), an
    explicit symmetric PSD ``d x d`` matrix (singular allowed; ``2k <= MAX_SIGMA_MOMENT``) or a
    MatrixSymbol (power sums ``Trace(Sigma**j)``; ``2k <= MAX_SIGMA_SYMBOLIC_MOMENT``).

    ``noise_var``: label noise ``y_i = <w*, x_i> + eps_i``, ``eps_i ~ N(0, s^2)`` with ``s^2 =
    noise_var`` (a number >= 0 or a Symbol; docs/theory.md section 16).  GD runs on the noisy
    prompt and the loss is still measured against ``w*``: it gains ``(s^2 / 2n) E tr(q_k(S))``,
    ``q_k(s) = (1 - (1 - eta s)^k)^2 / s`` a polynomial of degree ``2k - 1``
    (``theory.gd.gd_noise_factor``, derived from the GD recursion; ``theory.prove_noisy_gd_loss``),
    so the loss is exact for ``n < d`` too.

    >>> gd_eval_loss(10, 20, sympy.Rational(2, 5), 0)
    5
    >>> gd_eval_loss(1, 1, sympy.Symbol("eta"), 1)
    3*eta**2/2 - eta + 1/2
    >>> gd_eval_loss(2, 4, sympy.Rational(1, 4), 2, sigma=sympy.diag(1, 3))
    3877/8192
    >>> gd_eval_loss(1, 2, sympy.Rational(1, 2), 1, noise_var=sympy.Symbol("v"))
    v/16 + 1/4
    """
    d = check_dim("d", d)
    n = check_dim("n", n)
    k = check_int("k", k, 0)
    eta = check_eta_exact("eta", eta)
    noise_var = check_noise_var("noise_var", noise_var)
    if sigma is None:
        check_steps_exact("gd_eval_loss", k)
    else:
        check_sigma_steps_exact("gd_eval_loss", k, d, sigma)
    integrand = (1 - eta * _s) ** (2 * k)
    if noise_var != 0:
        integrand += noise_var / sympy.sympify(n) * gd_noise_factor(eta, k, _s)
    return sympy.expand(trace_moment(integrand, _s, d, n, sigma=sigma) / 2)


class OptimalStep(NamedTuple):
    """``gd_optimal_eta``'s result (docs/theory.md section 13): the exact minimiser ``eta`` (a Rational or symbolic expression,
    or a ``CRootOf``), its float ``eta_float``, the float of the minimum loss ``loss_float`` (both
    None when the inputs are symbolic) and ``radicals``, the same number in radicals when its
    minimal polynomial has degree 3 or 4 (Cardano / Ferrari; ``eta`` itself for a rational, None
    beyond degree 4)."""

    eta: sympy.Expr
    eta_float: float | None
    loss_float: float | None
    radicals: sympy.Expr | None = None


def gd_optimal_eta(d, n, k: int, *, sigma=None) -> OptimalStep:
    """The step that minimises the exact k-step loss ``gd_eval_loss(d, n, eta, k)`` over ``eta``
    (docs/theory.md sections 2 and 13), exactly.

    The loss is a polynomial of degree ``2k`` in ``eta`` with ``L''(eta) = k (2k - 1) E tr(S^2
    (I - eta S)^{2k-2}) > 0`` (``S != 0`` with positive probability), so ``L'`` is strictly
    increasing and has exactly one real root, simple: the unique minimiser.  It is found as the
    real root of ``L'`` factored over the rationals: a Rational when a linear factor holds it,
    otherwise ``CRootOf(factor, 0)`` (its only real root), an exact algebraic number (``.evalf(50)`` gives more
    digits; ``radicals`` the closed form for a factor of degree 3 or 4, e.g. always for k = 2).
    ``k = 1`` is Theorem 3.1's ``n / (n + d + 1)`` and accepts symbolic d, n (and a symbolic
    Sigma); ``k >= 2`` needs integer ``n`` and a numeric Sigma.  ``sigma``: as in
    ``gd_eval_loss`` (the best step for prompts from Sigma; ``Sigma = 0`` is refused: the loss does
    not depend on eta).

    >>> gd_optimal_eta(10, 20, 1)
    OptimalStep(eta=20/31, eta_float=0.6451612903225806, loss_float=1.7741935483870968, radicals=20/31)
    >>> r = gd_optimal_eta(10, 20, 3)
    >>> r.eta
    CRootOf(7732053*x**5 - 15390300*x**4 + 13012500*x**3 - 5970000*x**2 + 1550000*x - 200000, 0)
    >>> round(r.eta_float, 6)
    0.611251
    """
    k = check_int("k", k, 1)
    eta = sympy.Dummy("eta")
    loss = gd_eval_loss(d, n, eta, k, sigma=sigma)
    slope = sympy.Poly(sympy.diff(loss, eta), eta)
    if slope.degree() < 1:
        raise ValueError("sigma must not be zero: then S = 0 and the loss does not depend on eta")
    numeric = all(c.is_number for c in slope.all_coeffs())
    if k == 1:
        (root,) = sympy.solve(slope.as_expr(), eta)
        root = sympy.factor(root)
        radicals = root
    elif not numeric:
        raise ValueError("k >= 2 needs integer d, n and a numeric sigma (the minimiser is a root "
                         "of a polynomial of degree 2k - 1)")
    else:
        # One simple real root in all: it lies in the one irreducible factor of odd degree (an
        # irreducible factor has simple roots, its non-real ones in conjugate pairs).
        odd = [factor for factor, _ in sympy.factor_list(slope)[1] if factor.degree() % 2]
        if len(odd) != 1:
            raise ArithmeticError(f"the slope of a convex loss has {len(odd)} factors of odd degree")
        root = _real_root(odd[0])
        radicals = _in_radicals(root, odd[0])
    if not numeric:
        return OptimalStep(root, None, None, radicals)
    return OptimalStep(root, float(sympy.N(root, 30)), float(sympy.N(loss.subs(eta, root), 30)), radicals)


def _real_root(factor: sympy.Poly):
    """The only real root of an irreducible rational polynomial that has exactly one: a Rational,
    else ``CRootOf(factor, 0)`` in ``x`` (index 0 is the smallest real root)."""
    x = sympy.Symbol("x")
    poly = sympy.Poly(factor.as_expr().subs(factor.gen, x), x)
    if poly.degree() == 1:
        return sympy.solve(poly.as_expr(), x)[0]
    root = sympy.CRootOf(poly, 0)
    if not root.is_real:
        raise ArithmeticError("the factor of odd degree has no real root")
    return root


def _in_radicals(root, factor: sympy.Poly):
    """``root`` in radicals when its irreducible ``factor`` has degree <= 4, else None: the real
    radical root of the factor closest to it (they are exact; the pick is checked to 30 digits)."""
    if factor.degree() == 1:
        return root
    if factor.degree() > 4:
        return None
    x = factor.gen
    candidates = [r for r in sympy.roots(factor, x, cubics=True, quartics=True)
                  if abs(sympy.im(sympy.N(r, 40))) < sympy.Float(1e-30)]
    value = sympy.N(root, 40)
    best = min(candidates, key=lambda r: abs(sympy.N(r, 40) - value), default=None)
    if best is None or abs(sympy.N(best, 40) - value) > sympy.Float(1e-30):
        return None
    return best


def nocot_loss(d, n, eta, *, noise_var=0):
    """Evaluation loss of the one-step no-CoT prediction ``eta X y / n = eta S w*`` (docs/theory.md
    section 5): ``(1/2) (eta^2 E tr(S^2) - 2 eta E tr(S) + d)``, a quadratic in ``eta``.  With
    label noise of variance ``noise_var = s^2`` (docs/theory.md section 16) the prediction is
    ``eta (S w* + X eps / n)``: ``gd_eval_loss`` at ``k = 1``, which adds
    ``eta^2 s^2 E tr(S) / 2n``.

    >>> nocot_loss(1, 1, sympy.Symbol("eta"))
    3*eta**2/2 - eta + 1/2
    >>> nocot_loss(1, 1, sympy.Symbol("eta"), noise_var=1)
    2*eta**2 - eta + 1/2
    """
    d = check_dim("d", d)
    n = check_dim("n", n)
    eta = check_eta_exact("eta", eta)
    return gd_eval_loss(d, n, eta, 1, noise_var=noise_var)


def _nocot_optimum(d, n, noise_var=0):
    eta = sympy.Symbol("eta")
    loss = nocot_loss(d, n, eta, noise_var=noise_var)
    (eta_1,) = sympy.solve(sympy.diff(loss, eta), eta)
    eta_1 = sympy.factor(eta_1)
    return eta_1, sympy.factor(loss.subs(eta, eta_1))


def nocot_optimal_eta(d, n, *, noise_var=0):
    """Theorem 3.1: the best no-CoT step ``eta_1 = n / (n + d + 1)``, derived by minimising the
    exact quadratic ``nocot_loss`` in ``eta`` (not typed in).  With label noise of variance
    ``noise_var = s^2`` it is ``n / (n + d + 1 + s^2)`` (docs/theory.md section 16).

    >>> nocot_optimal_eta(10, 20)
    20/31
    >>> nocot_optimal_eta(10, 20, noise_var=4)
    4/7
    """
    return _nocot_optimum(d, n, noise_var)[0]


def nocot_min_loss(d, n, *, noise_var=0):
    """Theorem 3.1: the minimum no-CoT evaluation loss ``(1/2) d (d + 1) / (n + d + 1)``,
    derived from the exact moments (docs/theory.md section 5).  With label noise of variance
    ``noise_var = s^2``: ``(1/2) d (d + 1 + s^2) / (n + d + 1 + s^2)`` (docs/theory.md section 16).

    >>> nocot_min_loss(10, 20)
    55/31
    >>> nocot_min_loss(10, 20, noise_var=1)
    15/8
    """
    return _nocot_optimum(d, n, noise_var)[1]


def second_moment_S(n, Sigma):
    """``E[S^2] = (1 + 1/n) Sigma^2 + tr(Sigma)/n Sigma`` for ``S = X X^T / n``, columns of X
    i.i.d. ``N(0, Sigma)`` (Isserlis: ``E[x x^T x x^T] = 2 Sigma^2 + tr(Sigma) Sigma``), for any
    symmetric positive semi-definite Sigma, singular included (docs/theory.md sections 5 and 10).
    ``n`` may be a Symbol; ``Sigma`` may be a ``MatrixSymbol`` (a matrix expression then).

    >>> second_moment_S(2, sympy.eye(1))
    Matrix([[2]])
    >>> second_moment_S(sympy.Symbol("n"), sympy.MatrixSymbol("Sigma", 3, 3))
    (Trace(Sigma)/n)*Sigma + (1 + 1/n)*Sigma**2
    """
    n = check_dim("n", n)
    Sigma = covariance_or_symbol("Sigma", Sigma)
    return (1 + sympy.Integer(1) / n) * Sigma ** 2 + sympy.trace(Sigma) / sympy.sympify(n) * Sigma


def linear_prediction_loss(n, Sigma, A, *, noise_var=0):
    """Loss of the prediction ``A S w*`` (any d x d matrix A, e.g. a trained no-CoT model's
    ``-V31 W24``) on prompts with covariance Sigma (symmetric positive semi-definite, singular
    allowed): ``(1/2)(tr(A E[S^2] A^T) - 2 tr(A Sigma) + d)``.  docs/theory.md sections 5, 7 and 10
    (the no-CoT model out of distribution).  For singular Sigma only ``A`` on ``range(Sigma)``
    matters (``S w*`` lies there).  With label noise of variance ``noise_var = s^2`` the prediction is
    ``A X y / n = A (S w* + X eps / n)``, which adds ``(s^2 / 2n) tr(A Sigma A^T)`` (docs/theory.md
    section 16).

    >>> linear_prediction_loss(20, sympy.eye(10), sympy.Rational(20, 31) * sympy.eye(10))
    55/31
    >>> linear_prediction_loss(sympy.Symbol("n"), sympy.eye(1), sympy.eye(1))
    1/n
    """
    n = check_dim("n", n)
    Sigma = check_covariance("Sigma", Sigma)
    d = Sigma.shape[0]
    A = exact_matrix("A", A)
    if A.shape != (d, d):
        raise ValueError(f"A must be {d} x {d}, got {A.shape[0]} x {A.shape[1]}")
    noise_var = check_noise_var("noise_var", noise_var)
    M2 = second_moment_S(n, Sigma) + noise_var / sympy.sympify(n) * Sigma
    loss = ((A * M2 * A.T).trace() - 2 * (A * Sigma).trace() + d) / 2
    return loss if isinstance(n, int) else sympy.expand(loss)


def nocot_min_loss_sigma(n, Sigma, *, noise_var=0):
    """Theorem 3.1 for general Sigma: with ``A = Gamma^{-1}`` the loss is
    ``(1/2)(d - tr(Gamma^{-1} Sigma))``; computed from ``linear_prediction_loss``.

    Holds for every non-zero symmetric positive semi-definite Sigma (docs/theory.md section 10):
    ``E[S^2] = Sigma Gamma`` with ``Gamma`` invertible and commuting with Sigma, so ``A =
    Gamma^{-1}`` zeroes the gradient ``A E[S^2] - Sigma`` of the convex loss.  With eigenvalues
    ``lambda_j`` of Sigma the value is ``(1/2) sum_j (1 - lambda_j / ((1 + 1/n) lambda_j +
    tr(Sigma)/n))``: each direction of the null space of Sigma costs ``1/2`` (never learned).
    ``Sigma = 0`` is refused (Gamma = 0 has no inverse).  ``noise_var``: labels with noise of
    variance ``s^2``; Gamma gains ``s^2 / n I`` (``theory.nocot_gamma``, docs/theory.md section 16).

    >>> nocot_min_loss_sigma(20, sympy.eye(10))
    55/31
    >>> nocot_min_loss_sigma(3, sympy.diag(1, 0))           # (1/2)(1 - 1/(4/3 + 1/3)) + 1/2
    7/10
    >>> nocot_min_loss_sigma(sympy.Symbol("n", positive=True), sympy.diag(1, 2))
    (13*n + 40)/(2*(n + 4)*(2*n + 5))
    """
    n = check_dim("n", n)
    Sigma = check_covariance("Sigma", Sigma)
    inverse = _nocot_gamma_inverse(Sigma.shape[0], n, Sigma, noise_var)
    loss = linear_prediction_loss(n, Sigma, inverse, noise_var=noise_var)
    return sympy.simplify(loss) if isinstance(n, int) else sympy.factor(sympy.cancel(loss))


def gd_limit_loss(d, n, Sigma=None, *, noise_var=0):
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
    >>> gd_limit_loss(sympy.Symbol("d"), sympy.Symbol("n"))
    d/2 - Min(d, n)/2

    ``d`` and ``n`` may be Symbols (``Min`` stays unevaluated); an explicit Sigma needs an int d.

    ``noise_var``: labels with noise of variance ``s^2`` (docs/theory.md section 16).  GD then
    tends to the (minimum-norm) least-squares fit of the noisy labels, whose noise part adds
    ``(s^2 / 2n) E tr(S^+)`` (inverse-Wishart means): ``s^2 tr(Sigma_r^{-1}) / (2 (n - r - 1))``
    for ``n > r + 1`` (``Sigma_r``: Sigma on its range, of rank r; ``s^2 d / (2 (n - d - 1))`` for
    ``Sigma = I``) and, for ``Sigma = I`` and ``n < d - 1``, ``s^2 n / (2 (d - n - 1))``
    (``E (X^T X)^{-1} = I / (d - n - 1)``).  Near interpolation (``|n - r| <= 1``) the mean is
    infinite (``oo``).  A non-identity Sigma with ``n < r`` and noise is refused (no closed form).

    >>> gd_limit_loss(10, 20, noise_var=1)
    5/9
    >>> gd_limit_loss(10, 4, noise_var=1)
    17/5
    """
    d = check_dim("d", d)
    n = check_dim("n", n)
    noise_var = check_noise_var("noise_var", noise_var)
    M, rank = (None, d) if Sigma is None else covariance_and_rank("Sigma", Sigma, d)
    noiseless = (sympy.sympify(d) - sympy.Min(n, rank)) / 2
    if noise_var == 0:
        return noiseless
    if not all(isinstance(x, (int, sympy.Integer)) for x in (d, n)):
        raise ValueError("gd_limit_loss with noise needs integer d and n (the limit depends on "
                         "which of n, d is larger)")
    if rank == 0:
        return noiseless                                 # Sigma = 0: X = 0, the noise never enters
    if abs(n - rank) <= 1:
        return sympy.oo
    if n > rank:
        return noiseless + noise_var * _pseudo_inverse_trace(M, rank, d) / (2 * (n - rank - 1))
    scale = sympy.Integer(1)
    if M is not None:
        scale = sympy.simplify(M.trace() / rank)          # the common non-zero eigenvalue, if there is one
        if not (M * M - scale * M).applyfunc(sympy.simplify).is_zero_matrix:
            raise ValueError("gd_limit_loss with noise and n < rank(Sigma) is only known when the "
                             "non-zero eigenvalues of Sigma are equal (E tr(S^+) depends on the "
                             "whole spectrum)")
    return noiseless + noise_var * n / (2 * scale * (rank - n - 1))


def _pseudo_inverse_trace(M, rank: int, d: int):
    """``tr(Sigma_r^{-1})``, the sum of ``1/lambda`` over the non-zero eigenvalues of Sigma (rank
    ``r``; ``d`` for ``M = None``, the identity), exactly, from the characteristic polynomial
    ``x^d + c_1 x^{d-1} + .. + c_r x^{d-r}``: ``sum 1/lambda = e_{r-1}/e_r = -c_{r-1}/c_r``
    (no eigenvalues, so no radicals).

    >>> _pseudo_inverse_trace(sympy.Matrix([[2, 1], [1, 2]]), 2, 2)      # 1/1 + 1/3
    4/3
    """
    if M is None:
        return sympy.Integer(d)
    c = M.charpoly().all_coeffs()                      # [1, c_1, .., c_d]
    return sympy.simplify(-c[rank - 1] / c[rank])

