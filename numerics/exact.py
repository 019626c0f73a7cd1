"""Float64 values of theory's exact losses, evaluated exactly and rounded once.

``theory.gd_eval_loss(d, n, eta, k)`` is a polynomial of degree ``2k`` in ``eta`` with rational
coefficients (docs/theory.md section 2, exact Wishart moments of section 9).  Its terms alternate in
sign and grow like ``C(2k, j) eta^j E tr(S^j)``, so summing them in float64 loses many digits
(d = 10, n = 20, k = 20, eta = 0.4: terms up to 1e13 for a loss of 0.114; the float sum is 4 %
off).  Here the polynomial is evaluated in exact integer arithmetic at the float ``eta`` (a
dyadic rational) and the result is rounded once.
"""
from __future__ import annotations

import math
from fractions import Fraction
from functools import lru_cache

import numpy as np
import sympy

import theory
from theory.validation import check_int, check_positive_finite, check_nonnegative_finite



@lru_cache(maxsize=None)
def gd_eval_loss_polynomial(d: int, n: int, k: int, part: str = "signal") -> tuple[int, tuple[int, ...]]:
    """``(P, (a_0, .., a_2k))`` with ``theory.gd_eval_loss(d, n, eta, k) = sum_j a_j eta^j / P``,
    integers (cached).  Raises ValueError beyond ``theory.MAX_EXACT_MOMENT`` (``2k`` too large).
    ``part="noise"``: the coefficient of ``noise_var`` in the noisy loss instead (docs/theory.md
    section 16), ``d/d noise_var theory.gd_eval_loss(d, n, eta, k, noise_var=v)``.

    >>> gd_eval_loss_polynomial(1, 1, 1)                 # 3 eta^2 / 2 - eta + 1/2
    (2, (1, -2, 3))
    >>> gd_eval_loss_polynomial(1, 1, 1, "noise")        # eta^2 E tr(S) / 2n
    (2, (0, 0, 1))
    """
    d = check_int("d", d)
    n = check_int("n", n)
    k = check_int("k", k, 0)
    if part not in ("signal", "noise"):
        raise ValueError(f"part must be 'signal' or 'noise', got {part!r}")
    eta, v = sympy.Symbol("eta"), sympy.Symbol("v")
    loss = theory.gd_eval_loss(d, n, eta, k, noise_var=v if part == "noise" else 0)
    if part == "noise":
        loss = sympy.diff(loss, v)
    coefficients = [sympy.Rational(c) for c in sympy.Poly(loss, eta).all_coeffs()[::-1]]
    P = math.lcm(*(int(c.q) for c in coefficients))
    return P, tuple(int(c * P) for c in coefficients)


def polynomial_value(denominator: int, numerators, x: float) -> float:
    """``sum_j numerators[j] x^j / denominator`` for a float ``x``, exactly, rounded once
    (``inf`` with the right sign on overflow).

    >>> polynomial_value(3, (1, 0, 1), 0.5)        # (1 + 1/4) / 3
    0.4166666666666667
    """
    return _rounded(_polynomial_fraction(denominator, numerators, x))


def _polynomial_fraction(denominator: int, numerators, x: float) -> Fraction:
    m, q = float(x).as_integer_ratio()
    J = len(numerators) - 1
    acc = 0
    for j in range(J, -1, -1):
        acc = acc * m + numerators[j] * q ** (J - j)
    return Fraction(acc, denominator * q ** J)


def _rounded(value: Fraction) -> float:
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf      # float(value) overflowed, so value != 0


def gd_eval_loss_value(d: int, n: int, eta, k: int, *, noise_var: float = 0.0):
    """``theory.gd_eval_loss(d, n, eta, k, noise_var=noise_var)`` at a float ``eta`` (or an array
    of them) and a float ``noise_var`` (label-noise variance ``s^2``, docs/theory.md section 16),
    computed exactly and rounded once: the exact in-distribution mean of ``(1/2) ||w_k - w*||^2``
    for k-step GD (docs/theory.md section 2).  Needs ``2k <= theory.MAX_EXACT_MOMENT``.

    >>> gd_eval_loss_value(10, 20, 0.4, 10)
    0.26952376850811866
    >>> gd_eval_loss_value(10, 20, 0.4, 10, noise_var=1.0)
    0.5456970902893523
    """
    noise_var = check_nonnegative_finite("noise_var", noise_var)
    P, a = gd_eval_loss_polynomial(d, n, k)
    noise = gd_eval_loss_polynomial(d, n, k, "noise") if noise_var else None
    etas = np.asarray(eta, dtype=np.float64)
    for value in etas.ravel():
        check_positive_finite("eta", value)

    def value_at(e):
        exact = _polynomial_fraction(P, a, e)
        if noise is not None:
            exact += Fraction(noise_var) * _polynomial_fraction(*noise, e)
        return _rounded(exact)

    values = np.array([value_at(e) for e in etas.ravel()]).reshape(etas.shape)
    return float(values) if values.ndim == 0 else values
