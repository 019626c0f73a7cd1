"""The deterministic equivalent for a general covariance (numerics.silverstein, docs/theory.md
section 15): against the Marchenko-Pastur quadrature (Sigma = I), the exact free-probability
limit of theory's general-Sigma moments, theory's exact finite-d losses (gap ~ 1/d) and Monte
Carlo at large d.  Each test docstring says its kind: numeric (float64 against exact or
quadrature values) or statistical (Monte Carlo within 4 standard errors plus the stated gap)."""
import math

import numpy as np
import pytest
import sympy

import theory
from numerics import (deterministic_equivalent_gd_loss, deterministic_equivalent_integral, eval_loss_mc,
                      mp_gd_eval_loss, silverstein_stieltjes)

SPECTRUM = np.geomspace(0.5, 1.5, 8)          # condition number 3, as in Figure 3
SPECTRUM = SPECTRUM * len(SPECTRUM) / SPECTRUM.sum()


@pytest.mark.parametrize("gamma", [0.25, 0.5, 1.0, 2.0])
@pytest.mark.parametrize("k", [1, 5, 30])
def test_identity_covariance_is_marchenko_pastur(gamma, k):
    """Numeric: with Sigma = I the contour integral equals the Marchenko-Pastur quadrature
    (mp_gd_eval_loss) to 1e-10 relative, atom at 0 included for gamma > 1."""
    assert deterministic_equivalent_gd_loss(gamma, 0.3, k, [1.0, 1.0]) == pytest.approx(
        mp_gd_eval_loss(gamma, 0.3, k), rel=1e-10)


def _limit_moment(m: int, gamma, h) -> float:
    """The leading order of theory's exact general-Sigma moment: p_j = d h_j, n = d / gamma, d -> oo."""
    e = sympy.Symbol("e", positive=True)
    g = sympy.Rational(gamma)
    per_coordinate = theory.power_sum_polynomial(m, 1 / (e * g), lambda j: h[j] / e) * (e * g) ** m * e
    return float(sympy.expand(per_coordinate).subs(e, 0))


@pytest.mark.parametrize("gamma", [0.5, 2.0])
def test_moments_are_the_exact_free_limit(gamma):
    """Numeric: int x^m dF for m = 1..10 equals the leading order in d of theory's exact
    power-sum polynomial (docs/theory.md section 13) with h_j = mean(tau^j), to 1e-10 relative;
    a singular spectrum too."""
    for spectrum in (SPECTRUM, np.r_[SPECTRUM, 0.0, 0.0]):
        h = {j: sympy.Rational(float(np.mean(spectrum ** j))) for j in range(11)}
        for m in range(1, 11):
            value = deterministic_equivalent_integral(lambda x: x ** m, gamma, spectrum)
            assert value == pytest.approx(_limit_moment(m, gamma, h), rel=1e-10)


def test_stieltjes_solves_the_equation_and_is_a_stieltjes_transform():
    """Numeric: m(z) solves the Silverstein equation through m_ = -(1 - gamma)/z + gamma m; Im m > 0
    on the upper half-plane, m(conj z) = conj m(z), and -z m(z) -> 1 at large |z| (mass 1)."""
    z = np.array([0.3 + 0.2j, 2.0 + 1e-3j, -1 + 1j, 5 - 0.5j])
    gamma = 0.5
    m = silverstein_stieltjes(z, gamma, SPECTRUM)
    mu = -(1 - gamma) / z + gamma * m
    residual = z + 1 / mu - gamma * np.mean(SPECTRUM[None, :] / (1 + SPECTRUM[None, :] * mu[:, None]), axis=1)
    assert np.all(np.abs(residual) < 1e-10)
    assert np.all(m[z.imag > 0].imag > 0) and np.all(m[z.imag < 0].imag < 0)
    assert np.allclose(silverstein_stieltjes(np.conj(z), gamma, SPECTRUM), np.conj(m))
    assert abs(-1e6j * silverstein_stieltjes(1e6j, gamma, SPECTRUM) - 1) < 1e-5


