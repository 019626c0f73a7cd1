"""What one LSA step does to the CoT column, and proofs that it is a (preconditioned) GD step
(Theorem 3.2; docs/theory.md sections 3, 4 and 12).

One step on ``Z_i`` maps its last column ``z = (0, 0, w_i, 1)`` to ``z + V G W z`` with
``G = Z_i Z_i^T / n = blockdiag(stat, H_i)`` (docs/theory.md section 3)::

    stat = [[S, S w*], [w*^T S, w*^T S w*]]          on the data rows (x, y)
    H_i  = [[H, h], [h^T, h_0]]                      on the CoT rows (w, one),

``H = (1/n) sum_{l <= i} w_l w_l^T``, ``h = (1/n) sum_{l <= i} w_l``, ``h_0 = (i + 1)/n``.  Every
block of ``V G W z`` is a sum of one term per pair of a block of V and a block of W:
``V_rb G_bc W_ce z_e`` (``lsa_update``).  The data reach an open set of
``(S, w*, w_i, H, h, h_0)`` (for ``n >= d``; a polynomial identity then holds for every prompt and
history), so an identity in independent symbols for them is equivalent to the identity for all
prompts.  The proofs use private symbols (``sympy.Dummy``; they print as ``S``, ``w_i``,
``w_star``, ``H``, ``h``, ``h_0``), so no symbol of the caller can collide with them, and read
numbers by ``validation.exact_real`` (docs/theory.md section 17).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import sympy
from sympy import (BlockMatrix, Identity, ImmutableMatrix, MatrixSymbol, OneMatrix, ZeroMatrix,
                   block_collapse)

from .gd import gd_step
from .layout import BLOCK_NAMES, Layout
from .params import check_step, gd_transformer_params
from .validation import check_eta_exact, exact_matrix, exact_real

__all__ = ["LSAUpdate", "StepProof", "lsa_step_size", "lsa_update", "prove_lsa_step",
           "prove_lsa_step_is_gd"]


# ---------------------------------------------------------------------------------------------
# The statistics and the parameters, block by block


def _statistics(d) -> dict:
    """Private MatrixSymbols for everything one step on the last CoT column can see."""
    return {"S": MatrixSymbol(sympy.Dummy("S"), d, d),
            "w_star": MatrixSymbol(sympy.Dummy("w_star"), d, 1),
            "w_i": MatrixSymbol(sympy.Dummy("w_i"), d, 1),
            "H": MatrixSymbol(sympy.Dummy("H"), d, d),
            "h": MatrixSymbol(sympy.Dummy("h"), d, 1),
            "h_0": MatrixSymbol(sympy.Dummy("h_0"), 1, 1)}


def _gram_blocks(st: dict) -> dict:
    """The non-zero blocks of ``G = Z_i Z_i^T / n`` (module docstring)."""
    S, ws, H, h = st["S"], st["w_star"], st["H"], st["h"]
    return {(1, 1): S, (1, 2): S * ws, (2, 1): ws.T * S, (2, 2): ws.T * S * ws,
            (3, 3): H, (3, 4): h, (4, 3): h.T, (4, 4): st["h_0"]}


def _readable(block: sympy.Matrix):
    """An explicit block as a matrix expression: None when zero, ``c I`` when a multiple of the
    identity, else the (immutable) matrix."""
    if block.is_zero_matrix:
        return None
    if block.rows == block.cols and block.is_diagonal() and len(set(block.diagonal())) == 1:
        return block[0, 0] * Identity(block.rows)
    return ImmutableMatrix(block)


def _parameter_blocks(name: str, M) -> tuple:
    """``(d, {(r, c): block})`` of a parameter: an explicit square matrix of size ``2d + 2``
    (entries through ``validation.exact_matrix``) or a 4 x 4 ``BlockMatrix`` (symbolic d);
    zero blocks are left out."""
    if isinstance(M, sympy.MatrixExpr) and not isinstance(M, (BlockMatrix, sympy.MatrixBase)):
        M = block_collapse(M)                       # e.g. 2 * V of a BlockMatrix V
        if not isinstance(M, BlockMatrix):
            raise ValueError(f"{name} must be an explicit matrix or a 4 x 4 BlockMatrix, got {M}")
    if isinstance(M, BlockMatrix):
        if M.blockshape != (4, 4):
            raise ValueError(f"{name} must be a 4 x 4 BlockMatrix (blocks x, y, w, one), got "
                             f"{M.blockshape[0]} x {M.blockshape[1]} blocks")
        d = M.blocks[0, 0].shape[0]
        blocks = {}
        for r in range(4):
            for c in range(4):
                b = M.blocks[r, c]
                if not (b == 0 or getattr(b, "is_ZeroMatrix", False)):
                    blocks[(r + 1, c + 1)] = b
        return d, blocks
    M = exact_matrix(name, M)
    if M.rows != M.cols or M.rows % 2 or M.rows < 4:
        raise ValueError(f"{name} must be square of even size 2d + 2 >= 4, got {M.rows} x {M.cols}")
    layout = Layout((M.rows - 2) // 2)
    blocks = {}
    for r in range(1, 5):
        for c in range(1, 5):
            b = _readable(M[layout.block(r), layout.block(c)])
            if b is not None:
                blocks[(r, c)] = b
    return layout.d, blocks


def _check_pair(V, W) -> tuple:
    dV, Vb = _parameter_blocks("V", V)
    dW, Wb = _parameter_blocks("W", W)
    if sympy.simplify(dV - dW) != 0:
        raise ValueError(f"V and W must have the same size, got d = {dV} and d = {dW}")
    return dV, Vb, Wb


def _pair_terms(Vb: dict, Wb: dict, st: dict) -> dict:
    """``{row block: {(V name, W name): V_rb G_bc W_ce z_e}}`` over the non-zero blocks."""
    G = _gram_blocks(st)
    z = {3: st["w_i"], 4: Identity(1)}
    rows: dict = {r: {} for r in range(1, 5)}
    for (r, b), v in Vb.items():
        for (c, e), w in Wb.items():
            if e in z and (b, c) in G:
                rows[r][(f"V{r}{b}", f"W{c}{e}")] = v * G[(b, c)] * w * z[e]
    return rows


@dataclass(frozen=True)
class LSAUpdate:
    """What one LSA step does to the last CoT column (``lsa_update``, docs/theory.md section 12).

    ``w``: the update ``w_{i+1} - w_i`` of the estimate, a matrix expression in the statistics;
    ``column``: the increments of the four row blocks ``{"x", "y", "w", "one"}`` (the CoT reads
    only ``w``); ``pairs``: the term of each pair of non-zero blocks ``(V_rb, W_ce)``,
    ``{row name: {("V31", "W13"): term}}``; ``statistics``: the MatrixSymbols ``S``, ``w_star``,
    ``w_i``, ``H``, ``h``, ``h_0`` (substitute values with ``expr.subs``)."""

    w: sympy.MatrixExpr
    column: dict
    pairs: dict
    statistics: dict = field(repr=False)

    def __str__(self) -> str:
        return f"w_(i+1) - w_i = {self.w}"


def _collect(expr):
    """A sum of matrix terms with the terms that differ only in a leading explicit coefficient
    combined (``A S w + B S w -> (A + B) S w``), for reading; exact zeros are decided elsewhere."""
    expr = sympy.expand(expr.doit())
    if not isinstance(expr, sympy.MatrixExpr) or isinstance(expr, (ZeroMatrix, sympy.MatrixBase)):
        return expr
    groups: dict = {}
    for term in (expr.args if isinstance(expr, sympy.MatAdd) else (expr,)):
        scalar, product = term.as_coeff_mmul()
        factors = list(product.args)
        coefficient = scalar
        if len(factors) > 1 and isinstance(factors[0], sympy.MatrixBase):
            coefficient, factors = scalar * factors[0], factors[1:]
        rest = sympy.MatMul(*factors).doit()
        if not isinstance(coefficient, sympy.MatrixBase) and isinstance(rest.rows, (int, sympy.Integer)) \
                and any(isinstance(c, sympy.MatrixBase) for c in groups.get(rest, [])):
            coefficient = coefficient * sympy.eye(rest.rows)
        groups.setdefault(rest, []).append(coefficient)
    out = []
    for rest, coefficients in groups.items():
        if any(isinstance(c, sympy.MatrixBase) for c in coefficients):
            total = sympy.zeros(*coefficients[0].shape) if isinstance(coefficients[0], sympy.MatrixBase) \
                else sympy.zeros(rest.rows, rest.rows)
            for c in coefficients:
                total += c if isinstance(c, sympy.MatrixBase) else c * sympy.eye(rest.rows)
            total = total.applyfunc(sympy.expand)
            readable = _readable(total)
            if readable is not None:
                out.append((readable * rest).doit())
        else:
            total = sympy.expand(sympy.Add(*coefficients))
            if total != 0:
                out.append(total * rest)
    if not out:
        return ZeroMatrix(*expr.shape)
    return sympy.MatAdd(*out).doit() if len(out) > 1 else out[0]


def _total(terms: dict, shape) -> sympy.MatrixExpr:
    if not terms:
        return ZeroMatrix(*shape)
    return _collect(sympy.MatAdd(*terms.values()))


def lsa_update(V, W) -> LSAUpdate:
    """The update that the one-layer LSA ``(V, W)`` performs on the CoT column, in the data's
    statistics ``S``, ``w*`` (through ``S w*`` and ``w*^T S w*``), the current estimate ``w_i``
    and the history ``H``, ``h``, ``h_0`` (module docstring; docs/theory.md sections 3 and 12):
    ``w_{i+1} - w_i = sum over pairs V_3b G_bc W_ce z_e``.  Read off what a model computes, e.g. a
    learned one (numbers read by ``validation.exact_real``, docs/theory.md section 17).

    ``V``, ``W``: explicit ``(2d + 2) x (2d + 2)`` matrices or 4 x 4 BlockMatrix objects (symbolic
    d, as ``gd_transformer_params`` returns).  In general (docs/theory.md section 5) the update is
    ``V31 (S (W13 w_i + W14) + S w* (W23 w_i + W24)) + V32 (w*^T S (W13 w_i + W14) + w*^T S w*
    (W23 w_i + W24)) + V33 (H e + h eps) + V34 (h^T e + h_0 eps)`` with ``e = W33 w_i + W34``,
    ``eps = W43 w_i + W44``.

    >>> eta = sympy.Symbol("eta")
    >>> print(lsa_update(*gd_transformer_params(2, eta)))
    w_(i+1) - w_i = (-eta)*S*w_i + eta*S*w_star
    >>> V, W = gd_transformer_params(2, eta)
    >>> W[0, 5] = 1                                         # W14: a constant added to w_i
    >>> lsa_update(V, W).w
    (-eta)*S*w_i + eta*S*w_star + S*Matrix([
    [-eta],
    [   0]])
    """
    d, Vb, Wb = _check_pair(V, W)
    st = _statistics(d)
    rows = _pair_terms(Vb, Wb, st)
    sizes = {1: d, 2: 1, 3: d, 4: 1}
    column = {BLOCK_NAMES[r]: _total(rows[r], (sizes[r], 1)) for r in range(1, 5)}
    pairs = {BLOCK_NAMES[r]: rows[r] for r in range(1, 5) if rows[r]}
    return LSAUpdate(column["w"], column, pairs, st)


# ---------------------------------------------------------------------------------------------
# The proofs


@dataclass(frozen=True)
class StepProof:
    """``prove_lsa_step``'s result (docs/theory.md section 12): truthy exactly when one LSA step is
    the preconditioned GD step.

    ``holds``: the verdict.  ``P``: the preconditioner checked against.  ``leftover``: the
    symbolic difference (the new last column minus ``(0, 0, w_i - P (S w_i - S w*), 1)``), zero
    exactly when the identity holds: an explicit ``(2d + 2) x 1`` matrix in private symbols of
    the statistics (integer d), or a block column of matrix expressions (symbolic d).  ``rows``:
    the row blocks where it is non-zero.  ``terms``: the non-zero residual of each pair of
    parameter blocks, ``{(V name, W name): expression}``, the GD target subtracted from the pairs
    that produce it (``V31 W13``: ``-P S w_i``; ``V31 W24``: ``P S w*``); terms of different pairs
    can cancel.  ``blocks``: the parameter blocks named in ``terms`` when the identity fails.
    ``statistics``: the MatrixSymbols of ``terms``."""

    holds: bool
    P: object
    leftover: object
    rows: tuple = ()
    terms: dict = field(default_factory=dict)
    blocks: tuple = ()
    statistics: dict = field(default_factory=dict, repr=False)

    def __bool__(self) -> bool:
        return self.holds


def _explicit_values(st: dict, d: int) -> dict:
    """Explicit private-symbol matrices for the statistics (S and H symmetric)."""
    def sym(name, i, j, symmetric):
        a, b = (min(i, j), max(i, j)) if symmetric else (i, j)
        return sympy.Dummy(f"{name}{a}{b}")

    values = {}
    for key, shape, symmetric in (("S", (d, d), True), ("H", (d, d), True), ("w_star", (d, 1), False),
                                  ("w_i", (d, 1), False), ("h", (d, 1), False), ("h_0", (1, 1), False)):
        cache: dict = {}

        def entry(i, j, key=key, symmetric=symmetric, cache=cache):
            k = (min(i, j), max(i, j)) if symmetric else (i, j)
            if k not in cache:
                cache[k] = sym(key, i, j, symmetric)
            return cache[k]
        values[st[key]] = ImmutableMatrix(*shape, entry)
    return values


def _explicit(expr, values: dict) -> sympy.Matrix:
    """A matrix expression of integer shape as an explicit matrix, the MatrixSymbols replaced by
    ``values`` (products and sums evaluated directly, not entry by entry)."""
    if isinstance(expr, sympy.MatrixBase):
        return sympy.Matrix(expr)
    if isinstance(expr, MatrixSymbol):
        return sympy.Matrix(values[expr]) if expr in values else sympy.Matrix(expr.as_explicit())
    if isinstance(expr, sympy.MatMul):
        scalar, factors = sympy.Integer(1), []
        for arg in expr.args:
            if isinstance(arg, sympy.MatrixExpr) or isinstance(arg, sympy.MatrixBase):
                factors.append(_explicit(arg, values))
            else:
                scalar *= arg
        out = factors[0]
        for factor in factors[1:]:
            out = out * factor
        return scalar * out
    if isinstance(expr, sympy.MatAdd):
        out = _explicit(expr.args[0], values)
        for arg in expr.args[1:]:
            out = out + _explicit(arg, values)
        return out
    if isinstance(expr, sympy.Transpose):
        return _explicit(expr.arg, values).T
    if isinstance(expr, (Identity, ZeroMatrix)):
        return sympy.Matrix(expr.as_explicit())
    return sympy.Matrix(expr.xreplace(values).as_explicit())


def _is_zero(expr, values) -> bool:
    """Exact zero test of a matrix expression: explicit (integer d: substitute the explicit
    statistics and expand) or symbolic (matrix-expression algebra)."""
    if values is not None:
        return all(sympy.expand(e) == 0 for e in _explicit(expr, values))
    simplified = sympy.expand(expr.doit()) if isinstance(expr, sympy.MatrixExpr) else sympy.expand(expr)
    return simplified == 0 or bool(getattr(simplified, "is_ZeroMatrix", False))


def _read_off_P(Vb: dict, Wb: dict, d):
    """The coefficient of ``S w*`` in the update: ``W24 V31 + V32 W14^T`` (docs/theory.md section 12;
    only these pairs give terms linear in ``w*`` alone)."""
    terms = []
    if (3, 1) in Vb and (2, 4) in Wb:
        terms.append(sympy.Matrix(Wb[(2, 4)].as_explicit())[0, 0] * Vb[(3, 1)])   # W24 is 1 x 1
    if (3, 2) in Vb and (1, 4) in Wb:
        terms.append(Vb[(3, 2)] * Wb[(1, 4)].T)
    if not terms:
        return ZeroMatrix(d, d) if isinstance(d, sympy.Symbol) else sympy.zeros(d, d)
    total = sympy.MatAdd(*terms).doit()
    return total.as_explicit() if not isinstance(d, sympy.Symbol) else total


def _concrete(V, W, P) -> StepProof:
    d, Vb, Wb = _check_pair(V, W)
    st = _statistics(d)
    values = None if isinstance(d, sympy.Symbol) else _explicit_values(st, d)
    P = _read_off_P(Vb, Wb, d) if P is None else check_step("P", P, d, positive=False)
    P_matrix = P if isinstance(P, sympy.MatrixBase) or isinstance(P, sympy.MatrixExpr) else P * Identity(d)
    if isinstance(P_matrix, sympy.MatrixBase):
        P_matrix = ImmutableMatrix(P_matrix)
    rows = _pair_terms(Vb, Wb, st)
    S, ws, w = st["S"], st["w_star"], st["w_i"]
    # The target is the library's step, gd_step(w, S, w*, P) - w; it is shared out as -P S w to
    # the pair V31 W13 and P S w* to V31 W24, and whatever of it that split misses (nothing, for
    # the GD step -P S (w - w*)) is kept as the term ("gd_step", "target").
    split = {("V31", "W13"): -P_matrix * S * w, ("V31", "W24"): P_matrix * S * ws}
    for pair, part in split.items():
        rows[3][pair] = rows[3][pair] - part if pair in rows[3] else -part
    rows[3][("gd_step", "target")] = split[("V31", "W13")] + split[("V31", "W24")] - (gd_step(w, S, ws, P_matrix) - w)
    sizes = {1: d, 2: 1, 3: d, 4: 1}
    terms, nonzero_rows, leftover_blocks = {}, [], []
    for r in range(1, 5):
        total = _total(rows[r], (sizes[r], 1))
        zero = _is_zero(total, values)
        if not zero:
            nonzero_rows.append(BLOCK_NAMES[r])
        for pair, term in rows[r].items():
            if not _is_zero(term, values):
                terms[pair] = _collect(term)
        if values is not None:
            leftover_blocks.append(_explicit(total, values).applyfunc(sympy.expand))
        else:
            leftover_blocks.append(ZeroMatrix(sizes[r], 1) if zero else sympy.expand(total.doit()))
    leftover = sympy.Matrix.vstack(*leftover_blocks) if values is not None \
        else BlockMatrix([[b] for b in leftover_blocks])
    holds = not nonzero_rows
    blocks = () if holds else tuple(sorted({name for pair in terms for name in pair if name[0] in "VW"}))
    return StepProof(holds, P, leftover, tuple(nonzero_rows), terms, blocks, st)


def _literal(P) -> StepProof:
    """The step for symbolic d, n and i on the literal layer ``z + V Z Z^T W z / n``.

    ``Z_i = [[X, 0, 0], [y^T, 0, 0], [0, W_prev, w], [0, 1^T, 1]]`` with ``X`` d x n, labels
    ``y = X^T w*``, ``W_prev`` d x i (the earlier CoT iterates), ``w`` the current iterate;
    ``(V, W) = gd_transformer_params(d, P)``; the expected last column is
    ``(0, 0, gd_step(w, X X^T / n, w*, P), 1)``.  All symbols are private.
    """
    d, n, i = (sympy.Dummy(s, positive=True, integer=True) for s in ("d", "n", "i"))
    X = MatrixSymbol(sympy.Dummy("X"), d, n)
    w_star = MatrixSymbol(sympy.Dummy("w_star"), d, 1)
    W_prev = MatrixSymbol(sympy.Dummy("W_prev"), d, i)
    w = MatrixSymbol(sympy.Dummy("w"), d, 1)
    if P is None:
        P = MatrixSymbol(sympy.Dummy("P"), d, d)
    y = X.T * w_star
    Z = BlockMatrix([
        [X, ZeroMatrix(d, i), ZeroMatrix(d, 1)],
        [y.T, ZeroMatrix(1, i), ZeroMatrix(1, 1)],
        [ZeroMatrix(d, n), W_prev, w],
        [ZeroMatrix(1, n), OneMatrix(1, i), Identity(1)],
    ])
    z = BlockMatrix([[ZeroMatrix(d, 1)], [ZeroMatrix(1, 1)], [w], [Identity(1)]])
    V, W = gd_transformer_params(d, P)
    out = block_collapse(z + V * Z * Z.T * W * z / n)
    expected = [ZeroMatrix(d, 1), ZeroMatrix(1, 1), gd_step(w, X * X.T / n, w_star, P), Identity(1)]
    blocks, rows = [], []
    for r in range(4):
        difference = sympy.expand((out.blocks[r, 0] - expected[r]).doit())
        zero = difference == 0 or bool(getattr(difference, "is_ZeroMatrix", False))
        blocks.append(ZeroMatrix(*expected[r].shape) if zero else difference)
        if not zero:
            rows.append(BLOCK_NAMES[r + 1])
    return StepProof(not rows, P, BlockMatrix([[b] for b in blocks]), tuple(rows))


def prove_lsa_step(V=None, W=None, P=None) -> StepProof:
    """Does one LSA step on ``Z_i`` perform the preconditioned GD step
    ``w_{i+1} = w_i - P (S w_i - S w*)``, i.e. is the new last column ``(0, 0, w_{i+1}, 1)``, for
    every prompt, every history and every ``w_i``?  (``P = eta I`` is Theorem 3.2's; docs/theory.md
    sections 4 and 12.)

    * No ``V``, ``W``: a proof for symbolic d, n and i on the literal layer, with
      ``(V, W) = gd_transformer_params(d, P)``; ``P`` None means an arbitrary ``d x d`` matrix
      (a private MatrixSymbol), a scalar means ``P I``.
    * ``V``, ``W`` explicit ``(2d + 2)``-square matrices (or 4 x 4 BlockMatrix objects for a
      symbolic d) and ``P`` a scalar or a ``d x d`` matrix (a matrix expression for symbolic d);
      ``P`` None reads it off the parameters as the coefficient of ``S w*``, ``W24 V31 + V32
      W14^T``.  Checked with independent private symbols for the statistics (module docstring).

    Numbers in V, W and P are read by ``validation.exact_real`` (docs/theory.md section 17).
    Returns a ``StepProof``: truthy exactly when the identity holds, with the ``leftover`` (zero
    exactly then), the rows and parameter blocks involved, and the residual ``terms`` per pair.

    >>> p1, p2 = sympy.symbols("p1 p2")
    >>> V, W = gd_transformer_params(2, sympy.diag(p1, p2))
    >>> bool(prove_lsa_step(V, W, sympy.diag(p1, p2)))
    True
    >>> wrong = prove_lsa_step(2 * V, W, sympy.diag(p1, p2))      # V31 = -2P against P
    >>> bool(wrong), wrong.rows, wrong.blocks
    (False, ('w',), ('V31', 'W13', 'W24'))
    >>> wrong.terms[("V31", "W13")]
    Matrix([
    [-p1,   0],
    [  0, -p2]])*S*w_i
    >>> bool(prove_lsa_step())                                    # symbolic d, n, i and P
    True
    """
    if V is None and W is None:
        if P is not None and not isinstance(P, sympy.MatrixExpr):
            P = exact_real("P", P)
        return _literal(P)
    if V is None or W is None:
        raise ValueError("give both V and W, or neither")
    return _concrete(V, W, P)


def prove_lsa_step_is_gd(V=None, W=None, eta=None) -> bool:
    """Theorem 3.2: one LSA step on a CoT matrix is exactly one GD step (``prove_lsa_step`` with
    ``P = eta I``, docs/theory.md section 4).

    With no arguments: a proof for symbolic d, n and i (number of earlier CoT columns) using
    block matrices of symbolic shapes, with ``(V, W) = gd_transformer_params(d, eta)`` for a
    symbolic ``eta``.  Given concrete ``(V, W)`` (explicit matrices of size ``2d + 2``): checks,
    with symbolic data, that the last column of ``f(Z_i)`` is ``(0, 0, w_i - eta grad L(w_i), 1)``
    for every prompt, every history and every ``w_i`` -- for the given ``eta`` (a number > 0, or a
    symbolic step, which must be provably positive: a symbol without ``positive=True`` gives
    False, as in ``lsa_step_size``), or, when ``eta`` is None, for the positive step the
    parameters implement (``lsa_step_size``).  Returns True or False (e.g. ``V31 = -2 eta I`` against ``eta``, or
    ``W24 = -2``, for which no step size fits, or ``-V``: gradient ascent, a negative step).
    A matrix ``eta`` is a preconditioner ``P`` (``prove_lsa_step(V, W, P)``, any P); to see what
    fails, use ``prove_lsa_step``.

    >>> prove_lsa_step_is_gd()
    True
    >>> V, W = gd_transformer_params(2, sympy.Rational(1, 3))
    >>> prove_lsa_step_is_gd(V, W, eta=sympy.Rational(1, 3)), prove_lsa_step_is_gd(2 * V, W, eta=sympy.Rational(1, 3))
    (True, False)
    """
    if V is None and W is None:
        if eta is not None:
            raise ValueError("eta needs a concrete (V, W); the symbolic proof uses a symbolic eta")
        return bool(prove_lsa_step(P=sympy.Dummy("eta", positive=True)))
    if V is None or W is None:
        raise ValueError("give both V and W, or neither")
    if eta is None:
        return lsa_step_size(V, W) is not None
    if isinstance(eta, (sympy.MatrixBase, sympy.MatrixExpr, list, tuple)) or getattr(eta, "ndim", 0) == 2:
        return bool(prove_lsa_step(V, W, eta))              # a preconditioner P
    eta = exact_real("eta", eta)
    if eta.is_number:
        eta = check_eta_exact("eta", eta)                   # a number must be > 0
    elif eta.is_positive is not True:
        return False                                        # not provably positive: not GD
    return bool(prove_lsa_step(V, W, eta))


def lsa_step_size(V, W):
    """The GD step size implemented by concrete ``(V, W)`` (Theorem 3.2), or None if they do
    not implement a GD step with a provably positive step (docs/theory.md section 12): the coefficient
    ``W24 V31 + V32 W14^T`` of ``S w*`` must be ``eta I`` and ``prove_lsa_step(V, W, eta)`` must
    hold.  Scale-free: ``(c V31, W13 / c, W24 / c)`` gives the same step.

    >>> V, W = gd_transformer_params(1, sympy.Rational(2, 5))
    >>> lsa_step_size(V, W)
    2/5
    """
    d, Vb, Wb = _check_pair(V, W)
    P = _read_off_P(Vb, Wb, d)
    if isinstance(P, sympy.MatrixBase):
        if not (P.is_diagonal() and len(set(P.diagonal())) == 1):
            return None
        eta = P[0, 0]
    else:
        coefficient, rest = P.as_coeff_mmul() if hasattr(P, "as_coeff_mmul") else (None, None)
        if rest is None or rest.args != (Identity(d),):
            return None
        eta = coefficient
    if eta.is_positive is not True:
        return None                                         # not provably positive: not GD
    return eta if prove_lsa_step(V, W, eta) else None
