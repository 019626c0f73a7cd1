"""Exact statements of the theory (Huang, Wang, Lee, ICLR 2025), in sympy.

The single source of truth for the token layout, the Theorem 3.2 / 3.1 parameters, the GD
recursion and its closed form, Wishart moments (any covariance) and the exact losses, and the
derivation helpers: what any one-layer (V, W) computes (``lsa_update``), proofs of
(preconditioned) GD steps with their leftover (``prove_lsa_step``), the exact optimal step
(``gd_optimal_eta``) and Theorem 3.1 over all no-CoT parameters (``prove_nocot_floor``); label
noise (``noise_var=`` of the losses, ``best_cot_length``, ``prove_noisy_gd_loss``).  Importing this package
imports neither numpy nor torch.
"""
from .gd import (error_operator, gd_closed_form, gd_iterates_exact, gd_noise_factor, gd_step,
                 prove_gd_closed_form)
from .layout import BLOCK_NAMES, Layout
from .looped import (LOOP_FAMILIES, LoopProof, LoopUpdate, loop_family_params, loop_family_step,
                     loop_update, prove_loop_step)
from .losses import (OptimalStep, gd_eval_loss, gd_limit_loss, gd_optimal_eta, linear_prediction_loss,
                     nocot_loss, nocot_min_loss, nocot_min_loss_sigma, nocot_optimal_eta, second_moment_S)
from .noise import BestCotLength, best_cot_length, prove_noisy_gd_loss
from .nocot import prove_nocot_floor
from .ood import (StabilityVerdict, contraction_factor, is_stable, mp_edges, ood_loss_bound, spectrum_interval,
                  stability_verdict, stable_eta_bound)
from .params import gd_transformer_params, nocot_gamma, nocot_params
from .proof import LSAUpdate, StepProof, lsa_step_size, lsa_update, prove_lsa_step, prove_lsa_step_is_gd
from .reduced import (prove_reduced_unique_zero, reduced_argmin_a, reduced_coefficients,
                      reduced_critical_points, reduced_gradient, reduced_gram, reduced_loss,
                      reduced_loss_symbolic, reduced_moment_symbols, reduced_symbols, trace_moment)
from .wishart import MAX_EXACT_MOMENT, mp_moment, narayana, wishart_moment
from .wishart_sigma import MAX_SIGMA_MOMENT, MAX_SIGMA_SYMBOLIC_MOMENT, power_sum_polynomial

__all__ = [
    "BLOCK_NAMES", "BestCotLength", "LOOP_FAMILIES", "LSAUpdate", "Layout", "LoopProof", "LoopUpdate", "MAX_EXACT_MOMENT", "MAX_SIGMA_MOMENT",
    "MAX_SIGMA_SYMBOLIC_MOMENT", "OptimalStep", "StabilityVerdict", "StepProof", "best_cot_length", "contraction_factor",
    "error_operator", "gd_closed_form", "gd_eval_loss", "gd_noise_factor", "gd_iterates_exact", "gd_limit_loss",
    "gd_optimal_eta", "gd_step", "gd_transformer_params", "is_stable", "linear_prediction_loss",
    "loop_family_params", "loop_family_step", "loop_update",
    "lsa_step_size", "lsa_update", "mp_edges", "mp_moment", "narayana", "nocot_gamma",
    "nocot_loss", "nocot_min_loss", "nocot_min_loss_sigma", "nocot_optimal_eta", "nocot_params",
    "ood_loss_bound", "power_sum_polynomial", "prove_gd_closed_form", "prove_loop_step", "prove_lsa_step",
    "prove_lsa_step_is_gd", "prove_nocot_floor", "prove_noisy_gd_loss", "prove_reduced_unique_zero", "reduced_argmin_a",
    "reduced_coefficients", "reduced_critical_points", "reduced_gradient", "reduced_gram",
    "reduced_loss", "reduced_loss_symbolic", "reduced_moment_symbols", "reduced_symbols",
    "second_moment_S", "spectrum_interval", "stability_verdict", "stable_eta_bound", "trace_moment", "wishart_moment",
]
