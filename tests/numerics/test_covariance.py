"""Covariances in numerics (docs/theory.md sections 1, 7 and 10): the one validation of a numeric
Sigma (``check_sigma`` / ``covariance_root``: symmetric positive semi-definite, singular allowed),
sampling, Monte Carlo and the no-CoT optimum with a singular Sigma against theory's exact values,
and the one Haar-random rotation (``haar_orthogonal`` / ``random_rotation``).  Each test docstring
says its kind: exact (equal bits), numeric (float64 to rounding) or statistical (within 4
standard errors or a KS p-value, fixed seeds so the outcome is reproducible)."""
import numpy as np
import pytest
import scipy.stats
import sympy
from hypothesis import given
from hypothesis import strategies as st

import theory
import theory.validation
from numerics import (check_gd_equivalence, covariance_root, eval_loss_mc, eval_loss_mc_params,
                      exact_covariance, gd_iterates, gd_params, haar_orthogonal, nocot_loss_mc,
                      nocot_optimum_numeric, nocot_params, random_rotation, sample_gram, sample_prompts)
from numerics.checks import check_sigma
from numerics.strategies import psd_covariances


def _cayley(d: int) -> sympy.Matrix:
    """An exact rational orthogonal matrix (Cayley transform of a rational skew matrix)."""
    K = sympy.Matrix(d, d, lambda i, j: sympy.Rational(i - j, i + j + 2))
    return (sympy.eye(d) - K) * (sympy.eye(d) + K).inv()


def _singular(eigenvalues) -> tuple:
    """``(Sigma exact, Sigma float64, P_perp float64)`` for ``Sigma = Q diag(eigenvalues) Q^T``, Q
    rational orthogonal; ``P_perp`` projects onto the null space of Sigma."""
    d = len(eigenvalues)
    Q = _cayley(d)
    exact = Q * sympy.diag(*eigenvalues) * Q.T
    null = Q[:, [j for j, v in enumerate(eigenvalues) if v == 0]]
    return exact, np.array(exact.tolist(), dtype=float), np.array((null * null.T).tolist(), dtype=float)


# Rank 2 in d = 4: x ~ N(0, Sigma) lives in a random-looking plane.
SIGMA_EXACT, SIGMA, P_PERP = _singular([1, 2, 0, 0])


def _within(report, expected, n_se=4.0):
    return abs(report["mean"] - expected) <= n_se * report["se"]


# --- check_sigma / covariance_root -------------------------------------------------------------

def test_root_of_a_singular_covariance():
    """Numeric: the root of a rank-2 Sigma is symmetric, squares to Sigma to rounding, has rank 2
    and is zero on the null space of Sigma to float64 precision (the round-off eigenvalues of the
    float Sigma, ~1e-17, are set to exactly 0)."""
    S, root = check_sigma(SIGMA, 4)
    assert np.array_equal(S, (SIGMA + SIGMA.T) / 2) and np.array_equal(root, root.T)
    np.testing.assert_allclose(root @ root.T, SIGMA, atol=1e-14)
    assert np.linalg.matrix_rank(root) == 2
    assert np.abs(P_PERP @ root).max() < 1e-15
    assert np.array_equal(covariance_root(SIGMA, 4), root) and covariance_root(None, 4) is None


def test_root_of_a_diagonal_covariance_is_its_cholesky_factor():
    """Exact: a diagonal Sigma (zeros included) gives diag(sqrt(Sigma_jj)) bit for bit, which is its
    Cholesky factor when positive definite, so Monte Carlo draws for diagonal Sigma (and Sigma = I)
    are those of the former Cholesky sampler."""
    sigma = np.diag([3.0, 1.0, 0.5, 0.2])
    assert np.array_equal(covariance_root(sigma, 4), np.linalg.cholesky(sigma))
    assert np.array_equal(covariance_root(np.diag([4.0, 0.0]), 2), np.diag([2.0, 0.0]))
    assert np.array_equal(covariance_root(np.eye(3), 3), np.eye(3))


