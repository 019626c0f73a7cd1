"""``cotgd selftest``: a few minutes that prove the toolkit on one device (a new GPU, or CI's CPU).

Each check trains or evaluates small models on the chosen device and compares numbers:

* ``sync-free steps``: training steps ask the host nothing (on CUDA torch's sync debug mode
  raises on any synchronisation; on a CPU ``host_sync_guard`` makes every host read of a tensor
  that cotgd's own code requests inside a step raise: the same code path, checked by proxy);
* ``same config twice``: two runs of one seeded config end bitwise equal;
* ``kill and resume``: a run killed after a checkpoint and resumed ends bitwise on the
  uninterrupted run;
* ``many models = single runs``: ``train_models`` against ``train`` per model (looped models with
  different seeds and loops, CoT models with different seeds, k and eta), with gradient clipping
  engaged (the per-model reductions of ``engine.guard_gradients``), on both paths of a
  many-model step (docs/architecture.md section 5): the loop (one objective call per model)
  bitwise, the fused one (one call for all, the default on CUDA) within ``FUSED_TOLERANCE``;
* ``constructed transformer``: Theorem 3.2's (V, W) evaluated on the device against the exact
  k-step GD loss (within 4 standard errors) and its structure metrics against eta;
* ``reduced dynamics``: training of the isotropic model against the gradient-flow ODE;
* ``verify --quick``: every check of ``cotgd verify`` (but the full-run-only one).

Each check's line is printed as soon as the check ends (``run_selftest(on_line=...)``).
"""
from __future__ import annotations

import contextlib
import dataclasses
import sys
import tempfile
import time
from typing import Callable

import torch

#: The fused many-model path against single runs: the largest parameter deviation allowed, relative
#: to the parameters' scale (float32 rounding; measured on a CPU: 1.7e-7).  A model that read
#: another's prompts or steps would be off by order 1.
FUSED_TOLERANCE = 1e-4

#: Small runs: seconds each on a CPU.
TINY = dict(d=3, n=8, k=3, eta=0.3, batch=64, iters=30, eval_every=10, eval_samples=500, theory_samples=2000,
            structure_samples=128, progress=False)


@contextlib.contextmanager
def host_sync_guard():
    """Inside the block, a host read of a tensor (``item``, ``tolist``, ``numpy``, ``bool``,
    ``float``, ``int``) requested by cotgd's code (modules ``training``, ``numerics``,
    ``theory``) raises RuntimeError: on a GPU each would be a host-device synchronisation.
    Reads inside torch itself are allowed (e.g. Adam's step counter, which lives on the host)."""
    names = ("item", "tolist", "numpy", "__bool__", "__float__", "__int__")
    originals = {name: getattr(torch.Tensor, name) for name in names}

    def guarded(name):
        original = originals[name]

        def read(self, *args, **kwargs):
            caller = sys._getframe(1).f_globals.get("__name__", "")
            if caller.split(".")[0] in ("training", "numerics", "theory"):
                raise RuntimeError(f"host synchronisation: Tensor.{name} called from {caller}")
            return original(self, *args, **kwargs)
        return read

    for name in names:
        setattr(torch.Tensor, name, guarded(name))
    try:
        yield
    finally:
        for name, original in originals.items():
            setattr(torch.Tensor, name, original)


@dataclasses.dataclass
class Line:
    name: str
    measured: str
    expected: str
    passed: bool
    seconds: float = 0.0


def _bitwise(a, b) -> bool:
    return torch.equal(a.V, b.V) and torch.equal(a.W, b.W)


def check_sync_free(device: str) -> Line:
    from ..config import TrainConfig
    from ..engine import Engine, model_grid_configs
    config = TrainConfig(**TINY, device=device, prefetch=False)
    fused = model_grid_configs(dataclasses.replace(config, fused_models="fused"), seeds=[0, 1], etas=[0.3, 0.5], ks=[2, 3])
    steps = 5
    for engine in (Engine([config]), Engine(fused)):     # one model; a fused step of 8 (seeds, k, eta)
        engine.step()                                    # warm-up: lazy initialisations may sync
        if engine.device.type == "cuda":
            torch.cuda.synchronize(engine.device)
            torch.cuda.set_sync_debug_mode("error")
            try:
                for _ in range(steps):
                    engine.step()
            finally:
                torch.cuda.set_sync_debug_mode("default")
            how = "torch.cuda sync debug mode"
        else:
            with host_sync_guard():
                for _ in range(steps):
                    engine.step()
            how = "host_sync_guard (CPU proxy)"
    return Line("sync-free training steps", f"{steps} steps of one model and {steps} fused steps of "
                f"{len(fused)} models, no host read ({how})", "no host read", True)


