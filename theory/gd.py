"""Gradient descent on the in-context least squares (docs/theory.md section 2), exactly.

``L(w) = (1/2n) sum_i (<w, x_i> - y_i)^2``, ``grad L(w) = S (w - w*)`` with ``S = X X^T / n``,
``w_0 = 0``, ``w_{i+1} = w_i - eta grad L(w_i)``; closed form ``w_i = (I - (I - eta S)^i) w*``.
"""
from __future__ import annotations

import sympy

from .validation import check_int


def gd_step(w, S, w_star, eta):
    """One GD step ``w - eta S (w - w*)`` (docs/theory.md section 2) on sympy matrices.

    >>> S = sympy.Matrix([[2, 0], [0, 1]]); ws = sympy.Matrix([1, 1])
    >>> gd_step(sympy.zeros(2, 1), S, ws, sympy.Rational(1, 2)).T
    Matrix([[1, 1/2]])
    """
    return w - eta * S * (w - w_star)


def error_operator(S, eta, k: int):
    """The k-step GD error operator ``(I - eta S)^k``: ``w_k - w* = -(I - eta S)^k w*``.

    ``S`` a sympy Matrix (explicit power) or a MatrixSymbol (``k`` may then be a Symbol).

    >>> error_operator(sympy.Matrix([[1]]), sympy.Rational(1, 2), 3)
    Matrix([[1/8]])
    """
    if isinstance(S, sympy.MatrixBase):
        k = check_int("k", k, 0)
        return (sympy.eye(S.shape[0]) - eta * S) ** k
    return (sympy.Identity(S.shape[0]) - eta * S) ** k


def gd_closed_form(S, w_star, eta, k: int):
    """docs/theory.md section 2: ``w_k = (I - (I - eta S)^k) w*``.

    >>> S = sympy.Matrix([[2, 0], [0, 1]]); ws = sympy.Matrix([1, 1])
    >>> gd_closed_form(S, ws, sympy.Rational(1, 2), 1).T
    Matrix([[1, 1/2]])
    """
    return w_star - error_operator(S, eta, k) * w_star


def gd_iterates_exact(S, w_star, eta, k: int) -> list:
    """The GD iterates ``[w_0, ..., w_k]`` from ``w_0 = 0`` by the recursion, exactly.

    >>> [w[0] for w in gd_iterates_exact(sympy.Matrix([[1]]), sympy.Matrix([1]), sympy.Rational(1, 2), 2)]
    [0, 1/2, 3/4]
    """
    k = check_int("k", k, 0)
    w = sympy.zeros(S.shape[0], 1)
    iterates = [w]
    for _ in range(k):
        w = gd_step(w, S, w_star, eta)
        iterates.append(w)
    return iterates


def prove_gd_closed_form() -> bool:
    """Induction step of the closed form, for symbolic i, eta and symmetric S.

    Every term is a polynomial in S applied to w*, so with ``S = Q diag(s) Q^T`` the identity
    ``gd_step(w_i) = w_{i+1}`` holds iff it holds for each eigenvalue ``s``:
    ``(1 - (1 - eta s)^i) - eta s ((1 - (1 - eta s)^i) - 1) = 1 - (1 - eta s)^{i+1}``.
    The base case ``w_0 = (I - I) w* = 0`` is checked too.

    >>> prove_gd_closed_form()
    True
    """
    s, eta = sympy.symbols("s eta")
    i = sympy.Symbol("i", integer=True, nonnegative=True)
    w_i = 1 - (1 - eta * s) ** i
    stepped = w_i - eta * s * (w_i - 1)
    w_next = 1 - (1 - eta * s) ** (i + 1)
    induction = sympy.expand(sympy.expand_power_exp(stepped - w_next)) == 0
    base = w_i.subs(i, 0) == 0
    return bool(induction and base)
