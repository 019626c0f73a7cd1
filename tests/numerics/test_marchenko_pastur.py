"""The Marchenko-Pastur limit of the GD loss (numerics.marchenko_pastur): against the exact MP moments,
against theory's finite-d loss as d grows, and the finite-d gap against Monte Carlo.  Each test
docstring says its kind: numeric (float64 quadrature vs exact rationals) or statistical."""
import math

import numpy as np
import pytest
import scipy.integrate
import sympy

import theory
from numerics import eval_loss_mc, gd_eval_loss_value, mp_density, mp_gd_eval_loss


def _moment_series(gamma, eta, k):
    """(1/2) sum_j C(2k, j) (-eta)^j mp_moment(j, gamma), exactly (eta, gamma read as decimals)."""
    g, e = sympy.Rational(repr(gamma)), sympy.Rational(repr(eta))
    return float(sum(sympy.binomial(2 * k, j) * (-e) ** j * theory.mp_moment(j, g) for j in range(2 * k + 1)) / 2)


@pytest.mark.parametrize("gamma", [0.25, 0.5, 1.0, 2.0, 3.0])
@pytest.mark.parametrize("eta", [0.1, 0.3])
@pytest.mark.parametrize("k", [0, 1, 2, 4, 6])
def test_quadrature_equals_moment_series(gamma, eta, k):
    """Numeric: the quadrature (continuous part + atom at 0 for gamma > 1) equals the binomial series
    of exact Marchenko-Pastur moments (Narayana polynomials) to 1e-10 relative."""
    assert mp_gd_eval_loss(gamma, eta, k) == pytest.approx(_moment_series(gamma, eta, k), rel=1e-10)


@pytest.mark.parametrize("gamma", [0.3, 1.0, 2.5])
def test_density_mass_and_mean(gamma):
    """Numeric: the continuous part has mass min(1, 1/gamma) (the atom at 0 carries the rest) and
    first moment 1 = E tr(S)/d."""
    a, b = (1 - math.sqrt(gamma)) ** 2, (1 + math.sqrt(gamma)) ** 2
    mass = scipy.integrate.quad(lambda x: mp_density(x, gamma), a, b, limit=200)[0]
    mean = scipy.integrate.quad(lambda x: x * mp_density(x, gamma), a, b, limit=200)[0]
    assert mass == pytest.approx(min(1.0, 1 / gamma), rel=1e-7) and mean == pytest.approx(1.0, rel=1e-7)
    assert mp_density(b + 0.1, gamma) == 0 and mp_density(-1.0, gamma) == 0


def test_finite_d_loss_approaches_the_limit():
    """Numeric: with d / n = 1/2 fixed, theory.gd_eval_loss(d, 2d, eta, k) / d - mp tends to 0 like 1/d
    (the finite-d correction to E tr(S^m) is O(1), not O(d)): the gap halves as d doubles."""
    mp = mp_gd_eval_loss(0.5, 0.4, 5)
    gaps = [gd_eval_loss_value(d, 2 * d, 0.4, 5) / d - mp for d in (5, 10, 20, 40, 80)]
    assert all(g > 0 for g in gaps)
    ratios = [gaps[i] / gaps[i + 1] for i in range(len(gaps) - 1)]
    assert all(1.8 < r < 2.2 for r in ratios)
    assert gaps[-1] < 1e-3


def test_gamma_above_one_keeps_the_null_space():
    """Numeric: for gamma > 1 and many small steps the per-coordinate loss tends to the atom,
    (1 - 1/gamma) / 2, i.e. (d - n) / (2 d): the Marchenko-Pastur face of gd_limit_loss."""
    assert mp_gd_eval_loss(2.0, 0.1, 2000) == pytest.approx(0.25, abs=1e-9)


def test_finite_d_gap_against_monte_carlo():
    """Statistical: at the paper's d = 10, n = 20, eta = 0.4, k = 10 the Monte Carlo mean sits above
    d * mp by the exact finite-d gap (theory.gd_eval_loss - d * mp) within 4 se, and that gap is
    resolved (more than 4 se from zero)."""
    d, n, eta, k = 10, 20, 0.4, 10
    limit = d * mp_gd_eval_loss(d / n, eta, k)
    exact_gap = gd_eval_loss_value(d, n, eta, k) - limit
    r = eval_loss_mc(d, n, eta, k, samples=200_000, seed=31)
    assert abs((r["mean"] - limit) - exact_gap) <= 4 * r["se"]
    assert r["mean"] - limit > 4 * r["se"]


@pytest.mark.parametrize("call, name", [
    (lambda: mp_gd_eval_loss(0.0, 0.1, 1), "gamma"),
    (lambda: mp_gd_eval_loss(0.5, np.inf, 1), "eta"),
    (lambda: mp_gd_eval_loss(0.5, 0.1, -1), "k"),
])
def test_bad_input_names_the_parameter(call, name):
    with pytest.raises(ValueError, match=rf"^{name}\b"):
        call()
