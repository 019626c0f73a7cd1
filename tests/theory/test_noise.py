"""Label noise in the exact theory (docs/theory.md section 16): the noise factor q_k, the noisy
k-step GD loss (symbolic and numeric n, noise_var), its proof and the proof's rejection of a wrong
library, the best chain-of-thought length, the noisy no-CoT optimum and the k -> oo limits.
Every check here is exact (sympy) unless its docstring says numeric (float64); the Monte Carlo
checks of the same formulas are in tests/numerics/test_noise.py."""
import doctest
import importlib
import pickle
import warnings

import numpy as np
import pytest
import sympy
from hypothesis import given, settings
from hypothesis import strategies as st

import theory
import theory.gd as gd
import theory.losses as losses
import theory.noise as noise
from numerics import gd_eval_loss_value
from theory import (best_cot_length, gd_eval_loss, gd_limit_loss, gd_noise_factor, linear_prediction_loss,
                    nocot_gamma, nocot_loss, nocot_min_loss, nocot_min_loss_sigma, nocot_optimal_eta,
                    prove_noisy_gd_loss, wishart_moment)

R = sympy.Rational
ETA, S_, V = sympy.symbols("eta s v")
D_SYM, N_SYM = sympy.symbols("d n", positive=True, integer=True)

# The library's own functions, kept before any monkeypatch.
GD_STEP = gd.gd_step
GD_NOISE_FACTOR = gd.gd_noise_factor
GD_EVAL_LOSS = losses.gd_eval_loss


def test_doctests():
    """Exact: the docstring examples of theory.noise (best_cot_length, prove_noisy_gd_loss) run and
    print as shown."""
    module = importlib.import_module("theory.noise")
    result = doctest.testmod(module, extraglobs={"sympy": sympy})
    assert result.attempted >= 2 and result.failed == 0


# ------------------------------------------------------------------------------------ noise factor
@pytest.mark.parametrize("k", range(7))
def test_noise_factor_is_the_closed_form_polynomial(k):
    """Exact: gd_noise_factor(eta, k, s) (symbolic eta) is a polynomial in s equal to
    (1 - (1 - eta s)^k)^2 / s, of degree 2k - 1 (0 for k = 0), with linear coefficient k^2 eta^2
    (g_k(0) = k eta)."""
    q = gd_noise_factor(ETA, k, S_)
    closed = sympy.cancel((1 - (1 - ETA * S_) ** k) ** 2 / S_)
    assert sympy.expand(q - closed) == 0
    poly = sympy.Poly(q, S_)                              # raises if q is not a polynomial in s
    if k == 0:
        assert q == 0
    else:
        assert poly.degree() == 2 * k - 1
        assert sympy.expand(poly.coeff_monomial(S_) - k ** 2 * ETA ** 2) == 0
        assert poly.coeff_monomial(1) == 0


def test_noise_factor_is_gd_on_one_noisy_coordinate():
    """Exact: running the GD error recursion e <- (1 - eta s) e + eta b from e_0 = 0 gives
    g_k(s) b, and q_k = g_k^2 s (docs/theory.md section 16), k = 0..6."""
    b = sympy.Symbol("b")
    e = sympy.Integer(0)
    for k in range(7):
        g = sympy.expand(e / b)
        assert sympy.expand(gd_noise_factor(ETA, k, S_) - g ** 2 * S_) == 0
        e = sympy.expand((1 - ETA * S_) * e + ETA * b)


# ---------------------------------------------------------------------------------- noisy GD loss
def _noise_coefficient_from_moments(d, n, k):
    """(1/2n) E tr((1 - (1 - eta S)^k)^2 S^{-1}) from wishart_moment and the typed-in closed form
    of q_k (not gd_noise_factor)."""
    q = sympy.Poly(sympy.cancel((1 - (1 - ETA * S_) ** k) ** 2 / S_), S_)
    total = sympy.Integer(0)
    for (m,), c in q.terms():
        total += c * (d if m == 0 else wishart_moment(m, d, n))
    return sympy.expand(total / (2 * sympy.sympify(n)))


