"""The constructed transformers' parameters as float64 arrays, evaluated from ``theory``.

Nothing here is typed in: ``gd_params`` lambdifies ``theory.gd_transformer_params`` (Theorem
3.2, docs/theory.md section 4) in a symbolic step ``eta``; ``nocot_params`` evaluates
``theory.nocot_params`` (Theorem 3.1, docs/theory.md section 5).
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import sympy

import theory
from theory.validation import check_int, check_positive_finite

from .checks import check_sigma


@lru_cache(maxsize=None)
def _gd_params_function(d: int):
    eta = sympy.Symbol("eta", positive=True)
    V, W = theory.gd_transformer_params(d, eta)
    return sympy.lambdify(eta, (V, W), modules="numpy")


def gd_params(d: int, eta: float) -> tuple[np.ndarray, np.ndarray]:
    """Theorem 3.2's ``(V, W)`` as float64 ``D x D`` arrays (``D = 2d + 2``): ``V31 = -eta I``,
    ``W13 = I``, ``W24 = -1``, every other entry 0 -- read off ``theory.gd_transformer_params``.

    >>> V, W = gd_params(1, 0.25)
    >>> V.tolist()
    [[0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0], [-0.25, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]
    >>> W.tolist()
    [[0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, -1.0], [0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]
    """
    d = check_int("d", d)
    eta = check_positive_finite("eta", eta)
    V, W = _gd_params_function(d)(eta)
    return np.array(V, dtype=np.float64), np.array(W, dtype=np.float64)


def nocot_params(d: int, n: int, sigma=None) -> tuple[np.ndarray, np.ndarray]:
    """Theorem 3.1's best no-CoT ``(V, W)`` as float64 arrays: ``V31 = -Gamma^{-1}``,
    ``W13 = I``, ``W24 = -1`` with ``Gamma = (1 + 1/n) Sigma + tr(Sigma)/n I`` (docs/theory.md
    section 5), evaluated from ``theory.nocot_params``.  ``sigma=None`` is ``Sigma = I``, for
    which ``V31 = -n/(n + d + 1) I`` exactly rounded; a float ``sigma`` is carried through sympy
    at float64 precision.

    >>> V, W = nocot_params(10, 20)
    >>> float(V[11, 0]) == -20 / 31, float(W[0, 11]), float(W[10, 21])     # V31, W13, W24
    (True, 1.0, -1.0)
    """
    d = check_int("d", d)
    n = check_int("n", n)
    sigma, _ = check_sigma(sigma, d)
    Sigma = None if sigma is None else sympy.Matrix(sigma)
    V, W = theory.nocot_params(d, n, Sigma)
    return np.array(V.tolist(), dtype=np.float64), np.array(W.tolist(), dtype=np.float64)
