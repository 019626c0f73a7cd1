"""What a loop of the looped model does to the whole prompt, and algorithms one loop implements
exactly (docs/theory.md section 18).

A loop maps every column of the prompt by one matrix: ``Z <- M Z`` with ``M = I + V G W`` and
``G = Z Z^T / n`` (docs/theory.md section 3), data columns included.  From a prompt of the form of
``Z_0`` -- data columns ``(x_j, y_j, 0, 0)``, the estimate column ``(0, 0, w, 1)`` -- ``G`` is
block diagonal, ``stat = [[S, S w*], [w*^T S, w*^T S w*]]`` on the data rows and
``[[w w^T, w], [w^T, 1]] / n`` on the estimate rows.  ``loop_update(V, W)`` writes out, for any
``(V, W)``, the new data columns, the new statistics ``S``, ``S w*``, ``w*^T S w*`` of the data
columns, what leaks into their w and one rows, and the new estimate column.

Algorithms, each defined by its action on a prompt ``Z`` with ``n`` examples, every column moved
by the same rule (so a loop can implement it), with ``G = Z Z^T / n`` and, for a column
``z = (x, y, w, o)``, the gradient-like vector ``h(z) = G_xx (x + w) - G_xy o`` (on ``Z_0``'s
estimate column this is ``S w - S w*``, the gradient of the in-context least squares):

* ``"preconditioned"`` (matrix ``P``): ``w <- w - P (G_xx w - G_xy o)``, nothing else moves.  On
  a prompt of ``Z_0``'s form the data columns never change and each loop is the preconditioned GD
  step ``w <- w - P (S w - S w*)`` (Gatmiry et al. 2024); ``P = eta I`` is GD (Theorem 3.2).
* ``"gd++"`` (scalars ``gamma``, ``eta``): every column moves along ``h(z)``:
  ``x <- x - gamma h(z)``, ``w <- w - eta h(z)``.  On ``Z_0`` the first loop is von Oswald et al.
  2023's GD++ layer: the inputs are transformed, ``x_j <- (I - gamma S) x_j``, and the estimate
  takes a GD step ``w <- w - eta (S w - S w*)``; later loops see the transformed data (and what
  the step wrote into the other rows).  ``gamma = 0`` is GD on the estimate.

``loop_family_step`` is the one definition of these rules; ``loop_family_params`` builds the
``(V, W)`` of each, and ``prove_loop_step`` proves that one loop of given ``(V, W)`` is one step
of a family for every prompt (with the leftover when it is not).  No ``(V, W)`` runs GD++'s input
transformation and GD while keeping ``G`` block diagonal: the pairs ``(V11, W13)`` and
``(V31, W11)`` that both need write ``-gamma (S w - S w*)`` into the estimate's x rows and
``-eta S x_j`` into the data columns' w rows (docs/theory.md section 18).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import sympy
from sympy import BlockMatrix, Identity, ImmutableMatrix, MatrixSymbol, ZeroMatrix, block_collapse

from .layout import BLOCK_NAMES, Layout
from .params import _blocks, check_step
from .proof import _check_pair, _collect
from .validation import check_dim, exact_matrix, exact_real

__all__ = ["LOOP_FAMILIES", "LoopProof", "LoopUpdate", "loop_family_params", "loop_family_step",
           "loop_update", "prove_loop_step"]

LOOP_FAMILIES = ("preconditioned", "gd++")


# ---------------------------------------------------------------------------------------------
# The families: one definition of each rule


def _family_args(family: str, params: dict, d):
    """The family's parameters, checked: ``{"P": matrix or scalar}`` or ``{"gamma", "eta"}``."""
    if family == "preconditioned":
        if set(params) != {"P"}:
            raise ValueError(f"the preconditioned family takes P (a scalar or a d x d matrix), got {sorted(params)}")
        return {"P": check_step("P", params["P"], d, positive=False)}
    if family == "gd++":
        if set(params) != {"gamma", "eta"}:
            raise ValueError(f"the gd++ family takes gamma and eta, got {sorted(params)}")
        return {"gamma": exact_real("gamma", params["gamma"]), "eta": exact_real("eta", params["eta"])}
    raise ValueError(f"family must be one of {', '.join(LOOP_FAMILIES)}, got {family!r}")


