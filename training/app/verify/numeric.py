"""``cotgd verify``'s numeric checks: float64 computations with a tolerance near machine
precision (docs/theory.md sections 2, 4, 16): the constructed transformer's rollouts against GD,
the GD recursion against its closed form, and the best CoT length under label noise."""
from __future__ import annotations

import numpy as np

from ...data import exact_noise_var
from .registry import Check, VerifySettings, check, result


#: (d, n, k) of the equivalence grid: n < d included; quick uses the first six.
EQUIVALENCE_GRID = ((1, 1, 5), (3, 2, 10), (5, 20, 20), (10, 20, 10), (12, 7, 40), (8, 40, 30),
                    (2, 30, 40), (11, 5, 25), (6, 6, 35), (12, 40, 40))
EQUIVALENCE_TOL = 1e-10


def equivalence_worst(key: str, *, grid, prompts: int, seed: int, eta: float = 0.2) -> tuple:
    """The largest relative deviation ``key`` of ``numerics.check_gd_equivalence`` over the
    (d, n, k) ``grid`` (every other point with a random Sigma = A A^T / d + I / 2), and where:
    ``(worst, (d, n, k, 'Sigma = I' | 'random Sigma'))``."""
    import numerics
    rng = np.random.default_rng(seed)
    worst, where = 0.0, None
    for j, (d, n, k) in enumerate(grid):
        sigma = None
        if j % 2:
            A = rng.standard_normal((d, d))
            sigma = A @ A.T / d + 0.5 * np.eye(d)
        report = numerics.check_gd_equivalence(d, n, k, eta, seed=seed + j, sigma=sigma, prompts=prompts)
        rel = float(report.deviations[key][1])
        if rel >= worst or where is None:
            worst, where = rel, (d, n, k, "random Sigma" if sigma is not None else "Sigma = I")
    return worst, where


def _equivalence_check(settings: VerifySettings, key: str) -> Check:
    grid = EQUIVALENCE_GRID[:6] if settings.quick else EQUIVALENCE_GRID
    prompts = 8 if settings.quick else 32
    worst, where = equivalence_worst(key, grid=grid, prompts=prompts, seed=settings.seed)
    return result(worst, 0.0, f"<= {EQUIVALENCE_TOL:g} relative", worst <= EQUIVALENCE_TOL,
                  f"{len(grid)} (d, n, k) incl. n < d, {prompts} prompts each; worst at (d, n, k) = {where}")


@check("numeric.thm32-cot-rollout-is-gd", kind="numeric")
def cot_rollout_is_gd(settings):
    """Thm 3.2 (docs/theory.md section 4): the CoT rollout of the constructed transformer gives
    the k-step GD iterates, in float64 over a (d, n, k) grid incl. n < d and random Sigma."""
    return _equivalence_check(settings, "cot_vs_gd")


@check("numeric.thm32-looped-is-gd", kind="numeric")
def looped_is_gd(settings):
    """Thm 3.2 (docs/theory.md section 4): the looped constructed transformer gives the k-step GD
    iterates, in float64 over a (d, n, k) grid incl. n < d and random Sigma."""
    return _equivalence_check(settings, "looped_vs_gd")


@check("numeric.gd-recursion-is-closed-form", kind="numeric")
def gd_recursion_is_closed_form(settings):
    """The GD recursion equals the closed form (I - (I - eta S)^k) w* through eigh of S
    (docs/theory.md section 2), in float64 over a (d, n, k) grid incl. n < d and random Sigma."""
    return _equivalence_check(settings, "gd_vs_closed_form")


# ---------------------------------------------------------------- label noise (docs/theory.md section 16)
#: (d, n, eta, s, k_max) of the best-CoT-length check (an interior k* each; n < d included);
#: quick uses the first two with k_max at most 12.
NOISE_KSTAR_GRID = ((10, 20, 0.4, 2.0, 20), (8, 6, 0.2, 2.0, 10), (5, 10, 0.3, 1.5, 14))


def kstar_grid(settings: VerifySettings) -> list:
    """The (d, n, eta, s, k_max) of the best-CoT-length checks in a run with ``settings``."""
    if settings.quick:
        return [(d, n, eta, s, min(k_max, 12)) for d, n, eta, s, k_max in NOISE_KSTAR_GRID[:2]]
    return list(NOISE_KSTAR_GRID)


@check("numeric.noise-best-cot-length-brute-force", kind="numeric")
def noise_best_cot_length_brute_force(settings):
    """Label noise (docs/theory.md section 16): k* of theory.best_cot_length (exact argmin over
    0 .. k_max) is the argmin of the float64 losses at every k, and its loss is theirs to 1e-12."""
    import numerics
    import theory
    out, passed = [], True
    for d, n, eta, s, k_max in kstar_grid(settings):
        best = theory.best_cot_length(d, n, eta, k_max,
                                      noise_var=exact_noise_var(s))
        values = [float(numerics.gd_eval_loss_value(d, n, eta, k, noise_var=s * s)) for k in range(k_max + 1)]
        brute = int(np.argmin(values))
        ok = best.k_star == brute and abs(float(best.loss) - values[brute]) <= 1e-12 * values[brute]
        passed &= ok
        out.append((best.k_star, brute, f"k* {best.k_star} (loss {float(best.loss):.6g}) at (d, n, eta, s) = "
                                        f"({d}, {n}, {eta}, {s}), k <= {k_max}"))
    return result(" / ".join(str(o[0]) for o in out), " / ".join(str(o[1]) for o in out),
                  "equal k*; losses to 1e-12 relative", passed, "; ".join(o[2] for o in out))
