"""The large-d limit for a general covariance: the deterministic equivalent of the sample
covariance (docs/theory.md section 15).

As ``d, n -> oo`` with ``d / n -> gamma`` and the spectrum of ``Sigma`` tending to ``H``, the
eigenvalue distribution of ``S = X X^T / n`` (columns ``N(0, Sigma)``) tends to ``F``, whose
Stieltjes transform ``m(z) = int dF(x) / (x - z)`` is given through the companion transform
``m_(z) = -(1 - gamma) / z + gamma m(z)`` (of ``X^T X / n``) by the Marchenko-Pastur /
Silverstein equation

    z = -1 / m_ + gamma int tau dH(tau) / (1 + tau m_),        Im m_ > 0 for Im z > 0.

For a finite Sigma with eigenvalues ``tau_j`` and ``gamma = d / n``, ``H`` the empirical
spectrum, ``F`` is the deterministic equivalent of ``S`` (the finite-d gap of a mean trace is
``O(1/d)`` per coordinate).  Integrals ``int f dF`` of an entire ``f`` (polynomials such as the
GD loss ``(1/2)(1 - eta x)^{2k}``) are contour integrals

    int f dF = -(1 / 2 pi i) oint f(z) m(z) dz

over a circle around the support (it lies in ``[0, tau_max (1 + sqrt(gamma))^2]``), evaluated by
the trapezoidal rule (geometric convergence: the integrand is analytic near the circle), with
``m_`` solved at each node by the fixed-point iteration of the equation (a contraction of the
upper half-plane) and polished by Newton's method.  No density, no square-root endpoints; the
atoms at 0 (``gamma > 1`` or a singular Sigma) are inside the circle and count automatically.
"""
from __future__ import annotations

import math

import numpy as np

from theory.validation import check_int, check_positive_finite

from .checks import float_array

#: Fixed-point sweeps before Newton's method, and Newton steps.
_SWEEPS, _NEWTON = 400, 30


def _spectrum(sigma_spectrum) -> tuple[np.ndarray, np.ndarray]:
    """Distinct eigenvalues of Sigma and their weights (fractions of d)."""
    tau = float_array("sigma_spectrum", sigma_spectrum, min_ndim=1)
    if tau.ndim != 1 or tau.size == 0:
        raise ValueError(f"sigma_spectrum must be a non-empty 1-d list of eigenvalues, got shape {tau.shape}")
    if not np.all(np.isfinite(tau)) or np.any(tau < 0):
        raise ValueError("sigma_spectrum must contain finite eigenvalues >= 0 (Sigma PSD)")
    if not np.any(tau > 0):
        raise ValueError("sigma_spectrum must not be all zero (then S = 0)")
    values, counts = np.unique(tau, return_counts=True)
    return values, counts / tau.size


def silverstein_stieltjes(z, gamma: float, sigma_spectrum) -> np.ndarray:
    """The Stieltjes transform ``m(z) = int dF(x) / (x - z)`` of the deterministic equivalent of
    ``S`` for ``d / n = gamma`` and Sigma's eigenvalues ``sigma_spectrum`` (equal weights), at
    complex ``z`` off the real axis (array), from the Silverstein equation (module docstring;
    docs/theory.md section 15).

    >>> m = silverstein_stieltjes(1j, 0.5, [1.0])          # Marchenko-Pastur, gamma = 1/2
    >>> z = 1j
    >>> bool(abs(0.5 * z * m ** 2 + (z - 0.5) * m + 1) < 1e-12)   # gamma z m^2 + (z - 1 + gamma) m + 1 = 0
    True
    """
    gamma = check_positive_finite("gamma", gamma)
    tau, weight = _spectrum(sigma_spectrum)
    z = np.asarray(z, dtype=np.complex128)
    if np.any(z.imag == 0):
        raise ValueError("z must be off the real axis (Im z != 0)")
    flip = z.imag < 0
    zu = np.where(flip, np.conj(z), z)
    mu = _companion(zu.ravel(), gamma, tau, weight).reshape(zu.shape)
    m = (mu + (1 - gamma) / zu) / gamma
    return np.where(flip, np.conj(m), m)


