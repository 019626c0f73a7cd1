"""Theorem 3.2 in float64 (issue 3's property tests): the constructed transformer's CoT iterates equal
plain GD and the closed form, and so does the looped model, across d in 1..12, n in 1..40 (n < d
included), k in 0..40, a step stable for the drawn prompt and random SPD or singular PSD Sigma
(docs/theory.md section 10).  Every check here is numeric (float64)."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from numerics import (check_gd_equivalence, cot_rollout, gd_closed_form, gd_iterates, gd_params,
                      iterate_deviation, looped_rollout, sample_prompts)
from numerics.strategies import gd_problems, problem_sizes, prompts, psd_covariances, stable_etas
from theory import Layout

RTOL = 1e-10


@given(gd_problems(max_d=12, max_n=40, max_k=40))
def test_cot_transformer_equals_gd_and_closed_form(p):
    """Numeric: CoT rollout with gd_params == gd_iterates == gd_closed_form to 1e-10 relative."""
    d = p.X.shape[0]
    V, W = gd_params(d, p.eta)
    cot = cot_rollout(p.X, p.y, V, W, p.k)
    gd = gd_iterates(p.X, p.y, p.eta, p.k)
    closed = gd_closed_form(p.X, p.w_star, p.eta, p.k)
    assert cot.shape == gd.shape == closed.shape == (p.k + 1, d)
    assert iterate_deviation(cot, gd)[1] <= RTOL
    assert iterate_deviation(cot, closed)[1] <= RTOL
    assert iterate_deviation(gd, closed)[1] <= RTOL


@given(gd_problems(max_d=12, max_n=40, max_k=40))
def test_looped_model_with_gd_params_equals_gd(p):
    """Numeric: the looped model (Z <- f(Z) in place) with Theorem 3.2's parameters is k-step GD."""
    V, W = gd_params(p.X.shape[0], p.eta)
    assert iterate_deviation(looped_rollout(p.X, p.y, V, W, p.k), gd_iterates(p.X, p.y, p.eta, p.k))[1] <= RTOL


@given(problem_sizes(max_d=10, max_n=30, max_k=30, min_d=2), st.data())
def test_cot_equals_gd_for_singular_sigma(sizes, data):
    """Numeric: with Sigma from psd_covariances of a rank r < d (x confined to an r-dimensional
    subspace; n below and above r), the CoT and looped rollouts with gd_params equal plain GD and
    the closed form to 1e-10 relative, and every iterate stays in range(Sigma)."""
    d, n, k = sizes
    rank = data.draw(st.integers(1, d - 1), label="rank")
    sigma = data.draw(psd_covariances(d, rank, max_condition=100.0), label="sigma")
    X, y, w_star = data.draw(prompts(d, n, sigma))
    eta = data.draw(stable_etas(float(np.linalg.eigvalsh(X @ X.T / n)[-1])), label="eta")
    V, W = gd_params(d, eta)
    gd = gd_iterates(X, y, eta, k)
    routes = (cot_rollout(X, y, V, W, k), looped_rollout(X, y, V, W, k), gd_closed_form(X, w_star, eta, k))
    for route in routes:
        assert iterate_deviation(route, gd)[1] <= RTOL
    null = np.linalg.eigh(sigma)[1][:, :d - rank]
    assert np.abs(gd @ null).max() <= 1e-12 * max(1.0, np.abs(gd).max())


@given(gd_problems(max_d=8, max_n=20, max_k=20, singular=True))
def test_gd_problems_with_singular_sigma(p):
    """Numeric: gd_problems(singular=True) also draws singular Sigma; CoT = GD on every draw."""
    V, W = gd_params(p.X.shape[0], p.eta)
    assert iterate_deviation(cot_rollout(p.X, p.y, V, W, p.k), gd_iterates(p.X, p.y, p.eta, p.k))[1] <= RTOL


@given(gd_problems(max_d=12, max_n=40, max_k=40), st.sampled_from(["V31", "W13"]),
       st.integers(0, 2 ** 32 - 1))
