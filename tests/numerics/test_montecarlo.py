"""Monte Carlo of evaluation losses against theory's exact values, the samplers against each other,
and the divergence reporting.  Each test docstring says its kind: numeric (float64, exact to
rounding) or statistical (within 4 standard errors, fixed seeds so the outcome is reproducible)."""
import math

import numpy as np
import pytest
import scipy.stats
import sympy

import numerics
import theory
from numerics import (DIVERGENCE_FACTOR, LossReport, diverged_mask, eval_loss_mc, eval_loss_mc_params,
                      gd_eval_loss_value, gd_iterates, gd_params, loss_report, nocot_loss_mc, nocot_params,
                      sample_gram, sample_prompts)

KEYS = {"samples", "mean", "se", "median", "q10", "q90", "diverged_frac", "diverged", "max",
        "mean_without_diverged", "se_without_diverged"}


def _within(report, expected, n_se=4.0):
    return abs(report["mean"] - expected) <= n_se * report["se"]


@pytest.mark.parametrize("d, n, eta, k, samples", [
    (10, 20, 0.4, 10, 200_000),     # the paper's setting
    (5, 8, 0.3, 3, 100_000),
    (8, 4, 0.15, 5, 100_000),       # n < d: direct sampling of X
    (1, 1, 0.2, 2, 100_000),
])
def test_gd_mc_matches_exact_gd_eval_loss(d, n, eta, k, samples):
    """Statistical: eval_loss_mc's mean is within 4 se of theory.gd_eval_loss (exact Wishart moments)."""
    r = eval_loss_mc(d, n, eta, k, samples=samples, seed=11)
    assert set(r) == KEYS and r["samples"] == samples and r["diverged_frac"] == 0
    assert _within(r, gd_eval_loss_value(d, n, eta, k))
    assert r["q10"] <= r["median"] <= r["q90"] <= r["max"]


def test_nocot_mc_matches_theorem_3_1():
    """Statistical: the no-CoT model (Theorem 3.1's parameters, one forward pass) has mean loss within
    4 se of theory.nocot_min_loss; with a given eta, of theory.nocot_loss(d, n, eta)."""
    r = nocot_loss_mc(10, 20, samples=200_000, seed=12)
    assert _within(r, float(theory.nocot_min_loss(10, 20)))
    r = nocot_loss_mc(6, 9, samples=100_000, seed=13, eta=0.25)
    assert _within(r, float(theory.nocot_loss(6, 9, sympy.Rational(1, 4))))


def test_nocot_mc_matches_theorem_3_1_with_sigma():
    """Statistical: with x ~ N(0, Sigma), the Sigma-optimal no-CoT model (V31 = -Gamma^{-1}) reaches
    theory.nocot_min_loss_sigma within 4 se.  Sigma has dyadic entries, so float and exact agree."""
    Sigma = np.array([[2.0, 0.5, 0.0], [0.5, 1.0, -0.25], [0.0, -0.25, 0.5]])
    exact = float(theory.nocot_min_loss_sigma(7, sympy.Matrix(3, 3, lambda i, j: sympy.Rational(Sigma[i, j]))))
    r = eval_loss_mc_params(*nocot_params(3, 7, Sigma), 3, 7, 1, samples=200_000, seed=14, sigma=Sigma)
    assert _within(r, exact)


def test_n_below_d_converges_to_minimum_norm_loss():
    """Statistical: for n < d and a small step, the loss decreases with k to (d - n)/2 (the
    minimum-norm interpolant keeps the null-space part of w*), within 4 se at k = 150."""
    d, n = 10, 3
    means = [eval_loss_mc(d, n, 0.1, k, samples=20_000, seed=15)["mean"] for k in (1, 5, 25)]
    assert means[0] > means[1] > means[2]
    r = eval_loss_mc(d, n, 0.1, 150, samples=30_000, seed=16)
    assert r["diverged_frac"] == 0 and _within(r, float(theory.gd_limit_loss(d, n)))