def check_same_config_twice(device: str) -> Line:
    from ..config import TrainConfig
    from ..engine import train
    a = train(TrainConfig(**TINY, device=device))
    b = train(TrainConfig(**TINY, device=device))
    same = _bitwise(a, b) and a.summary["final_eval_loss"] == b.summary["final_eval_loss"]
    return Line("same seeded config twice", f"bitwise {same}; eval {a.summary['final_eval_loss']:.6g} / "
                f"{b.summary['final_eval_loss']:.6g}", "bitwise True", same)


def check_kill_and_resume(device: str) -> Line:
    from ..config import TrainConfig
    from ..engine import Engine, resume, train
    with tempfile.TemporaryDirectory() as tmp:
        config = dict(TINY, device=device, checkpoint_every=10)
        whole = train(TrainConfig(**config, out=f"{tmp}/whole"))
        step = Engine.step

        def crashing(self):
            if self.iteration == 15:
                raise KeyboardInterrupt
            step(self)

        Engine.step = crashing
        try:
            train(TrainConfig(**config, out=f"{tmp}/cut"))
        except KeyboardInterrupt:
            pass
        finally:
            Engine.step = step
        resumed = resume(f"{tmp}/cut")
    same = _bitwise(whole, resumed)
    return Line("killed at 15 (checkpoint 10), resumed", f"bitwise {same}", "bitwise True", same)


def _deviation(a, b) -> float:
    """The largest parameter deviation of result ``a`` from ``b``, relative to ``b``'s scale."""
    return max(float((x - y).abs().max() / y.abs().max()) for x, y in ((a.V, b.V), (a.W, b.W)))


def check_many_models(device: str) -> Line:
    from ..config import TrainConfig
    from ..device import resolve_device
    from ..engine import fused_path, model_grid_configs, train, train_models
    looped = TrainConfig(**dict(TINY, iters=20), device=device, mode="looped", param="full", clip_grad=1e-3)
    cot = TrainConfig(**dict(TINY, iters=20), device=device, clip_grad=1e-3)
    runs = [(looped, dict(seeds=[0, 1], ks=[2, 3])), (cot, dict(seeds=[0, 1], etas=[0.3, 0.5], ks=[2, 3]))]
    same, deviation, models = [], 0.0, 0
    for base, grid in runs:
        singles = [train(c) for c in model_grid_configs(base, **grid)]
        loop = train_models(dataclasses.replace(base, fused_models="loop"), **grid)
        fused = train_models(dataclasses.replace(base, fused_models="fused"), **grid)
        same += [_bitwise(r, single) for r, single in zip(loop, singles)]
        deviation = max([deviation] + [_deviation(r, single) for r, single in zip(fused, singles)])
        models += len(singles)
    auto = "fused" if fused_path(cot, models, resolve_device(device)) else "loop"
    return Line("many models = single runs (looped and CoT, clipping engaged; loop and fused paths)",
                f"loop path {sum(same)}/{len(same)} bitwise; fused path max deviation {deviation:.1e} "
                f"(auto here: {auto})", f"{len(same)}/{len(same)} bitwise; <= {FUSED_TOLERANCE:g} of the "
                f"parameters' scale", all(same) and deviation <= FUSED_TOLERANCE)


def check_constructed_transformer(device: str) -> Line:
    import numerics
    import theory
    from ..evaluate import evaluate_params
    from ..structure import structure_metrics
    d, n, k, eta = 10, 20, 5, 0.4
    V, W = numerics.gd_params(d, eta)
    report = evaluate_params(V, W, d=d, n=n, k=k, samples=40_000, seed=3, device=device)
    exact = float(theory.gd_eval_loss(d, n, eta, k))
    s = structure_metrics(V, W, n=n, eta=eta, k=k, samples=2048, seed=3, device=device)
    ok_loss = abs(report["mean"] - exact) <= 4 * report["se"]
    ok_structure = (abs(s["v31_w13"] + eta) < 1e-12 and abs(s["w24_v31"] - eta) < 1e-12
                    and s["functional_deviation"] < 1e-9)
    return Line("Thm 3.2 transformer: Monte Carlo vs exact loss (d 10, n 20, k 5), structure",
                f"{report['mean']:.6g} +- {report['se']:.2g}; v31_w13 {s['v31_w13']:.6g}, "
                f"deviation {s['functional_deviation']:.1e}", f"{exact:.6g} (4 SE); -eta, 0",
                ok_loss and ok_structure)


