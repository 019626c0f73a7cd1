"""``cotgd verify``'s statistical checks: an independent Monte Carlo against an exact value,
tolerance in standard errors (``Z_SE``; docs/theory.md sections 5, 7, 9, 16)."""
from __future__ import annotations

import dataclasses

import numpy as np

from ... import PAPER
from ...data import exact_noise_var
from ...evaluate import stable_scale
from .numeric import kstar_grid
from .registry import ETA, Check, check, result

#: The tolerance of every Monte Carlo comparison, in standard errors.
Z_SE = 4.0


def within_se(measured: float, expected: float, se: float, z: float = Z_SE) -> bool:
    """``|measured - expected| <= z se``."""
    return abs(measured - expected) <= z * se


@check("statistical.gd-loss-mc-vs-exact", kind="statistical")
def gd_loss_mc_vs_exact(settings):
    """The k-step GD evaluation loss (docs/theory.md sections 2, 9): an independent Monte Carlo
    estimate against the exact value from the Wishart moments (d 10, n 20, eta 0.4)."""
    import numerics
    import theory
    samples = 200_000 if settings.quick else 1_000_000
    k = min(PAPER.k, theory.MAX_EXACT_MOMENT // 2)
    exact = float(theory.gd_eval_loss(PAPER.d, PAPER.n, ETA, k))
    mc = numerics.eval_loss_mc(PAPER.d, PAPER.n, PAPER.eta, k, samples=samples, seed=settings.seed)
    return result(mc["mean"], exact, f"{Z_SE:g} SE (independent Monte Carlo vs exact)",
                  within_se(mc["mean"], exact, mc["se"]), f"k {k}; SE {mc['se']:.2g}, {samples} prompts")


@check("statistical.nocot-floor-mc-vs-exact", kind="statistical")
def nocot_floor_mc_vs_exact(settings):
    """Thm 3.1 (docs/theory.md section 5): the loss of the optimal no-CoT transformer, an
    independent Monte Carlo estimate against the exact floor d (d + 1) / (2 (n + d + 1))."""
    import numerics
    import theory
    samples = 200_000 if settings.quick else 1_000_000
    floor = float(theory.nocot_min_loss(PAPER.d, PAPER.n))
    mc = numerics.nocot_loss_mc(PAPER.d, PAPER.n, samples=samples, seed=settings.seed + 1)
    return result(mc["mean"], floor, f"{Z_SE:g} SE (independent Monte Carlo vs exact)",
                  within_se(mc["mean"], floor, mc["se"]), f"SE {mc['se']:.2g}, {samples} prompts")


@check("statistical.mp-limit-vs-mc", kind="statistical")
def mp_limit_vs_mc(settings):
    """The Marchenko-Pastur limit of the per-coordinate GD loss (docs/theory.md section 9) against
    an independent Monte Carlo at d = 100, n = 200 (k 10, eta 0.4).

    The finite-d gap is O(1/d), so the tolerance adds the exact gap at d = 10, n = 20 scaled by
    10 / 100 to 4 standard errors."""
    import numerics
    d, n, eta, k = PAPER.d, PAPER.n, PAPER.eta, PAPER.k
    mp = float(numerics.mp_gd_eval_loss(d / n, eta, k))
    gap10 = abs(float(numerics.gd_eval_loss_value(d, n, eta, k)) / d - mp)
    dl, nl = 10 * d, 10 * n
    samples = 2_000 if settings.quick else 10_000
    mc = numerics.eval_loss_mc(dl, nl, eta, k, samples=samples, seed=settings.seed + 2)
    per_coord, se = mc["mean"] / dl, mc["se"] / dl
    tol = Z_SE * se + gap10 * d / dl
    return result(per_coord, mp, f"{Z_SE:g} SE + gap(d=10) / 10 = {tol:.2g} (independent Monte Carlo vs exact limit)",
                  abs(per_coord - mp) <= tol,
                  f"d {dl}, n {nl}, k {k}; SE {se:.2g}, {samples} prompts; exact gap at d = 10: {gap10:.3g}")


@check("statistical.ood-thm42-boundary-predicted-fraction", kind="statistical")
def thm42_boundary_predicted_fraction(settings):
    """Thm 4.2 (docs/theory.md section 7): GD on a prompt with Sigma = c I is stable iff
    eta c lambda_max(S) < 2; from sampled spectra of S, the fraction of unstable prompts is below
    0.05 at 0.8 c* and above 0.95 at 2 c*."""
    import numerics
    d, n, eta = PAPER.d, PAPER.n, PAPER.eta
    samples = 5_000 if settings.quick else 20_000
    boundary = stable_scale(eta, None, d, n)       # c*: Sigma = c I is predicted stable iff c < c*
    lam_max = np.linalg.eigvalsh(numerics.sample_gram(d, n, samples, settings.seed + 9))[:, -1]
    p_lo, p_hi = (float(np.mean(eta * f * boundary * lam_max >= 2)) for f in (0.8, 2.0))
    return result(f"{p_lo:.3f} / {p_hi:.3f}", "< 0.05 / > 0.95", "fractions at 0.8 c* / 2 c*",
                  p_lo < 0.05 and p_hi > 0.95, f"c* = {boundary:.3g}; {samples} sampled spectra of S")

# ---------------------------------------------------------------- label noise (docs/theory.md section 16)
#: (d, n, eta, s, k) at which the exact noisy GD loss meets Monte Carlo: n < d and n = d included,
#: each with a negligible share of the mean on unstable prompts (eta lambda_max(S) >= 2), which
#: a Monte Carlo cannot see; quick uses the first three.
NOISE_GRID = ((10, 20, 0.4, 1.0, 10), (10, 5, 0.15, 0.5, 6), (4, 12, 0.4, 2.0, 8), (8, 6, 0.2, 1.0, 12),
              (6, 6, 0.2, 1.0, 5))
#: (d, n, s) of the no-CoT floor with noise; n < d included.
NOISE_NOCOT_GRID = ((10, 20, 1.0), (10, 5, 0.5), (4, 12, 2.0))


def _grid_rows(rows: list, name: str) -> Check:
    """One row for a grid of ``(where, measured, expected, se, passed)``: the worst point in SE."""
    worst = max(rows, key=lambda r: (not r[4], abs(r[1] - r[2]) / r[3] if r[3] > 0 else np.inf))
    where, measured, expected, se, _ = worst
    z = (measured - expected) / se if se > 0 else float("inf")
    return result(measured, expected, f"{Z_SE:g} SE at every point (independent Monte Carlo vs exact)",
                  all(r[4] for r in rows), f"{len(rows)} {name} incl. n < d; worst {z:+.2f} SE at {where}")


@check("statistical.noise-gd-loss-mc-vs-exact", kind="statistical")
def noise_gd_loss_mc_vs_exact(settings):
    """Label noise (docs/theory.md section 16): the exact noisy k-step GD loss (Wishart moments)
    against an independent Monte Carlo of GD on noisy prompts, within 4 SE at every (d, n, eta,
    s, k) of a grid incl. n < d."""
    import numerics
    grid = NOISE_GRID[:3] if settings.quick else NOISE_GRID
    samples = 100_000 if settings.quick else 400_000
    rows = []
    for j, (d, n, eta, s, k) in enumerate(grid):
        exact = float(numerics.gd_eval_loss_value(d, n, eta, k, noise_var=s * s))
        mc = numerics.eval_loss_mc(d, n, eta, k, samples=samples, seed=settings.seed + 20 + j, noise_var=s * s)
        rows.append(((d, n, eta, s, k), mc["mean"], exact, mc["se"], within_se(mc["mean"], exact, mc["se"])))
    row = _grid_rows(rows, "(d, n, eta, s, k)")
    return dataclasses.replace(row, detail=row.detail + f"; {samples} prompts each")


def argmin_consistency(exact: list, losses: np.ndarray, k_star: int, z: float = Z_SE) -> dict:
    """Is the exact ``k_star`` the argmin of a Monte Carlo loss curve, up to its noise?  ``exact``:
    the exact mean loss at k = 0 .. K; ``losses``: (K + 1, prompts) per-prompt losses of the same
    prompts at every k, so gaps between two k are paired (their SE is small).  Passes when

    * no k beats ``k_star``: every paired gap ``mean(loss_k - loss_{k*})`` is above ``-z`` of
      its SE (fails for a wrong k*);
    * at the Monte Carlo argmin ``k_mc`` the paired gap matches the exact gap
      ``exact[k_mc] - exact[k*]`` within ``z`` SE, and the mean at ``k*`` is within ``z`` SE of
      ``exact[k*]`` (fails for a wrong curve).

    Returns ``{k_mc, gap_mc, gap_exact, gap_se, worst_z (the most negative gap in SE, 0 when
    none), mean_at_k_star, se_at_k_star, passed}``."""
    losses = np.asarray(losses, dtype=float)
    n = losses.shape[1]
    means = losses.mean(axis=1)
    diffs = losses - losses[k_star]
    gaps = diffs.mean(axis=1)
    ses = diffs.std(axis=1, ddof=1) / np.sqrt(n)
    others = [k for k in range(len(means)) if k != k_star and ses[k] > 0]
    worst_z = min([0.0] + [float(gaps[k] / ses[k]) for k in others])
    k_mc = int(np.argmin(means))
    gap_mc, gap_se = float(gaps[k_mc]), float(ses[k_mc])
    gap_exact = float(exact[k_mc] - exact[k_star])
    se_star = float(losses[k_star].std(ddof=1) / np.sqrt(n))
    passed = (worst_z >= -z
              and abs(gap_mc - gap_exact) <= z * gap_se + 1e-12 * abs(exact[k_star])
              and within_se(float(means[k_star]), float(exact[k_star]), se_star, z))
    return {"k_mc": k_mc, "gap_mc": gap_mc, "gap_exact": gap_exact, "gap_se": gap_se, "worst_z": worst_z,
            "mean_at_k_star": float(means[k_star]), "se_at_k_star": se_star, "passed": bool(passed)}


@check("statistical.noise-best-cot-length-mc-argmin", kind="statistical")
def noise_best_cot_length_mc_argmin(settings):
    """Label noise (docs/theory.md section 16): on a Monte Carlo loss curve (the same prompts at
    every k) no k beats the exact k* by 4 paired SE, the gap from k* to the curve's own argmin
    matches the exact gap within 4 SE, and its mean at k* is within 4 SE of the exact minimum."""
    import numerics
    import theory
    samples = 20_000 if settings.quick else 100_000
    out, passed = [], True
    for j, (d, n, eta, s, k_max) in enumerate(kstar_grid(settings)):
        best = theory.best_cot_length(d, n, eta, k_max,
                                      noise_var=exact_noise_var(s))
        exact = [float(numerics.gd_eval_loss_value(d, n, eta, k, noise_var=s * s)) for k in range(k_max + 1)]
        losses = np.stack([numerics.eval_loss_mc(d, n, eta, k, samples=samples, seed=settings.seed + 30 + j,
                                                 noise_var=s * s, keep_losses=True).losses
                           for k in range(k_max + 1)])
        c = argmin_consistency(exact, losses, best.k_star)
        passed &= c["passed"]
        below = f"best other k {c['worst_z']:+.2f} SE" if c["worst_z"] < 0 else "no k below k*"
        out.append((c["k_mc"], best.k_star,
                    f"({d}, {n}, {eta}, {s}): {below}; gap to k_mc {c['gap_mc']:+.3g} vs exact "
                    f"{c['gap_exact']:+.3g} (SE {c['gap_se']:.2g}), mean at k* {c['mean_at_k_star']:.4g} vs "
                    f"{exact[best.k_star]:.4g} (SE {c['se_at_k_star']:.2g})"))
    return result(" / ".join(str(o[0]) for o in out), " / ".join(str(o[1]) for o in out),
                  f"Monte Carlo argmin vs exact k*: no k below k* by {Z_SE:g} paired SE; gap, mean at k* "
                  f"within {Z_SE:g} SE", passed,
                  "; ".join(o[2] for o in out) + f"; {samples} prompts")


@check("statistical.noise-nocot-floor-mc-vs-exact", kind="statistical")
def noise_nocot_floor_mc_vs_exact(settings):
    """Label noise (docs/theory.md sections 5, 16): the no-CoT optimum for noisy labels (step
    n / (n + d + 1 + s^2)), an independent Monte Carlo of its loss against the exact floor
    d (d + 1 + s^2) / (2 (n + d + 1 + s^2)), within 4 SE at every (d, n, s) incl. n < d."""
    import numerics
    import theory
    samples = 100_000 if settings.quick else 400_000
    rows = []
    for j, (d, n, s) in enumerate(NOISE_NOCOT_GRID):
        floor = float(theory.nocot_min_loss(d, n, noise_var=exact_noise_var(s)))
        mc = numerics.nocot_loss_mc(d, n, samples=samples, seed=settings.seed + 40 + j, noise_var=s * s)
        rows.append(((d, n, s), mc["mean"], floor, mc["se"], within_se(mc["mean"], floor, mc["se"])))
    row = _grid_rows(rows, "(d, n, s)")
    return dataclasses.replace(row, detail=row.detail + f"; {samples} prompts each")