def test_ood_tail_is_reported_not_hidden():
    """Statistical: Sigma = diag(1, ..., 1, 3) with eta = 0.4 makes eta lambda_max(S) >= 2 possible.
    The report shows diverged prompts and a mean far above the median (the median stays small); the
    ID-trained no-CoT model on the same prompts degrades but never diverges."""
    sigma = np.diag([1.0] * 9 + [3.0])
    r = eval_loss_mc(10, 20, 0.4, 40, samples=50_000, seed=17, sigma=sigma)
    assert r["diverged_frac"] > 0
    assert r["mean"] > 1e6 * r["median"] and r["median"] < 0.1
    assert r["mean"] >= r["mean_without_diverged"]
    assert r["max"] > DIVERGENCE_FACTOR
    nocot = nocot_loss_mc(10, 20, samples=50_000, seed=17, sigma=sigma)
    assert nocot["diverged_frac"] == 0 and np.isfinite(nocot["mean"])
    assert nocot["mean"] > float(theory.nocot_min_loss(10, 20))      # worse than in distribution


def test_overflow_makes_the_mean_infinite():
    """Numeric: when prompts overflow (huge step, many steps) the mean is inf, never a finite number
    computed from the survivors; quantiles of all prompts are still given."""
    r = eval_loss_mc(4, 8, 3.0, 400, samples=2000, seed=18)
    assert r["mean"] == np.inf and r["se"] == np.inf
    assert r["diverged_frac"] == 1.0 and r["median"] == np.inf


def test_gd_path_equals_transformer_path_prompt_by_prompt():
    """Numeric: eval_loss_mc (GD error recursion) and eval_loss_mc_params with gd_params (the
    transformer's CoT and looped rollouts) see the same prompts for the same (seed, chunk) and give
    the same per-prompt losses to 1e-10 relative, also out of distribution."""
    sigma = np.diag([0.5, 1.0, 2.0, 1.5])
    kw = dict(samples=3000, seed=19, chunk=1000, keep_losses=True, sigma=sigma)
    gd = eval_loss_mc(4, 9, 0.3, 7, **kw)
    for mode in ("cot", "looped"):
        tf = eval_loss_mc_params(*gd_params(4, 0.3), 4, 9, 7, mode=mode, **kw)
        np.testing.assert_allclose(tf.losses, gd.losses, rtol=1e-10)


def test_mc_losses_equal_explicit_gd_on_the_same_prompts():
    """Numeric: with method='direct' and one chunk, eval_loss_mc draws X and w* in the order of
    sample_prompts; its per-prompt losses equal (1/2) ||w_k - w*||^2 from gd_iterates on those prompts."""
    sigma = np.array([[1.0, 0.3, 0.0], [0.3, 2.0, 0.1], [0.0, 0.1, 0.7]])
    r = eval_loss_mc(3, 6, 0.35, 5, samples=500, seed=20, sigma=sigma, method="direct", keep_losses=True)
    X, y, w_star = sample_prompts(3, 6, 500, 20, sigma=sigma)
    w_k = gd_iterates(X, y, 0.35, 5)[:, -1]
    np.testing.assert_allclose(r.losses, 0.5 * ((w_k - w_star) ** 2).sum(-1), rtol=1e-10)


@pytest.mark.parametrize("d, n, sigma", [(3, 5, None), (4, 4, np.diag([3.0, 1.0, 0.5, 0.2])), (1, 2, None)])
def test_bartlett_and_direct_samplers_agree_in_distribution(d, n, sigma):
    """Statistical: S by the Bartlett decomposition and S = X X^T / n from drawn X have the same law:
    two-sample Kolmogorov-Smirnov on tr(S), lambda_max(S) and S[0, -1] gives p > 1e-3 (fixed seeds)."""
    a = sample_gram(d, n, 20_000, 21, sigma=sigma, method="bartlett")
    b = sample_gram(d, n, 20_000, 22, sigma=sigma, method="direct")
    for stat in (lambda S: np.trace(S, axis1=1, axis2=2), lambda S: np.linalg.eigvalsh(S)[:, -1],
                 lambda S: S[:, 0, -1]):
        assert scipy.stats.ks_2samp(stat(a), stat(b)).pvalue > 1e-3


