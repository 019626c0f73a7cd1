"""``cotgd verify``: every claim of the paper checked three ways, in one report.

The checks form a registry (``registry``): each is a small function registered with
``@check(name, kind=...)`` under a unique, stable name (``<kind>.<what>``, e.g.
``symbolic.thm32-lsa-step-is-gd``), a kind and a description (the first paragraph of its
docstring).  Kinds, one module each:

* ``symbolic``: exact sympy identities (docs/theory.md sections 2, 4, 5, 9);
* ``numeric``: float64 computations, tolerance near machine precision (sections 2, 4);
* ``statistical``: Monte Carlo against an exact value, tolerance in standard errors (sections 5, 7, 9);
* ``training``: a trained PyTorch model against the theory's number (sections 6, 7, 8).

The checks named ``*.noise-*`` cover label noise (docs/theory.md section 16): the exact noisy GD
loss and no-CoT floor against Monte Carlo, the best CoT length k*, and CoT models trained on
noisy prompts (``cot_noise``: two k of one run) against the exact noisy loss.

How each kind is judged: docs/theory.md section 11.

A check function takes its inputs as explicit arguments, by name: ``settings`` (a frozen
``VerifySettings``: quick, seed, device, out) and, when it needs trained models, ``models`` (a
frozen ``TrainedModels``: cot, nocot, looped, ..., built by ``train_models_for_verify`` or
``run_verify``, which train only the models the selected checks declared in ``needs``).  It
returns one ``Check`` row (or a list of them): measured and expected values, the tolerance in
words, whether it passed, details.  A check registered ``full_only`` (the full looped model's,
whose training alone takes longer than all of ``--quick``) is a SKIP row in a quick run.

``run_verify(only=...)`` runs the checks whose names match the patterns (all by default): the
models train on one thread per core while the other checks run, and each line is printed as it
finishes (a bar on a terminal); a check that raises is reported as a failed row with its error,
never skipped.  ``format_report`` prints the rows as a table whose long cells wrap inside their
column.
"""
from __future__ import annotations

from .registry import (ETA, FULL_ONLY_REASON, KINDS, MODEL_NAMES, MODEL_SPECS, REGISTRY, TRAINING_ORDER, Check,
                       ModelTraining, Progress, RegisteredCheck, TrainedModels, VerifySettings, check,
                       format_check_list, format_report, models_needed, result, run_check, run_verify,
                       select_checks, train_config, train_models_for_verify, training_workers)
# The checks, registered in the order of the report: by kind.
from .symbolic import (exact, gd_closed_form, loop_families_one_loop_one_step, thm31_nocot_floor, thm31_nocot_optimal_step, thm32_lsa_step_is_gd,
                       thm32_rejects_wrong_v31, wishart_third_moment)
from .numeric import (EQUIVALENCE_GRID, EQUIVALENCE_TOL, NOISE_KSTAR_GRID, cot_rollout_is_gd, equivalence_worst,
                      gd_recursion_is_closed_form, kstar_grid, looped_is_gd, noise_best_cot_length_brute_force)
from .statistical import (NOISE_GRID, NOISE_NOCOT_GRID, Z_SE, argmin_consistency, gd_loss_mc_vs_exact,
                          mp_limit_vs_mc, noise_best_cot_length_mc_argmin, noise_gd_loss_mc_vs_exact,
                          noise_nocot_floor_mc_vs_exact, nocot_floor_mc_vs_exact, thm42_boundary_predicted_fraction,
                          within_se)
from .training import (cot_beats_nocot, cot_loss_vs_gd, cot_structure_functional_deviation,
                       cot_structure_offdiag_energy, cot_structure_v31_w13, cot_structure_w24_v31,
                       looped_full_no_equivariant_family, looped_full_vs_best_gd_step, looped_median_below_cot, looped_vs_best_gd_step, noise_cot_k5_vs_exact,
                       noise_cot_k10_vs_exact, nocot_at_floor, ood_half_vs_gd, ood_one_and_half_vs_gd,
                       thm42_boundary_median_crossing)

__all__ = [
    "ETA", "FULL_ONLY_REASON", "KINDS", "MODEL_NAMES", "MODEL_SPECS", "REGISTRY", "TRAINING_ORDER", "Check",
    "ModelTraining", "Progress", "RegisteredCheck", "TrainedModels", "VerifySettings", "check",
    "format_check_list", "format_report", "models_needed", "result", "run_check", "run_verify",
    "select_checks", "train_config", "train_models_for_verify", "training_workers", "exact", "gd_closed_form",
    "loop_families_one_loop_one_step",
    "thm31_nocot_floor", "thm31_nocot_optimal_step", "thm32_lsa_step_is_gd", "thm32_rejects_wrong_v31",
    "wishart_third_moment", "EQUIVALENCE_GRID", "EQUIVALENCE_TOL", "NOISE_KSTAR_GRID", "cot_rollout_is_gd",
    "equivalence_worst", "gd_recursion_is_closed_form", "kstar_grid", "looped_is_gd",
    "noise_best_cot_length_brute_force", "NOISE_GRID", "NOISE_NOCOT_GRID", "Z_SE", "argmin_consistency",
    "gd_loss_mc_vs_exact", "mp_limit_vs_mc", "noise_best_cot_length_mc_argmin", "noise_gd_loss_mc_vs_exact",
    "noise_nocot_floor_mc_vs_exact", "nocot_floor_mc_vs_exact", "thm42_boundary_predicted_fraction",
    "within_se", "cot_beats_nocot", "cot_loss_vs_gd", "cot_structure_functional_deviation",
    "cot_structure_offdiag_energy", "cot_structure_v31_w13", "cot_structure_w24_v31",
    "looped_full_no_equivariant_family", "looped_full_vs_best_gd_step", "looped_median_below_cot", "looped_vs_best_gd_step",
    "noise_cot_k5_vs_exact", "noise_cot_k10_vs_exact", "nocot_at_floor", "ood_half_vs_gd",
    "ood_one_and_half_vs_gd", "thm42_boundary_median_crossing",
]