@pytest.mark.parametrize("value", [SIGMA.tolist(), tuple(map(tuple, SIGMA.tolist())),
                                   SIGMA.astype(np.float32)])
def test_array_likes_are_accepted(value):
    """Numeric: nested lists, tuples and float32 arrays are read as float64."""
    root = covariance_root(value, 4)
    assert root.dtype == np.float64
    np.testing.assert_allclose(root @ root, SIGMA, atol=1e-6)


def test_round_off_negative_eigenvalues_are_clipped_real_ones_refused():
    """Numeric: an eigenvalue of -1e-13 (rounding) is accepted and clipped to 0; -1e-6 is refused
    with the smallest eigenvalue in the message."""
    Q = random_rotation(3, 5)
    root = covariance_root((Q * [1.0, 2.0, -1e-13]) @ Q.T, 3)
    assert np.linalg.eigvalsh(root)[0] > -1e-15 and np.linalg.matrix_rank(root) == 2
    message = r"^sigma must be positive semi-definite, smallest eigenvalue -1e-06$"
    with pytest.raises(ValueError, match=message):
        check_sigma(np.diag([1.0, 2.0, -1e-6]), 3)


BAD_SIGMAS = [
    (np.array([[1.0, 0.5], [0.0, 1.0]]), "symmetric"),
    (np.array([[1.0, 2.0], [2.0, 1.0]]), "positive semi-definite"),
    (np.eye(3), "2 x 2"),
    (np.ones(2), "2 x 2"),
    (np.array([[1.0, np.nan], [np.nan, 1.0]]), "finite"),
    (np.array([[np.inf, 0.0], [0.0, 1.0]]), "finite"),
    ("identity", "real numbers"),
    ([["1", "0"], ["0", "1"]], "real numbers"),
    ([[1.0, 0.0], [0.0]], "real numbers"),
    (np.eye(2) * 1j, "real numbers"),
]


@pytest.mark.parametrize("value, words", BAD_SIGMAS)
def test_bad_covariances_raise_one_line_naming_the_parameter(value, words):
    """Numeric: non-symmetric, indefinite, wrong size, nan / inf, strings, ragged and complex input
    each give one ValueError, one line, starting with the parameter's name."""
    for name in ("sigma", "ood_sigmas['wide']"):
        with pytest.raises(ValueError) as info:
            covariance_root(value, 2, name=name)
        message = str(info.value)
        assert message.startswith(name + " ") and words in message and "\n" not in message


@pytest.mark.parametrize("call", [
    lambda s: sample_prompts(2, 3, 4, 0, sigma=s),
    lambda s: sample_gram(2, 3, 4, 0, sigma=s),
    lambda s: eval_loss_mc(2, 3, 0.1, 2, samples=10, seed=0, sigma=s),
    lambda s: eval_loss_mc_params(*gd_params(2, 0.1), 2, 3, 1, samples=10, seed=0, sigma=s),
    lambda s: nocot_loss_mc(2, 3, samples=10, seed=0, sigma=s),
    lambda s: check_gd_equivalence(2, 3, 1, 0.1, seed=0, sigma=s),
    lambda s: nocot_params(2, 3, s),
    lambda s: nocot_optimum_numeric(2, 3, sigma=s),
])
@pytest.mark.parametrize("value, words", BAD_SIGMAS[:3] + BAD_SIGMAS[4:7])
def test_every_sigma_taking_function_uses_the_one_check(call, value, words):
    """Numeric: every numerics function taking sigma refuses bad ones with check_sigma's message."""
    with pytest.raises(ValueError, match=r"^sigma\b") as info:
        call(value)
    assert words in str(info.value)


