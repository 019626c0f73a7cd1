"""Tests of theory.reduced, the isotropic reduction of the CoT dynamics (docs/theory.md section 6).
Every check is symbolic (exact sympy) unless its docstring says otherwise."""
import doctest
import itertools

import pytest
import sympy
from hypothesis import given
from hypothesis import strategies as st

import theory.reduced as reduced
from theory import MAX_EXACT_MOMENT, Layout, wishart_moment
from theory.reduced import (prove_reduced_unique_zero, reduced_argmin_a, reduced_coefficients,
                            reduced_critical_points, reduced_gradient, reduced_gram, reduced_loss,
                            reduced_loss_symbolic, reduced_moment_symbols, reduced_symbols,
                            trace_moment)

a, b = reduced_symbols()
ETA = sympy.Rational(2, 5)
PAPER = dict(d=10, n=20, eta=ETA, k=10)


def test_doctests():
    """Symbolic: every docstring example in theory/reduced.py gives the printed value."""
    result = doctest.testmod(reduced, extraglobs={"sympy": sympy})
    assert result.attempted > 0 and result.failed == 0


def test_lsa_step_of_the_isotropic_model_is_a_S_bw_minus_wstar():
    """Symbolic: the premise of the reduction.  With V31 = a I, W13 = b I, W24 = -1, the w-block of
    the last column of f(Z_i) = Z_i + V Z_i (Z_i^T W Z_i)/n, minus w_i, is a S (b w_i - w*), for
    symbolic data X, w*, earlier CoT columns and current iterate (d = 2, n = 3, two CoT columns)."""
    d, n = 2, 3
    L = Layout(d)
    X = sympy.Matrix(d, n, lambda i, j: sympy.Symbol(f"x{i}{j}"))
    w_star = sympy.Matrix(d, 1, lambda i, j: sympy.Symbol(f"ws{i}"))
    y = X.T * w_star
    cols = [sympy.Matrix(d, 1, lambda i, j, c=c: sympy.Symbol(f"w{c}_{i}")) for c in range(2)]
    Z = sympy.zeros(L.D, n + len(cols))
    Z[L.x, :n] = X
    Z[L.y, :n] = y.T
    for c, w in enumerate(cols):
        Z[L.w, n + c] = w
        Z[L.one, n + c] = sympy.Matrix([[1]])
    V = sympy.zeros(L.D, L.D)
    W = sympy.zeros(L.D, L.D)
    V[L.w, L.x] = a * sympy.eye(d)
    W[L.x, L.w] = b * sympy.eye(d)
    W[L.y, L.one] = sympy.Matrix([[-1]])
    out = Z + V * Z * (Z.T * W * Z) / n
    step = out[L.w, Z.shape[1] - 1] - cols[-1]
    S = X * X.T / n
    assert sympy.expand(step - a * S * (b * cols[-1] - w_star)) == sympy.zeros(d, 1)


def test_paper_loss_is_zero_at_the_gd_point_and_positive_on_a_grid():
    """Symbolic (exact rationals): at the paper's d, n, k, eta the polynomial L(a, b) vanishes at
    (-eta, 1) and is > 0 at every other point of a 13 x 13 grid around it."""
    L = reduced_loss(**PAPER)
    assert L.subs({a: -ETA, b: 1}) == 0
    grid_a = [sympy.Rational(j, 10) for j in range(-10, 3)]
    grid_b = [sympy.Rational(j, 4) for j in range(-4, 9)]
    for pa, pb in itertools.product(grid_a, grid_b):
        if (pa, pb) != (-ETA, 1):
            assert L.subs({a: pa, b: pb}) > 0, (pa, pb)


def test_gradient_vanishes_at_the_gd_point():
    """Symbolic: grad L(-eta, 1) = 0 at the paper's configuration and for a symbolic eta."""
    assert [g.subs({a: -ETA, b: 1}) for g in reduced_gradient(**PAPER)] == [0, 0]
    eta = sympy.Symbol("eta", positive=True)
    for g in reduced_gradient(4, 6, eta, 3):
        assert sympy.expand(g.subs({a: -eta, b: 1})) == 0


@pytest.mark.parametrize("k", [2, 3, 10])
def test_critical_points_are_the_minimum_and_one_saddle(k):
    """Symbolic: the real critical points are exactly (-eta, 1) (minimum, loss 0) and the saddle
    (0, (C - B)/(B - A)) with A, B, C the Gram entries (module docstring)."""
    points = reduced_critical_points(10, 20, ETA, k)
    G = reduced_gram(10, 20, ETA, k)
    A, B, C = G[0, 0], -G[0, 1], G[1, 1]
    assert [(p["a"], p["b"], p["kind"]) for p in points] == [
        (-ETA, 1, "minimum"), (0, (C - B) / (B - A), "saddle")]
    assert points[0]["loss"] == 0 and points[1]["loss"] > 0


def test_unique_zero_proved_for_k_at_least_2_not_for_k_1():
    """Symbolic: G is positive definite for k >= 2; for k = 1 L does not depend on b."""
    assert prove_reduced_unique_zero(10, 20, ETA, 10)
    assert prove_reduced_unique_zero(3, 2, sympy.Rational(1, 3), 2)
    assert not prove_reduced_unique_zero(10, 20, ETA, 1)
    assert sympy.diff(reduced_loss(10, 20, ETA, 1), b) == 0
    with pytest.raises(ValueError, match="k"):
        reduced_critical_points(10, 20, ETA, 1)


