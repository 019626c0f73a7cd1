"""Speed figures of the toolkit: ``run_bench(device, quick) -> dict`` and ``format_bench(dict)``,
behind ``cotgd bench``.  Figures only, no pass / fail.

* ``train_ms_per_iter``: the project's training (``engine.train`` at the paper's configuration,
  docs/theory.md section 8: CoT, full parameters, d 10, n 20, k 10, eta 0.4, batch 1000, Adam), read
  from the run's own ``ms_per_iteration`` (the optimisation loop alone); by default the next batch
  is drawn on a background thread (``TrainConfig.prefetch``), and the details give the time with
  it drawn inline, one core only, as the baseline runs;
* ``baseline_ms_per_iter``: the straightforward implementation of the formula
  (``baseline.StraightforwardTrainer``: GD targets by a loop of GD steps on X, y; Z_i grown
  column by column; ``f(Z) = Z + V Z (Z^T W Z) / n`` in full at every CoT step), same
  configuration, device and torch threads; ``speedup_vs_baseline`` is their ratio;
* ``rollout_us_per_step``: ``kernels.cot_rollout`` (the running D x D statistic), microseconds
  per generated CoT step per 1000 prompts, for k = 10 .. 160, and at k = 40 for several n;
* ``batched_models_time_ratio``: ``engine.train_models`` of Figure 3's 12 models (k = 10, 20,
  30, 40 x seeds 0, 1, 2) per iteration (on the sweep's default workers, one per core), over one
  model trained alone with the largest k (40) at its own default (one torch thread); the details
  give the single-model times for every k, the sweep on one worker and the ratio to training
  the 12 one after the other.  The sweep holds 7.5x the CoT steps of the k = 40 model (``work_ratio``)
  and about 6.3x its arithmetic, and no product is shared between models with different
  parameters, so on a CPU the ratio cannot fall below about 6.3 over the parallel speedup of the
  cores;
* ``fused_vs_loop_step_ratio``: the same 12-model sweep with its step fused (one objective call
  for all models, ``fused_models='fused'``, the default on CUDA; docs/architecture.md section 5)
  over the loop path (one call per model, the default on a CPU, on its default workers), ms per
  iteration, measured interleaved with the sweep above; the fused step pads every model to
  k = 40 (1.6x the CoT steps, 2.1x the k x k triangle of the loop's);
* ``looped_ms_per_iter``: the full looped model's training step at the paper's configuration,
  and its arithmetic bound (``bench_looped``);
* ``sweep_cells_per_minute``: ``cotgd sweep``'s engines (local-1, local-2, dask-2, and
  dask-external-2, a cluster of separate ``dask scheduler`` / ``dask worker`` processes) on
  identical training cells (``sweep_bench.bench_sweep``);
* ``mc_prompts_per_s``: ``numerics.eval_loss_mc`` at d 10, n 20, k 10 (float64, numpy), and for
  n = 20 .. 160;
* ``help_seconds``: wall seconds of ``cotgd --help`` in a subprocess (interpreter start, imports,
  argument parser), best of ``HELP_REPS``; ``verify_quick_seconds`` (full bench only): wall
  seconds of ``cotgd verify --quick`` in a subprocess, its CPU seconds and exit status in
  ``verify_quick`` (``bench_commands``).

Timing: every figure is a median over repetitions, and the two sides of a ratio are measured in
the same process, interleaved, after a warm-up, with the same torch thread count: the one the
project's training uses (read from a short run's manifest).  On a CPU the training step is also
timed at 1 and 2 threads (``train_ms_per_iter_by_threads``).  The machine's load average is
recorded: other processes on a small machine move every figure.
"""
from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import torch

import numerics

from .baseline import StraightforwardTrainer
from ..engine import worker_threads, train, train_models
from ..rundir import load_average, load_manifest
from .sweep_bench import bench_sweep, format_bench_sweep
from ..data import sample_prompts
from ..device import resolve_device
from ..kernels import cot_rollout
from ..config import PAPER, TrainConfig
from .figures import FIG3_KS

