"""Argument checks for arrays, seeds and covariances (numerics' counterpart of theory.validation).

Scalars go through ``theory.validation`` (``check_int``, ``check_positive_finite``); the helpers
here cover what theory has no notion of: float64 arrays of given shapes, a covariance Sigma and a
seed.  Each raises one ``ValueError`` naming the parameter.
"""
from __future__ import annotations

import numbers

import numpy as np

from theory import Layout
from theory.validation import check_int


def float_array(name: str, value, *, min_ndim: int = 0) -> np.ndarray:
    """``value`` as a finite float64 array with at least ``min_ndim`` axes, else ValueError."""
    try:
        a = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be an array of real numbers, got {type(value).__name__}") from None
    if a.ndim < min_ndim:
        raise ValueError(f"{name} must have at least {min_ndim} axes, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} must contain only finite numbers")
    return a


def check_prompt(X, y) -> tuple[np.ndarray, np.ndarray]:
    """``X`` of shape ``(..., d, n)`` and ``y`` of shape ``(..., n)`` with matching leading axes."""
    X = float_array("X", X, min_ndim=2)
    y = float_array("y", y, min_ndim=1)
    if X.shape[-2] < 1 or X.shape[-1] < 1:
        raise ValueError(f"X must be d x n with d, n >= 1, got shape {X.shape}")
    if y.shape != X.shape[:-2] + X.shape[-1:]:
        raise ValueError(f"y must have shape {X.shape[:-2] + X.shape[-1:]} (X is {X.shape}), got {y.shape}")
    return X, y


def check_w(name: str, w, d: int, batch: tuple) -> np.ndarray:
    """A weight vector of length ``d`` (broadcast over ``batch``); None means zeros."""
    if w is None:
        return np.zeros(batch + (d,))
    w = float_array(name, w, min_ndim=1)
    if w.shape[-1] != d:
        raise ValueError(f"{name} must have length d = {d}, got shape {w.shape}")
    try:
        return np.broadcast_to(w, batch + (d,)).copy()
    except ValueError:
        raise ValueError(f"{name} of shape {w.shape} does not match the prompt batch {batch}") from None


def check_params(V, W, d: int) -> tuple[np.ndarray, np.ndarray]:
    """LSA parameters ``V``, ``W`` as finite float64 ``D x D`` arrays, ``D = 2d + 2``."""
    D = Layout(d).D
    V = float_array("V", V, min_ndim=2)
    W = float_array("W", W, min_ndim=2)
    for name, M in (("V", V), ("W", W)):
        if M.shape != (D, D):
            raise ValueError(f"{name} must be {D} x {D} (D = 2d + 2, d = {d}), got shape {M.shape}")
    return V, W


def check_sigma(sigma, d: int) -> tuple[np.ndarray | None, np.ndarray | None]:
    """``(Sigma, L)`` with ``L L^T = Sigma`` (Cholesky) for a d x d symmetric positive definite
    ``sigma``; ``(None, None)`` for ``sigma=None`` (Sigma = I).  Symmetry is checked to 1e-12
    relative and then enforced exactly."""
    if sigma is None:
        return None, None
    S = float_array("sigma", sigma, min_ndim=2)
    if S.shape != (d, d):
        raise ValueError(f"sigma must be {d} x {d}, got shape {S.shape}")
    if np.max(np.abs(S - S.T)) > 1e-12 * max(1.0, np.max(np.abs(S))):
        raise ValueError("sigma must be symmetric")
    S = (S + S.T) / 2
    try:
        L = np.linalg.cholesky(S)
    except np.linalg.LinAlgError:
        raise ValueError("sigma must be positive definite") from None
    return S, L


def check_seed(seed) -> np.random.Generator:
    """A ``numpy.random.Generator`` from an explicit seed: a non-negative int, a
    ``numpy.random.SeedSequence`` or a Generator (used as is).  ``None`` is refused: every
    random result of the toolkit must be reproducible."""
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, np.random.SeedSequence):
        return np.random.default_rng(seed)
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise ValueError(f"seed must be an int >= 0 or a numpy.random.Generator, got {seed!r}")
    return np.random.default_rng(check_int("seed", seed, 0))