@pytest.mark.parametrize("d, n, k", [(1, 1, 2), (2, 3, 3), (3, 2, 2), (4, 1, 3), (5, 7, 1)])
def test_noisy_loss_is_linear_in_noise_var(d, n, k):
    """Exact: gd_eval_loss(..., noise_var=v) with symbolic eta and v is the noiseless loss plus v
    times (1/2n) E tr(q_k(S)), the latter summed from wishart_moment on the typed-in q_k; at
    noise_var = 0 (and at v -> 0) it is the noiseless loss; at k = 0 the noise does not enter."""
    noisy = gd_eval_loss(d, n, ETA, k, noise_var=V)
    clean = gd_eval_loss(d, n, ETA, k)
    assert sympy.diff(noisy, V, 2) == 0
    assert sympy.expand(noisy.subs(V, 0) - clean) == 0
    assert gd_eval_loss(d, n, ETA, k, noise_var=0) == clean
    assert sympy.expand(sympy.diff(noisy, V) - _noise_coefficient_from_moments(d, n, k)) == 0
    assert gd_eval_loss(d, n, ETA, 0, noise_var=V) == R(d, 2)


def test_noisy_loss_one_dimension_from_chi_square_moments():
    """Exact: d = 1, S = chi^2_n / n with E S^m = n (n + 2) ... (n + 2m - 2) / n^m: the noisy loss
    (1/2) E[(1 - eta S)^{2k} + (v / n) q_k(S)] computed from these moments, k = 0..3, n = 1, 2, 5."""
    def moment(m, n):
        return sympy.prod([n + 2 * i for i in range(m)]) / sympy.Integer(n) ** m

    for n in (1, 2, 5):
        for k in range(4):
            integrand = sympy.Poly(sympy.expand((1 - ETA * S_) ** (2 * k)
                                                + V / n * sympy.cancel((1 - (1 - ETA * S_) ** k) ** 2 / S_)), S_)
            expected = sum(c * moment(m, n) for (m,), c in integrand.terms()) / 2
            assert sympy.expand(gd_eval_loss(1, n, ETA, k, noise_var=V) - expected) == 0


@pytest.mark.parametrize("k", range(4))
def test_noisy_loss_with_symbolic_n(k):
    """Exact: like the noiseless loss, the noisy one accepts a symbolic n (d an int) and symbolic
    d and n; substituting gives the integer-size value, n < d included."""
    with_n = gd_eval_loss(3, N_SYM, ETA, k, noise_var=V)
    with_dn = gd_eval_loss(D_SYM, N_SYM, ETA, k, noise_var=V)
    for n in (2, 5):
        exact = gd_eval_loss(3, n, ETA, k, noise_var=V)
        assert sympy.expand(with_n.subs(N_SYM, n) - exact) == 0
        assert sympy.expand(with_dn.subs({D_SYM: 3, N_SYM: n}) - exact) == 0
    assert sympy.expand(with_n.subs(V, 0) - gd_eval_loss(3, N_SYM, ETA, k)) == 0


def test_noisy_loss_with_sigma_is_linear_and_reduces_to_identity():
    """Exact: with an explicit Sigma (singular included) the noise term is v/(2n) E tr(q_k(S)) from
    trace_moment with that Sigma; Sigma = I gives the identity-covariance value; Sigma = 0 gives d/2
    for every k and v (X = 0: neither signal nor noise reaches GD)."""
    sigma = sympy.Matrix([[2, 1, 0], [1, 2, 0], [0, 0, 0]])
    eta = R(1, 5)
    for k in (1, 2, 3):
        noisy = gd_eval_loss(3, 4, eta, k, sigma=sigma, noise_var=V)
        q = sympy.cancel((1 - (1 - eta * S_) ** k) ** 2 / S_)
        term = theory.trace_moment(q, S_, 3, 4, sigma=sigma) / 8
        assert sympy.expand(noisy - gd_eval_loss(3, 4, eta, k, sigma=sigma) - V * term) == 0
        assert sympy.expand(gd_eval_loss(3, 2, eta, k, sigma=sympy.eye(3), noise_var=V)
                            - gd_eval_loss(3, 2, eta, k, noise_var=V)) == 0
        assert gd_eval_loss(2, 3, eta, k, sigma=sympy.zeros(2), noise_var=V) == 1


def test_noisy_loss_refuses_bad_noise_var():
    """Exact: negative, infinite, nan, boolean or text noise_var is refused with a ValueError that
    names noise_var; a float is read exactly as a short rational (0.25 -> 1/4)."""
    for bad in (-1, -0.5, float("nan"), float("inf"), sympy.oo, sympy.nan, True, "1", None):
        with pytest.raises(ValueError, match="noise_var"):
            gd_eval_loss(2, 3, R(1, 4), 2, noise_var=bad)
    assert gd_eval_loss(2, 3, R(1, 4), 2, noise_var=0.25) == gd_eval_loss(2, 3, R(1, 4), 2, noise_var=R(1, 4))


