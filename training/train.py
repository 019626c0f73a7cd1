"""Training runs: ``train(TrainConfig) -> TrainResult`` and ``resume(out_dir) -> TrainResult``.

One run trains the one-layer LSA (``model.LSA``) on the CoT, no-CoT or looped objective
(``objectives``) with Adam on fresh prompts every iteration (``data``), evaluates it every
``eval_every`` iterations on fresh prompts in and out of distribution (``evaluate``), tracks its
structure (``structure``) and compares the final evaluation loss with the theory's value for the
same configuration (numerics / theory):

* ``cot``: k-step GD with step eta, ``numerics.eval_loss_mc`` (Monte Carlo; the exact
  ``theory.gd_eval_loss`` value is reported next to it when the exact moments reach 2k);
* ``nocot``: Theorem 3.1's floor ``theory.nocot_min_loss(d, n)`` = ``d (d+1) / (2 (n+d+1))``;
* ``looped``: k GD steps with the best single step, ``numerics.looped_optimal_eta``.  A looped
  model whose ``W13`` is free can do better than any single GD step: with ``V31 = a I``,
  ``W13 = b I`` its k loops give ``(1/b)(I - (I + ab S)^k) w*``, a shrunk-or-stretched GD whose
  best ``(ab, b)`` beats the best GD step (``summary['learned_step']`` is ``-a = W24 V31``,
  ``summary['learned_contraction_step']`` is ``-ab = -V31 W13``).

``summary['theory_same_prompts']`` evaluates the theory's model on the very prompts of the final
evaluation, a paired comparison free of the heavy-tail noise between independent samples.

With ``config.out`` the run directory holds ``metrics.jsonl`` (one JSON object per evaluation
point, flushed per line), ``params.pt`` (final V, W), ``summary.json``, ``manifest.json``
(config, device, versions, git commit, timings) and ``checkpoint.pt`` (model, optimiser and
generator states, iteration, metrics so far: ``resume`` continues bit for bit).  Every file is
written atomically.  The training loop never synchronises with the device except at evaluation
and checkpoint points.
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import platform
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch

import numerics
import theory
from theory.validation import check_int, check_positive_finite

from .data import derived_seed, sample_batch, seeded_generator, sigma_root
from .device import resolve_device
from .errors import TrainingDiverged
from .evaluate import eval_generator, eval_losses, loss_reports, report_dict
from .io import atomic_write_bytes, atomic_write_text, remove_stale_temporaries
from .config import (DTYPES, TrainConfig, ood_sigma_matrices, resolved_clip, resolved_lr,
                     resolved_threads)
from .model import LSA
from .objectives import objective
from .structure import STRUCTURE_KEYS, structure_metrics

@dataclass
class TrainResult:
    """A finished run: ``summary`` (JSON-ready; the keys listed in docs/architecture.md plus details), the
    final ``V``, ``W`` (D x D, on the CPU, training dtype), the metrics ``history`` (one dict per
    evaluation point, as in metrics.jsonl) and the ``config``."""

    summary: dict
    V: torch.Tensor
    W: torch.Tensor
    history: list = field(default_factory=list)
    config: TrainConfig | None = None


def guard_gradients(params: list, max_norm: float | None) -> torch.Tensor:
    """Per model (the parameters' leading axis M): zero the gradient when it is not finite (a
    batch that overflowed is skipped) and, with ``max_norm``, scale it to norm <= ``max_norm``.
    In place, without a host-device synchronisation; returns the (M,) mask of finite gradients."""
    sq = sum(p.grad.reshape(p.shape[0], -1).square().sum(1) for p in params)
    finite = torch.isfinite(sq)
    scale = finite.to(sq.dtype)
    if max_norm is not None:
        scale = scale * (max_norm / (sq.sqrt() + 1e-30)).clamp(max=1.0).nan_to_num(0.0)
    for p in params:
        shape = (-1,) + (1,) * (p.dim() - 1)
        p.grad = torch.where(finite.view(shape), p.grad, torch.zeros_like(p.grad)) * scale.view(shape)
    return finite


# ------------------------------------------------------------------------------ theory values
#: Largest k for which the exact theory.gd_eval_loss is reported next to the Monte Carlo value:
#: it needs Wishart moments up to 2k, under a second for k <= 12 but ~15 s for k = 30.
EXACT_THEORY_MAX_K = 12

def theory_reference(config: TrainConfig) -> dict:
    """The theory's evaluation loss for the run's configuration, with how it was obtained:
    ``{value, method, se, step, ...}``; ``step`` is the GD step the trained model should implement
    (eta for cot, Theorem 3.1's eta_1 for nocot, the best single step for looped).

    Out of distribution (``config.sigma``) the nocot floor is theory.nocot_min_loss_sigma; the
    looped optimum is only available in distribution (value None otherwise)."""
    d, n, k, eta = config.d, config.n, config.k, config.eta
    if config.mode == "cot":
        mc = numerics.eval_loss_mc(d, n, eta, k, samples=config.theory_samples,
                                   seed=derived_seed(config.seed, "theory"), sigma=config.sigma)
        out = {"value": float(mc["mean"]), "method": "monte_carlo numerics.eval_loss_mc",
               "se": float(mc["se"]), "step": eta, "monte_carlo": report_dict(mc)}
        if config.sigma is None and k <= EXACT_THEORY_MAX_K:
            out["exact"] = float(numerics.gd_eval_loss_value(d, n, eta, k))
        return out
    if config.mode == "nocot":
        step = float(theory.nocot_optimal_eta(d, n))
        if config.sigma is None:
            value = float(theory.nocot_min_loss(d, n))
        else:
            import sympy
            value = float(theory.nocot_min_loss_sigma(n, sympy.Matrix(config.sigma).applyfunc(sympy.nsimplify)))
        return {"value": value, "method": "exact theory.nocot_min_loss", "se": 0.0, "step": step}
    if config.sigma is not None:
        return {"value": None, "method": "unavailable out of distribution", "se": None, "step": None}
    opt = numerics.looped_optimal_eta(d, n, k)
    return {"value": float(opt.loss), "method": f"{opt.method} numerics.looped_optimal_eta",
            "se": float(opt.loss_se), "step": float(opt.eta)}


# ------------------------------------------------------------------------------ run directory
def _versions() -> dict:
    import scipy
    import sympy
    return {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
            "scipy": scipy.__version__, "sympy": sympy.__version__}


def _git_commit() -> str | None:
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        out = subprocess.run(["git", "-C", here, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _json(payload) -> str:
    return json.dumps(payload, indent=2, allow_nan=True) + "\n"


class _RunDir:
    """The files of a run directory, each written atomically; metrics.jsonl is appended line by
    line (flush + fsync) after being rewritten atomically from the history at (re)start."""

    def __init__(self, path, history: list):
        self.path = os.fspath(path)
        os.makedirs(self.path, exist_ok=True)
        text = "".join(json.dumps(row) + "\n" for row in history)
        atomic_write_text(self.file("metrics.jsonl"), text)

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)

    def append_metrics(self, row: dict) -> None:
        with open(self.file("metrics.jsonl"), "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def write_json(self, name: str, payload) -> None:
        atomic_write_text(self.file(name), _json(payload))

    def write_torch(self, name: str, payload) -> None:
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        atomic_write_bytes(self.file(name), buffer.getvalue())


# ------------------------------------------------------------------------------ the run
class _Batches:
    """A run's training batches, in order: ``draw()`` (``sample_batch`` on the run's data
    generator) once per iteration.  With ``prefetch`` the next batch is drawn on a background
    thread while the current step computes, so on a CPU with two cores sampling and the step
    overlap (measured at the paper's configuration on the 2-core test machine: 6.2 against 8.8 ms
    per iteration, medians of 6 alternating runs).  The draws are the same, in the same order, from
    the same generator, so the run is bitwise the same either way.

    ``generator_state()`` is the state from which the first batch not yet handed out is drawn:
    what a checkpoint stores, so that a resumed run draws it again."""

    def __init__(self, draw, generator: torch.Generator, prefetch: bool):
        self.draw, self.generator = draw, generator
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cotgd-data") if prefetch else None
        self.pending = None
        self.state_before_pending = None

    def next(self, more: bool):
        """The next batch; with ``more`` (another one will be asked for) start drawing that one."""
        if self.pending is None:
            batch = self.draw()
        else:
            pending, self.pending = self.pending, None
            batch = pending.result()
        if more and self.pool is not None:
            self.state_before_pending = self.generator.get_state()
            self.pending = self.pool.submit(self.draw)
        return batch

    def generator_state(self) -> torch.Tensor:
        if self.pending is not None:
            self.pending.result()               # the thread is done with the generator
            return self.state_before_pending
        return self.generator.get_state()

    def set_generator_state(self, state: torch.Tensor) -> None:
        self.discard()
        self.generator.set_state(state)

    def discard(self) -> None:
        """Wait for a draw in flight and undo it: the generator is back at ``generator_state()``."""
        if self.pending is not None:
            pending, self.pending = self.pending, None
            with contextlib.suppress(Exception):     # a failed draw: its error is not this caller's
                pending.result()
            self.generator.set_state(self.state_before_pending)

    def shutdown(self) -> None:
        """Discard a draw in flight and stop the thread; later batches are drawn inline."""
        self.discard()
        if self.pool is not None:
            self.pool.shutdown()
            self.pool = None


class _Run:
    """State of one run: model, optimiser, data generator, iteration, history, timings."""

    def __init__(self, config: TrainConfig):
        self.config = config.validate()
        self.device = resolve_device(config.device)
        self.dtype = DTYPES[config.dtype]
        self.model = LSA(config.d, config.param, init_scale=config.init_scale, dtype=self.dtype,
                         generator=seeded_generator(config.seed, "init", self.device))
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=resolved_lr(config))
        self.data_generator = seeded_generator(config.seed, "data", self.device)
        self.batches = _Batches(self.draw, self.data_generator, config.prefetch and self.device.type == "cpu")
        self.sigma_sqrt = sigma_root(config.sigma, config.d, dtype=self.dtype, device=self.device)
        self.ood = ood_sigma_matrices(config)
        self.iteration = 0
        self.history: list = []
        self.train_seconds = 0.0
        self.seconds_before = 0.0          # whole-run seconds of earlier sessions (resume)
        # since the last evaluation: [sum of finite batch losses, finite steps, skipped steps]
        self.acc = torch.zeros(3, dtype=torch.float64, device=self.device)
        self.loss_count = 0
        self.skipped_total = 0
        self.last_loss = torch.full((), float("nan"), dtype=torch.float64, device=self.device)
        self.theory = None
        self.started = time.perf_counter()

    # -- checkpoints
    def state(self) -> dict:
        return {"config": self.config.to_dict(), "iteration": self.iteration,
                "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "data_generator": self.batches.generator_state(), "history": self.history,
                "train_seconds": self.train_seconds, "seconds": self.seconds_before + self.elapsed(),
                "acc": self.acc, "loss_count": self.loss_count, "last_loss": self.last_loss,
                "skipped_total": self.skipped_total, "theory": self.theory,
                "threads": torch.get_num_threads()}

    def load_state(self, state: dict) -> None:
        self.iteration = int(state["iteration"])
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.batches.set_generator_state(state["data_generator"])
        self.history = list(state["history"])
        self.train_seconds = float(state["train_seconds"])
        self.seconds_before = float(state["seconds"])
        self.acc = state["acc"].to(self.device)
        self.loss_count = int(state["loss_count"])
        self.skipped_total = int(state["skipped_total"])
        self.last_loss = state["last_loss"].to(self.device)
        self.theory = state["theory"]

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    # -- one optimisation step (no host-device synchronisation)
    def draw(self):
        c = self.config
        return sample_batch(c.batch, c.d, c.n, c.eta, c.k, generator=self.data_generator,
                            sigma_sqrt=self.sigma_sqrt, dtype=self.dtype)

    def step(self) -> None:
        c = self.config
        batch = self.batches.next(more=self.iteration + 1 < c.iters)
        V, W = self.model.matrices()
        losses = objective(c.mode, V, W, batch, c.n, c.k)
        self.optimizer.zero_grad(set_to_none=True)
        losses.sum().backward()
        finite = guard_gradients(list(self.model.parameters()), resolved_clip(c))
        self.optimizer.step()
        loss = losses.detach().sum().double()
        ok = finite.all() & torch.isfinite(loss)
        self.acc += torch.stack([torch.where(ok, loss, torch.zeros_like(loss)), ok.double(), (~ok).double()])
        self.last_loss = loss
        self.loss_count += 1
        self.iteration += 1

    # -- evaluation point
    def evaluate(self) -> dict:
        c = self.config
        V, W = self.model.matrices()
        V, W = V.detach(), W.detach()
        if not (torch.isfinite(V).all() and torch.isfinite(W).all()):
            raise TrainingDiverged(self.iteration, "non-finite parameters")
        loss_sum, finite_steps, skipped = self.acc.tolist()
        if self.loss_count and finite_steps == 0:
            raise TrainingDiverged(self.iteration, f"the training loss overflowed on all of the last "
                                                   f"{self.loss_count} iterations")
        train_loss = loss_sum / finite_steps if self.loss_count else None
        self.skipped_total += int(skipped)
        losses, norms = eval_losses(c.mode, V, W, n=c.n, k=c.k, samples=c.eval_samples,
                                    generator=eval_generator(c.seed, self.device), sigma=c.sigma)
        report = report_dict(loss_reports(losses, norms)[0])
        ood = {}
        for name, sigma in self.ood.items():
            losses, norms = eval_losses(c.mode, V, W, n=c.n, k=c.k, samples=c.eval_samples,
                                        generator=eval_generator(c.seed, self.device), sigma=sigma)
            ood[name] = report_dict(loss_reports(losses, norms)[0])
        structure = structure_metrics(V[0], W[0], n=c.n, eta=self.structure_step(),
                                      k=c.k if c.mode == "cot" else 1, samples=c.structure_samples,
                                      seed=c.seed, device=self.device, sigma=c.sigma)
        row = {"iteration": self.iteration, "train_loss": train_loss,
               "train_loss_last": self.last_loss.item() if self.loss_count else None,
               "skipped_steps": int(skipped),
               "eval_loss": report["mean"], "eval": report,
               "eval_loss_ood": {name: r["mean"] for name, r in ood.items()}, "eval_ood": ood,
               "structure": {key: structure[key] for key in STRUCTURE_KEYS},
               "train_seconds": self.train_seconds, "seconds": self.seconds_before + self.elapsed()}
        self.acc.zero_()
        self.loss_count = 0
        self.history.append(row)
        return row

    def structure_step(self) -> float:
        """The GD step the structure metrics compare with: eta (cot), or the theory's optimum
        for the mode (nocot: eta_1 = n/(n+d+1); looped: the best single step)."""
        if self.config.mode == "cot" or self.theory.get("step") is None:
            return self.config.eta
        return self.theory["step"]

    def run(self, run_dir: _RunDir | None) -> TrainResult:
        from tqdm import tqdm
        c = self.config
        if self.theory is None:
            self.theory = theory_reference(c)
        if run_dir is not None:
            run_dir.write_json("manifest.json", self.manifest(status="running"))
        if not self.history:
            self.record(self.evaluate(), run_dir)
        show = sys.stderr.isatty() if c.progress is None else c.progress
        bar = tqdm(total=c.iters, initial=self.iteration, desc=f"{c.mode}/{c.param}", disable=not show,
                   dynamic_ncols=True, leave=False)
        try:
            self.sync()
            t0 = time.perf_counter()
            while self.iteration < c.iters:
                self.step()
                bar.update(1)
                at_eval = self.iteration % c.eval_every == 0 or self.iteration == c.iters
                at_checkpoint = (run_dir is not None and c.checkpoint_every
                                 and self.iteration % c.checkpoint_every == 0)
                if at_eval or at_checkpoint:
                    self.sync()
                    self.train_seconds += time.perf_counter() - t0
                    if at_eval:
                        row = self.evaluate()
                        self.record(row, run_dir)
                        bar.set_postfix_str(f"eval {row['eval_loss']:.4g}")
                    if at_checkpoint:
                        self.checkpoint(run_dir)
                    self.sync()
                    t0 = time.perf_counter()
        except TrainingDiverged:
            if run_dir is not None:
                run_dir.write_json("manifest.json", self.manifest(status="diverged", timings=self.timings()))
            raise
        finally:
            bar.close()
            self.batches.shutdown()
        result = self.result()
        if run_dir is not None:
            self.checkpoint(run_dir)
            run_dir.write_torch("params.pt", {"V": result.V, "W": result.W, "param": c.param, "d": c.d})
            run_dir.write_json("summary.json", result.summary)
            run_dir.write_json("manifest.json", self.manifest(status="finished", summary=result.summary))
        return result

    def record(self, row: dict, run_dir: _RunDir | None) -> None:
        if run_dir is not None:
            run_dir.append_metrics(row)

    def checkpoint(self, run_dir: _RunDir) -> None:
        V, W = self.model.matrices()
        if not (torch.isfinite(V).all() and torch.isfinite(W).all()):
            raise TrainingDiverged(self.iteration, "non-finite parameters")
        run_dir.write_torch("checkpoint.pt", self.state())

    def timings(self) -> dict:
        return {"seconds": self.seconds_before + self.elapsed(), "train_seconds": self.train_seconds,
                "ms_per_iteration": 1e3 * self.train_seconds / max(self.iteration, 1)}

    def manifest(self, *, status: str, summary: dict | None = None, timings: dict | None = None) -> dict:
        c = self.config
        out = {"status": status, "config": c.to_dict(), "seed": c.seed, "device": str(self.device),
               "torch_threads": torch.get_num_threads(), "versions": _versions(),
               "git_commit": _git_commit(), "platform": platform.platform(),
               "iteration": self.iteration}
        if summary is not None:
            out["timings"] = {key: summary[key] for key in ("seconds", "train_seconds", "ms_per_iteration")}
        elif timings is not None:
            out["timings"] = timings
        return out

    def result(self) -> TrainResult:
        c = self.config
        V, W = self.model.matrices()
        V, W = V.detach()[0].cpu().clone(), W.detach()[0].cpu().clone()
        last = self.history[-1]
        structure = structure_metrics(V, W, n=c.n, eta=self.structure_step(),
                                      k=c.k if c.mode == "cot" else 1, samples=c.structure_samples,
                                      seed=c.seed, device=self.device, sigma=c.sigma)
        seconds = self.seconds_before + self.elapsed()
        summary = {
            "final_eval_loss": last["eval_loss"],
            "theory_eval_loss": self.theory["value"],
            "seconds": seconds,
            "train_seconds": self.train_seconds,
            "structure": {key: structure[key] for key in STRUCTURE_KEYS},
            "mode": c.mode, "param": c.param, "config": c.to_dict(), "device": str(self.device),
            "lr": resolved_lr(c), "clip_grad": resolved_clip(c), "init_scale": self.model.init_scale,
            "iterations": self.iteration,
            "ms_per_iteration": 1e3 * self.train_seconds / max(self.iteration, 1),
            "final_train_loss": last["train_loss"],
            "skipped_steps": self.skipped_total,
            "eval": last["eval"], "eval_ood": last["eval_ood"],
            "theory": self.theory,
            "relative_gap": (None if self.theory["value"] is None
                             else (last["eval_loss"] - self.theory["value"]) / self.theory["value"]),
            "theory_same_prompts": self.theory_same_prompts(),
            "learned_step": structure["w24_v31"],
            "learned_contraction_step": -structure["v31_w13"],
            "structure_step": self.structure_step(),
            "block_norms": structure["block_norms"],
        }
        same = summary["theory_same_prompts"]
        summary["relative_gap_same_prompts"] = (None if same is None
                                                else (last["eval_loss"] - same["mean"]) / same["mean"])
        return TrainResult(summary=summary, V=V, W=W, history=list(self.history), config=c)

    def theory_same_prompts(self) -> dict | None:
        """The theory's model evaluated on the very prompts of the final evaluation (a paired
        comparison, free of the heavy-tail noise between independent Monte Carlo samples): GD
        with step eta (cot), Theorem 3.1's parameters (nocot), GD with the best single step
        (looped).  None when the theory has no such model (looped out of distribution)."""
        c = self.config
        if c.mode == "cot":
            V, W = numerics.gd_params(c.d, c.eta)
        elif c.mode == "nocot":
            V, W = numerics.nocot_params(c.d, c.n, c.sigma)
        elif self.theory.get("step") is not None:
            V, W = numerics.gd_params(c.d, self.theory["step"])
        else:
            return None
        V, W = (torch.as_tensor(A).unsqueeze(0) for A in (V, W))
        losses, norms = eval_losses(c.mode, V, W, n=c.n, k=c.k, samples=c.eval_samples,
                                    generator=eval_generator(c.seed, self.device), sigma=c.sigma)
        return report_dict(loss_reports(losses, norms)[0])


@contextlib.contextmanager
def _threads(threads: int | None):
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def train(config: TrainConfig) -> TrainResult:
    """Train one model as ``config`` says and return its ``TrainResult`` (module docstring).

    ``summary`` holds ``final_eval_loss`` (mean over ``eval_samples`` fresh in-distribution
    prompts at the last iteration), ``theory_eval_loss`` (``theory_reference``), ``seconds``
    (whole run), ``train_seconds`` (optimisation loop only), ``structure`` (``v31_w13``,
    ``w24_v31``, ``offdiag_energy``, ``functional_deviation``) and details (``eval`` statistics,
    ``theory``, ``ms_per_iteration``, ``learned_step``, ``block_norms``, ...).  Raises ValueError
    for a bad config field and ``TrainingDiverged`` when the loss or parameters become non-finite.
    """
    if not isinstance(config, TrainConfig):
        raise ValueError(f"config must be a TrainConfig, got {type(config).__name__}")
    run = _Run(config)
    with _threads(resolved_threads(config)):
        run_dir = None
        if config.out is not None:
            # The manifest (with the config) is the run's first file: from then on resume can
            # restart the run, even while theory_reference is still computing.  A previous run's
            # checkpoint in the same directory must not be resumed as this run's.
            os.makedirs(config.out, exist_ok=True)
            atomic_write_text(os.path.join(config.out, "manifest.json"), _json(run.manifest(status="running")))
            for name in ("checkpoint.pt", "params.pt", "summary.json"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(config.out, name))
            run_dir = _RunDir(config.out, [])
        return run.run(run_dir)


CHECKPOINT_KEYS = ("config", "iteration", "model", "optimizer", "data_generator", "history",
                   "train_seconds", "seconds", "acc", "loss_count", "last_loss", "skipped_total",
                   "theory", "threads")


def resume(out_dir) -> TrainResult:
    """Continue the run in ``out_dir`` to its configured number of iterations; the result is
    bitwise the one of an uninterrupted run on the same device.

    From ``checkpoint.pt`` when there is one; from the start, with the config in ``manifest.json``,
    when the run was killed before its first checkpoint.  Either way with the torch thread count
    the run had (CPU results depend on it), unless ``config.threads`` fixes it.  Temporary files
    of writes a kill interrupted (``.tmp-*``) are deleted.  A corrupt, foreign or inconsistent
    checkpoint raises ValueError naming it; a directory with neither file raises
    FileNotFoundError."""
    if not isinstance(out_dir, (str, os.PathLike)):
        raise ValueError(f"out_dir must be a run directory path, got {out_dir!r}")
    out_dir = os.fspath(out_dir)
    path = os.path.join(out_dir, "checkpoint.pt")
    manifest = _read_manifest(out_dir)
    if os.path.isdir(out_dir):
        remove_stale_temporaries(out_dir)
    if not os.path.isfile(path):
        if manifest is None:
            raise FileNotFoundError(f"no checkpoint to resume in {out_dir!r} (checkpoint.pt and "
                                    f"manifest.json missing)")
        config = _config_from(manifest.get("config"), f"manifest.json in {out_dir!r}")
        config.out = out_dir
        saved = manifest.get("torch_threads")
        threads = config.threads if config.threads is not None or not isinstance(saved, int) or saved < 1 else saved
        with _threads(threads):
            return train(config)
    state = _load_checkpoint(path)
    config = _config_from(state["config"], f"checkpoint {path!r}")
    config.out = out_dir
    if manifest is not None and isinstance(manifest.get("config"), dict):
        # both through TrainConfig, so that a field added since the run started compares equal
        mine = {k: v for k, v in _config_from(manifest["config"], f"manifest.json in {out_dir!r}").to_dict().items()
                if k != "out"}
        theirs = {k: v for k, v in config.to_dict().items() if k != "out"}
        if mine != theirs:
            raise ValueError(f"checkpoint {path!r} belongs to another run: its config differs from "
                             f"manifest.json's")
    run = _Run(config)
    try:
        run.load_state(state)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        message = " ".join(str(exc).split())[:200]
        raise ValueError(f"checkpoint {path!r} does not fit its config: {message}") from None
    threads = config.threads if config.threads is not None else state["threads"]
    with _threads(threads):
        return run.run(_RunDir(config.out, run.history))


def _read_manifest(out_dir: str) -> dict | None:
    try:
        with open(os.path.join(out_dir, "manifest.json"), encoding="utf-8") as f:
            manifest = json.load(f)
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def _config_from(fields, where: str) -> TrainConfig:
    if not isinstance(fields, dict):
        raise ValueError(f"{where} holds no run config")
    try:
        return TrainConfig(**fields).validate()
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where} holds a bad run config: {' '.join(str(exc).split())[:200]}") from None


def _load_checkpoint(path: str) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a torn or foreign file
        raise ValueError(f"checkpoint {path!r} cannot be read ({type(exc).__name__}): it is corrupt "
                         f"or not a checkpoint of this toolkit") from None
    if not isinstance(state, dict) or any(key not in state for key in CHECKPOINT_KEYS):
        missing = [key for key in CHECKPOINT_KEYS if not isinstance(state, dict) or key not in state]
        raise ValueError(f"checkpoint {path!r} is not a training checkpoint (missing {', '.join(missing)})")
    return state