#: The configuration every training figure uses: the paper's experiment (``training.PAPER``).
BENCH_CONFIG = dict(PAPER.problem(), batch=PAPER.batch)
ROLLOUT_KS = (10, 20, 40, 80, 160)
ROLLOUT_NS = (20, 80, 320)
MC_NS = (20, 40, 80, 160)
#: The seeds of the fig3 timing; its ks are the figure's own, ``figures.FIG3_KS``.
FIG3_SEEDS = (0, 1, 2)

#: Repetitions and time budgets (seconds per timed run; iteration counts follow from a pilot run,
#: within [lo, hi]); the whole bench's duration is in the README.
PLAN = {
    True: {"reps": 3, "train_s": 0.3, "baseline_s": 0.3, "rollout_reps": 3, "mc_samples": 20_000, "mc_reps": 3,
           "batched_reps": 2, "batched_s": 1.5, "single_s": 0.3, "thread_reps": 2, "thread_s": 0.3},
    False: {"reps": 7, "train_s": 1.0, "baseline_s": 1.0, "rollout_reps": 7, "mc_samples": 100_000, "mc_reps": 5,
            "batched_reps": 3, "batched_s": 4.0, "single_s": 1.0, "thread_reps": 3, "thread_s": 1.0},
}


def _iters(ms_per_iter: float, seconds: float, lo: int, hi: int) -> int:
    """Iterations that fill ``seconds`` at ``ms_per_iter``, clamped to [lo, hi]."""
    return int(min(hi, max(lo, seconds * 1e3 / max(ms_per_iter, 1e-6))))


def _quiet_config(device: str, iters: int, **fields) -> TrainConfig:
    """A training run of ``iters`` iterations at the paper's configuration whose evaluation and
    theory passes are as small as they can be (they are outside ``ms_per_iteration`` anyway)."""
    return TrainConfig(**{**BENCH_CONFIG, **fields}, iters=iters, eval_every=iters, eval_samples=64,
                       theory_samples=64, structure_samples=16, device=device, progress=False)


def training_threads(device: str) -> int:
    """The torch thread count the project's training runs with by default (``TrainConfig()``
    threads setting), read from the manifest of a two-iteration run."""
    with tempfile.TemporaryDirectory() as tmp:
        train(_quiet_config(device, 2, batch=8, out=tmp))
        return int(load_manifest(tmp)["torch_threads"])


def _train_ms(config: TrainConfig) -> float:
    return float(train(config).summary["ms_per_iteration"])


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _baseline_ms(trainer: StraightforwardTrainer, iters: int, device: torch.device) -> float:
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(iters):
        trainer.step()
    _sync(device)
    return 1e3 * (time.perf_counter() - t0) / iters


def _median(values) -> float:
    return float(statistics.median(values))


def bench_training(device: str, plan: dict) -> dict:
    """Project training vs the straightforward baseline, interleaved (module docstring); also the
    project's training with ``prefetch=False`` (batches drawn inline), which shows what the
    background draw adds."""
    dev = resolve_device(device)
    trainer = StraightforwardTrainer(**BENCH_CONFIG, device=dev)
    base_pilot = _baseline_ms(trainer, 1, dev)                         # warm-up and pilot of both sides
    fast_pilot = _train_ms(_quiet_config(device, 10))
    fast_iters = _iters(fast_pilot, plan["train_s"], 10, 300)
    base_iters = _iters(base_pilot, plan["baseline_s"], 1, 30)
    fast, inline, base = [], [], []
    for _ in range(plan["reps"]):
        fast.append(_train_ms(_quiet_config(device, fast_iters)))
        base.append(_baseline_ms(trainer, base_iters, dev))
        inline.append(_train_ms(_quiet_config(device, fast_iters, prefetch=False)))
    fast_ms, base_ms, inline_ms = _median(fast), _median(base), _median(inline)
    return {"train_ms_per_iter": fast_ms, "baseline_ms_per_iter": base_ms, "speedup_vs_baseline": base_ms / fast_ms,
            "train_ms_per_iter_no_prefetch": inline_ms, "speedup_vs_baseline_no_prefetch": base_ms / inline_ms,
            "train_ms_samples": fast, "baseline_ms_samples": base, "train_ms_samples_no_prefetch": inline,
            "iterations_per_sample": {"train": fast_iters, "baseline": base_iters}}


