"""What algorithm a trained model runs: its estimates loop by loop beside the members of the
algorithm families of ``numerics.loop_families`` on the same prompts (docs/theory.md section 18).

``explain_run(run)`` reads a run's learned ``(V, W)`` (``training.load_run``), draws prompts from
the run's own training distribution (its Sigma and label noise), computes the learned model's
estimates after ``0 .. k`` loops (looped runs; a CoT run's k autoregressive steps; a no-CoT run's
one pass) in float64, fits each family's best member on the same prompts, and measures the
functional deviation ``E ||w_t^learned - w_t^family||^2 / E ||w_t^learned - w*||^2`` per loop.
For a fully parametrised model it also measures the learned model with groups of its blocks set
to zero (``ablations``): which parts of ``(V, W)`` the learned algorithm relies on.

A family *explains* the model when its best member is within ``MATCH_LOSS_RTOL`` of the learned
model's median and mean after k loops and its deviation at the last loop is at most
``MATCH_DEVIATION`` (issue 24's target).  Every number is Monte Carlo over the drawn prompts
(standard errors beside the means); heavy tails make the means noisy, so medians are shown too.
"""
from __future__ import annotations

import numpy as np

import numerics
import theory
from numerics import loop_families

from .rundir import Run, load_run

__all__ = ["ABLATIONS", "MATCH_DEVIATION", "MATCH_LOSS_RTOL", "explain_run", "format_explanation",
           "learned_iterates"]

MATCH_LOSS_RTOL = 0.10
MATCH_DEVIATION = 0.10

# Groups of blocks (row block, column block) set to zero, with what they carry (docs/theory.md
# section 18).  "V" or "W" names the parameter; None keeps only the GD blocks; "isotropic" replaces
# every block by its average over rotations x -> Q x, w -> Q w (d x d blocks by tr(B)/d I, blocks
# between a d-block and a 1-block by 0, 1 x 1 blocks kept).
ABLATIONS = (
    ("only V31, W13, W24 (the GD blocks)", None),
    ("only the isotropic part of every block (its rotation average)", "isotropic"),
    ("without the data rewrite V1*, V2*", [("V", r, c) for r in (1, 2) for c in range(1, 5)]),
    ("without V33, V34 (estimate rows into the estimate)", [("V", 3, 3), ("V", 3, 4)]),
    ("without W31, W32, W41, W42 (data columns read through the estimate rows)",
     [("W", r, c) for r in (3, 4) for c in (1, 2)]),
    ("without W33, W34, W43, W44 (the estimate column read through its own rows)",
     [("W", r, c) for r in (3, 4) for c in (3, 4)]),
    ("without V4* (writes into the one row)", [("V", 4, c) for c in range(1, 5)]),
)


def _float(M) -> np.ndarray:
    if hasattr(M, "detach"):
        M = M.detach().cpu().double().numpy()
    return np.asarray(M, dtype=np.float64)


def learned_iterates(V, W, X, y, k: int, mode: str) -> np.ndarray:
    """The model's estimates ``(B, k + 1, d)``: ``k`` loops (looped), ``k`` autoregressive CoT
    steps (cot), or the one pass (nocot, ``k`` taken as 1) -- ``numerics.lsa``."""
    V, W = _float(V), _float(W)
    if mode == "cot":
        return numerics.cot_rollout(X, y, V, W, k)
    return numerics.looped_rollout(X, y, V, W, 1 if mode == "nocot" else k)


def _zeroed(V, W, blocks, d: int) -> tuple:
    L = theory.Layout(d)
    V, W = V.copy(), W.copy()
    if blocks == "isotropic":              # E_Q of each block under x -> Q x, w -> Q w (Q Haar)
        for M in (V, W):
            for r in range(1, 5):
                for c in range(1, 5):
                    B = M[L.block(r), L.block(c)]
                    if r in (1, 3) and c in (1, 3):
                        M[L.block(r), L.block(c)] = np.trace(B) / d * np.eye(d)
                    elif (r in (1, 3)) != (c in (1, 3)):
                        M[L.block(r), L.block(c)] = 0.0       # a vector block averages to 0
        return V, W
    if blocks is None:                         # keep only the GD blocks
        keepV, keepW = V[L.w, L.x].copy(), (W[L.x, L.w].copy(), W[L.y, L.one].copy())
        V[:], W[:] = 0.0, 0.0
        V[L.w, L.x], W[L.x, L.w], W[L.y, L.one] = keepV, *keepW
        return V, W
    for name, r, c in blocks:
        (V if name == "V" else W)[L.block(r), L.block(c)] = 0.0
    return V, W


