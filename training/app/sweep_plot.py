"""Phase diagrams from a sweep's table (``cotgd sweep plot DIR``; the table is
``training.sweep.load_results``), drawn with matplotlib's Agg backend as PNG:

* ``phase_diagram.png``: the trained CoT / no-CoT evaluation-loss ratio over (n/d, k), a CoT
  cell paired with the no-CoT cell of the same config (same k when there is one), with the
  theory's ratio (exact k-step GD over Theorem 3.1's floor, docs/theory.md sections 2 and 5) as
  contour lines; the ratio-1 line is where chain of thought starts to pay;
* ``trained_vs_theory.png``: each cell's trained loss over the theory's model on the very same
  prompts (``theory_same_prompts``; the theory's value where that is missing), per mode: where
  training falls short of the theory (ratio > 1);
* ``ood_stability.png``: the median out-of-distribution loss of trained CoT models over the GD
  step eta and the covariance scale c (``ood_sigmas``, or cells trained at ``sigma = c I``), with
  Theorem 4.2's boundary ``eta c (1 + sqrt(d/n))^2 = 2`` (docs/theory.md section 7).

A panel whose axes the table lacks is skipped with a one-line note saying what it needs.
"""
from __future__ import annotations

import math
import os

import numpy as np

#: Config columns that are not a facet of a panel: the axes, replicates and bookkeeping.
NOT_FACETS = ("cell", "mode", "n", "k", "seed", "device", "checkpoint_every", "eval_every", "threads",
              "prefetch", "progress", "out", "ood_sigmas", "theory_samples", "structure_samples", "eval_samples")
#: At most this many facets (combinations of the other varying config fields) per figure.
MAX_FACETS = 6
#: Colour range of log2 ratios (1/16 .. 16).
LOG2_CLIP = 4.0
#: Colour range of log2 trained / theory (0.71 .. 1.41): a few per cent must show.
TRAINED_CLIP = 0.5
#: Contour levels of the theory's ratio.
RATIO_LEVELS = (1 / 8, 1 / 4, 1 / 2, 1, 2, 4, 16)


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _config_columns(frame) -> list:
    from ..sweep import config_fields
    return [c for c in config_fields() if c in frame.columns and c not in ("out", "progress")]


def _facets(frame, exclude=()) -> list:
    """``[(label, sub-frame)]``: one per combination of the config fields that vary, beyond the
    panel's axes (``NOT_FACETS`` and ``exclude``); at most ``MAX_FACETS``."""
    varying = [c for c in _config_columns(frame) if c not in NOT_FACETS and c not in exclude
               and frame[c].astype(str).nunique(dropna=False) > 1]
    if not varying:
        return [("", frame)]
    out = []
    for values, sub in frame.groupby([frame[c].astype(str) for c in varying], sort=True):
        values = values if isinstance(values, tuple) else (values,)
        out.append((", ".join(f"{c} {v}" for c, v in zip(varying, values)), sub))
    return out[:MAX_FACETS]


def _edges(values: np.ndarray) -> np.ndarray:
    """Cell edges around sorted centres (midpoints; the ends mirrored)."""
    if len(values) == 1:
        return np.array([values[0] - 0.5, values[0] + 0.5])
    mid = (values[1:] + values[:-1]) / 2
    return np.concatenate([[2 * values[0] - mid[0]], mid, [2 * values[-1] - mid[-1]]])


def _grid(frame, value: str, reduce=np.nanmean):
    """Centres (log n/d, log2 k), their labels and the (k, n/d) matrix of ``value`` (the mean of
    log2 values over replicates, NaN where a cell is missing)."""
    xs = np.array(sorted(frame["n_over_d"].unique()), dtype=float)
    ks = np.array(sorted(frame["k"].unique()), dtype=float)
    Z = np.full((len(ks), len(xs)), np.nan)
    for (x, k), sub in frame.groupby(["n_over_d", "k"]):
        vals = sub[value].to_numpy(dtype=float)
        vals = vals[np.isfinite(vals)]
        if vals.size:
            Z[list(ks).index(k), list(xs).index(x)] = reduce(vals)
    return np.log(xs), np.log2(ks), xs, ks, Z


