"""Guards of training/engine.py (the training loop): the numbers a user reads, recomputed from
their definitions rather than compared with another run of the same code.

* An optimiser step is the literal update: SGD ``p - lr g`` (twice, so no momentum), Adam's first
  step ``p - lr g / (|g| + eps)``, each model's gradient clipped to the clip on its own norm; a step
  whose loss or gradient is not finite leaves the model where it is and is counted as skipped.
* Each metrics row's ``train_loss`` is the mean of the finite step losses since the previous row,
  ``train_loss_last`` the last one, ``skipped_steps`` the steps skipped since; the summary's every
  field is recomputed from the saved parameters (``evaluate_params``, ``structure_metrics``,
  ``theory_reference``, ``judge``, the theory's parameters on the same prompts).
* Divergence and overflow are ``TrainingDiverged`` with the exact message naming the model(s) and
  the kept checkpoint; the checkpoint holds the accumulators, and a run killed anywhere (even while
  writing its final files) resumes to bitwise the same files; a finished many-model run reads back.
* The fused path of one model, and of models whose seeds have different longest k, equals the loop
  path; the manifest's statuses, verdicts, models and thread counts; refusals as one line.
"""
import dataclasses
import json
import math
import os
import warnings

import numpy as np
import pytest
import torch

import numerics
import theory
from runlog import crash_at, stripped
from engine_helpers import thread_spy
from training import TrainConfig, TrainingDiverged, evaluate_params, load_run, resume, train
from training.config import resolved_clip, resolved_lr
from training.data import BatchFeed, prompt_streams
from training.errors import RunExists, RunFileError
from training.evaluate import report_dict, theory_reference
from training.kernels import objective
from training.model import DEFAULT_INIT_SCALE
from training.structure import STRUCTURE_KEYS, structure_metrics
from training.verdict import judge

import training.engine as engine
from training.engine import (Engine, Gradients, fused_gradients, loop_gradients, loops_trained, model_grid_configs,
                             train_models)

TINY = dict(d=2, n=5, k=2, batch=8, iters=6, eval_every=3, eval_samples=200, theory_samples=200,
            structure_samples=50, device="cpu", progress=False)


def _config(**kw) -> TrainConfig:
    return TrainConfig(**{**TINY, **kw})


def _params(model) -> list:
    return [p.detach().clone() for p in model.parameters()]


def _literal_grads(config: TrainConfig):
    """The model's initial parameters and the loss and gradient of its objective on the run's
    first batch, from a twin engine with ``kernels.objective`` (not the engine's gradient paths)."""
    twin = Engine([config])
    params = list(twin.model.parameters())
    full = twin.batches.next(more=False)[config.seed][config.eta]
    twin.batches.shutdown()
    V, W = twin.model.matrices()
    loss = objective(config.mode, V, W, full, config.n, loops_trained(config, 0), window=config.loop_window)
    grads = torch.autograd.grad(loss.sum(), params)
    return [p.detach().clone() for p in params], [(float(loss.detach()[0]), [g.detach().clone() for g in grads])]


# ------------------------------------------------------------------------------ the optimiser step
@pytest.mark.parametrize("mode", ["cot", "nocot", "looped"])
@pytest.mark.parametrize("param", ["full", "sparse"])
@pytest.mark.parametrize("clip", [None, 1e-3])
def test_one_sgd_step_is_the_literal_clipped_update(mode, param, clip):
    """Exact (float64): one SGD step from the init is ``p - lr s g`` with ``s = min(1, clip /
    ||g||)`` (||g|| over all of the model's parameters), ``g`` the objective's gradient on the
    first batch; the step's loss is the objective's value.  (looped has a default clip of 1.)"""
    c = _config(mode=mode, param=param, optimizer="sgd", lr=0.05, clip_grad=clip, dtype="float64", prefetch=False)
    p0, [(loss0, g)] = _literal_grads(c)
    seen = []
    e = Engine([c], on_step=lambda eng, loss: seen.append(loss.clone()))
    assert all(torch.equal(a, b) for a, b in zip(_params(e.model), p0, strict=True))
    e.step()
    e.batches.shutdown()
    norm = math.sqrt(sum(float(x.square().sum()) for x in g))
    cap = resolved_clip(c)
    s = 1.0 if cap is None else min(1.0, cap / norm)
    if clip is not None:
        assert s < 0.5                      # the clip is engaged
    for p, q, gp in zip(_params(e.model), p0, g, strict=True):
        torch.testing.assert_close(p, q - 0.05 * s * gp, rtol=1e-12, atol=1e-15)
    assert seen[0].dtype == torch.float64 and seen[0].shape == (1,)
    assert float(seen[0][0]) == pytest.approx(loss0, rel=1e-12)
    assert float(e.last_loss[0]) == pytest.approx(loss0, rel=1e-12)
    assert (e.iteration, e.loss_count) == (1, 1)


def test_two_sgd_steps_have_no_momentum_and_adam_steps_literally():
    """Exact (float64): the second SGD step is again ``p - lr g`` at the new point (momentum 0);
    Adam's first step is ``p - lr g / (|g| + 1e-8)`` with the config's lr."""
    c = _config(optimizer="sgd", lr=0.2, dtype="float64", prefetch=False)
    e = Engine([c])
    e.step()
    p1 = _params(e.model)
    twin = Engine([c])
    twin.batches.next(more=True)                      # the first batch, already used
    with torch.no_grad():
        for mine, theirs in zip(twin.model.parameters(), p1, strict=True):
            mine.copy_(theirs)
    batch = twin.batches.next(more=False)[0][c.eta]
    loss = objective("cot", *twin.model.matrices(), batch, c.n, c.k)
    g = torch.autograd.grad(loss.sum(), list(twin.model.parameters()))
    e.step()
    for p, q, gp in zip(_params(e.model), p1, g, strict=True):
        torch.testing.assert_close(p, q - 0.2 * gp, rtol=1e-12, atol=1e-15)
    for b in (e, twin):
        b.batches.shutdown()
    a = _config(lr=0.01, dtype="float64", prefetch=False)
    p0, [(_, g)] = _literal_grads(a)
    e = Engine([a])
    e.step()
    e.batches.shutdown()
    for p, q, gp in zip(_params(e.model), p0, g, strict=True):
        torch.testing.assert_close(p, q - 0.01 * gp / (gp.abs() + 1e-8), rtol=1e-9, atol=1e-15)


@pytest.mark.parametrize("fused", ["loop", "fused"])
def test_each_model_is_clipped_on_its_own_norm(fused):
    """Exact (float64): in a run of two models (seeds 0 and 1, k 1 and 3) every model's SGD step
    is its own literal clipped update, on either gradient path."""
    base = _config(optimizer="sgd", lr=0.05, clip_grad=2e-3, dtype="float64", prefetch=False, fused_models=fused)
    configs = [dataclasses.replace(base, seed=0, k=1), dataclasses.replace(base, seed=1, k=3)]
    e = Engine(configs)
    assert e.gradients is (fused_gradients if fused == "fused" else loop_gradients)
    e.step()
    e.batches.shutdown()
    for j, c in enumerate(configs):
        p0, [(_, g)] = _literal_grads(c)
        norm = math.sqrt(sum(float(x.square().sum()) for x in g))
        s = min(1.0, 2e-3 / norm)
        assert s < 0.5
        for p, q, gp in zip(_params(e.model), p0, g, strict=True):
            torch.testing.assert_close(p[j], q[0] - 0.05 * s * gp[0], rtol=1e-9, atol=1e-14)


# ------------------------------------------------------------------------------ skipped steps and rows
def _poisoned(gradients, bad: dict):
    """The engine's gradient function with ``bad[iteration] = [(model, kind), ...]``: kind 'loss'
    overflows the model's loss and gradient, 'grad' only its gradient."""
    def poisoned(V, W, batches, configs, iteration, *, workers=None):
        g = gradients(V, W, batches, configs, iteration, workers=workers)
        loss, gV = g.loss.clone(), g.V.clone()
        for j, kind in bad.get(iteration, []):
            if kind == "loss":
                loss[j] = float("inf")
                gV[j] = float("nan")
            else:
                gV[j, 0, 0] = float("inf")
        return Gradients(loss, gV, g.W)
    return poisoned


