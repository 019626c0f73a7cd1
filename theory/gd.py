"""Gradient descent on the in-context least squares (docs/theory.md section 2), exactly.

``L(w) = (1/2n) sum_i (<w, x_i> - y_i)^2``, ``grad L(w) = S (w - w*)`` with ``S = X X^T / n``,
``w_0 = 0``, ``w_{i+1} = w_i - eta grad L(w_i)``; closed form ``w_i = (I - (I - eta S)^i) w*``.
"""
from __future__ import annotations

import sympy

from .validation import check_int, exact_operand


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
    w, S, w_star, eta = (exact_operand(name, v) for name, v in (("w", w), ("S", S), ("w_star", w_star), ("eta", eta)))
    if Xeps is None:
        return w - eta * S * (w - w_star)
    Xeps = exact_operand("Xeps", Xeps)
    return w - eta * (S * (w - w_star) - Xeps)


def error_operator(S, eta, k):
    """The k-step GD error operator ``(I - eta S)^k``: ``w_k - w* = -(I - eta S)^k w*``
    (docs/theory.md section 2).

    ``S`` a sympy Matrix or a MatrixSymbol.  ``k`` an integer >= 0, or a symbolic sympy
    expression (a Symbol, ``k + 1``; refused when known to be negative or not an integer; declare
    ``integer=True, nonnegative=True``): with a MatrixSymbol the result is the unevaluated power;
    with an explicit Matrix it is sympy's matrix power by the Jordan form, entries in the powers
    ``(1 - eta lambda_j)^k`` of the eigenvalues (practical for numeric or 1 x 1 ``S``;
    ``theory.prove_gd_closed_form`` uses it for its induction on a symbolic ``k``).

    >>> error_operator(sympy.Matrix([[1]]), sympy.Rational(1, 2), 3)
    Matrix([[1/8]])
    >>> k = sympy.Symbol("k", integer=True, nonnegative=True)
    >>> error_operator(sympy.Matrix([[1, 1], [1, 1]]), sympy.Rational(1, 4), k)[0, :]
    Matrix([[1/2 + 1/(2*2**k), -1/2 + 1/(2*2**k)]])
    """
    k = _check_steps(k)
    S, eta = exact_operand("S", S), exact_operand("eta", eta)
    if isinstance(S, sympy.MatrixBase):
        return (sympy.eye(S.shape[0]) - eta * S) ** k
    return (sympy.Identity(S.shape[0]) - eta * S) ** k


def _check_steps(k):
    """``k`` as an int when it is an integer >= 0; a symbolic sympy expression unchanged unless it
    is known to be negative or not an integer; anything else a ValueError naming k."""
    if isinstance(k, sympy.Expr) and not k.is_number:
        if k.is_integer is False or k.is_nonnegative is False:
            raise ValueError(f"k must be a non-negative integer, got {k!r}")
        return k
    return check_int("k", k, 0)


def gd_closed_form(S, w_star, eta, k: int):
    """docs/theory.md section 2: ``w_k = (I - (I - eta S)^k) w*``.

    >>> S = sympy.Matrix([[2, 0], [0, 1]]); ws = sympy.Matrix([1, 1])
    >>> gd_closed_form(S, ws, sympy.Rational(1, 2), 1).T
    Matrix([[1, 1/2]])
    """
    w_star = exact_operand("w_star", w_star)
    return w_star - error_operator(S, eta, k) * w_star


def gd_iterates_exact(S, w_star, eta, k: int) -> list:
    """The GD iterates ``[w_0, ..., w_k]`` from ``w_0 = 0`` by the recursion ``gd_step``, exactly
    (docs/theory.md section 2); each iterate expanded (a polynomial in the symbols of ``S``,
    ``w*``, ``eta``, not a nested expression whose size doubles with every step).

    >>> [w[0] for w in gd_iterates_exact(sympy.Matrix([[1]]), sympy.Matrix([1]), sympy.Rational(1, 2), 2)]
    [0, 1/2, 3/4]
    """
    k = check_int("k", k, 0)
    S, w_star, eta = exact_operand("S", S), exact_operand("w_star", w_star), exact_operand("eta", eta)
    w = sympy.zeros(S.shape[0], 1)
    iterates = [w]
    for _ in range(k):
        w = gd_step(w, S, w_star, eta)
        if isinstance(w, sympy.MatrixBase):
            w = w.applyfunc(sympy.expand)
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


