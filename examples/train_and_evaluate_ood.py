"""Train a CoT transformer, then test it out of distribution on covariances of your own choosing.

    python examples/train_and_evaluate_ood.py [OUT_DIR] [--full]

Small by default (d = 4, seconds on a CPU); ``--full`` (or COTGD_FULL=1) trains the paper's
setting (training.PAPER, about a minute).  Steps, each a plain call of the library:

1. train a CoT model (``training.train``) into OUT_DIR/run, as ``cotgd train --out`` would;
2. read it back (``training.load_run``) and take its learned GD step from its weights
   (``training.w24_v31``: the mean diagonal of W24 V31, docs/theory.md section 4);
3. build covariances: the standard OOD suite of ``training.suite`` plus two of our own (a spiked
   one and a rank-deficient one), and evaluate the model on all of them
   (``training.suite.evaluate_suite``): the model's loss, GD with its step and Theorem 3.1's
   no-CoT optimum on the same prompts, Theorem 4.2's stability verdict;
4. print the table and plot the medians with matplotlib into OUT_DIR/ood_cases.png.

Change ``my_cases`` to try your own covariances: any symmetric positive semi-definite d x d
matrix works (a singular one confines x to a subspace, docs/theory.md section 10).
"""
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import numerics  # noqa: E402
from training import PAPER, TrainConfig, load_run, train, w24_v31  # noqa: E402
from training.suite import Case, evaluate_suite, format_table, model_from_run, standard_suite  # noqa: E402


def main(out: str = "ood_example", full: bool = False) -> dict:
    # 1. Train.  The small setting keeps the paper's ratios n = 2d, k = d and eta = 0.4.
    if full:
        config = TrainConfig(mode="cot", out=os.path.join(out, "run"))            # the paper's setting
    else:
        config = TrainConfig(mode="cot", d=4, n=8, k=4, eta=PAPER.eta, batch=256, iters=300, lr=1e-2,
                             eval_every=100, eval_samples=2000, theory_samples=5000, structure_samples=512,
                             device="cpu", progress=False, out=os.path.join(out, "run"))
    result = train(config)
    print(f"trained: final eval loss {result.summary['final_eval_loss']:.4g}, "
          f"theory {result.summary['theory_eval_loss']:.4g}")

    # 2. Read the run back; the learned step is read off the weights.
    run = load_run(config.out)
    step = float(w24_v31(run.V.double().unsqueeze(0), run.W.double().unsqueeze(0))[0])
    print(f"learned step {step:.4f} (the CoT targets used eta = {config.eta})")

    # 3. Covariances: the standard suite and two of our own.
    d = config.d
    Q = numerics.random_rotation(d, seed=7)                          # a fixed random eigenbasis
    spike = np.full(d, 0.5)
    spike[0] = 0.5 * d + 0.5                                         # one direction carries half the trace
    my_cases = [
        Case("spiked", (Q * spike) @ Q.T, description="one eigenvalue d/2 + 1/2, the rest 1/2"),
        Case("rank-1", d * np.outer(Q[:, 0], Q[:, 0]), description="x on one line, trace d"),
    ]
    model = model_from_run(run)                                      # V, W, mode, n, k and the step
    suite = evaluate_suite(model, standard_suite(d) + my_cases, samples=4000 if not full else 10000,
                           theory_samples=20000 if not full else 100000)
    print(format_table(suite))

    # 4. Plot: the model's median with its 10-90% band, GD's and no-CoT's medians.
    cases = [suite["in_distribution"]] + suite["cases"]
    x = np.arange(len(cases))
    fig, ax = plt.subplots(figsize=(9, 4))
    cap = 1e4
    for dx, prefix, color, label in ((-0.2, "", "C0", "CoT model"), (0.0, "gd_", "k", "GD, learned step"),
                                     (0.2, "nocot_", "C3", "no-CoT optimum")):
        med = np.minimum([c[prefix + "median"] for c in cases], cap)
        lo = np.minimum([c[prefix + "q10"] for c in cases], cap)
        hi = np.minimum([c[prefix + "q90"] for c in cases], cap)
        ax.errorbar(x + dx, med, yerr=[med - lo, hi - med], fmt="o", color=color, ms=4, capsize=2, label=label)
    for i, c in enumerate(cases):
        if not c["predicted_stable"]:
            ax.axvspan(i - 0.45, i + 0.45, color="0.85", zorder=0)
    ax.set_yscale("log")
    ax.set_xticks(x, [c["name"] for c in cases], rotation=25, ha="right", fontsize=8)
    ax.set_ylabel(f"loss, median and 10-90% (capped at {cap:g})")
    ax.set_title("grey: Theorem 4.2 predicts GD with the learned step is unstable", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = os.path.join(out, "ood_cases.png")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    print(path)
    return suite


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    main(args[0] if args else "ood_example", full="--full" in sys.argv or os.environ.get("COTGD_FULL") == "1")