def _matches(family: dict, learned: dict) -> bool:
    def close(a, b):
        return np.isfinite(a) and abs(a - b) <= MATCH_LOSS_RTOL * abs(b)
    return bool(close(family["median"], learned["median"]) and close(family["mean"], learned["mean"])
                and family["deviation"] <= MATCH_DEVIATION)


def _closest(fits: list):
    """The family with the least deviation at the last loop; among those within 1% of it (e.g.
    preconditioned GD and GD on Sigma = I, where they are one family), the one with the fewest
    scalars, then the first listed."""
    finite = [f for f in fits if np.isfinite(f["deviation"])]
    if not finite:
        return fits[0]["name"] if fits else None
    least = min(f["deviation"] for f in finite)
    near = [f for f in finite if f["deviation"] <= least * 1.01 + 1e-12]
    return min(near, key=lambda f: len(f["params"]))["name"]


def explain_run(run, *, samples: int = 20000, seed: int = 0, families=None, fit_on: int = 2000,
                ablations: bool = True, rotations: int = 8, progress=None) -> dict:
    """Explain the model of a run directory (a path, a ``training.Run``, or a ``TrainResult``):
    module docstring.

    Returns ``{"run", "mode", "d", "n", "k", "samples", "seed", "learned": {"median", "mean", "se",
    "diverged_frac", "curve_median", "curve_mean"}, "families": [{"name", "params", "median",
    "mean", "se", "exact_mean", "diverged_frac", "deviation", "deviation_per_loop", "deviation_median",
    "curve_median", "curve_mean", "matches"}], "best": NAME, "explained_by": [NAMES],
    "ablations": [{"name", "median", "mean", "diverged_frac"}], "symmetry": {"floor",
    "equivariance_error", "rotations", "prompts", "excluded", "averaged_median", "averaged_mean"}}``.
    ``symmetry`` (``numerics.loop_families.symmetry_floor`` on the first ``fit_on`` prompts, ``rotations``
    group elements per prompt; ``rotations=0`` leaves it out): the least deviation per loop that any
    algorithm equivariant under the distribution's symmetries -- every family here -- can have from
    the learned model.  ``best`` is the family with the least deviation at the last loop (the
    simplest of those within 1% of it);
    ``explained_by`` the families that meet the target (``MATCH_LOSS_RTOL``, ``MATCH_DEVIATION``).
    ``families``: names from ``numerics.loop_families.FAMILIES`` (default: all).  ``progress``: a
    callable taking one line of text, told of each family as it is fitted.
    """
    with np.errstate(over="ignore", invalid="ignore"):     # diverging prompts are counted, not warned about
        return _explain_run(run, samples=samples, seed=seed, families=families, fit_on=fit_on,
                            ablations=ablations, rotations=rotations, progress=progress)


