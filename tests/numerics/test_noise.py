"""Label noise in numerics (docs/theory.md section 16): the exact noisy loss against independent
Monte Carlo, the noisy prompts and their data statistic, eval_loss_mc's noise and stable_part,
the no-CoT and k -> oo noisy losses, and the Bayes floor.  Each test docstring says its kind:
numeric (float64, exact to rounding) or statistical (within 4 standard errors, fixed seeds, or
seeds drawn by hypothesis where the docstring says so).

Heavy tails (docs/theory.md section 2): the exact loss is a mean over all prompts, and for large
``eta lambda_max(S)`` it is carried by rare prompts that a Monte Carlo of 10^4 prompts never sees.
The Monte Carlo comparisons below therefore use steps small enough that the mean is carried by
typical prompts (see ``_tame_eta``) and modest k."""
import doctest
import importlib
import math

import numpy as np
import pytest
import sympy
from hypothesis import given, settings
from hypothesis import strategies as st

import theory
from numerics import (bayes_loss_mc, bayes_loss_mp, covariance_root, data_statistic, eval_loss_mc,
                      eval_loss_mc_params, gd_eval_loss_value, gd_iterates, gd_params, nocot_loss_mc,
                      nocot_params, sample_gram, sample_prompts)
from numerics.sampling import _check_method, _gram_and_task
from numerics.strategies import psd_covariances

R = sympy.Rational
SEEDS = st.integers(0, 2 ** 32 - 1)

#: z-scores of the statistical checks of this run (for reporting; each is asserted on its own).
Z_SCORES: dict = {}


def _z(name, mean, se, expected, n_se=4.0):
    """Assert ``|mean - expected| <= n_se * se`` (se > 0) and record the z-score under ``name``."""
    assert se > 0 and math.isfinite(mean), (name, mean, se)
    z = (mean - expected) / se
    Z_SCORES[name] = max(abs(z), Z_SCORES.get(name, 0.0))
    assert abs(z) <= n_se, f"{name}: mean {mean} vs {expected}, z = {z:.2f}"


def _mean_se(values):
    values = np.asarray(values, dtype=np.float64)
    return float(values.mean()), float(values.std(ddof=1) / math.sqrt(values.size))


def _tame_eta(u, d, n, k):
    """A step ``u * min(1 / (1 + sqrt(d/n))^2, n / (4k + d n))``, ``u <= 1``.

    The first bound keeps eta times the Marchenko-Pastur edge of S below 1.  The second is for the
    tail: lambda_max(S) <= tr(S) = chi^2_{dn} / n, and a prompt's loss grows like (eta lambda)^{2k},
    so the mean's integrand (eta lambda)^{2k} lambda^{dn/2 - 1} e^{-n lambda / 2} peaks at lambda =
    (4k + dn - 2)/n and its square's at (8k + dn - 2)/n; with eta below n / (4k + dn) both peaks have
    |1 - eta lambda| <= 1, so neither the mean nor the variance is carried by rare diverging prompts
    and 4 standard errors mean what they say (checked on a grid: z-scores of 150 repetitions at
    20000 prompts have standard deviation ~1 at the bound, n = 1 and d = 8 included)."""
    return u * min(1.0 / (1.0 + math.sqrt(d / n)) ** 2, n / (4 * k + d * n))


def _independent_gd_losses(d, n, eta, k, noise_var, samples, rng, root=None):
    """(1/2) ||w_k - w*||^2 from raw draws: X (columns N(0, Sigma)), w* ~ N(0, I), eps ~ N(0, s^2),
    y = X^T w* + eps, and plain GD on (X, y) (numerics.gd_iterates); shares nothing with
    eval_loss_mc or theory."""
    X = rng.standard_normal((samples, d, n))
    if root is not None:
        X = root @ X
    w_star = rng.standard_normal((samples, d))
    y = np.einsum("bdn,bd->bn", X, w_star) + math.sqrt(noise_var) * rng.standard_normal((samples, n))
    w_k = gd_iterates(X, y, eta, k)[:, -1, :]
    return 0.5 * np.sum((w_k - w_star) ** 2, axis=1)


