"""Theorem 4.2's helpers (docs/theory.md section 7) beyond k = 1, where 2k = 2^k hides a wrong
exponent: exact values at k = 2, 3, 5, and statistical checks that they bound what they claim.
Each test docstring says its kind: exact (symbolic), numeric (float64) or statistical (Monte Carlo
within 4 standard errors)."""
import numpy as np
import pytest
import sympy

import theory

ETA = sympy.Rational(1, 5)


@pytest.mark.parametrize("k", [0, 1, 2, 3, 5])
def test_contraction_factor_is_the_2k_th_power(k):
    """Exact: max(|1 - eta lo|, |1 - eta hi|)^(2k) on [lo, hi] = [1/4, 9] (eigenvalues 1, 4, d/n =
    1/4): (19/20)^(2k); the bound is (d/2) times it.  At k = 3, 2k = 6 while 2^k = 8."""
    factor = theory.contraction_factor(ETA, [1, 4], 10, 40, k)
    assert factor == sympy.Rational(19, 20) ** (2 * k)
    assert theory.ood_loss_bound(ETA, [1, 4], 10, 40, k) == 5 * sympy.Rational(19, 20) ** (2 * k)
    # the other end dominates for a larger step: |1 - 9 eta| at eta = 1/5 + 1/50
    assert theory.contraction_factor(sympy.Rational(11, 50), [1, 4], 10, 40, k) == sympy.Rational(49, 50) ** (2 * k)


def _prompts(d, n, samples, seed, eigenvalues):
    rng = np.random.default_rng(seed)
    X = np.sqrt(np.asarray(eigenvalues))[None, :, None] * rng.standard_normal((samples, d, n))
    S = X @ X.transpose(0, 2, 1) / n
    w_star = rng.standard_normal((samples, d))
    return S, w_star


#: The OOD problem of the two tests below: d 4, n 40, GD step 3/10, Sigma = diag(EIGENVALUES).
D, N, ETA_OOD, EIGENVALUES = 4, 40, sympy.Rational(3, 10), [0.5, 0.8, 1.2, 1.5]


def _errors_and_interval(k, samples, seed):
    """``(w*, e_k, inside)`` on sampled prompts: k-step GD errors and whether each prompt's
    spectrum lies in theory.spectrum_interval."""
    lo, hi = (float(v) for v in theory.spectrum_interval(EIGENVALUES, D, N))
    S, w_star = _prompts(D, N, samples, seed, EIGENVALUES)
    lam = np.linalg.eigvalsh(S)
    inside = (lam[:, 0] >= lo) & (lam[:, -1] <= hi)
    e = -w_star
    for _ in range(k):
        e = e - float(ETA_OOD) * np.einsum("bij,bj->bi", S, e)
    return w_star, e, inside


@pytest.mark.parametrize("k", [2, 3, 6])
def test_per_prompt_contraction_inside_the_interval(k):
    """Numeric: on every sampled prompt whose spectrum lies in spectrum_interval, ||e_k||^2 /
    ||w*||^2 is at most contraction_factor (up to 1e-12 relative); such prompts are common here."""
    factor = float(theory.contraction_factor(ETA_OOD, EIGENVALUES, D, N, k))
    w_star, e, inside = _errors_and_interval(k, 20_000, 100 + k)
    assert inside.mean() > 0.5
    ratio = (e ** 2).sum(1) / (w_star ** 2).sum(1)
    assert np.all(ratio[inside] <= factor * (1 + 1e-12))


@pytest.mark.parametrize("k", [2, 3, 5])
def test_monte_carlo_loss_under_the_bound(k):
    """Statistical: the Monte Carlo OOD loss restricted to prompts inside the interval,
    E[loss 1_in] <= ood_loss_bound P(in) (w* independent of S), within 4 standard errors; the whole
    mean exceeds the bound by at most the part carried by the prompts outside, whose share
    1 - P(in) is reported by the estimate."""
    bound = float(theory.ood_loss_bound(ETA_OOD, EIGENVALUES, D, N, k))
    _, e, inside = _errors_and_interval(k, 50_000, 200 + k)
    loss = 0.5 * (e ** 2).sum(1)
    kept = loss * inside
    se = kept.std(ddof=1) / np.sqrt(len(kept))
    assert kept.mean() <= bound * inside.mean() + 4 * se
    outside = loss * ~inside
    assert loss.mean() <= bound + outside.mean() + 4 * loss.std(ddof=1) / np.sqrt(len(loss))
