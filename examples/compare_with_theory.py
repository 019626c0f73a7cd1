"""A model out of distribution against the theory, covariance by covariance (docs/theory.md
sections 7 and 10).

    python examples/compare_with_theory.py [OUT_DIR] [--run RUN_DIR] [--full]

The model is a trained run's (``--run``, any ``cotgd train --out`` directory) or, without one,
Theorem 3.2's transformer (``numerics.gd_params``: the function a CoT model learns), at d = 4
(``--full`` or COTGD_FULL=1: the paper's d = 10, n = 20, k = 10).  Two sweeps:

* Sigma = c I for c on a grid.  Theory: GD with step eta on S_Sigma = c S_0 is GD with step
  eta c on Sigma = I, so its exact mean loss is ``numerics.gd_eval_loss_value(d, n, eta c, k)``;
  Theorem 4.2 predicts instability once ``eta c (1 + sqrt(d/n))^2 >= 2``
  (``theory.stability_verdict``, via ``training.evaluate.predicted_stability``).  Measured: the
  model's median and GD's on the same prompts
  (``training.evaluate_params`` with the same seed), and the share of prompts with
  ``eta lambda_max(S) >= 2`` (``numerics.sample_gram``).
* Sigma of rank r = 1 .. d (x in a random r-dimensional subspace, trace d).  Theory: the part of
  w* outside the subspace, ``(d - r)/2`` in expectation, is never learned, and GD's large-k loss is
  ``theory.gd_limit_loss(d, n, Sigma) = (d - min(n, r))/2``.  Measured: the model's mean.

It prints both tables and writes OUT_DIR/compare_with_theory.png.  Swap in your own covariance
family by editing ``scales`` or ``subspace_sigma``.
"""
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import numerics  # noqa: E402
import theory  # noqa: E402
from training import evaluate_params, load_run  # noqa: E402
from training.evaluate import predicted_stability, stable_scale  # noqa: E402
from training.suite import model_from_run  # noqa: E402


def subspace_sigma(d: int, r: int, seed: int = 11) -> np.ndarray:
    """x confined to a random r-dimensional subspace with trace d (numerics.random_rotation)."""
    Q = numerics.random_rotation(d, seed)[:, :r]
    return (d / r) * Q @ Q.T


def main(out: str = "compare_example", run_dir: str | None = None, full: bool = False) -> dict:
    if run_dir is not None:
        run = load_run(run_dir)
        V, W, mode = run.V.double().numpy(), run.W.double().numpy(), run.config.mode
        d, n, k = run.config.d, run.config.n, run.config.k
        eta = model_from_run(run).step      # learned step: W24 V31 (on range(Sigma) of a singular training Sigma)
        name = f"trained {mode} model ({run_dir})"
    else:
        d, n, k, eta = (10, 20, 10, 0.4) if full else (4, 8, 4, 0.4)
        V, W = numerics.gd_params(d, eta)
        mode, name = "cot", "Theorem 3.2's transformer"
    steps = 1 if mode == "nocot" else k
    samples = 10000 if full else 3000
    gd_V, gd_W = numerics.gd_params(d, eta)

    # Sweep 1: Sigma = c I.
    c_star = stable_scale(eta, None, d, n)                                  # c I is stable iff c < c_star
    scales = np.geomspace(0.25, 3.0, 9)
    rows = []
    for c in scales:
        sigma = c * np.eye(d)
        model = evaluate_params(V, W, d=d, n=n, k=k, samples=samples, seed=1, sigma=sigma, mode=mode)
        gd = evaluate_params(gd_V, gd_W, d=d, n=n, k=steps, samples=samples, seed=1, sigma=sigma)
        S = numerics.sample_gram(d, n, samples, seed=2, sigma=sigma)
        unstable = float(np.mean(eta * np.linalg.eigvalsh(S)[:, -1] >= 2))
        exact = numerics.gd_eval_loss_value(d, n, eta * c, steps)           # GD at step eta c, Sigma = I
        rows.append((c, model["median"], gd["median"], model["mean"], exact, unstable,
                     predicted_stability(eta, sigma, d, n).stable))
    print(f"{name}, d {d}, n {n}, k {k}, step {eta:.4g}; Theorem 4.2 boundary c* = {c_star:.3f}")
    print(f"{'c':>6} {'median':>10} {'GD median':>10} {'mean':>10} {'exact GD':>10} {'unstable':>9} stable?")
    for c, med, gmed, mean, exact, unstable, stable in rows:
        print(f"{c:6.3f} {med:10.4g} {gmed:10.4g} {mean:10.4g} {exact:10.4g} {unstable:9.1%} {stable}")

    # Sweep 2: singular Sigma of rank r.
    ranks = list(range(1, d + 1))
    singular = []
    for r in ranks:
        sigma = subspace_sigma(d, r)
        model = evaluate_params(V, W, d=d, n=n, k=k, samples=samples, seed=3, sigma=sigma, mode=mode)
        limit = float(theory.gd_limit_loss(d, n, numerics.exact_covariance(sigma, d)))
        singular.append((r, model["mean"], model["se"], (d - r) / 2, limit))
    print(f"\n{'rank':>4} {'mean':>10} {'se':>8} {'(d-r)/2':>8} {'GD limit':>9}")
    for r, mean, se, floor, limit in singular:
        print(f"{r:4d} {mean:10.4g} {se:8.2g} {floor:8.3g} {limit:9.3g}")

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    a1.plot(scales, [r[1] for r in rows], "C0o-", label="model, median")
    a1.plot(scales, [r[2] for r in rows], "k--", label="GD (same prompts), median")
    a1.plot(scales, [r[4] for r in rows], "C2:", label="GD exact mean (step eta c on Sigma = I)")
    a1.axvline(c_star, color="gray", ls=":", label=f"Theorem 4.2 boundary c* = {c_star:.2f}")
    a1.set_xscale("log")
    a1.set_yscale("log")
    a1.set_xlabel("c (Sigma = c I)")
    a1.set_ylabel("evaluation loss")
    a1.legend(fontsize=7)
    a2.errorbar(ranks, [s[1] for s in singular], yerr=[2 * s[2] for s in singular], fmt="C0o", label="model, mean")
    a2.plot(ranks, [s[3] for s in singular], "C3--", label="(d - r)/2: never learned")
    a2.plot(ranks, [s[4] for s in singular], "k:", label="GD large-k limit (d - min(n, r))/2")
    a2.set_xlabel("rank r of Sigma (trace d)")
    a2.legend(fontsize=7)
    fig.suptitle(name, fontsize=9)
    fig.tight_layout()
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, "compare_with_theory.png")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    print(path)
    return {"scales": rows, "ranks": singular, "c_star": c_star}


if __name__ == "__main__":
    argv = sys.argv[1:]
    run_dir = argv[argv.index("--run") + 1] if "--run" in argv else None
    positional = [a for i, a in enumerate(argv) if not a.startswith("--") and (i == 0 or argv[i - 1] != "--run")]
    main(positional[0] if positional else "compare_example", run_dir=run_dir,
         full="--full" in argv or os.environ.get("COTGD_FULL") == "1")