def _root(sigma):
    """Symmetric PSD square root by eigh (not numerics.covariance_root)."""
    lam, Q = np.linalg.eigh(np.asarray(sigma, dtype=np.float64))
    return (Q * np.sqrt(np.clip(lam, 0, None))) @ Q.T


def test_doctests():
    """Numeric: the docstring examples of numerics.noise (bayes_loss_mc, bayes_loss_mp) run and print
    as shown."""
    result = doctest.testmod(importlib.import_module("numerics.noise"))
    assert result.attempted >= 2 and result.failed == 0


# ----------------------------------------------------------------------------------- the headline
@settings(max_examples=12)
@given(d=st.integers(1, 8), n=st.integers(1, 16), k=st.integers(0, 8), noise_var=st.floats(0.0, 4.0),
       u=st.floats(0.05, 1.0), seed=SEEDS)
def test_exact_noisy_loss_matches_independent_monte_carlo(d, n, k, noise_var, u, seed):
    """Statistical (hypothesis draws d, n -- n < d included --, k, s^2, the step and the seed): the
    exact noisy loss numerics.gd_eval_loss_value(..., noise_var=) is within 4 se of an independent
    Monte Carlo (raw X, eps, w* and plain GD on (X, y)) and of eval_loss_mc(..., noise_var=), 20000
    prompts each (se a few percent at most); steps from _tame_eta (module docstring)."""
    eta = _tame_eta(u, d, n, k)
    exact = gd_eval_loss_value(d, n, eta, k, noise_var=noise_var)
    losses = _independent_gd_losses(d, n, eta, k, noise_var, 20_000, np.random.default_rng(seed))
    mean, se = _mean_se(losses)
    assert se < 0.05 * mean
    _z("headline: independent MC", mean, se, exact)
    r = eval_loss_mc(d, n, eta, k, samples=20_000, seed=seed + 1, noise_var=noise_var)
    assert r.diverged == 0
    _z("headline: eval_loss_mc", r.mean, r.se, exact)


@pytest.mark.parametrize("sigma, n, eta, k, noise_var", [
    ([[2, 1, 0], [1, 2, 0], [0, 0, 0]], 4, 0.1, 3, 1.5),                                 # singular
    ([[1, R(1, 2), 0], [R(1, 2), 1, R(1, 4)], [0, R(1, 4), R(1, 2)]], 2, 0.1, 2, 0.75),   # n < d
    ([[4, 0], [0, R(1, 4)]], 6, 0.1, 4, 2.0),
])
def test_exact_noisy_loss_with_sigma_matches_monte_carlo(sigma, n, eta, k, noise_var):
    """Statistical: theory.gd_eval_loss(..., sigma=, noise_var=) (exact, a singular and two
    non-identity Sigma, small k) is within 4 se of an independent Monte Carlo (x = Sigma^{1/2} g,
    plain GD) and of eval_loss_mc(..., sigma=, noise_var=), 40000 prompts each.  eta is below
    n / (4k + n tr Sigma) (the tail bound of _tame_eta with tr Sigma for d)."""
    Sigma = sympy.Matrix(sigma)
    d = Sigma.shape[0]
    assert eta <= n / (4 * k + n * float(Sigma.trace()))
    exact = float(theory.gd_eval_loss(d, n, sympy.nsimplify(eta), k, sigma=Sigma,
                                      noise_var=sympy.nsimplify(noise_var)))
    sigma_f = np.array(Sigma.tolist(), dtype=np.float64)
    losses = _independent_gd_losses(d, n, eta, k, noise_var, 40_000, np.random.default_rng(21),
                                    root=_root(sigma_f))
    _z("sigma: independent MC", *_mean_se(losses), exact)
    r = eval_loss_mc(d, n, eta, k, samples=40_000, seed=22, sigma=sigma_f, noise_var=noise_var)
    _z("sigma: eval_loss_mc", r.mean, r.se, exact)


