"""Wishart moments and exact GD losses for a general covariance (theory.wishart_sigma,
docs/theory.md section 13): against the identity-covariance methods, rank one, the pairing count,
the free-probability limit (non-crossing partitions), Isserlis and Monte Carlo.  Each test
docstring says its kind: exact (symbolic) or statistical (Monte Carlo within 4 standard errors)."""
import doctest
import itertools
import math

import numpy as np
import pytest
import sympy

import theory
import theory.wishart as W
import theory.wishart_sigma as WS
from theory import gd_eval_loss, power_sum_polynomial, wishart_moment

n, d, lam, g = sympy.symbols("n d lambda gamma", positive=True)
p = sympy.IndexedBase("p")


def _cayley(k: int) -> sympy.Matrix:
    """An exact rational orthogonal matrix (Cayley transform of a rational skew matrix)."""
    K = sympy.Matrix(k, k, lambda i, j: sympy.Rational(i - j, i + j + 2))
    return (sympy.eye(k) - K) * (sympy.eye(k) + K).inv()


Q3 = _cayley(3)
ROTATED = Q3 * sympy.diag(1, 2, 4) * Q3.T
SINGULAR = Q3 * sympy.diag(1, 3, 0) * Q3.T


@pytest.mark.parametrize("module", [WS, W, theory.losses])
def test_doctests(module):
    """Exact: the docstring examples run and print as shown."""
    result = doctest.testmod(module, extraglobs={"sympy": sympy})
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.parametrize("m", range(1, 13))
def test_identity_covariance_gives_the_wishart_polynomial(m):
    """Exact: at p_j = d the power-sum polynomial is Q_m(d, n) of the Wick / bidiagonal methods
    (an independent computation), coefficient by coefficient; its coefficients count the
    (2m - 1)!! pairings."""
    collected = {}
    for (e, part), c in WS._power_sum_table(m).items():
        collected[(len(part), e)] = collected.get((len(part), e), 0) + c
    assert collected == W._moment_coefficients(m)
    assert sum(WS._power_sum_table(m).values()) == math.prod(range(1, 2 * m, 2))


@pytest.mark.parametrize("m", range(1, 11))
def test_rank_one_is_a_scaled_chi_square(m):
    """Exact: a rank-one Sigma (p_j = lambda^j, e.g. d = 1) gives lambda^m E chi_n^{2m} =
    lambda^m n (n + 2) ... (n + 2m - 2)."""
    value = power_sum_polynomial(m, n, lambda j: lam ** j)
    assert sympy.expand(value - lam ** m * sympy.Mul(*[n + 2 * k for k in range(m)])) == 0


def _set_partitions(items):
    if not items:
        yield []
        return
    first, rest = items[0], items[1:]
    for partition in _set_partitions(rest):
        for i in range(len(partition)):
            yield partition[:i] + [[first] + partition[i]] + partition[i + 1:]
        yield [[first]] + partition


def _non_crossing(partition) -> bool:
    where = {x: i for i, block in enumerate(partition) for x in block}
    for a, b, c, e in itertools.combinations(sorted(where), 4):
        if where[a] == where[c] != where[b] == where[e]:
            return False
    return True


@pytest.mark.parametrize("m", range(1, 8))
def test_leading_order_is_the_free_multiplicative_limit(m):
    """Exact: with p_j = d h_j and n = d / gamma, E tr(S^m) / d tends to
    sum over non-crossing partitions pi of {1..m} of gamma^(|pi| - 1) prod_blocks h_|block| (the free
    multiplicative convolution of Marchenko-Pastur with the spectrum of Sigma), enumerated here
    independently of the recursion."""
    h = sympy.IndexedBase("h")
    e = sympy.Symbol("e", positive=True)                  # e = 1 / d
    per_coordinate = power_sum_polynomial(m, 1 / (e * g), lambda j: h[j] / e) * (e * g) ** m * e
    limit = sympy.expand(per_coordinate).subs(e, 0)
    expected = sum(g ** (len(pi) - 1) * sympy.Mul(*[h[len(b)] for b in pi])
                   for pi in _set_partitions(list(range(m))) if _non_crossing(pi))
    assert sympy.expand(limit - expected) == 0


def test_matrix_symbol_explicit_and_symbolic_n_agree():
    """Exact: the MatrixSymbol result with Trace(Sigma^j) replaced by the power sums of an explicit
    Sigma equals the explicit result (rational and symbolic n), for m <= 6; symbolic entries too."""
    S = sympy.MatrixSymbol("Sigma", 3, 3)
    nn = sympy.Symbol("n", positive=True, integer=True)
    for m in range(7):
        symbolic = wishart_moment(m, 3, nn, sigma=S)
        traces = {sympy.Trace(S ** j) if j > 1 else sympy.Trace(S): (ROTATED ** j).trace() for j in range(1, 7)}
        explicit_n = wishart_moment(m, 3, nn, sigma=ROTATED)
        assert sympy.simplify(symbolic.xreplace(traces) - explicit_n) == 0
        assert explicit_n.subs(nn, 5) == wishart_moment(m, 3, 5, sigma=ROTATED)
    s1, s2 = sympy.symbols("s1 s2", positive=True)
    entries = wishart_moment(4, 2, 7, sigma=sympy.diag(s1, s2))
    assert entries.subs({s1: 2, s2: 5}) == wishart_moment(4, 2, 7, sigma=sympy.diag(2, 5))


