"""``cotgd reproduce``: the paper's figures (and an OOD figure beyond it) as PNG, each with the
theory laid over the measurement (docs/theory.md section 8).

- fig2: evaluation loss vs iteration, CoT vs no-CoT (k = 10), with the k-step GD loss and
  Theorem 3.1's no-CoT floor as horizontal lines;
- fig3: OOD evaluation loss vs iteration for k = 10, 20, 30, 40 (median, 10-90% band), with GD's
  median loss on the same covariance for each k;
- structure: the learned V and W of the CoT model beside Theorem 3.2's, block boundaries marked;
- ood: loss vs covariance scale and vs condition number for the trained CoT and no-CoT models
  with the predicted stability boundary, and loss vs k (exact finite d, Monte Carlo, MP limit);
  ``reproduce("ood", runs=[DIR, ...])`` draws it for existing runs' models instead of training;
- noise: label noise (docs/theory.md section 16): loss vs k for s in {0, 0.5, 1, 2}, exact mean,
  Monte Carlo mean and median, trained CoT models, k*, the Bayes and no-CoT floors, and where
  the mean is carried by the rare unstable prompts; its numbers go to ``noise.json`` beside it
  (``noise_curves`` computes them without training).

``suite_figure`` draws the result of ``training.suite`` (``cotgd evaluate --figure``): per case
the model's, GD's and no-CoT's median loss with the 10-90% band, Theorem 4.2's unstable cases
shaded (docs/theory.md section 7).
"""
from __future__ import annotations

import os

import numpy as np

import numerics
import theory

from ..config import PAPER
from ..data import exact_noise_var


#: The CoT lengths k of Figure 3 (docs/theory.md section 8); ``training.app.bench`` times its training too.
FIG3_KS = (10, 20, 30, 40)


def ood_sigma(d: int, condition: float = 3.0) -> np.ndarray:
    """The OOD covariance of fig3: a fixed rotation of diag(geomspace(1/sqrt(c), sqrt(c))),
    trace d, condition number ``condition``; eta * lambda_max stays below 2 for eta = 0.4."""
    Q = numerics.random_rotation(d, seed=12345)
    eig = np.geomspace(1 / np.sqrt(condition), np.sqrt(condition), d)
    eig *= d / eig.sum()
    return (Q * eig) @ Q.T


class _Runs:
    """Trains each configuration once per ``reproduce`` call and keeps the result; several k
    of one mode train as one run of many models (``train_models``: the same numbers as one run
    each, to float rounding on CUDA where the step is fused; in about the time of the longest on
    two cores)."""

    def __init__(self, out: str, device: str, seed: int, quick: bool):
        self.out, self.device, self.seed, self.quick = out, device, seed, quick
        self.cache = {}

    def get_all(self, mode: str, ks: tuple, ood: bool = False, param: str = "full", noise: float = 0.0) -> list:
        """The trained models of ``mode`` at each k of ``ks`` (``noise``: label noise s)."""
        from ..config import TrainConfig
        from ..engine import train_models
        noise = float(noise)
        missing = [k for k in ks if (mode, k, ood, param, noise) not in self.cache]
        if missing:
            name = (f"{mode}-k{'-'.join(map(str, missing))}" + ("-ood" if ood else "")
                    + ("" if param == "full" else f"-{param}") + (f"-noise{noise:g}" if noise else ""))
            config = TrainConfig(mode=mode, param=param, d=PAPER.d, n=PAPER.n, k=missing[0], eta=PAPER.eta,
                                 seed=self.seed, device=self.device, noise=noise,
                                 iters=300 if self.quick else PAPER.iters, eval_every=10 if self.quick else 25,
                                 eval_samples=2000 if self.quick else 10000,
                                 ood_sigmas={"ood": ood_sigma(PAPER.d).tolist()} if ood else None,
                                 out=os.path.join(self.out, "runs", name))
            for k, result in zip(missing, train_models(config, ks=missing, overwrite=True)):
                self.cache[(mode, k, ood, param, noise)] = result
        return [self.cache[(mode, k, ood, param, noise)] for k in ks]

    def get(self, mode: str, k: int, ood: bool = False, param: str = "full"):
        return self.get_all(mode, (k,), ood, param)[0]

    def problem(self) -> tuple:
        """``(d, n, k, eta)`` of the figures: the paper's."""
        return PAPER.d, PAPER.n, PAPER.k, PAPER.eta

    def label(self, mode: str) -> str:
        return {"cot": "CoT (trained)", "nocot": "no-CoT (trained)"}[mode]


