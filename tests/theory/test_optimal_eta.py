"""The exact optimal step of k-step GD (theory.gd_optimal_eta, docs/theory.md sections 2 and 13).
Each test docstring says its kind: exact (symbolic) or numeric (float64)."""
import pytest
import scipy.optimize
import sympy

import theory
import theory.losses as losses
from theory import gd_eval_loss, gd_optimal_eta


def test_k1_is_theorem_3_1_also_symbolically():
    """Exact: k = 1 gives n / (n + d + 1) for integers and for symbols, and
    E tr(S) / E tr(S^2) for a covariance (a MatrixSymbol: power sums)."""
    assert gd_optimal_eta(10, 20, 1).eta == sympy.Rational(20, 31) == theory.nocot_optimal_eta(10, 20)
    d, n = sympy.symbols("d n", positive=True, integer=True)
    r = gd_optimal_eta(d, n, 1)
    assert sympy.simplify(r.eta - n / (n + d + 1)) == 0 and r.eta_float is None
    S = sympy.MatrixSymbol("Sigma", d, d)
    t1, t2 = sympy.Trace(S), sympy.Trace(S ** 2)
    expected = t1 / (t2 + (t2 + t1 ** 2) / n)
    assert sympy.simplify(gd_optimal_eta(d, n, 1, sigma=S).eta - expected) == 0


@pytest.mark.parametrize("d, n, k", [(10, 20, 2), (10, 20, 3), (3, 5, 4), (5, 3, 2)])
def test_root_is_the_unique_minimiser(d, n, k):
    """Exact: eta is a root of dL/deta (its minimal polynomial divides the slope exactly), L'' > 0
    there, and the slope changes sign around it; numeric: it agrees with a scipy minimisation of
    the exact polynomial and with numerics.looped_optimal_eta to 1e-8."""
    e = sympy.Symbol("e")
    loss = gd_eval_loss(d, n, e, k)
    slope = sympy.Poly(sympy.diff(loss, e), e)
    r = gd_optimal_eta(d, n, k)
    if isinstance(r.eta, sympy.CRootOf):
        minimal = sympy.Poly(r.eta.poly.as_expr().subs(r.eta.poly.gen, e), e)
        assert slope.rem(minimal).is_zero
    else:
        assert sympy.simplify(slope.as_expr().subs(e, r.eta)) == 0
    assert sympy.diff(loss, e, 2).subs(e, r.eta).evalf(30) > 0
    f = sympy.lambdify(e, slope.as_expr())
    assert f(r.eta_float - 1e-6) < 0 < f(r.eta_float + 1e-6)
    g = sympy.lambdify(e, loss)
    res = scipy.optimize.minimize_scalar(g, bounds=(0, 2), method="bounded", options={"xatol": 1e-12})
    assert abs(res.x - r.eta_float) < 1e-6 and abs(res.fun - r.loss_float) < 1e-10
    from numerics import looped_optimal_eta
    assert abs(looped_optimal_eta(d, n, k).eta - r.eta_float) < 1e-8


def test_sigma_scales_the_step():
    """Exact: for Sigma = c I the best step is the in-distribution one divided by c (S scales to
    c S_0); for a general Sigma it agrees with a scipy minimisation (numeric)."""
    base = gd_optimal_eta(4, 6, 2).eta
    scaled = gd_optimal_eta(4, 6, 2, sigma=3 * sympy.eye(4)).eta
    assert abs(sympy.N(scaled * 3 - base, 40)) < sympy.Float(1e-35)
    Sigma = sympy.diag(1, 2, 4)
    r = gd_optimal_eta(3, 5, 3, sigma=Sigma)
    e = sympy.Symbol("e")
    g = sympy.lambdify(e, gd_eval_loss(3, 5, e, 3, sigma=Sigma))
    res = scipy.optimize.minimize_scalar(g, bounds=(0, 1), method="bounded", options={"xatol": 1e-12})
    assert abs(res.x - r.eta_float) < 1e-6


def test_radicals_where_the_minimal_polynomial_allows():
    """Exact: for k = 2 the slope is a cubic with one real root, so Cardano's radicals exist; they
    are real, are a root of the minimal polynomial (to 50 digits) and equal eta; beyond degree 4
    (k = 3 here: an irreducible quintic) there are none."""
    r = gd_optimal_eta(10, 20, 2)
    assert isinstance(r.eta, sympy.CRootOf) and r.radicals is not None
    value = sympy.N(r.radicals, 50)
    assert abs(sympy.im(value)) < 1e-45 and abs(value - sympy.N(r.eta, 50)) < 1e-45
    x = r.eta.poly.gen
    assert abs(sympy.N(r.eta.poly.as_expr().subs(x, r.radicals), 50)) < 1e-40
    assert gd_optimal_eta(10, 20, 3).radicals is None
    assert gd_optimal_eta(10, 20, 1).radicals == sympy.Rational(20, 31)


def test_uses_the_library_loss(monkeypatch):
    """Exact: gd_optimal_eta minimises theory's gd_eval_loss: a different loss (the step halved)
    moves the answer by the factor 2."""
    truth = gd_optimal_eta(3, 5, 2)
    original = losses.gd_eval_loss
    monkeypatch.setattr(losses, "gd_eval_loss", lambda d, n, eta, k, *, sigma=None: original(d, n, eta / 2, k, sigma=sigma))
    assert abs(gd_optimal_eta(3, 5, 2).eta_float - 2 * truth.eta_float) < 1e-12


def test_bad_input():
    """Exact: k = 0 (no step), Sigma = 0 (no dependence on eta), symbolic inputs for k >= 2."""
    with pytest.raises(ValueError, match="^k must be"):
        gd_optimal_eta(2, 3, 0)
    with pytest.raises(ValueError, match="^sigma must not be zero"):
        gd_optimal_eta(2, 3, 2, sigma=sympy.zeros(2, 2))
    with pytest.raises(ValueError, match="k >= 2 needs"):
        gd_optimal_eta(sympy.Symbol("d"), 3, 2)
    assert isinstance(gd_optimal_eta(2, 3, 2), theory.OptimalStep)
