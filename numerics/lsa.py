"""The one-layer linear transformer (LSA) in float64: embedding, forward pass, CoT and looped
rollouts (docs/theory.md section 3).

``lsa_forward`` is the formula ``f(Z) = Z + V Z (Z^T W Z) / n`` written out literally; it is the
reference.  The rollouts come in two forms that must agree (tests/numerics/test_lsa.py):

* ``cot_rollout_reference`` / ``looped_rollout_reference`` call ``lsa_forward`` on the growing
  (or in-place updated) token matrix, exactly as section 3 describes;
* ``cot_rollout`` / ``looped_rollout`` carry only the ``D x D`` statistic ``G = Z Z^T / n`` and
  the last column ``c``.  The last column of ``f(Z)`` is ``c + V G W c``, so one CoT step costs
  ``O(D^2)`` and appending the column ``c'`` is ``G += c' c'^T / n`` (kept as a separate sum
  over the generated columns, which only touch the (w, one) block).  In the looped model every
  column is mapped by ``M = I + V G W`` (``f(Z) = M Z``), so ``c <- M c`` and ``G <- M G M^T``.

Every function is batched over leading axes of ``X`` (shape ``(..., d, n)``).
"""
from __future__ import annotations

import numpy as np

from theory import Layout
from theory.validation import check_int

from .checks import check_params, check_prompt, check_w, float_array


def embed(X, y, w0=None) -> np.ndarray:
    """The prompt matrix ``Z_0 = [[X, 0], [y^T, 0], [0, w_0], [0, 1]]``, ``D x (n + 1)`` with
    ``D = 2d + 2`` and rows in ``theory.Layout(d)`` order (docs/theory.md section 3).

    ``X`` is ``(..., d, n)``, ``y`` is ``(..., n)``, ``w0`` is ``(..., d)`` or None (``w_0 = 0``).

    >>> embed([[1.0, 2.0]], [3.0, 4.0], [5.0])
    array([[1., 2., 0.],
           [3., 4., 0.],
           [0., 0., 5.],
           [0., 0., 1.]])
    """
    X, y = check_prompt(X, y)
    d, n = X.shape[-2:]
    batch = X.shape[:-2]
    w0 = check_w("w0", w0, d, batch)
    L = Layout(d)
    Z = np.zeros(batch + (L.D, n + 1))
    Z[..., L.x, :n] = X
    Z[..., L.y, :n] = y[..., None, :]
    Z[..., L.w, n] = w0
    Z[..., L.one, n] = 1.0
    return Z