def test_zero_covariance_refused_only_where_gamma_must_be_inverted():
    """Numeric: Sigma = 0 (x = 0) is a valid covariance for sampling and Monte Carlo (the loss is
    ||w*||^2 / 2 for every k); Theorem 3.1's V31 = -Gamma^{-1} does not exist (Gamma = 0)."""
    zero = np.zeros((3, 3))
    X, _, _ = sample_prompts(3, 4, 5, 0, sigma=zero)
    assert not X.any()
    a = eval_loss_mc(3, 4, 0.3, 5, samples=200, seed=1, sigma=zero, keep_losses=True)
    b = eval_loss_mc(3, 4, 0.3, 0, samples=200, seed=1, sigma=zero, keep_losses=True)
    assert np.array_equal(a.losses, b.losses)
    for call in (lambda: nocot_params(3, 4, zero), lambda: nocot_optimum_numeric(3, 4, sigma=zero)):
        with pytest.raises(ValueError, match=r"^sigma must not be zero"):
            call()


# --- sampling with a singular Sigma ------------------------------------------------------------

@pytest.mark.parametrize("n", [1, 3, 8])
def test_samples_lie_in_the_range_of_sigma(n):
    """Numeric: sampled x lie in range(Sigma) to float64 precision (n < rank, n = rank + 1, n > d);
    S = X X^T / n from either sampler too (P_perp S = 0)."""
    X, y, w_star = sample_prompts(4, n, 500, 7, sigma=SIGMA)
    assert np.abs(P_PERP @ X).max() <= 1e-14 * np.abs(X).max()
    np.testing.assert_allclose(y, np.einsum("bdn,bd->bn", X, w_star), rtol=1e-12, atol=1e-12)
    for method in (("auto", "bartlett", "direct") if n >= 4 else ("auto", "direct")):
        S = sample_gram(4, n, 500, 8, sigma=SIGMA, method=method)
        assert np.abs(P_PERP @ S).max() <= 1e-14 * np.abs(S).max()


def test_empirical_covariance_of_samples_matches_sigma():
    """Statistical: the 10 distinct entries of the sample mean of x x^T (40000 prompts, n = 3 each)
    are within 4 standard errors of Sigma; E S = Sigma likewise for both samplers."""
    X, _, _ = sample_prompts(4, 3, 40_000, 9, sigma=SIGMA)
    x = np.swapaxes(X, 1, 2).reshape(-1, 4)
    products = x[:, :, None] * x[:, None, :]
    for S in (products, sample_gram(4, 6, 40_000, 10, sigma=SIGMA, method="bartlett"),
              sample_gram(4, 6, 40_000, 11, sigma=SIGMA, method="direct")):
        mean = S.mean(0)
        se = S.std(0, ddof=1) / np.sqrt(S.shape[0])
        i, j = np.triu_indices(4)
        z = (mean - SIGMA)[i, j] / se[i, j]
        assert np.abs(z).max() < 4, z


def test_bartlett_and_direct_agree_for_a_singular_sigma():
    """Statistical: the Bartlett decomposition with the singular root has the law of the direct
    sampler: two-sample KS on tr(S), lambda_max(S) and S[0, -1], p > 1e-3."""
    a = sample_gram(4, 5, 20_000, 12, sigma=SIGMA, method="bartlett")
    b = sample_gram(4, 5, 20_000, 13, sigma=SIGMA, method="direct")
    for stat in (lambda S: np.trace(S, axis1=1, axis2=2), lambda S: np.linalg.eigvalsh(S)[:, -1],
                 lambda S: S[:, 0, -1]):
        assert scipy.stats.ks_2samp(stat(a), stat(b)).pvalue > 1e-3


# --- Monte Carlo with a singular Sigma against exact theory --------------------------------------