def test_skipped_steps_leave_the_model_and_are_counted():
    """Training (SGD, float64): a step whose loss overflowed, or whose gradient alone is not
    finite, leaves that model's parameters where they were (the other model moves) and is counted
    in its row's ``skipped_steps`` and the summary's total; ``train_loss`` is the mean of the
    finite losses since the previous row, ``train_loss_last`` the last step's loss (inf when it
    overflowed), as the ``on_step`` observer saw them."""
    base = _config(optimizer="sgd", lr=0.05, dtype="float64", prefetch=False)
    configs = [dataclasses.replace(base, k=1), dataclasses.replace(base, k=2)]
    seen, params = [], []

    def on_step(eng, loss):
        seen.append(loss.tolist())
        params.append(_params(eng.model))

    e = Engine(configs, on_step=on_step)
    e.gradients = _poisoned(e.gradients, {1: [(1, "loss")], 2: [(1, "grad")], 4: [(0, "grad")], 5: [(1, "loss")]})
    results = e.run()
    for it, j in ((1, 1), (2, 1), (4, 0), (5, 1)):
        assert all(torch.equal(p[j], q[j]) for p, q in zip(params[it], params[it - 1], strict=True)), (it, j)
        assert not all(torch.equal(p[1 - j], q[1 - j]) for p, q in zip(params[it], params[it - 1], strict=True)), (it, j)
    ok = {0: [True, True, True, True, False, True], 1: [True, False, False, True, True, False]}
    for j, r in enumerate(results):
        rows = r.history
        assert [row["iteration"] for row in rows] == [0, 3, 6]
        assert rows[0]["train_loss"] is None and rows[0]["train_loss_last"] is None and rows[0]["skipped_steps"] == 0
        for row, window in zip(rows[1:], (range(0, 3), range(3, 6)), strict=True):
            good = [seen[i][j] for i in window if ok[j][i]]
            assert row["train_loss"] == pytest.approx(sum(good) / len(good), rel=1e-12)
            assert row["train_loss_last"] == seen[window[-1]][j]
            assert row["skipped_steps"] == sum(not ok[j][i] for i in window)
        assert r.summary["skipped_steps"] == sum(not x for x in ok[j])
        assert r.summary["final_train_loss"] == rows[-1]["train_loss"]
    assert math.isinf(results[1].history[-1]["train_loss_last"])
    assert [r.summary["skipped_steps"] for r in results] == [1, 3]


@pytest.mark.parametrize("models", [1, 2])
def test_a_loss_that_overflows_on_every_step_since_the_last_row_diverges(models, tmp_path):
    """Training: the last model's loss overflowing on all of the 3 steps since the previous row
    is TrainingDiverged at that row, naming the steps, the model (runs of several) and the kept
    checkpoint; the manifest says diverged."""
    base = _config(checkpoint_every=2, out=str(tmp_path / "run") if models == 1 else None)
    configs = [base] if models == 1 else [dataclasses.replace(base, k=1), dataclasses.replace(base, k=2)]
    e = Engine(configs, out=str(tmp_path / "run"))
    j = models - 1
    e.gradients = _poisoned(e.gradients, {i: [(j, "loss")] for i in (3, 4, 5)})
    with torch_threads_kept():
        engine._fresh_run_dir(str(tmp_path / "run"), e, False)
        with pytest.raises(TrainingDiverged) as info:
            e.run()
    which = "" if models == 1 else " in model(s) [1]"
    assert str(info.value) == (f"training diverged at iteration 6: the training loss overflowed on all of the last "
                               f"3 iterations{which}; the checkpoint of iteration 4 is kept")
    assert (info.value.iteration, info.value.checkpoint) == (6, 4)
    m = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert (m["status"], m["iteration"], m["checkpoint_iteration"]) == ("diverged", 6, 4)


class torch_threads_kept:
    def __enter__(self):
        self.before = torch.get_num_threads()

    def __exit__(self, *exc):
        torch.set_num_threads(self.before)


@pytest.mark.parametrize("models, bad", [(1, [0]), (2, [1]), (3, [0, 2])])
def test_non_finite_parameters_are_named(models, bad):
    """Numeric: an evaluation of parameters that are not finite is TrainingDiverged naming the
    model(s) whose V or W is (for a run of several), exactly."""
    base = _config(prefetch=False)
    e = Engine([dataclasses.replace(base, seed=s) for s in range(models)])
    with torch.no_grad():
        for j in bad:
            (e.model.V if j % 2 == 0 else e.model.W)[j, 1, 2] = float("nan")
    with pytest.raises(TrainingDiverged) as info:
        e.evaluate()
    which = "" if models == 1 else f" in model(s) {bad}"
    assert str(info.value) == f"training diverged at iteration 0: non-finite parameters{which}; " \
                              f"no checkpoint was written before it"


# ------------------------------------------------------------------------------ the summary, recomputed
#: The runs whose summaries are recomputed: each mode in distribution, with label noise and on a
#: covariance (looped has no theory value then: the summary's theory fields are None).
SIGMA = [[2.0, 0.5], [0.5, 0.5]]
VARIANTS = [(mode, extra) for extra in ({}, {"noise": 0.5}, {"sigma": SIGMA, "eta": 0.2}) for mode in ("cot", "nocot", "looped")]
VARIANT_IDS = [f"{mode}-{'-'.join(extra) or 'plain'}" for mode, extra in VARIANTS]


def single_run(root, name):
    """One variant's run, trained in the test that reads it: mutmut links a test to the functions
    that run during it, and a run shared through a module fixture would be linked to the first
    test only (its survivors then looked untested)."""
    mode, extra = VARIANTS[VARIANT_IDS.index(name)]
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        config = _config(mode=mode, ood_sigmas={"wide": 2.0}, checkpoint_every=2, out=str(root / name), **extra)
        return train(config)
    finally:
        torch.set_num_threads(before)


def _expected_summary_fields(r, M=1, j=0):
    c, s = r.config, r.summary
    kw = dict(d=c.d, n=c.n, k=c.k, samples=c.eval_samples, seed=c.seed, mode=c.mode, noise=c.noise)
    V, W = r.V.double(), r.W.double()
    ev = report_dict(evaluate_params(V, W, sigma=c.sigma, **kw))
    assert s["eval"] == pytest.approx(ev, rel=1e-12, nan_ok=True)
    assert s["final_eval_loss"] == pytest.approx(ev["mean"], rel=1e-12)
    wide = report_dict(evaluate_params(V, W, sigma=2.0 * np.eye(c.d), **kw))
    assert s["eval_ood"] == {"wide": pytest.approx(wide, rel=1e-12, nan_ok=True)}
    last = r.history[-1]
    assert last["eval_loss"] == s["final_eval_loss"] and last["eval"] == s["eval"]
    assert last["eval_loss_ood"] == {"wide": s["eval_ood"]["wide"]["mean"]} and last["eval_ood"] == s["eval_ood"]
    ref = theory_reference(c)
    assert s["theory"] == ref and s["theory_eval_loss"] == ref["value"]
    step = c.eta if c.mode == "cot" else ref["step"]
    assert s["structure_step"] == step
    if c.mode == "nocot":
        assert step == pytest.approx(float(theory.nocot_optimal_eta(c.d, c.n, noise_var=theory_noise(c))), rel=1e-12)
    if step is None:
        assert s["structure"] is None and last["structure"] is None
        assert s["learned_step"] is None and s["learned_contraction_step"] is None and s["block_norms"] is None
    else:
        st = structure_metrics(r.V, r.W, n=c.n, eta=step, k=c.k if c.mode == "cot" else 1,
                               samples=c.structure_samples, seed=c.seed, sigma=c.sigma, noise=c.noise)
        assert s["structure"] == pytest.approx({key: st[key] for key in STRUCTURE_KEYS}, rel=1e-9)
        assert last["structure"] == s["structure"]
        assert s["learned_step"] == s["structure"]["w24_v31"]
        assert s["learned_contraction_step"] == -s["structure"]["v31_w13"]
        for key in ("V", "W"):
            np.testing.assert_allclose(s["block_norms"][key], st["block_norms"][key], rtol=1e-9)
    if c.mode == "cot":
        theirs = numerics.gd_params(c.d, c.eta)
    elif c.mode == "nocot":
        theirs = numerics.nocot_params(c.d, c.n, c.sigma, noise_var=c.noise ** 2)
    else:
        theirs = None if ref["step"] is None else numerics.gd_params(c.d, ref["step"])
    if theirs is None:
        assert s["theory_same_prompts"] is None and s["relative_gap_same_prompts"] is None
    else:
        same = report_dict(evaluate_params(*theirs, sigma=c.sigma, **kw))
        assert s["theory_same_prompts"] == pytest.approx(same, rel=1e-12, nan_ok=True)
        assert s["relative_gap_same_prompts"] == pytest.approx((ev["mean"] - same["mean"]) / same["mean"], rel=1e-12)
    if ref["value"] is None:
        assert s["relative_gap"] is None
    else:
        assert s["relative_gap"] == pytest.approx((ev["mean"] - ref["value"]) / ref["value"], rel=1e-12)
    if ref.get("rescaled_gd") is not None:
        rg = ref["rescaled_gd"]
        opt = numerics.RescaledGDOptimum(c=rg["c"], u=rg["u"], loss=rg["loss"], method="exact")
        expected = report_dict(evaluate_params(*opt.params(c.d), sigma=c.sigma, **kw))
        assert s["rescaled_gd_same_prompts"] == pytest.approx(expected, rel=1e-12, nan_ok=True)
    else:
        assert "rescaled_gd_same_prompts" not in s
    assert (s["mode"], s["param"], s["device"]) == (c.mode, c.param, "cpu")
    assert s["config"] == c.to_dict()
    assert (s["lr"], s["clip_grad"], s["init_scale"]) == (resolved_lr(c), resolved_clip(c), DEFAULT_INIT_SCALE[c.param])
    assert (s["iterations"], s["models"], s["model_index"]) == (c.iters, M, j)
    assert s["final_train_loss"] == last["train_loss"] and s["skipped_steps"] == 0
    verdict = judge(c, s["eval"], iterations=c.iters, same_prompts=s["theory_same_prompts"])
    assert s["verdict"] == verdict and s["status"] == verdict["status"]
    assert 0 < s["train_seconds"] <= s["seconds"]
    assert s["ms_per_iteration"] == pytest.approx(1e3 * s["train_seconds"] / c.iters, rel=1e-12)
    for row in r.history:
        assert 0 <= row["train_seconds"] <= row["seconds"] <= s["seconds"]