def _explain_run(run, *, samples, seed, families, fit_on, ablations, rotations, progress) -> dict:
    if not isinstance(run, Run) and not all(hasattr(run, key) for key in ("config", "V", "W")):
        run = load_run(run)                 # a path; a Run or a TrainResult is used as it is
    if run.V is None or run.W is None:
        raise ValueError(f"{getattr(run, 'path', 'the run')!r} holds no trained parameters (params.pt): train it to the end first")
    samples = theory.validation.check_int("samples", samples, 2)
    seed = theory.validation.check_int("seed", seed, 0)
    fit_on = theory.validation.check_int("fit_on", fit_on, 2)
    names = list(loop_families.FAMILIES) if families is None else list(families)
    for name in names:
        if name not in loop_families.FAMILIES:
            raise ValueError(f"family must be one of {', '.join(loop_families.FAMILIES)}, got {name!r}")
    config = run.config
    d, n = config.d, config.n
    k = 1 if config.mode == "nocot" else config.k
    sigma = None if config.sigma is None else np.asarray(config.sigma, dtype=np.float64)
    X, y, w_star = numerics.sample_prompts(d, n, samples, seed, sigma=sigma, noise_var=config.noise ** 2)
    V, W = _float(run.V), _float(run.W)
    learned_it = learned_iterates(V, W, X, y, config.k, config.mode)
    learned = loop_families.loss_summary(learned_it, w_star)
    fits = []
    for name in names:
        if progress is not None:
            progress(f"fitting {name}")
        fit = loop_families.fit_family(name, X, y, w_star, k, sigma=sigma, target=learned_it, fit_on=fit_on,
                                       noise_var=config.noise ** 2)
        entry = {"name": name, "params": fit.params, "median": fit.median, "mean": fit.mean, "se": fit.se,
                 "diverged_frac": fit.diverged_frac, "deviation": fit.deviation[-1],
                 "deviation_per_loop": fit.deviation, "deviation_median": fit.deviation_median[-1],
                 "exact_mean": fit.exact,
                 "curve_median": fit.curve_median,
                 "curve_mean": fit.curve_mean}
        entry["matches"] = _matches(entry, learned)
        fits.append(entry)
    best = _closest(fits)
    symmetry = None
    if rotations:
        if progress is not None:
            progress("the symmetry floor")
        m = min(fit_on, samples)
        symmetry = loop_families.symmetry_floor(lambda Xs, ys: learned_iterates(V, W, Xs, ys, config.k, config.mode),
                                                X[:m], y[:m], w_star[:m], sigma=sigma, rotations=rotations, seed=seed)
    out = {"run": getattr(run, "path", None) or "(in memory)", "mode": config.mode, "param": config.param, "d": d, "n": n, "k": k,
           "sigma": None if sigma is None else sigma.tolist(), "noise": config.noise,
           "samples": samples, "seed": seed, "learned": learned, "families": fits, "best": best,
           "explained_by": [f["name"] for f in fits if f["matches"]],
           "match_rule": {"loss_rtol": MATCH_LOSS_RTOL, "deviation": MATCH_DEVIATION}, "ablations": [],
           "symmetry": symmetry}
    if ablations and config.param == "full" and config.mode == "looped":
        for label, blocks in ABLATIONS:
            Va, Wa = _zeroed(V, W, blocks, d)
            summary = loop_families.loss_summary(learned_iterates(Va, Wa, X, y, config.k, config.mode), w_star)
            out["ablations"].append({"name": label, "median": summary["median"], "mean": summary["mean"],
                                     "diverged_frac": summary["diverged_frac"]})
    return out


def format_explanation(result: dict) -> str:
    """The table ``cotgd explain`` prints."""
    learned = result["learned"]
    lines = [f"{result['run']}: {result['mode']} ({result.get('param', '')}), d {result['d']}, n {result['n']}, "
             f"k {result['k']}; {result['samples']} prompts of the run's distribution (seed {result['seed']})",
             f"{'model':<22} {'median':>9} {'mean':>9} {'+- se':>8} {'deviation':>10} {'(medians)':>10}  parameters",
             f"{'learned':<22} {learned['median']:>9.4g} {learned['mean']:>9.4g} {learned['se']:>8.2g} "
             f"{'':>10} {'':>10}"]
    for f in result["families"]:
        params = ", ".join(f"{key} {value:.4g}" for key, value in f["params"].items())
        mark = "  <- explains it" if f["matches"] else ""
        if f.get("exact_mean") is not None:
            params += f"; exact mean {f['exact_mean']:.4g}"
        lines.append(f"{f['name']:<22} {f['median']:>9.4g} {f['mean']:>9.4g} {f['se']:>8.2g} "
                     f"{f['deviation']:>10.3g} {f['deviation_median']:>10.3g}  {params}{mark}")
    rule = result["match_rule"]
    if result["explained_by"]:
        lines.append(f"explained by: {', '.join(result['explained_by'])} (median and mean within "
                     f"{rule['loss_rtol']:.0%}, deviation <= {rule['deviation']})")
    else:
        lines.append(f"no family explains it (median and mean within {rule['loss_rtol']:.0%} and deviation <= "
                     f"{rule['deviation']}); closest by deviation: {result['best']}")
    if result.get("symmetry"):
        sym = result["symmetry"]
        lines.append(f"symmetry floor: no algorithm equivariant under the distribution's symmetries (every family "
                     f"above) is closer than deviation {sym['floor'][-1]:.3g} at the last loop "
                     f"({sym['rotations']} group elements per prompt, {sym['prompts']} prompts); the model averaged "
                     f"over them, an equivariant algorithm, has median {sym['averaged_median']:.4g} and mean "
                     f"{sym['averaged_mean']:.4g} there")
    if result["ablations"]:
        lines.append("the learned model with blocks set to zero or averaged (median, mean without diverged, diverged):")
        for a in result["ablations"]:
            lines.append(f"  {a['name']:<72} {a['median']:>9.4g} {a['mean']:>10.4g} {a['diverged_frac']:>8.2%}")
    return "\n".join(lines)
