"""Derivations with the exact theory module: Theorem 3.2's parameters, the symbolic proof that
one LSA step is one GD step, the no-CoT optimum derived from Wishart moments, and LaTeX output.

    python examples/derivation.py
"""
import sympy

from theory import (gd_eval_loss, gd_transformer_params, nocot_loss, nocot_min_loss,
                    nocot_optimal_eta, prove_lsa_step_is_gd, wishart_moment)

d, n = sympy.symbols("d n", positive=True, integer=True)
eta = sympy.Symbol("eta", positive=True)

V, W = gd_transformer_params(d, eta)
print("Theorem 3.2, V* =", V)
print("Theorem 3.2, W* =", W)
print("one LSA step = one GD step, for symbolic d, n, i:", prove_lsa_step_is_gd())

print("\nE tr(S^2) =", wishart_moment(2, d, n), "   E tr(S^4) =", sympy.factor(wishart_moment(4, d, n)))
print("no-CoT loss of the step eta:", sympy.factor(nocot_loss(d, n, eta)))
print("its minimiser eta_1 =", nocot_optimal_eta(d, n), "  minimum =", nocot_min_loss(d, n))
print("LaTeX:", sympy.latex(nocot_min_loss(d, n)))

# The paper's configuration: exact k-step GD loss as a polynomial in eta, and its value at 0.4.
poly = gd_eval_loss(10, 20, eta, 3)
print("\nk = 3 GD loss at d = 10, n = 20:", poly)
print("at eta = 2/5:", poly.subs(eta, sympy.Rational(2, 5)), "=", float(poly.subs(eta, sympy.Rational(2, 5))))
print("k = 10 at eta = 2/5:", float(gd_eval_loss(10, 20, sympy.Rational(2, 5), 10)),
      "  no-CoT floor:", float(nocot_min_loss(10, 20)))