def theory_noise(c):
    from training.data import exact_noise_var
    return exact_noise_var(c.noise)


@pytest.mark.parametrize("name", VARIANT_IDS)
def test_summary_fields_are_their_definitions(tmp_path, name):
    """Exact: every number of a run's summary (and its last metrics row) recomputed from its
    saved parameters and config (label noise and a covariance included); the files hold the
    same."""
    r = single_run(tmp_path, name)
    assert r.summary["status"] == "finished"
    _expected_summary_fields(r)
    run = load_run(r.config.out)
    assert torch.equal(run.V, r.V) and torch.equal(run.W, r.W)
    assert stripped(run.summary) == stripped(r.summary) and stripped(run.metrics) == stripped(r.history)
    assert [row["iteration"] for row in r.history] == [0, 3, 6]


def test_many_model_summaries_are_their_definitions():
    """Exact: the summaries of a run of 4 models (seeds 0 and 2, k 1 and 3, with an OOD
    covariance) are each recomputed from the model's parameters, with models 4 and its index."""
    base = _config(ood_sigmas={"wide": 2.0}, threads=2)
    results = train_models(base, seeds=[0, 2], ks=[1, 3])
    assert [(r.config.seed, r.config.k) for r in results] == [(0, 1), (0, 3), (2, 1), (2, 3)]
    for j, r in enumerate(results):
        _expected_summary_fields(r, M=4, j=j)


# ------------------------------------------------------------------------------ the fused path
def _batches(configs, dtype=torch.float64):
    return BatchFeed(prompt_streams(configs, "cpu", dtype), prefetch=False).next(more=False)


@pytest.mark.parametrize("mode", ["cot", "nocot", "looped"])
def test_fused_gradients_of_one_model_are_its_loop_gradients(mode):
    """Numeric (float64): the fused call with one model (the first or the second of a grid whose
    batch holds GD targets up to k = 3) gives the loop path's loss and gradients to rounding."""
    base = _config(mode=mode, dtype="float64", loop_curriculum=4 if mode == "looped" else 0)
    configs = model_grid_configs(base, ks=[1, 3])
    e = Engine(configs)
    V, W = (A.detach() for A in e.model.matrices())
    for j in range(2):
        one = configs[j:j + 1]
        for batches in (_batches(configs), _batches(one)):
            loop = loop_gradients(V[j:j + 1], W[j:j + 1], batches, one, 2)
            fused = fused_gradients(V[j:j + 1], W[j:j + 1], batches, one, 2)
            for a, b in zip(fused, loop, strict=True):
                torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("mode", ["cot", "nocot", "looped"])
def test_fused_gradients_of_seeds_with_different_longest_k(mode):
    """Numeric (float64, d = 3 above the longest k): models of seeds whose longest k differ (seed
    0 k 1, seed 1 k 2 with two etas, seed 2 k 1): their GD targets are padded to the longest, and
    the fused call equals the loop path to rounding."""
    base = _config(mode=mode, dtype="float64", d=3)
    configs = [dataclasses.replace(base, seed=0, k=1), dataclasses.replace(base, seed=1, k=2),
               dataclasses.replace(base, seed=1, k=2, eta=0.3), dataclasses.replace(base, seed=2, k=1)]
    e = Engine(configs)
    V, W = (A.detach() for A in e.model.matrices())
    batches = _batches(configs)
    loop = loop_gradients(V, W, batches, configs, 0)
    fused = fused_gradients(V, W, batches, configs, 0)
    for a, b in zip(fused, loop, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-15)
    assert len(set(loop.loss.tolist())) == (4 if mode == "cot" else 3)        # eta is read by cot alone


def test_loops_trained_follows_the_curriculum():
    """Exact: ``1 + (k - 1) iteration // T`` loops up to k under a curriculum of T iterations;
    k otherwise (and always for cot and nocot)."""
    c = _config(mode="looped", k=4, loop_curriculum=6)
    assert [loops_trained(c, i) for i in range(9)] == [1, 1, 2, 2, 3, 3, 4, 4, 4]
    assert [loops_trained(dataclasses.replace(c, loop_curriculum=0), i) for i in (0, 5)] == [4, 4]
    assert loops_trained(dataclasses.replace(c, mode="cot"), 0) == 4


# ------------------------------------------------------------------------------ checkpoints and resume
TIMING = ("train_seconds", "seconds")
_original_step = engine.Engine.step


def _same_state(a: dict, b: dict) -> None:
    assert set(a) == set(b)
    for key in a:
        if key in TIMING:
            continue
        if key == "configs":
            assert [{k: v for k, v in c.items() if k != "out"} for c in a[key]] == \
                   [{k: v for k, v in c.items() if k != "out"} for c in b[key]]
        elif key == "histories":
            assert stripped(a[key]) == stripped(b[key])
        else:
            assert stripped(_plain(a[key])) == stripped(_plain(b[key])), key


def _plain(x):
    if isinstance(x, torch.Tensor):
        return x.tolist()
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x


