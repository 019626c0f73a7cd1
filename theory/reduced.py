"""The isotropic reduction of the CoT training dynamics (docs/theory.md section 6, Theorem 4.1).

Restrict the LSA to ``V31 = a I``, ``W13 = b I``, ``W24 = -1``, every other block zero.  With
teacher forcing the model's step from the GD iterate ``w_i = P_i w*``, ``P_i = I - (I - eta S)^i``,
is ``Delta_i = a S (b w_i - w*)`` and GD's step is ``w_{i+1} - w_i = -eta S (w_i - w*)``, so

    Delta_i - (w_{i+1} - w_i) = S (u P_i - v I) w*,     u = a b + eta,   v = a + eta.

The CoT objective is the mean over the steps ``i = 0 .. k-1`` (and over prompts) of
``(1/2) ||Delta_i - (w_{i+1} - w_i)||^2``; averaging over ``w* ~ N(0, I)`` (S and P_i commute)

    L(a, b) = (1/k) sum_i (1/2) [u^2 E tr(S^2 P_i^2) - 2 u v E tr(S^2 P_i) + v^2 E tr(S^2)]
            = (1/2k) [u, v] G [u, v]^T,   G = [[A, -B], [-B, C]],
    A = sum_i E tr(S^2 P_i^2),   B = sum_i E tr(S^2 P_i),   C = k E tr(S^2).

Each expectation is ``E tr(p(S))`` for a polynomial ``p`` of degree ``<= 2i + 2 <= 2k``, hence exact
through ``wishart_moment`` (available to ``MAX_EXACT_MOMENT``).

Critical points.  ``dL/db = (1/k) a (A u - B v)`` and
``dL/da = (1/k) [b (A u - B v) + (C v - B u)]``.  If ``a != 0`` both vanish iff ``G [u, v] = 0``,
i.e. (G positive definite) ``u = v = 0``: the global minimum ``a = -eta``, ``b = 1``, where
``L = 0``.  If ``a = 0`` then ``u = v = eta`` and ``dL/da = 0`` gives
``b = (C - B) / (B - A)``: a saddle (``d^2 L/db^2 = 0`` there while ``d^2 L/da db = eta (A - B)/k``).
G is positive definite for ``k >= 2``: ``[u, v] G [u, v]^T = sum_i E ||S (u P_i - v I)||_F^2``
vanishes only if ``v = 0`` (step 0, ``P_0 = 0``) and ``u = 0`` (step 1, ``P_1 = eta S``).  For
``k = 1`` only step 0 exists, b is not identified and the zeros form the line ``a = -eta``.

Pure sympy: no numpy, no torch.
"""
from __future__ import annotations

import sympy

from .validation import check_dim, check_eta_exact, check_int
from .wishart import check_steps_exact, trace_moment, wishart_moment

__all__ = ["prove_reduced_unique_zero", "reduced_argmin_a", "reduced_coefficients",
           "reduced_critical_points", "reduced_gradient", "reduced_gram", "reduced_loss",
           "reduced_loss_symbolic", "reduced_moment_symbols", "reduced_symbols", "trace_moment"]

_a, _b = sympy.symbols("a b", real=True)
_eta = sympy.Symbol("eta", positive=True)
_s = sympy.Dummy("s")                     # private eigenvalue variable


def _check_eta(eta):
    """``check_eta_exact``, refusing a step that contains the polynomial variables ``a``, ``b``
    (they would be confused with the parameters of the reduction)."""
    eta = check_eta_exact("eta", eta)
    if eta.free_symbols & {_a, _b}:
        raise ValueError(f"eta must not contain the reduction's variables a, b (reduced_symbols), got {eta}")
    return eta


def reduced_symbols() -> tuple:
    """The symbols ``(a, b)`` of the isotropic reduction: ``V31 = a I``, ``W13 = b I``
    (docs/theory.md section 6).  Every expression of this module is a polynomial in them.

    >>> reduced_symbols()
    (a, b)
    """
    return _a, _b


