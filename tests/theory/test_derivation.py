"""Derivation helpers (docs/theory.md section 12): ``prove_lsa_step`` for preconditioned steps and
the leftover of wrong constructions, ``lsa_update`` (what any (V, W) computes) against the literal
layer, private symbols and the float rule.  Every check here is exact (sympy) unless its docstring
says otherwise."""
import doctest
import importlib

import numpy as np
import pytest
import sympy
from hypothesis import given, settings
from hypothesis import strategies as st

import theory
from theory import (Layout, gd_transformer_params, lsa_step_size, lsa_update, prove_lsa_step,
                    prove_lsa_step_is_gd)


@pytest.mark.parametrize("name", ["proof", "gd", "params", "validation"])
def test_doctests(name):
    """Exact: the docstring examples of the modules this issue touches run and print as shown."""
    module = importlib.import_module(f"theory.{name}")
    result = doctest.testmod(module, extraglobs={"sympy": sympy})
    assert result.attempted > 0 and result.failed == 0


def test_preconditioned_construction_is_proved_for_diagonal_and_full_P():
    """Exact: V31 = -P, W13 = I, W24 = -1 performs w - P (S w - S w*) for a diagonal P of symbols
    and for a full symbolic 2 x 2 P; P = eta I is Theorem 3.2's case."""
    p = sympy.symbols("p0:3")
    P = sympy.diag(*p)
    result = prove_lsa_step(*gd_transformer_params(3, P), P)
    assert result and result.holds and result.rows == () and result.blocks == ()
    assert result.leftover == sympy.zeros(8, 1)
    Q = sympy.Matrix(2, 2, sympy.symbols("q0:4"))
    assert prove_lsa_step(*gd_transformer_params(2, Q), Q)
    eta = sympy.Symbol("eta", positive=True)
    assert prove_lsa_step(*gd_transformer_params(2, eta), eta)
    assert prove_lsa_step(*gd_transformer_params(2, eta), eta * sympy.eye(2))


def test_preconditioner_is_read_off_when_not_given():
    """Exact: P=None reads P = W24 V31 + V32 W14^T off the parameters (the coefficient of S w*)."""
    P = sympy.Matrix([[2, 1], [1, 3]])
    result = prove_lsa_step(*gd_transformer_params(2, P))
    assert result and result.P == P
    V, W = gd_transformer_params(2, P)
    W[Layout(2).y, Layout(2).one] = sympy.Matrix([[-3]])       # W24 = -3 scales the read-off P
    read = prove_lsa_step(V, W)
    assert not read and read.P == 3 * P


def test_leftover_of_a_wrong_construction_names_the_blocks():
    """Exact: V31 = -2P checked against P leaves -P S w_i + P S w* in the w rows, produced by the
    pairs (V31, W13) and (V31, W24); the explicit leftover is zero only where it should be."""
    p1, p2 = sympy.symbols("p1 p2")
    P = sympy.diag(p1, p2)
    V, W = gd_transformer_params(2, P)
    wrong = prove_lsa_step(2 * V, W, P)
    assert not wrong and wrong.rows == ("w",) and wrong.blocks == ("V31", "W13", "W24")
    L = Layout(2)
    assert wrong.leftover[L.x, 0].is_zero_matrix and wrong.leftover[L.one, 0].is_zero_matrix
    assert not wrong.leftover[L.w, 0].is_zero_matrix
    st = wrong.statistics
    assert wrong.terms[("V31", "W13")] == -P * st["S"] * st["w_i"]
    assert wrong.terms[("V31", "W24")] == P * st["S"] * st["w_star"]
    # The explicit leftover is that term made explicit: -P S (w_i - w*) in the private symbols.
    named = {s.name: s for s in wrong.leftover.free_symbols}
    S = sympy.Matrix(2, 2, lambda i, j: named[f"S{min(i, j)}{max(i, j)}"])
    w = sympy.Matrix(2, 1, lambda i, _: named[f"w_i{i}0"])
    w_star = sympy.Matrix(2, 1, lambda i, _: named[f"w_star{i}0"])
    assert (wrong.leftover[L.w, 0] - (-P * S * (w - w_star))).applyfunc(sympy.expand).is_zero_matrix