def test_second_moment_and_identity_cases():
    """Exact: E tr(S^2) = tr(second_moment_S(n, Sigma)) (Isserlis) for rotated and singular Sigma;
    Sigma = I reproduces wishart_moment(m, d, n) up to m = 20 (numeric recursion reach checked at
    m <= 12 here); Sigma = c I scales the moment by c^m."""
    for Sigma in (ROTATED, SINGULAR):
        assert wishart_moment(2, 3, 5, sigma=Sigma) == theory.second_moment_S(5, Sigma).trace()
    for m in range(13):
        assert wishart_moment(m, 4, 6, sigma=sympy.eye(4)) == wishart_moment(m, 4, 6)
        assert wishart_moment(m, 3, 2, sigma=3 * sympy.eye(3)) == 3 ** m * wishart_moment(m, 3, 2)


@pytest.mark.parametrize("Sigma, nn, samples, seed", [
    (sympy.diag(1, 3), 3, 200_000, 11),
    (SINGULAR, 4, 200_000, 12),
    (ROTATED, 2, 200_000, 13),
])
def test_monte_carlo(Sigma, nn, samples, seed):
    """Statistical: E tr(S^m), m = 1..8, against 2e5 Monte Carlo prompts within 4 standard errors
    (diagonal, singular rotated, rotated with n < d)."""
    dd = Sigma.rows
    root = _psd_root(np.array(Sigma.tolist(), dtype=float))
    rng = np.random.default_rng(seed)
    X = root @ rng.standard_normal((samples, dd, nn))
    eig = np.linalg.eigvalsh(X @ X.transpose(0, 2, 1) / nn)
    exact = theory.wishart.sigma_moments(range(1, 9), dd, nn, Sigma)
    for m, value in zip(range(1, 9), exact):
        t = (eig ** m).sum(axis=1)
        assert abs(t.mean() - float(value)) < 4 * t.std(ddof=1) / math.sqrt(samples), m


def _psd_root(A: np.ndarray) -> np.ndarray:
    w, Q = np.linalg.eigh(A)
    return Q @ np.diag(np.sqrt(np.clip(w, 0, None))) @ Q.T


def test_gd_eval_loss_with_sigma():
    """Exact: Sigma = I is the in-distribution loss; Sigma = c I equals the step c eta (S scales to
    c S_0); a MatrixSymbol Sigma gives the power-sum form; a symbolic eta gives the polynomial."""
    eta = sympy.Rational(2, 5)
    for k in range(5):
        assert gd_eval_loss(3, 5, eta, k, sigma=sympy.eye(3)) == gd_eval_loss(3, 5, eta, k)
        assert gd_eval_loss(3, 5, eta, k, sigma=2 * sympy.eye(3)) == gd_eval_loss(3, 5, 2 * eta, k)
    e = sympy.Symbol("eta")
    poly = gd_eval_loss(3, 4, e, 2, sigma=ROTATED)
    assert sympy.Poly(poly, e).degree() == 4 and poly.subs(e, eta) == gd_eval_loss(3, 4, eta, 2, sigma=ROTATED)
    S = sympy.MatrixSymbol("Sigma", 3, 3)
    general = gd_eval_loss(3, 4, eta, 2, sigma=S)
    traces = {sympy.Trace(S ** j) if j > 1 else sympy.Trace(S): (ROTATED ** j).trace() for j in range(1, 5)}
    assert general.xreplace(traces) == gd_eval_loss(3, 4, eta, 2, sigma=ROTATED)


def test_gd_eval_loss_with_sigma_matches_monte_carlo():
    """Statistical: the exact OOD loss for a rotated Sigma and for a singular one against
    numerics.eval_loss_mc (2e5 prompts) within 4 standard errors."""
    from numerics import eval_loss_mc
    for Sigma, k, seed in ((ROTATED / 2, 3, 21), (SINGULAR / 2, 2, 22)):
        exact = float(gd_eval_loss(3, 6, sympy.Rational(1, 4), k, sigma=Sigma))
        r = eval_loss_mc(3, 6, 0.25, k, samples=200_000, seed=seed, sigma=np.array(Sigma.tolist(), dtype=float))
        assert abs(r["mean"] - exact) < 4 * r["se"]


def test_limits_and_bad_input():
    """Exact: orders beyond the limits, shapes and non-PSD covariances are one ValueError."""
    with pytest.raises(ValueError, match=f"m <= {theory.MAX_SIGMA_MOMENT}"):
        wishart_moment(theory.MAX_SIGMA_MOMENT + 1, 2, 3, sigma=sympy.eye(2))
    with pytest.raises(ValueError, match=f"m <= {theory.MAX_SIGMA_SYMBOLIC_MOMENT}"):
        wishart_moment(theory.MAX_SIGMA_SYMBOLIC_MOMENT + 1, 2, 3, sigma=sympy.MatrixSymbol("S", 2, 2))
    with pytest.raises(ValueError, match=r"k <= 10"):
        gd_eval_loss(2, 3, sympy.Rational(1, 2), 11, sigma=sympy.eye(2))
    with pytest.raises(ValueError, match="^sigma must be 2 x 2"):
        wishart_moment(2, 2, 3, sigma=sympy.MatrixSymbol("S", 3, 3))
    with pytest.raises(ValueError, match="^sigma must be positive semi-definite"):
        wishart_moment(2, 2, 3, sigma=[[1, 2], [2, 1]])
    with pytest.raises(ValueError, match="^sigma must be a MatrixSymbol"):
        wishart_moment(2, d, 3, sigma=sympy.eye(2))
    with pytest.raises(ValueError, match="^m must be"):
        wishart_moment(-1, 2, 3, sigma=sympy.eye(2))
