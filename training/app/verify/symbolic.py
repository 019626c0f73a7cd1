"""``cotgd verify``'s symbolic checks: exact sympy identities (docs/theory.md sections 2, 4, 5,
9), compared with ``simplify(measured - expected) == 0`` (``exact``); no tolerance."""
from __future__ import annotations

import sympy

from ... import PAPER
from .registry import ETA, Check, check, result


def exact(measured, expected, detail: str = "") -> Check:
    """Exact comparison: ``is`` for booleans, ``simplify(measured - expected) == 0`` otherwise."""
    if isinstance(expected, bool):
        passed = measured is expected
    else:
        passed = sympy.simplify(sympy.sympify(measured) - sympy.sympify(expected)) == 0
    return result(measured, expected, "exact identity", passed, detail)


@check("symbolic.thm32-lsa-step-is-gd", kind="symbolic")
def thm32_lsa_step_is_gd():
    """Thm 3.2 (docs/theory.md section 4): one step of the constructed LSA is one GD step, proved
    for symbolic d, n and step index i with block matrices."""
    import theory
    return exact(theory.prove_lsa_step_is_gd(), True, "symbolic d, n, i; block matrices")


@check("symbolic.thm32-rejects-v31-minus-2eta", kind="symbolic")
def thm32_rejects_wrong_v31():
    """Thm 3.2 (docs/theory.md section 4): the same proof rejects a wrong transformer,
    V31 = -2 eta I, at d = 10 (the check can fail)."""
    import theory
    V, W = theory.gd_transformer_params(PAPER.d, ETA)
    return exact(theory.prove_lsa_step_is_gd(2 * V, W, eta=ETA), False, f"d = {PAPER.d}, eta = {ETA}")


@check("symbolic.loop-families-one-loop-one-step", kind="symbolic")
def loop_families_one_loop_one_step():
    """The looped model's algorithm families (docs/theory.md section 18): one loop of the
    preconditioned construction is one preconditioned GD step and one loop of GD++'s is one GD++
    step, on every prompt (symbolic d, n, P, gamma, eta; block matrices), and the proof rejects GD++'s
    construction against gamma = 0 at d = 10 (the check can fail)."""
    import theory
    V, W = theory.loop_family_params("gd++", PAPER.d, gamma=sympy.Rational(1, 20), eta=ETA)
    measured = (bool(theory.prove_loop_step("preconditioned")), bool(theory.prove_loop_step("gd++")),
                bool(theory.prove_loop_step("gd++", V, W, gamma=0, eta=ETA)))
    return result(str(measured), str((True, True, False)), "exact identity", measured == (True, True, False),
                  "preconditioned, gd++ (symbolic d, n); gd++ construction vs gamma = 0 at d = 10")


@check("symbolic.gd-closed-form", kind="symbolic")
def gd_closed_form():
    """GD from w_0 = 0 has the closed form w_k = (I - (I - eta S)^k) w*, proved by induction
    (docs/theory.md section 2)."""
    import theory
    return exact(theory.prove_gd_closed_form(), True, "induction on k")


@check("symbolic.thm31-nocot-optimal-step", kind="symbolic")
def thm31_nocot_optimal_step():
    """Thm 3.1 (docs/theory.md section 5): the best one-step (no-CoT) step is n / (n + d + 1),
    from the exact Wishart moments."""
    import theory
    d, n = sympy.symbols("d n", positive=True, integer=True)
    return exact(theory.nocot_optimal_eta(d, n), n / (n + d + 1), "symbolic d, n")


@check("symbolic.thm31-nocot-floor", kind="symbolic")
def thm31_nocot_floor():
    """Thm 3.1 (docs/theory.md section 5): the no-CoT loss floor is d (d + 1) / (2 (n + d + 1)),
    from the exact Wishart moments."""
    import theory
    d, n = sympy.symbols("d n", positive=True, integer=True)
    return exact(theory.nocot_min_loss(d, n), sympy.factor(d * (d + 1) / (2 * (n + d + 1))), "symbolic d, n")


@check("symbolic.wishart-third-moment", kind="symbolic")
def wishart_third_moment():
    """E tr(S^3) of the sample Gram matrix S = X^T X / n (docs/theory.md section 9) equals
    d (n^2 + d^2 + 3nd + 3n + 3d + 4) / n^2."""
    import theory
    d, n = sympy.symbols("d n", positive=True, integer=True)
    return exact(theory.wishart_moment(3, d, n), d * (n**2 + d**2 + 3*n*d + 3*n + 3*d + 4) / n**2,
                  "symbolic d, n")