def reduced_moment_symbols(k: int) -> tuple:
    """The named expectations of the reduced loss (docs/theory.md section 6), as sympy Symbols:
    ``(A, B, C)`` with ``A[i]`` named ``E tr(S^2 P_i^2)``, ``B[i]`` named ``E tr(S^2 P_i)``
    (``i = 0 .. k-1``, lists) and ``C`` named ``E tr(S^2)``; ``P_i = I - (I - eta S)^i``.

    >>> A, B, C = reduced_moment_symbols(2)
    >>> A, B, C
    ([E tr(S^2 P_0^2), E tr(S^2 P_1^2)], [E tr(S^2 P_0), E tr(S^2 P_1)], E tr(S^2))
    """
    k = check_int("k", k, 1)
    A = [sympy.Symbol(f"E tr(S^2 P_{i}^2)", real=True) for i in range(k)]
    B = [sympy.Symbol(f"E tr(S^2 P_{i})", real=True) for i in range(k)]
    return A, B, sympy.Symbol("E tr(S^2)", positive=True)


def reduced_loss_symbolic(k: int, eta=None) -> sympy.Expr:
    """The CoT population loss ``L(a, b)`` of the isotropic reduction with the expectations left
    as named symbols (``reduced_moment_symbols``), docs/theory.md section 6 (module docstring):
    ``(1/k) sum_i (1/2) [(ab + eta)^2 E tr(S^2 P_i^2) - 2 (ab + eta)(a + eta) E tr(S^2 P_i)
    + (a + eta)^2 E tr(S^2)]``.  ``eta=None`` leaves ``eta`` a Symbol.

    >>> L = reduced_loss_symbolic(2)
    >>> sorted(map(str, L.free_symbols))
    ['E tr(S^2 P_0)', 'E tr(S^2 P_0^2)', 'E tr(S^2 P_1)', 'E tr(S^2 P_1^2)', 'E tr(S^2)', 'a', 'b', 'eta']
    >>> a, b = reduced_symbols()
    >>> L.subs({a: -sympy.Symbol("eta", positive=True), b: 1})
    0
    """
    k = check_int("k", k, 1)
    eta = _eta if eta is None else _check_eta(eta)
    A, B, C = reduced_moment_symbols(k)
    u, v = _a * _b + eta, _a + eta
    terms = [u ** 2 * A[i] - 2 * u * v * B[i] + v ** 2 * C for i in range(k)]
    return sympy.Add(*terms) / (2 * k)


def reduced_argmin_a(k: int, eta=None) -> sympy.Expr:
    """The minimiser of the reduced loss in ``a`` at fixed ``b`` (docs/theory.md section 6), in the
    named expectations (substitute ``reduced_coefficients`` for exact values):
    ``a*(b) = -eta (A b - B (1 + b) + C) / (A b^2 - 2 B b + C)`` with the aggregated
    ``A, B, C`` of ``reduced_gram``; solved from ``dL/da = 0`` (L is quadratic in a, with
    curvature ``(A b^2 - 2 B b + C)/k > 0`` for k >= 2).  It is the slow manifold of the flow from
    a small initialisation: stage 1 takes ``a`` to ``a*(b0)`` while ``b`` stays put, stage 2 moves
    along ``a = a*(b)`` to ``a*(1) = -eta``.

    >>> a, b = reduced_symbols()
    >>> sympy.simplify(reduced_argmin_a(3).subs(b, 1))
    -eta
    """
    k = check_int("k", k, 1)
    eta_value = _eta if eta is None else _check_eta(eta)
    dL = sympy.Poly(sympy.expand(sympy.diff(reduced_loss_symbolic(k, eta_value), _a)), _a)
    c1, c0 = dL.all_coeffs()          # dL/da = c1 a + c0: L is quadratic in a
    return sympy.collect(-c0 / c1, _b)


