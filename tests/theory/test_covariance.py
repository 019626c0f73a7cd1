"""Covariances in theory (docs/theory.md sections 5, 7 and 10): every function taking Sigma accepts
any symmetric positive semi-definite Sigma (singular: x confined to a subspace) and refuses the
rest with one ValueError naming the parameter.  Every check here is exact (sympy) unless its
docstring says statistical (Monte Carlo within 4 standard errors)."""
import numpy as np
import pytest
import sympy

import theory
from theory import (gd_limit_loss, linear_prediction_loss, nocot_gamma, nocot_min_loss,
                    nocot_min_loss_sigma, nocot_params, second_moment_S)
from theory.validation import check_covariance, covariance_and_rank

EPS = sympy.Symbol("epsilon", positive=True)


def _cayley(d: int) -> sympy.Matrix:
    """An exact rational orthogonal matrix (Cayley transform of a rational skew matrix)."""
    K = sympy.Matrix(d, d, lambda i, j: sympy.Rational(i - j, i + j + 2))
    return (sympy.eye(d) - K) * (sympy.eye(d) + K).inv()


Q4 = _cayley(4)
SINGULAR = Q4 * sympy.diag(1, 2, 0, 0) * Q4.T          # rank 2, rotated: no zero rows


def test_check_covariance_accepts_psd_and_reports_the_rank():
    """Exact: rotated singular, diagonal singular, zero, Float entries exactly PSD, and symbolic
    entries whose assumptions decide the sign; the rank comes out of the exact elimination."""
    assert covariance_and_rank("Sigma", SINGULAR, 4)[1] == 2
    assert covariance_and_rank("Sigma", sympy.diag(3, 0, 1))[1] == 2
    assert covariance_and_rank("Sigma", sympy.zeros(3, 3))[1] == 0
    assert covariance_and_rank("Sigma", [[0.5, 0.25], [0.25, 0.125]])[1] == 1      # floats, exactly rank 1
    s = sympy.Symbol("s", positive=True)
    assert covariance_and_rank("Sigma", sympy.Matrix([[s, s], [s, s]]))[1] == 1
    assert covariance_and_rank("Sigma", np.eye(2))[1] == 2                         # numpy input


def test_float_entries_are_judged_exactly():
    """Exact: a float entry counts as the shortest decimal that round-trips in its type
    (docs/theory.md section 17), so [[1, 1], [1, 1 - 2^-52]] (a rank-1 matrix rounded down once;
    numerics.checks.check_sigma accepts it within its tolerance) is [[1, 1], [1, 0.9999999999999998]]
    and refused: its determinant is -2e-16.  The exact rank-1 matrix is accepted."""
    rounded = [[1.0, 1.0], [1.0, 1.0 - 2.0 ** -52]]
    with pytest.raises(ValueError, match=r"^Sigma must be positive semi-definite, smallest eigenvalue -1\.0e-16$"):
        check_covariance("Sigma", rounded)
    assert check_covariance("Sigma", rounded[:1] + [[1.0, 1.0]]) == sympy.ones(2, 2)
    assert covariance_and_rank("Sigma", [[1.0, 1.0], [1.0, 1.0]])[1] == 1


BAD = [
    (sympy.Matrix([[1, 2], [0, 1]]), "must be symmetric, got Sigma[1, 0] = 0 != Sigma[0, 1] = 2"),
    (sympy.Matrix([[1, 2], [2, 1]]), "must be positive semi-definite, smallest eigenvalue -1.0"),
    (sympy.Matrix([[0, 1], [1, 0]]), "must be positive semi-definite"),
    ([[1, 0, 0]], "must be"),
    (sympy.Matrix([[1, 0], [0, sympy.nan]]), "finite real"),
    (sympy.Matrix([[sympy.oo, 0], [0, 1]]), "finite real"),
    ([[1.0, 0.0], [0.0, float("inf")]], "finite real"),
    (sympy.Matrix([[1, sympy.I], [-sympy.I, 1]]), "finite real"),
    ("eye(2)", "matrix of real numbers"),
    ([["1", "0"], ["0", "1"]], "matrix of real numbers"),
    (sympy.diag(sympy.Symbol("y"), 1), "positive semi-definite"),
]
SIGMA_FUNCTIONS = {
    "nocot_gamma": lambda S: nocot_gamma(2, 5, S),
    "nocot_params": lambda S: nocot_params(2, 5, S),
    "second_moment_S": lambda S: second_moment_S(5, S),
    "linear_prediction_loss": lambda S: linear_prediction_loss(5, S, sympy.eye(2)),
    "nocot_min_loss_sigma": lambda S: nocot_min_loss_sigma(5, S),
    "gd_limit_loss": lambda S: gd_limit_loss(2, 5, S),
    "check_covariance": lambda S: check_covariance("Sigma", S),
}
WITH_D = {"nocot_gamma": lambda S: nocot_gamma(2, 5, S), "nocot_params": lambda S: nocot_params(2, 5, S),
          "gd_limit_loss": lambda S: gd_limit_loss(2, 5, S),
          "check_covariance": lambda S: check_covariance("Sigma", S, 2)}