@pytest.mark.parametrize("n", [6, 1])
def test_nocot_mc_matches_exact_minimum_for_singular_sigma(n):
    """Statistical: the Sigma-optimal no-CoT model (V31 = -Gamma^{-1}, Gamma invertible although
    Sigma is singular) has Monte Carlo mean within 4 se of theory.nocot_min_loss_sigma for
    n >= rank and n < rank; the ID-trained model (eta_1 = n/(n + d + 1)) on the same prompts
    within 4 se of theory.linear_prediction_loss(n, Sigma, eta_1 I)."""
    exact = float(theory.nocot_min_loss_sigma(n, SIGMA_EXACT))
    r = eval_loss_mc_params(*nocot_params(4, n, SIGMA), 4, n, 1, samples=100_000, seed=14, sigma=SIGMA)
    assert r["diverged_frac"] == 0 and _within(r, exact)
    eta_1 = theory.nocot_optimal_eta(4, n)
    id_trained = float(theory.linear_prediction_loss(n, SIGMA_EXACT, eta_1 * sympy.eye(4)))
    r = nocot_loss_mc(4, n, samples=100_000, seed=15, sigma=SIGMA)
    assert _within(r, id_trained) and id_trained >= exact


def test_nocot_params_for_singular_sigma_equal_exact_theory():
    """Numeric: nocot_params(d, n, float Sigma) is theory.nocot_params at the exact Sigma to 1e-14."""
    V, _ = nocot_params(4, 6, SIGMA)
    Vs, _ = theory.nocot_params(4, 6, SIGMA_EXACT)
    np.testing.assert_allclose(V, np.array(Vs.tolist(), dtype=float), rtol=0, atol=1e-14)


def test_exact_covariance_bridges_floats_to_exact_theory():
    """Numeric: read exactly, the float64 rounding of a rank-2 Sigma is no longer of rank 2 (here it
    is of full rank; it could as well be indefinite and refused by theory), while exact_covariance
    gives an exactly PSD rational matrix of rank 2, equal to Sigma to the rounding of a float64
    eigendecomposition (8 d eps ||Sigma||: LAPACK's eigenvectors are accurate to a few eps per
    entry, and the product Q diag(lambda) Q^T sums d of them), whose exact no-CoT minimum agrees
    with the exact Sigma's to 1e-14."""
    assert theory.validation.covariance_and_rank("Sigma", SIGMA.tolist())[1] == 4
    exact = exact_covariance(SIGMA, 4)
    assert theory.validation.covariance_and_rank("Sigma", exact)[1] == 2
    assert np.abs(np.array(exact.tolist(), dtype=float) - SIGMA).max() < 8 * 4 * np.finfo(float).eps * 2
    reference = float(theory.nocot_min_loss_sigma(5, SIGMA_EXACT))
    assert abs(float(theory.nocot_min_loss_sigma(5, exact)) - reference) < 1e-14
    assert exact_covariance(None, 4) is None


def test_nocot_optimum_numeric_with_singular_sigma():
    """Numeric: with Sigma = 2 x a rank-2 projector the best isotropic step is n/(c(n + r + 1)) and
    reaches theory.nocot_min_loss_sigma; with a rotated rank-2 Sigma the full matrix reaches it and
    the isotropic step does not."""
    projector = np.diag([2.0, 2.0, 0.0, 0.0])
    r = nocot_optimum_numeric(4, 6, sigma=projector)
    assert abs(r.eta - 6 / (2 * 9)) < 1e-10 and abs(r.eta_exact - 6 / 18) < 1e-15
    assert abs(r.loss - r.loss_exact) < 1e-12 and abs(r.diagonal_loss - r.loss_exact) < 1e-10
    r = nocot_optimum_numeric(4, 6, sigma=SIGMA, full_matrix=True)
    assert abs(r.loss_exact - float(theory.nocot_min_loss_sigma(6, SIGMA_EXACT))) < 1e-14
    assert abs(r.matrix_loss - r.loss_exact) < 1e-9 and r.loss > r.loss_exact + 1e-3