def lsa_forward(Z, V, W, n: int) -> np.ndarray:
    """One LSA layer ``f(Z; V, W) = Z + V Z (Z^T W Z) / n`` (docs/theory.md section 3), literally.

    ``Z`` is ``(..., D, N)`` (any number ``N`` of columns: data and CoT columns), ``V`` and ``W``
    are ``D x D`` and ``n`` is the number of examples (the fixed normalisation).

    >>> from numerics import gd_params
    >>> Z = embed([[2.0]], [4.0])                  # x = 2, y = 4 (w* = 2), w_0 = 0
    >>> lsa_forward(Z, *gd_params(1, 0.125), n=1)[:, -1]   # w_1 = 0.125 * x y = 1
    array([0., 0., 1., 1.])
    """
    Z = float_array("Z", Z, min_ndim=2)
    D = Z.shape[-2]
    if D < 4 or D % 2:
        raise ValueError(f"Z must have D = 2d + 2 >= 4 rows, got shape {Z.shape}")
    V, W = check_params(V, W, (D - 2) // 2)
    return _lsa_forward(Z, V, W, check_int("n", n))


def _lsa_forward(Z, V, W, n):
    """``lsa_forward`` without the argument checks (the rollouts let overflow propagate)."""
    return Z + V @ Z @ (np.swapaxes(Z, -1, -2) @ W @ Z) / n


def _cot_from_gram(G, c, V, W, n, k, layout, *, all_iterates=True):
    """CoT generation from ``G = Z_0 Z_0^T / n`` (``(B, D, D)``, not modified) and the last column
    ``c`` (``(B, D)``).  Returns the w-blocks ``(B, k + 1, d)`` (or only the last, ``(B, d)``).

    The generated columns ``(0, 0, w_j, 1)`` only touch the trailing (w, one) block of the Gram
    statistic, so their sum ``H = sum_j c_j c_j^T / n`` is kept as a separate contiguous
    ``(B, d + 1, d + 1)`` array: ``(G + H) u = G u + [0; H u_tail]``."""
    B = c.shape[0]
    tail = slice(layout.w.start, layout.one.stop)         # rows/cols (w, one) of the CoT columns
    VwT = np.ascontiguousarray(V[layout.w].T)             # only the w-rows of V reach w_{i+1}
    WT = np.ascontiguousarray(W.T)
    H = np.zeros((B, layout.d + 1, layout.d + 1))
    w = c[:, layout.w].copy()
    iterates = np.empty((B, k + 1, layout.d)) if all_iterates else None
    if all_iterates:
        iterates[:, 0] = w
    for i in range(k):
        u = np.dot(c, WT)                                 # W c
        g = np.matmul(G, u[:, :, None])[:, :, 0]          # (G + H) W c
        g[:, tail] += np.matmul(H, u[:, tail, None])[:, :, 0]
        w = c[:, layout.w] + np.dot(g, VwT)               # w-block of c + V (G + H) W c
        if all_iterates:
            iterates[:, i + 1] = w
        if i + 1 < k:
            c = np.zeros((B, layout.D))
            c[:, layout.w] = w
            c[:, layout.one] = 1.0
            ct = c[:, tail]
            H += ct[:, :, None] * (ct / n)[:, None, :]
    return iterates if all_iterates else w


def _looped_from_gram(G, c, V, W, k, layout, *, all_iterates=True):
    """Looped model from ``G = Z Z^T / n`` and the last column ``c``: ``M = I + V G W``,
    ``c <- M c``, ``G <- M G M^T``.  Returns ``(B, k + 1, d)`` (or the last w-block)."""
    B = c.shape[0]
    eye = np.eye(layout.D)
    iterates = np.empty((B, k + 1, layout.d)) if all_iterates else None
    if all_iterates:
        iterates[:, 0] = c[:, layout.w]
    for i in range(k):
        M = eye + V @ G @ W
        c = np.matmul(M, c[:, :, None])[:, :, 0]
        if all_iterates:
            iterates[:, i + 1] = c[:, layout.w]
        if i + 1 < k:
            G = M @ G @ np.swapaxes(M, -1, -2)
    return iterates if all_iterates else c[:, layout.w]


def _prepare(X, y, V, W, k, w0):
    X, y = check_prompt(X, y)
    d, n = X.shape[-2:]
    V, W = check_params(V, W, d)
    k = check_int("k", k, 0)
    batch = X.shape[:-2]
    Z = embed(X, y, check_w("w0", w0, d, batch)).reshape((-1, 2 * d + 2, n + 1))
    return Z, V, W, k, n, batch, Layout(d)


def cot_rollout(X, y, V, W, k: int, w0=None) -> np.ndarray:
    """Autoregressive CoT generation (docs/theory.md section 3): from ``Z_0 = embed(X, y, w0)``, the
    model writes ``w_{i+1}`` = w-block of the last column of ``f(Z_i)`` and appends the column
    ``(0, 0, w_{i+1}, 1)``.  Returns the iterates ``w_0 .. w_k``, shape ``(..., k + 1, d)``.

    Uses ``G = Z Z^T / n`` (module docstring): ``O(D^2)`` per generated step.  Equal to
    ``cot_rollout_reference`` up to rounding.  With ``gd_params(d, eta)`` it is k-step GD
    (Theorem 3.2).

    >>> from numerics import gd_params
    >>> cot_rollout([[2.0]], [4.0], *gd_params(1, 0.125), k=3)[:, 0]
    array([0.  , 1.  , 1.5 , 1.75])
    """
    Z, V, W, k, n, batch, layout = _prepare(X, y, V, W, k, w0)
    G = Z @ np.swapaxes(Z, -1, -2) / n
    out = _cot_from_gram(G, Z[:, :, -1], V, W, n, k, layout)
    return out.reshape(batch + (k + 1, layout.d))


def cot_rollout_reference(X, y, V, W, k: int, w0=None) -> np.ndarray:
    """``cot_rollout`` by the definition: ``lsa_forward`` on the growing ``Z_i`` (``D x (n+1+i)``),
    the new column ``(0, 0, w_{i+1}, 1)`` appended each step.  Shape ``(..., k + 1, d)``."""
    Z, V, W, k, n, batch, layout = _prepare(X, y, V, W, k, w0)
    iterates = [Z[:, layout.w, -1]]
    for _ in range(k):
        w = _lsa_forward(Z, V, W, n)[:, layout.w, -1]
        iterates.append(w)
        column = np.zeros((Z.shape[0], layout.D, 1))
        column[:, layout.w, 0] = w
        column[:, layout.one, 0] = 1.0
        Z = np.concatenate([Z, column], axis=-1)
    return np.stack(iterates, axis=1).reshape(batch + (k + 1, layout.d))


def looped_rollout(X, y, V, W, k: int, w0=None) -> np.ndarray:
    """The looped model (docs/theory.md section 3): ``Z <- f(Z)`` applied ``k`` times to ``Z_0`` in
    place (no new columns); the estimate after ``i`` loops is the w-block of the last column.
    Returns the estimates after ``0 .. k`` loops, shape ``(..., k + 1, d)``.

    Uses ``G = Z Z^T / n`` and ``f(Z) = (I + V G W) Z`` (module docstring); equal to
    ``looped_rollout_reference`` up to rounding.  With ``gd_params(d, eta)`` the data columns
    never change and the loops are k-step GD.

    >>> from numerics import gd_params
    >>> looped_rollout([[2.0]], [4.0], *gd_params(1, 0.125), k=3)[:, 0]
    array([0.  , 1.  , 1.5 , 1.75])
    """
    Z, V, W, k, n, batch, layout = _prepare(X, y, V, W, k, w0)
    G = Z @ np.swapaxes(Z, -1, -2) / n
    out = _looped_from_gram(G, Z[:, :, -1], V, W, k, layout)
    return out.reshape(batch + (k + 1, layout.d))


def looped_rollout_reference(X, y, V, W, k: int, w0=None) -> np.ndarray:
    """``looped_rollout`` by the definition: ``Z <- lsa_forward(Z, V, W, n)`` k times."""
    Z, V, W, k, n, batch, layout = _prepare(X, y, V, W, k, w0)
    iterates = [Z[:, layout.w, -1]]
    for _ in range(k):
        Z = _lsa_forward(Z, V, W, n)
        iterates.append(Z[:, layout.w, -1])
    return np.stack(iterates, axis=1).reshape(batch + (k + 1, layout.d))