@pytest.mark.parametrize("blocks, rows, names", [
    (["V32"], ("w",), {"V32"}),            # leaks y-statistics into the estimate
    (["V11"], ("x",), {"V11"}),            # the new column's x rows are not zero
    (["V33", "W34"], ("w",), {"V33", "W34"}),   # the history H, h enters the step
    (["W23"], ("w",), {"W23"}),            # S w* (W23 w_i): a term bilinear in w*, w_i
])
def test_stray_blocks_are_named(blocks, rows, names):
    """Exact: stray non-zero blocks make the step fail in the named rows, and the leftover's
    blocks include the stray ones."""
    eta = sympy.Rational(2, 5)
    V, W = gd_transformer_params(2, eta)
    L = Layout(2)
    for block in blocks:
        target = V if block[0] == "V" else W
        r, c = int(block[1]), int(block[2])
        target[L.block(r), L.block(c)] = sympy.ones(L.sizes[r - 1], L.sizes[c - 1])
    result = prove_lsa_step(V, W, eta)
    assert not result and result.rows == rows and names <= set(result.blocks)


def test_blocks_that_meet_only_zeros_are_harmless():
    """Exact: V33 alone (W33 = W34 = 0) or W33 alone (V_r3 = 0) never acts: the step still holds,
    the function is judged, not the block pattern."""
    eta = sympy.Rational(2, 5)
    L = Layout(2)
    for matrix in ("V", "W"):
        V, W = gd_transformer_params(2, eta)
        (V if matrix == "V" else W)[L.w, L.w] = sympy.ones(2, 2)
        assert prove_lsa_step(V, W, eta) and lsa_step_size(V, W) == eta


def test_symbolic_d_constructions_and_leftover():
    """Exact: for symbolic d, gd_transformer_params(d, P) with a MatrixSymbol P is proved, and the
    wrong 2P leaves P S w_i - P S w* (statistic form); the literal layer (symbolic d, n, i, any P)
    holds, and fails for a wrong construction."""
    d = sympy.Symbol("d", positive=True, integer=True)
    P = sympy.MatrixSymbol("P", d, d)
    V, W = gd_transformer_params(d, P)
    assert prove_lsa_step(V, W, P)
    wrong = prove_lsa_step(V, W, 2 * P)
    assert not wrong and wrong.rows == ("w",)
    st = wrong.statistics
    assert sympy.expand(wrong.leftover.blocks[2, 0] - (P * st["S"] * st["w_i"] - P * st["S"] * st["w_star"])) == sympy.ZeroMatrix(d, 1)
    assert prove_lsa_step() and prove_lsa_step(P=sympy.Symbol("eta")) and prove_lsa_step_is_gd()


@pytest.mark.parametrize("name", ["c", "m", "step", "w_0", "S", "w_star"])
def test_user_symbols_cannot_collide_with_the_proof(name):
    """Exact: a step named like any symbol a proof uses (the old data symbols c, m, step, w_0, the
    statistics' names) gives the right verdict: the proofs use private Dummy symbols."""
    c = sympy.Symbol(name, positive=True)
    V, W = gd_transformer_params(2, c)
    assert prove_lsa_step_is_gd(V, W, eta=c) and lsa_step_size(V, W) == c
    assert not prove_lsa_step_is_gd(2 * V, W, eta=c)
    M = sympy.MatrixSymbol(name, 2, 2)
    assert prove_lsa_step(*gd_transformer_params(2, M), M)