class _GivenRuns:
    """The models of existing run directories (``reproduce("ood", runs=[...])``): a CoT run, and
    optionally a no-CoT run of the same d and n; without one, Theorem 3.1's no-CoT optimum
    (``numerics.nocot_params``) stands in for the no-CoT model.  The figure uses the CoT run's
    d, n, k and eta."""

    def __init__(self, paths, seed: int, quick: bool, device: str = "cpu"):
        from types import SimpleNamespace
        from ..rundir import load_run
        self.seed, self.quick, self.device, self.models, self.labels = seed, quick, device, {}, {}
        for path in paths:
            run = load_run(path)
            mode = run.config.mode
            if mode not in ("cot", "nocot"):
                raise ValueError(f"run {path!r}: the ood figure takes a cot run and a nocot run, got a {mode} run")
            if mode in self.models:
                raise ValueError(f"run {path!r}: two {mode} runs given; pass one cot run and at most one nocot run")
            if run.V is None:
                raise ValueError(f"run {path!r} has no params.pt: the run is not finished (resume it first)")
            self.models[mode], self.labels[mode] = run, f"{'CoT' if mode == 'cot' else 'no-CoT'} (run)"
        if "cot" not in self.models:
            raise ValueError("the ood figure needs a cot run among the runs given")
        c = self.models["cot"].config
        self.d, self.n, self.k, self.eta = c.d, c.n, c.k, c.eta
        if "nocot" in self.models:
            other = self.models["nocot"].config
            if (other.d, other.n) != (c.d, c.n):
                raise ValueError(f"the nocot run has d = {other.d}, n = {other.n}, the cot run d = {c.d}, "
                                 f"n = {c.n}: they must match")
        else:
            V, W = numerics.nocot_params(c.d, c.n)
            self.models["nocot"] = SimpleNamespace(V=V, W=W)
            self.labels["nocot"] = "no-CoT (Theorem 3.1's optimum)"

    def get(self, mode: str, k: int, ood: bool = False):
        return self.models[mode]

    def problem(self) -> tuple:
        return self.d, self.n, self.k, self.eta

    def label(self, mode: str) -> str:
        return self.labels[mode]


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path: str) -> str:
    """Write ``fig`` as PNG at ``path``, free it, return the path."""
    import matplotlib.pyplot as plt
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _band(ax, history: list, reports: list, center: str, color: str, label: str) -> None:
    """One run's loss curve over its evaluation points: ``reports[i][center]`` as a line, the
    10-90% band of prompts shaded."""
    it = [h["iteration"] for h in history]
    ax.plot(it, [r[center] for r in reports], color=color, label=label)
    ax.fill_between(it, [r["q10"] for r in reports], [r["q90"] for r in reports], color=color, alpha=0.15, lw=0)


def _save_loss_vs_iteration(fig, ax, path: str, ylabel: str, title: str) -> str:
    """Log loss axis against training iterations, labels, legend; then ``_save``."""
    ax.set_yscale("log")
    ax.set_xlabel("training iteration")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    return _save(fig, path)


def fig2(runs: _Runs, path: str) -> str:
    """Figure 2: eval loss vs iteration, CoT vs no-CoT (k = 10), theory lines."""
    plt = _plt()
    d, n, k, eta = PAPER.d, PAPER.n, PAPER.k, PAPER.eta
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for mode, color, label in (("cot", "C0", "with CoT"), ("nocot", "C3", "without CoT")):
        hist = runs.get(mode, k).history
        _band(ax, hist, [h["eval"] for h in hist], "mean", color, f"{label} (mean)")
    gd = runs.get("cot", k).summary["theory_eval_loss"]
    floor = float(theory.nocot_min_loss(d, n))
    ax.axhline(gd, color="C0", ls="--", lw=1, label=f"{k}-step GD loss {gd:.3f}")
    ax.axhline(floor, color="C3", ls="--", lw=1, label=f"no-CoT floor d(d+1)/2(n+d+1) = {floor:.3f}")
    return _save_loss_vs_iteration(fig, ax, path, "evaluation loss (1/2)||w_k - w*||^2",
                                   f"CoT vs no-CoT (d={d}, n={n}, k={k}, eta={eta}); band: 10-90% of prompts")


def fig3(runs: _Runs, path: str) -> str:
    """Figure 3: OOD eval loss vs iteration for k = 10..40, median and 10-90% band, GD's median."""
    plt = _plt()
    d, n, eta = PAPER.d, PAPER.n, PAPER.eta
    sigma = ood_sigma(d)
    results = dict(zip(FIG3_KS, runs.get_all("cot", FIG3_KS, ood=True)))
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for j, k in enumerate(FIG3_KS):
        hist = results[k].history
        color = f"C{j}"
        _band(ax, hist, [h["eval_ood"]["ood"] for h in hist], "median", color, f"k = {k}")
        gd = numerics.eval_loss_mc(d, n, eta, k, samples=20_000 if runs.quick else 100_000,
                                   seed=runs.seed + 99, sigma=sigma)
        ax.axhline(gd["median"], color=color, ls="--", lw=1)
    return _save_loss_vs_iteration(fig, ax, path, "OOD evaluation loss (median over prompts)",
                                   f"OOD: Sigma of condition number 3 (d={d}, n={n}, eta={eta}); dashed: GD median")


def _heatmap(fig, ax, M: np.ndarray, d: int, title: str, fontsize: int) -> None:
    """A D x D parameter matrix as a heatmap centred on 0, blocks x | y | w | 1 marked."""
    lim = max(np.abs(M).max(), 1e-12)
    im = ax.imshow(M, cmap="RdBu_r", vmin=-lim, vmax=lim)
    _block_lines(ax, d)
    ticks = [d / 2 - 0.5, d, d + 1 + d / 2 - 0.5, 2 * d + 1]
    ax.set_xticks(ticks, ["x", "y", "w", "1"])
    ax.set_yticks(ticks, ["x", "y", "w", "1"])
    ax.set_title(title, fontsize=fontsize)
    fig.colorbar(im, ax=ax, shrink=0.75)