def test_perturbed_parameters_break_the_equality(p, block, seed):
    """Numeric, non-vacuous: perturbing V31 or W13 by 1e-3 relative, V31 -> V31 + 1e-3 eta E or
    W13 -> W13 + 1e-3 E (V31 = -eta I, W13 = I) with E = I + 0.1 R / sqrt(d) (R a random sign matrix, so E is a random but
    non-singular direction: ||0.1 R / sqrt(d)|| <= 0.1 sqrt(d) < 1), moves the iterates by far more
    than the 1e-10 tolerance above, so that test fails on a wrong model.  W13 acts on w_i, which is
    0 at i = 0, so it shows from the second step on."""
    d = p.X.shape[0]
    k = max(p.k, 1 if block == "V31" else 2)
    L = Layout(d)
    V, W = gd_params(d, p.eta)
    E = np.eye(d) + 0.1 * np.random.default_rng(seed).choice([-1.0, 1.0], size=(d, d)) / np.sqrt(d)
    if block == "V31":
        V[L.w, L.x] += 1e-3 * p.eta * E            # |V31| = eta
    else:
        W[L.x, L.w] += 1e-3 * E                    # |W13| = 1
    deviation = iterate_deviation(cot_rollout(p.X, p.y, V, W, k), gd_iterates(p.X, p.y, p.eta, k))[1]
    assert deviation > 1e2 * RTOL


@pytest.mark.parametrize("d, n", [(1, 1), (5, 3), (12, 40)])
def test_k_zero_returns_w0_alone(d, n):
    """Numeric: k = 0 returns the single iterate w_0 = 0 by every route."""
    X, y, w_star = (a[0] for a in sample_prompts(d, n, 1, seed=0))
    V, W = gd_params(d, 0.1)
    for out in (cot_rollout(X, y, V, W, 0), looped_rollout(X, y, V, W, 0), gd_iterates(X, y, 0.1, 0),
                gd_closed_form(X, w_star, 0.1, 0)):
        assert out.shape == (1, d) and not out.any()


@pytest.mark.parametrize("d, n, k, eta, sigma", [
    (10, 20, 10, 0.4, None),
    (12, 5, 40, 0.1, None),
    (3, 40, 25, 0.5, np.diag([0.5, 1.0, 2.0])),
    (3, 2, 25, 0.5, np.diag([0.5, 1.0, 0.0])),         # singular Sigma, n = rank
    (1, 1, 0, 0.3, None),
])
def test_check_gd_equivalence_report(d, n, k, eta, sigma):
    """Numeric: the report of check_gd_equivalence has every comparison within 1e-10 relative."""
    r = check_gd_equivalence(d, n, k, eta, seed=1, sigma=sigma, prompts=4)
    assert set(r.deviations) == {"cot_vs_gd", "cot_vs_closed_form", "gd_vs_closed_form", "looped_vs_gd",
                                 "cot_vs_cot_reference", "looped_vs_looped_reference"}
    assert r.passed(RTOL) and r.max_rel <= RTOL and r.max_abs >= 0
    assert (r.d, r.n, r.k, r.eta, r.prompts) == (d, n, k, eta, 4)


def test_check_gd_equivalence_reports_unstable_steps():
    """Numeric: with eta lambda_max(S) >= 2 the iterates grow geometrically; the report says so
    (eta_lambda_max >= 2) and the routes still agree relatively (they compute the same divergence)."""
    r = check_gd_equivalence(4, 4, 30, 1.5, seed=2, prompts=2)
    assert r.eta_lambda_max >= 2
    assert r.passed(1e-8)


def test_gd_iterates_batch_and_w0():
    """Numeric: batched GD equals one prompt at a time; from w0 = w* GD stays at w* (noise-free)."""
    X, y, w_star = sample_prompts(3, 7, 4, seed=3)
    batch = gd_iterates(X, y, 0.2, 5)
    for s in range(4):
        np.testing.assert_allclose(batch[s], gd_iterates(X[s], y[s], 0.2, 5), rtol=1e-14, atol=1e-14)
    np.testing.assert_allclose(gd_iterates(X[0], y[0], 0.2, 5, w0=w_star[0]), np.tile(w_star[0], (6, 1)), atol=1e-13)


@pytest.mark.parametrize("call, name", [
    (lambda: gd_iterates(np.ones((2, 3)), np.ones(3), 0.0, 1), "eta"),
    (lambda: gd_iterates(np.ones((2, 3)), np.ones(3), 0.1, 1.5), "k"),
    (lambda: gd_closed_form(np.ones((2, 3)), np.ones(3), 0.1, 1), "w_star"),
    (lambda: check_gd_equivalence(0, 3, 1, 0.1, seed=0), "d"),
    (lambda: check_gd_equivalence(2, 3, 1, 0.1, seed=None), "seed"),
    (lambda: check_gd_equivalence(2, 3, 1, 0.1, seed=0, sigma=np.eye(3)), "sigma"),
    (lambda: check_gd_equivalence(2, 3, 1, 0.1, seed=0, sigma=np.array([[1.0, 2.0], [2.0, 1.0]])), "sigma"),
])
def test_bad_input_names_the_parameter(call, name):
    with pytest.raises(ValueError, match=rf"^{name}\b"):
        call()
