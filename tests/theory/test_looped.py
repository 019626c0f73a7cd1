"""theory.looped (issue 24): the loop families' rules, their constructions, the proofs that one
loop is one step of a family, and ``loop_update`` (what one loop does to a prompt of Z_0's form).

Every check here is exact (sympy, rationals): the proofs are run as they are, fed wrong
constructions and wrong rules (monkeypatched where the proofs look them up), and ``loop_update``'s
expressions are compared with the literal layer ``Z + V Z Z^T W Z / n`` on explicit prompts with
rational data."""
from decimal import Decimal
from fractions import Fraction

import numpy as np
import pytest
import sympy
from hypothesis import given, settings
from hypothesis import strategies as st
from sympy import Rational as R

import theory
from theory import looped

LOOP_FAMILY_PARAMS = looped.loop_family_params      # the library's, before any monkeypatch
FAMILY_ROWS = looped._family_rows

# The numbers users pass, each a converter from the decimal text they typed.
NUMBER_TYPES = {
    "float": float,
    "float16": np.float16,
    "float32": np.float32,
    "float64": np.float64,
    "sympy.Float": sympy.Float,
    "Fraction": Fraction,
    "Decimal": Decimal,
}
INT_TYPES = {"int": int, "int32": np.int32, "int64": np.int64, "sympy.Integer": sympy.Integer}


# ---------------------------------------------------------------------------------------------
# helpers