def test_finite_d_gap_shrinks_like_one_over_d():
    """Numeric: theory's exact finite-d OOD loss (gd_eval_loss with sigma, docs/theory.md
    section 13), per coordinate, approaches the deterministic equivalent like 1/d: the gap halves
    when d doubles (the spectrum repeated, d / n = 1/2 fixed)."""
    eta, k = 0.4, 4
    limit = deterministic_equivalent_gd_loss(0.5, eta, k, SPECTRUM)
    gaps = []
    for copies in (1, 2, 4, 8):
        spectrum = np.tile(SPECTRUM, copies)
        d = len(spectrum)
        Sigma = sympy.diag(*[sympy.Rational(float(v)) for v in spectrum])
        exact = theory.gd_eval_loss(d, 2 * d, sympy.Rational(2, 5), k, sigma=Sigma)
        gaps.append(float(exact) / d - limit)
    ratios = [gaps[i] / gaps[i + 1] for i in range(len(gaps) - 1)]
    assert all(1.7 < r < 2.3 for r in ratios), ratios


def test_monte_carlo_at_large_d():
    """Statistical: at d = 64, n = 128 the Monte Carlo loss sits on theory's exact finite-d loss
    within 4 standard errors and on d times the deterministic equivalent within 4 standard errors
    plus the exact finite-d gap (k = 5; the gap is O(1) in total, O(1/d) per coordinate); for
    k = 30 (beyond the exact moments of a general Sigma) within 4 standard errors plus twice the
    k = 5 gap (the measured k = 30 gap is about a third of it)."""
    spectrum = np.tile(SPECTRUM, 8)
    d, n, eta = len(spectrum), 2 * len(spectrum), 0.4
    Sigma = np.diag(spectrum)
    exact = float(theory.gd_eval_loss(d, n, sympy.Rational(2, 5), 5,
                                      sigma=sympy.diag(*[sympy.Rational(float(v)) for v in spectrum])))
    limit = d * deterministic_equivalent_gd_loss(d / n, eta, 5, spectrum)
    r = eval_loss_mc(d, n, eta, 5, samples=4000, seed=3, sigma=Sigma)
    assert abs(r["mean"] - exact) < 4 * r["se"]
    assert abs(r["mean"] - limit) < 4 * r["se"] + abs(exact - limit)
    gap_scale = abs(exact - limit)                    # O(1) in total, i.e. O(1/d) per coordinate
    limit30 = d * deterministic_equivalent_gd_loss(d / n, eta, 30, spectrum)
    r30 = eval_loss_mc(d, n, eta, 30, samples=4000, seed=4, sigma=Sigma)
    assert r30["diverged_frac"] == 0
    assert abs(r30["mean"] - limit30) < 4 * r30["se"] + 2 * gap_scale
    assert math.isfinite(limit30) and limit30 < limit


@pytest.mark.parametrize("call, name", [
    (lambda: deterministic_equivalent_gd_loss(0.0, 0.3, 1, [1.0]), "gamma"),
    (lambda: deterministic_equivalent_gd_loss(0.5, -1.0, 1, [1.0]), "eta"),
    (lambda: deterministic_equivalent_gd_loss(0.5, 0.3, -1, [1.0]), "k"),
    (lambda: deterministic_equivalent_gd_loss(0.5, 0.3, 1, [-1.0, 1.0]), "sigma_spectrum"),
    (lambda: deterministic_equivalent_gd_loss(0.5, 0.3, 1, [0.0]), "sigma_spectrum"),
    (lambda: deterministic_equivalent_gd_loss(0.5, 0.3, 1, []), "sigma_spectrum"),
    (lambda: silverstein_stieltjes(1.0, 0.5, [1.0]), "z"),
])
def test_bad_input_names_the_parameter(call, name):
    with pytest.raises(ValueError, match=rf"^{name}\b"):
        call()