def test_checkpoint_holds_the_accumulators_since_the_last_row(tmp_path):
    """Exact: a checkpoint between rows (iteration 5, rows every 3) holds the sum of the finite
    losses since the row, their count, the skipped steps, the step count and the last loss (as
    the on_step observer saw them), the skipped total, the iteration, the theory and the
    history."""
    seen = []
    c = _config(checkpoint_every=5, iters=5, eval_every=3, out=str(tmp_path / "run"))
    e = Engine([c], out=c.out, on_step=lambda eng, loss: seen.append(float(loss[0])))
    e.gradients = _poisoned(e.gradients, {4: [(0, "loss")], 1: [(0, "loss")]})
    engine._fresh_run_dir(c.out, e, False)
    with torch_threads_kept():
        [r] = e.run()
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)
    assert state["iteration"] == 5 and state["loss_count"] == 0
    assert state["skipped_total"] == [2] and r.summary["skipped_steps"] == 2
    assert [row["skipped_steps"] for row in r.history] == [0, 1, 1]
    assert state["last_loss"].tolist() == [math.inf] and state["acc"].tolist() == [[0.0], [0.0], [0.0]]
    assert state["theory"] == [theory_reference(c)] and stripped(state["histories"]) == stripped([r.history])
    assert state["threads"] == 1 and state["device"]["type"] == "cpu"
    c2 = dataclasses.replace(c, iters=9, eval_every=6, checkpoint_every=4, out=str(tmp_path / "mid"))
    seen.clear()
    e = Engine([c2], out=c2.out, on_step=lambda eng, loss: seen.append(float(loss[0])))
    e.gradients = _poisoned(e.gradients, {2: [(0, "loss")]})
    states = []
    checkpoint = e.checkpoint

    def watched():
        checkpoint()
        states.append(torch.load(tmp_path / "mid" / "checkpoint.pt", weights_only=False))

    e.checkpoint = watched
    engine._fresh_run_dir(c2.out, e, False)
    with torch_threads_kept():
        e.run()
    mid = states[0]
    assert mid["iteration"] == 4 and mid["loss_count"] == 4
    np.testing.assert_allclose(mid["acc"].numpy(), [[seen[0] + seen[1] + seen[3]], [3.0], [1.0]], rtol=1e-12)
    assert mid["last_loss"].tolist() == [seen[3]] and mid["skipped_total"] == [0]
    assert states[1]["skipped_total"] == [1] and states[1]["loss_count"] == 2
    np.testing.assert_allclose(states[1]["acc"].numpy(), [[seen[6] + seen[7]], [2.0], [0.0]], rtol=1e-12)


@pytest.mark.parametrize("models", [1, 2])
def test_a_run_killed_while_writing_its_final_files_resumes_bitwise(tmp_path, monkeypatch, models):
    """Training, exact: a kill after the final checkpoint (while writing params.pt) leaves an
    interrupted run; resume trains nothing more and writes bitwise the uninterrupted run's
    parameters, metrics, summary and checkpoint (up to wall-clock times), finished."""
    base = _config(checkpoint_every=2, iters=5, eval_every=2)
    ks = [1, 2] if models == 2 else [2]
    whole = train_models(dataclasses.replace(base, out=str(tmp_path / "whole")), ks=ks)
    write_params = engine.write_params
    monkeypatch.setattr(engine, "write_params", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        train_models(dataclasses.replace(base, out=str(tmp_path / "cut")), ks=ks)
    monkeypatch.setattr(engine, "write_params", write_params)
    m = json.loads((tmp_path / "cut" / "manifest.json").read_text())
    assert (m["status"], m["iteration"], m["checkpoint_iteration"]) == ("interrupted", 5, 5)
    monkeypatch.setattr(engine.Engine, "step", lambda self: pytest.fail("trained again"))
    resumed = resume(tmp_path / "cut")
    resumed = resumed if models == 2 else [resumed]
    for a, b in zip(resumed, whole, strict=True):
        assert torch.equal(a.V, b.V) and torch.equal(a.W, b.W)
        assert stripped(a.summary) == stripped(b.summary) and stripped(a.history) == stripped(b.history)
    _same_state(torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=False),
                torch.load(tmp_path / "whole" / "checkpoint.pt", weights_only=False))
    assert json.loads((tmp_path / "cut" / "manifest.json").read_text())["status"] == "finished"


@pytest.mark.parametrize("crash", [3, 5])
def test_a_many_model_run_resumes_bitwise_from_a_checkpoint_between_rows(tmp_path, monkeypatch, crash):
    """Training, exact: two models (one skipping steps) checkpointed every 2, rows every 3,
    killed at 3 or 5: resume ends on the uninterrupted run's models, rows (train losses and
    skipped steps) and checkpoint."""
    base = _config(checkpoint_every=2, iters=6)
    bad = {1: [(1, "loss")], 4: [(0, "grad")], 5: [(1, "loss")]}
    gradients = engine.gradient_path
    monkeypatch.setattr(engine, "gradient_path", lambda *a: _poisoned(gradients(*a), bad))
    whole = train_models(dataclasses.replace(base, out=str(tmp_path / "whole")), ks=[1, 2])
    assert [r.summary["skipped_steps"] for r in whole] == [1, 2]
    crash_at(monkeypatch, crash)
    with pytest.raises(KeyboardInterrupt):
        train_models(dataclasses.replace(base, out=str(tmp_path / "cut")), ks=[1, 2])
    monkeypatch.setattr(engine.Engine, "step", _original_step)
    saved = torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=False)
    assert 0 < saved["train_seconds"] < saved["seconds"]
    resumed = resume(tmp_path / "cut")
    for a, b in zip(resumed, whole, strict=True):
        assert torch.equal(a.V, b.V) and torch.equal(a.W, b.W)
        assert stripped(a.history) == stripped(b.history) and stripped(a.summary) == stripped(b.summary)
        # the whole run's times: the earlier session's and this one's
        assert a.summary["seconds"] > saved["seconds"] and a.summary["train_seconds"] > saved["train_seconds"]
    _same_state(torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=False),
                torch.load(tmp_path / "whole" / "checkpoint.pt", weights_only=False))


def test_a_finished_many_model_run_reads_back_without_writing(tmp_path):
    """Training: resume of a finished run of two models returns their results from the files
    (parameters, summaries, histories, configs), in order, without rewriting its intact
    metrics (a torn one is repaired from the checkpoint)."""
    base = _config(out=str(tmp_path / "run"))
    whole = train_models(base, ks=[1, 2])
    names = sorted(os.listdir(tmp_path / "run" / "models"))
    metrics = [tmp_path / "run" / "models" / name / "metrics.jsonl" for name in names]
    before = [(os.stat(p).st_ino, os.stat(p).st_mtime_ns) for p in metrics]
    back = resume(tmp_path / "run")
    assert isinstance(back, list) and len(back) == 2
    for a, b in zip(back, whole, strict=True):
        assert torch.equal(a.V, b.V) and torch.equal(a.W, b.W)
        assert a.config == b.config and a.summary == json.loads(json.dumps(b.summary))
        assert stripped(a.history) == stripped(b.history)
    assert [(os.stat(p).st_ino, os.stat(p).st_mtime_ns) for p in metrics] == before
    lines = metrics[1].read_text().splitlines()
    metrics[1].write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:30])
    back = resume(tmp_path / "run")
    assert stripped(back[1].history) == stripped(whole[1].history)
    assert [json.loads(x)["iteration"] for x in metrics[1].read_text().splitlines()] == [0, 3, 6]
    assert os.stat(metrics[0]).st_ino == before[0][0]
    single = train(_config(out=str(tmp_path / "one")))
    p = tmp_path / "one" / "metrics.jsonl"
    stat = (os.stat(p).st_ino, os.stat(p).st_mtime_ns)
    one = resume(tmp_path / "one")
    assert not isinstance(one, list) and one.config == single.config
    assert (os.stat(p).st_ino, os.stat(p).st_mtime_ns) == stat


def test_a_marked_run_missing_its_files_names_its_status(tmp_path):
    """File check: a run marked failed without its params.pt is refused naming the file and the
    status it is marked with."""
    train(_config(out=str(tmp_path / "run")))
    path = tmp_path / "run" / "manifest.json"
    m = json.loads(path.read_text())
    path.write_text(json.dumps(dict(m, status="failed")))
    os.unlink(tmp_path / "run" / "params.pt")
    with pytest.raises(RunFileError) as info:
        resume(tmp_path / "run")
    assert str(info.value) == (f"cannot load {tmp_path / 'run' / 'params.pt'}: the file is missing, but the run is "
                               f"marked failed")


@pytest.mark.parametrize("checkpoint", [True, False])
def test_a_bad_config_in_the_manifest_is_named_on_resume(tmp_path, checkpoint):
    """File check: resume of an unfinished run (with its checkpoint, or killed before the first)
    whose manifest holds a bad config names manifest.json, in one line."""
    train(_config(out=str(tmp_path / "run"), checkpoint_every=2))
    path = tmp_path / "run" / "manifest.json"
    m = json.loads(path.read_text())
    m["config"]["d"] = 0
    path.write_text(json.dumps(dict(m, status="interrupted")))
    if not checkpoint:
        os.unlink(tmp_path / "run" / "checkpoint.pt")
    with pytest.raises(RunFileError) as info:
        resume(tmp_path / "run")
    assert str(info.value).startswith(f"cannot load {path}: it holds a bad run config: d must be")
    assert "\n" not in str(info.value) and info.value.path == str(path)