# ------------------------------------------------------------------------ prompts and statistics
@settings(max_examples=15)
@given(d=st.integers(1, 6), n=st.integers(1, 10), noise_var=st.sampled_from([0.0, 0.3, 2.5]),
       with_sigma=st.booleans(), data=st.data(), seed=SEEDS)
def test_data_statistic_with_noise_is_the_prompt_gram(d, n, noise_var, with_sigma, data, seed):
    """Numeric (hypothesis): the prompts of sample_prompts(..., noise_var=) and the Monte Carlo
    chunk _gram_and_task (same seed, same draws X, w*, eps) agree, and data_statistic(S, w*,
    Xeps=, eps_sq=) equals Z Z^T / n on the explicit (x, y) rows to 1e-12 (also without noise and
    for a singular Sigma)."""
    sigma = data.draw(psd_covariances(d)) if with_sigma else None
    X, y, w_star = sample_prompts(d, n, 5, seed, sigma=sigma, noise_var=noise_var)
    S, w2, Xeps, eps_sq = _gram_and_task(d, n, 5, np.random.default_rng(seed), covariance_root(sigma, d),
                                         "direct", noise_var)
    assert np.array_equal(w2, w_star)
    assert (Xeps is None) == (noise_var == 0)
    Z = np.concatenate([X, y[:, None, :]], axis=1)
    G = Z @ np.swapaxes(Z, 1, 2) / n
    stat = data_statistic(S, w2, Xeps=Xeps, eps_sq=eps_sq)
    assert stat.shape == (5, d + 1, d + 1)
    np.testing.assert_allclose(stat, G, rtol=0, atol=1e-12 * max(1.0, np.abs(G).max()))


def test_data_statistic_zero_noise_terms_are_the_noiseless_statistic():
    """Numeric: Xeps = 0 and eps_sq = 0 give exactly the noiseless statistic; the y-row is
    S w* + Xeps and the corner w*^T S w* + 2 w*^T Xeps + eps_sq."""
    rng = np.random.default_rng(3)
    S = np.cov(rng.standard_normal((4, 9)))
    w, b, e = rng.standard_normal(4), rng.standard_normal(4), 0.7
    assert np.array_equal(data_statistic(S, w, Xeps=np.zeros(4), eps_sq=0.0), data_statistic(S, w))
    stat = data_statistic(S, w, Xeps=b, eps_sq=e)
    np.testing.assert_allclose(stat[:4, 4], S @ w + b, rtol=1e-14)
    np.testing.assert_allclose(stat[4, 4], w @ S @ w + 2 * w @ b + e, rtol=1e-14)


def test_sample_prompts_noise_has_the_right_law():
    """Statistical: y - X^T w* has mean 0 and variance s^2 (se of a variance s^2 sqrt(2/N)), and is
    uncorrelated with x; numeric: the noise is drawn last, so X and w* are the same with and without
    noise (same seed), and noise_var = 0 gives y = X^T w* (to rounding)."""
    d, n, size, v = 3, 50, 4000, 1.7
    X, y, w = sample_prompts(d, n, size, 5, noise_var=v)
    X0, y0, w0 = sample_prompts(d, n, size, 5)
    assert np.array_equal(X, X0) and np.array_equal(w, w0)
    np.testing.assert_allclose(y0, np.einsum("bdn,bd->bn", X0, w0), rtol=0, atol=1e-12)
    eps = (y - y0).ravel()
    N = eps.size
    _z("noise mean", eps.mean(), math.sqrt(v / N), 0.0)
    _z("noise variance", eps.var(), v * math.sqrt(2 / N), v)
    _z("noise-x correlation", *_mean_se((y - y0) * X[:, 0, :]), 0.0)