def check_dynamics(device: str) -> Line:
    from ..dynamics import run_dynamics
    r = run_dynamics(d=4, n=8, k=4, eta=0.4, lr=0.02, steps=800, batch=2000, pool=40000, seed=0, device=device)
    ok = r["max_relative_deviation"] < 0.07 and abs(r["final_a"] + 0.4) < 0.005 and abs(r["final_b"] - 1) < 0.005
    return Line("reduced dynamics vs gradient-flow ODE (d 4)", f"max deviation {r['max_relative_deviation']:.3f}; "
                f"end ({r['final_a']:.4f}, {r['final_b']:.4f})", "< 0.07; (-0.4, 1) +- 0.005", ok)


def check_verify(device: str) -> Line:
    from .verify import run_verify
    report = run_verify(quick=True, device=device, progress=False)
    failed = [c["name"] for c in report["checks"] if not c["passed"]]
    passed = len(report["checks"]) - len(failed)
    skipped = f"; {len(report['skipped'])} full-run only, skipped" if report["skipped"] else ""
    return Line("cotgd verify --quick", f"{passed}/{len(report['checks'])} passed{skipped}"
                + (f"; failed {failed}" if failed else ""), "all pass", report["passed"])


CHECKS = {"sync": check_sync_free, "twice": check_same_config_twice, "resume": check_kill_and_resume,
          "models": check_many_models, "constructed": check_constructed_transformer, "dynamics": check_dynamics,
          "verify": check_verify}


def run_selftest(device: str = "auto", *, skip: tuple = (), on_line: Callable | None = None) -> dict:
    """Run the checks (module docstring) on ``device`` except those named in ``skip`` (keys of
    ``CHECKS``); a check that raises is a failed line with its error.  ``on_line(line)`` is
    called with each line (a dict, as in the report) as soon as its check ends (``cotgd
    selftest`` prints it: ``format_line``).  Returns the JSON-ready report ``{"passed",
    "device", "device_record", "seconds", "lines": [...]}``."""
    from ..device import device_record, resolve_device
    resolved = resolve_device(device)
    unknown = [name for name in skip if name not in CHECKS]
    if unknown:
        raise ValueError(f"skip must name checks among {', '.join(CHECKS)}, got {unknown}")
    start, lines = time.perf_counter(), []
    for name, check in CHECKS.items():
        if name in skip:
            continue
        t0 = time.perf_counter()
        try:
            line = check(str(resolved))
        except Exception as exc:  # a failing check is a FAIL line, never a crash of the self-test
            line = Line(name, f"error: {type(exc).__name__}: {' '.join(str(exc).split())[:200]}", "no error", False)
        line.seconds = time.perf_counter() - t0
        lines.append(dataclasses.asdict(line))
        if on_line is not None:
            on_line(lines[-1])
    return {"passed": all(line["passed"] for line in lines), "device": str(resolved),
            "device_record": device_record(resolved), "seconds": time.perf_counter() - start,
            "lines": lines}


def format_line(line: dict) -> str:
    """One check's line: PASS/FAIL, name, measured, expected, seconds."""
    return (f"{'PASS' if line['passed'] else 'FAIL'}  {line['name']}: {line['measured']} "
            f"(expected {line['expected']}; {line['seconds']:.1f} s)")


def format_selftest(report: dict, *, lines: bool = True) -> str:
    """One line per check (``format_line``; left out with ``lines=False``, when they were printed
    as they finished), then the verdict."""
    out = [format_line(line) for line in report["lines"]] if lines else []
    record = report["device_record"]
    passed = sum(line["passed"] for line in report["lines"])
    out.append(f"{passed}/{len(report['lines'])} passed on {record['device']} ({record['name']}) in "
               f"{report['seconds']:.1f} s: {'ALL PASS' if report['passed'] else 'FAILURES'}")
    return "\n".join(out)