@pytest.mark.parametrize("function", sorted(SIGMA_FUNCTIONS))
@pytest.mark.parametrize("value, words", BAD)
def test_bad_sigma_one_line_error_naming_the_parameter(function, value, words):
    """Exact: non-symmetric, indefinite, non-square, nan / oo / complex, strings and undecidable
    symbolic entries give one one-line ValueError starting with "Sigma"."""
    with pytest.raises(ValueError) as info:
        SIGMA_FUNCTIONS[function](value)
    message = str(info.value)
    assert message.startswith("Sigma ") and words in message and "\n" not in message


@pytest.mark.parametrize("function", sorted(WITH_D))
def test_sigma_of_the_wrong_size(function):
    """Exact: where d is given, a Sigma of another size is refused naming its shape."""
    with pytest.raises(ValueError, match=r"^Sigma must be 2 x 2, got 3 x 3$"):
        WITH_D[function](sympy.eye(3))


def test_none_is_refused_where_sigma_is_required():
    """Exact: where Sigma has no default (None would mean nothing), None is refused."""
    for function in ("second_moment_S", "linear_prediction_loss", "nocot_min_loss_sigma", "check_covariance"):
        with pytest.raises(ValueError, match=r"^Sigma must be a square matrix of real numbers, got NoneType"):
            SIGMA_FUNCTIONS[function](None)


def test_zero_covariance_accepted_except_where_gamma_is_inverted():
    """Exact: Sigma = 0 (x = 0): Gamma = 0, E[S^2] = 0, every linear prediction has loss d/2;
    nocot_params and nocot_min_loss_sigma refuse it (Gamma = 0 has no inverse)."""
    Z = sympy.zeros(3, 3)
    assert nocot_gamma(3, 4, Z) == Z and second_moment_S(4, Z) == Z
    assert linear_prediction_loss(4, Z, sympy.eye(3)) == sympy.Rational(3, 2)
    assert gd_limit_loss(3, 4, Z) == sympy.Rational(3, 2)
    for call in (lambda: nocot_params(3, 4, Z), lambda: nocot_min_loss_sigma(4, Z)):
        with pytest.raises(ValueError, match=r"^Sigma must not be zero"):
            call()


def test_gamma_inverse_minimises_for_singular_sigma():
    """Exact: for a singular Sigma Gamma is invertible and Gamma^{-1} zeroes the gradient of the
    convex loss over all linear maps A, so it is a minimiser (Theorem 3.1 holds as stated)."""
    G = nocot_gamma(4, 3, SINGULAR)
    assert G.det() != 0
    A = sympy.Matrix(4, 4, sympy.symbols("a0:16"))
    loss = linear_prediction_loss(3, SINGULAR, A)
    point = dict(zip(A, G.inv()))
    assert all(sympy.diff(loss, a).subs(point) == 0 for a in A)


@pytest.mark.parametrize("n", [1, 2, 3, 7])
def test_nocot_min_loss_for_singular_sigma(n):
    """Exact: nocot_min_loss_sigma for a singular Sigma equals the eigenvalue formula
    (1/2) sum_j (1 - lambda_j / ((1 + 1/n) lambda_j + tr(Sigma)/n)) (each null direction costs 1/2),
    is rotation invariant, and is the limit of the positive definite case Sigma + epsilon P_null."""
    value = nocot_min_loss_sigma(n, SINGULAR)
    by_eigenvalues = sum(1 - sympy.Rational(v) / ((1 + sympy.Rational(1, n)) * v + sympy.Rational(3, n))
                         for v in (1, 2, 0, 0)) / 2
    assert value == by_eigenvalues == nocot_min_loss_sigma(n, sympy.diag(1, 2, 0, 0))
    perturbed = nocot_min_loss_sigma(n, sympy.diag(1, 2, EPS, EPS))
    assert sympy.limit(perturbed, EPS, 0) == value


def test_singular_minimiser_is_unique_only_on_the_range():
    """Exact: adding to Gamma^{-1} any B with B Sigma = 0 (acting on the null space) leaves the loss
    unchanged: only V31 on range(Sigma) matters (docs/theory.md section 10)."""
    null = Q4[:, 2:]
    B = sympy.Matrix([[1, 2], [3, 4], [5, 6], [7, 8]]) * null.T
    assert B * SINGULAR == sympy.zeros(4, 4)
    inverse = nocot_gamma(4, 5, SINGULAR).inv()
    assert linear_prediction_loss(5, SINGULAR, inverse + B) == nocot_min_loss_sigma(5, SINGULAR)