def test_check_method_refuses_bartlett_with_noise():
    """Numeric: Bartlett never forms X, so it cannot draw label noise: _check_method, eval_loss_mc
    and eval_loss_mc_params refuse it with noise; "auto" resolves to "direct" with noise and to
    "bartlett" without (n >= d)."""
    with pytest.raises(ValueError, match="bartlett"):
        _check_method("bartlett", 3, 5, 1.0)
    assert _check_method("bartlett", 3, 5, 0.0) == "bartlett"
    assert _check_method("auto", 3, 5, 0.5) == "direct"
    assert _check_method("auto", 3, 5) == "bartlett"
    assert _check_method("auto", 5, 3) == "direct"
    with pytest.raises(ValueError, match="bartlett"):
        eval_loss_mc(3, 5, 0.1, 2, samples=10, seed=0, noise_var=1.0, method="bartlett")
    with pytest.raises(ValueError, match="bartlett"):
        eval_loss_mc_params(*gd_params(3, 0.1), 3, 5, 2, samples=10, seed=0, noise_var=1.0, method="bartlett")


# ------------------------------------------------------------------------------ eval_loss_mc noise
@pytest.mark.parametrize("d, n", [(4, 7), (5, 3)])
def test_eval_loss_mc_without_noise_is_unchanged(d, n):
    """Numeric: noise_var=0 is bitwise the call without it (same seed), and both are the noiseless
    recursion on sample_gram's draws followed by w* (the order of draws of the noiseless Monte Carlo,
    Bartlett for n >= d) to 1e-12."""
    eta, k, samples = 0.1, 4, 3000
    old = eval_loss_mc(d, n, eta, k, samples=samples, seed=7, keep_losses=True)
    new = eval_loss_mc(d, n, eta, k, samples=samples, seed=7, noise_var=0.0, keep_losses=True)
    assert np.array_equal(old.losses, new.losses) and old == new
    rng = np.random.default_rng(7)
    S = sample_gram(d, n, samples, rng)
    e = -rng.standard_normal((samples, d))
    for _ in range(k):
        e = e - eta * np.einsum("bij,bj->bi", S, e)
    np.testing.assert_allclose(old.losses, 0.5 * np.sum(e * e, axis=1), rtol=1e-12)


@pytest.mark.parametrize("d, n, eta, k, noise_var", [
    (3, 5, 0.2, 4, 1.0),
    (5, 2, 0.1, 3, 2.0),            # n < d
    (1, 1, 0.3, 2, 0.5),
    (2, 6, 0.25, 0, 3.0),           # k = 0: the noise does not enter
])
def test_eval_loss_mc_params_with_noise_is_eval_loss_mc(d, n, eta, k, noise_var):
    """Numeric: the Theorem 3.2 transformer's CoT rollout on the noisy data statistic
    (eval_loss_mc_params with gd_params(d, eta)) has the per-prompt losses of eval_loss_mc with the
    same seed, chunk and noise to 1e-9 relative; nocot_loss_mc(eta=) is its k = 1 case."""
    kw = dict(samples=1500, seed=8, noise_var=noise_var, chunk=500, keep_losses=True)
    gd = eval_loss_mc(d, n, eta, k, **kw)
    lsa = eval_loss_mc_params(*gd_params(d, eta), d, n, k, **kw)
    np.testing.assert_allclose(lsa.losses, gd.losses, rtol=1e-9, atol=1e-300)
    if k == 0:      # the first chunk draws X, w* as without noise (eps comes last), and eps does not enter
        clean = eval_loss_mc(d, n, eta, 0, samples=500, seed=8, method="direct", keep_losses=True)
        np.testing.assert_array_equal(gd.losses[:500], clean.losses)
    one = nocot_loss_mc(d, n, eta=eta, **kw)
    np.testing.assert_allclose(one.losses, eval_loss_mc(d, n, eta, 1, **kw).losses, rtol=1e-9, atol=1e-300)


