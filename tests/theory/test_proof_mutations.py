"""Each proof proves the library's own objects: fed a wrong library function (monkeypatched where
the proof looks it up) or a wrong construction, it says False.  Every check here is exact."""
import pytest
import sympy

import theory
import theory.gd as gd
import theory.nocot as nocot
import theory.proof as proof
import theory.reduced as reduced

ERROR_OPERATOR = gd.error_operator          # the library's, before any monkeypatch


def test_gd_closed_form_proof_holds():
    """Exact: the unmodified library passes."""
    assert theory.prove_gd_closed_form() is True


@pytest.mark.parametrize("name, wrong", [
    ("gd_step", lambda w, S, ws, eta: w - 2 * eta * S * (w - ws)),              # doubled step
    ("gd_step", lambda w, S, ws, eta: w - eta * S * (w + ws)),                  # wrong sign of w*
    ("gd_step", lambda w, S, ws, eta: w - eta * (w - ws)),                      # S forgotten
    ("error_operator", lambda S, eta, k: ERROR_OPERATOR(S, eta, k + 1)),        # shifted power
    ("error_operator", lambda S, eta, k: ERROR_OPERATOR(S, 2 * eta, k)),        # 2 eta
    ("gd_closed_form", lambda S, ws, eta, k: ws - 2 * ERROR_OPERATOR(S, eta, k) * ws),
])
def test_gd_closed_form_proof_rejects_a_wrong_library(monkeypatch, name, wrong):
    """Exact: a wrong gd_step, error_operator or gd_closed_form makes prove_gd_closed_form False
    (the shifted error operator passes the induction step; the base case w_0 = 0 catches it)."""
    monkeypatch.setattr(gd, name, wrong)
    assert theory.prove_gd_closed_form() is False


def test_lsa_proofs_reject_a_wrong_gd_step(monkeypatch):
    """Exact: prove_lsa_step (symbolic-shape and concrete) and prove_lsa_step_is_gd call
    theory.gd.gd_step for the target; a wrong one makes the correct construction fail."""
    V, W = theory.gd_transformer_params(2, sympy.Rational(1, 3))
    assert theory.prove_lsa_step() and theory.prove_lsa_step(V, W, sympy.Rational(1, 3))
    monkeypatch.setattr(proof, "gd_step", lambda w, S, ws, P: w - P * S * (w - ws) / 2)
    assert not theory.prove_lsa_step()
    assert not theory.prove_lsa_step_is_gd()
    wrong = theory.prove_lsa_step(V, W, sympy.Rational(1, 3))
    assert not wrong and ("gd_step", "target") in wrong.terms
    assert not theory.prove_lsa_step_is_gd(V, W, eta=sympy.Rational(1, 3))


def test_symbolic_lsa_proof_rejects_a_wrong_construction(monkeypatch):
    """Exact: the symbolic-shape proof uses theory's gd_transformer_params; a wrong construction
    (W24 = -2) fails, with the leftover in the w block."""
    original = proof.gd_transformer_params

    def wrong(d, P):
        V, W = original(d, P)
        blocks = [list(row) for row in W.blocks.tolist()]
        blocks[1][3] = -2 * sympy.Identity(1)
        return V, sympy.BlockMatrix(blocks)

    monkeypatch.setattr(proof, "gd_transformer_params", wrong)
    result = theory.prove_lsa_step()
    assert not result and result.rows == ("w",)


def test_reduced_proof_rejects_a_wrong_gram(monkeypatch):
    """Exact: prove_reduced_unique_zero ties reduced_loss to reduced_gram; a Gram matrix that is
    not the loss's quadratic form (scaled off-diagonal) makes it False."""
    assert theory.prove_reduced_unique_zero(10, 20, sympy.Rational(2, 5), 3)
    original = reduced.reduced_gram

    def wrong(d, n, eta, k):
        G = original(d, n, eta, k)
        return sympy.Matrix([[G[0, 0], G[0, 1] / 2], [G[1, 0] / 2, G[1, 1]]])

    monkeypatch.setattr(reduced, "reduced_gram", wrong)
    assert not theory.prove_reduced_unique_zero(10, 20, sympy.Rational(2, 5), 3)


def test_reduced_proof_refuses_steps_named_like_its_variables():
    """Exact: a step containing the reduction's variables a, b would be confused with them."""
    a, _ = theory.reduced_symbols()
    with pytest.raises(ValueError, match="^eta must not contain"):
        theory.prove_reduced_unique_zero(10, 20, a, 3)


def test_reduced_coefficients_use_a_private_eigenvalue_variable():
    """Exact: a step named s (the eigenvalue variable's name) gives the same polynomial as eta."""
    s, eta = sympy.Symbol("s"), sympy.Symbol("eta")
    assert theory.reduced_loss(4, 9, s, 2) == theory.reduced_loss(4, 9, eta, 2).subs(eta, s)


@pytest.mark.parametrize("name, wrong", [
    ("nocot_min_loss_sigma", lambda n, Sigma: theory.nocot_min_loss_sigma(n, Sigma) * 0 + sympy.Rational(1, 2)),
    ("nocot_params", lambda d, n, Sigma=None: theory.gd_transformer_params(d, sympy.Rational(1, 2))),
    ("linear_prediction_loss", lambda n, Sigma, A: theory.linear_prediction_loss(n, Sigma, A) + 1),
    ("second_moment_S", lambda n, Sigma: Sigma ** 2),
    ("nocot_gamma", lambda d, n, Sigma=None: 2 * theory.nocot_gamma(d, n, Sigma)),
])
def test_nocot_floor_proof_rejects_a_wrong_library(monkeypatch, name, wrong):
    """Exact: prove_nocot_floor checks the library's floor, parameters, loss of a linear map, second
    moment and preconditioner; any one of them wrong makes it False (d = 1, symbolic n; the
    unmodified library passes, tests/theory/test_nocot_floor.py)."""
    monkeypatch.setattr(nocot, name, wrong)
    assert nocot.prove_nocot_floor(1) is False


