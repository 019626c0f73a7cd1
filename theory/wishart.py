"""Exact moments of a real Wishart matrix and their Marchenko-Pastur limit (docs/theory.md section 9).

``S = X X^T / n`` with ``X`` a ``d x n`` matrix of i.i.d. standard real Gaussians (real Wishart,
Laguerre orthogonal ensemble, identity covariance).  ``n^m E tr(S^m) = E tr((X X^T)^m)`` is a
polynomial ``Q_m(d, n)`` with non-negative integer coefficients, of total degree ``m + 1``,
divisible by ``d n`` and symmetric in ``(d, n)`` (``tr((X X^T)^m) = tr((X^T X)^m)``).

Which method gives ``Q_m`` (see ``wishart_moment_method``):

* ``m = 0``: ``E tr(I_d) = d``.
* ``1 <= m <= 6``: Wick / Isserlis.  ``tr((X X^T)^m)`` is the sum over indices of
  ``prod_t X[i_t, j_t] X[i_{t+1}, j_t]``; every perfect matching of the ``2m`` factors (any
  matching, real case, ``(2m - 1)!!`` of them) identifies row indices and column indices and
  contributes ``d^(#row classes) n^(#column classes)``.
* ``7 <= m <= MAX_EXACT_MOMENT``: the bidiagonal model.  By Householder reflections (Silverstein
  1985; Dumitriu and Edelman, "Matrix models for beta ensembles", J. Math. Phys. 2002, beta = 1)
  ``X X^T`` is orthogonally similar to ``B B^T`` with ``B`` lower bidiagonal, independent
  entries ``B[i, i] ~ chi_{n-i+1}`` and ``B[i+1, i] ~ chi_{d-i}`` (1-based).  So
  ``tr((B B^T)^m)`` is a sum over closed walks of length ``2m`` on the path
  ``row 1 - col 1 - row 2 - col 2 - ...`` whose edges carry those chi variables; each edge is
  crossed an even number ``2k`` of times and contributes ``E chi_a^(2k) = a (a + 2) ... (a + 2k - 2)``.
  Walks with a given crossing profile are counted by products of binomials (rooted at their
  highest vertex, by the cycle lemma), so one dynamic programme over the edges gives
  ``Q_m(d, n)`` exactly, as a polynomial in ``n``, for every fixed ``d`` (a polynomial identity
  in ``n``, hence valid for every ``n``).  This is done for ``d = 1, ..., floor((M + 1) / 2) + 1``
  and the bivariate polynomial is recovered from these slices and the ``(d, n)`` symmetry; the
  one surplus slice is a consistency check.  This is an exact evaluation, not a recursion in
  ``m``; all ``m <= M`` come out of one run, for ``M`` in 12, 20, 30, 40, 50, 60 (cost of a
  run: ``O(M^4)`` multiply-adds of integers of ``O(M^2 log M)`` bits, the polynomials in ``n``
  being packed into single integers; steeply growing with ``M``, hence the cache).

Both methods agree for ``m <= 6`` (tests/theory/test_wishart.py; also checked for ``m = 7``).
The bidiagonal results also pass ``d = 1`` (``E chi_n^(2m)``), Monte Carlo and Marchenko-Pastur
checks.  Results are cached.

A general covariance (columns ``N(0, Sigma)``, docs/theory.md section 13): ``wishart_moment(...,
sigma=Sigma)`` and ``trace_moment(..., sigma=Sigma)`` through ``sigma_moments``, which evaluates
the Stein recursion of ``theory.wishart_sigma`` (exact; ``m <= MAX_SIGMA_MOMENT`` for a numeric
Sigma, ``m <= MAX_SIGMA_SYMBOLIC_MOMENT`` for a symbolic one).

The Marchenko-Pastur limit ``E tr(S^m) / d -> sum_r N(m, r) gamma^(r - 1)`` as ``d, n -> oo``
with ``d / n -> gamma`` is ``mp_moment``; ``narayana`` gives the Narayana numbers ``N(m, r)``.

Pure sympy and the Python standard library: no numpy, scipy or torch.
"""
from __future__ import annotations

import math
import numbers
from fractions import Fraction
from functools import lru_cache

import sympy

