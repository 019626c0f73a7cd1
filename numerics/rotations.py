"""Haar-distributed random orthogonal matrices: the toolkit's one definition (rotated covariances
``Sigma = Q diag(lambda) Q^T`` in tests, strategies and out-of-distribution suites; docs/theory.md
sections 7 and 10).

QR of a standard Gaussian matrix ``A = Q R`` gives a ``Q`` whose law depends on the sign
convention of the QR routine (LAPACK makes ``R_11 = -sign(A_11) ||a_1||``, so ``Q_11 < 0``
always).  Multiplying column ``j`` of ``Q`` by ``sign(R_jj)`` makes the factorisation unique
(``R`` with a positive diagonal), and then ``Q`` is Haar on the orthogonal group ``O(d)``
(Mezzadri, "How to generate random matrices from the classical compact groups", Notices AMS
2007): invariant under ``Q -> U Q`` for every fixed orthogonal ``U``, both determinants equally
likely.  Cost ``O(d^3)`` per matrix.
"""
from __future__ import annotations

import numpy as np

from theory.validation import check_int

from .checks import check_seed, float_array


def haar_orthogonal(A) -> np.ndarray:
    """Haar-distributed orthogonal matrices from standard Gaussian ones: ``A`` of shape
    ``(..., d, d)`` (float64, entries i.i.d. ``N(0, 1)``; e.g. drawn by torch and converted to
    numpy) gives ``Q * sign(diag(R))`` with ``A = Q R`` (QR, batched over the leading axes),
    an array of the same shape (module docstring).  A zero on the diagonal of ``R`` (probability
    0 for Gaussian input) counts as positive.

    >>> A = np.random.default_rng(0).standard_normal((5, 3, 3))
    >>> Q = haar_orthogonal(A)
    >>> Q.shape, bool(np.allclose(Q @ np.swapaxes(Q, -1, -2), np.eye(3), atol=1e-12))
    ((5, 3, 3), True)
    """
    A = float_array("A", A, min_ndim=2)
    if A.shape[-1] != A.shape[-2] or A.shape[-1] < 1:
        raise ValueError(f"A must have shape (..., d, d) with d >= 1, got {A.shape}")
    Q, R = np.linalg.qr(A)
    signs = np.where(np.diagonal(R, axis1=-2, axis2=-1) < 0, -1.0, 1.0)
    return Q * signs[..., None, :]


def random_rotation(d: int, seed) -> np.ndarray:
    """One Haar-distributed ``d x d`` orthogonal matrix (``O(d)``: reflections included, each
    determinant with probability 1/2): ``haar_orthogonal`` of a ``d x d`` standard normal matrix
    drawn from ``seed`` (an int, a ``numpy.random.SeedSequence`` or a ``numpy.random.Generator``).

    >>> Q = random_rotation(4, seed=0)
    >>> bool(np.allclose(Q.T @ Q, np.eye(4), atol=1e-12)), bool(np.array_equal(Q, random_rotation(4, 0)))
    (True, True)
    """
    d = check_int("d", d)
    return haar_orthogonal(check_seed(seed).standard_normal((d, d)))
