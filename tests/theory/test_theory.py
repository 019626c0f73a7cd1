"""Tests of the exact theory module (issue 2).  Every check here is symbolic (exact sympy) unless
its docstring says numeric (float64) or statistical (Monte Carlo within 4 standard errors)."""
import doctest
import importlib
import subprocess
import sys

import numpy as np
import pytest
import scipy.optimize
import sympy
from hypothesis import given
from hypothesis import strategies as st

import theory
from theory import (Layout, gd_closed_form, gd_eval_loss, gd_iterates_exact, gd_transformer_params,
                    linear_prediction_loss, lsa_step_size, nocot_gamma, nocot_loss, nocot_min_loss,
                    nocot_min_loss_sigma, nocot_optimal_eta, nocot_params, prove_gd_closed_form,
                    prove_lsa_step_is_gd, wishart_moment)

THEORY_MODULES = ["validation", "layout", "params", "proof", "gd", "losses", "ood", "wishart", "wishart_sigma", "nocot"]


@pytest.mark.parametrize("name", THEORY_MODULES)
def test_doctests(name):
    """Symbolic: every docstring example in theory/ runs and gives the printed value."""
    module = importlib.import_module(f"theory.{name}")
    result = doctest.testmod(module, extraglobs={"sympy": sympy})
    assert result.attempted > 0 and result.failed == 0


def test_import_theory_pulls_in_neither_numpy_nor_torch():
    code = "import sys, theory; print(sorted(m for m in ('numpy', 'torch', 'scipy') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_layout_blocks_partition_the_rows():
    for d in range(1, 8):
        L = Layout(d)
        rows = [r for b in (L.x, L.y, L.w, L.one) for r in range(L.D)[b]]
        assert rows == list(range(2 * d + 2)) and L.D == 2 * d + 2
    assert Layout(sympy.Symbol("d")).sizes[1] == 1
    with pytest.raises(ValueError, match="d must be"):
        Layout(0)


@pytest.mark.parametrize("d", [1, 2, 3, 4, 6])
def test_gd_params_blocks(d):
    """Symbolic: Theorem 3.2's blocks, V31 = -eta I, W13 = I, W24 = -1, all else zero."""
    eta = sympy.Symbol("eta")
    V, W = gd_transformer_params(d, eta)
    L = Layout(d)
    assert V[L.w, L.x] == -eta * sympy.eye(d)
    assert W[L.x, L.w] == sympy.eye(d) and W[L.y, L.one] == sympy.Matrix([[-1]])
    assert sum(abs(e) for e in V if e != 0) == d * abs(eta)
    assert sum(1 for e in W if e != 0) == d + 1


def test_symbolic_d_params_are_block_matrices():
    d, eta = sympy.Symbol("d", positive=True, integer=True), sympy.Symbol("eta")
    V, W = gd_transformer_params(d, eta)
    assert isinstance(V, sympy.BlockMatrix) and V.blocks[2, 0] == -eta * sympy.Identity(d)
    assert W.blocks[0, 2] == sympy.Identity(d) and W.blocks[1, 3] == -sympy.Identity(1)


def test_symbolic_proof_holds_for_symbolic_d_n_i():
    assert prove_lsa_step_is_gd() is True


