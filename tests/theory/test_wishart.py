"""Tests of theory.wishart: exact real Wishart moments (docs/theory.md section 9) and Marchenko-Pastur."""
import ast
import doctest
import math
import pathlib

import numpy as np
import pytest
import sympy
from hypothesis import given
from hypothesis import strategies as st

import theory.wishart as W
from theory.wishart import (MAX_EXACT_MOMENT, mp_moment, narayana, wishart_moment,
                            wishart_moment_method)

d, n, g = sympy.symbols("d n g", positive=True, integer=True)

CLOSED_FORMS = {
    0: d,
    1: d,
    2: d * (n + d + 1) / n,
    3: d * (n ** 2 + d ** 2 + 3 * n * d + 3 * n + 3 * d + 4) / n ** 2,
}


def _poly(coeffs):
    return sympy.expand(sum(c * d ** i * n ** j for (i, j), c in coeffs.items()))


@pytest.mark.parametrize("m", sorted(CLOSED_FORMS))
def test_closed_forms_symbolic(m):
    assert sympy.simplify(wishart_moment(m, d, n) - CLOSED_FORMS[m]) == 0


@pytest.mark.parametrize("dd, nn", [(1, 1), (1, 5), (3, 2), (10, 20), (7, 7), (50, 3)])
@pytest.mark.parametrize("m", sorted(CLOSED_FORMS))
def test_closed_forms_ints(m, dd, nn):
    value = wishart_moment(m, dd, nn)
    assert isinstance(value, sympy.Rational)
    assert value == CLOSED_FORMS[m].subs({d: dd, n: nn})
    assert wishart_moment(m, sympy.Integer(dd), sympy.Integer(nn)) == value


@pytest.mark.parametrize("m", range(1, 7))
def test_wick_matches_bidiagonal(m):
    wick = W._wick_coefficients(m)
    bidiagonal = W._bidiagonal_block(12)[m]
    assert wick == bidiagonal
    assert sympy.expand(_poly(wick) - _poly(bidiagonal)) == 0


def test_wick_pairing_count():
    # Setting d = n = 1 counts every pairing once: (2m - 1)!!.
    for m in range(1, 7):
        assert sum(W._wick_coefficients(m).values()) == math.prod(range(1, 2 * m, 2))


def test_blocks_agree():
    small, large = W._bidiagonal_block(20), W._bidiagonal_block(30)
    assert all(small[m] == large[m] for m in range(1, 21))


@pytest.mark.parametrize("m", [1, 2, 3, 5, 8, 13, 20])
def test_symmetry_in_d_n(m):
    # n^m E tr(S^m) = E tr((X X^T)^m) = E tr((X^T X)^m) = d^m E tr(S'^m) with d and n swapped.
    lhs = n ** m * wishart_moment(m, d, n)
    rhs = d ** m * wishart_moment(m, n, d)
    assert sympy.expand(sympy.cancel(lhs - rhs)) == 0


@pytest.mark.parametrize("m", range(1, 31))
def test_polynomial_structure(m):
    coeffs = W._moment_coefficients(m)
    assert all(isinstance(c, int) and c > 0 for c in coeffs.values())
    assert all(i >= 1 and j >= 1 and i + j <= m + 1 for i, j in coeffs)
    assert any(i + j == m + 1 for i, j in coeffs)
    assert sum(coeffs.values()) == math.prod(range(1, 2 * m, 2))   # d = n = 1: all pairings


@pytest.mark.parametrize("m", range(1, 31))
def test_rank_one(m):
    # d = 1: X X^T = chi_n^2, so E tr((X X^T)^m) = n (n + 2) ... (n + 2m - 2); n = 1 likewise.
    chi = sympy.Poly(sympy.Mul(*[n + 2 * k for k in range(m)]), n).all_coeffs()[::-1]
    at_d1, at_n1 = [0] * (m + 1), [0] * (m + 1)
    for (i, j), c in W._moment_coefficients(m).items():
        at_d1[j] += c
        at_n1[i] += c
    assert at_d1 == at_n1 == chi
    assert wishart_moment(m, 1, 3) == sympy.Rational(math.prod(3 + 2 * k for k in range(m)), 3 ** m)


@pytest.mark.parametrize("dd, nn, ms, samples, seed", [
    (1, 1, (1, 2, 3, 4), 400_000, 1),
    (2, 3, (1, 2, 3, 4, 7, 8), 400_000, 2),
    (3, 2, (1, 2, 3, 4), 200_000, 3),
    (4, 7, (1, 2, 3, 4, 7), 100_000, 4),
])
def test_monte_carlo(dd, nn, ms, samples, seed):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((samples, dd, nn))
    eig = np.linalg.eigvalsh(X @ X.transpose(0, 2, 1) / nn)
    for m in ms:
        values = (eig ** m).sum(axis=1)
        mean, se = values.mean(), values.std(ddof=1) / math.sqrt(samples)
        exact = float(wishart_moment(m, dd, nn))
        assert abs(mean - exact) < 4 * se, (m, dd, nn, mean, exact, se)