#: ``prove_gd_closed_form`` checks the integer-``k`` results of ``error_operator``,
#: ``gd_closed_form`` and ``gd_iterates_exact`` against the closed form for every
#: ``k = 0 .. GD_PROOF_MAX_K`` (docs/theory.md section 2).
GD_PROOF_MAX_K = 10


def prove_gd_closed_form() -> bool:
    """The closed form ``w_i = (I - (I - eta S)^i) w*`` (docs/theory.md section 2), proved for the
    library's own ``gd_step``, ``error_operator``, ``gd_closed_form`` and ``gd_iterates_exact`` by
    induction on a symbolic ``i`` (an integer ``>= 0``, private ``sympy.Dummy`` symbols throughout,
    a symbolic step ``eta``):

    1. symbolic shape: on a symmetric ``d x d`` MatrixSymbol ``S`` (symbolic d) and a MatrixSymbol
       ``w*``, ``gd_step(gd_closed_form(.., i)) - gd_closed_form(.., i + 1)`` is ``f(S) w*`` with
       ``f(s) = 0`` (``_spectral_image``: functions of one symmetric S are judged on its
       eigenvalues), and ``gd_closed_form(.., 0) = 0 = w_0``;
    2. explicit ``S`` with a symbolic ``i``: per eigenvalue (``S = [[s]]``, ``s`` symbolic), on a
       non-diagonal ``[[2, 1], [1, 2]]`` and on a singular non-diagonal 3 x 3: ``E_i =
       error_operator(S, eta, i)`` has ``E_0 = I`` and ``E_{i+1} = (I - eta S) E_i`` (so ``E_i =
       (I - eta S)^i`` for every i), ``gd_closed_form(.., 0) = 0`` and ``gd_step`` maps
       ``gd_closed_form(.., i)`` to ``gd_closed_form(.., i + 1)``, as identities in ``i``;
    3. integer k: on the same matrices, for every ``k = 0 .. GD_PROOF_MAX_K``, ``error_operator``
       and ``gd_closed_form`` at ``k`` equal ``(I - eta S)^k`` (k products) and ``w* - (I - eta
       S)^k w*``, the values step 2 proves for the symbolic-i results at ``i = k``, and
       ``gd_iterates_exact(.., k)`` is the list of those closed forms ``w_0 .. w_k``;
    4. on a generic symmetric 2 x 2 ``S`` (symbolic entries) the iterates of ``gd_iterates_exact``
       up to ``k = 3`` equal the closed form (an identity in the entries of S).

    Steps 1 and 2 hold for every ``i`` at once: a helper that is wrong at some ``k`` as a function
    of ``k`` (the same code for a symbol and an int, e.g. a ``Piecewise`` in ``k``) fails them, and
    one that cannot take a symbolic ``k`` (compares it with a number, refuses it) is rejected
    (False).  ``gd_iterates_exact`` returns a list of ``k + 1`` iterates, so it takes only an
    integer ``k``; it and any helper that treats Python ints specially are checked at the integer
    k of step 3.  False when any step fails or a library function raises TypeError or ValueError.

    >>> prove_gd_closed_form()
    True
    """
    return all(_gd_closed_form_checks().values())


def _gd_closed_form_checks() -> dict:
    """``prove_gd_closed_form``'s steps by name (``symbolic_shape``, ``explicit_induction``,
    ``integer_k``, ``generic_2x2``), each True or False; the tests read which step a wrong helper
    fails."""
    checks = {}
    eta, s = sympy.Dummy("eta"), sympy.Dummy("s", real=True)
    i = sympy.Dummy("i", integer=True, nonnegative=True)
    try:
        checks["symbolic_shape"] = _closed_form_symbolic_shape(eta, s, i)
    except (TypeError, ValueError):
        checks["symbolic_shape"] = False
    try:
        checks["explicit_induction"] = _closed_form_explicit_induction(eta, s, i)
    except (TypeError, ValueError):
        checks["explicit_induction"] = False
    try:
        checks["integer_k"] = _closed_form_integer_k(eta, s)
    except (TypeError, ValueError):
        checks["integer_k"] = False
    try:
        a, b, c = (sympy.Dummy(x) for x in "abc")
        S2 = sympy.Matrix([[a, b], [b, c]])
        w2 = sympy.Matrix(sympy.symbols("u:2", cls=sympy.Dummy))
        iterates = gd_iterates_exact(S2, w2, eta, 3)
        checks["generic_2x2"] = len(iterates) == 4 and all(
            _is_zero(iterates[k] - gd_closed_form(S2, w2, eta, k)) for k in range(4))
    except (TypeError, ValueError):
        checks["generic_2x2"] = False
    return checks