@pytest.mark.parametrize("d", [1, 2, 3, 5])
def test_concrete_proof_and_its_failure_cases(d):
    """Symbolic: the constructed (V, W) pass; wrong step, wrong W24, or a stray block fail."""
    eta = sympy.Rational(2, 5)
    V, W = gd_transformer_params(d, eta)
    L = Layout(d)
    assert prove_lsa_step_is_gd(V, W, eta=eta) and prove_lsa_step_is_gd(V, W)
    assert not prove_lsa_step_is_gd(2 * V, W, eta=eta)  # V31 = -2 eta I against eta
    assert prove_lsa_step_is_gd(2 * V, W, eta=2 * eta)
    W2 = W.copy()
    W2[L.y, L.one] = sympy.Matrix([[-2]])               # W24 = -2: no step size fits
    assert not prove_lsa_step_is_gd(V, W2) and lsa_step_size(V, W2) is None
    V3 = V.copy()
    V3[L.w, L.y] = sympy.ones(d, 1)                     # V32 leaks y^T y into the estimate
    assert not prove_lsa_step_is_gd(V3, W)
    V4 = V.copy()
    V4[0, 0] = 1                                        # x-rows of the new column not zero
    assert not prove_lsa_step_is_gd(V4, W, eta=eta)
    assert not prove_lsa_step_is_gd(-V, W)              # gradient ascent is not a GD step


@given(st.integers(1, 4), st.fractions(min_value=sympy.Rational(1, 10), max_value=3).map(sympy.Rational),
       st.integers(1, 5))
def test_scale_invariance(d, c, p):
    """Symbolic: (c V31, W13 / c, W24 / c) implements the same step (docs/theory.md section 4)."""
    eta = sympy.Rational(p, 7)
    V, W = gd_transformer_params(d, eta)
    assert lsa_step_size(c * V, W / c) == eta


def test_gd_closed_form_induction_and_iterates():
    assert prove_gd_closed_form()
    S = sympy.Matrix([[2, 1], [1, 3]]) / 3
    ws = sympy.Matrix([1, -2])
    eta = sympy.Rational(1, 4)
    for k, w in enumerate(gd_iterates_exact(S, ws, eta, 6)):
        assert w == gd_closed_form(S, ws, eta, k)


def test_wishart_moments_known_forms():
    d, n = sympy.symbols("d n", positive=True)
    assert sympy.simplify(wishart_moment(2, d, n) - d * (n + d + 1) / n) == 0
    assert sympy.simplify(wishart_moment(3, d, n)
                          - d * (n**2 + d**2 + 3*n*d + 3*n + 3*d + 4) / n**2) == 0


@pytest.mark.parametrize("d,n", [(1, 1), (3, 5), (10, 20), (20, 10), (7, 100)])
def test_nocot_optimum_closed_form_and_numeric(d, n):
    """Symbolic + numeric: the derived optimum equals n/(n+d+1) and d(d+1)/(2(n+d+1)), and a
    scipy minimisation of the exact quadratic finds the same point (float64, 1e-9)."""
    eta1, floor = nocot_optimal_eta(d, n), nocot_min_loss(d, n)
    assert eta1 == sympy.Rational(n, n + d + 1)
    assert floor == sympy.Rational(d * (d + 1), 2 * (n + d + 1))
    f = sympy.lambdify(sympy.Symbol("eta"), nocot_loss(d, n, sympy.Symbol("eta")))
    res = scipy.optimize.minimize_scalar(f, bounds=(0, 2), method="bounded", options={"xatol": 1e-12})
    assert abs(res.x - float(eta1)) < 1e-6 and abs(res.fun - float(floor)) < 1e-9


def test_nocot_params_equal_gd_step_for_identity():
    d, n = 3, 7
    assert nocot_params(d, n) == gd_transformer_params(d, nocot_optimal_eta(d, n))
    assert nocot_gamma(d, n) == sympy.Rational(n + d + 1, n)


def test_nocot_sigma_general():
    """Symbolic: Gamma for Sigma; the loss of Gamma^{-1} is the minimum over linear maps A
    (gradient of the quadratic in A vanishes) and reduces to the identity case."""
    Sigma = sympy.Matrix([[2, 1], [1, 3]])
    n = 5
    G = nocot_gamma(2, n, Sigma)
    assert G == (1 + sympy.Rational(1, n)) * Sigma + sympy.Rational(5, n) * sympy.eye(2)
    A = sympy.Matrix(2, 2, sympy.symbols("a0:4"))
    loss = linear_prediction_loss(n, Sigma, A)
    grad = [sympy.diff(loss, a) for a in A]
    point = dict(zip(A, G.inv()))
    assert all(sympy.simplify(g.subs(point)) == 0 for g in grad)
    assert nocot_min_loss_sigma(n, sympy.eye(4)) == nocot_min_loss(4, n)
    with pytest.raises(ValueError, match="^Sigma must be positive semi-definite"):
        nocot_gamma(2, n, sympy.Matrix([[1, 2], [2, 1]]))


