"""Parameters of the constructed transformers: Theorem 3.2 (CoT = k-step GD) and
Theorem 3.1 (the best no-CoT model), docs/theory.md sections 4 and 5."""
from __future__ import annotations


import sympy
from sympy import BlockMatrix, Identity, ZeroMatrix

from .layout import Layout
from .validation import check_dim, check_eta_exact, check_noise_var, covariance_or_symbol, exact_matrix, exact_real


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
        if isinstance(value, sympy.MatrixExpr) and not isinstance(value, sympy.MatrixBase):
            value = value.as_explicit()                 # e.g. a MatrixSymbol P for an int d
        if isinstance(value, sympy.MatrixBase):
            M[rs, cs] = value
        else:
            M[rs, cs] = sympy.sympify(value) * sympy.eye(sizes[r - 1])
    return M


def check_step(name: str, value, d, *, positive: bool = True):
    """A GD step for the constructions and proofs: a scalar (``check_eta_exact``: a positive
    number -- any finite real number with ``positive=False`` -- or a symbolic expression; numbers
    read by ``validation.exact_real``) or a preconditioner ``P``: an explicit ``d x d`` matrix
    (entries through ``validation.exact_matrix``, the same rule) or, for symbolic ``d``,
    a ``d x d`` matrix expression.  A matrix may be anything (not necessarily positive definite):
    the identities hold for every P.

    >>> check_step("P", [[0.5, 0], [0, 2]], 2)
    Matrix([
    [1/2, 0],
    [  0, 2]])
    """
    if isinstance(value, sympy.MatrixExpr) and not isinstance(value, sympy.MatrixBase):
        if any(sympy.simplify(s - d) != 0 for s in value.shape):
            raise ValueError(f"{name} must be {d} x {d}, got {value.shape[0]} x {value.shape[1]}")
        return value
    is_matrix = isinstance(value, sympy.MatrixBase) or (
        hasattr(value, "tolist") and getattr(value, "ndim", 0) == 2) or isinstance(value, (list, tuple))
    if not is_matrix:
        return check_eta_exact(name, value) if positive else exact_real(name, value)
    if isinstance(d, sympy.Symbol):
        raise ValueError(f"{name} must be a {d} x {d} matrix expression for a symbolic d, got an "
                         f"explicit matrix")
    M = exact_matrix(name, value)
    if M.shape != (d, d):
        raise ValueError(f"{name} must be {d} x {d}, got {M.shape[0]} x {M.shape[1]}")
    return M


def gd_transformer_params(d, eta) -> tuple:
    """Theorem 3.2: the LSA parameters ``(V, W)`` whose CoT generation is k-step GD.

    ``V31 = -eta I_d``, ``W13 = I_d``, ``W24 = -1``, every other block zero.  Then the last
    column of ``f(Z_i)`` is exactly ``(0, 0, w_{i+1}, 1)`` with ``w_{i+1} = w_i - eta grad L(w_i)``
    (docs/theory.md section 4).  ``d`` an int gives explicit ``sympy.Matrix`` objects of size
    ``2d + 2``; ``d`` a Symbol gives ``BlockMatrix`` objects of Identity / ZeroMatrix blocks.
    ``eta`` may be a number (floats become exact rationals when short: 0.4 -> 2/5) or a Symbol.

    ``eta`` may also be a preconditioner: a ``d x d`` matrix ``P`` (a matrix expression such as a
    ``MatrixSymbol`` for symbolic d) gives ``V31 = -P``, the preconditioned step
    ``w_{i+1} = w_i - P grad L(w_i)`` (``theory.prove_lsa_step``, docs/theory.md section 12).

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
    >>> gd_transformer_params(2, sympy.diag(1, 2))[0][3:5, 0:2]
    Matrix([
    [-1,  0],
    [ 0, -2]])
    """
    layout = Layout(check_dim("d", d))
    eta = check_step("eta", eta, layout.d)
    V = _blocks(layout, {(3, 1): -eta})
    W = _blocks(layout, {(1, 3): 1, (2, 4): -1})
    return V, W


