"""Random prompts and their Gram matrices ``S = X X^T / n`` (docs/theory.md sections 1 and 7).

``w* ~ N(0, I_d)``, ``x_i ~ N(0, Sigma)`` i.i.d., ``y_i = <w*, x_i>``.  Losses of GD and of any
LSA parameters depend on a prompt only through ``S`` and ``w*`` (``X y / n = S w*``,
``y^T y / n = w*^T S w*``), so Monte Carlo can draw ``S`` directly:

* ``"bartlett"`` (needs ``n >= d``): ``X X^T`` has the law of ``L A A^T L^T`` with ``L L^T = Sigma``
  and ``A`` lower triangular, ``A_ii = sqrt(chi^2_{n - i})`` (``i = 0 .. d-1``) and standard
  normals below the diagonal (Bartlett decomposition of the Wishart law).  ``d(d+1)/2`` draws
  instead of ``d n``.
* ``"direct"``: draw ``X = L G`` with ``G`` standard normal ``d x n`` and form ``X X^T / n``.

``"auto"`` takes Bartlett when ``n >= d``; tests/numerics/test_montecarlo.py checks that both
have the same distribution.
"""
from __future__ import annotations

import numpy as np

from theory.validation import check_int

from .checks import check_seed, check_sigma

GRAM_METHODS = ("auto", "bartlett", "direct")


def sample_prompts(d: int, n: int, size: int, seed, *, sigma=None):
    """``size`` prompts ``(X, y, w_star)`` of shapes ``(size, d, n)``, ``(size, n)``,
    ``(size, d)``: ``w* ~ N(0, I)``, columns of ``X`` i.i.d. ``N(0, Sigma)``, ``y = X^T w*``.
    ``seed``: an int or a ``numpy.random.Generator``.

    >>> X, y, w = sample_prompts(3, 5, 2, seed=0)
    >>> X.shape, y.shape, w.shape, bool(abs(y - (w[:, None, :] @ X)[:, 0]).max() == 0)
    ((2, 3, 5), (2, 5), (2, 3), True)
    """
    d = check_int("d", d)
    n = check_int("n", n)
    size = check_int("size", size, 0)
    rng = check_seed(seed)
    _, L = check_sigma(sigma, d)
    X = rng.standard_normal((size, d, n))
    if L is not None:
        X = L @ X
    w_star = rng.standard_normal((size, d))
    y = (w_star[:, None, :] @ X)[:, 0, :]
    return X, y, w_star


def sample_gram(d: int, n: int, size: int, seed, *, sigma=None, method: str = "auto") -> np.ndarray:
    """``size`` independent ``S = X X^T / n``, shape ``(size, d, d)``, columns of ``X`` i.i.d.
    ``N(0, Sigma)`` (``sigma=None``: identity), by ``method`` "bartlett", "direct" or "auto"
    (module docstring).

    >>> S = sample_gram(4, 6, 3, seed=1)
    >>> S.shape, bool(np.allclose(S, np.swapaxes(S, 1, 2)))
    ((3, 4, 4), True)
    """
    d = check_int("d", d)
    n = check_int("n", n)
    size = check_int("size", size, 0)
    rng = check_seed(seed)
    _, L = check_sigma(sigma, d)
    return _gram(d, n, size, rng, L, _check_method(method, d, n))


def _check_method(method, d: int, n: int) -> str:
    if method not in GRAM_METHODS:
        raise ValueError(f"method must be one of {GRAM_METHODS}, got {method!r}")
    if method == "auto":
        return "bartlett" if n >= d else "direct"
    if method == "bartlett" and n < d:
        raise ValueError(f"method 'bartlett' needs n >= d, got d = {d}, n = {n}")
    return method


def _gram(d: int, n: int, size: int, rng: np.random.Generator, L, method: str) -> np.ndarray:
    """Draw ``S`` (``(size, d, d)``); ``L`` a Cholesky factor of Sigma or None, ``method`` resolved."""
    if method == "direct":
        X = rng.standard_normal((size, d, n))
        if L is not None:
            X = L @ X
        return X @ np.swapaxes(X, -1, -2) / n
    A = np.zeros((size, d, d))
    below = rng.standard_normal((size, d * (d - 1) // 2))
    start = 0
    for i in range(1, d):                                   # row i: i normals left of the diagonal
        A[:, i, :i] = below[:, start:start + i]
        start += i
    A.reshape(size, d * d)[:, ::d + 1] = np.sqrt(rng.chisquare(n - np.arange(d), size=(size, d)))
    if L is not None:
        A = L @ A
    return A @ np.swapaxes(A, -1, -2) / n


def _gram_and_task(d: int, n: int, size: int, rng: np.random.Generator, L, method: str):
    """One Monte Carlo chunk: ``(S, w_star)``; the order of draws is fixed (S first)."""
    S = _gram(d, n, size, rng, L, method)
    return S, rng.standard_normal((size, d))