from .validation import check_covariance, check_dim, check_int, check_nonnegative_exact, exact_real
from .wishart_sigma import (MAX_SIGMA_MOMENT, MAX_SIGMA_SYMBOLIC_MOMENT, numeric_moments,
                            power_sum_polynomial)

__all__ = ["MAX_EXACT_MOMENT", "MAX_SIGMA_MOMENT", "MAX_SIGMA_SYMBOLIC_MOMENT", "WICK_MAX_MOMENT",
           "mp_moment", "narayana", "wishart_moment", "wishart_moment_method"]

#: Largest m for which ``wishart_moment`` is available exactly.
MAX_EXACT_MOMENT = 60

#: Largest m computed by Wick pairings; larger m use the bidiagonal model.
WICK_MAX_MOMENT = 6

# The bidiagonal computation is done for all m <= M at once, M the smallest of these >= m.
_BIDIAGONAL_BLOCKS = (12, 20, 30, 40, 50, 60)

_d, _n = sympy.symbols("d n", positive=True, integer=True)


def wishart_moment_method(m: int) -> str:
    """Name of the exact method ``wishart_moment`` uses for ``E tr(S^m)`` (docs/theory.md section 9):
    ``"trivial"`` (m = 0), ``"wick"`` (1 <= m <= 6) or ``"bidiagonal"`` (7 <= m <= 60).

    >>> wishart_moment_method(3), wishart_moment_method(20)
    ('wick', 'bidiagonal')
    """
    m = _check_moment_order(m)
    if m == 0:
        return "trivial"
    if m <= WICK_MAX_MOMENT:
        return "wick"
    return "bidiagonal"


def wishart_moment(m: int, d, n, *, sigma=None) -> sympy.Expr:
    """Exact ``E tr(S^m)``, ``S = X X^T / n``, ``X`` a ``d x n`` standard real Gaussian matrix
    (real Wishart moments, docs/theory.md section 9); with ``sigma`` the columns of ``X`` are
    ``N(0, Sigma)`` (docs/theory.md section 13).

    ``d`` and ``n`` are positive integers (the result is a sympy Rational) or sympy Symbols (the
    result is the rational function ``Q_m(d, n) / n^m``, factored).  ``m = 0`` gives ``d``.
    Available for ``0 <= m <= MAX_EXACT_MOMENT``; the module docstring describes the methods.

    >>> wishart_moment(2, 10, 20)
    31/2
    >>> d, n = sympy.symbols("d n", positive=True, integer=True)
    >>> wishart_moment(2, d, n)
    d*(d + n + 1)/n
    >>> wishart_moment(3, d, n)
    d*(d**2 + 3*d*n + 3*d + n**2 + 3*n + 4)/n**2

    A covariance ``sigma`` (docs/theory.md section 13): an explicit ``d x d`` symmetric positive
    semi-definite matrix (``validation.check_covariance``; singular allowed) or a ``MatrixSymbol``
    of shape ``(d, d)`` (``d`` may be a Symbol then).  The result is exact: numeric Sigma, ``n``
    an int or a Symbol, for ``m <= MAX_SIGMA_MOMENT``; symbolic Sigma (MatrixSymbol: a polynomial in
    the power sums ``Trace(Sigma**j)``; symbolic entries: in the entries) for
    ``m <= MAX_SIGMA_SYMBOLIC_MOMENT``.  Method: the Stein recursion of ``theory.wishart_sigma``.

    >>> wishart_moment(2, 2, 3, sigma=sympy.diag(1, 4))     # (1 + 1/n) tr(Sigma^2) + tr(Sigma)^2 / n
    31
    >>> Sigma = sympy.MatrixSymbol("Sigma", d, d)
    >>> wishart_moment(2, d, n, sigma=Sigma)
    Trace(Sigma**2) + (Trace(Sigma**2) + Trace(Sigma)**2)/n
    """
    if sigma is not None:
        return sigma_moments([m], d, n, sigma)[0]
    m = _check_moment_order(m)
    d = check_dim("d", d)
    n = check_dim("n", n)
    if m == 0:
        return sympy.sympify(d)
    coeffs = _moment_coefficients(m)
    if isinstance(d, int) and isinstance(n, int):
        total = sum(c * d ** i * n ** j for (i, j), c in coeffs.items())
        return sympy.Rational(total, n ** m)
    expr = _symbolic_moment(m).subs({_d: d, _n: n}, simultaneous=True)
    return expr if isinstance(d, sympy.Symbol) and isinstance(n, sympy.Symbol) else sympy.factor(expr)