def bench_looped(device: str, plan: dict) -> dict:
    """The full looped model's training step at the paper's configuration (k = 10 loops) and
    what bounds it: its arithmetic (the Gram recursion ``G <- A G A^T``, ``A = I + V G W``: 4 D^3
    multiply-adds per prompt and loop forward, about twice that backward) over the throughput
    of one batched product of the same shape, (B D x D) @ (D x D), measured alone."""
    dev = resolve_device(device)
    config = dict(mode="looped", param="full")
    iters = _iters(_train_ms(_quiet_config(device, 2, **config)), plan["train_s"], 2, 50)
    ms = _median([_train_ms(_quiet_config(device, iters, **config)) for _ in range(plan["reps"])])
    B, D, k = BENCH_CONFIG["batch"], 2 * BENCH_CONFIG["d"] + 2, BENCH_CONFIG["k"]
    gmac = 3 * 4 * D ** 3 * B * k / 1e9                       # forward + backward (about 2x forward)
    G = torch.randn(B * D, D, device=dev)
    V = torch.randn(D, D, device=dev)
    reps = 200
    G @ V
    _sync(dev)
    t0 = time.perf_counter()
    for _ in range(reps):
        G @ V
    _sync(dev)
    gmac_per_s = reps * B * D ** 3 / 1e9 / (time.perf_counter() - t0)
    return {"looped_ms_per_iter": ms, "looped": {"gmac_per_iter": gmac, "matmul_gmac_per_s": gmac_per_s,
                                                 "arithmetic_bound_ms": 1e3 * gmac / gmac_per_s,
                                                 "iterations_per_sample": iters}}


def bench_threads(device: str, plan: dict) -> dict:
    """Training step at 1 and 2 torch threads (CPU), interleaved: {threads: ms per iteration}."""
    iters = {t: _iters(_train_ms(_quiet_config(device, 3, threads=t)), plan["thread_s"], 3, 200) for t in (1, 2)}
    out = {1: [], 2: []}
    for _ in range(plan["thread_reps"]):
        for threads in out:
            out[threads].append(_train_ms(_quiet_config(device, iters[threads], threads=threads)))
    return {threads: _median(values) for threads, values in out.items()}


def _rollout_us(V, W, stat, k: int, n: int, device: torch.device) -> float:
    _sync(device)
    t0 = time.perf_counter()
    cot_rollout(V, W, stat, k, n)
    _sync(device)
    return 1e6 * (time.perf_counter() - t0) / k * (1000 / stat.shape[0])


def bench_rollout(device: str, plan: dict) -> dict:
    """``cot_rollout`` of Theorem 3.2's parameters (float64, as evaluation runs) on 1000 prompts:
    microseconds per generated step per 1000 prompts, by k (n = 20) and by n (k = 40)."""
    dev = resolve_device(device)
    d, eta = PAPER.d, PAPER.eta
    V, W = (torch.as_tensor(A, dtype=torch.float64, device=dev).unsqueeze(0) for A in numerics.gd_params(d, eta))
    g = torch.Generator(device=dev).manual_seed(0)
    stats = {n: sample_prompts(1000, d, n, generator=g, dtype=torch.float64).data_statistic for n in set(ROLLOUT_NS) | {PAPER.n}}
    cases = [("k", k, PAPER.n) for k in ROLLOUT_KS] + [("n", 40, n) for n in ROLLOUT_NS]
    for _, k, n in cases:                                             # warm-up
        cot_rollout(V, W, stats[n], min(k, 10), n)
    times = {case: [] for case in cases}
    for _ in range(plan["rollout_reps"]):
        for case in cases:
            _, k, n = case
            times[case].append(_rollout_us(V, W, stats[n], k, n, dev))
    return {"rollout_us_per_step": {k: _median(times[("k", k, PAPER.n)]) for k in ROLLOUT_KS},
            "rollout_us_per_step_by_n": {n: _median(times[("n", 40, n)]) for n in ROLLOUT_NS}}


