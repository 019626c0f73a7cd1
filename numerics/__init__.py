"""The theory's objects as float64 arrays (numpy + scipy; no torch, no hypothesis).

Reference LSA forward pass and CoT / looped rollouts (``lsa``), k-step GD by recursion and by
closed form (``gd``), Theorem 3.2's and 3.1's parameters evaluated from ``theory`` (``params``),
the equivalence check (``equivalence``), Monte Carlo of evaluation losses with honest tails
(``montecarlo``, ``sampling``), the Marchenko-Pastur limit (``marchenko_pastur``) and its
general-covariance deterministic equivalent (``silverstein``), the Bayes-optimal loss under label
noise (``noise``), algorithm families to compare a looped model with (``loop_families``), exact values of
theory's losses (``exact``) and scipy optima (``optimize``).  Covariances: ``covariance_root``
(``checks``; symmetric PSD Sigma, singular allowed, docs/theory.md section 10), its exact form for
theory's functions ``exact_covariance`` (``params``) and Haar-random rotations (``rotations``),
each defined once for the toolkit.  Hypothesis strategies for property
tests live in ``numerics.strategies`` (imported only on request).
"""
from .checks import covariance_root
from .dynamics import (gradient_flow, reduced_argmin_a_value, reduced_coefficient_values,
                       reduced_coefficients_exact, reduced_coefficients_mc, reduced_gradient_value,
                       reduced_hessian_value, reduced_loss_value, stage_times)
from .equivalence import EquivalenceReport, check_gd_equivalence, iterate_deviation
from .exact import gd_eval_loss_polynomial, gd_eval_loss_value, polynomial_value
from .gd import gd_closed_form, gd_iterates
from .loop_families import FAMILIES as LOOP_FAMILIES, FamilyFit, family_iterates, fit_family
from .lsa import (cot_rollout, cot_rollout_reference, embed, looped_rollout,
                  looped_rollout_reference, lsa_forward)
from .marchenko_pastur import mp_density, mp_gd_eval_loss
from .montecarlo import (DEFAULT_CHUNK, DIVERGENCE_FACTOR, LossReport, diverged_mask, eval_loss_mc,
                         eval_loss_mc_params, loss_report, nocot_loss_mc)
from .noise import bayes_loss_mc, bayes_loss_mp
from .optimize import (NocotOptimum, RescaledGDOptimum, StepSizeOptimum, looped_optimal_eta,
                       looped_rescaled_optimum, nocot_optimum_numeric)
from .params import exact_covariance, gd_params, nocot_params
from .rotations import haar_orthogonal, random_rotation
from .sampling import data_statistic, sample_gram, sample_prompts
from .silverstein import (deterministic_equivalent_gd_loss, deterministic_equivalent_integral,
                          silverstein_stieltjes)

__all__ = [
    "DEFAULT_CHUNK", "DIVERGENCE_FACTOR", "EquivalenceReport", "FamilyFit", "LOOP_FAMILIES", "LossReport", "NocotOptimum",
    "StepSizeOptimum", "bayes_loss_mc", "bayes_loss_mp", "check_gd_equivalence", "cot_rollout", "cot_rollout_reference",
    "covariance_root", "diverged_mask", "embed", "eval_loss_mc", "eval_loss_mc_params",
    "exact_covariance", "family_iterates", "fit_family", "gd_closed_form", "gd_eval_loss_polynomial", "gd_eval_loss_value",
    "gd_iterates", "gd_params", "gradient_flow", "haar_orthogonal", "iterate_deviation",
    "looped_optimal_eta", "looped_rescaled_optimum", "looped_rollout",
    "RescaledGDOptimum", "looped_rollout_reference", "loss_report",
    "lsa_forward", "mp_density", "mp_gd_eval_loss", "nocot_loss_mc", "nocot_optimum_numeric",
    "nocot_params", "polynomial_value", "random_rotation", "reduced_argmin_a_value",
    "reduced_coefficient_values", "reduced_coefficients_exact", "reduced_coefficients_mc",
    "reduced_gradient_value", "reduced_hessian_value", "reduced_loss_value", "sample_gram",
    "data_statistic",
    "sample_prompts", "stage_times",
    "deterministic_equivalent_gd_loss", "deterministic_equivalent_integral", "silverstein_stieltjes",
]