def _block_lines(ax, d: int) -> None:
    for edge in (d, d + 1, 2 * d + 1):
        ax.axhline(edge - 0.5, color="k", lw=0.6)
        ax.axvline(edge - 0.5, color="k", lw=0.6)


def structure(runs: _Runs, path: str) -> str:
    """Learned V, W (CoT, full parameters) beside Theorem 3.2's, block boundaries marked."""
    plt = _plt()
    d, k, eta = PAPER.d, PAPER.k, PAPER.eta
    result = runs.get("cot", k)
    V, W = result.V.double().numpy(), result.W.double().numpy()
    V_star, W_star = numerics.gd_params(d, eta)
    s = result.summary["structure"]
    fig, axes = plt.subplots(2, 2, figsize=(8.6, 8))
    for ax, M, title in ((axes[0, 0], V, "learned V"), (axes[0, 1], W, "learned W"),
                         (axes[1, 0], V_star, "Theorem 3.2 V* (V31 = -eta I)"),
                         (axes[1, 1], W_star, "Theorem 3.2 W* (W13 = I, W24 = -1)")):
        _heatmap(fig, ax, M, d, title, 10)
    fig.suptitle(f"CoT, k={k}: mean diag V31 W13 = {s['v31_w13']:.4f} (theory {-eta}), "
                 f"W24 V31 = {s['w24_v31']:.4f} (theory {eta})\n"
                 f"off-diagonal energy {s['offdiag_energy']:.1e}, functional deviation "
                 f"{s['functional_deviation']:.1e}", fontsize=10)
    return _save(fig, path)


def looped(runs: _Runs, path: str) -> str:
    """The looped transformer (docs/theory.md section 3) at k = 10 loops: median evaluation loss
    (10-90% band) vs iteration of the full and the sparse looped models beside CoT and no-CoT,
    with the medians of the theory's models on the same prompts (dashed: the best single GD
    step; dotted: the best stretched GD, ``numerics.looped_rescaled_optimum``; CoT's k-step GD;
    Theorem 3.1's no-CoT optimum); and the learned full looped V and W."""
    plt = _plt()
    d, n, k, eta = PAPER.d, PAPER.n, PAPER.k, PAPER.eta
    full, sparse = runs.get("looped", k, param="full"), runs.get("looped", k, param="sparse")
    cot, nocot = runs.get("cot", k), runs.get("nocot", k)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6), gridspec_kw={"width_ratios": [1.5, 1, 1]})
    ax = axes[0]
    for result, color, label in ((full, "C2", "looped, full V, W"), (sparse, "C1", "looped, sparse (V31, W13)"),
                                 (cot, "C0", "CoT"), (nocot, "C3", "no-CoT")):
        hist = result.history
        _band(ax, hist, [h["eval"] for h in hist], "median", color, label)
    s = full.summary
    lines = ((s["theory_same_prompts"]["median"], "C2", "--", f"best single GD step ({s['structure_step']:.3f}), {k} loops"),
             (s.get("rescaled_gd_same_prompts", {}).get("median"), "C2", ":", "best stretched GD u(I-(I-cS)^k)w*"),
             (cot.summary["theory_same_prompts"]["median"], "C0", "--", f"{k}-step GD, eta {eta}"),
             (nocot.summary["theory_same_prompts"]["median"], "C3", "--", "Theorem 3.1's no-CoT optimum"))
    for value, color, style, label in lines:
        if value is not None:
            ax.axhline(value, color=color, ls=style, lw=1, label=f"{label}: {value:.3g}")
    ax.set_yscale("log")
    ax.set_xlabel("training iteration")
    ax.set_ylabel("evaluation loss, median over prompts")
    ax.set_title(f"looped vs CoT vs no-CoT (d={d}, n={n}, k={k} loops / steps); lines: theory's models, "
                 f"same prompts", fontsize=8)
    ax.legend(fontsize=7)
    for ax, M, title in ((axes[1], full.V.double().numpy(), "learned V (looped, full)"),
                         (axes[2], full.W.double().numpy(), "learned W (looped, full)")):
        _heatmap(fig, ax, M, d, title, 9)
    ev = s["eval"]
    fig.suptitle(f"full looped model: median {ev['median']:.3g}, mean without diverged {ev['mean_without_diverged']:.3g}, "
                 f"diverged {ev['diverged_frac']:.1e}", fontsize=9)
    return _save(fig, path)


def scale_boundary(eta: float, d: int, n: int, sigma=None) -> float:
    """Where the ood figure draws Theorem 4.2's boundary: the scale c* with ``c sigma`` (None: I)
    stable iff ``c < c*`` (``evaluate.stable_scale``, from ``theory.stability_verdict``;
    docs/theory.md section 7); a covariance is shaded unstable when ``c* <= 1``."""
    from ..evaluate import stable_scale
    return stable_scale(eta, sigma, d, n)


