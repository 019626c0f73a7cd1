"""The verdict on a trained model: did the run produce a usable one?  One rule, stated here and
used everywhere a run's success is reported: ``cotgd train`` (exit status 1 and one line),
``summary.json`` and ``manifest.json`` (``status`` "failed" instead of "finished") and a sweep's
table (``status`` failed).

A run **fails** when its final in-distribution evaluation (``summary["eval"]``) shows either

* divergence: the model diverges (numerics' divergence rule) on more than half of the prompts,
  ``diverged_frac > MAX_DIVERGED_FRAC = 0.5``; or
* no learning: its mean loss over the non-diverged prompts is more than ``ZERO_MARGIN = 5%`` above
  the exact loss of the zero predictor, ``(1 + ZERO_MARGIN) d/2``.

The zero predictor ``w_hat = 0`` is GD's iterate ``w_0`` (``zero_predictor_loss``): the loss
is measured against ``w*`` (``evaluate.eval_losses``: ``(1/2) ||w_hat - w*||^2`` with
``w* ~ N(0, I_d)``), so its exact loss is ``E ||w*||^2 / 2 = d/2`` whatever the covariance of x
and the label noise (docs/theory.md sections 2 and 16).  A model worse than it has learnt
nothing usable.

The second test needs training time: a run of fewer than ``MIN_JUDGED_ITERS = 50`` iterations (a
sanity run such as ``--iters 3``; the paper's runs take 750) is too short to be judged by its loss,
and only the divergence test applies to it (a small initialisation predicts about 0, it does not
diverge).

The verdict names the likely causes: the Adam learning rate when it is above the default
(``config.resolved_lr``), the GD step eta when Theorem 4.2 puts it past the stable step
(``evaluate.step_stability``, CoT runs), and whether the theory's own model on the very same
prompts (``summary["theory_same_prompts"]``) is better than the zero predictor (then the
optimiser did not find it) or not (then the setting itself, not the optimiser, is at fault).
"""
from __future__ import annotations

import math

from .rundir import ENDED, FAILED, FINISHED

#: Runs with fewer iterations are too short to be judged by their loss (module docstring).
MIN_JUDGED_ITERS = 50
#: A final loss more than this share above the zero predictor's exact loss fails the run.
ZERO_MARGIN = 0.05
#: A final model diverging on more than this share of the evaluation prompts fails the run.
MAX_DIVERGED_FRAC = 0.5


def zero_predictor_loss(config) -> float:
    """The exact evaluation loss of the zero predictor ``w_hat = 0`` for ``config`` (a
    ``TrainConfig``): ``numerics.gd_eval_loss_value(d, n, eta, 0)``, GD's iterate ``w_0 = 0``,
    which is ``E ||w*||^2 / 2 = d/2`` (``w* ~ N(0, I_d)``) for any covariance of x and any label
    noise, since the loss is measured against ``w*``."""
    import numerics
    return float(numerics.gd_eval_loss_value(config.d, config.n, config.eta, 0))