def _heatmap(ax, frame, value: str, *, title: str, contour: str | None = None, cmap="RdBu_r",
             clip: float = LOG2_CLIP, second: str | None = None, digits: str = ".3g"):
    """log2 of ``value`` over (n/d, k) as coloured cells (1 = white), annotated with the value
    (and ``second`` in brackets); ``contour``: a second column drawn as labelled contour lines of
    its log2, on a dense grid of exact values where ``dense_theory_ratio`` has them."""
    X, Y, xs, ks, Z = _grid(frame, value)
    S = _grid(frame, second)[4] if second is not None else None
    with np.errstate(divide="ignore", invalid="ignore"):
        logZ = np.log2(Z)
    mesh = ax.pcolormesh(_edges(X), _edges(Y), np.ma.masked_invalid(np.clip(logZ, -clip, clip)),
                         cmap=cmap, vmin=-clip, vmax=clip, shading="flat")
    for i, y in enumerate(Y):
        for j, x in enumerate(X):
            if np.isfinite(Z[i, j]):
                dark = abs(np.clip(logZ[i, j], -clip, clip)) > 0.6 * clip
                text = _fmt(Z[i, j], digits)
                if S is not None and np.isfinite(S[i, j]):
                    text += f"\n({_fmt(S[i, j], digits)})"
                ax.text(x, y, text, ha="center", va="center", fontsize=7, color="white" if dark else "black")
            else:
                ax.text(x, y, "n/a", ha="center", va="center", fontsize=6, color="0.5")
    if contour is not None and len(X) > 1 and len(Y) > 1:
        dense = dense_theory_ratio(frame)
        if dense is not None:
            CX, CY, C = dense
        else:
            CX, CY, C = X, Y, _grid(frame, contour)[4]
        with np.errstate(divide="ignore", invalid="ignore"):
            logC = np.log2(C)
        if np.isfinite(logC).sum() >= 4:
            levels = [math.log2(r) for r in RATIO_LEVELS if np.nanmin(logC) < math.log2(r) < np.nanmax(logC)]
            if levels:
                cs = ax.contour(CX, CY, np.ma.masked_invalid(logC), levels=levels, colors="k", alpha=0.75,
                                linewidths=[2.4 if abs(lv) < 1e-9 else 1.0 for lv in levels],
                                linestyles=["-" if abs(lv) < 1e-9 else "--" for lv in levels])
                ax.clabel(cs, fmt=lambda lv: f"{2 ** lv:.3g}", fontsize=7, inline=True)
    ax.set_xticks(X, [f"{x:g}" for x in xs])
    ax.set_yticks(Y, [f"{k:g}" for k in ks])
    ax.set_xlabel("n / d")
    ax.set_ylabel("k (CoT steps)")
    ax.set_title(title, fontsize=9)
    return mesh


def _fmt(value: float, digits: str = ".3g") -> str:
    if abs(value) >= 1000 or abs(value) < 0.01:
        return f"{value:.0e}"
    return format(value, digits)


#: Most exact (n, k) values ``dense_theory_ratio`` computes for one panel.
DENSE_MAX = 400


def dense_theory_ratio(frame):
    """The theory's CoT / no-CoT ratio ``theory.gd_eval_loss(d, n, eta, k) / theory.nocot_min_loss(d, n)``
    (exact, ``numerics.gd_eval_loss_value``) on every integer n and k of the panel's range:
    ``(log n/d, log2 k, ratio)``; None unless the panel has one d and one eta, the identity
    covariance and k within ``evaluate.EXACT_THEORY_MAX_K``."""
    import numerics
    import theory
    from ..evaluate import EXACT_THEORY_MAX_K
    if frame["d"].nunique() != 1 or frame["eta"].nunique() != 1 or frame["sigma"].notna().any():
        return None
    d, eta = int(frame["d"].iloc[0]), float(frame["eta"].iloc[0])
    ns = np.arange(int(frame["n"].min()), int(frame["n"].max()) + 1)
    ks = np.arange(int(frame["k"].min()), int(frame["k"].max()) + 1)
    if ks.max() > EXACT_THEORY_MAX_K or len(ns) * len(ks) > DENSE_MAX:
        return None
    R = np.array([[numerics.gd_eval_loss_value(d, int(n), eta, int(k)) / float(theory.nocot_min_loss(d, int(n)))
                   for n in ns] for k in ks])
    return np.log(ns / d), np.log2(ks), R


