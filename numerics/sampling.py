"""Random prompts and their Gram matrices ``S = X X^T / n`` (docs/theory.md sections 1, 7 and 10).

``w* ~ N(0, I_d)``, ``x_i ~ N(0, Sigma)`` i.i.d., ``y_i = <w*, x_i>``; ``Sigma`` any symmetric
positive semi-definite matrix (``numerics.checks.check_sigma``), singular allowed: then every
``x_i`` lies in ``range(Sigma)``.  ``R = Sigma^{1/2}`` below is the symmetric PSD square root
(``numerics.covariance_root``), ``R R^T = Sigma``.  Losses of GD and of any
LSA parameters depend on a prompt only through ``S`` and ``w*`` (``X y / n = S w*``,
``y^T y / n = w*^T S w*``), so Monte Carlo can draw ``S`` directly:

* ``"bartlett"`` (needs ``n >= d``): ``X X^T`` has the law of ``R A A^T R`` with
  ``A`` lower triangular, ``A_ii = sqrt(chi^2_{n - i})`` (``i = 0 .. d-1``) and standard
  normals below the diagonal (Bartlett decomposition of the Wishart law).  ``d(d+1)/2`` draws
  instead of ``d n``.
* ``"direct"``: draw ``X = R G`` with ``G`` standard normal ``d x n`` and form ``X X^T / n``.

Label noise (``noise_var = s^2 > 0``, docs/theory.md section 16): ``y_i = <w*, x_i> + eps_i``,
``eps_i ~ N(0, s^2)``; a prompt then also needs ``X eps / n`` and ``eps^T eps / n``, so the Gram
method is "direct" (``X`` and ``eps`` drawn, in that order after ``w*``).

``"auto"`` takes Bartlett when ``n >= d`` and there is no noise; tests/numerics/test_montecarlo.py checks that
both have the same distribution (tests/numerics/test_covariance.py also for a singular
Sigma).  Costs per prompt: ``O(d^2 n)`` direct, ``O(d^3)`` Bartlett.
"""
from __future__ import annotations

import numpy as np

from theory.validation import check_int, check_nonnegative_finite

from .checks import check_seed, covariance_root

GRAM_METHODS = ("auto", "bartlett", "direct")


def sample_prompts(d: int, n: int, size: int, seed, *, sigma=None, noise_var: float = 0.0):
    """``size`` prompts ``(X, y, w_star)`` of shapes ``(size, d, n)``, ``(size, n)``,
    ``(size, d)``: ``w* ~ N(0, I)``, columns of ``X`` i.i.d. ``N(0, Sigma)`` (``X = R G``,
    ``R = Sigma^{1/2}``; ``sigma=None``: identity; singular ``Sigma``: ``X`` in ``range(Sigma)``),
    ``y = X^T w*`` plus, with ``noise_var = s^2 > 0``, noise ``eps ~ N(0, s^2 I_n)`` drawn last
    (docs/theory.md section 16).  ``seed``: an int or a ``numpy.random.Generator``.

    >>> X, y, w = sample_prompts(3, 5, 2, seed=0)
    >>> X.shape, y.shape, w.shape, bool(abs(y - (w[:, None, :] @ X)[:, 0]).max() == 0)
    ((2, 3, 5), (2, 5), (2, 3), True)
    """
    d = check_int("d", d)
    n = check_int("n", n)
    size = check_int("size", size, 0)
    rng = check_seed(seed)
    root = covariance_root(sigma, d)
    X = rng.standard_normal((size, d, n))
    if root is not None:
        X = root @ X
    w_star = rng.standard_normal((size, d))
    y = (w_star[:, None, :] @ X)[:, 0, :]
    if check_nonnegative_finite("noise_var", noise_var):
        y = y + np.sqrt(noise_var) * rng.standard_normal((size, n))
    return X, y, w_star


def sample_gram(d: int, n: int, size: int, seed, *, sigma=None, method: str = "auto") -> np.ndarray:
    """``size`` independent ``S = X X^T / n``, shape ``(size, d, d)``, columns of ``X`` i.i.d.
    ``N(0, Sigma)`` (``sigma=None``: identity; any symmetric PSD ``Sigma``), by ``method``
    "bartlett", "direct" or "auto" (module docstring).

    >>> S = sample_gram(4, 6, 3, seed=1)
    >>> S.shape, bool(np.allclose(S, np.swapaxes(S, 1, 2)))
    ((3, 4, 4), True)
    """
    d = check_int("d", d)
    n = check_int("n", n)
    size = check_int("size", size, 0)
    rng = check_seed(seed)
    return _gram(d, n, size, rng, covariance_root(sigma, d), _check_method(method, d, n))