def test_coefficients_of_the_first_steps():
    """Symbolic: P_0 = 0 and P_1 = eta S, so E tr(S^2 P_1^2) = eta^2 E tr(S^4),
    E tr(S^2 P_1) = eta E tr(S^3); P_2 = 2 eta S - eta^2 S^2 (symbolic eta)."""
    eta = sympy.Symbol("eta", positive=True)
    c = reduced_coefficients(5, 7, eta, 3)
    A, B, C = reduced_moment_symbols(3)
    m = {j: wishart_moment(j, 5, 7) for j in range(7)}
    assert c[A[0]] == 0 and c[B[0]] == 0 and c[C] == m[2]
    assert sympy.expand(c[A[1]] - eta ** 2 * m[4]) == 0
    assert sympy.expand(c[B[1]] - eta * m[3]) == 0
    assert sympy.expand(c[B[2]] - (2 * eta * m[3] - eta ** 2 * m[4])) == 0
    assert sympy.expand(c[A[2]] - (4 * eta ** 2 * m[4] - 4 * eta ** 3 * m[5] + eta ** 4 * m[6])) == 0


@given(d=st.integers(1, 6), n=st.integers(1, 8), k=st.integers(2, 4),
       eta=st.fractions(min_value="1/20", max_value="9/10", max_denominator=20),
       pa=st.fractions(-2, 2, max_denominator=7), pb=st.fractions(-2, 2, max_denominator=7))
def test_loss_is_the_gram_quadratic_form_and_nonnegative(d, n, k, eta, pa, pb):
    """Symbolic (hypothesis over d, n, k, eta, point): L(a, b) = (1/2k) [u, v] G [u, v]^T with
    u = ab + eta, v = a + eta, and L >= 0 with equality only at (-eta, 1)."""
    eta, pa, pb = sympy.Rational(eta), sympy.Rational(pa), sympy.Rational(pb)
    L = reduced_loss(d, n, eta, k).subs({a: pa, b: pb})
    uv = sympy.Matrix([pa * pb + eta, pa + eta])
    assert L == (uv.T * reduced_gram(d, n, eta, k) * uv)[0] / (2 * k)
    assert L >= 0
    assert (L == 0) == ((pa, pb) == (-eta, 1))


def test_argmin_a_solves_dL_da_and_interpolates_stage_targets():
    """Symbolic: a*(b) zeroes dL/da for every b; a*(1) = -eta; a*(0) = -eta (C - B)/C."""
    c = reduced_coefficients(**PAPER)
    star = reduced_argmin_a(10, ETA).subs(c)
    dLda = reduced_gradient(**PAPER)[0]
    assert sympy.simplify(dLda.subs(a, star)) == 0
    assert sympy.simplify(star.subs(b, 1)) == -ETA
    G = reduced_gram(**PAPER)
    assert sympy.simplify(star.subs(b, 0) + ETA * (G[1, 1] + G[0, 1]) / G[1, 1]) == 0


def test_symbolic_loss_names_the_expectations():
    """Symbolic: the coefficients are named E tr(S^2 P_i^2), E tr(S^2 P_i), E tr(S^2)."""
    A, B, C = reduced_moment_symbols(3)
    assert [str(x) for x in A] == ["E tr(S^2 P_0^2)", "E tr(S^2 P_1^2)", "E tr(S^2 P_2^2)"]
    assert [str(x) for x in B] == ["E tr(S^2 P_0)", "E tr(S^2 P_1)", "E tr(S^2 P_2)"]
    assert str(C) == "E tr(S^2)"
    L = reduced_loss_symbolic(3, ETA)
    assert L.free_symbols == {a, b, C, *A, *B}


def test_trace_moment_is_linear_in_the_wishart_moments():
    """Symbolic: E tr(p(S)) for p = 3 s^3 - s + 2 from the exact moments."""
    s = sympy.Symbol("s")
    assert trace_moment(3 * s ** 3 - s + 2, s, 4, 9) == (
        3 * wishart_moment(3, 4, 9) - wishart_moment(1, 4, 9) + 2 * 4)


@pytest.mark.parametrize("call, name", [
    (lambda: reduced_loss(0, 20, ETA, 3), "d"),
    (lambda: reduced_loss(10, -1, ETA, 3), "n"),
    (lambda: reduced_loss(10, 20, -0.1, 3), "eta"),
    (lambda: reduced_loss(10, 20, ETA, 0), "k"),
    (lambda: reduced_coefficients(10, 20, ETA, MAX_EXACT_MOMENT // 2 + 1), "2k"),
    (lambda: reduced_moment_symbols(1.5), "k"),
    (lambda: reduced_critical_points(10, 20, sympy.Symbol("eta"), 3), "eta"),
])
def test_bad_input_raises_value_error_naming_the_parameter(call, name):
    """Bad input: ValueError naming the parameter."""
    with pytest.raises(ValueError, match=name):
        call()