# ---------------------------------------------------------------------------------------- proof
def test_noisy_gd_loss_proof_holds():
    """Exact: the unmodified library passes prove_noisy_gd_loss."""
    assert prove_noisy_gd_loss() is True


def _step_without_noise(w, S, w_star, eta, Xeps=None):
    return w - eta * S * (w - w_star)                               # drops X eps / n


def _step_with_wrong_noise_sign(w, S, w_star, eta, Xeps=None):
    return w - eta * (S * (w - w_star) + (0 if Xeps is None else Xeps))


def _step_with_half_noise(w, S, w_star, eta, Xeps=None):
    return w - eta * (S * (w - w_star) - (0 if Xeps is None else Xeps / 2))


def _factor_wrong_power(eta, k, s):
    return GD_NOISE_FACTOR(eta, k + 1, s)


def _factor_times_s(eta, k, s):
    return sympy.expand(GD_NOISE_FACTOR(eta, k, s) * s)


def _factor_doubled(eta, k, s):
    return 2 * GD_NOISE_FACTOR(eta, k, s)


def _loss_noise_over_n(d, n, eta, k, *, sigma=None, noise_var=0):       # s^2/n instead of s^2/(2n)
    clean = GD_EVAL_LOSS(d, n, eta, k, sigma=sigma)
    return sympy.expand(2 * GD_EVAL_LOSS(d, n, eta, k, sigma=sigma, noise_var=noise_var) - clean)


def _loss_without_noise(d, n, eta, k, *, sigma=None, noise_var=0):
    return GD_EVAL_LOSS(d, n, eta, k, sigma=sigma)


def _loss_wrong_k(d, n, eta, k, *, sigma=None, noise_var=0):        # noise term of k + 1 steps
    clean = GD_EVAL_LOSS(d, n, eta, k, sigma=sigma)
    return sympy.expand(clean + GD_EVAL_LOSS(d, n, eta, k + 1, sigma=sigma, noise_var=noise_var)
                        - GD_EVAL_LOSS(d, n, eta, k + 1, sigma=sigma))


@pytest.mark.parametrize("module, name, wrong", [
    (noise, "gd_step", _step_without_noise),
    (noise, "gd_step", _step_with_wrong_noise_sign),
    (noise, "gd_step", _step_with_half_noise),
    (noise, "gd_noise_factor", _factor_wrong_power),
    (noise, "gd_noise_factor", _factor_times_s),
    (noise, "gd_noise_factor", _factor_doubled),
    (noise, "gd_eval_loss", _loss_noise_over_n),
    (noise, "gd_eval_loss", _loss_without_noise),
    (noise, "gd_eval_loss", _loss_wrong_k),
    (losses, "gd_noise_factor", _factor_wrong_power),       # the factor inside gd_eval_loss only
    (gd, "gd_step", _step_without_noise),                   # the step gd_noise_factor reads q_k from
], ids=lambda x: getattr(x, "__name__", str(x)))
def test_noisy_gd_loss_proof_rejects_a_wrong_library(monkeypatch, module, name, wrong):
    """Exact: a GD step that drops, flips or halves X eps / n; a noise factor with a wrong power,
    an extra s or a factor 2; a loss with s^2/n for s^2/(2n), without the noise, or with the noise
    term of k + 1 steps; the wrong factor used inside gd_eval_loss only; or a wrong theory.gd.gd_step
    behind gd_noise_factor: each makes prove_noisy_gd_loss False."""
    monkeypatch.setattr(module, name, wrong)
    assert prove_noisy_gd_loss() is False


def _is_integer(x):
    return isinstance(x, (int, sympy.Integer))


def _loss_wrong_when(condition):
    """gd_eval_loss as the library computes it, except that where ``condition(d, n, k, sigma,
    noise_var)`` holds the noise term is counted twice (s^2/n instead of s^2/(2n))."""
    def loss(d, n, eta, k, *, sigma=None, noise_var=0):
        value = GD_EVAL_LOSS(d, n, eta, k, sigma=sigma, noise_var=noise_var)
        if not condition(d, n, k, sigma, noise_var):
            return value
        return sympy.expand(2 * value - GD_EVAL_LOSS(d, n, eta, k, sigma=sigma))
    return loss