def _has_axes(frame) -> bool:
    return frame["n_over_d"].nunique() > 1 or frame["k"].nunique() > 1


def _finish(fig, path: str) -> str:
    fig.savefig(path, dpi=130, bbox_inches="tight")
    _pyplot().close(fig)
    return path


#: Cells whose numbers the plots draw: finished, or trained to the end and judged failed by
#: ``training.verdict`` (worse than predicting 0: a real measurement, e.g. GD past Theorem 4.2's
#: bound); a cell that raised has no loss and drops out by ``final_eval_loss``.
MEASURED = ("done", "failed")


def _trained(frame):
    return frame[frame["status"].isin(MEASURED) & frame["train"].astype(bool) & frame["final_eval_loss"].notna()]


def pair_modes(frame):
    """CoT rows joined with their no-CoT partner (same config but mode, and k where the partner
    has the same k, else any k: a no-CoT model does not depend on k): a frame with
    ``ratio_trained`` and ``ratio_theory`` (CoT over no-CoT loss)."""
    import pandas as pd
    keys = [c for c in _config_columns(frame) if c not in ("mode", "k", "checkpoint_every")]
    cot, nocot = frame[frame["mode"] == "cot"], frame[frame["mode"] == "nocot"]
    rows = []
    partners = {}
    for _, row in nocot.iterrows():
        partners.setdefault(tuple(str(row[c]) for c in keys), []).append(row)
    for _, row in cot.iterrows():
        found = partners.get(tuple(str(row[c]) for c in keys))
        if not found:
            continue
        same_k = [p for p in found if p["k"] == row["k"]]
        partner = (same_k or found)[0]
        out = row.copy()
        out["ratio_trained"] = (row["final_eval_loss"] / partner["final_eval_loss"]
                                if row["final_eval_loss"] is not None and partner["final_eval_loss"] is not None
                                else float("nan"))
        out["ratio_theory"] = row["theory_eval_loss"] / partner["theory_eval_loss"]
        rows.append(out)
    return pd.DataFrame(rows)


def plot_phase(frame, path: str) -> str | None:
    """``phase_diagram.png`` (module docstring): from the trained cells, or, in a sweep without
    training (``train = false``), the theory's ratio alone; None when the table cannot give it."""
    trained = _trained(frame)
    theory_only = trained.empty
    if theory_only:
        trained = frame[(frame["status"] == "done") & frame["theory_eval_loss"].notna()]
    if not {"cot", "nocot"} <= set(trained["mode"]):
        return None
    pairs = pair_modes(trained)
    if pairs.empty or not _has_axes(pairs):
        return None
    plt = _pyplot()
    facets = _facets(pairs)
    fig, axes = plt.subplots(1, len(facets), figsize=(5.2 * len(facets) + 1, 4.4), squeeze=False)
    mesh = None
    for ax, (label, sub) in zip(axes[0], facets):
        if theory_only:
            mesh = _heatmap(ax, sub, "ratio_theory", contour="ratio_theory",
                            title="colour, number, lines: the theory's CoT / no-CoT loss ratio\n"
                                  "(no trained cells: train = false), bold line = 1"
                                  + (f"\n{label}" if label else ""))
            continue
        mesh = _heatmap(ax, sub, "ratio_trained", contour="ratio_theory", second="ratio_theory",
                        title="colour, number: trained CoT / no-CoT loss; (theory's ratio)\n"
                              "lines: theory's ratio (exact k-step GD / Thm 3.1 floor), bold = 1"
                              + (f"\n{label}" if label else ""))
    bar = fig.colorbar(mesh, ax=axes[0].tolist(), shrink=0.9)
    ticks = np.arange(-LOG2_CLIP, LOG2_CLIP + 1, 2)
    bar.set_ticks(ticks, labels=[f"{2 ** t:g}" for t in ticks])
    bar.set_label("loss ratio CoT / no-CoT (log scale; < 1: CoT better)")
    fig.suptitle(_suptitle(frame, "CoT vs no-CoT"), fontsize=10, y=1.04)
    return _finish(fig, path)