def bench_monte_carlo(plan: dict) -> dict:
    """``numerics.eval_loss_mc`` prompts per second at d 10, eta 0.4, k 10, for n = 20 .. 160."""
    d, eta, k = PAPER.d, PAPER.eta, PAPER.k
    samples = plan["mc_samples"]
    numerics.eval_loss_mc(d, PAPER.n, eta, k, samples=1000, seed=0)
    times = {n: [] for n in MC_NS}
    for rep in range(plan["mc_reps"]):
        for n in MC_NS:
            t0 = time.perf_counter()
            numerics.eval_loss_mc(d, n, eta, k, samples=samples, seed=rep)
            times[n].append(time.perf_counter() - t0)
    by_n = {n: samples / _median(times[n]) for n in MC_NS}
    return {"mc_prompts_per_s": by_n[PAPER.n], "mc_prompts_per_s_by_n": by_n}


#: ``help_seconds`` is the best of this many runs of ``cotgd --help``.
HELP_REPS = 3


def run_cotgd(args: list) -> dict:
    """``cotgd ARGS`` in a subprocess (this interpreter, the toolkit it imports): ``{"seconds"
    (wall), "cpu_seconds" (the child's user + system; None where ``resource`` is missing),
    "exit_status", "last_line" (of its stdout)}``."""
    try:
        import resource
        usage = lambda: sum(getattr(resource.getrusage(resource.RUSAGE_CHILDREN), f) for f in ("ru_utime", "ru_stime"))
    except ImportError:                          # not Unix
        usage = lambda: None
    code = "import sys; sys.argv = ['cotgd', *sys.argv[1:]]; from training.app.cli import console; console()"
    cpu, t0 = usage(), time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    seconds, after = time.perf_counter() - t0, usage()
    lines = proc.stdout.strip().splitlines()
    return {"seconds": seconds, "cpu_seconds": None if cpu is None else after - cpu,
            "exit_status": proc.returncode, "last_line": lines[-1] if lines else ""}


def bench_commands(device: str, quick: bool) -> dict:
    """The command line's own times, each in a subprocess (``run_cotgd``): ``help_seconds``
    (``cotgd --help``, best of ``HELP_REPS``) and, unless ``quick``, ``verify_quick_seconds``
    (``cotgd verify --quick --device DEVICE``: every check but the full-run-only one, training
    included) with its CPU seconds, exit status and summary line in ``verify_quick``."""
    helps = [run_cotgd(["--help"]) for _ in range(HELP_REPS)]
    if any(h["exit_status"] != 0 for h in helps):
        raise RuntimeError(f"cotgd --help exited with status {helps[0]['exit_status']}")
    out = {"help_seconds": min(h["seconds"] for h in helps), "help_seconds_samples": [h["seconds"] for h in helps]}
    if not quick:
        verify = run_cotgd(["verify", "--quick", "--device", device])
        out["verify_quick_seconds"] = verify["seconds"]
        out["verify_quick"] = verify
    return out


def format_commands(figures: dict) -> list:
    """The lines of ``bench_commands``' figures in ``format_bench``."""
    lines = [f"  help_seconds                {figures['help_seconds']:10.2f}   (cotgd --help in a subprocess, "
             f"best of {len(figures['help_seconds_samples'])})"]
    if "verify_quick_seconds" in figures:
        v = figures["verify_quick"]
        cpu = "" if v["cpu_seconds"] is None else f"{v['cpu_seconds']:.0f} s CPU, "
        lines.append(f"  verify_quick_seconds        {figures['verify_quick_seconds']:10.1f}   (cotgd verify --quick in a "
                     f"subprocess: {cpu}exit status {v['exit_status']}; {v['last_line']})")
    return lines