def reduced_coefficients(d, n, eta, k: int) -> dict:
    """Exact values of the named expectations of the reduced loss (docs/theory.md section 6), as a
    substitution map ``{symbol: value}`` for ``reduced_loss_symbolic(k)``'s symbols.

    ``E tr(S^2 P_i^2)`` and ``E tr(S^2 P_i)`` expand ``P_i = 1 - (1 - eta s)^i`` over the
    eigenvalues, so they need ``E tr(S^m)`` for ``m <= 2i + 2``, i.e. ``2k`` in all; for
    ``2k > MAX_EXACT_MOMENT`` a ValueError says so (use numerics Monte Carlo then).
    ``eta`` a number (exact rational when short) or a Symbol (polynomials in eta).

    >>> c = reduced_coefficients(10, 20, sympy.Rational(2, 5), 2)
    >>> [c[x] for x in sympy.flatten(reduced_moment_symbols(2))]
    [0, 1041/100, 0, 597/50, 31/2]
    """
    d = check_dim("d", d)
    n = check_dim("n", n)
    k = check_int("k", k, 1)
    eta = _check_eta(eta)
    check_steps_exact("the reduced loss", k)
    A, B, C = reduced_moment_symbols(k)
    out = {}
    for i in range(k):
        P = 1 - (1 - eta * _s) ** i
        out[A[i]] = trace_moment(_s ** 2 * P ** 2, _s, d, n)
        out[B[i]] = trace_moment(_s ** 2 * P, _s, d, n)
    out[C] = wishart_moment(2, d, n)
    return out


def reduced_gram(d, n, eta, k: int) -> sympy.Matrix:
    """The Gram matrix ``G = [[A, -B], [-B, C]]`` with ``L(a, b) = (1/2k) [u, v] G [u, v]^T``,
    ``u = ab + eta``, ``v = a + eta``, ``A = sum_i E tr(S^2 P_i^2)``, ``B = sum_i E tr(S^2 P_i)``,
    ``C = k E tr(S^2)`` (docs/theory.md section 6; module docstring), exact.

    >>> reduced_gram(10, 20, sympy.Rational(2, 5), 2)
    Matrix([
    [1041/100, -597/50],
    [ -597/50,      31]])
    """
    k = check_int("k", k, 1)
    coeffs = reduced_coefficients(d, n, eta, k)
    A, B, C = reduced_moment_symbols(k)
    sA = sympy.expand(sum((coeffs[x] for x in A), sympy.Integer(0)))
    sB = sympy.expand(sum((coeffs[x] for x in B), sympy.Integer(0)))
    return sympy.Matrix([[sA, -sB], [-sB, k * coeffs[C]]])


def reduced_loss(d, n, eta, k: int) -> sympy.Expr:
    """The CoT population loss ``L(a, b)`` of the isotropic reduction (docs/theory.md section 6) as an
    expanded polynomial in ``(a, b)`` (``reduced_symbols``) with exact coefficients:
    ``reduced_loss_symbolic`` with ``reduced_coefficients`` substituted.

    >>> a, b = reduced_symbols()
    >>> reduced_loss(10, 20, sympy.Rational(2, 5), 2).subs({a: sympy.Rational(-2, 5), b: 1})
    0
    """
    eta_exact = _check_eta(eta)
    expr = reduced_loss_symbolic(k, eta_exact)
    return sympy.expand(expr.subs(reduced_coefficients(d, n, eta_exact, k)))


def reduced_gradient(d, n, eta, k: int) -> tuple:
    """``(dL/da, dL/db)`` of the reduced loss (docs/theory.md section 6), exact polynomials in (a, b).

    >>> a, b = reduced_symbols()
    >>> [g.subs({a: sympy.Rational(-2, 5), b: 1}) for g in reduced_gradient(10, 20, 0.4, 3)]
    [0, 0]
    """
    L = reduced_loss(d, n, eta, k)
    return sympy.expand(sympy.diff(L, _a)), sympy.expand(sympy.diff(L, _b))


