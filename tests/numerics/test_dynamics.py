"""Tests of numerics.dynamics: the reduced loss, its coefficients and its gradient flow
(docs/theory.md section 6).  Each test says which kind of check it is."""
import subprocess
import sys

import numpy as np
import pytest
import sympy

from numerics import gd_params, lsa_forward
from numerics.dynamics import (gradient_flow, reduced_argmin_a_value, reduced_coefficient_values,
                               reduced_coefficients_exact, reduced_coefficients_mc,
                               reduced_gradient_value, reduced_hessian_value, reduced_loss_value,
                               stage_times)
from theory import MAX_EXACT_MOMENT, Layout
from theory.reduced import reduced_loss, reduced_symbols

SMALL = dict(d=4, n=6, eta=0.3, k=4)


@pytest.fixture(scope="module")
def paper():
    return reduced_coefficients_exact(10, 20, 0.4, 10)


@pytest.fixture(scope="module")
def small():
    return reduced_coefficients_exact(**SMALL)


def test_exact_coefficients_agree_with_monte_carlo_within_4_se(small):
    """Statistical: every per-step coefficient and the sums A, B, C from 40000 Monte Carlo draws
    lie within 4 standard errors of the exact (Wishart-moment) values."""
    mc = reduced_coefficients_mc(**SMALL, samples=40000, seed=1)
    assert mc["method"] == "monte_carlo" and mc["samples"] == 40000
    for key in ("tr_S2_P2", "tr_S2_P"):
        se = np.where(mc["se_" + key] > 0, mc["se_" + key], 1e-12)
        assert np.all(np.abs(mc[key] - small[key]) <= 4 * se + 1e-12), key
    for key in ("tr_S2", "A", "B", "C"):
        assert abs(mc[key] - small[key]) <= 4 * mc["se_" + key], key
        assert mc["se_" + key] < 0.05 * abs(small[key])


def test_loss_value_matches_the_exact_polynomial(small):
    """Numeric float64: L(a, b) and its gradient equal theory's exact polynomial (rationals
    evaluated exactly, then rounded) to 1e-12 relative at a few points."""
    a, b = reduced_symbols()
    L = reduced_loss(SMALL["d"], SMALL["n"], sympy.Rational(3, 10), SMALL["k"])
    for pa, pb in [(0.0, 0.0), (-0.3, 1.0), (0.5, -1.25), (-1.0, 2.0)]:
        ra, rb = sympy.Rational(pa), sympy.Rational(pb)
        exact = float(L.subs({a: ra, b: rb}))
        assert reduced_loss_value(small, pa, pb) == pytest.approx(exact, rel=1e-12, abs=1e-14)
        ga, gb = reduced_gradient_value(small, pa, pb)
        assert ga == pytest.approx(float(sympy.diff(L, a).subs({a: ra, b: rb})), rel=1e-12, abs=1e-13)
        assert gb == pytest.approx(float(sympy.diff(L, b).subs({a: ra, b: rb})), rel=1e-12, abs=1e-13)


def test_loss_is_the_mean_teacher_forced_cot_loss_of_the_lsa():
    """Statistical: the mean over 20000 prompts of the teacher-forced CoT loss of the literal
    LSA (numerics.lsa_forward with V31 = a I, W13 = b I, W24 = -1, built from Theorem 3.2's
    parameters) is within 4 SE of reduced_loss_value."""
    d, n, eta, k, a, b = 3, 5, 0.3, 3, -0.2, 0.6
    coeffs = reduced_coefficients_exact(d, n, eta, k)
    rng = np.random.default_rng(7)
    m = 20000
    X = rng.standard_normal((m, d, n))
    w_star = rng.standard_normal((m, d))
    y = np.einsum("mdn,md->mn", X, w_star)
    S = X @ X.transpose(0, 2, 1) / n
    V, W = gd_params(d, eta)
    lay = Layout(d)
    V *= a / -eta                                            # V31 = a I
    W[lay.x, lay.w] *= b                                     # W13 = b I, W24 = -1 kept
    iterates = [np.zeros((m, d))]
    for _ in range(k):
        w = iterates[-1]
        iterates.append(w - eta * np.einsum("mij,mj->mi", S, w - w_star))
    per_prompt = np.zeros(m)
    for i in range(k):
        Z = np.zeros((m, lay.D, n + i + 1))
        Z[:, lay.x, :n] = X
        Z[:, lay.y, :n] = y[:, None, :]
        for c in range(i + 1):
            Z[:, lay.w, n + c] = iterates[c]
            Z[:, lay.one, n + c] = 1.0
        pred = lsa_forward(Z, V, W, n)[:, lay.w, -1]
        per_prompt += 0.5 * np.sum((pred - iterates[i + 1]) ** 2, axis=1) / k
    se = per_prompt.std(ddof=1) / np.sqrt(m)
    assert abs(per_prompt.mean() - reduced_loss_value(coeffs, a, b)) <= 4 * se


def test_gradient_matches_finite_differences(paper):
    """Numeric float64: central differences of L agree with the lambdified gradient (1e-6)."""
    h = 1e-6
    for pa, pb in [(-0.01, 0.01), (-0.2, 0.5), (0.3, -0.4)]:
        ga, gb = reduced_gradient_value(paper, pa, pb)
        fa = (reduced_loss_value(paper, pa + h, pb) - reduced_loss_value(paper, pa - h, pb)) / (2 * h)
        fb = (reduced_loss_value(paper, pa, pb + h) - reduced_loss_value(paper, pa, pb - h)) / (2 * h)
        assert ga == pytest.approx(fa, rel=1e-6, abs=1e-8)
        assert gb == pytest.approx(fb, rel=1e-6, abs=1e-8)