# name -> (condition under which the loss is wrong, the proof's steps that must catch it)
PARTLY_WRONG_LOSSES = {
    "only_when_sigma_is_None": (lambda d, n, k, S, v: S is None,
                                {"identity_sizes", "symbolic_sizes", "numeric_noise"}),
    "only_when_sigma_is_given": (lambda d, n, k, S, v: S is not None, {"sigma", "numeric_noise"}),
    "only_at_k_2": (lambda d, n, k, S, v: k == 2,
                    {"identity_sizes", "symbolic_sizes", "sigma", "numeric_noise"}),
    "only_for_d_at_least_4": (lambda d, n, k, S, v: _is_integer(d) and d >= 4,
                              {"identity_sizes", "sigma", "numeric_noise"}),
    "only_at_the_top_order": (lambda d, n, k, S, v: k == noise.NOISE_PROOF_MAX_K,
                              {"identity_sizes", "sigma", "numeric_noise"}),
    "only_for_n_below_d": (lambda d, n, k, S, v: _is_integer(d) and _is_integer(n) and n < d,
                           {"identity_sizes", "sigma", "numeric_noise"}),
    "only_for_n_above_d": (lambda d, n, k, S, v: _is_integer(d) and _is_integer(n) and n > d,
                           {"identity_sizes", "sigma", "numeric_noise"}),
    "only_for_non_diagonal_sigma": (lambda d, n, k, S, v: S is not None and not S.is_diagonal(),
                                    {"sigma", "numeric_noise"}),
    "only_for_singular_sigma": (lambda d, n, k, S, v: S is not None and S.det() == 0,
                                {"sigma", "numeric_noise"}),
    "only_for_a_numeric_noise_var": (lambda d, n, k, S, v: v.is_number, {"numeric_noise"}),
    "only_for_symbolic_d": (lambda d, n, k, S, v: not _is_integer(d), {"symbolic_sizes"}),
}


@pytest.mark.parametrize("name", PARTLY_WRONG_LOSSES)
def test_noisy_gd_loss_proof_rejects_a_loss_wrong_in_one_case(monkeypatch, name):
    """Exact: a gd_eval_loss (as prove_noisy_gd_loss sees it) that counts the noise term twice
    only in one case (sigma None, sigma given, k = 2, k = NOISE_PROOF_MAX_K, d >= 4, n < d,
    n > d, a non-diagonal or a singular Sigma, a numeric noise_var, a symbolic d) makes the proof
    False, through exactly the steps that check that case (docs/theory.md section 16); the same
    wrapper that is never wrong keeps it True (test below)."""
    condition, catching = PARTLY_WRONG_LOSSES[name]
    monkeypatch.setattr(noise, "gd_eval_loss", _loss_wrong_when(condition))
    checks = {}
    original = noise._noisy_gd_loss_checks
    monkeypatch.setattr(noise, "_noisy_gd_loss_checks", lambda: checks.update(original()) or checks)
    assert prove_noisy_gd_loss() is False
    assert {step for step, ok in checks.items() if not ok} == catching


def test_noisy_gd_loss_proof_accepts_the_wrapper_when_it_is_never_wrong(monkeypatch):
    """Exact: the wrapper of the test above with a condition that never holds passes through the
    library's loss, and the proof stays True: the Falses above come from the wrong case alone."""
    monkeypatch.setattr(noise, "gd_eval_loss", _loss_wrong_when(lambda d, n, k, S, v: False))
    assert prove_noisy_gd_loss() is True


def test_noisy_gd_loss_proof_covers_the_claim():
    """Exact: the grid of prove_noisy_gd_loss spans the claim: every k = 0 .. NOISE_PROOF_MAX_K
    (>= 4), sizes with n > d, n = d, n < d and d >= 4; numeric Sigma diagonal and not, singular
    and not, d >= 4, each at one n < d and one n > d."""
    assert noise.NOISE_PROOF_MAX_K >= 4
    sizes = noise.NOISE_PROOF_SIZES
    assert any(n > d for d, n in sizes) and any(n < d for d, n in sizes) and any(n == d for d, n in sizes)
    assert any(d >= 4 and n < d for d, n in sizes) and any(d >= 4 and n > d for d, n in sizes)
    sigmas = noise._noise_proof_sigmas()
    assert any(S.is_diagonal() for S, _ in sigmas) and any(not S.is_diagonal() for S, _ in sigmas)
    assert any(S.det() == 0 for S, _ in sigmas) and any(S.det() != 0 for S, _ in sigmas)
    assert any(S.shape[0] >= 4 and not S.is_diagonal() for S, _ in sigmas)
    for S, ns in sigmas:
        theory.validation.check_covariance("Sigma", S)
        assert S.is_symmetric() and min(ns) < S.shape[0] < max(ns)


