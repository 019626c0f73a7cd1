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