def _double_block(M, r: int, c: int):
    """``M`` with its block (r, c) (1-based, docs/theory.md section 3) doubled: explicit matrices
    (integer d) and 4 x 4 BlockMatrix objects (symbolic d) alike."""
    if isinstance(M, sympy.BlockMatrix):
        blocks = M.blocks.as_mutable()
        blocks[r - 1, c - 1] = 2 * blocks[r - 1, c - 1]
        return sympy.BlockMatrix(blocks.tolist())
    L = theory.Layout((M.rows - 2) // 2)
    M = sympy.Matrix(M)
    M[L.block(r), L.block(c)] = 2 * M[L.block(r), L.block(c)]
    return M


def _doubling(name: str, r: int, c: int):
    """A wrong ``loop_family_params``: the library's construction with one block doubled."""
    def wrong(family, d, **params):
        V, W = LOOP_FAMILY_PARAMS(family, d, **params)
        return (_double_block(V, r, c), W) if name == "V" else (V, _double_block(W, r, c))
    return wrong


def _literal_layer(V, W, Z, n):
    """The LSA layer as written, ``Z + V Z (Z^T W Z) / n`` (docs/theory.md section 3)."""
    return (Z + V * Z * (Z.T * W * Z) / n).applyfunc(sympy.expand)


def _prompt(X, w_star, w0, U=None, e=None):
    """An explicit prompt: data columns ``(x_j, y_j, u_j, 0)`` with ``y = X^T w*`` and the
    estimate column ``(e, 0, w0, 1)`` (``U``, ``e`` zero by default: Z_0's form)."""
    d, n = X.shape
    U = sympy.zeros(d, n) if U is None else U
    e = sympy.zeros(d, 1) if e is None else e
    y = X.T * w_star
    top = sympy.Matrix.hstack(X, e)
    return sympy.Matrix.vstack(top, sympy.Matrix.hstack(y.T, sympy.zeros(1, 1)),
                               sympy.Matrix.hstack(U, w0), sympy.Matrix.hstack(sympy.zeros(1, n), sympy.ones(1, 1)))


def _evaluate(expr, values: dict, shape: tuple) -> sympy.Matrix:
    """A ``loop_update`` expression with its MatrixSymbols replaced by explicit matrices."""
    if isinstance(expr, (sympy.MatrixExpr, sympy.MatrixBase)):
        out = expr.xreplace(values)
        out = out.doit() if hasattr(out, "doit") else out
        out = sympy.Matrix(out.as_explicit() if isinstance(out, sympy.MatrixExpr) else out)
    else:                                     # a scalar 0 standing for a zero block
        out = sympy.Matrix(*shape, lambda i, j: sympy.sympify(expr).xreplace(values))
    assert out.shape == shape, (expr, out.shape, shape)
    return out.applyfunc(sympy.expand)


# ---------------------------------------------------------------------------------------------
# the symbolic proofs (symbolic d and n, the literal layer)


def test_symbolic_proofs_hold():
    """Exact: one loop of each family's construction is one step of its rule, for symbolic d, n
    (and symbolic gamma, eta, d x d P)."""
    for family in ("gd++", "preconditioned"):
        proof = theory.prove_loop_step(family)
        assert proof.holds is True and bool(proof) and proof.rows == () and proof.family == family


@pytest.mark.parametrize("family, params, expected", [
    ("gd++", {"gamma": 0.2, "eta": 0.4}, {"gamma": R(1, 5), "eta": R(2, 5)}),
    ("gd++", {"gamma": 0, "eta": Fraction(3, 7)}, {"gamma": 0, "eta": R(3, 7)}),
    ("gd++", {"gamma": np.float32(-0.3), "eta": Decimal("1.5")}, {"gamma": R(-3, 10), "eta": R(3, 2)}),
    ("preconditioned", {"P": 0.3}, {"P": R(3, 10)}),
    ("preconditioned", {"P": np.int64(2)}, {"P": 2}),
])
def test_symbolic_proofs_hold_with_numbers(family, params, expected):
    """Exact: the symbolic-d proofs with numeric gamma, eta, P hold, the numbers read by the
    toolkit's one rule (0.2 -> 1/5)."""
    proof = theory.prove_loop_step(family, **params)
    assert proof and proof.rows == ()
    assert proof.params == expected


@pytest.mark.parametrize("family, block, rows", [
    ("gd++", ("V", 1, 1), ("x",)),
    ("gd++", ("V", 3, 1), ("w",)),
    ("gd++", ("W", 1, 1), ("x", "w")),
    ("preconditioned", ("V", 3, 1), ("w",)),
    ("preconditioned", ("W", 1, 3), ("w",)),
    ("preconditioned", ("W", 2, 4), ("w",)),
])
def test_symbolic_proof_rejects_a_doubled_block(monkeypatch, family, block, rows):
    """Exact: ``loop_family_params`` returning a construction with one block doubled (where the
    proof looks it up) makes the symbolic proof False, the leftover in the row blocks it writes."""
    monkeypatch.setattr(looped, "loop_family_params", _doubling(*block))
    proof = theory.prove_loop_step(family)
    assert proof.holds is False and not proof
    assert proof.rows == rows


def _gdpp_without_gamma(family, args, Gxx, Gxy, x, y, w, o, d):
    h = Gxx * (x + w) - Gxy * o
    return [x, y, w - args["eta"] * h, o]


def _gdpp_h_of_x_only(family, args, Gxx, Gxy, x, y, w, o, d):
    h = Gxx * x
    return [x - args["gamma"] * h, y, w - args["eta"] * h, o]


def _gdpp_without_label(family, args, Gxx, Gxy, x, y, w, o, d):
    h = Gxx * (x + w)
    return [x - args["gamma"] * h, y, w - args["eta"] * h, o]


def _precond_sign(family, args, Gxx, Gxy, x, y, w, o, d):
    h = Gxx * w + Gxy * o
    return [x, y, w - looped._as_matrix(args["P"], d) * h, o]


def _precond_transposed(family, args, Gxx, Gxy, x, y, w, o, d):
    P = looped._as_matrix(args["P"], d)
    return [x, y, w - P.T * (Gxx * w - Gxy * o), o]


WRONG_RULES = [
    ("gd++", _gdpp_without_gamma, ("x",)),
    ("gd++", _gdpp_h_of_x_only, ("x", "w")),
    ("gd++", _gdpp_without_label, ("x", "w")),
    ("preconditioned", _precond_sign, ("w",)),
    ("preconditioned", _precond_transposed, ("w",)),
]


@pytest.mark.parametrize("family, rule, rows", WRONG_RULES)
def test_symbolic_proof_rejects_a_wrong_rule(monkeypatch, family, rule, rows):
    """Exact: a wrong ``_family_rows`` (the one definition of each rule) makes the correct
    construction's symbolic proof False, in the row blocks where the rules differ (the
    transposed P is caught because P is a general symbolic d x d matrix)."""
    monkeypatch.setattr(looped, "_family_rows", rule)
    proof = theory.prove_loop_step(family)
    assert proof.holds is False
    assert proof.rows == rows


@pytest.mark.parametrize("family, rule, rows", WRONG_RULES)
@pytest.mark.parametrize("d", [1, 2])
def test_explicit_proof_rejects_a_wrong_rule(monkeypatch, family, rule, rows, d):
    """Exact: the explicit-matrix proof of the correct construction fails against a wrong rule,
    in the same row blocks (d = 1: the transposed P is the same P and the proof must hold)."""
    params = {"gamma": R(1, 3), "eta": R(2, 5)} if family == "gd++" else \
        {"P": sympy.Matrix(d, d, lambda i, j: R(i + 2 * j + 1, 7))}
    V, W = theory.loop_family_params(family, d, **params)
    assert theory.prove_loop_step(family, V, W, **params)
    monkeypatch.setattr(looped, "_family_rows", rule)
    proof = theory.prove_loop_step(family, V, W, **params)
    if rule is _precond_transposed and d == 1:
        assert proof and proof.rows == ()
    else:
        assert proof.holds is False and proof.rows == rows


# ---------------------------------------------------------------------------------------------
# explicit proofs, d = 1, 2, 3, the numbers users pass


def _gdpp_rows(same_gamma: bool, same_eta: bool) -> tuple:
    return tuple(name for name, same in (("x", same_gamma), ("w", same_eta)) if not same)


DECIMALS = st.sampled_from(["0", "0.1", "0.2", "0.25", "0.4", "0.5", "0.75", "1", "1.5", "-0.3", "2"])


@given(d=st.integers(1, 3), gamma=DECIMALS, eta=DECIMALS, other=DECIMALS,
       kind=st.sampled_from(sorted(NUMBER_TYPES)), kind2=st.sampled_from(sorted(NUMBER_TYPES)),
       which=st.sampled_from(["gamma", "eta", "both"]))
def test_explicit_gdpp_proof_with_user_numbers(d, gamma, eta, other, kind, kind2, which):
    """Exact: gd++'s construction built from numbers of one type is proved with the same values
    given in another type (all read by the shortest-decimal rule, so 0.2 is 1/5 in every type);
    a different gamma fails in the x rows, a different eta in the w rows."""
    conv, conv2 = NUMBER_TYPES[kind], NUMBER_TYPES[kind2]
    V, W = theory.loop_family_params("gd++", d, gamma=conv(gamma), eta=conv(eta))
    proof = theory.prove_loop_step("gd++", V, W, gamma=conv2(gamma), eta=conv2(eta))
    assert proof and proof.rows == ()
    assert proof.params == {"gamma": sympy.Rational(gamma), "eta": sympy.Rational(eta)}
    assert proof.leftover == sympy.zeros(2 * d + 2, 2 * d + 2)
    g2 = other if which in ("gamma", "both") else gamma
    e2 = other if which in ("eta", "both") else eta
    wrong = theory.prove_loop_step("gd++", V, W, gamma=conv2(g2), eta=conv2(e2))
    rows = _gdpp_rows(sympy.Rational(g2) == sympy.Rational(gamma), sympy.Rational(e2) == sympy.Rational(eta))
    assert bool(wrong) is (rows == ()) and wrong.rows == rows


@settings(max_examples=15)
@given(d=st.integers(1, 3), data=st.data(), kind=st.sampled_from(sorted(NUMBER_TYPES)))
def test_explicit_preconditioned_proof_with_user_numbers(d, data, kind):
    """Exact: the preconditioned construction for a d x d P of typed decimals (any number type,
    as a numpy array or nested lists) is proved for that P; a P with one entry changed, or a
    scalar P, fails in the w rows."""
    conv = NUMBER_TYPES[kind]
    texts = [[data.draw(DECIMALS) for _ in range(d)] for _ in range(d)]
    P = [[conv(t) for t in row] for row in texts]
    P_exact = sympy.Matrix([[sympy.Rational(t) for t in row] for row in texts])
    V, W = theory.loop_family_params("preconditioned", d, P=P)
    assert V[theory.Layout(d).w, theory.Layout(d).x] == -P_exact
    assert theory.prove_loop_step("preconditioned", V, W, P=P_exact)
    assert theory.prove_loop_step("preconditioned", V, W, P=np.array(P_exact.tolist(), dtype=np.float64))
    i, j = data.draw(st.integers(0, d - 1)), data.draw(st.integers(0, d - 1))
    Q = P_exact.copy()
    Q[i, j] += R(1, 10)
    wrong = theory.prove_loop_step("preconditioned", V, W, P=Q)
    assert wrong.holds is False and wrong.rows == ("w",)
    if any(P_exact[a, b] != (P_exact[0, 0] if a == b else 0) for a in range(d) for b in range(d)):
        scalar = theory.prove_loop_step("preconditioned", V, W, P=conv("0.5") if kind != "Decimal" else Decimal("0.5"))
        assert not scalar and scalar.rows == ("w",)


@pytest.mark.parametrize("conv", list(INT_TYPES.values()), ids=list(INT_TYPES))
@pytest.mark.parametrize("d", [1, 2, 3])
def test_explicit_proofs_with_integer_types(conv, d):
    """Exact: integer parameters of every type (numpy included) are read as they are; a scalar P
    is P I."""
    V, W = theory.loop_family_params("gd++", d, gamma=conv(1), eta=conv(2))
    assert theory.prove_loop_step("gd++", V, W, gamma=1, eta=2)
    assert theory.prove_loop_step("gd++", V, W, gamma=conv(2), eta=conv(2)).rows == ("x",)
    V, W = theory.loop_family_params("preconditioned", d, P=conv(3))
    assert theory.prove_loop_step("preconditioned", V, W, P=3 * sympy.eye(d))
    assert theory.prove_loop_step("preconditioned", V, W, P=conv(-3)).rows == ("w",)


@pytest.mark.parametrize("d", [1, 2, 3])
def test_explicit_proofs_of_doubled_blocks_fail_in_their_rows(d):
    """Exact: an explicit construction with one block doubled is not a step of its family, the
    leftover in the row blocks the block writes; the proof of the numeric float64 construction
    (numerics' ``family_params``) holds."""
    import numerics.loop_families as lf
    gd_pp = {"gamma": R(1, 4), "eta": R(1, 2)}
    V, W = theory.loop_family_params("gd++", d, **gd_pp)
    Vf, Wf = lf.family_params("gd++", d, {"gamma": 0.25, "eta": 0.5})
    assert theory.prove_loop_step("gd++", Vf, Wf, **gd_pp)
    for (name, r, c), rows in [(("V", 1, 1), ("x",)), (("V", 3, 1), ("w",)), (("W", 1, 1), ("x", "w")),
                               (("W", 2, 4), ("x", "w"))]:
        Vb, Wb = (_double_block(V, r, c), W) if name == "V" else (V, _double_block(W, r, c))
        assert theory.prove_loop_step("gd++", Vb, Wb, **gd_pp).rows == rows, (name, r, c)
    V, W = theory.loop_family_params("preconditioned", d, P=R(2, 3))
    for name, r, c in [("V", 3, 1), ("W", 1, 3), ("W", 2, 4)]:
        Vb, Wb = (_double_block(V, r, c), W) if name == "V" else (V, _double_block(W, r, c))
        proof = theory.prove_loop_step("preconditioned", Vb, Wb, P=R(2, 3))
        assert proof.holds is False and proof.rows == ("w",), (name, r, c)


@pytest.mark.parametrize("d", [1, 2, 3])
def test_a_learned_scale_random_pair_is_no_family_step(d):
    """Exact: a random (V, W) at the scale of a learned one (entries ~ 0.3) is a step of neither
    family; its leftover is non-zero in every row block."""
    rng = np.random.default_rng(d)
    D = 2 * d + 2
    V, W = (0.3 * rng.standard_normal((2, D, D))).astype(np.float32)    # trained in float32
    for family, params in (("gd++", {"gamma": 0.1, "eta": 0.4}), ("preconditioned", {"P": 0.4})):
        proof = theory.prove_loop_step(family, V, W, **params)
        assert proof.holds is False and proof.rows == ("x", "y", "w", "one")


def test_scale_invariance_of_the_preconditioned_construction():
    """Exact: ``(V31, W13, W24) -> (c V31, W13 / c, W24 / c)`` keeps the preconditioned step
    (docs/theory.md section 4), so the proof holds for the rescaled pair too."""
    d, c = 2, R(3, 2)
    L = theory.Layout(d)
    P = sympy.Matrix([[R(1, 2), R(1, 5)], [R(-1, 3), 1]])
    V, W = theory.loop_family_params("preconditioned", d, P=P)
    V, W = sympy.Matrix(V), sympy.Matrix(W)
    V[L.w, L.x] = c * V[L.w, L.x]
    W[L.x, L.w], W[L.y, L.one] = W[L.x, L.w] / c, W[L.y, L.one] / c
    assert theory.prove_loop_step("preconditioned", V, W, P=P)


# ---------------------------------------------------------------------------------------------
# the rule itself against the literal layer on explicit prompts


@pytest.mark.parametrize("family, params", [
    ("gd++", {"gamma": R(1, 3), "eta": R(2, 5)}),
    ("gd++", {"gamma": 0, "eta": R(1, 2)}),
    ("preconditioned", {"P": sympy.Matrix([[R(1, 2), R(1, 3)], [R(-1, 4), R(3, 5)]])}),
])
def test_family_step_is_the_literal_layer_on_explicit_prompts(family, params):
    """Exact: on explicit rational prompts of the general form (data columns (x, y, u, 0),
    estimate column (e, 0, w, 1)) ``loop_family_step(G, Z)`` with ``G = Z Z^T / n`` is the
    literal layer of the construction, for the whole prompt and column by column."""
    X = sympy.Matrix([[1, 2, -1], [0, 1, 3]])
    Z = _prompt(X, sympy.Matrix([R(1, 2), -2]), sympy.Matrix([1, R(-1, 3)]),
                U=sympy.Matrix([[R(1, 5), 0, 1], [2, -1, R(1, 2)]]), e=sympy.Matrix([R(2, 3), -1]))
    n = X.cols
    G = Z * Z.T / n
    V, W = theory.loop_family_params(family, 2, **params)
    literal = _literal_layer(V, W, Z, n)
    assert theory.loop_family_step(family, G, Z, **params) == literal
    for j in range(Z.cols):
        assert theory.loop_family_step(family, G, Z[:, j], **params) == literal[:, j]


# ---------------------------------------------------------------------------------------------
# loop_update against the literal layer


def _random_rational_pair(d: int, seed: int, density: float = 1.0):
    """A random rational (V, W), entries p/q with |p| <= 3, q <= 4, each non-zero with probability
    ``density`` (loop_update of a dense pair takes seconds)."""
    rng = np.random.default_rng(seed)
    D = 2 * d + 2

    def entry(i, j):
        value = R(int(rng.integers(-3, 4)), int(rng.integers(1, 5)))
        return value if rng.random() < density else 0
    return tuple(sympy.Matrix(D, D, entry) for _ in range(2))


PAIRS = {
    "gd++": lambda d: theory.loop_family_params("gd++", d, gamma=R(1, 3), eta=R(2, 5)),
    "gd++ gamma 0": lambda d: theory.loop_family_params("gd++", d, gamma=0, eta=R(2, 5)),
    "preconditioned": lambda d: theory.loop_family_params(
        "preconditioned", d, P=sympy.Matrix(d, d, lambda i, j: R(i - 2 * j + 1, 3))),
    "random": lambda d: _random_rational_pair(d, 7 + d, 0.5 if d == 1 else 0.35),
}
CASES = [(name, d, n) for name in ("gd++", "gd++ gamma 0", "preconditioned") for d, n in ((1, 2), (2, 3), (3, 4))] \
    + [("random", 1, 2), ("random", 2, 3)]


@pytest.mark.parametrize("name, d, n", CASES)
def test_loop_update_is_the_literal_layer(name, d, n):
    """Exact: on an explicit Z_0 with rational data (X full rank, n >= d, y = X^T w*, a rational
    w_0), one literal layer's new data columns, the statistics of its data columns (S', (S w*)',
    (w*^T S w*)', U X^T / n) and its new estimate column equal ``loop_update(V, W)``'s expressions
    with S = X X^T / n, w_star, w = w_0 and n substituted."""
    X = sympy.Matrix(d, n, lambda i, j: R((i + 1) * (j + 2) % 5 - 1 + (3 if i == j else 0), 1 + (i + j) % 2))
    assert X.rank() == d
    w_star = sympy.Matrix(d, 1, lambda i, j: R(2 * i - 1, 3))
    w0 = sympy.Matrix(d, 1, lambda i, j: R(1 - i, 2))
    Z = _prompt(X, w_star, w0)
    V, W = PAIRS[name](d)
    out = _literal_layer(sympy.Matrix(V), sympy.Matrix(W), Z, n)
    L = theory.Layout(d)
    data, column = out[:, :n], out[:, n]
    Xn, yn, Un, On = data[L.x, :], data[L.y, :], data[L.w, :], data[L.one, :]

    u = theory.loop_update(V, W)
    s = u.statistics
    values = {s["S"]: sympy.ImmutableMatrix(X * X.T / n), s["w_star"]: sympy.ImmutableMatrix(w_star),
              s["w"]: sympy.ImmutableMatrix(w0), s["n"]: n}
    size = {"x": d, "y": 1, "w": d, "one": 1}
    y = X.T * w_star
    for row, block in (("x", Xn), ("y", yn), ("w", Un), ("one", On)):
        cx, cy = (_evaluate(e, values, (size[row], c)) for e, c in zip(u.data[row], (d, 1)))
        assert cx * X + cy * y.T == block, row
    assert _evaluate(u.stats["S"], values, (d, d)) == (Xn * Xn.T / n).applyfunc(sympy.expand)
    assert _evaluate(u.stats["S w*"], values, (d, 1)) == (Xn * yn.T / n).applyfunc(sympy.expand)
    assert _evaluate(u.stats["w*^T S w*"], values, (1, 1)) == (yn * yn.T / n).applyfunc(sympy.expand)
    assert _evaluate(u.stats["U X^T / n"], values, (d, d)) == (Un * Xn.T / n).applyfunc(sympy.expand)
    for row, rows in (("x", L.x), ("y", L.y), ("w", L.w), ("one", L.one)):
        assert _evaluate(u.column[row], values, (size[row], 1)) == column[rows, :], row
    form = (Un == sympy.zeros(d, n) and On == sympy.zeros(1, n)
            and column[L.x, :] == sympy.zeros(d, 1) and column[L.y, :] == sympy.zeros(1, 1))
    assert u.keeps_form is form        # on this prompt the form is kept exactly when keeps_form says so
    assert u.keeps_form is (name == "preconditioned")


def test_loop_update_keeps_form():
    """Exact: keeps_form is True for the preconditioned construction (symbolic P and symbolic d as
    well) and for GD, False for gd++ (gamma != 0, and gamma = 0 too: W11 with V31 writes -eta S x_j into the
    data columns' w rows; random pairs: test_loop_update_is_the_literal_layer)."""
    eta, gamma = sympy.symbols("eta gamma")
    assert theory.loop_update(*theory.loop_family_params("preconditioned", 2, P=eta)).keeps_form is True
    assert theory.loop_update(*theory.gd_transformer_params(3, R(1, 2))).keeps_form is True
    assert theory.loop_update(*theory.loop_family_params("gd++", 2, gamma=gamma, eta=eta)).keeps_form is False
    assert theory.loop_update(*theory.loop_family_params("gd++", 1, gamma=R(1, 10), eta=R(1, 2))).keeps_form is False
    d = sympy.Symbol("d", integer=True, positive=True)                # symbolic d: BlockMatrix (V, W)
    assert theory.loop_update(*theory.loop_family_params("preconditioned", d, P=eta)).keeps_form is True
    assert theory.loop_update(*theory.loop_family_params("gd++", d, gamma=gamma, eta=eta)).keeps_form is False
    u = theory.loop_update(*theory.loop_family_params("gd++", 2, gamma=0, eta=R(1, 2)))
    assert u.keeps_form is False and u.data["x"][0] == sympy.Identity(2)


def test_loop_update_of_gdpp_is_the_documented_gdpp_layer():
    """Exact: for gd++ the data inputs become (I - gamma S) x_j, so S' = (I - gamma S) S (I - gamma S)
    and (S w*)' = (I - gamma S) S w*, and the estimate takes a GD step (module docstring)."""
    g, e = R(1, 3), R(2, 5)
    u = theory.loop_update(*theory.loop_family_params("gd++", 2, gamma=g, eta=e))
    s = u.statistics
    S, ws, w = s["S"], s["w_star"], s["w"]
    A = sympy.Identity(2) - g * S
    assert sympy.expand((u.stats["S"] - A * S * A).as_explicit()) == sympy.zeros(2, 2)
    assert sympy.expand((u.stats["S w*"] - A * S * ws).as_explicit()) == sympy.zeros(2, 1)
    assert sympy.expand((u.column["w"] - (w - e * (S * w - S * ws))).as_explicit()) == sympy.zeros(2, 1)


# ---------------------------------------------------------------------------------------------
# bad input: one ValueError, one line, naming the problem


def _one_line_error(call, *needles):
    with pytest.raises(ValueError) as info:
        call()
    text = str(info.value)
    assert "\n" not in text and text.strip(), text
    for needle in needles:
        assert needle in text, (needle, text)


G6, Z6 = sympy.zeros(6, 6), sympy.zeros(6, 2)


@pytest.mark.parametrize("call, needles", [
    (lambda: theory.loop_family_params("bogus", 2, eta=1), ("family", "bogus")),
    (lambda: theory.loop_family_step("gd", G6, Z6, eta=1), ("family", "'gd'")),
    (lambda: theory.prove_loop_step("bogus"), ("family", "bogus")),
    (lambda: theory.prove_loop_step("bogus", *theory.gd_transformer_params(2, 1)), ("family", "bogus")),
    (lambda: theory.loop_family_params("gd++", 2, eta=1), ("gamma", "eta")),
    (lambda: theory.loop_family_params("gd++", 2, gamma=1, eta=1, P=1), ("gamma", "eta")),
    (lambda: theory.loop_family_params("preconditioned", 2, eta=1), ("P",)),
    (lambda: theory.loop_family_step("gd++", G6, Z6, gamma=1), ("gamma", "eta")),
    (lambda: theory.prove_loop_step("gd++", *theory.gd_transformer_params(2, 1), eta=1), ("gamma", "eta")),
    (lambda: theory.prove_loop_step("preconditioned", *theory.gd_transformer_params(2, 1), eta=1), ("P",)),
    (lambda: theory.loop_family_params("gd++", 2, gamma="a", eta=1), ("gamma", "'a'")),
    (lambda: theory.loop_family_params("gd++", 2, gamma=1, eta=float("nan")), ("eta",)),
    (lambda: theory.loop_family_params("preconditioned", 2, P="a"), ("P", "'a'")),
    (lambda: theory.loop_family_params("preconditioned", 2, P=np.eye(3)), ("P", "2 x 2")),
    (lambda: theory.loop_family_step("gd++", G6, Z6, gamma="a", eta=1), ("gamma", "'a'")),
    (lambda: theory.prove_loop_step("gd++", gamma="a"), ("gamma", "'a'")),
    (lambda: theory.prove_loop_step("gd++", gamma=1, eta=float("inf")), ("eta",)),
    (lambda: theory.prove_loop_step("preconditioned", P="a"), ("P", "'a'")),
    (lambda: theory.loop_family_step("gd++", sympy.zeros(5, 5), sympy.zeros(5, 1), gamma=1, eta=1), ("5 x 5",)),
    (lambda: theory.loop_family_step("gd++", sympy.zeros(6, 5), Z6, gamma=1, eta=1), ("6 x 5",)),
    (lambda: theory.loop_family_step("gd++", G6, sympy.zeros(4, 2), gamma=1, eta=1), ("Z 4 x 2",)),
    (lambda: theory.loop_family_step("gd++", sympy.zeros(2, 2), sympy.zeros(2, 1), gamma=1, eta=1), ("2 x 2",)),
    (lambda: theory.prove_loop_step("gd++", sympy.eye(6), None, gamma=1, eta=1), ("V and W",)),
    (lambda: theory.prove_loop_step("gd++", sympy.eye(5), sympy.eye(5), gamma=1, eta=1), ("V", "5 x 5")),
    (lambda: theory.prove_loop_step("gd++", sympy.eye(6), sympy.eye(8), gamma=1, eta=1), ("same size",)),
    (lambda: theory.loop_update(sympy.eye(6), sympy.eye(8)), ("same size",)),
    (lambda: theory.loop_update(sympy.eye(6), "a"), ("W",)),
])
def test_bad_input_is_one_line_naming_the_problem(call, needles):
    """Exact: unknown families, wrong parameter names, non-numbers, non-finite numbers and
    matrices of the wrong shape are refused with one ValueError line naming the problem."""
    _one_line_error(call, *needles)


@pytest.mark.parametrize("family, params", [
    ("preconditioned", {"gamma": 1}),
    ("gd++", {"gama": 1, "eta": 1}),
])
def test_symbolic_proof_refuses_wrong_parameter_names(family, params):
    """Exact: the symbolic proof, like every other entry point, refuses a parameter its family
    does not take (a misspelt ``gama`` must not silently become a symbolic gamma)."""
    _one_line_error(lambda: theory.prove_loop_step(family, **params), family)


def test_family_step_refuses_a_non_matrix_gram():
    """Exact: a G that is not a matrix at all is a ValueError naming G, like one of the wrong shape."""
    _one_line_error(lambda: theory.loop_family_step("gd++", "abc", Z6, gamma=1, eta=1), "G")
