"""Every Sigma function accepts a symbolic n (and a symbolic d where the expression allows it),
and the symbolic result at an integer n is the integer result.  Every check here is exact."""
import pytest
import sympy
from hypothesis import given, settings
from hypothesis import strategies as st

import theory

n = sympy.Symbol("n", positive=True, integer=True)
d = sympy.Symbol("d", positive=True, integer=True)
DIAG = sympy.diag(1, 2, 5)
SINGULAR = sympy.Matrix([[2, 1, 0], [1, 2, 0], [0, 0, 0]])


def test_nocot_floor_with_a_diagonal_sigma_in_closed_form():
    """Exact: nocot_min_loss_sigma(n, diag(s_j)) = (1/2) sum_j (s_j + T) / ((n + 1) s_j + T),
    T = tr(Sigma), for symbolic n (docs/theory.md section 5), also with symbolic entries."""
    T = sum(DIAG.diagonal())
    expected = sum((s + T) / ((n + 1) * s + T) for s in DIAG.diagonal()) / 2
    assert sympy.cancel(theory.nocot_min_loss_sigma(n, DIAG) - expected) == 0
    a, b = sympy.symbols("a b", positive=True)
    general = theory.nocot_min_loss_sigma(n, sympy.diag(a, b))
    expected = ((a + a + b) / ((n + 1) * a + a + b) + (b + a + b) / ((n + 1) * b + a + b)) / 2
    assert sympy.cancel(general - expected) == 0


@settings(max_examples=10, deadline=None)
@given(st.integers(1, 60))
def test_symbolic_n_specialises_to_the_integer_result(value):
    """Exact (property): for each Sigma function the symbolic-n result at n = value equals the
    integer-n result (diagonal and singular Sigma)."""
    A = sympy.Matrix([[1, 0, 1], [0, 2, 0], [1, 0, 1]]) / 3
    for Sigma in (DIAG, SINGULAR):
        pairs = [
            (theory.second_moment_S(n, Sigma), theory.second_moment_S(value, Sigma)),
            (theory.linear_prediction_loss(n, Sigma, A), theory.linear_prediction_loss(value, Sigma, A)),
            (theory.nocot_min_loss_sigma(n, Sigma), theory.nocot_min_loss_sigma(value, Sigma)),
            (theory.nocot_gamma(3, n, Sigma), theory.nocot_gamma(3, value, Sigma)),
            (theory.nocot_params(3, n, Sigma)[0], theory.nocot_params(3, value, Sigma)[0]),
            (theory.gd_limit_loss(3, n, Sigma), theory.gd_limit_loss(3, value, Sigma)),
            (theory.wishart_moment(3, 3, n, sigma=Sigma), theory.wishart_moment(3, 3, value, sigma=Sigma)),
            (theory.gd_eval_loss(3, n, sympy.Rational(1, 7), 2, sigma=Sigma),
             theory.gd_eval_loss(3, value, sympy.Rational(1, 7), 2, sigma=Sigma)),
        ]
        for symbolic, integer in pairs:
            difference = symbolic.subs(n, value) - integer
            if isinstance(difference, sympy.MatrixBase):
                assert difference.applyfunc(sympy.simplify).is_zero_matrix
            else:
                assert sympy.simplify(difference) == 0


def test_symbolic_d_where_the_expression_allows_it():
    """Exact: identity-covariance forms with symbolic d and n (gd_limit_loss, nocot_gamma, the OOD
    interval and bound), and a MatrixSymbol Sigma of symbolic size (second_moment_S, nocot_gamma,
    wishart_moment, gd_eval_loss); an explicit Sigma fixes d and refuses a symbolic one."""
    assert theory.gd_limit_loss(d, n) == (d - sympy.Min(d, n)) / 2
    assert theory.gd_limit_loss(d, n).subs({d: 10, n: 4}) == 3
    assert theory.nocot_gamma(d, n) == (n + d + 1) / n
    lo, hi = theory.spectrum_interval([1, 4], d, n)
    assert sympy.simplify(hi.subs({d: 10, n: 40}) - 9) == 0 and sympy.simplify(lo.subs({d: 10, n: 40}) - sympy.Rational(1, 4)) == 0
    bound = theory.ood_loss_bound(sympy.Rational(1, 5), [1, 4], d, n, 3)
    assert sympy.simplify(bound.subs({d: 10, n: 40}) - theory.ood_loss_bound(sympy.Rational(1, 5), [1, 4], 10, 40, 3)) == 0
    S = sympy.MatrixSymbol("Sigma", d, d)
    assert theory.second_moment_S(n, S).shape == (d, d)
    assert theory.nocot_gamma(d, n, S).shape == (d, d)
    moment = theory.wishart_moment(2, d, n, sigma=S)
    assert sympy.expand(moment - (sympy.Trace(S ** 2) * (1 + 1 / n) + sympy.Trace(S) ** 2 / n)) == 0
    loss = theory.gd_eval_loss(d, n, sympy.Symbol("eta"), 1, sigma=S)
    assert loss.has(sympy.Trace(S ** 2))
    with pytest.raises(ValueError, match="^Sigma needs an integer d"):
        theory.nocot_gamma(d, n, sympy.eye(2))