@pytest.mark.parametrize("method", ["bartlett", "direct"])
def test_sampler_moments_match_wishart_moments(method):
    """Statistical: E tr(S^m) for m = 1, 2, 3 within 4 se of theory.wishart_moment (d = 4, n = 6)."""
    S = sample_gram(4, 6, 100_000, 23, method=method)
    P = np.eye(4)
    for m in (1, 2, 3):
        P = P @ S
        t = np.trace(P, axis1=1, axis2=2)
        assert abs(t.mean() - float(theory.wishart_moment(m, 4, 6))) <= 4 * t.std(ddof=1) / np.sqrt(t.size)


def test_ks_comparison_detects_a_wrong_bartlett_sampler():
    """Statistical, non-vacuous: the KS comparison above rejects a Bartlett sampler with the common
    mistake chi^2_n on every diagonal entry (instead of chi^2_{n - i})."""
    rng = np.random.default_rng(21)
    d, n, size = 3, 5, 20_000
    A = np.tril(rng.standard_normal((size, d, d)), -1)
    A[:, np.arange(d), np.arange(d)] = np.sqrt(rng.chisquare(n, size=(size, d)))
    wrong = A @ np.swapaxes(A, 1, 2) / n
    right = sample_gram(d, n, size, 22, method="direct")
    assert scipy.stats.ks_2samp(np.trace(wrong, axis1=1, axis2=2), np.trace(right, axis1=1, axis2=2)).pvalue < 1e-3


def test_loss_report_semantics():
    """Numeric: mean over all prompts (inf when any is inf), quantiles, the divergence rule, the
    mapping interface."""
    r = loss_report([0.5, 1.0, 2.0, 4.0], diverged=[False, False, False, True])
    assert isinstance(r, LossReport) and dict(r)["mean"] == r.mean == 1.875 and len(r) == len(KEYS)
    assert r["diverged"] == 1 and r["diverged_frac"] == 0.25 and r["mean_without_diverged"] == 3.5 / 3
    assert r["median"] == 1.5 and r.losses is None
    r = loss_report([1.0, np.nan, 3.0])
    assert r.mean == np.inf and r.se == np.inf and r.max == np.inf and r.diverged == 1 and r.median == 3.0
    assert r.q90 == np.inf and r.mean_without_diverged == 2.0
    w_sq = np.array([1.0, 1.0, 0.0])
    assert diverged_mask([2e6 - 1, 2e6 + 1, np.inf], w_sq).tolist() == [False, True, True]
    with pytest.raises(KeyError):
        r["nope"]


@pytest.mark.parametrize("call, name", [
    (lambda: eval_loss_mc(3, 4, 0.1, 2, samples=0, seed=0), "samples"),
    (lambda: eval_loss_mc(3, 4, -0.1, 2, samples=10, seed=0), "eta"),
    (lambda: eval_loss_mc(3, 4, 0.1, 2, samples=10, seed=0.5), "seed"),
    (lambda: eval_loss_mc(3, 4, 0.1, 2, samples=10, seed=0, sigma=-np.eye(3)), "sigma"),
    (lambda: eval_loss_mc(3, 4, 0.1, 2, samples=10, seed=0, chunk=0), "chunk"),
    (lambda: eval_loss_mc(5, 4, 0.1, 2, samples=10, seed=0, method="bartlett"), "method"),
    (lambda: eval_loss_mc_params(np.eye(8), np.eye(8), 3, 4, 1, samples=10, seed=0, mode="x"), "mode"),
    (lambda: eval_loss_mc_params(np.eye(6), np.eye(8), 3, 4, 1, samples=10, seed=0), "V"),
    (lambda: sample_gram(3, 4, -1, 0), "size"),
])
def test_bad_input_names_the_parameter(call, name):
    with pytest.raises(ValueError, match=rf"^{name}\b"):
        call()


@pytest.mark.parametrize("eta", [1e200, 1e90])
def test_exact_loss_past_the_float_range_is_inf_not_an_overflow_error(eta):
    """A step so large that the exact loss (a Fraction) exceeds the float range rounds to inf
    (``numerics.exact._rounded``), like any diverged loss, instead of raising OverflowError;
    a value past the range on the negative side rounds to -inf."""
    from fractions import Fraction

    from numerics.exact import _rounded
    assert numerics.gd_eval_loss_value(3, 6, eta, 2) == math.inf
    assert _rounded(-Fraction(10) ** 400) == -math.inf and _rounded(Fraction(1, 3)) == 1 / 3