def _companion(z: np.ndarray, gamma: float, tau: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """``m_(z)`` for ``Im z > 0`` (vector): fixed-point sweeps, then Newton's method."""
    t = tau[None, :]
    w = weight[None, :]
    zz = z[:, None]
    m = -1.0 / zz
    for _ in range(_SWEEPS):
        m = -1.0 / (zz - gamma * np.sum(w * t / (1.0 + t * m), axis=1, keepdims=True))
    for _ in range(_NEWTON):
        q = 1.0 + t * m
        h = zz + 1.0 / m - gamma * np.sum(w * t / q, axis=1, keepdims=True)
        dh = -1.0 / m ** 2 + gamma * np.sum(w * t * t / q ** 2, axis=1, keepdims=True)
        m = m - h / dh
    q = 1.0 + t * m
    residual = np.abs(zz + 1.0 / m - gamma * np.sum(w * t / q, axis=1, keepdims=True))
    if not np.all(residual <= 1e-10 * (1.0 + np.abs(zz))) or np.any(m.imag < -1e-12):
        raise ArithmeticError("the Silverstein equation did not converge on the contour")
    return m[:, 0]


def _support_bounds(gamma: float, tau: np.ndarray) -> tuple[float, float]:
    """An interval that holds the support of F: ``[tau_min (1 - sqrt(gamma))^2, tau_max (1 +
    sqrt(gamma))^2]`` (the spectrum of ``Sigma^{1/2} S_0 Sigma^{1/2}`` lies between the products of
    the extreme eigenvalues), with 0 added for the atom when ``gamma >= 1`` or Sigma is singular."""
    hi = float(tau.max()) * (1.0 + math.sqrt(gamma)) ** 2
    lo = 0.0 if gamma >= 1 or tau.min() == 0 else float(tau.min()) * (1.0 - math.sqrt(gamma)) ** 2
    return lo, hi


def deterministic_equivalent_integral(f, gamma: float, sigma_spectrum, *, nodes: int | None = None,
                                      rtol: float = 1e-12) -> float:
    """``int f dF`` over the deterministic equivalent ``F`` of the spectrum of ``S`` (module
    docstring) for an entire ``f`` (a vectorised callable on complex arrays, real on the real
    axis), by the contour integral over the Bernstein ellipse ``z = c + h (rho e^{i theta} +
    e^{-i theta} / rho) / 2`` (``rho = 1.15``) around the interval ``[c - h, c + h]`` that holds the
    support: a thin ellipse keeps ``|f|`` on the contour close to its size on the support (no
    cancellation for large powers), and the trapezoidal rule converges like ``rho^-N``.
    ``nodes`` fixes the number ``N`` of nodes; otherwise ``N`` doubles from 256 until two results
    agree to ``rtol`` times the larger of the value and the mean modulus of the integrand.
    Per coordinate: compare with ``E tr f(S) / d`` (docs/theory.md section 15).

    >>> round(deterministic_equivalent_integral(lambda x: x ** 2, 0.5, [1.0]), 12)   # 1 + gamma
    1.5
    """
    gamma = check_positive_finite("gamma", gamma)
    tau, weight = _spectrum(sigma_spectrum)
    lo, hi = _support_bounds(gamma, tau)
    centre, half = (lo + hi) / 2.0, (hi - lo) / 2.0
    rho = 1.15

    def trapezoid(N: int) -> tuple[float, float]:
        theta = (np.arange(N // 2) + 0.5) * (2.0 * math.pi / N)         # upper half, off the axis
        e = np.exp(1j * theta)
        z = centre + half * (rho * e + 1.0 / (rho * e)) / 2.0
        dz = 1j * half * (rho * e - 1.0 / (rho * e)) / 2.0               # dz / dtheta
        mu = _companion(z, gamma, tau, weight)
        m = (mu + (1.0 - gamma) / z) / gamma
        integrand = f(z) * m * dz
        # -(1 / 2 pi i) oint = -(1 / 2 pi i) (2 pi / N) sum over both halves (conjugate symmetry)
        return float(-(2.0 / N) * np.sum(integrand.imag)), float(np.mean(np.abs(integrand)))

    if nodes is not None:
        return trapezoid(2 * (check_int("nodes", nodes, 2) // 2))[0]
    N = 256
    previous, _ = trapezoid(N)
    while N < 2 ** 16:
        N *= 2
        value, scale = trapezoid(N)
        if abs(value - previous) <= rtol * max(abs(value), scale):
            return value
        previous = value
    raise ArithmeticError("the contour integral did not converge")


def deterministic_equivalent_gd_loss(gamma: float, eta: float, k: int, sigma_spectrum) -> float:
    """Per-coordinate large-d limit of the k-step GD evaluation loss for prompts from Sigma,
    ``(1/2) int (1 - eta x)^{2k} dF(x)`` (docs/theory.md section 15; ``w* ~ N(0, I)``), for any
    ``k``.  Multiply by ``d`` to compare with ``theory.gd_eval_loss(d, n, eta, k, sigma=Sigma)``
    or Monte Carlo at ``d / n = gamma``.

    >>> round(deterministic_equivalent_gd_loss(0.5, 0.4, 1, [1.0]), 12)     # (1/2)(1 - 2 eta + eta^2 (1 + gamma))
    0.22
    """
    eta = check_positive_finite("eta", eta)
    k = check_int("k", k, 0)
    return 0.5 * deterministic_equivalent_integral(lambda x: (1.0 - eta * x) ** (2 * k), gamma, sigma_spectrum)