def bench_batched(device: str, plan: dict) -> dict:
    """Figure 3's 12 models (k 10, 20, 30, 40 x seeds 0, 1, 2) as one ``train_models`` run (its
    default workers, ``engine.worker_threads``) vs each k trained alone (seed 0, ``train``'s
    default threads), interleaved: ms per iteration and their ratios; also the sweep on one
    worker, which shows what the workers add."""
    base = _quiet_config(device, 2)
    workers = worker_threads(base, len(FIG3_KS) * len(FIG3_SEEDS))
    pilot = train_models(base, seeds=FIG3_SEEDS, ks=FIG3_KS)[0].summary["ms_per_iteration"]
    batched_iters = _iters(pilot, plan["batched_s"], 2, 100)
    fused_pilot = train_models(_quiet_config(device, 2, fused_models="fused"), seeds=FIG3_SEEDS,
                               ks=FIG3_KS)[0].summary["ms_per_iteration"]
    fused_iters = _iters(fused_pilot, plan["batched_s"], 2, 100)
    single_iters = {k: _iters(_train_ms(_quiet_config(device, 3, k=k)), plan["single_s"], 3, 200) for k in FIG3_KS}
    single, batched, one_worker, fused = {k: [] for k in FIG3_KS}, [], [], []
    for _ in range(plan["batched_reps"]):
        batched.append(train_models(_quiet_config(device, batched_iters), seeds=FIG3_SEEDS,
                                    ks=FIG3_KS)[0].summary["ms_per_iteration"])
        fused.append(train_models(_quiet_config(device, fused_iters, fused_models="fused"), seeds=FIG3_SEEDS,
                                  ks=FIG3_KS)[0].summary["ms_per_iteration"])
        if workers > 1:
            one_worker.append(train_models(_quiet_config(device, batched_iters, threads=1), seeds=FIG3_SEEDS,
                                           ks=FIG3_KS)[0].summary["ms_per_iteration"])
        for k in FIG3_KS:
            single[k].append(_train_ms(_quiet_config(device, single_iters[k], k=k)))
    single_ms = {k: _median(v) for k, v in single.items()}
    batched_ms = _median(batched)
    sequential_ms = len(FIG3_SEEDS) * sum(single_ms.values())
    fused_ms = _median(fused)
    return {"batched_models_time_ratio": batched_ms / single_ms[max(FIG3_KS)],
            "fused_vs_loop_step_ratio": fused_ms / batched_ms,
            "fused_models": {"fused_ms_per_iter": fused_ms, "loop_ms_per_iter": batched_ms,
                             "fused_ms_samples": fused, "loop_ms_samples": batched,
                             "iterations_per_sample": {"fused": fused_iters, "loop": batched_iters},
                             "padded_step_ratio": len(FIG3_KS) * max(FIG3_KS) / sum(FIG3_KS)},
            "batched_models": {"M": len(FIG3_KS) * len(FIG3_SEEDS), "ks": list(FIG3_KS), "seeds": list(FIG3_SEEDS),
                               "workers": workers, "batched_ms_per_iter": batched_ms,
                               "batched_ms_per_iter_one_worker": _median(one_worker) if one_worker else batched_ms,
                               "single_ms_per_iter_by_k": single_ms,
                               "ratio_reference": f"one model alone at k = {max(FIG3_KS)}",
                               "ratio_to_one_model_k10": batched_ms / single_ms[min(FIG3_KS)],
                               "work_ratio": sum(FIG3_KS) * len(FIG3_SEEDS) / max(FIG3_KS),
                               "sequential_ms_per_iter": sequential_ms,
                               "speedup_vs_sequential": sequential_ms / batched_ms}}


def run_bench(device: str = "cpu", quick: bool = False) -> dict:
    """Every speed figure of the module docstring as a JSON-ready dict (numbers in ms, us or
    prompts per second; mappings keyed by k or n).  ``device``: 'cpu', 'cuda', 'auto'; ``quick``:
    fewer repetitions and shorter timed runs (``PLAN``), and no ``cotgd verify --quick`` run."""
    if quick not in (True, False):
        raise ValueError(f"quick must be True or False, got {quick!r}")
    dev = resolve_device(device)
    device = str(dev)
    plan = PLAN[quick]
    started = time.perf_counter()
    load_before = load_average()
    threads = training_threads(device)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        figures = bench_training(device, plan)
        figures.update(bench_rollout(device, plan))
        figures.update(bench_batched(device, plan))
        figures.update(bench_looped(device, plan))
        figures.update(bench_monte_carlo(plan))
        figures.update(bench_sweep(device, quick=quick))
    finally:
        torch.set_num_threads(before)
    if dev.type == "cpu":
        figures["train_ms_per_iter_by_threads"] = bench_threads(device, plan)
    figures.update(bench_commands(device, quick))
    figures.update({
        "torch_threads": threads, "device": device, "quick": quick, "config": dict(BENCH_CONFIG, mode="cot", param="full",
                                                                                    optimizer="Adam", dtype="float32"),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__,
                    "load_average_before": load_before, "load_average_after": load_average()},
        "seconds": time.perf_counter() - started,
    })
    return figures