def test_gd_loss_with_singular_sigma_tends_to_the_unlearnable_part():
    """Statistical: with Sigma of rank 2 in d = 4 and n = 8 >= rank at a stable step (eta = 0.1,
    eta lambda_max(S) < 2 on every prompt drawn), the k-step GD loss decreases in k towards
    (1/2) E ||P_perp w*||^2 = (d - rank)/2 = theory.gd_limit_loss(d, n, Sigma) = 1, reached
    within 4 se at k = 300 (the learnable part's residual is then far below the se)."""
    limit = theory.gd_limit_loss(4, 8, SIGMA_EXACT)
    assert limit == 1
    reports = [eval_loss_mc(4, 8, 0.1, k, samples=20_000, seed=16, sigma=SIGMA) for k in (1, 10, 300)]
    assert all(r["diverged_frac"] == 0 for r in reports)
    assert reports[0]["mean"] > reports[1]["mean"] > reports[2]["mean"]
    assert not _within(reports[1], float(limit)) and _within(reports[2], float(limit))


@pytest.mark.parametrize("n", [1, 2, 6])
def test_gd_never_learns_the_null_space_of_sigma(n):
    """Numeric: prompt by prompt, the GD iterates stay in range(Sigma), so the error's null-space
    part is -P_perp w* at every step, to float64 precision (n < rank, = rank, > rank)."""
    X, y, w_star = sample_prompts(4, n, 50, 17, sigma=SIGMA)
    w = gd_iterates(X, y, 0.1, 20)
    assert np.abs(w @ P_PERP).max() <= 1e-13 * max(1.0, np.abs(w).max())


@pytest.mark.parametrize("d, n, k, eta, rank", [(4, 1, 10, 0.3, 2), (4, 8, 30, 0.3, 2), (6, 3, 25, 0.2, 4)])
def test_check_gd_equivalence_with_singular_sigma(d, n, k, eta, rank):
    """Numeric: Theorem 3.2's routes (CoT, looped, GD, closed form) agree to 1e-10 relative on
    prompts from a singular Sigma, n below and above its rank."""
    Q = random_rotation(d, 18)[:, :rank]
    sigma = (Q * np.linspace(0.5, 1.5, rank)) @ Q.T
    r = check_gd_equivalence(d, n, k, eta, seed=19, sigma=sigma, prompts=4)
    assert r.passed(1e-10) and r.eta_lambda_max < 2


def test_gd_path_equals_transformer_path_for_singular_sigma():
    """Numeric: eval_loss_mc and eval_loss_mc_params(gd_params) see the same prompts from a singular
    Sigma and give the same per-prompt losses to 1e-10 relative."""
    kw = dict(samples=2000, seed=20, chunk=500, keep_losses=True, sigma=SIGMA)
    gd = eval_loss_mc(4, 9, 0.3, 7, **kw)
    for mode in ("cot", "looped"):
        tf = eval_loss_mc_params(*gd_params(4, 0.3), 4, 9, 7, mode=mode, **kw)
        np.testing.assert_allclose(tf.losses, gd.losses, rtol=1e-10)


# --- psd_covariances strategy -------------------------------------------------------------------

@given(st.integers(1, 6).flatmap(lambda d: st.tuples(st.just(d), st.integers(0, d))), st.data())
def test_psd_covariances_have_the_requested_rank(sizes, data):
    """Numeric: psd_covariances(d, rank) is symmetric PSD of numerical rank ``rank`` (exactly that
    many eigenvalues above 1e-12, within the condition bound), and check_sigma accepts it."""
    d, rank = sizes
    sigma = data.draw(psd_covariances(d, rank, max_condition=50.0))
    eig = np.linalg.eigvalsh(sigma)
    positive = eig[eig > 1e-12]
    assert np.array_equal(sigma, sigma.T) and eig[0] > -1e-14 and positive.size == rank
    assert rank == 0 or positive[-1] / positive[0] <= 50.0 * (1 + 1e-9)
    assert np.linalg.matrix_rank(covariance_root(sigma, d)) == rank
    drawn = data.draw(psd_covariances(d))
    assert 1 <= np.linalg.matrix_rank(drawn, tol=1e-10) <= d