@pytest.mark.parametrize("m", range(1, 4))
def test_marchenko_pastur_limit_sympy(m):
    expr = wishart_moment(m, d, n).subs(n, d / g) / d
    assert sympy.simplify(sympy.limit(expr, d, sympy.oo) - mp_moment(m, g)) == 0


@pytest.mark.parametrize("m", range(1, 31))
def test_marchenko_pastur_leading_order(m):
    # Top-degree part of Q_m(d, n) at n = d / g, over d^(m+1) / g^m: sum_{i+j=m+1} c_ij g^(i-1).
    coeffs = W._moment_coefficients(m)
    leading = sum(c * g ** (i - 1) for (i, j), c in coeffs.items() if i + j == m + 1)
    assert sympy.expand(leading - mp_moment(m, g)) == 0


def test_marchenko_pastur_numeric():
    # E tr(S^4)/d at d = 400, n = 800 is within O(1/d) of the MP moment at gamma = 1/2.
    exact = wishart_moment(4, 400, 800) / 400
    limit = mp_moment(4, sympy.Rational(1, 2))
    assert abs(exact - limit) / limit < 0.05


@given(st.integers(1, 40))
def test_narayana_sums_to_catalan(m):
    assert sum(narayana(m, r) for r in range(1, m + 1)) == sympy.catalan(m)
    assert mp_moment(m, 1) == sympy.catalan(m)
    assert narayana(m, 0) == narayana(m, m + 1) == 0


def test_narayana_values():
    assert [narayana(5, r) for r in range(1, 6)] == [1, 10, 20, 10, 1]
    assert isinstance(narayana(5, 2), sympy.Integer)


def test_mp_moment_values():
    assert mp_moment(0, g) == 1
    assert mp_moment(1, g) == 1
    assert sympy.expand(mp_moment(2, g) - (1 + g)) == 0
    assert sympy.expand(mp_moment(3, g) - (1 + 3 * g + g ** 2)) == 0
    assert mp_moment(2, sympy.Rational(1, 4)) == sympy.Rational(5, 4)
    assert mp_moment(2, 0.25) == sympy.Rational(5, 4)
    assert mp_moment(3, 0) == 1
    assert mp_moment(MAX_EXACT_MOMENT + 5, 1) == sympy.catalan(MAX_EXACT_MOMENT + 5)


@given(st.integers(0, 14), st.integers(1, 40), st.integers(1, 40))
def test_int_matches_symbolic(m, dd, nn):
    value = wishart_moment(m, dd, nn)
    assert value == wishart_moment(m, d, n).subs({d: dd, n: nn})
    assert value > 0


def test_mixed_arguments():
    assert sympy.simplify(wishart_moment(2, 3, n) - 3 * (n + 4) / n) == 0
    assert sympy.simplify(wishart_moment(2, d, 1) - d * (d + 2)) == 0


def test_method_and_max():
    assert wishart_moment_method(0) == "trivial"
    assert [wishart_moment_method(m) for m in (1, 6)] == ["wick", "wick"]
    assert [wishart_moment_method(m) for m in (7, MAX_EXACT_MOMENT)] == ["bidiagonal"] * 2
    assert MAX_EXACT_MOMENT >= 20


@pytest.mark.parametrize("call, name", [
    (lambda: wishart_moment(-1, 2, 2), "m"),
    (lambda: wishart_moment(True, 2, 2), "m"),
    (lambda: wishart_moment(1.5, 2, 2), "m"),
    (lambda: wishart_moment(2, 0, 2), "d"),
    (lambda: wishart_moment(2, 2.5, 2), "d"),
    (lambda: wishart_moment(2, True, 2), "d"),
    (lambda: wishart_moment(2, sympy.Rational(1, 2), 2), "d"),
    (lambda: wishart_moment(2, 3, -4), "n"),
    (lambda: wishart_moment(2, 3, "4"), "n"),
    (lambda: narayana(0, 1), "m"),
    (lambda: narayana(3, 1.5), "r"),
    (lambda: mp_moment(-2, g), "m"),
    (lambda: mp_moment(2, -1), "gamma"),
    (lambda: mp_moment(2, float("nan")), "gamma"),
    (lambda: mp_moment(2, "x"), "gamma"),
    (lambda: wishart_moment_method(-1), "m"),
])
def test_bad_input(call, name):
    with pytest.raises(ValueError, match=rf"^{name} must be"):
        call()


def test_beyond_max():
    with pytest.raises(ValueError, match=rf"available exactly for m <= {MAX_EXACT_MOMENT}"):
        wishart_moment(MAX_EXACT_MOMENT + 1, 2, 2)


def test_doctests():
    result = doctest.testmod(W, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


def test_pure_sympy():
    tree = ast.parse(pathlib.Path(W.__file__).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            imported.add(node.module.split(".")[0])
    assert not imported & {"numpy", "scipy", "torch"}