def test_stable_part_keeps_exactly_the_stable_prompts():
    """Numeric: with stable_part=True a prompt's loss is its full loss when eta lambda_max(S) < 2 and
    0 otherwise (S recomputed from the same draws); so the stable mean is at most the full mean
    (equal when all prompts are stable), also at k = 0, where the stable part is d/2 times the
    stable fraction on average (statistical, 4 se)."""
    d, n, eta, k, v, samples = 4, 4, 0.5, 6, 1.0, 4000
    kw = dict(samples=samples, seed=9, noise_var=v, chunk=samples, keep_losses=True)
    full = eval_loss_mc(d, n, eta, k, **kw)
    part = eval_loss_mc(d, n, eta, k, stable_part=True, **kw)
    S = _gram_and_task(d, n, samples, np.random.default_rng(9), None, "direct", v)[0]
    stable = eta * np.linalg.eigvalsh(S)[:, -1] < 2
    assert 0.05 < 1 - stable.mean() < 0.95                      # both kinds present
    assert np.array_equal(part.losses[stable], full.losses[stable])
    assert np.all(part.losses[~stable] == 0) and np.all(full.losses[~stable] > 0)
    assert part.mean <= full.mean
    tiny = eval_loss_mc(d, n, 0.01, k, **kw)
    assert np.array_equal(eval_loss_mc(d, n, 0.01, k, stable_part=True, **kw).losses, tiny.losses)
    zero = eval_loss_mc(d, n, eta, 0, stable_part=True, **kw)
    assert np.all((zero.losses > 0) == stable)
    _z("stable part at k = 0", zero.mean, zero.se, d / 2 * stable.mean())


def test_stable_part_explains_the_noiseless_optimum():
    """Statistical: d = 10, n = 20, eta = 0.4 without noise: the exact mean rises from k = 19 to
    k = 20 (theory's k* = 19, tests/theory/test_noise.py), but on every stable prompt the loss falls
    (numeric, same prompts), and the stable part's mean is far (> 4 se) below the exact mean: the
    rise is carried by rare prompts with eta lambda_max(S) >= 2."""
    kw = dict(samples=5000, seed=10, stable_part=True, keep_losses=True)
    at19, at20 = eval_loss_mc(10, 20, 0.4, 19, **kw), eval_loss_mc(10, 20, 0.4, 20, **kw)
    exact19, exact20 = gd_eval_loss_value(10, 20, 0.4, 19), gd_eval_loss_value(10, 20, 0.4, 20)
    assert exact20 > exact19
    assert np.all(at20.losses <= at19.losses) and at20.mean < at19.mean
    assert at20.mean + 4 * at20.se < exact20


# -------------------------------------------------------------------------------- no-CoT and limits
@pytest.mark.parametrize("d, n, v", [(10, 20, 1.0), (6, 3, 2.0), (2, 9, 4.0)])
def test_nocot_mc_with_noise_reaches_the_noisy_floor(d, n, v):
    """Statistical: the noise-optimal no-CoT model (nocot_loss_mc(noise_var=), eta = n / (n + d + 1 +
    s^2)) has mean within 4 se of theory.nocot_min_loss(noise_var=); on the same prompts (same seed
    and chunk) the paired loss difference to Theorem 3.1's noiseless step n / (n + d + 1) is within
    4 se of the exact difference, which is positive."""
    vq = sympy.nsimplify(v)
    floor = float(theory.nocot_min_loss(d, n, noise_var=vq))
    kw = dict(samples=40_000, seed=11, noise_var=v, chunk=4096, keep_losses=True)
    best = nocot_loss_mc(d, n, **kw)
    assert float(nocot_params(d, n, noise_var=v)[0][d + 1, 0]) == pytest.approx(-n / (n + d + 1 + v), rel=1e-15)
    _z("nocot floor", best.mean, best.se, floor)
    plain = nocot_loss_mc(d, n, eta=n / (n + d + 1), **kw)
    gap = float(theory.nocot_loss(d, n, R(n, n + d + 1), noise_var=vq)) - floor
    assert gap > 0
    _z("nocot paired gap", *_mean_se(plain.losses - best.losses), gap)


