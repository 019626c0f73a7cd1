"""The constructed transformers' parameters as float64 arrays, evaluated from ``theory``.

Nothing here is typed in: ``gd_params`` lambdifies ``theory.gd_transformer_params`` (Theorem
3.2, docs/theory.md section 4) in a symbolic step ``eta``; ``nocot_params`` evaluates
``theory.nocot_params`` (Theorem 3.1, docs/theory.md section 5) exactly, at the float covariance
read by ``exact_covariance``.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import sympy

import theory
from theory.validation import check_int, check_positive_finite, exact_real, check_nonnegative_finite

from .checks import _covariance_eigen


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


def exact_covariance(sigma, d: int, *, name: str = "sigma") -> sympy.Matrix | None:
    """A float covariance as an exact sympy Matrix that theory's exact functions accept
    (``theory.validation.check_covariance`` judges PSD exactly, and a float Sigma that is PSD only
    to rounding would be refused, or have the wrong rank; docs/theory.md section 10).  ``sigma``
    is validated by ``check_sigma`` (symmetric PSD to rounding, singular allowed, one
    ``ValueError`` naming ``name``); the result is ``Q_r diag(lambda_r) Q_r^T`` with its
    eigenvectors ``Q_r`` and positive eigenvalues ``lambda_r`` (round-off ones dropped, as
    ``check_sigma`` does) read as exact rationals by theory's rule (``validation.exact_real``): exactly symmetric positive semi-definite, of
    rank ``r`` (for a diagonal Sigma: its clipped diagonal, exactly), and equal to Sigma to
    rounding.  ``None`` for ``sigma=None`` (``Sigma = I``).  Cost ``O(d^3)`` rational operations.

    >>> exact_covariance([[4.0, 0.0], [0.0, 0.0]], 2)
    Matrix([
    [4, 0],
    [0, 0]])
    >>> exact_covariance([[0.5, 0.5], [0.5, 0.5]], 2).rank()
    1
    """
    if sigma is None:
        return None
    _, lam, Q = _covariance_eigen(sigma, d, name)
    if Q is None:
        return sympy.diag(*[exact_real(name, v) for v in lam])
    keep = [j for j in range(d) if lam[j] > 0]
    F = sympy.Matrix(d, len(keep), lambda i, j: exact_real(name, Q[i, keep[j]]))
    return F * sympy.diag(*[exact_real(name, lam[j]) for j in keep]) * F.T


def _exact_sigma(sigma, d: int, *, nonzero: bool = False) -> sympy.Matrix | None:
    """``exact_covariance``; ``nonzero=True`` refuses ``Sigma = 0`` (for the functions that need
    ``Gamma^{-1}``)."""
    Sigma = exact_covariance(sigma, d)
    if nonzero and Sigma is not None and Sigma.is_zero_matrix:
        raise ValueError("sigma must not be zero: Gamma = 0 has no inverse (x = 0 carries no "
                         "information on w*; every no-CoT model has loss d/2)")
    return Sigma


def nocot_params(d: int, n: int, sigma=None, *, noise_var: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Theorem 3.1's best no-CoT ``(V, W)`` as float64 arrays: ``V31 = -Gamma^{-1}``,
    ``W13 = I``, ``W24 = -1`` with ``Gamma = (1 + 1/n) Sigma + tr(Sigma)/n I`` (docs/theory.md
    section 5), evaluated from ``theory.nocot_params``.  ``sigma=None`` is ``Sigma = I``, for
    which ``V31 = -n/(n + d + 1) I`` exactly rounded.  A ``sigma`` may be any symmetric positive
    semi-definite matrix except 0 (singular allowed, docs/theory.md section 10: Gamma stays
    invertible); theory evaluates it exactly at ``exact_covariance(sigma, d)`` (equal to Sigma to
    rounding), and the result is rounded once.  ``noise_var``: the best model for labels with
    noise of variance ``s^2`` (Gamma gains ``s^2 / n I``, ``theory.nocot_gamma``).

    >>> V, W = nocot_params(10, 20)
    >>> float(V[11, 0]) == -20 / 31, float(W[0, 11]), float(W[10, 21])     # V31, W13, W24
    (True, 1.0, -1.0)
    >>> V, _ = nocot_params(2, 4, [[1.0, 1.0], [1.0, 1.0]])               # singular Sigma
    >>> V[3:5, 0:2].round(4).tolist()                                     # -Gamma^{-1}
    [[-1.1667, 0.8333], [0.8333, -1.1667]]
    """
    d = check_int("d", d)
    n = check_int("n", n)
    Sigma = _exact_sigma(sigma, d, nonzero=True)
    V, W = theory.nocot_params(d, n, Sigma, noise_var=check_nonnegative_finite("noise_var", noise_var))
    return np.array(V.tolist(), dtype=np.float64), np.array(W.tolist(), dtype=np.float64)