def test_paper_flow_reaches_the_gd_point_with_decreasing_loss(paper):
    """Numeric float64: from (-0.01, 0.01) the flow at the paper's configuration ends within 1e-5
    of (-eta, 1), its loss never increases, and the Hessian there is positive definite."""
    flow = gradient_flow(paper, -0.01, 0.01, 20.0)
    assert abs(flow["a"][-1] + 0.4) < 1e-5 and abs(flow["b"][-1] - 1) < 1e-5
    assert np.all(np.diff(flow["loss"]) <= 1e-12)
    assert flow["loss"][-1] < 1e-10
    assert np.all(np.linalg.eigvalsh(reduced_hessian_value(paper, -0.4, 1.0)) > 0)


def test_paper_flow_has_a_fast_and_a_slow_stage(paper):
    """Numeric float64: stage 1 (a relaxes onto a*(b) while b ~ b0) ends long before stage 2
    (a and b each 90% of the way to (-eta, 1)); during stage 1 b moves by < 0.02."""
    flow = gradient_flow(paper, -0.01, 0.01, 16.0, points=8001)
    st = stage_times(flow["t"], flow["a"], flow["b"], paper)
    assert st["stage1_end"] < 0.5 < 5 < st["b_90"] <= st["stage2_end"]
    assert st["stage2_end"] == max(st["a_90"], st["b_90"])
    at_end_of_stage1 = np.searchsorted(flow["t"], st["stage1_end"])
    assert abs(flow["b"][at_end_of_stage1] - 0.01) < 0.02
    assert abs(flow["a"][at_end_of_stage1] - reduced_argmin_a_value(paper, 0.01)) < 0.01


def test_stage_times_on_a_known_path(small):
    """Numeric float64: on a straight path a(t) = a0 + t (-eta - a0), b(t) = t the 90% times are
    0.9 exactly (linear interpolation), the 50% times 0.5; an unfinished path gives None."""
    eta = small["eta"]
    t = np.linspace(0, 1, 11)
    a = 0.2 + t * (-eta - 0.2)
    st = stage_times(t, a, t, small)
    assert st["a_90"] == pytest.approx(0.9) and st["b_90"] == pytest.approx(0.9)
    assert st["stage2_end"] == pytest.approx(0.9)
    assert stage_times(t, a, t, small, fraction=0.5)["a_50"] == pytest.approx(0.5)
    half = stage_times(t[:5], a[:5], t[:5], small)
    assert half["a_90"] is None and half["stage2_end"] is None


def test_argmin_a_minimises_the_loss_in_a(paper):
    """Numeric float64: dL/da vanishes at (a*(b), b) for several b; a*(1) = -eta."""
    for b in [0.0, 0.3, 1.0, 2.5]:
        astar = reduced_argmin_a_value(paper, b)
        assert abs(reduced_gradient_value(paper, astar, b)[0]) < 1e-10
    assert reduced_argmin_a_value(paper, 1.0) == pytest.approx(-0.4, abs=1e-12)


def test_auto_method_uses_monte_carlo_beyond_the_exact_moments():
    """Numeric: 'auto' is exact when 2k <= MAX_EXACT_MOMENT and Monte Carlo (standard errors > 0)
    beyond."""
    assert reduced_coefficient_values(2, 3, 0.1, 5, method="auto")["method"] == "exact"
    mc = reduced_coefficient_values(2, 3, 0.1, MAX_EXACT_MOMENT // 2 + 1, method="auto",
                                    samples=500, seed=0)
    assert mc["method"] == "monte_carlo" and mc["se_A"] > 0


def test_flow_is_reported_at_requested_times(small):
    """Numeric float64: t_eval is honoured; the start is (a0, b0)."""
    t = np.array([0.0, 0.5, 1.0, 3.0])
    flow = gradient_flow(small, 0.1, -0.2, 3.0, t_eval=t)
    assert np.array_equal(flow["t"], t)
    assert flow["a"][0] == 0.1 and flow["b"][0] == -0.2


@pytest.mark.parametrize("call, name", [
    (lambda c: reduced_coefficients_exact(0, 6, 0.3, 4), "d"),
    (lambda c: reduced_coefficients_mc(4, 6, 0.3, 4, samples=1, seed=0), "samples"),
    (lambda c: reduced_coefficients_mc(4, 6, -0.3, 4, samples=10, seed=0), "eta"),
    (lambda c: reduced_coefficient_values(4, 6, 0.3, 4, method="magic"), "method"),
    (lambda c: reduced_coefficient_values(4, 6, 0.3, MAX_EXACT_MOMENT // 2 + 1, method="exact"), "2k"),
    (lambda c: gradient_flow(c, float("nan"), 0.0, 1.0), "a0"),
    (lambda c: gradient_flow(c, 0.0, 0.0, 0.0), "t_end"),
    (lambda c: gradient_flow(c, 0.0, 0.0, 1.0, t_eval=[0.5, 0.2]), "t_eval"),
    (lambda c: stage_times([0, 1], [0, 1], [0, 1], c, fraction=1.5), "fraction"),
])
def test_bad_input_raises_value_error_naming_the_parameter(small, call, name):
    """Bad input: ValueError naming the parameter."""
    with pytest.raises(ValueError, match=name):
        call(small)


def test_import_does_not_pull_in_torch():
    """numerics.dynamics imports numpy/scipy/sympy only."""
    code = "import sys, numerics.dynamics; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
