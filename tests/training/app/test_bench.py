"""The benchmark's baseline (training/app/baseline.py) is the same computation as the project's
objective, so the speed ratio compares like with like; and ``run_bench`` reports every figure.
No timed assertions: the benchmark only reports."""
import json
import math

import torch
from hypothesis import given
from hypothesis import strategies as st

from theory import Layout
from training.app import bench
from training.app.baseline import StraightforwardTrainer, straightforward_cot_loss, straightforward_gd_targets
from training.data import gd_iterates, make_batch, sample_prompts, seeded_generator
from training.model import LSA
from training.kernels import cot_loss


@given(d=st.integers(1, 4), n=st.integers(1, 6), k=st.integers(1, 4), M=st.integers(1, 2),
       eta=st.floats(0.05, 0.6), seed=st.integers(0, 2**31))
def test_baseline_loss_and_gradient_equal_the_objective(d, n, k, M, eta, seed):
    """Numeric float64: the literal column-by-column loss of the baseline equals
    kernels.cot_loss on the same prompts, and so do their gradients in V and W."""
    g = torch.Generator().manual_seed(seed)
    D = Layout(d).D
    prompts = sample_prompts(5, d, n, generator=g, dtype=torch.float64)
    V = (0.5 * torch.randn(M, D, D, generator=g, dtype=torch.float64)).requires_grad_()
    W = (0.5 * torch.randn(M, D, D, generator=g, dtype=torch.float64)).requires_grad_()
    slow = straightforward_cot_loss(V, W, prompts, eta, k)
    fast = cot_loss(V, W, make_batch(prompts, eta, k), n)
    torch.testing.assert_close(slow, fast, rtol=1e-10, atol=1e-12)
    weights = torch.arange(1.0, M + 1, dtype=torch.float64)              # a different weight per model
    for a, b in zip(torch.autograd.grad((slow * weights).sum(), (V, W)),
                    torch.autograd.grad((fast * weights).sum(), (V, W))):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)


@given(d=st.integers(1, 4), n=st.integers(1, 6), k=st.integers(0, 6), seed=st.integers(0, 2**31))
def test_baseline_gd_targets_equal_gd_iterates(d, n, k, seed):
    """Numeric float64: GD on X, y by the loop of the baseline = data.gd_iterates on S, w*."""
    p = sample_prompts(4, d, n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    loop = torch.stack(straightforward_gd_targets(p.X, p.y, 0.3, k), dim=-2)
    torch.testing.assert_close(loop, gd_iterates(p.S, p.w_star, 0.3, k), rtol=1e-10, atol=1e-12)


def test_baseline_trainer_sees_the_runs_init_and_data():
    """Numeric float32: the baseline trainer starts from train's init for the seed, draws train's
    first batch, and its first loss is cot_loss of that init on that batch."""
    seed, d, n, k = 4, 3, 6, 2
    trainer = StraightforwardTrainer(d=d, n=n, k=k, eta=0.3, batch=32, seed=seed)
    init = LSA(d, "full", generator=seeded_generator(seed, "init"))
    V0, W0 = (A.detach().clone() for A in init.matrices())
    torch.testing.assert_close(trainer.model.V.detach(), V0, rtol=0, atol=0)
    prompts = sample_prompts(32, d, n, generator=seeded_generator(seed, "data"))
    expected = cot_loss(V0, W0, make_batch(prompts, 0.3, k), n)
    torch.testing.assert_close(trainer.step(), expected, rtol=1e-5, atol=1e-7)
    assert not torch.equal(trainer.model.V.detach(), V0)                  # and it took a step


def test_run_bench_quick_reports_every_figure(monkeypatch):
    """Smoke (no timing thresholds): run_bench(quick=True), with its repetitions cut to the
    minimum, returns every figure of the issue as positive finite numbers, the rollout keyed by k
    from 10 to 160; the dict is JSON-ready and format_bench names every figure."""
    monkeypatch.setitem(bench.PLAN, True, {"reps": 1, "train_s": 0.0, "baseline_s": 0.0, "rollout_reps": 1,
                                           "mc_samples": 500, "mc_reps": 1, "batched_reps": 1, "batched_s": 0.0,
                                           "single_s": 0.0, "thread_reps": 1, "thread_s": 0.0})
    monkeypatch.setattr(bench, "BENCH_CONFIG", {**bench.BENCH_CONFIG, "batch": 16})
    small_sweep = bench.bench_sweep
    monkeypatch.setattr(bench, "bench_sweep", lambda device, quick: small_sweep(device, quick, cells=2, seconds=0.3))
    figures = bench.run_bench(device="cpu", quick=True)
    for key in ("train_ms_per_iter", "baseline_ms_per_iter", "speedup_vs_baseline", "batched_models_time_ratio",
                "fused_vs_loop_step_ratio", "mc_prompts_per_s", "train_ms_per_iter_no_prefetch", "looped_ms_per_iter"):
        assert math.isfinite(figures[key]) and figures[key] > 0, key
    assert figures["looped"]["arithmetic_bound_ms"] > 0 and figures["looped"]["gmac_per_iter"] > 0
    assert sorted(figures["rollout_us_per_step"]) == [10, 20, 40, 80, 160]
    for mapping in ("rollout_us_per_step", "rollout_us_per_step_by_n", "mc_prompts_per_s_by_n",
                    "train_ms_per_iter_by_threads"):
        assert all(math.isfinite(v) and v > 0 for v in figures[mapping].values()), mapping
    assert figures["batched_models"]["M"] == 12 and figures["batched_models"]["work_ratio"] == 7.5
    assert figures["batched_models"]["workers"] >= 1 and figures["batched_models"]["batched_ms_per_iter_one_worker"] > 0
    assert figures["torch_threads"] >= 1
    json.dumps(figures)
    text = bench.format_bench(figures)
    for name in ("train_ms_per_iter", "baseline_ms_per_iter", "speedup_vs_baseline", "rollout_us_per_step",
                 "batched_models_time_ratio", "fused_vs_loop_step_ratio", "mc_prompts_per_s", "looped_ms_per_iter",
                 "sweep_cells_per_minute"):
        assert name in text
    assert set(figures["sweep_cells_per_minute"]) == {"local-1", "local-2", "dask-2", "dask-external-2"}