def nocot_gamma(d, n, Sigma=None, *, noise_var=0):
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
    >>> d, n = sympy.symbols("d n", positive=True, integer=True)
    >>> nocot_gamma(d, n, sympy.MatrixSymbol("Sigma", d, d))   # symbolic d: a matrix expression
    (Trace(Sigma)/n)*I + (1 + 1/n)*Sigma

    ``noise_var``: label noise of variance ``s^2`` (docs/theory.md section 16) adds ``s^2 / n I``
    (``E[(X y/n)(X y/n)^T] = Sigma Gamma + s^2 Sigma / n``): ``tr(Sigma)`` becomes ``tr(Sigma) + s^2``.

    >>> nocot_gamma(10, 20, noise_var=1)
    8/5
    """
    d = check_dim("d", d)
    n = check_dim("n", n)
    noise_var = check_noise_var("noise_var", noise_var)
    if Sigma is None:
        return (n + d + 1 + noise_var) / sympy.sympify(n)
    Sigma = covariance_or_symbol("Sigma", Sigma, d)
    identity = sympy.eye(d) if isinstance(Sigma, sympy.MatrixBase) else sympy.Identity(d)
    return (1 + sympy.Integer(1) / n) * Sigma + (sympy.trace(Sigma) + noise_var) / sympy.sympify(n) * identity


def _nocot_gamma_inverse(d, n, Sigma=None, noise_var=0):
    """``Gamma^{-1}`` of ``nocot_gamma`` (a scalar for ``Sigma=None``), refusing ``Sigma = 0``:
    then ``Gamma = 0`` has no inverse (x = 0 carries no information on w*, and every no-CoT
    model has loss ``d/2``).

    >>> _nocot_gamma_inverse(1, 2)
    1/2
    """
    gamma = nocot_gamma(d, n, Sigma, noise_var=noise_var)
    if Sigma is None:
        return sympy.Integer(1) / gamma
    if not isinstance(gamma, sympy.MatrixBase):
        return sympy.Inverse(gamma)
    return invertible_gamma(gamma).inv()


def invertible_gamma(gamma):
    """``gamma`` (an explicit ``nocot_gamma``) unless it is 0, which happens exactly for
    ``Sigma = 0`` without label noise; then ValueError."""
    if gamma.is_zero_matrix:
        raise ValueError("Sigma must not be zero: Gamma = 0 has no inverse (x = 0 carries no "
                         "information on w*; every no-CoT model has loss d/2)")
    return gamma


def nocot_params(d, n, Sigma=None, *, noise_var=0) -> tuple:
    """Theorem 3.1: the best no-CoT parameters, one preconditioned GD step from ``w_0 = 0``.

    ``V31 = -Gamma^{-1}``, ``W13 = I_d``, ``W24 = -1`` (every other block zero), so the
    prediction from ``Z_0`` is ``Gamma^{-1} X y / n = Gamma^{-1} S w*``, the minimiser of the
    evaluation loss over all linear maps of ``X y / n`` (docs/theory.md section 5).  For ``Sigma = I``
    this is ``gd_transformer_params(d, n / (n + d + 1))``; in general it is
    ``gd_transformer_params(d, Gamma^{-1})``, the preconditioned construction.

    ``Sigma`` may be singular (positive semi-definite, docs/theory.md section 10): ``S w*`` then
    lies in ``range(Sigma)``, so only ``V31`` on ``range(Sigma)`` matters and the minimiser is
    unique only there; ``-Gamma^{-1}`` is one minimiser (the limit of the positive definite
    case).  ``Sigma = 0`` is refused (Gamma = 0 has no inverse).  ``noise_var``: the best model
    for labels with noise of variance ``s^2`` (``nocot_gamma``; docs/theory.md section 16).

    >>> V, W = nocot_params(1, 2)
    >>> V[2, 0]
    -1/2
    """
    d = check_dim("d", d)
    n = check_dim("n", n)
    return gd_transformer_params(d, _nocot_gamma_inverse(d, n, Sigma, noise_var))
