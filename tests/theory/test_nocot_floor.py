"""Theorem 3.1 over every no-CoT (V, W) (theory.prove_nocot_floor, docs/theory.md section 14).
Each test docstring says its kind: exact (symbolic) or statistical (Monte Carlo within 4 standard
errors)."""
import doctest

import numpy as np
import pytest
import sympy

import theory
import theory.nocot as nocot
from theory import linear_prediction_loss, nocot_min_loss_sigma, prove_nocot_floor


def test_doctests():
    """Exact: the module's examples (d = 2, identity and diagonal Sigma)."""
    result = doctest.testmod(nocot, extraglobs={"sympy": sympy})
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.parametrize("d, n, Sigma", [
    (1, None, None),
    (1, 3, sympy.Matrix([[2]])),
    (2, sympy.Symbol("n", positive=True), sympy.diag(1, 0)),              # singular, symbolic n
    (2, 4, sympy.Matrix([[2, 1], [1, 2]])),                               # rotated
])
def test_floor_holds_for_all_parameters(d, n, Sigma):
    """Exact: for V, W with independent symbolic entries the no-CoT loss is the floor plus a
    positive semi-definite quadratic form plus (1/2) E ||even part||^2, with equality at
    nocot_params (the five steps of prove_nocot_floor)."""
    assert prove_nocot_floor(d, n, Sigma) is True


@pytest.mark.slow
def test_floor_holds_for_d3():
    """Exact: the same with d = 3 (2 x 64 symbolic entries) and symbolic n."""
    assert prove_nocot_floor(3)


def test_random_parameters_do_no_better_than_the_floor():
    """Statistical: random full (V, W) (no-CoT, one pass on Z_0) have a Monte Carlo loss above the
    floor minus 4 standard errors; Theorem 3.1's parameters sit on it; parameters that use one
    route of the odd part only (V31 W24, or V32 W14^T: no even part) have the loss
    linear_prediction_loss(A), A = W24 V31 + V32 W14^T."""
    from numerics import eval_loss_mc_params, nocot_params
    d, n = 3, 6
    floor = float(nocot_min_loss_sigma(n, sympy.eye(d)))
    rng = np.random.default_rng(5)
    L = theory.Layout(d)
    for scale in (0.05, 0.2):
        V = scale * rng.standard_normal((L.D, L.D))
        W = scale * rng.standard_normal((L.D, L.D))
        r = eval_loss_mc_params(V, W, d, n, 1, samples=50_000, seed=1)
        assert r["mean"] > floor - 4 * r["se"]
    V1, W1 = nocot_params(d, n)
    r = eval_loss_mc_params(V1, W1, d, n, 1, samples=200_000, seed=2)
    assert abs(r["mean"] - floor) < 4 * r["se"]
    for route in ("V31 W24", "V32 W14"):            # the two routes of the odd part, no even part
        V, W = np.zeros((L.D, L.D)), np.zeros((L.D, L.D))
        if route == "V31 W24":
            V[L.w, L.x] = 0.3 * rng.standard_normal((d, d)) - 0.5 * np.eye(d)
            W[L.y, L.one] = -1.0
        else:
            V[L.w, L.y] = rng.standard_normal((d, 1))
            W[L.x, L.one] = -0.3 * rng.standard_normal((d, 1))
        A = W[L.y, L.one][0] * V[L.w, L.x] + V[L.w, L.y] @ W[L.x, L.one].T
        exact = float(linear_prediction_loss(n, sympy.eye(d), sympy.Matrix(A)))
        r = eval_loss_mc_params(V, W, d, n, 1, samples=200_000, seed=3)
        assert abs(r["mean"] - exact) < 4 * r["se"] and exact > floor, route