def test_floats_are_read_the_same_way_on_both_sides():
    """Exact: float parameters (numerics.gd_params, float64 arrays) against a float step are read
    by validation.exact_real on both sides (docs/theory.md section 17), so Theorem 3.2's
    construction in floats is proved, a wrong float step is refused, and 0.1 * 3
    (0.30000000000000004) is not snapped to 3/10: against the step 0.3 it is a different step."""
    from numerics import gd_params
    V, W = gd_params(3, 0.4)
    assert prove_lsa_step_is_gd(V, W, eta=0.4) and lsa_step_size(V, W) == sympy.Rational(2, 5)
    assert prove_lsa_step_is_gd(V.astype(np.float32), W.astype(np.float32), eta=np.float32(0.4))
    assert not prove_lsa_step_is_gd(V, W, eta=0.41)
    V3, W3 = gd_params(2, 0.1 * 3)
    assert prove_lsa_step(V3, W3, 0.1 * 3) and prove_lsa_step(V3, W3, np.diag([0.1 * 3] * 2))
    assert lsa_step_size(V3, W3) == sympy.Rational("0.30000000000000004")
    off = prove_lsa_step(V3, W3, 0.3)
    assert not off and off.terms[("V31", "W13")] is not None


def test_a_step_that_is_not_provably_positive_is_not_gd():
    """Exact (docs/theory.md section 12): prove_lsa_step_is_gd and lsa_step_size agree that a
    symbolic step is a GD step only when provably positive; a negative symbol is refused by the
    construction, like a negative number."""
    plain, positive = sympy.Symbol("e"), sympy.Symbol("e", positive=True)
    V, W = gd_transformer_params(2, plain)
    assert prove_lsa_step(V, W, plain)                      # the identity holds for any P ...
    assert not prove_lsa_step_is_gd(V, W, plain) and lsa_step_size(V, W) is None   # ... GD needs eta > 0
    Vp, Wp = gd_transformer_params(2, positive)
    assert prove_lsa_step_is_gd(Vp, Wp, positive) and lsa_step_size(Vp, Wp) == positive
    negative = sympy.Symbol("e", negative=True)
    with pytest.raises(ValueError, match="^eta must be a finite real number > 0, got e$"):
        gd_transformer_params(2, negative)
    Vn = V.subs(plain, negative)                            # V31 = -e I with e < 0: ascent
    assert prove_lsa_step(Vn, W, negative)
    assert not prove_lsa_step_is_gd(Vn, W, negative) and lsa_step_size(Vn, W) is None


def test_negative_steps_and_ascent():
    """Exact: prove_lsa_step accepts any P (a negative one included: the identity holds for every
    P), while prove_lsa_step_is_gd, whose docstring promises GD, refuses gradient ascent."""
    eta = sympy.Rational(1, 3)
    V, W = gd_transformer_params(2, eta)
    assert prove_lsa_step(-V, W, -eta) and prove_lsa_step(-V, W).P == -eta * sympy.eye(2)
    assert not prove_lsa_step_is_gd(-V, W) and lsa_step_size(-V, W) is None
    with pytest.raises(ValueError, match="^eta must be"):
        prove_lsa_step_is_gd(-V, W, eta=-eta)


def _literal_last_column(V, W, X, w_star, history, n):
    """The literal layer z + V Z Z^T W z / n on an explicit Z_i (labels y = X^T w*)."""
    d = X.rows
    L = Layout(d)
    cols = len(history)
    Z = sympy.zeros(L.D, X.cols + cols)
    Z[L.x, :X.cols] = X
    Z[L.y, :X.cols] = (X.T * w_star).T
    for j, w in enumerate(history):
        Z[L.w, X.cols + j] = w
        Z[L.one, X.cols + j] = sympy.Matrix([[1]])
    z = Z[:, -1]
    return z + V * Z * Z.T * W * z / n