def _check_method(method, d: int, n: int, noise_var: float = 0.0) -> str:
    if method not in GRAM_METHODS:
        raise ValueError(f"method must be one of {GRAM_METHODS}, got {method!r}")
    if method == "auto":
        return "bartlett" if n >= d and not noise_var else "direct"
    if method == "bartlett" and n < d:
        raise ValueError(f"method 'bartlett' needs n >= d, got d = {d}, n = {n}")
    if method == "bartlett" and noise_var:
        raise ValueError("method 'bartlett' does not draw label noise (it never forms X); use 'direct'")
    return method


def _gram(d: int, n: int, size: int, rng: np.random.Generator, root, method: str) -> np.ndarray:
    """Draw ``S`` (``(size, d, d)``); ``root = Sigma^{1/2}`` or None (identity), ``method`` resolved."""
    if method == "direct":
        X = rng.standard_normal((size, d, n))
        if root is not None:
            X = root @ X
        return X @ np.swapaxes(X, -1, -2) / n
    A = np.zeros((size, d, d))
    below = rng.standard_normal((size, d * (d - 1) // 2))
    start = 0
    for i in range(1, d):                                   # row i: i normals left of the diagonal
        A[:, i, :i] = below[:, start:start + i]
        start += i
    A.reshape(size, d * d)[:, ::d + 1] = np.sqrt(rng.chisquare(n - np.arange(d), size=(size, d)))
    if root is not None:
        A = root @ A
    return A @ np.swapaxes(A, -1, -2) / n


def _gram_and_task(d: int, n: int, size: int, rng: np.random.Generator, root, method: str,
                   noise_var: float = 0.0):
    """One Monte Carlo chunk: ``(S, w_star, Xeps, eps_sq)``; the order of draws is fixed (S first,
    then w*).  Without noise ``Xeps`` and ``eps_sq`` are None; with ``noise_var = s^2 > 0``
    (``method`` "direct") ``X`` is drawn, then ``w*``, then ``eps ~ N(0, s^2 I_n)``:
    ``Xeps = X eps / n`` (size, d) and ``eps_sq = eps^T eps / n`` (size,)."""
    if not noise_var:
        S = _gram(d, n, size, rng, root, method)
        return S, rng.standard_normal((size, d)), None, None
    X = rng.standard_normal((size, d, n))
    if root is not None:
        X = root @ X
    w_star = rng.standard_normal((size, d))
    eps = np.sqrt(noise_var) * rng.standard_normal((size, n))
    return (X @ np.swapaxes(X, -1, -2) / n, w_star, (X @ eps[:, :, None])[:, :, 0] / n,
            np.einsum("bi,bi->b", eps, eps) / n)


def data_statistic(S, w_star, *, Xeps=None, eps_sq=None) -> np.ndarray:
    """The data columns' statistic ``Z_data Z_data^T / n`` on the rows (x, y):
    ``[[S, S w*], [w*^T S, w*^T S w*]]``, shape ``(..., d + 1, d + 1)``, from ``S = X X^T / n``
    ``(..., d, d)`` and ``w*`` ``(..., d)``: with ``y = X^T w*``, ``X y / n = S w*`` and
    ``y^T y / n = w*^T S w*`` (docs/theory.md sections 1 and 3).  Every pass of the LSA reads a
    prompt only through it; the torch passes' copy (``training.data.gram_statistic``) is tested
    against this one.  Label noise (docs/theory.md section 16): ``Xeps = X eps / n`` (..., d) and
    ``eps_sq = eps^T eps / n`` (...) give ``X y / n = S w* + Xeps`` and ``y^T y / n = w*^T S w* +
    2 w*^T Xeps + eps_sq``.

    >>> data_statistic(np.eye(2), np.array([1.0, 2.0]))
    array([[1., 0., 1.],
           [0., 1., 2.],
           [1., 2., 5.]])
    """
    S = np.asarray(S, dtype=np.float64)
    w_star = np.asarray(w_star, dtype=np.float64)
    d = w_star.shape[-1]
    Sw = np.matmul(S, w_star[..., None])[..., 0]
    out = np.empty(w_star.shape[:-1] + (d + 1, d + 1))
    yy = np.einsum("...i,...i->...", w_star, Sw)
    if Xeps is not None:
        Xeps = np.asarray(Xeps, dtype=np.float64)
        yy = yy + 2 * np.einsum("...i,...i->...", w_star, Xeps) + np.asarray(eps_sq, dtype=np.float64)
        Sw = Sw + Xeps
    out[..., :d, :d] = S
    out[..., :d, d] = Sw
    out[..., d, :d] = Sw
    out[..., d, d] = yy
    return out