def _is_zero(M) -> bool:
    """Whether every entry of the explicit sympy Matrix ``M`` is 0 as an identity in its symbols,
    powers with a symbolic exponent ``x^(i + 1)`` split as ``x^i x``."""
    return all(sympy.expand(sympy.expand_power_exp(sympy.expand(e))) == 0 for e in M)


def _closed_form_symbolic_shape(eta, s, i) -> bool:
    d = sympy.Dummy("d", positive=True, integer=True)
    S = sympy.MatrixSymbol(sympy.Dummy("S"), d, d)
    w_star = sympy.MatrixSymbol(sympy.Dummy("w_star"), d, 1)
    w_i = gd_closed_form(S, w_star, eta, i)
    step = _spectral_image(gd_step(w_i, S, w_star, eta) - gd_closed_form(S, w_star, eta, i + 1),
                           S, w_star, s)
    base = _spectral_image(gd_closed_form(S, w_star, eta, 0), S, w_star, s)
    if step is None or base is None:
        return False
    return (sympy.expand(sympy.expand_power_exp(sympy.expand(step))) == 0
            and sympy.expand(base) == 0)


def _explicit_matrices(s) -> list:
    """The explicit ``S`` of ``prove_gd_closed_form``: one eigenvalue ``s``; non-diagonal with
    eigenvalues 1, 3; singular non-diagonal with eigenvalues 0, 2, 3 (docs/theory.md section 2)."""
    return [sympy.Matrix([[s]]), sympy.Matrix([[2, 1], [1, 2]]),
            sympy.Matrix([[1, 1, 0], [1, 1, 0], [0, 0, 3]])]


def _closed_form_explicit_induction(eta, s, i) -> bool:
    """Step 2 of ``prove_gd_closed_form``: on each explicit ``S``, with the symbolic ``i``."""
    for S in _explicit_matrices(s):
        size = S.shape[0]
        I = sympy.eye(size)
        w_star = sympy.Matrix(sympy.symbols(f"u:{size}", cls=sympy.Dummy))
        E_i = error_operator(S, eta, i)
        w_i = gd_closed_form(S, w_star, eta, i)
        if not (isinstance(E_i, sympy.MatrixBase) and E_i.shape == S.shape
                and isinstance(w_i, sympy.MatrixBase) and w_i.shape == w_star.shape):
            return False
        ok = (_is_zero(E_i.subs(i, 0) - I)
              and _is_zero(error_operator(S, eta, i + 1) - (I - eta * S) * E_i)
              and _is_zero(gd_closed_form(S, w_star, eta, 0))
              and _is_zero(gd_step(w_i, S, w_star, eta) - gd_closed_form(S, w_star, eta, i + 1)))
        if not ok:
            return False
    return True


def _closed_form_integer_k(eta, s) -> bool:
    """Step 3 of ``prove_gd_closed_form``: on each explicit ``S`` and every ``k = 0 ..
    GD_PROOF_MAX_K``, the integer-k results against ``E_k = (I - eta S) E_{k-1}``, ``E_0 = I``
    (which step 2 shows the symbolic-k results to be) and ``w_k = w* - E_k w*``."""
    for S in _explicit_matrices(s):
        size = S.shape[0]
        w_star = sympy.Matrix(sympy.symbols(f"u:{size}", cls=sympy.Dummy))
        E = [sympy.eye(size)]
        for _ in range(GD_PROOF_MAX_K):
            E.append(((sympy.eye(size) - eta * S) * E[-1]).applyfunc(sympy.expand))
        closed = [(w_star - E_k * w_star).applyfunc(sympy.expand) for E_k in E]
        for k in range(GD_PROOF_MAX_K + 1):
            if not (_is_zero(error_operator(S, eta, k) - E[k])
                    and _is_zero(gd_closed_form(S, w_star, eta, k) - closed[k])):
                return False
            iterates = gd_iterates_exact(S, w_star, eta, k)
            if len(iterates) != k + 1 or not all(_is_zero(w - c) for w, c in zip(iterates, closed)):
                return False
    return True


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
    eta, s = exact_operand("eta", eta), exact_operand("s", s)
    b = sympy.Dummy("b")
    w = sympy.zeros(1, 1)
    S, zero, noise = sympy.Matrix([[s]]), sympy.zeros(1, 1), sympy.Matrix([[b]])
    for _ in range(k):
        w = gd_step(w, S, zero, eta, Xeps=noise).expand()
    g = sympy.Poly(w[0, 0].coeff(b), s)
    return (g ** 2 * sympy.Poly(s, s)).as_expr()