@pytest.mark.parametrize("sigma, n, v", [
    ([[2, 0.5, 0], [0.5, 1, -0.25], [0, -0.25, 0.5]], 5, 1.5),
    ([[1, 1, 0], [1, 1, 0], [0, 0, 2]], 3, 0.5),                       # singular
])
def test_linear_prediction_loss_with_noise_matches_monte_carlo(sigma, n, v):
    """Statistical: theory.linear_prediction_loss(n, Sigma, A, noise_var=) for a random A (entries
    on a 1/64 grid, so float and exact agree) is within 4 se of the Monte Carlo mean of
    (1/2) ||A X y / n - w*||^2 with noisy labels, 100000 prompts."""
    sigma = np.array(sigma, dtype=np.float64)
    d = sigma.shape[0]
    A = np.round(np.random.default_rng(12).normal(size=(d, d)) * 64) / 64
    exact = float(theory.linear_prediction_loss(
        n, sympy.Matrix(d, d, lambda i, j: R(sigma[i, j])), sympy.Matrix(d, d, lambda i, j: R(A[i, j])),
        noise_var=R(v)))
    rng = np.random.default_rng(13)
    N = 100_000
    X = _root(sigma) @ rng.standard_normal((N, d, n))
    w = rng.standard_normal((N, d))
    y = np.einsum("bdn,bd->bn", X, w) + math.sqrt(v) * rng.standard_normal((N, n))
    pred = np.einsum("ij,bjn,bn->bi", A, X, y) / n
    _z("linear prediction", *_mean_se(0.5 * np.sum((pred - w) ** 2, axis=1)), exact)


def _noisy_prompts(d, n, v, samples, seed, root=None):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((samples, d, n))
    if root is not None:
        X = root @ X
    w = rng.standard_normal((samples, d))
    y = np.einsum("bdn,bd->bn", X, w) + math.sqrt(v) * rng.standard_normal((samples, n))
    return X, y, w


@pytest.mark.parametrize("d, n, v, sigma", [
    (3, 13, 2.0, None),
    (5, 15, 1.0, None),
    (3, 12, 1.0, [2.0, 0.5, 0.0]),          # singular: the least-squares fit on range(Sigma)
])
def test_gd_limit_with_noise_above_interpolation(d, n, v, sigma):
    """Statistical: for n > rank + 1 the noisy limit theory.gd_limit_loss(..., noise_var=) is within
    4 se of the Monte Carlo mean of the least-squares fit (1/2) ||S^+ X y / n - w*||^2 (what GD
    tends to on stable prompts), 40000 prompts.  n >= rank + 9: E tr(S^{-1})^2, and the moments that
    make se honest, are finite only some way above the interpolation threshold (heavy tail near
    n = d + 2)."""
    root = None if sigma is None else np.diag(np.sqrt(sigma))
    Sigma = None if sigma is None else sympy.diag(*[R(x) for x in sigma])
    exact = float(theory.gd_limit_loss(d, n, Sigma, noise_var=R(v)))
    X, y, w = _noisy_prompts(d, n, v, 40_000, 14, root)
    S = X @ np.swapaxes(X, 1, 2) / n
    fit = np.einsum("bij,bj->bi", np.linalg.pinv(S, hermitian=True), np.einsum("bdn,bn->bd", X, y) / n)
    _z("limit n > d", *_mean_se(0.5 * np.sum((fit - w) ** 2, axis=1)), exact)


@pytest.mark.parametrize("d, n, v, scale", [(14, 4, 1.0, 1.0), (12, 3, 2.0, 1.0), (12, 2, 1.0, 3.0)])
def test_gd_limit_with_noise_below_interpolation(d, n, v, scale):
    """Statistical: for n < d - 1 the noisy limit (d - n)/2 + s^2 n / (2 c (d - n - 1)) (Sigma = c I)
    is within 4 se of the Monte Carlo mean of the minimum-norm interpolant X (X^T X)^{-1} y, 40000
    prompts, d - n >= 9 (heavy tail near n = d)."""
    Sigma = None if scale == 1.0 else R(scale) * sympy.eye(d)
    exact = float(theory.gd_limit_loss(d, n, Sigma, noise_var=R(v)))
    X, y, w = _noisy_prompts(d, n, v, 40_000, 15, None if scale == 1.0 else math.sqrt(scale) * np.eye(d))
    K = np.swapaxes(X, 1, 2) @ X
    fit = np.einsum("bdn,bn->bd", X, np.linalg.solve(K, y[:, :, None])[:, :, 0])
    _z("limit n < d", *_mean_se(0.5 * np.sum((fit - w) ** 2, axis=1)), exact)