def ood(runs: _Runs, path: str) -> str:
    """Beyond the paper: loss vs covariance scale and condition number (trained CoT and no-CoT,
    GD prediction, stability boundary), and loss vs k (exact finite d, Monte Carlo, MP limit)."""
    from ..evaluate import evaluate_params
    plt = _plt()
    d, n, k, eta = runs.problem()
    cot, nocot = runs.get("cot", k), runs.get("nocot", k)
    cot_label, nocot_label = runs.label("cot"), runs.label("nocot")
    samples = 2000 if runs.quick else 10000
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.3))

    ax = axes[0]
    scales = np.geomspace(0.2, 3.0, 9 if runs.quick else 17)
    boundary = scale_boundary(eta, d, n)

    def reports(sigmas, seed: int) -> dict:
        """The CoT model, the no-CoT model and GD with step eta on the same prompts, per Sigma."""
        rows = {cot_label: [], nocot_label: [], "GD, step eta": []}
        for sigma in sigmas:
            rows[cot_label].append(evaluate_params(cot.V, cot.W, d=d, n=n, k=k, samples=samples, seed=seed,
                                                   sigma=sigma, device=runs.device))
            rows[nocot_label].append(evaluate_params(nocot.V, nocot.W, d=d, n=n, k=k, samples=samples, seed=seed,
                                                     sigma=sigma, mode="nocot", device=runs.device))
            rows["GD, step eta"].append(numerics.eval_loss_mc(d, n, eta, k, samples=samples, seed=seed, sigma=sigma))
        return rows

    rows = reports([c * np.eye(d) for c in scales], runs.seed + 5)
    diverged = [m["diverged_frac"] for m in rows[cot_label]]
    for (label, reps), style in zip(rows.items(), ("C0-o", "C3-s", "k--")):
        ax.plot(scales, [r["median"] for r in reps], style, ms=3, label=f"{label}, median")
        if label != "GD, step eta":
            ax.fill_between(scales, [r["q10"] for r in reps], [r["q90"] for r in reps],
                            color=style[:2], alpha=0.15, lw=0)
    ax.axvline(boundary, color="gray", ls=":",
               label=f"Theorem 4.2: eta c (1+sqrt(d/n))^2 = 2 at c = {boundary:.2f}")
    ax2 = ax.twinx()
    ax2.plot(scales, diverged, "C0:", lw=1)
    ax2.set_ylabel("CoT diverged fraction (dotted)", fontsize=8)
    ax2.set_ylim(0, 1.05)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks([0.2, 0.5, 1, 2, 3], ["0.2", "0.5", "1", "2", "3"])
    ax.minorticks_off()
    ax.set_xlabel("covariance scale c (Sigma = c I)")
    ax.set_ylabel("evaluation loss")
    ax.set_title("loss vs covariance scale", fontsize=10)
    ax.legend(fontsize=7, loc="upper left")

    ax = axes[1]
    conditions = np.geomspace(1, 30, 7 if runs.quick else 11)
    rows = reports([ood_sigma(d, cond) for cond in conditions], runs.seed + 6)
    for (label, reps), style in zip(rows.items(), ("C0-o", "C3-s", "k--")):
        ax.plot(conditions, [r["median"] for r in reps], style, ms=3, label=f"{label}, median")
    unstable = [c for c in conditions if scale_boundary(eta, d, n, ood_sigma(d, c)) <= 1]
    if unstable:
        ax.axvspan(unstable[0], conditions[-1], color="gray", alpha=0.12,
                   label="MP edge past the boundary: eta lambda_max(Sigma)(1+sqrt(d/n))^2 >= 2\n(tail prompts unstable; medians stay stable)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("condition number of Sigma (trace d)")
    ax.set_title("loss vs condition number", fontsize=10)
    ax.legend(fontsize=6, loc="center right", bbox_to_anchor=(1.0, 0.62))

    ax = axes[2]
    ks = np.arange(0, 41, 2 if runs.quick else 1)
    mc = [numerics.eval_loss_mc(d, n, eta, int(kk), samples=20_000 if runs.quick else 100_000,
                                seed=runs.seed + 7) for kk in ks]
    ax.errorbar(ks, [r["mean"] for r in mc], yerr=[2 * r["se"] for r in mc], fmt="C0o", ms=3,
                label="Monte Carlo mean (+-2 SE): misses the rare prompts")
    ax.plot(ks, [r["median"] for r in mc], "C1.", ms=3, label="Monte Carlo median")
    exact_ks = [kk for kk in ks if 2 * kk <= theory.MAX_EXACT_MOMENT]
    ax.plot(exact_ks, [float(numerics.gd_eval_loss_value(d, n, eta, int(kk))) for kk in exact_ks], "k-",
            lw=1.2, label=f"exact mean, finite d (moments to {theory.MAX_EXACT_MOMENT});\n"
                          "for k > 20 rare prompts with eta lambda_max >= 2 dominate it")
    ax.plot(ks, [d * numerics.mp_gd_eval_loss(d / n, eta, int(kk)) for kk in ks], "C2--",
            label="Marchenko-Pastur limit x d")
    ax.set_yscale("log")
    ax.set_xlabel("k (GD steps / CoT length)")
    ax.set_ylabel("evaluation loss")
    ax.set_title(f"loss vs k (d={d}, n={n}, eta={eta})", fontsize=10)
    ax.legend(fontsize=7)
    return _save(fig, path)


def suite_figure(result: dict, path: str) -> str:
    """The OOD suite (``training.suite.evaluate_suite``'s dict) as PNG at ``path``: per case the
    model's, GD's (learned step, same prompts) and Theorem 3.1's no-CoT median loss with their
    10-90% bands, GD's expected loss, the unrecoverable part of a singular Sigma, and the cases
    Theorem 4.2 calls unstable shaded with the sampled unstable share.  Losses beyond the plotted
    range (diverged prompts: up to inf) are drawn at the top edge as triangles, their value
    written beside them."""
    plt = _plt()
    m = result["model"]
    cases = ([result["in_distribution"]] if result.get("in_distribution") else []) + list(result["cases"])
    names = [("in distribution" if c is result.get("in_distribution") else c["name"]) for c in cases]
    d = m["d"]
    cap = 1e4 * d / 2                      # 10^4 times the loss of w_0 = 0: past it, a prompt is diverging
    finite = [v for c in cases for key in ("q10", "gd_q10", "nocot_q10", "median", "gd_median", "nocot_median")
              if (v := c[key]) is not None and 0 < v < cap]
    low = min(finite) / 3 if finite else 1e-3
    bottom = low / 60                      # room below the bars for the verdicts
    fig, ax = plt.subplots(figsize=(max(7.5, 1.05 * len(cases) + 2.5), 4.8))
    model_name = {"cot": "CoT", "nocot": "no-CoT", "looped": "looped"}[m["mode"]]
    series = ((f"{model_name} model", "", "C0", "o", -0.24),
              (f"GD, learned step {m['learned_step']:.3g}, {m['gd_steps']} step{'s' * (m['gd_steps'] > 1)}",
               "gd_", "k", "s", 0.0),
              ("no-CoT, Theorem 3.1's optimum", "nocot_", "C3", "^", 0.24))
    over_cap = False
    for label, prefix, color, marker, dx in series:
        for i, c in enumerate(cases):
            x = i + dx
            lo, med, hi = c[prefix + "q10"], c[prefix + "median"], c[prefix + "q90"]
            ax.plot([x, x], [min(max(lo, low), cap), min(hi, cap)], color=color, lw=3, alpha=0.35,
                    solid_capstyle="butt")
            if med < cap:
                ax.plot(x, med, marker=marker, color=color, ms=6, ls="none", label=label if i == 0 else None)
            else:
                over_cap = True
                ax.plot(x, cap, marker="^", color=color, ms=8, ls="none", mfc="white",
                        label=label if i == 0 else None)
                ax.annotate("inf" if med == float("inf") else f"{med:.0e}", (x, cap), xytext=(0, 7),
                            textcoords="offset points", ha="center", va="bottom", fontsize=6, color=color,
                            rotation=90)
    for i, c in enumerate(cases):
        if c["expected_loss"] is not None and low < c["expected_loss"] < cap:
            ax.plot(i + 0.09, c["expected_loss"], "kx", ms=6,
                    label="GD expected loss (exact or Monte Carlo)" if i == 0 else None)
        if c["unrecoverable"] > 0:
            ax.hlines(c["unrecoverable"], i - 0.42, i + 0.42, colors="C2", linestyles="--", lw=1.2,
                      label="unrecoverable (d - rank Sigma)/2" if not any(x["unrecoverable"] > 0 for x in cases[:i])
                      else None)
        share = f"{100 * c['unstable_frac']:.0f}% of prompts\nstep*lmax(S) >= 2"
        if not c["predicted_stable"]:
            ax.axvspan(i - 0.5, i + 0.5, color="0.5", alpha=0.14, lw=0)
            verdict = "Thm 4.2: UNSTABLE" if m["gd_steps"] > 1 else "step overshoots\n(1 step: no blow-up)"
            ax.text(i, bottom * 1.5, f"{verdict}\n{share}", ha="center", va="bottom", fontsize=7, color="0.2")
        else:
            ax.text(i, bottom * 1.5, f"stable\n{share}", ha="center", va="bottom", fontsize=7, color="0.45")
    ax.set_yscale("log")
    highest = max([v for c in cases for key in ("q90", "gd_q90", "nocot_q90") if (v := c[key]) < cap] or [1.0])
    ax.set_ylim(bottom, cap * 60 if over_cap else highest * 30)
    ax.set_xlim(-0.6, len(cases) - 0.4)
    ax.set_xticks(range(len(cases)), names, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("evaluation loss (1/2)||w_hat - w*||^2\nmedian, bar: 10-90% of prompts")
    ax.set_title(f"OOD suite: {model_name} model (d={d}, n={m['n']}, k={m['k']}), "
                 f"{result['samples']} prompts per case; shaded: eta*top of Theorem 4.2's spectrum >= 2"
                 + ("; triangles at the top: beyond the axis" if over_cap else ""), fontsize=9)
    ax.legend(fontsize=7, loc="upper left", ncol=2)
    ax.grid(axis="y", alpha=0.25)
    return _save(fig, path)


# ---------------------------------------------------------------- label noise
#: Label-noise levels s of the noise figure (docs/theory.md section 16).
NOISE_LEVELS = (0.0, 0.5, 1.0, 2.0)
#: The noise figure's sizes, full and quick: the k range, the k of the Monte Carlo points and of
#: the stable-part runs (None: the same), prompts per k, and the k of the trained CoT models per s
#: (one run per s).
NOISE_SIZES = {
    "full": {"k_max": 30, "mc_ks": tuple(range(0, 31, 2)), "stable_ks": tuple(range(31)), "samples": 50_000,
             "train_ks": (2, 5, 10, 15)},
    "quick": {"k_max": 20, "mc_ks": tuple(range(0, 21, 4)), "stable_ks": None, "samples": 10_000,
              "train_ks": (5, 10)},
}
#: The exact mean is called meaningful at k while the prompts with eta lambda_max(S) >= 2 carry
#: less than this share of it (and at every smaller k).
NOISE_UNSTABLE_SHARE = 0.05


def noise_curves(d: int, n: int, eta: float, noises=NOISE_LEVELS, *, k_max: int, mc_ks, samples: int,
                 seed: int, stable_ks=None) -> dict:
    """The numbers of the noise figure that need no training (docs/theory.md section 16): for
    each label-noise level s of ``noises`` at ``(d, n, eta)``:

    * ``exact``: the exact mean loss of k-step GD at k = 0 .. ``k_max``
      (``numerics.gd_eval_loss_value``); ``k_star``, ``loss_at_k_star``, ``k_star_at_edge``:
      ``theory.best_cot_length`` (at the edge: k* is k_max and the loss still falls there; drawn k* >=)
      over 0 .. k_max (``k_star_brute_force``: the argmin of ``exact``, the same k);
    * ``monte_carlo``: at each k of ``mc_ks`` the ``numerics.eval_loss_mc`` report (mean, se,
      median, q10, q90, diverged_frac; the same prompts at every k, seed ``seed``);
      ``median_argmin_k``: the k of ``mc_ks`` with the smallest median;
    * ``stable``: at each k of ``stable_ks`` (default ``mc_ks``) the mean of the loss counted on
      stable prompts only (``stable_part=True``) and ``unstable_share = 1 - that / exact``;
      ``meaningful_k_max``: the largest k of ``stable_ks`` up to which every share is below
      ``NOISE_UNSTABLE_SHARE`` (beyond it the mean is carried by rare prompts);
      ``stable_argmin_k``: the k of ``stable_ks`` with the smallest stable-part mean (where
      ``E[loss; stable]`` is least: the best k without the rare prompts);
    * ``bayes`` (s > 0): the Bayes floor, ``numerics.bayes_loss_mc`` (mean, se) and
      ``numerics.bayes_loss_mp``; ``nocot_floor``: ``theory.nocot_min_loss`` with noise;
      ``gd_limit``: ``theory.gd_limit_loss`` with noise (k -> oo on stable prompts; None if
      infinite).

    Returns ``{"d", "n", "eta", "k_max", "samples", "seed", "unstable_share_limit", "noise": [...]}``,
    JSON-ready."""
    import theory
    mc_ks = sorted({int(k) for k in mc_ks})
    stable_ks = mc_ks if stable_ks is None else sorted({int(k) for k in stable_ks})
    if not mc_ks or mc_ks[0] < 0 or mc_ks[-1] > k_max or stable_ks[-1] > k_max or stable_ks[0] < 0:
        raise ValueError(f"mc_ks and stable_ks must lie in 0 .. k_max = {k_max}")
    levels = []
    for j, s in enumerate(noises):
        s = float(s)
        var = s * s
        exact = [float(numerics.gd_eval_loss_value(d, n, eta, k, noise_var=var)) for k in range(k_max + 1)]
        best = theory.best_cot_length(d, n, eta, k_max, noise_var=exact_noise_var(s))
        mc = []
        for k in mc_ks:
            r = numerics.eval_loss_mc(d, n, eta, k, samples=samples, seed=seed, noise_var=var)
            mc.append({"k": k, **{key: float(r[key]) for key in ("mean", "se", "median", "q10", "q90", "diverged_frac")}})
        stable = []
        for k in stable_ks:
            r = numerics.eval_loss_mc(d, n, eta, k, samples=samples, seed=seed, noise_var=var, stable_part=True)
            stable.append({"k": k, "stable_mean": float(r["mean"]), "stable_se": float(r["se"]),
                           "unstable_share": 1 - float(r["mean"]) / exact[k]})
        meaningful = stable_ks[0]
        for row in stable:
            if row["unstable_share"] >= NOISE_UNSTABLE_SHARE:
                break
            meaningful = row["k"]
        bayes = None
        if var > 0:
            b = numerics.bayes_loss_mc(d, n, var, samples=samples, seed=seed + 1)
            bayes = {"mc": float(b["mean"]), "se": float(b["se"]), "mp": float(numerics.bayes_loss_mp(d, n, var))}
        limit = theory.gd_limit_loss(d, n, noise_var=exact_noise_var(s))
        levels.append({
            "s": s, "noise_var": var, "exact": exact,
            "k_star": int(best.k_star), "loss_at_k_star": float(best.loss), "k_star_at_edge": best.at_edge,
            "k_star_brute_force": int(np.argmin(exact)),
            "monte_carlo": mc, "median_argmin_k": mc[int(np.argmin([r["median"] for r in mc]))]["k"],
            "stable": stable, "meaningful_k_max": meaningful,
            "stable_argmin_k": stable[int(np.argmin([r["stable_mean"] for r in stable]))]["k"], "bayes": bayes,
            "nocot_floor": float(theory.nocot_min_loss(d, n, noise_var=exact_noise_var(s))),
            "gd_limit": float(limit) if limit.is_finite else None})
    return {"d": d, "n": n, "eta": eta, "k_max": k_max, "samples": samples, "seed": seed,
            "unstable_share_limit": NOISE_UNSTABLE_SHARE, "noise": levels}


def _trained_rows(results: list, ks: tuple, level: dict) -> list:
    """Per trained model: its evaluation (mean, se, median) beside the exact noisy GD loss."""
    rows = []
    for k, result in zip(ks, results):
        s, exact = result.summary, level["exact"][k]
        ev = s.get("eval") or {}
        rows.append({"k": k, "final_eval_loss": float(s["final_eval_loss"]), "se": ev.get("se"),
                     "median": ev.get("median"), "exact": exact,
                     "relative_gap": (float(s["final_eval_loss"]) - exact) / exact,
                     "theory_monte_carlo": s.get("theory_eval_loss")})
    return rows


def noise(runs: _Runs, path: str) -> str:
    """Label noise (docs/theory.md section 16) at the paper's d, n, eta: loss vs k for each s of
    ``NOISE_LEVELS``.  Left: the exact mean (solid while meaningful, dotted beyond), Monte Carlo
    means (+-2 SE), trained CoT models (+-2 SE), k* (stars), the Bayes floor (dashed) and the
    no-CoT optimum (crosses at k = 1); shaded: k beyond which the unstable prompts carry 5% or more
    of the exact mean.  Right: Monte Carlo medians with the 10-90% band and the trained models'
    medians.  The numbers go to ``noise.json`` beside ``path``."""
    import json
    from ..io import atomic_write_text
    plt = _plt()
    d, n, eta = PAPER.d, PAPER.n, PAPER.eta
    size = NOISE_SIZES["quick" if runs.quick else "full"]
    k_max, mc_ks, stable_ks, samples, train_ks = (size[key] for key in ("k_max", "mc_ks", "stable_ks", "samples",
                                                                         "train_ks"))
    data = noise_curves(d, n, eta, NOISE_LEVELS, k_max=k_max, mc_ks=mc_ks, stable_ks=stable_ks,
                        samples=samples, seed=runs.seed + 11)
    data["train_iterations"] = 300 if runs.quick else PAPER.iters
    for level in data["noise"]:
        level["trained"] = _trained_rows(runs.get_all("cot", train_ks, noise=level["s"]), train_ks, level)

    fig, axes = plt.subplots(1, 2, figsize=(14, 5.4))
    ks = np.arange(k_max + 1)
    limits = [lv["meaningful_k_max"] for lv in data["noise"]]
    top, bottom = 60.0, 0.05
    for ax in axes:
        ax.axvspan(min(limits) + 0.5, k_max + 0.5, color="0.5", alpha=0.13, lw=0)
    ax = axes[0]
    for j, lv in enumerate(data["noise"]):
        color, m = f"C{j}", lv["meaningful_k_max"]
        exact = np.array(lv["exact"])
        ax.plot(ks[:m + 1], exact[:m + 1], "-", color=color, lw=1.4, label=f"s = {lv['s']:g}: exact mean")
        ax.plot(ks[m:], exact[m:], ":", color=color, lw=1.4)
        mc = lv["monte_carlo"]
        ax.errorbar([r["k"] for r in mc], [r["mean"] for r in mc], yerr=[2 * r["se"] for r in mc], fmt="o",
                    color=color, ms=3, mfc="white", capsize=2, lw=0.8)
        tr = lv["trained"]
        ax.errorbar([r["k"] for r in tr], [r["final_eval_loss"] for r in tr],
                    yerr=[2 * (r["se"] or 0) for r in tr], fmt="D", color=color, ms=6, mec="k", mew=0.6,
                    capsize=2, lw=0.8)
        ax.plot(lv["k_star"], lv["loss_at_k_star"], "*", color=color, ms=15, mec="k", mew=0.7)
        edge = ">=" if lv.get("k_star_at_edge") else "="          # the argmin at k_max, loss still falling
        ax.annotate(f"k*{edge}{lv['k_star']}", (lv["k_star"], lv["loss_at_k_star"]), xytext=(0, -15),
                    textcoords="offset points", ha="center", fontsize=8, color=color)
        if lv["bayes"]:
            ax.axhline(lv["bayes"]["mc"], color=color, ls="--", lw=0.9)
        ax.plot(1, lv["nocot_floor"], "x", color=color, ms=8, mew=1.5)
    handles = [
        plt.Line2D([], [], color="k", lw=1.4, label="exact mean (Wishart moments); dotted: past the meaningful k"),
        plt.Line2D([], [], color="k", marker="o", mfc="white", ls="none", ms=4, label="Monte Carlo mean +-2 SE (misses the rare unstable prompts)"),
        plt.Line2D([], [], color="0.4", marker="D", mec="k", ls="none", ms=6,
                   label="trained CoT model (mean +-2 SE)"),
        plt.Line2D([], [], color="0.4", marker="*", mec="k", ls="none", ms=13, label="k*: best exact mean"),
        plt.Line2D([], [], color="k", ls="--", lw=0.9, label="Bayes floor (1/2) E tr((I + nS/s^2)^-1)"),
        plt.Line2D([], [], color="k", marker="x", ls="none", ms=7, label="no-CoT optimum (Thm 3.1 with noise)"),
        plt.Rectangle((0, 0), 1, 1, color="0.5", alpha=0.13,
                      label=f"unstable prompts (eta lmax(S) >= 2) carry >= {NOISE_UNSTABLE_SHARE:.0%} of the mean")]
    handles += [plt.Line2D([], [], color=f"C{j}", lw=4,
                           label=f"s = {lv['s']:g}: k* {'>=' if lv.get('k_star_at_edge') else '='} {lv['k_star']}, "
                           f"mean meaningful to k = {lv['meaningful_k_max']}")
                for j, lv in enumerate(data["noise"])]
    ax.set_yscale("log")
    ax.set_ylim(bottom, top)
    ax.set_xlim(-0.5, k_max + 0.5)
    ax.set_xlabel("k (CoT length = GD steps)")
    ax.set_ylabel("evaluation loss (1/2)||w_k - w*||^2, mean over prompts")
    ax.set_title(f"mean loss with label noise y = <w*, x> + eps, eps ~ N(0, s^2) (d={d}, n={n}, eta={eta})",
                 fontsize=9)
    ax.legend(handles=handles, fontsize=6.5, loc="upper right")

    ax = axes[1]
    for j, lv in enumerate(data["noise"]):
        color, mc = f"C{j}", lv["monte_carlo"]
        x = [r["k"] for r in mc]
        ax.plot(x, [r["median"] for r in mc], "-", color=color, lw=1.2, marker=".",
                label=f"s = {lv['s']:g}: median (best at k = {lv['median_argmin_k']} of those shown)")
        ax.fill_between(x, [r["q10"] for r in mc], [r["q90"] for r in mc], color=color, alpha=0.12, lw=0)
        tr = lv["trained"]
        ax.plot([r["k"] for r in tr], [r["median"] for r in tr], "D", color=color, ms=6, mec="k", mew=0.6)
    ax.plot([], [], "D", color="0.4", mec="k", label="trained CoT model, median")
    ax.set_yscale("log")
    ax.set_ylim(0.01, 12.0)
    ax.set_xlim(-0.5, k_max + 0.5)
    ax.set_xlabel("k (CoT length = GD steps)")
    ax.set_ylabel("evaluation loss, median over prompts (band: 10-90%)")
    ax.set_title(f"the typical prompt: Monte Carlo median ({samples} prompts per k); shaded as left", fontsize=9)
    ax.legend(fontsize=7, loc="upper right")
    atomic_write_text(os.path.splitext(path)[0] + ".json", json.dumps(data, indent=2) + "\n")
    return _save(fig, path)


FIGURES = {"fig2": fig2, "fig3": fig3, "structure": structure, "ood": ood, "looped": looped, "noise": noise}


def reproduce(figure: str, *, out: str, device: str = "cpu", seed: int = 0, quick: bool = False,
              runs: list | None = None) -> list:
    """Write ``figure`` ('fig2', 'fig3', 'structure', 'ood', 'looped', 'noise' or 'all') as PNG under
    ``out`` (the noise figure also writes its numbers, ``noise.json``); return the PNG paths.  Training runs land in ``out/runs/`` and are shared between figures.
    ``runs``: run directories whose models the 'ood' figure uses instead of training (a cot run,
    optionally a nocot run: ``_GivenRuns``); only for 'ood'."""
    from ..device import resolve_device
    if figure != "all" and figure not in FIGURES:
        raise ValueError(f"figure must be one of {', '.join(FIGURES)} or all, got {figure!r}")
    if runs and figure != "ood":
        raise ValueError(f"existing runs (--run) are used by the ood figure only, got figure {figure!r}")
    resolve_device(device)
    given = _GivenRuns(runs, seed, quick, device) if runs else None
    os.makedirs(out, exist_ok=True)
    runs = given or _Runs(out, device, seed, quick)
    names = list(FIGURES) if figure == "all" else [figure]
    return [FIGURES[name](runs, os.path.join(out, f"{name}.png")) for name in names]