def _suptitle(frame, what: str) -> str:
    parts = []
    trained = bool(frame["train"].astype(bool).any())
    for c in ("d", "eta") + (("iters", "batch") if trained else ()):
        if c in frame.columns and frame[c].nunique() == 1:
            parts.append(f"{c} {frame[c].iloc[0]:g}")
    return f"{what}: " + ", ".join(parts) + f" ({len(frame)} cells)"


def plot_trained_vs_theory(frame, path: str) -> str | None:
    """``trained_vs_theory.png`` (module docstring); None when the table cannot give it."""
    trained = _trained(frame).copy()
    if trained.empty:
        return None
    reference = trained["theory_same_prompts"].where(trained["theory_same_prompts"].notna(),
                                                     trained["theory_eval_loss"])
    trained["trained_over_theory"] = trained["final_eval_loss"] / reference
    trained = trained[trained["trained_over_theory"].notna()]
    if trained.empty:
        return None
    plt = _pyplot()
    panels = []
    for mode in ("cot", "nocot", "looped"):
        sub = trained[trained["mode"] == mode]
        if not sub.empty:
            panels += [(f"{mode}" + (f", {label}" if label else ""), s) for label, s in _facets(sub)]
    panels = panels[:MAX_FACETS]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels) + 1, 4.4), squeeze=False)
    mesh = None
    for ax, (label, sub) in zip(axes[0], panels):
        if _has_axes(sub):
            mesh = _heatmap(ax, sub, "trained_over_theory", cmap="PuOr_r", clip=TRAINED_CLIP, digits=".3f",
                            title=f"{label}: trained loss / theory's model on the same prompts")
        else:
            values = sub["trained_over_theory"].to_numpy(dtype=float)
            ax.bar(range(len(values)), values, color="tab:purple")
            ax.axhline(1.0, color="k", lw=1)
            ax.set_xticks(range(len(values)), [c[:24] for c in sub["cell"]], rotation=60, ha="right", fontsize=6)
            ax.set_yscale("log")
            ax.set_ylabel("trained / theory")
            ax.set_title(f"{label}: trained / theory", fontsize=9)
    if mesh is not None:
        bar = fig.colorbar(mesh, ax=axes[0].tolist(), shrink=0.9)
        ticks = np.linspace(-TRAINED_CLIP, TRAINED_CLIP, 5)
        bar.set_ticks(ticks, labels=[f"{2 ** t:.2f}" for t in ticks])
        bar.set_label("trained loss / theory's (log scale; > 1: training falls short)")
    fig.suptitle(_suptitle(frame, "Trained model vs the theory"), fontsize=10)
    return _finish(fig, path)


def ood_points(frame):
    """``(d, n, eta, c, median, diverged_frac)`` of every trained CoT cell out of distribution
    (its ``ood_<name>_*`` columns, c = the covariance's largest eigenvalue) and in distribution
    (c = ``sigma_max``)."""
    import pandas as pd
    trained = _trained(frame)
    trained = trained[trained["mode"] == "cot"]
    names = sorted({c[len("ood_"):-len("_lambda_max")] for c in frame.columns
                    if c.startswith("ood_") and c.endswith("_lambda_max")})
    rows = []
    for _, row in trained.iterrows():
        rows.append((row["d"], row["n"], row["eta"], row["sigma_max"], row["median"], row["diverged_frac"]))
        for name in names:
            c = row.get(f"ood_{name}_lambda_max")
            if c is not None and np.isfinite(c):
                rows.append((row["d"], row["n"], row["eta"], c, row[f"ood_{name}_median"],
                             row[f"ood_{name}_diverged_frac"]))
    points = pd.DataFrame(rows, columns=["d", "n", "eta", "c", "median", "diverged_frac"])
    return points.drop_duplicates(subset=["d", "n", "eta", "c"])


def boundary_scales(etas, d: int, n: int, sigma=None) -> np.ndarray:
    """Theorem 4.2's boundary in the (eta, c) plane of ``ood_stability.png``: for each step eta the
    scale c* with ``c sigma`` (None: I) stable iff ``c < c*`` (``evaluate.stable_scale``, from
    ``theory.stability_verdict``; docs/theory.md section 7).  ``c* = bound / eta`` with one bound
    for all steps, so the verdict is computed once."""
    from ..evaluate import stable_scale
    etas = np.asarray(etas, dtype=float)
    return stable_scale(1.0, sigma, d, n) / etas


