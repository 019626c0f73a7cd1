"""Exact statements of the theory (Huang, Wang, Lee, ICLR 2025), in sympy.

The single source of truth for the token layout, the Theorem 3.2 / 3.1 parameters, the GD
recursion and its closed form, Wishart moments and the exact losses.  Importing this package
imports neither numpy nor torch.
"""
from .gd import error_operator, gd_closed_form, gd_iterates_exact, gd_step, prove_gd_closed_form
from .layout import BLOCK_NAMES, Layout
from .losses import (gd_eval_loss, gd_limit_loss, linear_prediction_loss, nocot_loss,
                     nocot_min_loss, nocot_min_loss_sigma, nocot_optimal_eta, second_moment_S)
from .ood import (contraction_factor, is_stable, mp_edges, ood_loss_bound, spectrum_interval,
                  stable_eta_bound)
from .params import gd_transformer_params, nocot_gamma, nocot_params
from .proof import lsa_step_size, prove_lsa_step_is_gd
from .reduced import (prove_reduced_unique_zero, reduced_argmin_a, reduced_coefficients,
                      reduced_critical_points, reduced_gradient, reduced_gram, reduced_loss,
                      reduced_loss_symbolic, reduced_moment_symbols, reduced_symbols, trace_moment)
from .wishart import MAX_EXACT_MOMENT, mp_moment, narayana, wishart_moment

__all__ = [
    "BLOCK_NAMES", "Layout", "MAX_EXACT_MOMENT", "contraction_factor", "error_operator",
    "gd_closed_form", "gd_eval_loss", "gd_iterates_exact", "gd_limit_loss", "gd_step",
    "gd_transformer_params", "is_stable", "linear_prediction_loss", "lsa_step_size", "mp_edges",
    "mp_moment", "narayana", "nocot_gamma", "nocot_loss", "nocot_min_loss", "nocot_min_loss_sigma",
    "nocot_optimal_eta", "nocot_params", "ood_loss_bound", "prove_gd_closed_form",
    "prove_lsa_step_is_gd", "prove_reduced_unique_zero", "reduced_argmin_a", "reduced_coefficients",
    "reduced_critical_points", "reduced_gradient", "reduced_gram", "reduced_loss",
    "reduced_loss_symbolic", "reduced_moment_symbols", "reduced_symbols", "second_moment_S",
    "spectrum_interval", "stable_eta_bound", "trace_moment", "wishart_moment",
]