def narayana(m: int, r: int) -> sympy.Integer:
    """Narayana number ``N(m, r) = C(m, r) C(m, r - 1) / m`` (Marchenko-Pastur moments,
    docs/theory.md section 9); 0 when ``r`` is outside ``1..m``.

    >>> [narayana(4, r) for r in range(1, 5)]
    [1, 6, 6, 1]
    """
    m = check_int("m", m, 1)
    if isinstance(r, bool) or not isinstance(r, (numbers.Integral, sympy.Integer)):
        raise ValueError(f"r must be an integer, got {r!r}")
    r = int(r)
    if not 1 <= r <= m:
        return sympy.Integer(0)
    return sympy.Integer(math.comb(m, r) * math.comb(m, r - 1) // m)


def mp_moment(m: int, gamma) -> sympy.Expr:
    """Marchenko-Pastur moment ``lim E tr(S^m) / d = sum_{r=1}^m N(m, r) gamma^(r - 1)`` as
    ``d, n -> oo`` with ``d / n -> gamma`` (docs/theory.md section 9); ``m = 0`` gives 1.

    ``gamma`` is a number >= 0 (exact Rational out; numbers read by ``validation.exact_real``)
    or a sympy expression such as a Symbol (expanded polynomial out).

    >>> mp_moment(3, sympy.Rational(1, 2))
    11/4
    >>> mp_moment(3, sympy.Symbol("g"))
    g**2 + 3*g + 1
    """
    m = check_int("m", m, 0)
    gamma = check_nonnegative_exact("gamma", gamma)
    total = sum((narayana(m, r) * gamma ** (r - 1) for r in range(1, m + 1)), sympy.Integer(0))
    return sympy.Integer(1) if m == 0 else sympy.expand(total)


def _check_moment_order(m) -> int:
    m = check_int("m", m, 0)
    if m > MAX_EXACT_MOMENT:
        raise ValueError(f"E tr(S^m) is available exactly for m <= {MAX_EXACT_MOMENT}, got m = {m}")
    return m


def check_steps_exact(what: str, k: int) -> None:
    """Raise ValueError when ``what`` (an exact loss of k GD steps, which needs ``E tr(S^m)``
    for m <= 2k) asks for moments beyond ``MAX_EXACT_MOMENT``."""
    if 2 * k > MAX_EXACT_MOMENT:
        raise ValueError(f"{what} needs E tr(S^m) for m <= 2k = {2 * k}; exact moments "
                         f"are available for m <= {MAX_EXACT_MOMENT} (k <= {MAX_EXACT_MOMENT // 2})")


def check_sigma_steps_exact(what: str, k: int, d, sigma) -> None:
    """As ``check_steps_exact`` for prompts with covariance ``sigma`` (docs/theory.md section 13):
    ``2k`` against ``MAX_SIGMA_MOMENT`` (numeric Sigma) or ``MAX_SIGMA_SYMBOLIC_MOMENT``."""
    kind = _sigma_kind(sigma, d)[0]
    limit = MAX_SIGMA_MOMENT if kind == "numeric" else MAX_SIGMA_SYMBOLIC_MOMENT
    if 2 * k > limit:
        raise ValueError(f"{what} needs E tr(S^m) for m <= 2k = {2 * k}; with a {kind} sigma exact "
                         f"moments are available for m <= {limit} (k <= {limit // 2})")


@lru_cache(maxsize=None)
def _symbolic_moment(m: int) -> sympy.Expr:
    """``Q_m(d, n) / n^m`` in the module's symbols ``d, n``, factored."""
    expr = sympy.Add(*[c * _d ** i * _n ** j for (i, j), c in _moment_coefficients(m).items()])
    return sympy.factor(expr / _n ** m)


@lru_cache(maxsize=None)
def _moment_coefficients(m: int) -> dict:
    """``{(i, j): c}`` with ``Q_m(d, n) = E tr((X X^T)^m) = sum c d^i n^j``, for ``m >= 1``."""
    if m <= WICK_MAX_MOMENT:
        return _wick_coefficients(m)
    block = next(M for M in _BIDIAGONAL_BLOCKS if M >= m)
    return _bidiagonal_block(block)[m]


# ---------------------------------------------------------------------------------------------
# Wick / Isserlis pairings (1 <= m <= 6)


@lru_cache(maxsize=None)
def _wick_coefficients(m: int) -> dict:
    """Sum over all perfect matchings of the ``2m`` factors of ``tr((X X^T)^m)``.

    Factor ``2s`` is ``X[i_s, j_s]`` and factor ``2s + 1`` is ``X[i_{s+1}, j_s]`` (indices mod m);
    pairing two factors identifies their row indices and their column indices.
    """
    def row(t):
        return t // 2 if t % 2 == 0 else (t // 2 + 1) % m

    def find(parent, a):
        while parent[a] != a:
            a = parent[a]
        return a

    counts: dict = {}

    def visit(free, rows, cols):
        if not free:
            key = (sum(1 for a in range(m) if rows[a] == a), sum(1 for a in range(m) if cols[a] == a))
            counts[key] = counts.get(key, 0) + 1
            return
        a, rest = free[0], free[1:]
        for k, b in enumerate(rest):
            r, c = rows[:], cols[:]
            ra, rb = find(r, row(a)), find(r, row(b))
            r[max(ra, rb)] = min(ra, rb)
            ca, cb = find(c, a // 2), find(c, b // 2)
            c[max(ca, cb)] = min(ca, cb)
            visit(rest[:k] + rest[k + 1:], r, c)

    visit(tuple(range(2 * m)), list(range(m)), list(range(m)))
    return counts


# ---------------------------------------------------------------------------------------------
# Bidiagonal model (7 <= m <= MAX_EXACT_MOMENT)


def _tail_tables(mus, M):
    """For edges ``mus[0], mus[1], ...`` of a path walked away from a vertex, return ``G`` with
    ``G[e][u][s]`` = sum over crossing profiles of edges ``e+1, e+2, ...`` with ``s`` crossings in
    total of (walk count) x (moments), times ``mus[e][u]``, edge ``e`` being crossed ``u >= 1``
    times (``u + s <= M``).  ``mus[e][k]`` is the moment of edge ``e`` for ``k`` crossings.

    The count of the part of a walk beyond edge ``e`` is ``prod C(u_e + u_{e+1} - 1, u_{e+1})``:
    the ``u_{e+1}`` excursions over edge ``e + 1`` are shared out among the ``u_e`` visits.
    """
    L = len(mus)
    comb = [[math.comb(a, b) for b in range(M + 1)] for a in range(2 * M + 1)]
    G = [None] * L
    for e in range(L - 1, -1, -1):
        nxt = G[e + 1] if e + 1 < L else None
        G[e] = [None] * (M + 1)
        for u in range(1, M + 1):
            row = [0] * (M - u + 1)
            row[0] = 1
            if nxt is not None:
                for s in range(1, M - u + 1):
                    tot = 0
                    for u2 in range(1, s + 1):
                        f = nxt[u2][s - u2]
                        if f:
                            tot += comb[u + u2 - 1][u2] * f
                    row[s] = tot
            mu = mus[e][u]
            G[e][u] = [mu * f for f in row]
    return G


@lru_cache(maxsize=None)
def _bidiagonal_block(M: int) -> dict:
    """``{m: {(i, j): c}}`` for ``1 <= m <= M`` from the bidiagonal model (module docstring).

    Index the path from its far end: vertex 0 is column ``d``, and the edges are
    ``chi_nu, chi_1, chi_{nu+1}, chi_2, chi_{nu+2}, ...`` with ``nu = n - d + 1`` (the entries
    ``B[d, d], B[d, d-1], B[d-1, d-1], ...``).  In ``nu`` this sequence does not depend on ``d``:
    the path of ``d`` is its first ``2d - 1`` edges.

    Closed walks are counted by their highest vertex ``w`` (cycle lemma): if a closed walk of
    length ``2m`` crosses the edge below ``w`` ``u`` times, ``u`` of its ``2m`` rotations start
    at ``w``, so walks starting anywhere number ``2m / u`` times the excursions down from ``w``,
    and half of the starts are row vertices, which is what ``tr((B B^T)^m)`` counts.  Hence
    ``Q_m(d) = m sum_{e <= 2d - 2} sum_u G[e][u][m - u] / u`` with ``G`` the tables of the edges
    walked from ``e`` down to 0, shared by every ``d``.

    Every polynomial in ``nu`` here has non-negative integer coefficients, so it is evaluated at
    ``nu = 2^bits`` and read back digit by digit.  ``bits`` exceeds log2 of lcm(1..M) x (number
    of closed walks of length ``2M`` from all starts, at most ``2d 4^M``) x (largest moment
    product at ``nu = 1``, at most ``(d + 2M)^M``), a bound on every coefficient, so no digit
    overflows.
    """
    K = (M + 1) // 2 + 1
    L = 2 * K - 1
    bits = math.ceil(math.log2(2 * K * math.lcm(*range(1, M + 1))) + 2 * M
                     + M * math.log2(K + 2 * M)) + 2
    x = 1 << bits
    mask = x - 1
    mus = []
    for e in range(L):
        shift = x + e // 2 if e % 2 == 0 else e // 2 + 1      # chi_{nu + k}, chi_{k + 1}
        mu = [1]
        for k in range(M):
            mu.append(mu[-1] * (shift + 2 * k))
        mus.append(mu)
    T = _tail_tables(mus[::-1], M)
    G = T[::-1]                                                # G[e]: tail e - 1, ..., 0
    out = {}
    for m in range(1, M + 1):
        lcm_m = math.lcm(*range(1, m + 1))
        per_edge = [sum((lcm_m // u) * G[e][u][m - u] for u in range(1, m + 1)) for e in range(L)]
        vals = {}
        packed = 0
        for d in range(1, K + 1):
            packed += per_edge[2 * d - 2] + (per_edge[2 * d - 3] if d > 1 else 0)
            t, digits = packed, []
            for _ in range(m + 1):
                q, r = divmod((t & mask) * m, lcm_m)
                if r:
                    raise ArithmeticError("cycle-lemma count is not an integer")
                digits.append(q)
                t >>= bits
            if t:
                raise ArithmeticError("packed polynomial overflow")  # excluded by the bound
            vals[d] = _shift_to_n(digits, d)
        out[m] = _from_slices(m, vals)
    return out


def _shift_to_n(coeffs_nu, d: int) -> list:
    """Coefficients in ``n`` of ``sum_k c_k nu^k`` with ``nu = n - (d - 1)``."""
    a = -(d - 1)
    out = [0] * len(coeffs_nu)
    for k, c in enumerate(coeffs_nu):
        if c:
            for j in range(k + 1):
                out[j] += c * math.comb(k, j) * a ** (k - j)
    return out


@lru_cache(maxsize=None)
def _vandermonde_inverse(u: int):
    """``(D, W)`` with integer ``W``: ``a_t = sum_k W[t][k] p(k + 1) / D`` recovers the
    coefficients of a polynomial ``p`` of degree ``< u`` from its values at ``1, ..., u``."""
    A = [[Fraction(k ** t) for t in range(u)] + [Fraction(int(k == r)) for r in range(1, u + 1)]
         for k in range(1, u + 1)]
    for col in range(u):                                       # Gauss-Jordan, exact
        piv = next(r for r in range(col, u) if A[r][col])
        A[col], A[piv] = A[piv], A[col]
        inv = 1 / A[col][col]
        A[col] = [a * inv for a in A[col]]
        for r in range(u):
            if r != col and A[r][col]:
                f = A[r][col]
                A[r] = [a - f * b for a, b in zip(A[r], A[col])]
    inverse = [row[u:] for row in A]
    D = math.lcm(*[a.denominator for row in inverse for a in row])
    return D, [[int(a * D) for a in row] for row in inverse]


def _from_slices(m: int, vals: dict) -> dict:
    """Recover ``Q_m(d, n) = sum c[i, j] d^i n^j`` (``i, j >= 1``, ``i + j <= m + 1``,
    ``c[i, j] = c[j, i]``) from the polynomials ``vals[d]`` (coefficients in ``n``), ``d = 1..K``.

    The coefficient of ``n^j`` is a polynomial in ``d`` of degree ``<= m + 1 - j`` without constant
    term; its coefficients of ``d^i`` with ``i > j`` are known by symmetry from larger ``j``, which
    leaves ``u = min(j, m + 1 - j) <= K - 1`` unknowns, found from the slices ``d = 1..u``; the
    other slices are checked, so an asymmetric or inconsistent input raises ArithmeticError.
    """
    ds = sorted(vals)
    if ds != list(range(1, len(ds) + 1)) or any(vals[d][0] for d in ds):
        raise ArithmeticError("Q_m(d, 0) != 0: inconsistent bidiagonal slices")
    c = {}
    for j in range(m, 0, -1):
        top = m + 1 - j
        u = min(j, top)
        p = []                                  # p(d) = (coefficient of n^j - known part) / d
        for d in ds[:u]:
            q, r = divmod(vals[d][j] - sum(c.get((j, i), 0) * d ** i for i in range(u + 1, top + 1)), d)
            if r:
                raise ArithmeticError("coefficient of n^j is not divisible by d")
            p.append(q)
        D, W = _vandermonde_inverse(u)
        for t in range(u):
            a, r = divmod(sum(w * y for w, y in zip(W[t], p)), D)
            if r:
                raise ArithmeticError("non-integer coefficient: inconsistent bidiagonal slices")
            if a:
                c[(t + 1, j)] = a
        for i in range(u + 1, top + 1):
            if c.get((j, i)):
                c[(i, j)] = c[(j, i)]
        for d in ds[u:]:
            if sum(c.get((i, j), 0) * d ** i for i in range(1, top + 1)) != vals[d][j]:
                raise ArithmeticError("bidiagonal slices are not symmetric in (d, n)")
    return c


def trace_moment(p: sympy.Expr, s: sympy.Symbol, d, n, *, sigma=None) -> sympy.Expr:
    """``E tr(p(S))`` for a polynomial ``p`` in ``s`` (the eigenvalue variable), ``S = X X^T / n``
    with ``X`` a ``d x n`` standard Gaussian matrix, by linearity from the exact Wishart moments
    ``E tr(S^m)`` (docs/theory.md section 9).  Coefficients may involve other symbols (e.g. eta).
    With ``sigma`` the columns of ``X`` are ``N(0, Sigma)`` (``wishart_moment``; docs/theory.md
    section 13), degree up to its limits.

    >>> s = sympy.Symbol("s")
    >>> trace_moment(s ** 2 - s, s, 10, 20)
    11/2
    >>> trace_moment(s ** 2 - s, s, 10, 20, sigma=sympy.eye(10))
    11/2
    """
    d = check_dim("d", d)
    n = check_dim("n", n)
    poly = sympy.Poly(sympy.expand(exact_real("p", p)), s)
    terms = poly.terms()
    if sigma is None:
        if poly.degree() > MAX_EXACT_MOMENT:
            raise ValueError(f"p has degree {poly.degree()} in {s}; exact moments E tr(S^m) are "
                             f"available for m <= {MAX_EXACT_MOMENT}")
        moments = {m: wishart_moment(m, d, n) for (m,), _ in terms}
    else:
        orders = sorted({m for (m,), _ in terms})
        moments = dict(zip(orders, sigma_moments(orders, d, n, sigma, what=f"p (degree {poly.degree()} in {s})")))
    return sympy.expand(sum((c * moments[m] for (m,), c in terms), sympy.Integer(0)))


# ---------------------------------------------------------------------------------------------
# General covariance (docs/theory.md section 13)


def _sigma_kind(sigma, d):
    """``("symbolic", power_sum)`` for a MatrixSymbol-like Sigma or one with symbolic entries
    (``power_sum(j)`` an expression), ``("numeric", (L, [p_0, p_1, ...]))`` for a numeric Sigma
    (``L Sigma`` an integer matrix, ``p_j = tr((L Sigma)^j)``, computed lazily up to need)."""
    if isinstance(sigma, sympy.MatrixExpr) and not isinstance(sigma, sympy.MatrixBase):
        rows, cols = sigma.shape
        if sympy.simplify(rows - cols) != 0 or sympy.simplify(rows - d) != 0:
            raise ValueError(f"sigma must be {d} x {d}, got {rows} x {cols}")
        return "symbolic", lambda j: sympy.sympify(d) if j == 0 else sympy.Trace(sigma ** j)
    if isinstance(d, sympy.Symbol):
        raise ValueError(f"sigma must be a MatrixSymbol for a symbolic d = {d}; an explicit "
                         f"matrix fixes d")
    Sigma = check_covariance("sigma", sigma, d)
    if not all(e.is_Rational for e in Sigma):
        powers = {}

        def power_sum(j):
            if j not in powers:
                powers[j] = sympy.expand((Sigma ** j).trace()) if j else sympy.Integer(Sigma.rows)
            return powers[j]
        return "symbolic", power_sum
    L = math.lcm(*[int(e.q) for e in Sigma])
    return "numeric", (L, tuple(tuple(int(e * L) for e in Sigma.row(i)) for i in range(Sigma.rows)))


@lru_cache(maxsize=64)
def _integer_power_sums(rows: tuple, top: int) -> tuple:
    """``(tr(A^0), .., tr(A^top))`` for an integer matrix ``A`` (rows of ints), exactly:
    powers up to ``ceil(top / 2)``, then ``tr(A^(a + b)) = sum_ik (A^a)_ik (A^b)_ki``."""
    d = len(rows)
    if all(rows[i][j] == 0 for i in range(d) for j in range(d) if i != j):
        return tuple(sum(rows[i][i] ** j for i in range(d)) for j in range(top + 1))
    half = (top + 1) // 2
    powers = [[[int(i == j) for j in range(d)] for i in range(d)]]
    cols = list(zip(*rows))
    for _ in range(half):
        last = powers[-1]
        powers.append([[sum(a * b for a, b in zip(row, col)) for col in cols] for row in last])
    out = []
    for j in range(top + 1):
        a = min(j, half)
        A, B = powers[a], powers[j - a]
        out.append(sum(A[i][k] * B[k][i] for i in range(d) for k in range(d)))
    return tuple(out)


@lru_cache(maxsize=64)
def _numeric_sigma_moments(rows: tuple, top: int, n) -> tuple:
    p = list(_integer_power_sums(rows, top))
    return tuple(numeric_moments(range(top + 1), n, p))


def _in_powers_of_n(expr, n):
    return sympy.collect(sympy.expand(expr), n) if isinstance(n, sympy.Symbol) else sympy.expand(expr)


def sigma_moments(ms, d, n, sigma, *, what: str | None = None) -> list:
    """``[E tr(S^m) for m in ms]`` for ``x ~ N(0, Sigma)``, exact (docs/theory.md section 13): the
    engine behind ``wishart_moment(..., sigma=)`` and ``trace_moment(..., sigma=)``.  ``what``
    names the request in the error message when an order is beyond the limits.

    >>> sigma_moments([0, 1, 2], 2, 3, sympy.diag(1, 4))
    [2, 5, 31]
    """
    ms = [check_int("m", m, 0) for m in ms]
    d = check_dim("d", d)
    n = check_dim("n", n)
    kind, data = _sigma_kind(sigma, d)
    top = max(ms, default=0)
    limit = MAX_SIGMA_MOMENT if kind == "numeric" else MAX_SIGMA_SYMBOLIC_MOMENT
    if top > limit:
        subject = what or f"E tr(S^{top})"
        raise ValueError(f"{subject} needs E tr(S^m) for m <= {top}; with a {kind} sigma exact "
                         f"moments are available for m <= {limit}")
    if kind == "symbolic":
        return [data(0) if m == 0 else _in_powers_of_n(power_sum_polynomial(m, n, data) / n ** m, n)
                for m in ms]
    L, rows = data
    symbolic_n = not isinstance(n, int)
    values = _numeric_sigma_moments(rows, top, None if symbolic_n else n)
    out = []
    for m in ms:
        if m == 0:
            out.append(sympy.Integer(len(rows)))
        elif symbolic_n:
            out.append(sympy.Add(*[sympy.Rational(c, L ** m) * n ** (e - m)
                                   for e, c in enumerate(values[m]) if c]))
        else:
            out.append(sympy.Rational(values[m], L ** m * n ** m))
    return out
