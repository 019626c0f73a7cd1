"""Parameters of the constructed transformers: Theorem 3.2 (CoT = k-step GD) and
Theorem 3.1 (the best no-CoT model), docs/theory.md sections 4 and 5."""
from __future__ import annotations

import sympy
from sympy import BlockMatrix, Identity, ZeroMatrix

from .layout import Layout
from .validation import check_covariance, check_dim, check_eta_exact


def _blocks(layout: Layout, entries: dict):
    """A D x D parameter from its non-zero blocks ``{(row_block, col_block): value}``.

    Integer d: an explicit ``sympy.Matrix``; values are scalars times the identity (square
    diagonal blocks), scalars (1 x 1 blocks) or explicit matrices.  Symbolic d: a
    ``BlockMatrix`` of ``Identity`` / ``ZeroMatrix`` blocks.
    """
    sizes = layout.sizes
    if isinstance(layout.d, sympy.Symbol):
        rows = []
        for r in range(4):
            row = []
            for c in range(4):
                value = entries.get((r + 1, c + 1))
                if value is None:
                    row.append(ZeroMatrix(sizes[r], sizes[c]))
                elif isinstance(value, sympy.MatrixExpr):
                    row.append(value)
                else:
                    row.append(sympy.sympify(value) * Identity(sizes[r]))
            rows.append(row)
        return BlockMatrix(rows)
    M = sympy.zeros(layout.D, layout.D)
    for (r, c), value in entries.items():
        rs, cs = layout.block(r), layout.block(c)
        if isinstance(value, sympy.MatrixBase):
            M[rs, cs] = value
        else:
            M[rs, cs] = sympy.sympify(value) * sympy.eye(sizes[r - 1])
    return M


def gd_transformer_params(d, eta) -> tuple:
    """Theorem 3.2: the LSA parameters ``(V, W)`` whose CoT generation is k-step GD.

    ``V31 = -eta I_d``, ``W13 = I_d``, ``W24 = -1``, every other block zero.  Then the last
    column of ``f(Z_i)`` is exactly ``(0, 0, w_{i+1}, 1)`` with ``w_{i+1} = w_i - eta grad L(w_i)``
    (docs/theory.md section 4).  ``d`` an int gives explicit ``sympy.Matrix`` objects of size
    ``2d + 2``; ``d`` a Symbol gives ``BlockMatrix`` objects of Identity / ZeroMatrix blocks.
    ``eta`` may be a number (floats become exact rationals when short: 0.4 -> 2/5) or a Symbol.

    >>> V, W = gd_transformer_params(1, sympy.Rational(2, 5))
    >>> V
    Matrix([
    [   0, 0, 0, 0],
    [   0, 0, 0, 0],
    [-2/5, 0, 0, 0],
    [   0, 0, 0, 0]])
    >>> W
    Matrix([
    [0, 0, 1,  0],
    [0, 0, 0, -1],
    [0, 0, 0,  0],
    [0, 0, 0,  0]])
    """
    layout = Layout(check_dim("d", d))
    eta = check_eta_exact("eta", eta)
    V = _blocks(layout, {(3, 1): -eta})
    W = _blocks(layout, {(1, 3): 1, (2, 4): -1})
    return V, W


def nocot_gamma(d, n, Sigma=None):
    """Theorem 3.1's preconditioner ``Gamma = (1 + 1/n) Sigma + tr(Sigma)/n I`` (docs/theory.md
    section 5).  ``Sigma=None`` means ``Sigma = I_d``, for which ``Gamma = (n + d + 1)/n I``;
    it is returned then as the scalar ``(n + d + 1)/n`` (d, n ints or Symbols).  With a
    ``Sigma`` (d x d, symmetric positive semi-definite: ``validation.check_covariance``) the
    matrix Gamma is returned.  As ``Gamma >= tr(Sigma)/n I`` (Sigma PSD), Gamma is invertible
    for every non-zero PSD Sigma, singular ones included (docs/theory.md section 10);
    ``Sigma = 0`` gives ``Gamma = 0``.

    >>> nocot_gamma(10, 20)
    31/20
    >>> nocot_gamma(2, 4, sympy.Matrix([[1, 1], [1, 1]]))      # singular Sigma, Gamma invertible
    Matrix([
    [7/4, 5/4],
    [5/4, 7/4]])
    """
    d = check_dim("d", d)
    n = check_dim("n", n)
    if Sigma is None:
        return (n + d + 1) / sympy.sympify(n)
    Sigma = check_covariance("Sigma", Sigma, d)
    return (1 + sympy.Integer(1) / n) * Sigma + Sigma.trace() / sympy.sympify(n) * sympy.eye(d)


def _nocot_gamma_inverse(d, n, Sigma=None):
    """``Gamma^{-1}`` of ``nocot_gamma`` (a scalar for ``Sigma=None``), refusing ``Sigma = 0``:
    then ``Gamma = 0`` has no inverse (x = 0 carries no information on w*, and every no-CoT
    model has loss ``d/2``).

    >>> _nocot_gamma_inverse(1, 2)
    1/2
    """
    gamma = nocot_gamma(d, n, Sigma)
    if Sigma is None:
        return sympy.Integer(1) / gamma
    if gamma.is_zero_matrix:
        raise ValueError("Sigma must not be zero: Gamma = 0 has no inverse (x = 0 carries no "
                         "information on w*; every no-CoT model has loss d/2)")
    return gamma.inv()


def nocot_params(d, n, Sigma=None) -> tuple:
    """Theorem 3.1: the best no-CoT parameters, one preconditioned GD step from ``w_0 = 0``.

    ``V31 = -Gamma^{-1}``, ``W13 = I_d``, ``W24 = -1`` (every other block zero), so the
    prediction from ``Z_0`` is ``Gamma^{-1} X y / n = Gamma^{-1} S w*``, the minimiser of the
    evaluation loss over all linear maps of ``X y / n`` (docs/theory.md section 5).  For ``Sigma = I``
    this is ``gd_transformer_params(d, n / (n + d + 1))``.

    ``Sigma`` may be singular (positive semi-definite, docs/theory.md section 10): ``S w*`` then
    lies in ``range(Sigma)``, so only ``V31`` on ``range(Sigma)`` matters and the minimiser is
    unique only there; ``-Gamma^{-1}`` is one minimiser (the limit of the positive definite
    case).  ``Sigma = 0`` is refused (Gamma = 0 has no inverse).

    >>> V, W = nocot_params(1, 2)
    >>> V[2, 0]
    -1/2
    """
    d = check_dim("d", d)
    n = check_dim("n", n)
    inverse = _nocot_gamma_inverse(d, n, Sigma)
    layout = Layout(d)
    V = _blocks(layout, {(3, 1): -inverse})
    W = _blocks(layout, {(1, 3): 1, (2, 4): -1})
    return V, W
