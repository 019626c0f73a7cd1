"""Symbolic proofs: one LSA step on a CoT matrix is one GD step (Theorem 3.2), and the GD
closed form (docs/theory.md sections 2 and 4)."""
from __future__ import annotations

import sympy
from sympy import BlockMatrix, Identity, MatrixSymbol, OneMatrix, ZeroMatrix, block_collapse

from .layout import Layout
from .params import gd_transformer_params
from .validation import check_eta_exact


def _symbolic_step_holds() -> bool:
    """Theorem 3.2 with symbolic d, n and i: block matrices of symbolic shapes.

    ``Z_i = [[X, 0, 0], [y^T, 0, 0], [0, W_prev, w], [0, 1^T, 1]]`` with ``X`` d x n, ``y``
    n x 1, ``W_prev`` d x i (the earlier CoT iterates), ``w`` the current iterate.  The last
    column of ``f(Z_i) = Z_i + V Z_i Z_i^T W z_i / n`` must be ``(0, 0, w - eta (X X^T w - X y)/n, 1)``.
    """
    d, n, i = sympy.symbols("d n i", positive=True, integer=True)
    eta = sympy.Symbol("eta", positive=True)
    X = MatrixSymbol("X", d, n)
    y = MatrixSymbol("y", n, 1)
    W_prev = MatrixSymbol("W_prev", d, i)
    w = MatrixSymbol("w", d, 1)
    Z = BlockMatrix([
        [X, ZeroMatrix(d, i), ZeroMatrix(d, 1)],
        [y.T, ZeroMatrix(1, i), ZeroMatrix(1, 1)],
        [ZeroMatrix(d, n), W_prev, w],
        [ZeroMatrix(1, n), OneMatrix(1, i), Identity(1)],
    ])
    z = BlockMatrix([[ZeroMatrix(d, 1)], [ZeroMatrix(1, 1)], [w], [Identity(1)]])
    V, W = gd_transformer_params(d, eta)
    out = block_collapse(z + V * Z * Z.T * W * z / n)
    expected = [ZeroMatrix(d, 1), ZeroMatrix(1, 1), w - eta * (X * X.T * w - X * y) / n, Identity(1)]
    for r in range(4):
        difference = sympy.expand((out.blocks[r, 0] - expected[r]).doit())
        if not (difference == 0 or getattr(difference, "is_ZeroMatrix", False)):
            return False
    return True


def _generic_column_data(d: int):
    """Independent symbols for everything one LSA step on the last CoT column can see.

    With ``z = (0, 0, w, 1)`` the step is ``z + V G W z / n`` where ``G = Z_i Z_i^T`` is
    ``[[A, b, 0, 0], [b^T, c, 0, 0], [0, 0, P + w w^T, q + w], [0, 0, (q + w)^T, m + 1]]``:
    ``A = X X^T`` (symmetric), ``b = X y``, ``c = y^T y``, and ``P``, ``q``, ``m`` the sums
    over the earlier CoT columns.  The data reach an open set of these values, so a
    polynomial identity in independent symbols is equivalent to the identity for all prompts.
    """
    def sym(name, i, j):
        return sympy.Symbol(f"{name}_{min(i, j)}{max(i, j)}")

    A = sympy.Matrix(d, d, lambda i, j: sym("a", i, j))
    P = sympy.Matrix(d, d, lambda i, j: sym("p", i, j))
    b = sympy.Matrix(d, 1, lambda i, _: sympy.Symbol(f"b_{i}"))
    q = sympy.Matrix(d, 1, lambda i, _: sympy.Symbol(f"q_{i}"))
    w = sympy.Matrix(d, 1, lambda i, _: sympy.Symbol(f"w_{i}"))
    c, m = sympy.symbols("c m")
    layout = Layout(d)
    G = sympy.zeros(layout.D, layout.D)
    G[layout.x, layout.x] = A
    G[layout.x, layout.y] = b
    G[layout.y, layout.x] = b.T
    G[layout.y, layout.y] = sympy.Matrix([[c]])
    G[layout.w, layout.w] = P + w * w.T
    G[layout.w, layout.one] = q + w
    G[layout.one, layout.w] = (q + w).T
    G[layout.one, layout.one] = sympy.Matrix([[m + 1]])
    z = sympy.zeros(layout.D, 1)
    z[layout.w, 0] = w
    z[layout.one, 0] = sympy.Matrix([[1]])
    data_symbols = set(A.free_symbols | P.free_symbols | b.free_symbols | q.free_symbols
                       | w.free_symbols | {c, m})
    return layout, G, z, A, b, w, data_symbols