# -------------------------------------------------------------------------------- best CoT length
@pytest.mark.parametrize("d, n, eta, k_max, noise_var", [
    (2, 4, 0.25, 10, 1.0),
    (6, 3, 0.25, 8, 1.0),           # n < d
    (2, 5, 0.3, 10, 4.0),
])
def test_best_cot_length_is_the_float_argmin(d, n, eta, k_max, noise_var):
    """Numeric: best_cot_length's k_star is the argmin over k = 0..k_max of the floats
    numerics.gd_eval_loss_value(..., noise_var=) (brute force), strictly inside 0..k_max here; its
    loss is gd_eval_loss at k_star exactly and rounds to that float; noise shortens the chain
    (k_star(v) < k_star(0))."""
    result = best_cot_length(d, n, eta, k_max, noise_var=noise_var)
    values = np.array([gd_eval_loss_value(d, n, eta, k, noise_var=noise_var) for k in range(k_max + 1)])
    assert isinstance(result.k_star, int) and 0 < result.k_star < k_max
    assert result.k_star == int(np.argmin(values))
    assert result.loss == gd_eval_loss(d, n, eta, result.k_star, noise_var=noise_var)
    assert float(result.loss) == pytest.approx(values.min(), rel=1e-12)
    assert result.k_star < best_cot_length(d, n, eta, k_max).k_star


def _float_losses_from_moments(d, n, eta, k_max):
    """Float brute force independent of gd_eval_loss: (1/2) sum_j C(2k, j) (-eta)^j E tr(S^j) in
    exact fractions from wishart_moment, rounded once, k = 0..k_max."""
    from fractions import Fraction
    from math import comb
    moments = [Fraction(d)] + [Fraction(int(m.p), int(m.q))
                               for m in (wishart_moment(j, d, n) for j in range(1, 2 * k_max + 1))]
    eta = Fraction(eta)
    return np.array([float(sum(comb(2 * k, j) * (-eta) ** j * moments[j] for j in range(2 * k + 1)) / 2)
                     for k in range(k_max + 1)])


def _check_paper_setting(k_max):
    result = best_cot_length(10, 20, R(2, 5), k_max)
    values = _float_losses_from_moments(10, 20, R(2, 5), k_max)
    assert result.k_star == int(np.argmin(values)) == 19
    assert float(result.loss) == pytest.approx(values[19], rel=1e-12)
    assert np.all(np.diff(values[:20]) < 0) and np.all(np.diff(values[19:]) > 0)
    assert float(result.loss) == pytest.approx(gd_eval_loss_value(10, 20, 0.4, 19), rel=1e-12)


def test_best_cot_length_noiseless_paper_setting():
    """Numeric: without noise, d = 10, n = 20, eta = 2/5, k_max = 20: the best length is the float
    brute-force argmin (from the Wishart moments, not from gd_eval_loss), 19: the mean falls up to
    k = 19 and rises after it only through the rare prompts with eta lambda_max(S) >= 2 (heavy
    tails, docs/theory.md section 2; the typical prompt keeps improving,
    tests/numerics/test_noise.py).  k_max = 30 (moments up to 60, slow) is the slow test."""
    _check_paper_setting(20)


@pytest.mark.slow
def test_best_cot_length_noiseless_paper_setting_k_max_30():
    """Numeric: as above with k_max = 30: the loss keeps rising from 19 to 30, k_star stays 19."""
    _check_paper_setting(30)


def test_best_cot_length_edge_cases():
    """Exact: k_max = 0 gives (0, d/2) with or without noise (not at_edge); a loss still falling at
    k_max gives k_max, at_edge and a warning; on a tie the smallest k wins: d = n = 1 has loss(0) = loss(1) = 1/2 at eta = 2/3 without
    noise and at eta = 2/(3 + v) with noise v (loss(1) = (3 + v) eta^2 / 2 - eta + 1/2)."""
    assert best_cot_length(5, 7, R(1, 4), 0) == (0, R(5, 2))
    assert best_cot_length(5, 7, R(1, 4), 0).at_edge is False
    assert best_cot_length(5, 3, R(1, 4), 0, noise_var=3) == (0, R(5, 2))
    with pytest.warns(UserWarning, match="k_max = 5"):
        falling = best_cot_length(4, 8, R(1, 4), 5)
    assert falling.k_star == 5 and falling.loss == gd_eval_loss(4, 8, R(1, 4), 5) and falling.at_edge
    assert gd_eval_loss(1, 1, R(2, 3), 1) == R(1, 2)
    assert best_cot_length(1, 1, R(2, 3), 1) == (0, R(1, 2))
    assert gd_eval_loss(1, 1, R(1, 2), 1, noise_var=1) == R(1, 2)
    assert best_cot_length(1, 1, R(1, 2), 1, noise_var=1) == (0, R(1, 2))
    with pytest.warns(UserWarning, match="k_max = 1"):                     # just off the tie
        assert best_cot_length(1, 1, R(2, 3) - R(1, 100), 1).k_star == 1


