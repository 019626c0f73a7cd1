"""Label noise: the Bayes-optimal loss, the floor no estimator beats (docs/theory.md section 16).

With ``w* ~ N(0, I_d)`` and ``y = X^T w* + eps``, ``eps ~ N(0, s^2 I_n)``, the posterior mean of
``w*`` given the prompt is the ridge estimate ``w_B = (S + (s^2/n) I)^{-1} X y / n``, and its
mean loss is

    (1/2) E tr((I + n S / s^2)^{-1}) = (lambda / 2) E tr((S + lambda I)^{-1}),   lambda = s^2 / n,

the smallest mean loss of any function of the prompt.  ``bayes_loss_mc`` samples it (the realised
losses of ``w_B``, with numerics' ``LossReport``); ``bayes_loss_mp`` is its large-d value from the
Stieltjes transform of the Marchenko-Pastur law (or of the deterministic equivalent for a general
Sigma, docs/theory.md section 15) at ``z = -lambda``.
"""
from __future__ import annotations

import math

import numpy as np
from scipy.optimize import brentq

from theory.validation import check_int, check_nonnegative_finite

from .montecarlo import DEFAULT_CHUNK, LossReport, _run
from .silverstein import _spectrum


def _positive_noise(noise_var) -> float:
    v = check_nonnegative_finite("noise_var", noise_var)
    if v == 0:
        raise ValueError("noise_var must be > 0 for the Bayes-optimal loss (without noise it is "
                         "the unrecoverable part (d - min(n, rank Sigma)) / 2, theory.gd_limit_loss)")
    return v


def bayes_loss_mc(d: int, n: int, noise_var: float, *, samples: int, seed, sigma=None,
                  chunk: int = DEFAULT_CHUNK, keep_losses: bool = False) -> LossReport:
    """Monte Carlo of the loss ``(1/2) ||w_B - w*||^2`` of the posterior mean
    ``w_B = (S + (s^2/n) I)^{-1} X y / n`` (module docstring), ``noise_var = s^2 > 0``, prompts
    with ``x ~ N(0, Sigma)`` (``sigma=None``: identity) and the prior ``w* ~ N(0, I)`` (for
    ``Sigma != I`` ``w_B`` is still the posterior mean: the prior does not depend on Sigma).
    Returns a ``LossReport``; its mean estimates ``(1/2) E tr((I + n S / s^2)^{-1})``.

    >>> r = bayes_loss_mc(10, 20, 1.0, samples=20000, seed=0)
    >>> round(r.mean, 2)
    0.45
    """
    d = check_int("d", d)
    n = check_int("n", n)
    lam = _positive_noise(noise_var) / n

    def error_of_chunk(S, w_star, Xeps, eps_sq):
        h = np.matmul(S, w_star[:, :, None])[:, :, 0] + Xeps
        w_B = np.linalg.solve(S + lam * np.eye(d), h[:, :, None])[:, :, 0]
        return w_B - w_star

    return _run(d, n, samples, seed, sigma, chunk, "direct", keep_losses, error_of_chunk, noise_var)


def bayes_loss_mp(d: int, n: int, noise_var: float, *, sigma_spectrum=None) -> float:
    """The large-d value of the Bayes-optimal loss ``(lambda / 2) d m(-lambda)``,
    ``lambda = s^2 / n``, with ``m`` the Stieltjes transform of the limiting spectrum of ``S`` at
    ``gamma = d / n`` (module docstring).  ``sigma_spectrum=None``: the Marchenko-Pastur law, in
    closed form ``m(-lambda) = (sqrt((1 + lambda - gamma)^2 + 4 gamma lambda) - (1 + lambda -
    gamma)) / (2 gamma lambda)`` (from ``gamma z m^2 + (z - 1 + gamma) m + 1 = 0``); otherwise
    Sigma's eigenvalues, with the Silverstein equation solved on the negative real axis (where
    the companion transform is the root in ``(0, 1/lambda]``).

    >>> round(bayes_loss_mp(10, 20, 1.0), 4)             # finite d = 10: about 0.451 (Monte Carlo)
    0.4221
    """
    d = check_int("d", d)
    n = check_int("n", n)
    lam = _positive_noise(noise_var) / n
    gamma = d / n
    if sigma_spectrum is None:
        b = 1 + lam - gamma
        m = (math.sqrt(b * b + 4 * gamma * lam) - b) / (2 * gamma * lam)
    else:
        tau, weight = _spectrum(sigma_spectrum)

        def equation(mu):       # z = -1/mu + gamma int tau dH / (1 + tau mu) at z = -lam
            return -1 / mu + gamma * float(np.sum(weight * tau / (1 + tau * mu))) + lam

        mu = brentq(equation, 1e-300, 1 / lam, xtol=1e-300, rtol=4 * np.finfo(float).eps, maxiter=500)
        m = (mu - (1 - gamma) / lam) / gamma
    return float(lam * d * m / 2)