def _concrete_step_size(V: sympy.Matrix, W: sympy.Matrix, eta=None):
    """The step size for which the concrete ``(V, W)`` implement one GD step, or None.

    One step maps ``z = (0, 0, w, 1)`` to ``z + V G W z / n``; GD of step ``eta`` requires
    ``V G W z = (0, 0, -eta (A w - b), 0)`` identically in the data symbols (the ``1/n`` cancels).
    """
    V = sympy.Matrix(V)
    W = sympy.Matrix(W)
    if V.shape != W.shape or V.shape[0] != V.shape[1] or V.shape[0] % 2 or V.shape[0] < 4:
        raise ValueError(f"V and W must be square of the same even size 2d + 2 >= 4, got "
                         f"{V.shape} and {W.shape}")
    d = (V.shape[0] - 2) // 2
    layout, G, z, A, b, w, data_symbols = _generic_column_data(d)
    step = sympy.Symbol("step") if eta is None else eta
    target = sympy.zeros(layout.D, 1)
    target[layout.w, 0] = -step * (A * w - b)
    residual = (V * G * W * z - target).expand()
    equations = []
    for entry in residual:
        if entry != 0:
            equations.extend(sympy.Poly(entry, *sorted(data_symbols, key=str)).coeffs())
    if eta is not None:
        return eta if all(sympy.simplify(e) == 0 for e in equations) else None
    if not equations:
        return None  # the residual is zero for every step: V G W z = 0, impossible here
    solutions = sympy.solve(equations, step, dict=True)
    if len(solutions) != 1 or step not in solutions[0]:
        return None
    value = solutions[0][step]
    return value if value.is_positive is not False and value != 0 else None


def prove_lsa_step_is_gd(V=None, W=None, eta=None) -> bool:
    """Theorem 3.2: one LSA step on a CoT matrix is exactly one GD step.

    With no arguments: a proof for symbolic d, n and i (number of earlier CoT columns) using
    block matrices of symbolic shapes, with ``(V, W) = gd_transformer_params(d, eta)`` for a
    symbolic ``eta``.  Given concrete ``(V, W)`` (explicit matrices of size ``2d + 2``): checks,
    entrywise with symbolic data, that the last column of ``f(Z_i)`` is
    ``(0, 0, w_i - eta grad L(w_i), 1)`` for every prompt, every history and every ``w_i`` -- for
    the given ``eta``, or for some non-zero step size when ``eta`` is None.  Returns True when
    the identity holds and False when it does not (e.g. ``V31 = -2 eta I`` against ``eta``, or
    ``W24 = -2``, for which no step size fits).

    >>> prove_lsa_step_is_gd()
    True
    >>> V, W = gd_transformer_params(2, sympy.Rational(1, 3))
    >>> prove_lsa_step_is_gd(V, W, eta=sympy.Rational(1, 3)), prove_lsa_step_is_gd(2 * V, W, eta=sympy.Rational(1, 3))
    (True, False)
    """
    if V is None and W is None:
        if eta is not None:
            raise ValueError("eta needs a concrete (V, W); the symbolic proof uses a symbolic eta")
        return _symbolic_step_holds()
    if V is None or W is None:
        raise ValueError("give both V and W, or neither")
    if eta is not None:
        eta = check_eta_exact("eta", eta)
    return _concrete_step_size(V, W, eta) is not None


def lsa_step_size(V, W):
    """The GD step size implemented by concrete ``(V, W)`` (Theorem 3.2), or None if they do
    not implement a GD step.  Scale-free: ``(c V31, W13 / c, W24 / c)`` gives the same step.

    >>> V, W = gd_transformer_params(1, sympy.Rational(2, 5))
    >>> lsa_step_size(V, W)
    2/5
    """
    return _concrete_step_size(V, W, None)