def judge(config, report: dict, *, iterations: int, same_prompts: dict | None = None) -> dict:
    """The verdict (module docstring) on a model of run ``config`` whose final in-distribution
    evaluation is ``report`` (``evaluate.report_dict``: ``mean_without_diverged``,
    ``diverged_frac``, ...) after ``iterations`` iterations; ``same_prompts``: the theory's model
    evaluated on the same prompts (or None).

    Returns ``{"status": "finished" | "failed", "judged_loss": bool, "zero_loss": d/2,
    "failures": [...], "causes": [...], "message": str | None}``; ``message`` is one line,
    "training failed: <what>; why: <likely causes>", for a failed run."""
    zero = zero_predictor_loss(config)
    judged = iterations >= MIN_JUDGED_ITERS
    failures = []
    diverged = float(report.get("diverged_frac", 0.0))
    if diverged > MAX_DIVERGED_FRAC:
        failures.append(f"the trained model diverges on {diverged:.0%} of the final evaluation's prompts "
                        f"(more than {MAX_DIVERGED_FRAC:.0%})")
    mean = report.get("mean_without_diverged")
    if judged and not failures and mean is not None and not (math.isfinite(mean) and mean <= (1 + ZERO_MARGIN) * zero):
        above = f"{mean / zero - 1:.0%} above" if math.isfinite(mean) else "not below"
        failures.append(f"the mean loss over the non-diverged prompts, {mean:.4g}, is {above} {zero:g}, the exact "
                        f"loss of predicting w = 0 (d/2; more than {ZERO_MARGIN:.0%} above fails)")
    if not failures:
        return {"status": FINISHED, "judged_loss": judged, "zero_loss": zero, "failures": [], "causes": [],
                "message": None}
    causes = _causes(config, zero, same_prompts, diverging=diverged > MAX_DIVERGED_FRAC)
    return {"status": FAILED, "judged_loss": judged, "zero_loss": zero, "failures": failures, "causes": causes,
            "message": "training failed: " + "; ".join(failures) + "; why: " + "; ".join(causes)}


def _causes(config, zero: float, same_prompts: dict | None, *, diverging: bool) -> list:
    """What may have made the run fail, from the config (the learning rate, Theorem 4.2's verdict
    on eta) and the theory's model on the same prompts; ``diverging``: the model diverges (an lr
    at or below its default is then no cause; otherwise it may have trained too little)."""
    import dataclasses

    from .config import resolved_lr
    from .evaluate import step_stability
    causes = []
    lr, default = resolved_lr(config), resolved_lr(dataclasses.replace(config, lr=None))
    if lr > default:
        ratio = lr / default
        causes.append(f"lr = {lr:g} is {ratio:.0f}x the default {default:g} (try a smaller --lr)" if ratio >= 10
                      else f"lr = {lr:g} is {ratio:.2g}x the default {default:g} (try a smaller --lr)")
    elif not diverging:
        causes.append(f"too little training (lr = {lr:g}, default {default:g}, for {config.iters} iterations; "
                      f"try more --iters)")
    if config.mode == "cot":
        verdict = step_stability(config)
        where = f"({verdict['rule']})"
        if verdict["stable"]:
            causes.append(f"eta = {config.eta:g} is within Theorem 4.2's stable step {verdict['bound']:.4g} {where}, "
                          f"so not the cause")
        else:
            causes.append(f"eta = {config.eta:g} is past Theorem 4.2's stable step {verdict['bound']:.4g} {where}: "
                          f"GD itself diverges on many prompts")
    if same_prompts and same_prompts.get("mean_without_diverged") is not None:
        theirs = same_prompts["mean_without_diverged"]
        theirs_diverged = float(same_prompts.get("diverged_frac", 0.0))
        if math.isfinite(theirs) and theirs <= (1 + ZERO_MARGIN) * zero and theirs_diverged <= MAX_DIVERGED_FRAC:
            causes.append(f"the theory's model reaches {theirs:.4g} on the same prompts: the optimiser did not find it")
        else:
            causes.append(f"the theory's model fails on the same prompts too ({theirs:.4g} without diverged, "
                          f"{theirs_diverged:.0%} diverged): the setting, not the optimiser")
    return causes or [f"no cause found in the config (lr = {lr:g} is its default)"]


def summary_verdict(summary: dict) -> dict:
    """A finished run's verdict from its summary: the recorded one (``summary["verdict"]``,
    written with ``status``), or for a summary written before runs had one, ``judge`` on its
    ``eval``, ``config``, ``iterations`` and ``theory_same_prompts``."""
    if summary.get("status") in ENDED and isinstance(summary.get("verdict"), dict):
        return summary["verdict"]
    from .rundir import SUMMARY, config_from
    config = config_from(summary.get("config"), SUMMARY)
    return judge(config, summary.get("eval") or {}, iterations=int(summary.get("iterations") or config.iters),
                 same_prompts=summary.get("theory_same_prompts"))