def plot_ood(frame, path: str) -> str | None:
    """``ood_stability.png`` (module docstring); None when the table has fewer than two GD steps
    or two covariance scales among its trained CoT cells."""
    points = ood_points(frame)
    if points.empty or points["eta"].nunique() < 2 or points["c"].nunique() < 2:
        return None
    plt = _pyplot()
    groups = list(points.groupby(["d", "n"]))[:MAX_FACETS]
    fig, axes = plt.subplots(1, len(groups), figsize=(5.4 * len(groups) + 1, 4.4), squeeze=False)
    scatter = None
    for ax, ((d, n), sub) in zip(axes[0], groups):
        etas = np.array(sorted(sub["eta"].unique()), dtype=float)
        cs = np.array(sorted(sub["c"].unique()), dtype=float)
        Z = np.full((len(cs), len(etas)), np.nan)
        for row in sub.itertuples():
            Z[list(cs).index(row.c), list(etas).index(row.eta)] = row.median
        with np.errstate(divide="ignore", invalid="ignore"):
            colour = np.log10(np.clip(Z, 1e-6, 1e12))
        scatter = ax.pcolormesh(_edges(etas), _edges(cs), np.ma.masked_invalid(np.clip(colour, -2, 4)),
                                cmap="viridis", vmin=-2, vmax=4, shading="flat")
        bad = sub[sub["diverged_frac"] >= 0.5]
        ax.scatter(bad["eta"], bad["c"], marker="x", color="red", s=40, label="diverged on >= half the prompts")
        grid = np.linspace(_edges(etas)[0], _edges(etas)[-1], 300)
        boundary = boundary_scales(grid, int(d), int(n))
        ax.plot(grid, boundary, color="white", lw=3)
        ax.plot(grid, boundary, color="k", lw=1.4, ls="--",
                label=r"Theorem 4.2: $\eta\, c\, (1+\sqrt{d/n})^2 = 2$")
        ax.set_xlim(_edges(etas)[0], _edges(etas)[-1])
        ax.set_ylim(_edges(cs)[0], _edges(cs)[-1])
        ax.set_xticks(etas, [f"{e:g}" for e in etas])
        ax.set_xlabel(r"GD step $\eta$ of the CoT targets (trained at $\Sigma = I$)")
        ax.set_ylabel(r"evaluation covariance scale c ($\Sigma = c I$)")
        ax.set_title(f"d {d:g}, n {n:g}: median evaluation loss of trained CoT models", fontsize=9)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, frameon=False)
    bar = fig.colorbar(scatter, ax=axes[0].tolist(), shrink=0.9)
    bar.set_label("log10 median evaluation loss")
    fig.suptitle(_suptitle(frame, "OOD stability of CoT models"), fontsize=10)
    return _finish(fig, path)


PANELS = (
    ("phase_diagram.png", plot_phase,
     "needs CoT and no-CoT cells (mode = ['cot', 'nocot']) that differ only in mode, over "
     "at least two values of n/d or k"),
    ("trained_vs_theory.png", plot_trained_vs_theory, "needs trained cells with a theory value"),
    ("ood_stability.png", plot_ood,
     "needs trained CoT cells over at least two GD steps (eta) and two covariance scales "
     "(ood_sigmas in [fixed], or sigma in [grid])"),
)


def plot_sweep(directory, out=None) -> tuple[list, list]:
    """Draw every panel the table of the sweep in ``directory`` allows into ``out`` (default:
    the sweep's directory).  Returns ``(paths written, notes on panels skipped)``; ValueError
    when no panel can be drawn (the notes say what each needs) or the table is missing."""
    from ..sweep import load_results
    frame = load_results(directory)
    out = os.fspath(directory if out is None else out)
    os.makedirs(out, exist_ok=True)
    if frame.empty:
        raise ValueError(f"the table in {os.fspath(directory)!r} has no rows yet")
    paths, notes = [], []
    for name, draw, needs in PANELS:
        path = draw(frame, os.path.join(out, name))
        if path is None:
            notes.append(f"{name} skipped: the table {needs}".replace("the table needs", "the panel needs"))
        else:
            paths.append(path)
    if not paths:
        raise ValueError("nothing to plot: " + "; ".join(notes))
    return paths, notes
