"""The figure of ``cotgd explain``: loss per loop of the learned model and of each family's best
member on the same prompts, and the learned blocks beside the constructed blocks of the family
closest to it (``training.explain``; docs/theory.md section 18)."""
from __future__ import annotations

import numpy as np

import numerics
import theory

from .figures import _plt, _save


def _block_norms(M: np.ndarray, d: int) -> np.ndarray:
    L = theory.Layout(d)
    return np.array([[np.linalg.norm(M[L.block(r), L.block(c)]) for c in range(1, 5)] for r in range(1, 5)])


def explain_figure(result: dict, V, W, path: str) -> str:
    """PNG at ``path``: left, the median loss per loop (log scale) of the learned model and of
    each family's best member, the learned mean dashed, the median of the learned model averaged
    over the distribution's symmetries (a star, when measured); right, the Frobenius norms of the 16
    blocks of the learned V and W beside those of the constructed (V, W) of the closest family
    that one loop implements (``numerics.loop_families.family_params``)."""
    plt = _plt()
    d = result["d"]
    fig = plt.figure(figsize=(13, 4.6))
    grid = fig.add_gridspec(2, 3, width_ratios=[1.6, 1, 1])
    ax = fig.add_subplot(grid[:, 0])
    loops = np.arange(len(result["learned"]["curve_median"]))
    ax.plot(loops, result["learned"]["curve_median"], "k-o", lw=2, ms=4, label="learned, median")
    ax.plot(loops, result["learned"]["curve_mean"], "k--", lw=1, label="learned, mean")
    for i, f in enumerate(result["families"]):
        params = ", ".join(f"{key} {value:.3g}" for key, value in f["params"].items())
        ax.plot(loops, f["curve_median"], "-", color=f"C{i}", lw=1.3,
                label=f"{f['name']} ({params}); deviation {f['deviation']:.2g}")
    sym = result.get("symmetry")
    if sym:
        ax.plot([loops[-1]], [sym["averaged_median"]], "k*", ms=11,
                label=f"learned, averaged over {sym['rotations']} symmetries (median)")
    ax.set_yscale("log")
    ax.set_xlabel("loop")
    ax.set_ylabel("(1/2) ||w_t - w*||^2")
    ax.set_title(f"{result['mode']} model, d {d}, n {result['n']}: median loss per loop", fontsize=10)
    ax.legend(fontsize=7)
    implementable = [f for f in result["families"] if f["name"] in ("gd", "preconditioned_gd", "gd++")]
    closest = min(implementable, key=lambda f: f["deviation"]) if implementable else None
    sigma = None if result.get("sigma") is None else np.asarray(result["sigma"])
    panels = [("learned V", _block_norms(np.asarray(V, dtype=float), d)),
              ("learned W", _block_norms(np.asarray(W, dtype=float), d))]
    if closest is not None:
        Vf, Wf = numerics.loop_families.family_params(closest["name"], d, closest["params"], sigma=sigma)
        panels += [(f"{closest['name']} V", _block_norms(Vf, d)), (f"{closest['name']} W", _block_norms(Wf, d))]
    names = [theory.BLOCK_NAMES[i] for i in range(1, 5)]
    top = max(float(p.max()) for _, p in panels) or 1.0
    for j, (title, norms) in enumerate(panels):
        a = fig.add_subplot(grid[j % 2, 1 + j // 2])
        a.imshow(norms, cmap="viridis", vmin=0, vmax=top)
        for r in range(4):
            for c in range(4):
                a.text(c, r, f"{norms[r, c]:.2f}", ha="center", va="center", fontsize=6,
                       color="white" if norms[r, c] < 0.6 * top else "black")
        a.set_xticks(range(4), names, fontsize=7)
        a.set_yticks(range(4), names, fontsize=7)
        a.set_title(title + " (block norms)", fontsize=8)
    return _save(fig, path)