def format_bench(figures: dict) -> str:
    """The figures of ``run_bench`` as a short plain-text report."""
    f = figures
    lines = [f"cotgd bench  device {f['device']}  torch threads {f['torch_threads']} (the training's)  "
             f"{'quick' if f['quick'] else 'full'}  {f['seconds']:.0f} s",
             f"  config: CoT, full V W, d {f['config']['d']}, n {f['config']['n']}, k {f['config']['k']}, "
             f"eta {f['config']['eta']}, batch {f['config']['batch']}, Adam, float32",
             f"  train_ms_per_iter           {f['train_ms_per_iter']:10.3f}   (project training, engine.train)",
             f"  baseline_ms_per_iter        {f['baseline_ms_per_iter']:10.3f}   (straightforward formula, training.app.baseline)",
             f"  speedup_vs_baseline         {f['speedup_vs_baseline']:10.1f}x",
             f"    batches drawn inline (prefetch off): {f['train_ms_per_iter_no_prefetch']:.3f} ms/iter, "
             f"{f['speedup_vs_baseline_no_prefetch']:.1f}x"]
    if "train_ms_per_iter_by_threads" in f:
        by = ", ".join(f"{t} thread{'s' if int(t) > 1 else ''} {ms:.2f} ms" for t, ms in f["train_ms_per_iter_by_threads"].items())
        lines.append(f"  training step by threads    {by}")
    lines.append("  rollout_us_per_step (per generated step per 1000 prompts, float64):")
    lines.append("    by k (n 20): " + ", ".join(f"k {k}: {us:.1f}" for k, us in f["rollout_us_per_step"].items()))
    lines.append("    by n (k 40): " + ", ".join(f"n {n}: {us:.1f}" for n, us in f["rollout_us_per_step_by_n"].items()))
    b = f["batched_models"]
    lines.append(f"  batched_models_time_ratio   {f['batched_models_time_ratio']:10.2f}   (M = {b['M']} models, "
                 f"k {'/'.join(str(k) for k in b['ks'])} x seeds {'/'.join(str(s) for s in b['seeds'])}, "
                 f"over {b['ratio_reference']})")
    lines.append(f"    batched {b['batched_ms_per_iter']:.1f} ms/iter; alone: "
                 + ", ".join(f"k {k} {ms:.1f}" for k, ms in b["single_ms_per_iter_by_k"].items())
                 + f" ms/iter; {b['speedup_vs_sequential']:.2f}x faster than the 12 one after the other")
    lines.append(f"    {b['workers']} worker(s); on one worker {b['batched_ms_per_iter_one_worker']:.1f} ms/iter; "
                 f"the sweep holds {b['work_ratio']:.1f}x the CoT steps of the k = {max(b['ks'])} model")
    fm = f["fused_models"]
    lines.append(f"  fused_vs_loop_step_ratio    {f['fused_vs_loop_step_ratio']:10.2f}   (the same sweep, one objective "
                 f"call for all 12 models: {fm['fused_ms_per_iter']:.1f} ms/iter, over the loop path's "
                 f"{fm['loop_ms_per_iter']:.1f}; padded to k = {max(b['ks'])}: {fm['padded_step_ratio']:.1f}x the steps)")
    lp = f["looped"]
    lines.append(f"  looped_ms_per_iter          {f['looped_ms_per_iter']:10.1f}   (full looped model, k 10 loops; "
                 f"{lp['gmac_per_iter']:.2f} GMAC at {lp['matmul_gmac_per_s']:.1f} GMAC/s = "
                 f"{lp['arithmetic_bound_ms']:.0f} ms arithmetic)")
    lines.append(f"  mc_prompts_per_s            {f['mc_prompts_per_s']:10.3g}   (numerics.eval_loss_mc, d 10, n 20, k 10)")
    lines.append("    by n: " + ", ".join(f"n {n}: {v:.3g}" for n, v in f["mc_prompts_per_s_by_n"].items()))
    if "help_seconds" in f:
        lines.extend(format_commands(f))
    if "sweep_cells_per_minute" in f:
        lines.append(format_bench_sweep(f))
    m = f["machine"]
    lines.append(f"  machine: {m['cpus']} cpus, torch {m['torch']}, load average {m['load_average_before']} -> "
                 f"{m['load_average_after']}")
    return "\n".join(lines)