def test_psd_covariances_reject_bad_arguments():
    """Numeric: a rank outside 0..d or a condition bound below 1 is refused, naming it."""
    with pytest.raises(ValueError, match="^rank"):
        psd_covariances(3, 4)
    with pytest.raises(ValueError, match="^rank"):
        psd_covariances(3, -1)
    with pytest.raises(ValueError, match="^max_condition"):
        psd_covariances(3, 2, max_condition=0.5)


# --- Haar-random orthogonal matrices -------------------------------------------------------------

@pytest.mark.parametrize("d", [1, 2, 5, 12])
def test_random_rotation_is_orthogonal_reproducible_and_both_signs_occur(d):
    """Numeric: Q^T Q = I to 1e-12; the same seed (int or Generator) gives the same matrix; over 64
    seeds both determinants occur."""
    Q = random_rotation(d, 3)
    assert Q.shape == (d, d) and Q.dtype == np.float64
    assert np.abs(Q.T @ Q - np.eye(d)).max() < 1e-12
    assert np.array_equal(Q, random_rotation(d, 3))
    assert np.array_equal(random_rotation(d, np.random.default_rng(4)), random_rotation(d, 4))
    signs = {round(np.linalg.det(random_rotation(d, s))) for s in range(64)}
    assert signs == {-1, 1}


def test_haar_orthogonal_batched_and_same_as_one_at_a_time():
    """Numeric: a (M, d, d) batch (as training passes it) gives M orthogonal matrices of the same
    shape, each equal to the unbatched result."""
    A = np.random.default_rng(5).standard_normal((6, 4, 4))
    Q = haar_orthogonal(A)
    assert Q.shape == A.shape and Q.dtype == np.float64
    assert np.abs(Q @ np.swapaxes(Q, 1, 2) - np.eye(4)).max() < 1e-12
    for m in range(6):
        np.testing.assert_allclose(Q[m], haar_orthogonal(A[m]), rtol=0, atol=1e-15)


def test_random_rotation_is_the_former_strategies_generator():
    """Exact: random_rotation(d, seed) is the generator numerics.strategies used before (QR of
    default_rng(seed).standard_normal((d, d)) with the sign fix), so drawn Sigma are unchanged."""
    for d, seed in [(1, 0), (3, 7), (8, 2 ** 32 - 1)]:
        Q, R = np.linalg.qr(np.random.default_rng(seed).standard_normal((d, d)))
        assert np.array_equal(random_rotation(d, seed), Q * np.sign(np.diag(R)))


def test_haar_law_and_the_sign_fix_matters():
    """Statistical: for Haar Q on O(4), Q_00^2 ~ Beta(1/2, 3/2) (KS p > 1e-3) and E Q_00 = 0 (within
    4 se); QR without the sign fix is not Haar (its Q_00 is never positive)."""
    A = np.random.default_rng(6).standard_normal((20_000, 4, 4))
    q = haar_orthogonal(A)[:, 0, 0]
    assert scipy.stats.kstest(q ** 2, scipy.stats.beta(0.5, 1.5).cdf).pvalue > 1e-3
    assert abs(q.mean()) < 4 * q.std(ddof=1) / np.sqrt(q.size)
    assert np.linalg.qr(A)[0][:, 0, 0].max() <= 0


@pytest.mark.parametrize("call, name", [
    (lambda: haar_orthogonal(np.ones((3, 2))), "A"),
    (lambda: haar_orthogonal(np.ones(3)), "A"),
    (lambda: haar_orthogonal("abc"), "A"),
    (lambda: haar_orthogonal([[np.nan]]), "A"),
    (lambda: random_rotation(0, 1), "d"),
    (lambda: random_rotation(3, None), "seed"),
])
def test_rotations_bad_input_names_the_parameter(call, name):
    """Numeric: non-square, non-numeric or non-finite A, d < 1 and a missing seed are refused."""
    with pytest.raises(ValueError, match=rf"^{name}\b"):
        call()