def test_nocot_floor_proof_rejects_a_wrong_update(monkeypatch):
    """Exact: the prediction comes from theory's lsa_update; an update that forgets the V32 route
    (the term V32 W14^T S w* of the odd part) makes step 1 fail."""
    original = proof.lsa_update

    def wrong(V, W):
        V = sympy.Matrix(V)
        d = (V.rows - 2) // 2
        L = theory.Layout(d)
        V[L.w, L.y] = sympy.zeros(d, 1)
        return original(V, W)

    monkeypatch.setattr(nocot, "lsa_update", wrong)
    assert nocot.prove_nocot_floor(1) is False


# ------------------------------------------------------- GD closed form: helpers wrong only at large k
GD_ITERATES_EXACT = gd.gd_iterates_exact        # the library's, before any monkeypatch
GD_CLOSED_FORM = gd.gd_closed_form


def _operator_piecewise_from_4(S, eta, k):
    """(I - eta S)^k doubled for k >= 4 on explicit matrices, as a Piecewise in k: the same code
    for a symbolic and an integer k."""
    E = ERROR_OPERATOR(S, eta, k)
    if not isinstance(S, sympy.MatrixBase):
        return E
    return E.applyfunc(lambda e: sympy.Piecewise((2 * e, sympy.Ge(k, 4)), (e, True)))


def _operator_int_from_4(S, eta, k):
    """Doubled only for a Python int k >= 4: right for every symbolic k."""
    E = ERROR_OPERATOR(S, eta, k)
    return 2 * E if isinstance(k, int) and k >= 4 else E


def _operator_compared_from_4(S, eta, k):
    """Doubled for k >= 4, by comparing k with 4 (undecidable for a symbolic k: TypeError)."""
    E = ERROR_OPERATOR(S, eta, k)
    return 2 * E if k >= 4 else E


def _operator_int_at_top(S, eta, k):
    """Doubled only at the integer k = GD_PROOF_MAX_K, the last k of the proof's integer range."""
    E = ERROR_OPERATOR(S, eta, k)
    return 2 * E if isinstance(k, int) and k == gd.GD_PROOF_MAX_K else E


def _iterates_last_doubled_from_5(S, w_star, eta, k):
    iterates = GD_ITERATES_EXACT(S, w_star, eta, k)
    return iterates[:-1] + [2 * iterates[-1]] if k >= 5 else iterates


def _iterates_shifted_from_index_5(S, w_star, eta, k):
    return [w if j < 5 else w + w_star for j, w in enumerate(GD_ITERATES_EXACT(S, w_star, eta, k))]


def _closed_form_int_from_6(S, w_star, eta, k):
    w = GD_CLOSED_FORM(S, w_star, eta, k)
    return 2 * w if isinstance(k, int) and k >= 6 else w


@pytest.mark.parametrize("name, wrong, catching", [
    ("error_operator", _operator_piecewise_from_4, {"explicit_induction", "integer_k"}),
    ("error_operator", _operator_int_from_4, {"integer_k"}),
    ("error_operator", _operator_compared_from_4, {"symbolic_shape", "explicit_induction", "integer_k"}),
    ("error_operator", _operator_int_at_top, {"integer_k"}),
    ("gd_iterates_exact", _iterates_last_doubled_from_5, {"integer_k"}),
    ("gd_iterates_exact", _iterates_shifted_from_index_5, {"integer_k"}),
    ("gd_closed_form", _closed_form_int_from_6, {"integer_k"}),
], ids=lambda x: getattr(x, "__name__", None) if callable(x) else None)
def test_gd_closed_form_proof_rejects_a_helper_wrong_only_at_large_k(monkeypatch, name, wrong, catching):
    """Exact: an error_operator wrong only for k >= 4 (as a Piecewise in k, only for a Python int k,
    or by comparing k with 4, which a symbolic k cannot answer), or only at k = GD_PROOF_MAX_K; a
    gd_iterates_exact wrong only for k >= 5 (its last iterate, or every iterate from index 5); a
    gd_closed_form wrong only for an int k >= 6: each makes prove_gd_closed_form False, through
    exactly the steps listed (docs/theory.md section 2).  The old proof (integer path to k = 3
    only) passed all but the comparing one, which made it raise."""
    assert gd.GD_PROOF_MAX_K >= 6
    monkeypatch.setattr(gd, name, wrong)
    checks = {}
    original = gd._gd_closed_form_checks
    monkeypatch.setattr(gd, "_gd_closed_form_checks", lambda: checks.update(original()) or checks)
    assert theory.prove_gd_closed_form() is False
    assert {step for step, ok in checks.items() if not ok} == catching


@pytest.mark.parametrize("name, original", [("error_operator", ERROR_OPERATOR),
                                            ("gd_iterates_exact", GD_ITERATES_EXACT),
                                            ("gd_closed_form", GD_CLOSED_FORM)])
def test_gd_closed_form_proof_accepts_pass_through_wrappers(monkeypatch, name, original):
    """Exact: a wrapper that only passes its arguments on to the library's helper keeps the proof
    True, with every step True: the Falses above come from the wrong k alone."""
    monkeypatch.setattr(gd, name, lambda *args: original(*args))
    checks = {}
    steps = gd._gd_closed_form_checks
    monkeypatch.setattr(gd, "_gd_closed_form_checks", lambda: checks.update(steps()) or checks)
    assert theory.prove_gd_closed_form() is True
    assert len(checks) == 4 and all(checks.values())
