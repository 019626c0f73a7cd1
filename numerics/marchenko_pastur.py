"""The Marchenko-Pastur limit of the GD evaluation loss (docs/theory.md sections 2 and 9).

As ``d, n -> oo`` with ``d / n -> gamma`` the spectrum of ``S = X X^T / n`` (Sigma = I) tends to
the Marchenko-Pastur law ``MP_gamma``: density
``sqrt((b - x)(x - a)) / (2 pi gamma x)`` on ``[a, b] = [(1 - sqrt(gamma))^2, (1 + sqrt(gamma))^2]``
plus, for ``gamma > 1``, an atom of mass ``1 - 1/gamma`` at 0 (the null space of S when n < d).
The k-step GD loss per coordinate, ``(1/2) E tr((I - eta S)^{2k}) / d``, tends to
``(1/2) int (1 - eta x)^{2k} dMP_gamma(x)``.
"""
from __future__ import annotations

import math

import numpy as np
import scipy.integrate

from theory.validation import check_int, check_positive_finite


def mp_density(x, gamma: float) -> np.ndarray:
    """Density of the continuous part of ``MP_gamma`` at ``x`` (0 outside ``[a, b]``); for
    ``gamma > 1`` it integrates to ``1/gamma`` (the rest is the atom at 0).

    >>> float(mp_density(1.0, 1.0)) == math.sqrt(3) / (2 * math.pi)
    True
    """
    gamma = check_positive_finite("gamma", gamma)
    x = np.asarray(x, dtype=np.float64)
    a, b = (1 - math.sqrt(gamma)) ** 2, (1 + math.sqrt(gamma)) ** 2
    inside = (x > a) & (x < b)
    safe = np.where(inside, x, 1.0)
    return np.where(inside, np.sqrt(np.clip((b - safe) * (safe - a), 0, None)) / (2 * math.pi * gamma * safe), 0.0)


def mp_gd_eval_loss(gamma: float, eta: float, k: int, *, sigma_spectrum=None) -> float:
    """Per-coordinate Marchenko-Pastur limit of the k-step GD evaluation loss,
    ``(1/2) int (1 - eta x)^{2k} dMP_gamma(x)`` (module docstring), by ``scipy.integrate.quad``.

    ``sigma_spectrum``: the eigenvalues of a covariance Sigma (prompts ``x ~ N(0, Sigma)``); the
    limit is then the deterministic equivalent of ``numerics.silverstein``
    (``deterministic_equivalent_gd_loss``, docs/theory.md section 15), for any ``k``.

    The continuous part is integrated in the angle ``x = (1 + gamma) + 2 sqrt(gamma) cos(theta)``,
    where ``dMP_gamma`` becomes ``2 sin(theta)^2 / (pi x) dtheta`` -- smooth, no
    square-root endpoints; the atom at 0 (``gamma > 1``) adds ``(1 - 1/gamma) / 2``.
    Multiply by ``d`` to compare with ``theory.gd_eval_loss(d, n, eta, k)`` at ``d / n = gamma``.

    >>> round(mp_gd_eval_loss(0.5, 0.4, 1), 12)        # (1/2)(1 - 2 eta + eta^2 (1 + gamma))
    0.22
    >>> round(mp_gd_eval_loss(0.5, 0.4, 1, sigma_spectrum=[1.0, 3.0]), 12)   # (1/2)(1 - 2 eta h1 + eta^2 (h2 + gamma h1^2))
    0.26
    """
    if sigma_spectrum is not None:
        from .silverstein import deterministic_equivalent_gd_loss
        return deterministic_equivalent_gd_loss(gamma, eta, k, sigma_spectrum)
    gamma = check_positive_finite("gamma", gamma)
    eta = check_positive_finite("eta", eta)
    k = check_int("k", k, 0)
    centre, radius = 1 + gamma, 2 * math.sqrt(gamma)

    def integrand(theta):
        x = centre + radius * math.cos(theta)
        s = math.sin(theta)
        # sqrt((b - x)(x - a)) = radius sin(theta), dx = radius sin(theta) dtheta, radius^2 = 4 gamma
        return (1 - eta * x) ** (2 * k) * 2 * s * s / (math.pi * x) if x > 0 else 0.0

    continuous, _ = scipy.integrate.quad(integrand, 0.0, math.pi, limit=500, epsabs=0.0, epsrel=1e-13)
    atom = max(0.0, 1 - 1 / gamma)
    return 0.5 * (continuous + atom)