def test_projector_sigma_is_the_lower_dimensional_problem():
    """Exact: with Sigma a rank-r projector the no-CoT minimum is the unlearnable (d - r)/2 plus the
    identity-covariance minimum in dimension r."""
    for d, r, n in [(4, 2, 5), (6, 3, 2), (3, 1, 1)]:
        P = sympy.diag(*([1] * r + [0] * (d - r)))
        assert nocot_min_loss_sigma(n, P) == sympy.Rational(d - r, 2) + nocot_min_loss(r, n)


def test_second_moment_singular_matches_monte_carlo():
    """Statistical: tr E[S^2] for the rotated rank-2 Sigma, n = 3, within 4 standard errors of
    200000 draws (x = Q diag(1, sqrt 2, 0, 0) g)."""
    rng = np.random.default_rng(0)
    root = np.array(Q4.tolist(), dtype=float) * np.sqrt([1.0, 2.0, 0.0, 0.0])
    X = root @ rng.standard_normal((200_000, 4, 3))
    S = X @ X.transpose(0, 2, 1) / 3
    t = np.einsum("bij,bji->b", S, S)
    exact = float(second_moment_S(3, SINGULAR).trace())
    assert abs(t.mean() - exact) < 4 * t.std() / np.sqrt(len(t))


def test_gd_limit_loss_with_sigma():
    """Exact: (d - min(n, rank Sigma))/2; Sigma = I gives the old value."""
    assert gd_limit_loss(4, 8, SINGULAR) == 1 and gd_limit_loss(4, 1, SINGULAR) == sympy.Rational(3, 2)
    assert gd_limit_loss(4, 2, sympy.eye(4)) == gd_limit_loss(4, 2) == 1


def test_ood_helpers_accept_zero_eigenvalues():
    """Exact: a zero eigenvalue puts the interval's lower edge at 0 and the contraction factor at
    >= 1 (the null part never contracts); all-zero eigenvalues give every step stable (oo); the
    range restriction (positive eigenvalues, d = rank) gives the learnable part's bound."""
    assert theory.spectrum_interval([0, 1, 4], 10, 40) == (0, 9)
    assert theory.contraction_factor(sympy.Rational(1, 5), [0, 4], 10, 40, 3) == 1
    assert theory.stable_eta_bound([0, 0], 2, 8) == sympy.oo
    assert theory.contraction_factor(sympy.Rational(1, 5), [0, 0], 2, 8, 3) == 1
    assert theory.ood_loss_bound(sympy.Rational(1, 5), [0, 0], 2, 8, 3) == 1
    assert theory.stable_eta_bound([0.5, 0], 1, 4) == sympy.Rational(16, 9)


@pytest.mark.parametrize("values, words", [
    ([1, -1], ">= 0"), ([-0.5], ">= 0"), ([], "empty"), ([float("nan")], "finite"),
    ([float("inf")], "finite"), ([sympy.oo], "finite"), ([sympy.I], "finite"), ("14", "list"),
    (["1"], "numbers"), (3, "list"), ([True], "numbers"),
])
def test_ood_bad_eigenvalues_name_the_parameter(values, words):
    """Exact: negative, non-finite, complex, string and empty eigenvalue lists give one ValueError
    naming sigma_eigenvalues."""
    for call in (lambda: theory.spectrum_interval(values, 2, 4),
                 lambda: theory.stable_eta_bound(values, 2, 4),
                 lambda: theory.contraction_factor(sympy.Rational(1, 5), values, 2, 4, 1)):
        with pytest.raises(ValueError, match=r"^sigma_eigenvalues\b") as info:
            call()
        assert words in str(info.value) and "\n" not in str(info.value)


def test_noisy_limit_is_real_and_rotation_invariant():
    """Exact: with label noise, gd_limit_loss of a rotated Sigma (an exact rational rotation, the
    Cayley transform of a skew matrix) equals the diagonal Sigma's, a real rational: the trace of
    Sigma_r^{-1} comes from the characteristic polynomial, not from eigenvalues in radicals."""
    K = sympy.Matrix(3, 3, lambda i, j: sympy.Rational(i - j, i + j + 2))
    Q = (sympy.eye(3) - K) * (sympy.eye(3) + K).inv()
    for eigenvalues, n in (([1, 2, 3], 8), ([1, 2, 0], 8), ([2, 2, 2], 1)):         # n > r + 1 and n < r - 1
        D = sympy.diag(*eigenvalues)
        rotated = theory.gd_limit_loss(3, n, Q * D * Q.T, noise_var=sympy.Rational(1, 2))
        assert rotated == theory.gd_limit_loss(3, n, D, noise_var=sympy.Rational(1, 2))
        assert rotated.is_Rational
    assert theory.gd_limit_loss(3, 8, sympy.diag(1, 2, 3), noise_var=1) == sympy.Rational(11, 6) / (2 * 4)
