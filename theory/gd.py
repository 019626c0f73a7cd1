"""Gradient descent on the in-context least squares (docs/theory.md section 2), exactly.

``L(w) = (1/2n) sum_i (<w, x_i> - y_i)^2``, ``grad L(w) = S (w - w*)`` with ``S = X X^T / n``,
``w_0 = 0``, ``w_{i+1} = w_i - eta grad L(w_i)``; closed form ``w_i = (I - (I - eta S)^i) w*``.
"""
from __future__ import annotations

import sympy

from .validation import check_int


def gd_step(w, S, w_star, eta, Xeps=None):
    """One GD step ``w - eta S (w - w*)`` (docs/theory.md section 2) on sympy matrices.  ``eta``
    may be a scalar or a ``d x d`` matrix ``P`` (the preconditioned step ``w - P S (w - w*)``,
    docs/theory.md section 12); ``S``, ``w``, ``w*`` may be matrix expressions.  ``Xeps``: the
    label noise's part ``X eps / n`` of ``X y / n`` (docs/theory.md section 16); the step is then
    ``w - eta (S (w - w*) - X eps / n)``.

    >>> S = sympy.Matrix([[2, 0], [0, 1]]); ws = sympy.Matrix([1, 1])
    >>> gd_step(sympy.zeros(2, 1), S, ws, sympy.Rational(1, 2)).T
    Matrix([[1, 1/2]])
    """
    if Xeps is None:
        return w - eta * S * (w - w_star)
    return w - eta * (S * (w - w_star) - Xeps)


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


def _spectral_image(expr, S, w_star, s):
    """The scalar ``f(s)`` with ``expr = f(S) w*``, when ``expr`` is a sum of products of
    functions of ``S`` (``S``, ``S^T = S``, ``I``, scalars, powers of such sums) ending in ``w*``;
    None for any other shape.  Functions of one symmetric ``S`` commute and act on each
    eigenvector of ``S`` by their value at its eigenvalue ``s``, so ``f(S) w* = 0`` for every
    symmetric ``S`` and every ``w*`` iff ``f(s) = 0`` for every real ``s``."""
    def function_of_S(e):
        if e == S or (isinstance(e, sympy.Transpose) and e.arg == S):
            return s
        if isinstance(e, sympy.Identity):
            return sympy.Integer(1)
        if isinstance(e, sympy.ZeroMatrix):
            return sympy.Integer(0)
        if isinstance(e, sympy.MatAdd):
            parts = [function_of_S(a) for a in e.args]
            return None if any(p is None for p in parts) else sympy.Add(*parts)
        if isinstance(e, sympy.MatMul):
            parts = [a if not isinstance(a, sympy.MatrixExpr) else function_of_S(a) for a in e.args]
            return None if any(p is None for p in parts) else sympy.Mul(*parts)
        if isinstance(e, sympy.MatPow):
            base = function_of_S(e.base)
            return None if base is None else base ** e.exp
        return None

    expr = sympy.expand(expr)
    if isinstance(expr, sympy.ZeroMatrix):
        return sympy.Integer(0)
    total = []
    for term in (expr.args if isinstance(expr, sympy.MatAdd) else (expr,)):
        if not isinstance(term, sympy.MatMul) and term == w_star:
            total.append(sympy.Integer(1))
            continue
        if not isinstance(term, sympy.MatMul) or term.args[-1] != w_star:
            return None
        head = sympy.MatMul(*term.args[:-1]) if len(term.args) > 2 else term.args[0]
        value = function_of_S(head) if isinstance(head, sympy.MatrixExpr) else head
        if value is None:
            return None
        total.append(value)
    return sympy.Add(*total)


def prove_gd_closed_form() -> bool:
    """The closed form ``w_i = (I - (I - eta S)^i) w*`` (docs/theory.md section 2), proved for the
    library's own ``gd_step`` and ``gd_closed_form`` (through ``error_operator``), called on
    symbolic input: a symmetric ``d x d`` MatrixSymbol ``S`` (symbolic d), a MatrixSymbol ``w*``,
    a symbolic step ``eta`` and a symbolic ``i >= 0``, all private (``sympy.Dummy``).

    Induction step: ``gd_step(gd_closed_form(.., i)) - gd_closed_form(.., i + 1)`` must be
    ``f(S) w*`` with ``f(s) = 0`` (``_spectral_image``: functions of one symmetric S are judged on
    its eigenvalues); base case: ``gd_closed_form(.., 0) = 0 = w_0``; and the first three iterates
    of ``gd_iterates_exact`` on a generic symmetric 2 x 2 ``S`` equal the closed form.  False when
    any of these fails, or when a library function returns an expression outside that algebra.

    >>> prove_gd_closed_form()
    True
    """
    d = sympy.Dummy("d", positive=True, integer=True)
    i = sympy.Dummy("i", integer=True, nonnegative=True)
    eta, s = sympy.Dummy("eta"), sympy.Dummy("s", real=True)
    S = sympy.MatrixSymbol(sympy.Dummy("S"), d, d)
    w_star = sympy.MatrixSymbol(sympy.Dummy("w_star"), d, 1)
    w_i = gd_closed_form(S, w_star, eta, i)
    step = _spectral_image(gd_step(w_i, S, w_star, eta) - gd_closed_form(S, w_star, eta, i + 1),
                           S, w_star, s)
    base = _spectral_image(gd_closed_form(S, w_star, eta, 0), S, w_star, s)
    if step is None or base is None:
        return False
    induction = sympy.expand(sympy.expand_power_exp(sympy.expand(step))) == 0
    a, b, c = (sympy.Dummy(x) for x in "abc")
    S2 = sympy.Matrix([[a, b], [b, c]])
    w2 = sympy.Matrix(sympy.symbols("u:2", cls=sympy.Dummy))
    iterates = gd_iterates_exact(S2, w2, eta, 3)
    matches = all((iterates[k] - gd_closed_form(S2, w2, eta, k)).expand().is_zero_matrix for k in range(4))
    return bool(induction and sympy.expand(base) == 0 and matches)


def gd_noise_factor(eta, k: int, s) -> sympy.Expr:
    """The polynomial ``q_k(s) = g_k(s)^2 s`` of degree ``2k - 1`` with which label noise enters
    the k-step GD loss (docs/theory.md section 16): the error of GD on a noisy prompt is
    ``-(I - eta S)^k w* + g_k(S) X eps / n`` and ``E[(X eps / n)(X eps / n)^T | X] = s^2 S / n``,
    so the noise adds ``(s^2 / 2n) E tr(q_k(S))``.

    Derived, not typed in: ``g_k(s)`` is read off ``k`` library ``gd_step``'s in one dimension
    (``S = s``, ``w* = 0``, noise term ``b``: ``w_k = g_k(s) b``).  It equals ``(1 - (1 - eta
    s)^k)^2 / s`` (``theory.prove_noisy_gd_loss``).

    >>> s = sympy.Symbol("s")
    >>> gd_noise_factor(sympy.Rational(1, 2), 2, s)
    s**3/16 - s**2/2 + s
    """
    k = check_int("k", k, 0)
    b = sympy.Dummy("b")
    w = sympy.zeros(1, 1)
    S, zero, noise = sympy.Matrix([[s]]), sympy.zeros(1, 1), sympy.Matrix([[b]])
    for _ in range(k):
        w = gd_step(w, S, zero, eta, Xeps=noise).expand()
    g = sympy.Poly(w[0, 0].coeff(b), s)
    return (g ** 2 * sympy.Poly(s, s)).as_expr()