# ------------------------------------------------------------------------------------- Bayes floor
@pytest.mark.parametrize("d, n, v, sigma", [
    (10, 20, 1.0, None),
    (5, 3, 0.5, None),                      # n < d
    (3, 12, 4.0, None),
    (4, 4, 2.0, [2.0, 1.0, 0.5, 0.25]),
])
def test_bayes_mc_matches_an_independent_estimate(d, n, v, sigma):
    """Statistical: bayes_loss_mc's mean (realised losses of the posterior mean) is within 4 se
    (combined) of an independent estimate of (1/2) E tr((I + n S / s^2)^{-1}) from separately drawn
    S (eigenvalues), 20000 prompts each."""
    root = None if sigma is None else np.diag(np.sqrt(sigma))
    r = bayes_loss_mc(d, n, v, samples=20_000, seed=16, sigma=None if sigma is None else np.diag(sigma))
    X = np.random.default_rng(17).standard_normal((20_000, d, n))
    if root is not None:
        X = root @ X
    lam = np.linalg.eigvalsh(X @ np.swapaxes(X, 1, 2) / n)
    mean, se = _mean_se(0.5 * np.sum(1.0 / (1.0 + n * lam / v), axis=1))
    z_se = math.hypot(r.se, se)
    _z("bayes vs independent", r.mean - mean, z_se, 0.0)


@pytest.mark.parametrize("d, n, eta, k_max, v", [
    (2, 4, 0.25, 10, 1.0),
    (6, 3, 0.25, 8, 1.0),
    (2, 5, 0.3, 10, 4.0),
])
def test_bayes_floor_is_below_gd_at_its_best_length_and_below_nocot(d, n, eta, k_max, v):
    """Statistical: the Bayes floor (bayes_loss_mc, 60000 prompts) plus 4 se is below the exact GD
    loss at the best CoT length (theory.best_cot_length) and below the noisy no-CoT floor."""
    best = float(theory.best_cot_length(d, n, eta, k_max, noise_var=v).loss)
    r = bayes_loss_mc(d, n, v, samples=60_000, seed=18)
    assert r.mean + 4 * r.se < best
    assert r.mean + 4 * r.se < float(theory.nocot_min_loss(d, n, noise_var=R(v)))
    Z_SCORES["bayes floor margin (se)"] = min((best - r.mean) / r.se, Z_SCORES.get("bayes floor margin (se)", np.inf))


def _mp_closed_form(d, n, v):
    lam, gamma = v / n, d / n
    b = 1 + lam - gamma
    m = (math.sqrt(b * b + 4 * gamma * lam) - b) / (2 * gamma * lam)
    assert abs(gamma * lam * m * m + b * m - 1) < 1e-12                # MP equation at z = -lam
    return lam * d * m / 2


@pytest.mark.parametrize("d, n, v", [(10, 20, 1.0), (200, 400, 1.0), (200, 100, 0.5), (50, 50, 4.0), (3, 1, 0.1)])
def test_bayes_mp_closed_form_and_silverstein_agree(d, n, v):
    """Numeric: bayes_loss_mp with sigma_spectrum=[1.0] (Silverstein equation solved numerically)
    equals the Marchenko-Pastur closed form (typed in here, checked against its quadratic) to 1e-10;
    a spectrum [2.0] at noise v equals the identity at v / 2 (S doubles); gamma > 1 included."""
    closed = _mp_closed_form(d, n, v)
    assert bayes_loss_mp(d, n, v) == pytest.approx(closed, rel=1e-12)
    assert bayes_loss_mp(d, n, v, sigma_spectrum=[1.0]) == pytest.approx(closed, rel=1e-10)
    assert bayes_loss_mp(d, n, v, sigma_spectrum=[2.0]) == pytest.approx(_mp_closed_form(d, n, v / 2), rel=1e-10)


