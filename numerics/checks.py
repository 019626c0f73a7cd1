"""Argument checks for arrays, seeds and covariances (numerics' counterpart of theory.validation).

Scalars go through ``theory.validation`` (``check_int``, ``check_positive_finite``); the helpers
here cover what theory has no notion of: float64 arrays of given shapes, a covariance Sigma and a
seed.  Each raises one ``ValueError`` naming the parameter.  ``check_sigma`` is the one validation
of a numeric covariance for the whole toolkit (symmetric positive semi-definite, singular allowed;
docs/theory.md section 10); ``covariance_root`` is its public face.
"""
from __future__ import annotations

import numbers

import numpy as np

from theory import Layout
from theory.validation import check_int


def float_array(name: str, value, *, min_ndim: int = 0) -> np.ndarray:
    """``value`` as a finite float64 array with at least ``min_ndim`` axes, else ValueError.
    Strings and complex numbers are refused (numpy would parse ``"1.5"`` or drop an imaginary
    part).

    >>> float_array("X", [[1, 2]]).dtype
    dtype('float64')
    >>> float_array("X", "1.5")
    Traceback (most recent call last):
    ...
    ValueError: X must be an array of real numbers, got str
    """
    try:
        raw = np.asarray(value)
        if raw.dtype.kind in "USVcmM":
            raise TypeError
        a = np.asarray(raw, dtype=np.float64)
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


#: Symmetry tolerance of a covariance: ``max |Sigma - Sigma^T| <= SYMMETRY_RTOL max(1, max |Sigma|)``.
SYMMETRY_RTOL = 1e-12
#: PSD tolerance of a covariance: eigenvalues ``>= -PSD_TOL max(1, ||Sigma||)`` count as >= 0.
PSD_TOL = 1e-10


def check_sigma(sigma, d: int, name: str = "sigma") -> tuple[np.ndarray | None, np.ndarray | None]:
    """The toolkit's one validation of a numeric covariance ``Sigma`` of ``x ~ N(0, Sigma)``
    (docs/theory.md sections 1, 7 and 10): ``(Sigma, root)`` for a ``d x d`` symmetric positive
    semi-definite ``sigma`` (array-like; singular allowed: x confined to a subspace), ``(None,
    None)`` for ``sigma=None`` (``Sigma = I``).  Every refusal is one ``ValueError`` naming the
    parameter ``name``.

    * symmetric: ``max |Sigma - Sigma^T| <= SYMMETRY_RTOL max(1, max |Sigma|)``
      (``SYMMETRY_RTOL = 1e-12``); the returned ``Sigma`` is ``(Sigma + Sigma^T) / 2``;
    * positive semi-definite: eigenvalues (``numpy.linalg.eigh``; a diagonal ``Sigma`` is read
      off exactly) ``>= -PSD_TOL max(1, ||Sigma||)`` (``PSD_TOL = 1e-10``, ``||.||`` the spectral
      norm);
    * ``root = Q diag(sqrt(lambda)) Q^T``, the symmetric PSD square root ``Sigma^{1/2}``, with the
      eigenvalues at or below round-off level (``lambda <= 10 d eps ||Sigma||``, which includes
      the tolerated negative ones) set to exactly 0.  ``eps`` is float64's machine epsilon, or
      the input's when it is a coarser float array (float32, float16), which also widens the two
      tolerances above to ``10 eps`` and ``10 d eps``.  ``root root^T = Sigma`` to rounding, so
      ``X = root G`` (``G`` standard normal) has covariance ``Sigma``; for a singular ``Sigma``
      the columns of ``X`` lie in ``range(Sigma)`` to float64 precision.  A diagonal ``Sigma``
      gives ``diag(sqrt(Sigma_jj))``, its Cholesky factor, exactly.  Cost ``O(d^3)`` once.

    >>> S, root = check_sigma([[1.0, 1.0], [1.0, 1.0]], 2)        # singular: x_1 = x_2
    >>> bool(np.allclose(root @ root.T, S)), int(np.linalg.matrix_rank(root))
    (True, 1)
    >>> check_sigma([[1.0, 0.0], [0.0, -0.5]], 2)
    Traceback (most recent call last):
    ...
    ValueError: sigma must be positive semi-definite, smallest eigenvalue -0.5
    """
    if sigma is None:
        return None, None
    S, lam, Q = _covariance_eigen(sigma, d, name)
    if Q is None:
        return S, np.diag(np.sqrt(lam))
    root = (Q * np.sqrt(lam)) @ Q.T
    return S, (root + root.T) / 2


def _covariance_eigen(sigma, d: int, name: str):
    """``check_sigma``'s checks; returns ``(Sigma, lambda, Q)``: the symmetrised Sigma, its
    eigenvalues with those at round-off level set to 0, and its eigenvectors (``Q = None`` for a
    diagonal Sigma, whose eigenvectors are the axes)."""
    d = check_int("d", d)
    S = float_array(name, sigma)
    if S.shape != (d, d):
        raise ValueError(f"{name} must be {d} x {d}, got shape {S.shape}")
    eps = _input_eps(sigma)
    asymmetry = float(np.max(np.abs(S - S.T)))
    if asymmetry > max(SYMMETRY_RTOL, 10 * eps) * max(1.0, float(np.max(np.abs(S)))):
        raise ValueError(f"{name} must be symmetric, got max |Sigma_ij - Sigma_ji| = {asymmetry:.3g}")
    S = (S + S.T) / 2
    diagonal = not np.any(S - np.diag(np.diag(S)))
    if diagonal:
        lam, Q = np.diag(S).copy(), None
    else:
        lam, Q = np.linalg.eigh(S)
    norm = float(np.max(np.abs(lam)))
    smallest = float(np.min(lam))
    if smallest < -max(PSD_TOL, 10 * d * eps) * max(1.0, norm):
        raise ValueError(f"{name} must be positive semi-definite, smallest eigenvalue {smallest:.6g}")
    lam[lam <= 10 * d * eps * norm] = 0.0
    return S, lam, Q


def _input_eps(value) -> float:
    """Machine epsilon of ``value``'s floating dtype when coarser than float64 (a float32 array
    is rounded at 6e-8 relative), else float64's."""
    try:
        dtype = np.dtype(getattr(value, "dtype", np.float64))
    except TypeError:
        return float(np.finfo(np.float64).eps)
    if dtype.kind == "f" and dtype.itemsize < 8:
        return float(np.finfo(dtype).eps)
    return float(np.finfo(np.float64).eps)


def covariance_root(sigma, d: int, *, name: str = "sigma") -> np.ndarray | None:
    """``Sigma^{1/2}``, the symmetric positive semi-definite square root of a ``d x d``
    covariance (``check_sigma``: symmetric PSD, singular allowed, one ``ValueError`` naming
    ``name`` otherwise), as a float64 array; ``None`` for ``sigma=None`` (``Sigma = I``).
    Prompts ``X = root @ G`` with ``G`` standard normal have columns ``x ~ N(0, Sigma)``
    (docs/theory.md sections 1 and 10).

    >>> covariance_root([[4.0, 0.0], [0.0, 0.0]], 2).tolist()
    [[2.0, 0.0], [0.0, 0.0]]
    >>> covariance_root(np.eye(3), 2, name="ood_sigmas['wide']")
    Traceback (most recent call last):
    ...
    ValueError: ood_sigmas['wide'] must be 2 x 2, got shape (3, 3)
    """
    return check_sigma(sigma, d, name)[1]


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
