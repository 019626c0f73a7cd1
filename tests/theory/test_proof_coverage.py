"""What the GD closed-form and noisy-loss proofs cover (docs/theory.md sections 2 and 16): their
steps, the symbolic-k path of error_operator they rely on, and the expanded iterates of
gd_iterates_exact.  Every check here is exact (sympy)."""
import pytest
import sympy
from hypothesis import given, settings
from hypothesis import strategies as st

import theory.gd as gd
import theory.noise as noise
from theory import error_operator, gd_closed_form, gd_iterates_exact, gd_step

R = sympy.Rational
ETA = sympy.Symbol("eta")
K = sympy.Symbol("k", integer=True, nonnegative=True)


def test_proof_steps_are_all_run_and_hold():
    """Exact: the unmodified library passes every named step of both proofs (a step that is
    dropped or renamed shows here)."""
    assert gd._gd_closed_form_checks() == dict.fromkeys(
        ("symbolic_shape", "explicit_induction", "integer_k", "generic_2x2"), True)
    assert noise._noisy_gd_loss_checks() == dict.fromkeys(
        ("recursion", "factor", "identity_sizes", "symbolic_sizes", "sigma", "numeric_noise"), True)


@pytest.mark.parametrize("S", [sympy.Matrix([[3]]), sympy.diag(1, R(1, 2)), sympy.Matrix([[2, 1], [1, 2]]),
                               sympy.Matrix([[1, 1, 0], [1, 1, 0], [0, 0, 3]])],
                         ids=["1x1", "diagonal", "non-diagonal", "singular"])
def test_error_operator_with_symbolic_k_on_explicit_matrices(S):
    """Exact: for an explicit S and a symbolic k, error_operator is (I - eta S)^k as a function of
    k: at k = 0 .. 7 it equals the integer-k result and a product of k factors (I - eta S),
    symbolic eta; and it satisfies E_{k+1} = (I - eta S) E_k."""
    E = error_operator(S, ETA, K)
    I = sympy.eye(S.shape[0])
    product = I
    for k in range(8):
        assert (E.subs(K, k) - error_operator(S, ETA, k)).expand() == sympy.zeros(*S.shape)
        assert (error_operator(S, ETA, k) - product).expand() == sympy.zeros(*S.shape)
        product = (I - ETA * S) * product
    step = error_operator(S, ETA, K + 1) - (I - ETA * S) * E
    assert all(sympy.expand(sympy.expand_power_exp(sympy.expand(e))) == 0 for e in step)


@settings(max_examples=10)
@given(st.fractions(-3, 3, max_denominator=4), st.fractions(0, 3, max_denominator=4),
       st.fractions(0, 3, max_denominator=4), st.fractions(R(1, 10), 1, max_denominator=10),
       st.integers(0, 6))
def test_error_operator_symbolic_k_matches_integer_k(b, a, c, eta, k):
    """Exact: on random rational symmetric 2 x 2 S (irrational eigenvalues included) and a rational
    eta, error_operator(S, eta, k) for a symbolic k, evaluated at k, equals the integer power."""
    S = sympy.Matrix([[R(a.numerator, a.denominator), R(b.numerator, b.denominator)],
                      [R(b.numerator, b.denominator), R(c.numerator, c.denominator)]])
    eta = R(eta.numerator, eta.denominator)
    difference = error_operator(S, eta, K).subs(K, k) - (sympy.eye(2) - eta * S) ** k
    assert all(sympy.expand(sympy.radsimp(e)) == 0 for e in difference)


def test_error_operator_refuses_negative_or_fractional_steps():
    """Exact: k known to be negative or not an integer is refused with a ValueError naming k, for
    explicit and symbolic S; a plain Symbol stays allowed with a MatrixSymbol (as before)."""
    S = sympy.Matrix([[1, 0], [0, 2]])
    M = sympy.MatrixSymbol("S", 2, 2)
    for bad in (-1, R(1, 2), 0.5, sympy.Symbol("m", negative=True, integer=True),
                sympy.Symbol("x", integer=False)):
        for matrix in (S, M):
            with pytest.raises(ValueError, match="k"):
                error_operator(matrix, ETA, bad)
    assert error_operator(M, ETA, sympy.Symbol("k")) == (sympy.Identity(2) - ETA * M) ** sympy.Symbol("k")


def test_gd_iterates_exact_are_expanded_and_follow_the_recursion():
    """Exact: gd_iterates_exact's iterates on a generic symmetric 2 x 2 S are expanded polynomials
    (equal to their expansion), w_0 = 0, w_{j+1} = gd_step(w_j), and equal gd_closed_form, k = 6;
    a MatrixSymbol S still gives matrix expressions."""
    a, b, c = sympy.symbols("a b c")
    S = sympy.Matrix([[a, b], [b, c]])
    w_star = sympy.Matrix(sympy.symbols("u0:2"))
    iterates = gd_iterates_exact(S, w_star, ETA, 6)
    assert len(iterates) == 7 and iterates[0] == sympy.zeros(2, 1)
    for j, w in enumerate(iterates):
        assert w == w.applyfunc(sympy.expand)
        assert (w - gd_closed_form(S, w_star, ETA, j)).expand() == sympy.zeros(2, 1)
        if j:
            assert (w - gd_step(iterates[j - 1], S, w_star, ETA)).expand() == sympy.zeros(2, 1)
    M, w = sympy.MatrixSymbol("S", 2, 2), sympy.MatrixSymbol("w", 2, 1)
    assert isinstance(gd_iterates_exact(M, w, ETA, 2)[-1], sympy.MatrixExpr)


def test_gd_proof_integer_range_reaches_past_the_old_bound():
    """Exact: the integer path is checked for every k = 0 .. GD_PROOF_MAX_K with GD_PROOF_MAX_K
    >= 6, and the explicit matrices include one eigenvalue s, a non-diagonal and a singular S."""
    assert gd.GD_PROOF_MAX_K >= 6
    s = sympy.Symbol("s")
    shapes = gd._explicit_matrices(s)
    assert shapes[0] == sympy.Matrix([[s]])
    assert any(not S.is_diagonal() and S.det() != 0 for S in shapes[1:])
    assert any(not S.is_diagonal() and S.det() == 0 for S in shapes[1:])