def test_bayes_mp_is_close_to_monte_carlo_at_large_d():
    """Statistical: at d = 200, n = 400 the large-d value bayes_loss_mp is within 3 % of
    bayes_loss_mc (150 prompts, se about 1.1 %; the finite-d bias is O(1/d), about 0.9 % here)."""
    r = bayes_loss_mc(200, 400, 1.0, samples=150, seed=19, chunk=30)
    mp = bayes_loss_mp(200, 400, 1.0)
    assert r.se < 0.015 * r.mean
    assert abs(r.mean / mp - 1) < 0.03
    Z_SCORES["bayes mp vs bayes_loss_mc (relative)"] = abs(r.mean / mp - 1)


@pytest.mark.parametrize("n, spectrum", [
    (400, [0.5] * 100 + [2.0] * 100),
    (100, [0.5] * 100 + [2.0] * 100),           # gamma = 2: an atom at 0
    (50, [0.1] * 150 + [3.0] * 50),             # gamma = 4, skewed spectrum
])
def test_bayes_mp_with_a_spectrum_matches_independent_eigenvalues(n, spectrum):
    """Statistical: at d = 200 bayes_loss_mp(..., sigma_spectrum=) (the Silverstein branch) is within
    2 % of (1/2) tr((I + n S / s^2)^{-1}) averaged over 20 independently drawn S with
    x ~ N(0, diag(spectrum)) (se below 0.3 %; finite-d bias below 1 %), n < d included."""
    d = len(spectrum)
    X = np.sqrt(np.array(spectrum))[None, :, None] * np.random.default_rng(20).standard_normal((20, d, n))
    lam = np.linalg.eigvalsh(X @ np.swapaxes(X, 1, 2) / n)
    mean, se = _mean_se(0.5 * np.sum(1.0 / (1.0 + n * lam / 1.0), axis=1))
    mp = bayes_loss_mp(d, n, 1.0, sigma_spectrum=spectrum)
    assert se < 0.003 * mean
    assert abs(mean / mp - 1) < 0.02
    key = "bayes mp (spectrum) vs eigenvalues (relative)"
    Z_SCORES[key] = max(abs(mean / mp - 1), Z_SCORES.get(key, 0.0))


# ----------------------------------------------------------------------------------------- refusals
BAD_NOISE = [-1.0, -1e-300, float("nan"), float("inf"), "1", True, None, [1.0]]


@pytest.mark.parametrize("bad", BAD_NOISE, ids=repr)
def test_bad_noise_var_is_refused_naming_it(bad):
    """Numeric: a negative, non-finite, boolean, text, None or list noise_var gives a ValueError
    naming noise_var in every numerics function that takes one; 0 too for the Bayes floor."""
    calls = [
        lambda: sample_prompts(2, 3, 4, 0, noise_var=bad),
        lambda: eval_loss_mc(2, 3, 0.1, 2, samples=10, seed=0, noise_var=bad),
        lambda: eval_loss_mc_params(*gd_params(2, 0.1), 2, 3, 2, samples=10, seed=0, noise_var=bad),
        lambda: nocot_loss_mc(2, 3, samples=10, seed=0, noise_var=bad),
        lambda: nocot_params(2, 3, noise_var=bad),
        lambda: gd_eval_loss_value(2, 3, 0.1, 2, noise_var=bad),
        lambda: bayes_loss_mc(2, 3, bad, samples=10, seed=0),
        lambda: bayes_loss_mp(2, 3, bad),
    ]
    for call in calls:
        with pytest.raises(ValueError, match="noise_var"):
            call()


def test_bayes_refuses_zero_noise():
    """Numeric: the Bayes floor needs s^2 > 0 (without noise it is the unrecoverable part)."""
    for zero in (0, 0.0):
        with pytest.raises(ValueError, match="noise_var"):
            bayes_loss_mc(2, 3, zero, samples=10, seed=0)
        with pytest.raises(ValueError, match="noise_var"):
            bayes_loss_mp(2, 3, zero)
        with pytest.raises(ValueError, match="noise_var"):
            bayes_loss_mp(2, 3, zero, sigma_spectrum=[1.0, 2.0])