def _as_matrix(P, size):
    """A scalar step as ``P I``; a matrix step as it is."""
    if isinstance(P, (sympy.MatrixBase, sympy.MatrixExpr)):
        return P
    return P * (Identity(size) if isinstance(size, sympy.Symbol) else sympy.eye(size))


def _family_rows(family: str, args: dict, Gxx, Gxy, x, y, w, o, d) -> list:
    """The one definition of each family's rule: the new row blocks ``(x, y, w, one)`` of
    columns with row blocks ``x, y, w, o``, given the blocks ``G_xx``, ``G_xy`` of the prompt's
    ``G`` (explicit matrices or matrix expressions)."""
    if family == "preconditioned":
        h = Gxx * w - Gxy * o
        return [x, y, w - _as_matrix(args["P"], d) * h, o]
    h = Gxx * (x + w) - Gxy * o
    return [x - args["gamma"] * h, y, w - args["eta"] * h, o]


def loop_family_step(family: str, G, Z, **params) -> sympy.Matrix:
    """One step of a loop family (module docstring) on the columns ``Z`` (explicit, ``2d + 2``
    rows) of a prompt whose statistics are ``G = Z_full Z_full^T / n`` (``D x D``; ``Z`` may be
    the whole prompt, one column, or any columns: each column moves by the same rule).
    ``family``: "preconditioned" (``P=``) or "gd++" (``gamma=``, ``eta=``).

    >>> S, b = sympy.symbols("S b")
    >>> G = sympy.Matrix([[S, b, 0, 0], [b, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 1]])
    >>> loop_family_step("gd++", G, sympy.Matrix([1, 2, 0, 0]), gamma=sympy.Rational(1, 2), eta=1)
    Matrix([
    [1 - S/2],
    [      2],
    [     -S],
    [      0]])
    """
    for name, value in (("G", G), ("Z", Z)):
        try:
            sympy.Matrix(value)
        except (TypeError, ValueError, sympy.SympifyError) as exc:
            raise ValueError(f"{name} must be a matrix, got {type(value).__name__} {str(value)[:40]!r}") from exc
    G, Z = sympy.Matrix(G), sympy.Matrix(Z)
    if G.rows != G.cols or G.rows % 2 or G.rows < 4 or Z.rows != G.rows:
        raise ValueError(f"G must be square of size 2d + 2 and Z must have as many rows, got "
                         f"G {G.rows} x {G.cols} and Z {Z.rows} x {Z.cols}")
    L = Layout((G.rows - 2) // 2)
    args = _family_args(family, params, L.d)
    rows = [Z[L.block(r), :] for r in range(1, 5)]
    new = _family_rows(family, args, G[L.x, L.x], G[L.x, L.y], *rows, L.d)
    return sympy.Matrix.vstack(*new).applyfunc(sympy.expand)


def loop_family_params(family: str, d, **params) -> tuple:
    """``(V, W)`` whose loop is one step of the family (``prove_loop_step``; docs/theory.md
    section 18): "preconditioned" ``V31 = -P``, ``W13 = I``, ``W24 = -1`` (Theorem 3.2's
    construction with ``P``, ``theory.gd_transformer_params``); "gd++" adds the input
    transformation ``V11 = -gamma I``, ``W11 = I`` to Theorem 3.2's ``V31 = -eta I``,
    ``W13 = I``, ``W24 = -1``.  ``d`` an int (explicit matrices) or a Symbol (BlockMatrix).

    >>> V, W = loop_family_params("gd++", 1, gamma=sympy.Rational(1, 3), eta=sympy.Rational(2, 5))
    >>> V
    Matrix([
    [-1/3, 0, 0, 0],
    [   0, 0, 0, 0],
    [-2/5, 0, 0, 0],
    [   0, 0, 0, 0]])
    """
    layout = Layout(check_dim("d", d))
    args = _family_args(family, params, layout.d)
    if family == "preconditioned":
        V = _blocks(layout, {(3, 1): -args["P"]})
        W = _blocks(layout, {(1, 3): 1, (2, 4): -1})
    else:
        V = _blocks(layout, {(1, 1): -args["gamma"], (3, 1): -args["eta"]})
        W = _blocks(layout, {(1, 1): 1, (1, 3): 1, (2, 4): -1})
    return V, W


# ---------------------------------------------------------------------------------------------
# What any loop does to a prompt of Z_0's form


@dataclass(frozen=True)
class LoopUpdate:
    """``loop_update``'s result (docs/theory.md section 18), matrix expressions in the private
    MatrixSymbols ``S``, ``w_star``, ``w`` (the estimate before the loop) and the symbol ``n``
    (``statistics``; substitute values with ``expr.subs``).

    ``data``: the new data column as linear maps of ``(x_j, y_j)``,
    ``{"x": (x coefficient, y coefficient), "y": ..., "w": ..., "one": ...}``.
    ``stats``: the statistics of the new data columns, ``{"S": S', "S w*": (1/n) sum x'_j y'_j,
    "w*^T S w*": (1/n) sum y'_j^2}``, and the Gram of what the loop wrote into their w rows with
    their x rows, ``"U X^T / n"``, as products ``T_r S T_s^T`` (``expanded(name)`` multiplies one out).  ``column``: the new estimate column ``{"x", "y", "w", "one"}``.
    ``keeps_form``: True when the data columns stay zero on the w and one rows and the estimate
    column on the x and y rows (then the next loop sees a prompt of the same form)."""

    data: dict
    stats: dict
    column: dict
    keeps_form: bool
    statistics: dict = field(repr=False)

    def expanded(self, name: str):
        """The statistic ``stats[name]`` multiplied out, like terms collected."""
        S = self.statistics["S"]
        return _collect(self.stats[name].doit().xreplace({S.T: S}))     # S is symmetric

    def __str__(self) -> str:
        lines = [f"S' = {self.stats['S']}", f"(S w*)' = {self.stats['S w*']}",
                 f"(w*^T S w*)' = {self.stats['w*^T S w*']}", f"w' = {self.column['w']}"]
        return "\n".join(lines)


def _is_zero_expr(expr) -> bool:
    if isinstance(expr, sympy.MatrixBase):
        return all(sympy.expand(e) == 0 for e in expr)
    e = sympy.expand(expr.doit()) if isinstance(expr, sympy.MatrixExpr) else sympy.expand(expr)
    return e == 0 or bool(getattr(e, "is_ZeroMatrix", False))


def loop_update(V, W) -> LoopUpdate:
    """What one loop of ``(V, W)`` does to a prompt of ``Z_0``'s form, data columns
    ``(x_j, y_j, 0, 0)`` and estimate column ``(0, 0, w, 1)`` (docs/theory.md section 18):
    ``M = I + V G W`` with ``G = blockdiag(stat, [[w w^T, w], [w^T, 1]] / n)``, every column
    ``z <- M z``.  ``V``, ``W``: explicit ``(2d + 2)``-square matrices (numbers read by
    ``validation.exact_real``) or 4 x 4 BlockMatrix objects (symbolic d).

    >>> eta, gamma = sympy.symbols("eta gamma")
    >>> u = loop_update(*loop_family_params("gd++", 2, gamma=gamma, eta=eta))
    >>> u.column["w"]
    (-eta)*S*w + eta*S*w_star + w
    >>> u.stats["S"]
    ((-gamma)*S + I)*S*((-gamma)*S + I)
    >>> u.expanded("S")
    (-2*gamma)*S**2 + gamma**2*S**3 + S
    >>> u.data["x"][0]
    (-gamma)*S + I
    >>> u.keeps_form
    False
    >>> loop_update(*loop_family_params("preconditioned", 2, P=eta)).keeps_form
    True
    """
    d, Vb, Wb = _check_pair(V, W)
    S = MatrixSymbol(sympy.Dummy("S"), d, d)
    ws = MatrixSymbol(sympy.Dummy("w_star"), d, 1)
    w = MatrixSymbol(sympy.Dummy("w"), d, 1)
    n = sympy.Dummy("n", positive=True)
    sizes = {1: d, 2: 1, 3: d, 4: 1}
    G = {(1, 1): S, (1, 2): S * ws, (2, 1): ws.T * S, (2, 2): ws.T * S * ws,
         (3, 3): w * w.T / n, (3, 4): w / n, (4, 3): w.T / n, (4, 4): Identity(1) / n}

    def M(r, c):
        terms = [Identity(sizes[r])] if r == c else []
        for (vr, vb), v in Vb.items():
            if vr != r:
                continue
            for (wc, we), wm in Wb.items():
                if we == c and (vb, wc) in G:
                    terms.append(v * G[(vb, wc)] * wm)
        if not terms:
            return ZeroMatrix(sizes[r], sizes[c])
        return _collect(sympy.MatAdd(*terms))

    Mb = {(r, c): M(r, c) for r in range(1, 5) for c in range(1, 5)}
    data = {BLOCK_NAMES[r]: (Mb[(r, 1)], Mb[(r, 2)]) for r in range(1, 5)}

    # Labels are y_j = w*^T x_j, so a row block of the new data column is T_r x_j with
    # T_r = M_r1 + M_r2 w*^T, and its statistics are products T_r S T_s^T (left unexpanded:
    # ``LoopUpdate.expanded`` multiplies them out).
    T = {r: _collect(sympy.MatAdd(Mb[(r, 1)], Mb[(r, 2)] * ws.T)) for r in range(1, 5)}
    stats = {"S": T[1] * S * T[1].T, "S w*": T[1] * S * T[2].T, "w*^T S w*": T[2] * S * T[2].T,
             "U X^T / n": T[3] * S * T[1].T}
    stats = {key: value.xreplace({S.T: S}) for key, value in stats.items()}      # S is symmetric
    c = {3: w, 4: Identity(1)}
    column = {}
    for r in range(1, 5):
        terms = [Mb[(r, e)] * c[e] for e in (3, 4)]
        column[BLOCK_NAMES[r]] = _collect(sympy.MatAdd(*terms))
    keeps = all(_is_zero_expr(Mb[(r, e)]) for r in (3, 4) for e in (1, 2)) and \
        all(_is_zero_expr(column[name]) for name in ("x", "y"))
    st = {"S": S, "w_star": ws, "w": w, "n": n}
    return LoopUpdate(data, stats, column, keeps, st)


# ---------------------------------------------------------------------------------------------
# Proofs: one loop is one step of a family, for every prompt


@dataclass(frozen=True)
class LoopProof:
    """``prove_loop_step``'s result: truthy exactly when one loop of ``(V, W)`` is one step of
    the family on every prompt.  ``leftover``: ``V G W - K(G)`` (explicit, for an integer d) or the
    difference of the new prompt and the family's step (block matrices, symbolic d), zero exactly
    then; ``rows``: the row blocks where it is not zero; ``family``, ``params``: what was checked."""

    holds: bool
    family: str
    params: dict
    leftover: object
    rows: tuple = ()

    def __bool__(self) -> bool:
        return self.holds


def _symbolic_gram(d: int):
    """The affine hull of the Grams ``Z Z^T / n`` of prompts whose data columns are
    ``(x, y, u, 0)`` and whose one estimate column is ``(e, 0, w, 1)``: symmetric, with
    ``G_(one, y) = 0`` and ``G_(one, one) = 1/n``; every other entry free (private symbols)."""
    L = Layout(d)
    n = sympy.Dummy("n", positive=True)
    cache: dict = {}

    def entry(i, j):
        i, j = min(i, j), max(i, j)
        if j == L.D - 1 and i == L.D - 1:
            return 1 / n
        if j == L.D - 1 and i == d:
            return sympy.Integer(0)
        if (i, j) not in cache:
            cache[(i, j)] = sympy.Dummy(f"g{i}_{j}")
        return cache[(i, j)]
    return sympy.Matrix(L.D, L.D, entry)


def _literal_proof(family: str, args: dict) -> LoopProof:
    """The family's construction for symbolic d and n on the literal layer
    ``Z + V Z Z^T W Z / n``, on a prompt with data columns ``(X, y^T, U, 0)`` and estimate column
    ``(e, 0, w, 1)`` (all blocks private MatrixSymbols), against ``loop_family_step``."""
    d, n = (sympy.Dummy(s, positive=True, integer=True) for s in ("d", "n"))
    X, U = MatrixSymbol(sympy.Dummy("X"), d, n), MatrixSymbol(sympy.Dummy("U"), d, n)
    y = MatrixSymbol(sympy.Dummy("y"), n, 1)
    e, w = MatrixSymbol(sympy.Dummy("e"), d, 1), MatrixSymbol(sympy.Dummy("w"), d, 1)
    Z = BlockMatrix([[X, e], [y.T, ZeroMatrix(1, 1)], [U, w], [ZeroMatrix(1, n), Identity(1)]])
    if "P" in args and args["P"] is None:
        args = {"P": MatrixSymbol(sympy.Dummy("P"), d, d)}
    V, W = loop_family_params(family, d, **args)
    out = block_collapse(Z + V * Z * Z.T * W * Z / n)
    G = block_collapse(Z * Z.T / n)
    rows = [BlockMatrix([list(Z.blocks[r, :])]) for r in range(4)]
    target = [block_collapse(t) for t in _family_rows(family, args, G.blocks[0, 0], G.blocks[0, 1], *rows, d)]
    blocks, bad = [], []
    for r in range(4):
        got = BlockMatrix([list(out.blocks[r, :])])
        diff = block_collapse(got - target[r])
        parts = diff.blocks if isinstance(diff, BlockMatrix) else [[diff]]
        zero = True
        for part in (parts[0, :] if hasattr(parts, "shape") else parts[0]):
            e_ = sympy.expand(part.doit())
            if not (e_ == 0 or getattr(e_, "is_ZeroMatrix", False)):
                zero = False
        blocks.append(diff)
        if not zero:
            bad.append(BLOCK_NAMES[r + 1])
    return LoopProof(not bad, family, args, blocks, tuple(bad))


def prove_loop_step(family: str, V=None, W=None, **params) -> LoopProof:
    """Is one loop of ``(V, W)`` one step of the loop family (module docstring) on every prompt,
    data columns included?  (docs/theory.md section 18.)

    * No ``V``, ``W``: a proof for symbolic d and n on the literal layer with the family's
      construction ``loop_family_params`` (``P`` None: a symbolic ``d x d`` P; ``gamma``, ``eta``
      default to symbols), on a prompt of the general form the family reaches (data columns
      ``(X, y, U, 0)``, estimate column ``(e, 0, w, 1)``).
    * ``V``, ``W`` explicit (``2d + 2``-square): ``f(Z) = (I + V G W) Z`` and the family's step is
      ``(I + K(G)) Z`` for the same ``G = Z Z^T / n``; the columns of such prompts span every
      direction, so the loop is the step exactly when ``V G W = K(G)`` on the affine hull of the
      reachable Grams, checked with independent symbols for its free entries.

    >>> V, W = loop_family_params("gd++", 2, gamma=sympy.Rational(1, 5), eta=sympy.Rational(2, 5))
    >>> bool(prove_loop_step("gd++", V, W, gamma=0.2, eta=0.4))
    True
    >>> prove_loop_step("gd++", V, W, gamma=0, eta=0.4).rows      # it moves the inputs too
    ('x',)
    >>> bool(prove_loop_step("gd++")), bool(prove_loop_step("preconditioned"))
    (True, True)
    """
    if V is None and W is None:
        allowed = {"preconditioned": {"P"}, "gd++": {"gamma", "eta"}}.get(family, set())
        if set(params) - allowed:
            raise ValueError(f"the {family} family takes {', '.join(sorted(allowed)) or 'nothing'}, got "
                             f"{', '.join(sorted(params))}")
        if family == "preconditioned":
            args = {"P": params.get("P")}
            if args["P"] is not None and not isinstance(args["P"], sympy.MatrixExpr):
                args = {"P": exact_real("P", args["P"])}
        elif family == "gd++":
            args = {"gamma": exact_real("gamma", params.get("gamma", sympy.Dummy("gamma"))),
                    "eta": exact_real("eta", params.get("eta", sympy.Dummy("eta")))}
        else:
            raise ValueError(f"family must be one of {', '.join(LOOP_FAMILIES)}, got {family!r}")
        return _literal_proof(family, args)
    if V is None or W is None:
        raise ValueError("give both V and W, or neither")
    d, _, _ = _check_pair(V, W)
    if isinstance(d, sympy.Symbol):
        raise ValueError("prove_loop_step with a given (V, W) needs an integer d (explicit matrices)")
    V, W = exact_matrix("V", V), exact_matrix("W", W)
    args = _family_args(family, params, d)
    G = _symbolic_gram(d)
    K = loop_family_step(family, G, sympy.eye(2 * d + 2), **args) - sympy.eye(2 * d + 2)
    leftover = (V * G * W - K).applyfunc(sympy.expand)
    L = Layout(d)
    bad = tuple(BLOCK_NAMES[r] for r in range(1, 5) if any(e != 0 for e in leftover[L.block(r), :]))
    return LoopProof(not bad, family, args, ImmutableMatrix(leftover), bad)