# ------------------------------------------------------------------------------ threads
THREAD_CASES = [(True, None, 3, 3), (True, 2, 3, 2), (True, None, 1, 1)] + [
    (False, threads, saved, expected)
    for threads, saved, expected in [(None, 3, 3), (2, 3, 2), (None, 1, 1), (None, 0, 2), (None, "x", 2)]]


@pytest.mark.parametrize("checkpoint, threads, saved, expected", THREAD_CASES)
def test_resume_runs_with_the_recorded_thread_count(tmp_path, monkeypatch, checkpoint, threads, saved, expected):
    """Training: resume trains with the torch thread count the run recorded (the checkpoint's, or
    before the first checkpoint the manifest's), unless the config fixes it; a manifest without a
    usable count leaves the caller's (2 here); the caller's count is restored; the result is the
    run's (its config's out is the directory)."""
    out = tmp_path / "run"
    config = _config(threads=threads, checkpoint_every=4, out=str(out))
    crash_at(monkeypatch, 5 if checkpoint else 2)
    with pytest.raises(KeyboardInterrupt):
        train(config)
    monkeypatch.undo()
    if checkpoint:
        state = torch.load(out / "checkpoint.pt", weights_only=False)
        state["threads"] = saved
        torch.save(state, out / "checkpoint.pt")
    else:
        m = json.loads((out / "manifest.json").read_text())
        (out / "manifest.json").write_text(json.dumps(dict(m, torch_threads=saved)))
    torch.set_num_threads(2)
    seen = thread_spy(monkeypatch)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        result = resume(out)
    assert set(seen) == {expected} and len(seen) == (2 if checkpoint else 6)
    assert torch.get_num_threads() == 2
    assert result.config.out == str(out) and result.summary["config"]["out"] == str(out)
    assert json.loads((out / "summary.json").read_text())["config"]["out"] == str(out)