def test_lsa_update_matches_the_literal_layer_for_generic_parameters():
    """Exact: for V, W with every entry non-zero (all 256 block pairs present), the statistic form
    of lsa_update equals the last column of the literal layer on an explicit Z_i with symbolic
    data (d = 2, n = 3, two CoT columns), every row block."""
    d, n = 2, 3
    L = Layout(d)
    rng = np.random.default_rng(7)
    V = sympy.Matrix(rng.integers(1, 6, (L.D, L.D)) * rng.choice([-1, 1], (L.D, L.D)))
    W = sympy.Matrix(rng.integers(1, 6, (L.D, L.D)) * rng.choice([-1, 1], (L.D, L.D)))
    X = sympy.Matrix(d, n, sympy.symbols("x0:6"))
    w_star = sympy.Matrix(sympy.symbols("t0:2"))
    history = [sympy.Matrix(sympy.symbols("a0:2")), sympy.Matrix(sympy.symbols("b0:2"))]
    literal = _literal_last_column(V, W, X, w_star, history, n)
    update = lsa_update(V, W)
    st = update.statistics
    S = X * X.T / n
    H = sum((w * w.T for w in history), sympy.zeros(d, d)) / n
    h = sum(history, sympy.zeros(d, 1)) / n
    values = {st["S"]: S, st["w_star"]: w_star, st["w_i"]: history[-1], st["H"]: H, st["h"]: h,
              st["h_0"]: sympy.Matrix([[sympy.Rational(len(history), n)]])}
    from theory.proof import _explicit
    z = sympy.zeros(L.D, 1)
    z[L.w, 0] = history[-1]
    z[L.one, 0] = sympy.Matrix([[1]])
    for name, rows in (("x", L.x), ("y", L.y), ("w", L.w), ("one", L.one)):
        statistic = z[rows, 0] + _explicit(update.column[name], values)
        assert (statistic - literal[rows, 0]).applyfunc(sympy.expand).is_zero_matrix, name


def test_lsa_update_reads_the_paper_construction_and_a_learned_one():
    """Exact: Theorem 3.2's parameters give -eta S w_i + eta S w*; a model with W13 = 2I,
    V31 = -eta/2 I is the same function (scale invariance, docs/theory.md section 4)."""
    eta = sympy.Symbol("eta", positive=True)
    u = lsa_update(*gd_transformer_params(3, eta))
    st = u.statistics
    assert u.w == -eta * st["S"] * st["w_i"] + eta * st["S"] * st["w_star"]
    V, W = gd_transformer_params(3, eta / 2)
    L = Layout(3)
    W[L.x, L.w] = 2 * sympy.eye(3)
    W[L.y, L.one] = sympy.Matrix([[-2]])
    other = lsa_update(V, W)
    same = {other.statistics[name]: st[name] for name in st}
    assert other.w.xreplace(same) == u.w and prove_lsa_step(V, W, eta) and lsa_step_size(V, W) == eta
    assert set(u.pairs["w"]) == {("V31", "W13"), ("V31", "W24")}


@settings(max_examples=5, deadline=None)
@given(st.integers(1, 2), st.lists(st.fractions(-3, 3).map(sympy.Rational), min_size=9, max_size=9),
       st.fractions(sympy.Rational(1, 4), 4).map(sympy.Rational))
def test_scaled_preconditioned_constructions(d, entries, c):
    """Exact (property): (c V31, W13 / c, W24 / c) with V31 = -P for any rational P implements P;
    any other P' != P leaves a non-zero leftover in the w rows only."""
    P = sympy.Matrix(d, d, entries[:d * d])
    V, W = gd_transformer_params(d, P)
    L = Layout(d)
    V[L.w, L.x] = c * V[L.w, L.x]
    W[L.x, L.w] = W[L.x, L.w] / c
    W[L.y, L.one] = W[L.y, L.one] / c
    assert prove_lsa_step(V, W, P)
    other = prove_lsa_step(V, W, P + sympy.eye(d))
    assert not other and other.rows == ("w",)


def test_bad_input():
    """Exact: wrong shapes and types are one ValueError naming the parameter."""
    V, W = gd_transformer_params(2, sympy.Rational(1, 2))
    with pytest.raises(ValueError, match="^P must be 2 x 2"):
        prove_lsa_step(V, W, sympy.eye(3))
    with pytest.raises(ValueError, match="^V must be square"):
        prove_lsa_step(V[:5, :], W)
    with pytest.raises(ValueError, match="^V and W must have the same size"):
        prove_lsa_step(V, gd_transformer_params(3, 1)[1])
    with pytest.raises(ValueError, match="give both"):
        prove_lsa_step(V)
    with pytest.raises(ValueError, match="^eta must be"):
        gd_transformer_params(2, sympy.eye(3))
    assert isinstance(theory.prove_lsa_step(V, W), theory.StepProof)