def test_second_moment_matches_monte_carlo():
    """Statistical: E tr(S^2) for Sigma = diag(1, 4), n = 3, within 4 standard errors."""
    rng = np.random.default_rng(0)
    Sigma = np.diag([1.0, 4.0])
    X = rng.standard_normal((200_000, 2, 3)) * np.sqrt(np.diag(Sigma))[None, :, None]
    S = X @ X.transpose(0, 2, 1) / 3
    t = np.einsum("bij,bji->b", S, S)
    exact = float(theory.second_moment_S(3, sympy.diag(1, 4)).trace())
    assert abs(t.mean() - exact) < 4 * t.std() / np.sqrt(len(t))


@pytest.mark.parametrize("d,n,k", [(2, 3, 1), (3, 5, 2), (10, 20, 1)])
def test_gd_eval_loss_matches_monte_carlo(d, n, k):
    """Statistical: exact (1/2) E tr((I - eta S)^{2k}) vs 100k prompts, within 4 SE."""
    eta = sympy.Rational(1, 5)
    exact = float(gd_eval_loss(d, n, eta, k))
    rng = np.random.default_rng(1)
    X = rng.standard_normal((100_000, d, n))
    M = np.eye(d) - 0.2 * X @ X.transpose(0, 2, 1) / n
    P = np.linalg.matrix_power(M, 2 * k)
    t = 0.5 * np.einsum("bii->b", P)
    assert abs(t.mean() - exact) < 4 * t.std() / np.sqrt(len(t))


def test_gd_eval_loss_symbolic_eta_and_limits():
    eta = sympy.Symbol("eta")
    assert gd_eval_loss(4, 9, eta, 0) == 2
    assert gd_eval_loss(3, 4, eta, 1) == nocot_loss(3, 4, eta)  # one GD step from 0 = no-CoT form
    with pytest.raises(ValueError, match="MAX_EXACT_MOMENT|available"):
        gd_eval_loss(3, 4, eta, theory.MAX_EXACT_MOMENT // 2 + 1)


def test_ood_helpers():
    lo, hi = theory.spectrum_interval([1, 4], 10, 40)
    assert (lo, hi) == (sympy.Rational(1, 4), 9)
    assert theory.stable_eta_bound([1, 4], 10, 40) == sympy.Rational(2, 9)
    assert theory.is_stable(sympy.Rational(1, 5), 9) and not theory.is_stable(sympy.Rational(1, 4), 9)
    # max(|1 - eta/4|, |1 - 9 eta|)^{2k} at eta = 1/5, k = 1: max(19/20, 4/5)^2
    assert theory.contraction_factor(sympy.Rational(1, 5), [1, 4], 10, 40, 1) == sympy.Rational(361, 400)
    assert theory.ood_loss_bound(sympy.Rational(1, 5), [1, 4], 10, 40, 1) == 5 * sympy.Rational(361, 400)


@pytest.mark.parametrize("call", [
    lambda: gd_transformer_params(0, 1), lambda: gd_transformer_params(2, float("nan")),
    lambda: gd_transformer_params(2, -1), lambda: nocot_min_loss(3, 0), lambda: gd_eval_loss(2, 2, 0.1, -1),
    lambda: nocot_params(2.5, 3), lambda: gd_transformer_params(True, 0.1),
])
def test_bad_input_raises_value_error(call):
    with pytest.raises(ValueError):
        call()