def test_a_many_model_run_before_its_first_checkpoint_resumes_to_its_models(tmp_path, monkeypatch):
    """Training, exact: a run of two models killed before its first checkpoint resumes from
    iteration 0 (saying so) to the list of the uninterrupted models."""
    base = _config(checkpoint_every=4)
    whole = train_models(dataclasses.replace(base, out=str(tmp_path / "whole")), ks=[1, 2])
    crash_at(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        train_models(dataclasses.replace(base, out=str(tmp_path / "cut")), ks=[1, 2])
    monkeypatch.undo()
    with pytest.warns(RuntimeWarning, match=r"starting from iteration 0 .* \(the run had reached iteration 2\)$"):
        resumed = resume(tmp_path / "cut")
    assert isinstance(resumed, list) and len(resumed) == 2
    for a, b in zip(resumed, whole, strict=True):
        assert torch.equal(a.V, b.V) and torch.equal(a.W, b.W) and a.config == b.config
        assert stripped(a.summary) == stripped(b.summary)


def test_many_models_run_on_named_worker_threads_with_one_torch_thread_each(monkeypatch):
    """The models' objectives run on at most ``threads`` workers named cotgd-model (each with one
    torch thread); a single run computes on the caller's thread with the config's thread count;
    a run without ``threads`` takes as many workers as this process has cores, up to M."""
    import threading
    names, counts = [], []
    original = engine.objective

    def spy(*a, **kw):
        names.append(threading.current_thread().name)
        counts.append(torch.get_num_threads())
        return original(*a, **kw)

    monkeypatch.setattr(engine, "objective", spy)
    train_models(_config(threads=2), seeds=[0, 1, 2])
    assert len(names) == 18 and all(n.startswith("cotgd-model") for n in names) and len(set(names)) == 2
    names.clear()
    train(_config(threads=3))
    assert set(names) == {threading.current_thread().name} and set(counts[-6:]) == {3}
    seen = thread_spy(monkeypatch)
    torch.set_num_threads(2)
    train_models(_config(threads=2), seeds=[0, 1])
    assert seen == [1] * 6                      # the caller's thread too: one per worker
    assert torch.get_num_threads() == 2
    cores = len(os.sched_getaffinity(0))
    assert engine.worker_threads(_config(), 64) == min(cores, 64)
    assert engine.worker_threads(_config(threads=5), 1) == 1
    assert engine.worker_threads(_config(threads=1), 3) == 1


def test_prefetch_draws_on_the_cotgd_data_thread_only_when_asked():
    """A CPU run with prefetch and fresh prompts draws its next batch on a cotgd-data thread; one
    without prefetch, or on a pool of prompts, draws inline."""
    import threading

    def data_threads(**kw):
        before = {t.ident for t in threading.enumerate() if t.name.startswith("cotgd-data")}
        e = Engine([_config(**kw)])
        e.batches.next(more=True)
        now = {t.ident for t in threading.enumerate() if t.name.startswith("cotgd-data")}
        e.batches.shutdown()
        return len(now - before)

    assert data_threads(prefetch=True) == 1
    assert data_threads(prefetch=False) == 0
    assert data_threads(prefetch=True, pool=16) == 0


# ------------------------------------------------------------------------------ the progress bar and timings
def _counts(err: str) -> set:
    """The iteration counts "i/6" the bar showed."""
    import re
    return {int(i) for i in re.findall(r"(\d+)/6\b", err)}


def test_the_progress_bar_shows_the_run(capsys, monkeypatch):
    """With progress the bar on stderr counts the iterations of the run (from the checkpoint's on
    resume), is named mode/param (x M for several models), shows the evaluation losses of the
    first four models, and is cleared at the end; without, nothing is written; with None it shows
    on a terminal."""
    results = train_models(_config(progress=True), seeds=[0, 1, 2, 3, 4])
    err = capsys.readouterr().err
    assert "cot/full x5:" in err and {0, 6} <= _counts(err) and max(_counts(err)) == 6
    losses = [f"{r.history[-1]['eval_loss']:.4g}" for r in results]
    assert ("eval " + " ".join(losses[:4])) in err and " ".join(losses) not in err
    assert not err.endswith("\n") and err.rsplit("\r", 1)[-1].strip() == ""
    train_models(_config(progress=True), seeds=[0, 1])
    assert "cot/full x2:" in capsys.readouterr().err
    train(_config(progress=True))
    err = capsys.readouterr().err
    assert "cot/full:" in err and " x1" not in err and "XX" not in err
    train(_config(progress=False))
    assert capsys.readouterr().err == ""

    class Terminal:
        def __init__(self, stream):
            self.stream = stream

        def isatty(self):
            return True

        def __getattr__(self, name):
            return getattr(self.stream, name)

    monkeypatch.setattr(engine.sys, "stderr", Terminal(engine.sys.stderr))
    train(_config(progress=None, mode="nocot", param="sparse"))
    assert "nocot/sparse:" in capsys.readouterr().err


def test_the_progress_bar_of_a_resumed_run_starts_at_the_checkpoint(tmp_path, monkeypatch, capsys):
    config = _config(progress=True, checkpoint_every=4, out=str(tmp_path / "run"))
    crash_at(monkeypatch, 5)
    with pytest.raises(KeyboardInterrupt):
        train(config)
    monkeypatch.undo()
    capsys.readouterr()
    resume(tmp_path / "run")
    err = capsys.readouterr().err
    assert min(_counts(err)) == 4 and max(_counts(err)) == 6


def test_train_seconds_count_the_steps_and_not_the_evaluations(monkeypatch):
    """Timing: with each step made 20 ms longer and each evaluation 60 ms longer, a run of 6
    steps and 3 evaluations reports train_seconds >= 0.12 (every step, in both windows), at
    least 0.12 (the two evaluations inside the loop) below seconds, ms_per_iteration its share,
    and seconds at most the wall time of the call."""
    import time
    step, evaluate = engine.Engine.step, engine.Engine.evaluate

    def slow_step(self):
        time.sleep(0.02)
        step(self)

    def slow_evaluate(self):
        time.sleep(0.06)
        return evaluate(self)

    monkeypatch.setattr(engine.Engine, "step", slow_step)
    monkeypatch.setattr(engine.Engine, "evaluate", slow_evaluate)
    t0 = time.perf_counter()
    r = train(_config())
    wall = time.perf_counter() - t0
    s = r.summary
    assert 0.12 <= s["train_seconds"] <= s["seconds"] - 0.12
    assert s["seconds"] <= wall
    assert s["ms_per_iteration"] == pytest.approx(1e3 * s["train_seconds"] / 6, rel=1e-12)
    rows = r.history
    assert rows[0]["train_seconds"] == 0.0 and 0.06 <= rows[1]["train_seconds"] < rows[2]["train_seconds"]
    assert rows[2]["train_seconds"] >= 0.12 and rows[2]["train_seconds"] <= s["train_seconds"]


def test_manifest_timings_at_every_checkpoint(tmp_path, monkeypatch):
    """The manifest at the start has no training time yet; at each checkpoint (every iteration)
    ms_per_iteration is 1000 train_seconds / iteration."""
    seen = []
    checkpoint = engine.Engine.checkpoint

    def watched(self):
        checkpoint(self)
        seen.append(json.loads((tmp_path / "run" / "manifest.json").read_text()))

    crash_at(monkeypatch, 0)
    with pytest.raises(KeyboardInterrupt):
        train(_config(out=str(tmp_path / "run")))
    m = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert (m["status"], m["iteration"], m["checkpoint_iteration"]) == ("interrupted", 0, None)
    assert m["timings"]["train_seconds"] == 0.0 and m["timings"]["ms_per_iteration"] == 0.0
    assert 0 < m["timings"]["seconds"]
    monkeypatch.undo()
    monkeypatch.setattr(engine.Engine, "checkpoint", watched)
    train(_config(out=str(tmp_path / "run"), iters=3, checkpoint_every=1), overwrite=True)
    assert [m["iteration"] for m in seen] == [1, 2, 3, 3]
    for m in seen:
        t = m["timings"]
        assert t["train_seconds"] > 0 and t["ms_per_iteration"] == pytest.approx(1e3 * t["train_seconds"] / m["iteration"],
                                                                                 rel=1e-12)


# ------------------------------------------------------------------------------ run directories and manifests
def test_a_directory_holding_a_run_is_refused_naming_it(tmp_path, monkeypatch):
    """A new run into a directory that holds one is RunExists (nothing touched), one line saying
    what it holds (status, models, iteration reached of the configured) and what to do; an
    unreadable run directory too.  ``held_run`` is None for a missing, empty or foreign one."""
    done, cut, odd = str(tmp_path / "done"), str(tmp_path / "cut"), str(tmp_path / "odd")
    train(_config(out=done))
    crash_at(monkeypatch, 4)
    with pytest.raises(KeyboardInterrupt):
        train_models(_config(out=cut), ks=[1, 2])
    monkeypatch.undo()
    for name in ("", "models/00-seed0-k1-eta0.4", "models/01-seed0-k2-eta0.4"):
        m = json.loads((tmp_path / "cut" / name / "manifest.json").read_text())
        assert (m["status"], m["iteration"], m["checkpoint_iteration"]) == ("interrupted", 4, None)
    os.makedirs(odd)
    (tmp_path / "odd" / "metrics.jsonl").write_text("")
    before = {p: os.stat(os.path.join(done, p)).st_mtime_ns for p in os.listdir(done)}
    force = "or overwrite it with --force (library: overwrite=True)"
    for call, out, held, keep in [
            (lambda: train(_config(out=done)), done, "a finished run (iteration 6 of 6)",
             f"read it with training.load_run({done!r})"),
            (lambda: train_models(_config(out=done), ks=[1, 2]), done, "a finished run (iteration 6 of 6)",
             f"read it with training.load_run({done!r})"),
            (lambda: train_models(_config(out=done, iters=9)), done, "a finished run (iteration 6 of 6)",
             f"read it with training.load_run({done!r})"),
            (lambda: train(_config(out=cut)), cut, "an interrupted run (2 models, iteration 4 of 6)",
             f"continue it with cotgd train --resume {cut}"),
            (lambda: train(_config(out=odd)), odd, "an unreadable run (iteration ? of None)",
             f"continue it with cotgd train --resume {odd}")]:
        with pytest.raises(RunExists) as info:
            call()
        assert str(info.value) == f"{out!r} holds {held}; {keep}, {force}"
        assert engine.held_run(out) == held
    assert {p: os.stat(os.path.join(done, p)).st_mtime_ns for p in os.listdir(done)} == before
    m = json.loads((tmp_path / "done" / "manifest.json").read_text())
    (tmp_path / "done" / "manifest.json").write_text(json.dumps(dict(m, status="failed", iteration=5)))
    assert engine.held_run(done) == "a failed run (iteration 5 of 6)"
    with pytest.raises(RunExists, match=r"read it with training\.load_run"):
        train(_config(out=done))
    (tmp_path / "odd" / "manifest.json").write_text(json.dumps({"status": "running", "configs": [3, 4], "iteration": 2}))
    assert engine.held_run(odd) == "a running run (2 models, iteration 2 of None)"
    os.makedirs(tmp_path / "empty")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("not a run")
    for out in (tmp_path / "missing", tmp_path / "empty", tmp_path / "notes"):
        assert engine.held_run(str(out)) is None
    train(_config(out=str(tmp_path / "notes")))
    assert (tmp_path / "notes" / "readme.txt").read_text() == "not a run"


def test_overwrite_starts_afresh(tmp_path):
    """overwrite=True replaces a run: the previous run's files (a longer checkpoint, its models'
    directories, temporaries of a killed write) are gone, the new run's are its own."""
    out = tmp_path / "run"
    train_models(_config(out=str(out), checkpoint_every=2), ks=[1, 2])
    (out / ".tmp-abc").write_text("half a file")
    with pytest.raises(RunExists):
        train_models(_config(out=str(out)), ks=[1, 3])
    result = train_models(_config(out=str(out), iters=3, eval_every=3), overwrite=True)[0]
    assert sorted(os.listdir(out)) == ["checkpoint.pt", "manifest.json", "metrics.jsonl", "params.pt", "summary.json"]
    assert result.config.out == str(out) and load_run(out).config == result.config
    assert torch.load(out / "checkpoint.pt", weights_only=False)["iteration"] == 3
    again = train_models(_config(out=str(out)), ks=[1, 2], overwrite=True)
    assert sorted(os.listdir(out)) == ["checkpoint.pt", "manifest.json", "models"]
    assert [r.config.k for r in again] == [1, 2]
    train(_config(out=str(out), seed=3), overwrite=True)
    assert sorted(os.listdir(out)) == ["checkpoint.pt", "manifest.json", "metrics.jsonl", "params.pt", "summary.json"]
    assert json.loads((out / "manifest.json").read_text())["seed"] == 3


def test_manifests_of_single_and_many_model_runs(tmp_path):
    """The manifest records status, device, settings, threads, provenance, iteration, checkpoint
    and timings, with the config and seed of a single run, or the configs and model directories
    of a run of several (each model's own manifest: its config, seed, index, M and status)."""
    import platform

    from training.device import run_settings
    from training.rundir import versions
    train(_config(out=str(tmp_path / "one"), threads=2))
    m = json.loads((tmp_path / "one" / "manifest.json").read_text())
    c = _config(out=str(tmp_path / "one"), threads=2)
    assert (m["status"], m["device"], m["device_record"]["type"]) == ("finished", "cpu", "cpu")
    assert m["settings"] == run_settings() and m["torch_threads"] == 2
    assert m["versions"] == versions() and m["platform"] == platform.platform() and "git_commit" in m
    assert (m["iteration"], m["checkpoint_iteration"]) == (6, 6)
    assert m["config"] == c.to_dict() and m["seed"] == 0
    assert not {"configs", "models", "model_index", "error"} & set(m)
    assert set(m["timings"]) == {"seconds", "train_seconds", "ms_per_iteration"}
    base = _config(out=str(tmp_path / "many"), threads=1)
    results = train_models(base, seeds=[0, 2], ks=[1])
    m = json.loads((tmp_path / "many" / "manifest.json").read_text())
    names = ["00-seed0-k1-eta0.4", "01-seed2-k1-eta0.4"]
    assert m["status"] == "finished" and m["models"] == names and m["torch_threads"] == 1
    assert m["configs"] == [r.config.to_dict() for r in results] and "config" not in m and "seed" not in m
    assert [r.config.out for r in results] == [None, None]          # the run's directory is base's
    for j, (name, r) in enumerate(zip(names, results, strict=True)):
        own = json.loads((tmp_path / "many" / "models" / name / "manifest.json").read_text())
        assert own == dict(m, config=r.config.to_dict(), seed=r.config.seed, configs=None, model_index=j, models=2,
                           status="finished")


def test_a_failing_model_fails_its_run_and_only_its_own_manifest(tmp_path):
    """A model whose final evaluation diverges on most prompts (isotropic init at GD step 3 for 8
    steps, not trained) is failed in its summary and manifest, with the verdict's message; the
    run's manifest says failed; the model of k 1 finished."""
    base = _config(param="isotropic", init_ab=[-3.0, 1.0], lr=1e-9, iters=1, eval_every=1, out=str(tmp_path / "run"))
    results = train_models(base, ks=[1, 8])
    assert [r.summary["status"] for r in results] == ["finished", "failed"]
    for r in results:
        verdict = judge(r.config, r.summary["eval"], iterations=1, same_prompts=r.summary["theory_same_prompts"])
        assert r.summary["verdict"] == verdict
    assert results[1].summary["verdict"]["message"].startswith("training failed: the trained model diverges on")
    m = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert m["status"] == "failed"
    statuses = [json.loads((tmp_path / "run" / "models" / name / "manifest.json").read_text())["status"]
                for name in m["models"]]
    assert statuses == ["finished", "failed"]
    one = train(dataclasses.replace(base, k=8, out=str(tmp_path / "one")))
    assert one.summary["status"] == "failed"
    assert json.loads((tmp_path / "one" / "manifest.json").read_text())["status"] == "failed"
    assert json.loads((tmp_path / "one" / "summary.json").read_text())["verdict"] == one.summary["verdict"]


@pytest.mark.parametrize("models", [1, 2])
def test_isotropic_init_ab_is_every_models_start(models):
    """init_ab = [a, b] starts every model at V31 = a I, W13 = b I."""
    base = _config(param="isotropic", init_ab=[-0.7, 0.3])
    e = Engine([dataclasses.replace(base, seed=s) for s in range(models)])
    assert e.model.a.tolist() == pytest.approx([-0.7] * models) and e.model.b.tolist() == pytest.approx([0.3] * models)
    e.batches.shutdown()


def test_a_failed_manifest_write_does_not_hide_what_stopped_the_run(tmp_path, monkeypatch):
    """When the manifest cannot be written as the run stops, the exception that stopped it
    (here Ctrl-C) is what the caller sees."""
    write = engine.write_manifest

    def failing(run_dir, manifest):
        if manifest["status"] != "running":
            raise OSError("disk full")
        write(run_dir, manifest)

    monkeypatch.setattr(engine, "write_manifest", failing)
    crash_at(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        train(_config(out=str(tmp_path / "run")))
    with pytest.raises(KeyboardInterrupt):
        train_models(_config(out=str(tmp_path / "many")), ks=[1, 2])


@pytest.mark.parametrize("where", ["W", "V"])
def test_a_checkpoint_of_non_finite_parameters_is_refused(tmp_path, where):
    """Training: parameters that became non-finite between evaluations are caught at the next
    checkpoint (iteration 2, rows every 3): TrainingDiverged, no checkpoint written, the manifest
    says diverged."""
    def poison(eng, loss):
        if eng.iteration == 2:
            with torch.no_grad():
                getattr(eng.model, where)[0, 1, 1] = float("inf")

    c = _config(checkpoint_every=2, out=str(tmp_path / "run"))
    e = Engine([c], out=c.out, on_step=poison)
    engine._fresh_run_dir(c.out, e, False)
    with torch_threads_kept(), pytest.raises(TrainingDiverged) as info:
        e.run()
    assert str(info.value) == ("training diverged at iteration 2: non-finite parameters; "
                               "no checkpoint was written before it")
    assert not (tmp_path / "run" / "checkpoint.pt").exists()
    assert json.loads((tmp_path / "run" / "manifest.json").read_text())["status"] == "diverged"


def test_a_run_whose_start_is_not_finite_diverges_at_iteration_0(tmp_path):
    e = Engine([_config()])
    with torch.no_grad():
        e.model.W[0, 0, 0] = float("nan")
    with pytest.raises(TrainingDiverged, match="^training diverged at iteration 0: non-finite parameters; no "):
        e.run()


def test_a_checkpoint_of_another_run_with_the_same_shapes_is_refused(tmp_path, monkeypatch):
    """File check: a checkpoint of a run of another seed (same shapes) put into a run is refused
    as another run's, naming it; one whose model does not load names the checkpoint and the
    cause, in one line of at most 200 characters of it."""
    for seed in (0, 1):
        crash_at(monkeypatch, 5)
        with pytest.raises(KeyboardInterrupt):
            train(_config(seed=seed, checkpoint_every=4, out=str(tmp_path / f"s{seed}")))
        monkeypatch.undo()
    path = tmp_path / "s0" / "checkpoint.pt"
    os.replace(tmp_path / "s1" / "checkpoint.pt", path)
    with pytest.raises(RunFileError) as info:
        resume(tmp_path / "s0")
    assert str(info.value) == f"cannot load {path}: it belongs to another run: its config differs from manifest.json's"
    crash_at(monkeypatch, 5)
    with pytest.raises(KeyboardInterrupt):
        train(_config(seed=1, checkpoint_every=4, out=str(tmp_path / "s2")))
    monkeypatch.undo()
    path = tmp_path / "s2" / "checkpoint.pt"
    state = torch.load(path, weights_only=False)
    state["model"]["V"], state["model"]["W"] = torch.zeros(1, 5, 7), torch.zeros(1, 7, 5)
    torch.save(state, path)
    with pytest.raises(RuntimeError) as exc:
        Engine([_config(seed=1)]).load_state(state)
    cause = " ".join(str(exc.value).split())
    assert len(cause) > 200
    with pytest.raises(RunFileError) as info:
        resume(tmp_path / "s2")
    assert str(info.value) == f"cannot load {path}: it does not fit its config: {cause[:200]}"


def test_models_of_one_run_differing_in_another_field_are_named():
    """Bad input: the refusal names the model and the fields in which it differs from model 0."""
    a = _config()
    with pytest.raises(ValueError) as info:
        Engine([a, dataclasses.replace(a, seed=1), dataclasses.replace(a, seed=2, n=6, batch=4)])
    assert str(info.value) == ("the models of one run may differ only in seed, k, eta; "
                               "model 2 differs from model 0 in n, batch")
    with pytest.raises(ValueError) as info:
        Engine([a, dataclasses.replace(a, lr=0.1, k=3)])
    assert str(info.value).endswith("model 1 differs from model 0 in lr")


def test_an_unstable_step_warns_for_cot_only():
    """A CoT run whose eta is past the stable step warns before it starts (train and
    train_models); a stable one, and nocot or looped runs (which do not read eta), do not."""
    with pytest.warns(RuntimeWarning, match="eta = 3 is past the stable step"):
        train(_config(eta=3.0, iters=1, eval_every=1))
    with pytest.warns(RuntimeWarning, match="eta = 3 is past the stable step"):
        train_models(_config(eta=3.0, iters=1, eval_every=1), ks=[1, 2])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        train(_config(iters=1, eval_every=1, eta=0.2))
        train(_config(mode="nocot", eta=3.0, iters=1, eval_every=1))
        train_models(_config(mode="looped", eta=3.0, iters=1, eval_every=1), ks=[1, 2])


def test_deprecated_aliases_keep_their_names_and_say_what_replaces_them():
    """A deprecated alias (``_deprecated``, as sweep_configs and sweep_workers are made) has its
    old name and a docstring naming the new function, and passes positional and keyword
    arguments through, warning."""
    assert engine.sweep_configs.__name__ == engine.sweep_configs.__qualname__ == "sweep_configs"
    assert engine.sweep_workers.__doc__ == "Deprecated name of ``worker_threads``."
    assert engine.sweep_configs.__doc__ == "Deprecated name of ``model_grid_configs``."
    alias = engine._deprecated("grid_of", model_grid_configs)
    assert alias.__name__ == alias.__qualname__ == "grid_of"
    assert alias.__doc__ == "Deprecated name of ``model_grid_configs``."
    base = _config()
    with pytest.warns(DeprecationWarning, match="training.engine.grid_of is deprecated; use model_grid_configs"):
        assert alias(base, seeds=[0, 1], ks=[2]) == model_grid_configs(base, seeds=[0, 1], ks=[2])


def test_train_models_of_one_model_is_train_with_the_run_directory(tmp_path):
    """train_models without a grid is train of base (its run directory included); an existing
    run is refused unless overwrite."""
    [r] = train_models(_config(out=str(tmp_path / "run")))
    assert r.config.out == str(tmp_path / "run") and r.summary["config"]["out"] == str(tmp_path / "run")
    assert "models" not in json.loads((tmp_path / "run" / "manifest.json").read_text())
    with pytest.raises(RunExists):
        train_models(_config(out=str(tmp_path / "run")))
    with pytest.raises(RunExists):
        train_models(_config(out=str(tmp_path / "run")), ks=[1, 2])
    [again] = train_models(_config(out=str(tmp_path / "run")), overwrite=True)
    assert torch.equal(again.V, r.V)


def test_a_moved_run_directory_resumes_where_it_is_now(tmp_path, monkeypatch):
    """Training: a run killed before or after its first checkpoint and then moved resumes in its
    new directory (its results' config says so) to the uninterrupted run; without its manifest it
    still resumes from the checkpoint."""
    whole = train(_config(checkpoint_every=4, out=str(tmp_path / "whole")))
    for crash in (2, 5):
        crash_at(monkeypatch, crash)
        with pytest.raises(KeyboardInterrupt):
            train(_config(checkpoint_every=4, out=str(tmp_path / f"cut{crash}")))
        monkeypatch.undo()
        moved = tmp_path / f"moved{crash}"
        os.replace(tmp_path / f"cut{crash}", moved)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            r = resume(moved)
        assert torch.equal(r.V, whole.V) and torch.equal(r.W, whole.W)
        assert r.config.out == str(moved) and load_run(moved).config.out == str(moved)
        assert json.loads((moved / "manifest.json").read_text())["config"]["out"] == str(moved)
    crash_at(monkeypatch, 5)
    with pytest.raises(KeyboardInterrupt):
        train(_config(checkpoint_every=4, out=str(tmp_path / "bare")))
    monkeypatch.undo()
    os.unlink(tmp_path / "bare" / "manifest.json")
    r = resume(tmp_path / "bare")
    assert torch.equal(r.V, whole.V) and json.loads((tmp_path / "bare" / "manifest.json").read_text())["status"] == \
        "finished"


def test_a_bad_config_in_the_checkpoint_names_the_checkpoint(tmp_path, monkeypatch):
    crash_at(monkeypatch, 5)
    with pytest.raises(KeyboardInterrupt):
        train(_config(checkpoint_every=4, out=str(tmp_path / "run")))
    monkeypatch.undo()
    path = tmp_path / "run" / "checkpoint.pt"
    state = torch.load(path, weights_only=False)
    state["configs"][0]["d"] = 0
    torch.save(state, path)
    with pytest.raises(RunFileError) as info:
        resume(tmp_path / "run")
    assert str(info.value).startswith(f"cannot load {path}: it holds a bad run config: d must be")


@pytest.mark.parametrize("models", [1, 2])
def test_an_engine_run_again_stands_where_it_is(models):
    """``Engine.run`` trains to iters from wherever the engine stands: run again, it trains
    nothing and returns the same models and rows."""
    base = _config(threads=2)
    e = Engine([dataclasses.replace(base, seed=s) for s in range(models)])
    with torch_threads_kept():
        first = e.run()
        again = e.run()
    for a, b in zip(first, again, strict=True):
        assert torch.equal(a.V, b.V) and torch.equal(a.W, b.W) and a.history == b.history
        assert stripped(a.summary) == stripped(b.summary)


def test_worker_threads_follow_the_cores_this_process_may_use(monkeypatch):
    """Without ``threads`` a run of M models takes one worker per core this process may use (its
    CPU affinity, as taskset sets it), at most M; where the system has no affinity call, every
    CPU, and one when their number is unknown."""
    cores = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, {min(cores)})
        assert engine.worker_threads(_config(), 4) == 1
    finally:
        os.sched_setaffinity(0, cores)
    assert engine.worker_threads(_config(), 64) == len(cores)
    monkeypatch.delattr(engine.os, "sched_getaffinity")
    monkeypatch.setattr(engine.os, "cpu_count", lambda: 3)
    assert engine.worker_threads(_config(), 2) == 2 and engine.worker_threads(_config(), 8) == 3
    monkeypatch.setattr(engine.os, "cpu_count", lambda: None)
    assert engine.worker_threads(_config(), 8) == 1


def test_grid_configs_have_no_run_directory_and_the_structure_step():
    """Each model of a grid is base with its (seed, eta, k), without a run directory of its own;
    the structure is compared with eta (cot) or the theory's step (None without one)."""
    base = _config(out="somewhere")
    configs = model_grid_configs(base, seeds=[0, 1], etas=[0.3], ks=[1, 2])
    assert [(c.seed, c.eta, c.k, c.out) for c in configs] == [(0, 0.3, 1, None), (0, 0.3, 2, None),
                                                             (1, 0.3, 1, None), (1, 0.3, 2, None)]
    assert all(dataclasses.replace(c, seed=0, eta=0.4, k=2, out="somewhere") == base for c in configs)
    assert engine.structure_step(_config(eta=0.3), None) == 0.3
    assert engine.structure_step(_config(mode="nocot"), None) is None
    assert engine.structure_step(_config(mode="looped"), {"step": 0.25}) == 0.25
    assert engine.structure_step(_config(mode="looped"), {"step": None}) is None


@pytest.mark.parametrize("kwargs, name", [
    ({"seeds": []}, "seeds"), ({"seeds": [-1]}, "seeds"), ({"seeds": [0, 0]}, "seeds"), ({"seeds": 3}, "seeds"),
    ({"ks": [0]}, "ks"), ({"ks": []}, "ks"), ({"etas": [0.0]}, "etas"), ({"etas": []}, "etas")])
def test_a_bad_grid_argument_is_named_first(kwargs, name):
    """Bad input: the refusal's message starts with the argument's name."""
    with pytest.raises(ValueError) as info:
        model_grid_configs(_config(), **kwargs)
    assert str(info.value).startswith(f"{name} must")


def test_an_errors_message_in_the_manifest_is_one_line_of_at_most_300_characters(tmp_path, monkeypatch):
    """A run that fails records the exception in its manifest as the type and the message with its
    whitespace collapsed, cut at 300 characters (what ``cotgd status`` and sweeps show)."""
    step = engine.Engine.step
    message = "the disk\n  is on   fire " + "x" * 400

    def failing(self):
        if self.iteration == 2:
            raise RuntimeError(message)
        step(self)

    monkeypatch.setattr(engine.Engine, "step", failing)
    with pytest.raises(RuntimeError):
        train(_config(out=str(tmp_path / "run")))
    m = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert (m["status"], m["iteration"]) == ("error", 2)
    assert m["error"] == "RuntimeError: " + ("the disk is on fire " + "x" * 400)[:300]


@pytest.mark.parametrize("param", ["full", "sparse"])
def test_each_model_starts_as_the_documented_draw_at_its_own_init_scale(param):
    """Every model of a run, alone or batched, starts as ``LSA(d, param, init_scale=its
    init_scale, generator=seeded_generator(its seed, 'init'))`` (training/engine.py): a user
    rebuilds a run's initial model from its config, and a scale they set is the one used."""
    from training.data import seeded_generator
    from training.model import LSA
    base = _config(param=param, init_scale=0.37)
    for configs in ([base], model_grid_configs(base, seeds=[3, 5])):
        V, W = Engine(configs).model.matrices()
        for j, c in enumerate(configs):
            own = LSA(c.d, c.param, init_scale=0.37, dtype=torch.float32, generator=seeded_generator(c.seed, "init"))
            V1, W1 = own.matrices()
            assert torch.equal(V[j], V1[0]) and torch.equal(W[j], W1[0]), (c.seed, len(configs))
    default = Engine([_config(param=param)]).model.matrices()[0]
    assert not torch.equal(default, Engine([base]).model.matrices()[0])      # 0.37 is not the default


def test_one_model_runs_its_single_run_whatever_fused_models_says():
    """A run of one model is its single run whether fused_models is 'fused', 'loop' or 'auto'
    (training/engine.py fused_path): the same parameters, bit for bit."""
    runs = [train(_config(fused_models=mode, iters=4)) for mode in ("loop", "fused", "auto")]
    for r in runs[1:]:
        assert torch.equal(r.V, runs[0].V) and torch.equal(r.W, runs[0].W), r.config.fused_models
