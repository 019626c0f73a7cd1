"""Gradient descent on the in-context least squares in float64, two independent routes
(docs/theory.md section 2): the recursion on the data, and the closed form through the
eigendecomposition of ``S = X X^T / n``.
"""
from __future__ import annotations

import numpy as np
import scipy.linalg

from theory.validation import check_int, check_positive_finite

from .checks import check_prompt, check_w, float_array


def gd_iterates(X, y, eta: float, k: int, w0=None) -> np.ndarray:
    """Plain GD ``w_{i+1} = w_i - eta X (X^T w_i - y) / n`` from ``w_0`` (default 0) on
    ``L(w) = (1/2n) sum_i (<w, x_i> - y_i)^2`` (docs/theory.md section 2).  ``X`` is ``(..., d, n)``,
    ``y`` is ``(..., n)``; returns ``w_0 .. w_k``, shape ``(..., k + 1, d)``.

    >>> gd_iterates([[2.0]], [4.0], 0.125, 3)[:, 0]
    array([0.  , 1.  , 1.5 , 1.75])
    """
    X, y = check_prompt(X, y)
    eta = check_positive_finite("eta", eta)
    k = check_int("k", k, 0)
    d, n = X.shape[-2:]
    batch = X.shape[:-2]
    w = check_w("w0", w0, d, batch)
    out = np.empty(batch + (k + 1, d))
    out[..., 0, :] = w
    for i in range(k):
        residual = (w[..., None, :] @ X)[..., 0, :] - y           # X^T w - y
        w = w - eta * (X @ residual[..., None])[..., 0] / n
        out[..., i + 1, :] = w
    return out


def gd_closed_form(X, w_star, eta: float, k: int) -> np.ndarray:
    """GD iterates from ``w_0 = 0`` by the closed form ``w_i = (I - (I - eta S)^i) w*``
    (docs/theory.md section 2), through ``scipy.linalg.eigh`` of ``S = X X^T / n``: with
    ``S = Q diag(s) Q^T``, ``w_i = Q diag(1 - (1 - eta s)^i) Q^T w*``.  ``X`` is ``(..., d, n)``,
    ``w_star`` is ``(..., d)``; returns ``(..., k + 1, d)``.  Independent of ``gd_iterates``:
    no recursion and no labels.

    >>> gd_closed_form([[2.0]], [2.0], 0.125, 3)[:, 0]
    array([0.  , 1.  , 1.5 , 1.75])
    """
    X = float_array("X", X, min_ndim=2)
    eta = check_positive_finite("eta", eta)
    k = check_int("k", k, 0)
    d, n = X.shape[-2:]
    batch = X.shape[:-2]
    w_star = float_array("w_star", w_star, min_ndim=1)
    if w_star.shape != batch + (d,):
        raise ValueError(f"w_star must have shape {batch + (d,)} (X is {X.shape}), got {w_star.shape}")
    S = X @ np.swapaxes(X, -1, -2) / n
    powers = np.arange(k + 1)[:, None]
    out = np.empty(batch + (k + 1, d))
    for index in np.ndindex(*batch):
        s, Q = scipy.linalg.eigh(S[index])
        coefficients = Q.T @ w_star[index]
        factors = 1.0 - (1.0 - eta * s)[None, :] ** powers        # (k + 1, d)
        out[index] = (factors * coefficients) @ Q.T
    return out