def _no_warning(function, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return function(*args, **kwargs)


def test_best_cot_length_at_the_edge_of_the_range_says_so():
    """Numeric: d = 10, n = 20, eta = 2/5, noise_var = 1 (the paper's setting with unit label
    noise): the float64 losses (numerics.gd_eval_loss_value, independent evaluation) fall up to
    k = 18 and rise after it up to 20.  best_cot_length with k_max = 10 returns 10, the end of its
    range, with at_edge True and one UserWarning naming k_max = 10 and a larger k_max; with
    k_max = 20 it returns the interior optimum 18, at_edge False and no warning."""
    values = np.array([gd_eval_loss_value(10, 20, 0.4, k, noise_var=1.0) for k in range(21)])
    assert int(np.argmin(values)) == 18
    assert np.all(np.diff(values[:19]) < 0) and np.all(np.diff(values[18:]) > 0)
    with pytest.warns(UserWarning, match=r"k_max = 10.*larger k_max") as caught:
        short = best_cot_length(10, 20, R(2, 5), 10, noise_var=1)
    assert len(caught) == 1
    assert short.k_star == 10 and short.at_edge is True
    assert float(short.loss) == pytest.approx(values[10], rel=1e-12)
    full = _no_warning(best_cot_length, 10, 20, R(2, 5), 20, noise_var=1)
    assert full.k_star == 18 and full.at_edge is False
    assert float(full.loss) == pytest.approx(values[18], rel=1e-12)


def test_best_cot_length_result_unpacks_as_a_pair():
    """Exact: the result still unpacks, indexes and compares as (k_star, loss) (callers written
    for the pair keep working), shows at_edge in its repr and keeps it through copy, pickle and
    _replace; _asdict has all three."""
    result = _no_warning(best_cot_length, 2, 4, R(1, 4), 12, noise_var=1)
    k_star, loss = result
    assert (k_star, loss) == result == (8, gd_eval_loss(2, 4, R(1, 4), 8, noise_var=1))
    assert len(result) == 2 and result[0] == 8 and result.at_edge is False
    assert "at_edge=False" in repr(result)
    with pytest.warns(UserWarning):
        edge = best_cot_length(2, 4, R(1, 4), 5, noise_var=1)
    assert edge.k_star == 5
    for copy in (pickle.loads(pickle.dumps(edge)), edge._replace(loss=R(1, 2)),
                 theory.BestCotLength._make((5, edge.loss, True))):
        assert copy.at_edge is True and copy.k_star == 5
    assert edge._asdict() == {"k_star": 5, "loss": edge.loss, "at_edge": True}


@settings(max_examples=15)
@given(st.integers(1, 4), st.integers(1, 6), st.fractions(R(1, 10), R(7, 10), max_denominator=20),
       st.sampled_from([0, R(1, 4), 1, 4]), st.integers(1, 5))
def test_best_cot_length_at_edge_property(d, n, eta, v, k_max):
    """Exact: at_edge is True exactly when k_star = k_max and loss(k_max) < loss(k_max - 1), a
    UserWarning comes exactly then, and an edge result is a lower bound for a longer search:
    with k_max + 4 the argmin is >= k_max (every shorter chain was worse)."""
    eta = R(eta.numerator, eta.denominator)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = best_cot_length(d, n, eta, k_max, noise_var=v)
    last, before = (gd_eval_loss(d, n, eta, k, noise_var=v) for k in (k_max, k_max - 1))
    expected = result.k_star == k_max and bool(last < before)
    assert result.at_edge is expected
    assert [w.category for w in caught] == ([UserWarning] if expected else [])
    if expected:
        assert f"k_max = {k_max}" in str(caught[0].message)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            longer = best_cot_length(d, n, eta, k_max + 4, noise_var=v)
        assert longer.k_star >= k_max


def test_best_cot_length_refuses_bad_input():
    """Exact: symbolic d, n, eta or noise_var (the argmin needs numbers), a negative k_max, a
    negative noise_var and a k_max beyond the exact moments are refused with ValueError."""
    with pytest.raises(ValueError, match="symbolic"):
        best_cot_length(2, 3, ETA, 2)
    with pytest.raises(ValueError, match="symbolic"):
        best_cot_length(2, 3, R(1, 4), 2, noise_var=V)
    with pytest.raises(ValueError, match="symbolic"):
        best_cot_length(D_SYM, 3, R(1, 4), 2)
    with pytest.raises(ValueError, match="symbolic"):
        best_cot_length(2, N_SYM, R(1, 4), 2)
    with pytest.raises(ValueError, match="k_max"):
        best_cot_length(2, 3, R(1, 4), -1)
    with pytest.raises(ValueError, match="noise_var"):
        best_cot_length(2, 3, R(1, 4), 2, noise_var=-1)
    with pytest.raises(ValueError):
        best_cot_length(2, 3, R(1, 4), theory.MAX_EXACT_MOMENT // 2 + 1)


# ------------------------------------------------------------------------------------------ no-CoT
def test_nocot_optimum_with_noise_symbolic():
    """Exact: for symbolic d, n and s^2 the best no-CoT step is n / (n + d + 1 + s^2) and the floor
    d (d + 1 + s^2) / (2 (n + d + 1 + s^2)); nocot_loss is the quadratic
    (1/2)(eta^2 (E tr S^2 + s^2 E tr S / n) - 2 eta E tr S + d) with the typed-in moments
    E tr S = d, E tr S^2 = d (d + n + 1) / n; nocot_gamma is (n + d + 1 + s^2) / n."""
    d, n, v = D_SYM, N_SYM, sympy.Symbol("v", nonnegative=True)
    assert sympy.simplify(nocot_optimal_eta(d, n, noise_var=v) - n / (n + d + 1 + v)) == 0
    assert sympy.simplify(nocot_min_loss(d, n, noise_var=v) - d * (d + 1 + v) / (2 * (n + d + 1 + v))) == 0
    quadratic = (ETA ** 2 * (d * (d + n + 1) / n + v * d / n) - 2 * ETA * d + d) / 2
    assert sympy.simplify(nocot_loss(d, n, ETA, noise_var=v) - quadratic) == 0
    assert sympy.simplify(nocot_gamma(d, n, noise_var=v) - (n + d + 1 + v) / n) == 0


@pytest.mark.parametrize("d, n", [(1, 1), (3, 2), (10, 20), (7, 4)])
@pytest.mark.parametrize("v", [0, R(1, 2), 1, 4])
def test_nocot_optimum_with_noise_integers(d, n, v):
    """Exact: at integer sizes the noisy no-CoT optimum and floor are the closed forms,
    nocot_min_loss_sigma(n, I, noise_var=v) is the same floor, and the noise-optimal step is
    strictly better than Theorem 3.1's noiseless step n / (n + d + 1) when v > 0 (equal at v = 0)."""
    eta_v = nocot_optimal_eta(d, n, noise_var=v)
    floor = nocot_min_loss(d, n, noise_var=v)
    assert eta_v == R(n) / (n + d + 1 + v)
    assert floor == R(d) * (d + 1 + v) / (2 * (n + d + 1 + v))
    assert nocot_loss(d, n, eta_v, noise_var=v) == floor
    assert nocot_min_loss_sigma(n, sympy.eye(d), noise_var=v) == floor
    at_noiseless_step = nocot_loss(d, n, R(n, n + d + 1), noise_var=v)
    assert (at_noiseless_step > floor) if v else (at_noiseless_step == floor)


def test_linear_prediction_loss_with_noise():
    """Exact: linear_prediction_loss(..., noise_var=v) adds v tr(A Sigma A^T) / (2n) (symbolic v,
    non-identity singular Sigma, a non-symmetric A), equals nocot_loss for A = eta I and Sigma = I,
    and nocot_min_loss_sigma is its minimum: a perturbed A does worse; Gamma_s^{-1} comes from
    nocot_gamma with tr(Sigma) + s^2."""
    Sigma = sympy.Matrix([[2, 1, 0], [1, 1, 0], [0, 0, 0]])
    A = sympy.Matrix([[1, R(1, 3), 0], [-R(1, 2), 2, 1], [0, R(1, 4), R(1, 5)]])
    n = 5
    extra = linear_prediction_loss(n, Sigma, A, noise_var=V) - linear_prediction_loss(n, Sigma, A)
    assert sympy.expand(extra - V * (A * Sigma * A.T).trace() / (2 * n)) == 0
    assert sympy.expand(linear_prediction_loss(4, sympy.eye(3), ETA * sympy.eye(3), noise_var=V)
                        - nocot_loss(3, 4, ETA, noise_var=V)) == 0
    v = R(3, 2)
    gamma = nocot_gamma(3, n, Sigma, noise_var=v)
    assert gamma == (1 + R(1, n)) * Sigma + (Sigma.trace() + v) / n * sympy.eye(3)
    best = linear_prediction_loss(n, Sigma, gamma.inv(), noise_var=v)
    assert sympy.simplify(best - nocot_min_loss_sigma(n, Sigma, noise_var=v)) == 0
    for i, j in ((0, 0), (0, 1), (1, 0)):
        E = sympy.zeros(3)
        E[i, j] = R(1, 10)
        assert linear_prediction_loss(n, Sigma, gamma.inv() + E, noise_var=v) > best


# ---------------------------------------------------------------------------------------- k -> oo
def test_gd_limit_loss_with_noise_values():
    """Exact: the noisy k -> oo limits: n > d + 1: s^2 d / (2 (n - d - 1)); n < d - 1:
    (d - n)/2 + s^2 n / (2 (d - n - 1)); |n - d| <= 1: oo; a singular Sigma of rank r = 2 with
    n > r + 1 uses tr(Sigma_r^{-1}); Sigma = c I_r (+ zeros) with n < r - 1 divides the noise term
    by c; Sigma = 0 stays d/2 (no data, no noise)."""
    assert gd_limit_loss(10, 20, noise_var=V) == 10 * V / 18
    assert gd_limit_loss(3, 13, noise_var=2) == R(3, 9)
    assert gd_limit_loss(10, 4, noise_var=V) == 3 + 4 * V / 10
    assert gd_limit_loss(14, 4, noise_var=1) == 5 + R(4, 18)
    for d, n in ((5, 4), (5, 5), (5, 6), (1, 1), (1, 2)):
        assert gd_limit_loss(d, n, noise_var=1) == sympy.oo
        assert gd_limit_loss(d, n) == R(max(d - n, 0), 2)                  # noiseless: finite
    assert gd_limit_loss(10, 20, noise_var=0) == 0
    assert gd_limit_loss(3, 20, sympy.diag(1, 2, 0), noise_var=V) == R(1, 2) + V * R(3, 2) / (2 * 17)
    assert gd_limit_loss(3, 3, sympy.diag(1, 2, 0), noise_var=V) == sympy.oo
    assert gd_limit_loss(6, 2, sympy.diag(2, 2, 2, 2, 2, 0), noise_var=V) == 2 + V * 2 / (2 * 2 * 2)
    assert gd_limit_loss(4, 2, 3 * sympy.eye(4), noise_var=V) == 1 + V * 2 / (2 * 3 * 1)
    assert gd_limit_loss(2, 1, sympy.zeros(2), noise_var=1) == 1
    assert gd_limit_loss(2, 5, sympy.zeros(2), noise_var=1) == 1


def test_gd_limit_loss_with_noise_refuses():
    """Exact: noise with symbolic d or n, a negative noise_var, and n < rank(Sigma) for a Sigma
    whose non-zero eigenvalues differ are refused with ValueError."""
    with pytest.raises(ValueError, match="integer d and n"):
        gd_limit_loss(D_SYM, N_SYM, noise_var=1)
    with pytest.raises(ValueError, match="integer d and n"):
        gd_limit_loss(10, N_SYM, noise_var=V)
    with pytest.raises(ValueError, match="noise_var"):
        gd_limit_loss(10, 20, noise_var=-1)
    with pytest.raises(ValueError, match="eigenvalues"):
        gd_limit_loss(6, 2, sympy.diag(1, 2, 2, 2, 2, 0), noise_var=1)
    assert gd_limit_loss(6, 2, sympy.diag(1, 2, 2, 2, 2, 0)) == 2                # noiseless: fine


@settings(max_examples=20)
@given(st.integers(1, 12), st.integers(1, 30), st.fractions(0, 8))
def test_gd_limit_loss_noise_term_is_linear(d, n, v):
    """Exact: away from |n - d| <= 1 the noisy limit is the noiseless one plus v times a positive
    constant that does not depend on v."""
    v = sympy.Rational(v.numerator, v.denominator)
    if abs(n - d) <= 1:
        assert gd_limit_loss(d, n, noise_var=1) == sympy.oo
        return
    base = gd_limit_loss(d, n)
    unit = gd_limit_loss(d, n, noise_var=1) - base
    assert unit > 0
    assert gd_limit_loss(d, n, noise_var=v) == base + v * unit