def prove_reduced_unique_zero(d, n, eta, k: int) -> bool:
    """True when ``(a, b) = (-eta, 1)`` is the unique zero of the reduced loss (docs/theory.md
    section 6), proved for the library's ``reduced_loss`` and ``reduced_gram``: the loss is the
    quadratic form ``(1/2k) [u, v] G [u, v]^T`` (``u = ab + eta``, ``v = a + eta``; exact
    polynomial identity), the Gram matrix ``G`` is positive definite (exact leading minors), so
    ``L = 0`` forces ``u = v = 0``, and the loss vanishes at ``(-eta, 1)``.  False otherwise
    (k = 1: G is singular and every ``a = -eta`` is a zero).  A symbolic ``eta`` is allowed when
    the signs of the minors are decided by its assumptions (else ValueError).

    >>> prove_reduced_unique_zero(10, 20, 0.4, 3), prove_reduced_unique_zero(10, 20, 0.4, 1)
    (True, False)
    """
    eta = _check_eta(eta)
    k = check_int("k", k, 1)
    G = reduced_gram(d, n, eta, k)
    L = reduced_loss(d, n, eta, k)
    uv = sympy.Matrix([_a * _b + eta, _a + eta])
    quadratic = sympy.expand(L - (uv.T * G * uv)[0, 0] / (2 * k)) == 0
    vanishes = sympy.simplify(L.subs({_a: -eta, _b: 1})) == 0
    signs = [sympy.simplify(G[0, 0]).is_positive, sympy.simplify(G.det()).is_positive]
    if None in signs:
        raise ValueError(f"the signs of the leading minors of G are not decided for eta = {eta}")
    return bool(quadratic and vanishes and all(signs))


def _kind(H: sympy.Matrix) -> str:
    det, tr = sympy.simplify(H.det()), sympy.simplify(H.trace())
    if det < 0:
        return "saddle"
    if det > 0:
        return "minimum" if tr > 0 else "maximum"
    return "degenerate"


def reduced_critical_points(d, n, eta, k: int) -> list:
    """All real critical points of the reduced loss, exact and classified (docs/theory.md section 6).

    Found by solving ``grad L = 0`` with ``sympy.solve`` (complex roots dropped); each entry is a
    dict with ``a``, ``b``, ``loss``, ``hessian`` (2 x 2 exact) and ``kind`` (``minimum``,
    ``saddle``, ``maximum`` or ``degenerate`` by the Hessian's determinant and trace).  For
    ``k >= 2`` the result is the global minimum ``(-eta, 1)`` with loss 0 and the saddle
    ``(0, (C - B)/(B - A))`` (module docstring); for ``k = 1`` the minima form the line
    ``a = -eta`` and a ValueError says so.  Needs a numeric eta.

    >>> [(p["a"], p["kind"]) for p in reduced_critical_points(10, 20, sympy.Rational(2, 5), 2)]
    [(-2/5, 'minimum'), (0, 'saddle')]
    """
    k = check_int("k", k, 1)
    eta = _check_eta(eta)
    if not eta.is_number:
        raise ValueError("eta must be a number for reduced_critical_points, got a symbol")
    if k == 1:
        raise ValueError("k must be >= 2: for k = 1 the reduced loss does not depend on b and "
                         "its minima form the line a = -eta")
    L = reduced_loss(d, n, eta, k)
    ga, gb = sympy.diff(L, _a), sympy.diff(L, _b)
    H = sympy.hessian(L, (_a, _b))
    points = []
    for sol in sympy.solve([ga, gb], [_a, _b], dict=True):
        pa, pb = sol[_a], sol[_b]
        if not (pa.is_real and pb.is_real):
            continue
        Hp = H.subs({_a: pa, _b: pb})
        points.append({"a": pa, "b": pb, "loss": sympy.simplify(L.subs({_a: pa, _b: pb})),
                       "hessian": Hp, "kind": _kind(Hp)})
    points.sort(key=lambda p: (float(p["a"]), float(p["b"])))
    return points
