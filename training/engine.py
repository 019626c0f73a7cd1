"""The training loop, once, for M >= 1 models: ``train(config)`` trains one, ``train_models(base,
seeds=, ks=, etas=)`` the grid of M models ``model_grid_configs`` gives as one computation,
``resume(out_dir)`` continues either.

An ``Engine`` holds M models that share everything but their seed, CoT length k and GD step eta:
one ``LSA(models=M)`` with every model's (V, W), one optimiser, one ``data.PromptStream`` per
seed (``data.prompt_streams``), read through a ``data.BatchFeed``.  Per iteration
(``Engine.step``) each seed's prompts are drawn once (the GD targets once per (seed, eta), up to
the seed's largest k); every model's loss and gradient is computed on the detached (V, W) by the
run's gradient function; one backward pass through ``LSA.matrices`` collects the gradients, a
guard zeroes non-finite ones (and clips, ``guard_gradients``), and the optimiser steps.

The gradient function is one of two with the same arguments and result (``Gradients``), chosen
once per run by ``gradient_path`` (``config.fused_models``, docs/architecture.md section 5):

* ``loop_gradients`` (the default on a CPU): one ``kernels.objective`` call per model on its own
  slice of (V, W), on ``worker_threads`` threads.  The losses are independent and Adam acts per
  entry, so model j follows bitwise the run ``train`` gives it alone
  (tests/training/test_engine.py).
* ``fused_gradients`` (the default on CUDA): one objective call for all M, on their prompts
  stacked (M, B, ...) with each loss masked to the model's own k; model j follows its single run
  to float rounding (tests/training/test_engine_fused.py).

>>> base = TrainConfig(d=2, n=5, k=2, batch=16, iters=3, eval_every=3, eval_samples=50,
...                    theory_samples=200, structure_samples=20, device="cpu", progress=False)
>>> runs = train_models(base, seeds=[0, 1], ks=[1, 2])
>>> [(r.config.seed, r.config.k) for r in runs]
[(0, 1), (0, 2), (1, 1), (1, 2)]
>>> alone = train(runs[3].config)
>>> torch.equal(runs[3].V, alone.V) and torch.equal(runs[3].W, alone.W)
True

Every ``eval_every`` iterations (``Engine.evaluate``) each model is evaluated on fresh prompts
in and out of distribution (``evaluate``) and its structure measured (``structure``), one metrics
row per model.  At the end each model gets a summary with its theory's value
(``evaluate.theory_reference``), the theory's own model on the very prompts of the final
evaluation (``theory_same_prompts``, a paired comparison) and the relative gaps.  Nothing
synchronises with the device inside the loop except at evaluation and checkpoint points.

Each model's summary carries the verdict on it (``verdict.judge``: ``status`` "finished", or
"failed" when its final model diverges on most prompts or, after at least 50 iterations, is more
than 5% worse than predicting w = 0).

With ``config.out`` the run directory (``rundir``) holds the manifest, metrics, checkpoint,
parameters and summary; the manifest is kept current (at the start, at every checkpoint, on
Ctrl-C "interrupted", at the end "finished" or "failed"); ``resume`` continues from the checkpoint
bit for bit.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import platform
import shutil
import sys
import time
import warnings
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import NamedTuple

import torch

import numerics
from theory.validation import check_int, check_positive_finite

from .config import (TrainConfig, ood_sigma_matrices, resolved_clip, resolved_lr,
                     resolved_threads)
from .data import Batch, BatchFeed, prompt_streams, seeded_generator
from .device import device_record, reproducible, resolve_device, resume_device, run_settings
from .errors import NoCheckpointWarning, RunExists, RunFileError, TrainingDiverged, one_line
from .evaluate import eval_generator, eval_losses, loss_reports, report_dict, step_stability, theory_reference
from .io import remove_stale_temporaries
from .kernels import objective
from .model import LSA
from .rundir import (CHECKPOINT, ENDED, MANIFEST, MODELS_DIR, PARAMS, RUN_FILES, SUMMARY, RunDir, config_from, git_commit,
                     load_checkpoint, load_manifest, load_run, manifest_configs, model_dir, model_dir_name, read_manifest,
                     read_metrics, run_file, versions, write_checkpoint, write_manifest, write_params, write_summary)
from .structure import STRUCTURE_KEYS, structure_metrics
from .verdict import FAILED, FINISHED, judge

#: Fields in which the models of one engine may differ; every other field is shared.
PER_MODEL_FIELDS = ("seed", "k", "eta", "out")


@dataclass
class TrainResult:
    """A finished model: ``summary`` (JSON-ready; the keys listed in docs/architecture.md plus
    details), the final ``V``, ``W`` (D x D, on the CPU, training dtype), the metrics ``history``
    (one dict per evaluation point, as in metrics.jsonl) and the ``config``."""

    summary: dict
    V: torch.Tensor
    W: torch.Tensor
    history: list = field(default_factory=list)
    config: TrainConfig | None = None


def guard_gradients(params: list, max_norm: float | None) -> torch.Tensor:
    """Per model (the parameters' leading axis M): zero the gradient when it is not finite (a
    batch that overflowed is skipped) and, with ``max_norm``, scale it to norm <= ``max_norm``.
    In place, without a host-device synchronisation; returns the (M,) mask of finite gradients.
    Each model's norm is reduced over that model's entries alone, so a model of a many-model run
    is clipped exactly as in its single run on any device."""
    # each model's squares summed on its own (M, ...) slice, in the order its single run sums them
    sq = sum(torch.stack([g.square().sum() for g in p.grad.unbind(0)]) for p in params)
    finite = torch.isfinite(sq)
    scale = finite.to(sq.dtype)
    if max_norm is not None:
        scale = scale * (max_norm / (sq.sqrt() + 1e-30)).clamp(max=1.0).nan_to_num(0.0)
    for p in params:
        shape = (-1,) + (1,) * (p.dim() - 1)
        p.grad = torch.where(finite.view(shape), p.grad, torch.zeros_like(p.grad)) * scale.view(shape)
    return finite


# ------------------------------------------------------------------------------ the engine
def _check_compatible(configs: list) -> None:
    base = configs[0].to_dict()
    for j, c in enumerate(configs[1:], 1):
        diff = [key for key, value in c.to_dict().items() if key not in PER_MODEL_FIELDS and value != base[key]]
        if diff:
            raise ValueError(f"the models of one run may differ only in {', '.join(PER_MODEL_FIELDS[:3])}; "
                             f"model {j} differs from model 0 in {', '.join(diff)}")
    keys = [(c.seed, c.k, c.eta) for c in configs]
    if len(set(keys)) != len(keys):
        raise ValueError("the models of one run must differ in (seed, k, eta); two are the same")


def _optimizer(config: TrainConfig, params) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=resolved_lr(config), momentum=0.0)
    return torch.optim.Adam(params, lr=resolved_lr(config))


def loops_trained(config: TrainConfig, iteration: int) -> int:
    """The number of loops the looped objective applies at ``iteration`` (0-based): k, or with
    ``config.loop_curriculum`` = T iterations of curriculum, ``1 + (k - 1) iteration // T`` up to
    k (the loop count grows during training, as in Yang et al. 2024's looped transformers).  A
    function of the iteration alone, so a resumed run follows the same schedule."""
    if config.mode != "looped" or not config.loop_curriculum:
        return config.k
    return min(config.k, 1 + (config.k - 1) * iteration // config.loop_curriculum)


# ------------------------------------------------------------------------------ the two gradient paths
class Gradients(NamedTuple):
    """Every model's training loss ``loss`` (M,) and its gradient in its ``V`` and ``W``, each
    (M, D, D); detached."""

    loss: torch.Tensor
    V: torch.Tensor
    W: torch.Tensor


def loop_gradients(V: torch.Tensor, W: torch.Tensor, batches: dict, configs: list, iteration: int, *,
                   workers: Executor | None = None) -> Gradients:
    """The M models' losses and gradients from one ``kernels.objective`` call per model: model j's
    on its slice ``V[j:j+1]``, ``W[j:j+1]`` and its seed's batch for its eta cut to its k, with
    ``loops_trained(configs[j], iteration)`` steps (loops), so that each is bitwise the one its
    single run computes.  The calls run on ``workers`` (an executor; None: this thread), longest
    k first.

    The arguments, shared with ``fused_gradients`` (``gradient_path`` chooses between the two):
    ``V``, ``W`` (M, D, D) detached; ``batches`` ``{seed: {eta: Batch}}`` (a ``data.BatchFeed``
    item: each seed's GD targets up to its longest k); ``configs`` the M models' ``TrainConfig``s,
    which differ only in seed, k and eta; ``iteration`` (0-based) for ``loops_trained``."""
    def one(j: int) -> tuple:
        c = configs[j]
        full = batches[c.seed][c.eta]
        batch = Batch(stat=full.stat, w_star=full.w_star, iterates=full.iterates[:, :c.k + 1])
        Vj, Wj = V[j:j + 1].detach().requires_grad_(), W[j:j + 1].detach().requires_grad_()
        loss = objective(c.mode, Vj, Wj, batch, c.n, loops_trained(c, iteration), window=c.loop_window)
        return (loss.detach(), *torch.autograd.grad(loss.sum(), (Vj, Wj)))

    order = sorted(range(len(configs)), key=lambda j: -configs[j].k)        # longest first: balanced workers
    per_model = dict(zip(order, _mapped(workers, one, order)))
    return Gradients(*(torch.cat([per_model[j][i] for j in range(len(configs))]) for i in range(3)))


def fused_gradients(V: torch.Tensor, W: torch.Tensor, batches: dict, configs: list, iteration: int, *,
                    workers: Executor | None = None) -> Gradients:
    """The M models' losses and gradients, as ``loop_gradients`` (the same arguments; ``workers``
    unused), from one ``kernels.objective`` call for all M (one forward and one backward pass,
    docs/architecture.md section 5): the models' prompts stacked (``stacked_batch``), each
    model's loss masked to its own ``loops_trained`` steps (loops) and normalised as its single
    run's.  Each loss and gradient is then its single run's to float rounding, not bitwise: the
    stacked products sum in another order.  No host-device synchronisation."""
    c = configs[0]
    ks = tuple(loops_trained(config, iteration) for config in configs)
    kmax = max(ks)
    batch = stacked_batch(batches, configs, kmax)
    counts = None if all(k == kmax for k in ks) else _device_counts(ks, V.device)
    Vf, Wf = V.detach().requires_grad_(), W.detach().requires_grad_()
    loss = objective(c.mode, Vf, Wf, batch, c.n, kmax, window=c.loop_window, ks=counts)
    return Gradients(loss.detach(), *torch.autograd.grad(loss.sum(), (Vf, Wf)))


def stacked_batch(batches: dict, configs: list, kmax: int) -> Batch:
    """The M models' batches as one: ``stat`` and ``w_star`` (M, B, ...) in model order (shared
    (B, ...) when every model reads one seed's prompts), the GD iterates (M, B, kmax + 1, d) of
    each model's (seed, eta) (a seed whose longest model is shorter padded with zeros; CoT only,
    the other objectives do not read them)."""
    first = [next(iter(batches[c.seed].values())) for c in configs]
    if len(batches) == 1:
        stat, w_star = first[0].stat, first[0].w_star
    else:
        stat, w_star = torch.stack([b.stat for b in first]), torch.stack([b.w_star for b in first])
    if configs[0].mode != "cot":
        return Batch(stat=stat, w_star=w_star, iterates=first[0].iterates)
    its = []
    for c in configs:
        it = batches[c.seed][c.eta].iterates[:, :kmax + 1]
        its.append(torch.nn.functional.pad(it, (0, 0, 0, kmax + 1 - it.shape[1])) if it.shape[1] <= kmax else it)
    return Batch(stat=stat, w_star=w_star, iterates=torch.stack(its))


@functools.lru_cache(maxsize=256)
def _device_counts(ks: tuple, device: torch.device) -> torch.Tensor:
    """``ks`` as an (M,) long tensor on ``device``, made once per tuple from fills (a tensor made
    from a list would be a host-to-device copy: a synchronisation on CUDA).  Read only."""
    return torch.stack([torch.full((), k, dtype=torch.long, device=device) for k in ks])


def _mapped(workers: Executor | None, fn, items) -> list:
    """``[fn(x) for x in items]``, on ``workers`` when given."""
    if workers is None:
        return [fn(x) for x in items]
    return list(workers.map(fn, items))


def fused_path(config: TrainConfig, models: int, device: torch.device) -> bool:
    """Whether a run of ``models`` models on ``device`` computes their losses and gradients in one
    objective call (``config.fused_models``: 'fused', or 'auto' on CUDA) rather than one call per
    model; a run of one model is its single run either way (docs/architecture.md section 5).

    >>> config = TrainConfig()
    >>> fused_path(config, 4, torch.device("cpu")), fused_path(config, 4, torch.device("cuda"))
    (False, True)
    """
    if models == 1 or config.fused_models == "loop":
        return False
    return config.fused_models == "fused" or torch.device(device).type == "cuda"


def gradient_path(config: TrainConfig, models: int, device: torch.device):
    """The gradient function of a run of ``models`` models on ``device``: ``fused_gradients``
    where ``fused_path`` says so, else ``loop_gradients``."""
    return fused_gradients if fused_path(config, models, device) else loop_gradients


def structure_step(config: TrainConfig, theory: dict | None) -> float | None:
    """The GD step a model's structure is compared with: eta (cot), or the theory's optimum for
    the mode (nocot: eta_1 = n/(n+d+1); looped: the best single step; None where the theory
    has none)."""
    if config.mode == "cot":
        return config.eta
    return None if theory is None else theory.get("step")


class Engine:
    """M models trained as one computation (module docstring).  ``configs`` differ only in seed,
    k and eta; ``out`` is the run directory (None: none).  ``on_step(engine, losses)`` (optional)
    is called after every step with the (M,) detached losses: an observer, it must not change
    the run (``training.dynamics`` records the parameters' path with it).  ``device``: where to
    run (None: ``resolve_device(config.device)``; ``resume`` passes the recorded one)."""

    def __init__(self, configs: list, *, out=None, on_step=None, device: torch.device | None = None):
        if not configs:
            raise ValueError("a run needs at least one model config")
        for c in configs:
            if not isinstance(c, TrainConfig):
                raise ValueError(f"config must be a TrainConfig, got {type(c).__name__}")
            c.validate()
        _check_compatible(configs)
        self.configs, self.base, self.M = list(configs), configs[0], len(configs)
        self.out = None if out is None else os.fspath(out)
        self.on_step = on_step
        b = self.base
        self.device = resolve_device(b.device) if device is None else torch.device(device)
        self.dtype = getattr(torch, b.dtype)
        self.model = self._initial_model()
        self.optimizer = _optimizer(b, self.model.parameters())
        self.streams = prompt_streams(self.configs, self.device, self.dtype)
        self.batches = BatchFeed(self.streams, b.prefetch and self.device.type == "cpu" and b.pool is None)
        self.gradients = gradient_path(b, self.M, self.device)    # loop_gradients or fused_gradients
        self.workers: ThreadPoolExecutor | None = None
        self.ood = ood_sigma_matrices(b)
        self.iteration = 0
        self.histories: list = [[] for _ in configs]
        self.theory: list = [None] * self.M
        self.train_seconds = 0.0
        self.seconds_before = 0.0          # whole-run seconds of earlier sessions (resume)
        # per model, since the last evaluation: [sum of finite losses, finite steps, skipped steps]
        self.acc = torch.zeros((3, self.M), dtype=torch.float64, device=self.device)
        self.loss_count = 0
        self.skipped_total = [0] * self.M
        self.last_loss = torch.full((self.M,), float("nan"), dtype=torch.float64, device=self.device)
        self.checkpoint_iteration: int | None = None     # of the last checkpoint written or loaded
        self.dirs: list | None = None                    # the models' RunDirs while a run writes them
        self._provenance: dict | None = None             # versions and git commit, looked up once
        self.last_structures: tuple | None = None        # (iteration, per-model structure) of the last evaluation
        self.started = time.perf_counter()

    def _initial_model(self) -> LSA:
        """Every model initialised as its single run: from ``seeded_generator(seed, 'init')``."""
        b = self.base
        singles = [LSA(c.d, c.param, init_scale=c.init_scale, dtype=self.dtype,
                       generator=seeded_generator(c.seed, "init", self.device)) for c in self.configs]
        if self.M == 1:
            model = singles[0]
        else:
            model = LSA(b.d, b.param, models=self.M, init_scale=b.init_scale, dtype=self.dtype,
                        generator=seeded_generator(b.seed, "init", self.device))
            with torch.no_grad():
                for j, single in enumerate(singles):
                    for mine, theirs in zip(model.parameters(), single.parameters()):
                        mine[j] = theirs[0]
        if b.init_ab is not None:
            with torch.no_grad():
                model.a.fill_(b.init_ab[0])
                model.b.fill_(b.init_ab[1])
        return model

    # -- one optimisation step of every model (no host-device synchronisation)
    def step(self) -> None:
        batches = self.batches.next(more=self.iteration + 1 < self.base.iters)
        V, W = self.model.matrices()
        losses, gV, gW = self.gradients(V.detach(), W.detach(), batches, self.configs, self.iteration,
                                        workers=self.workers)
        self.optimizer.zero_grad(set_to_none=True)
        torch.autograd.backward([V, W], [gV, gW])
        finite = guard_gradients(list(self.model.parameters()), resolved_clip(self.base))
        self.optimizer.step()
        loss = losses.double()
        ok = finite & torch.isfinite(loss)
        self.acc += torch.stack([torch.where(ok, loss, torch.zeros_like(loss)), ok.double(), (~ok).double()])
        self.last_loss = loss
        self.loss_count += 1
        self.iteration += 1
        if self.on_step is not None:
            self.on_step(self, loss)

    def _map(self, fn, items) -> list:
        """``[fn(x) for x in items]``, on the worker threads when there are several."""
        return _mapped(self.workers, fn, items)

    # -- evaluation point
    def evaluate(self) -> list:
        """One metrics row per model (and appended to its history): losses in and out of
        distribution, train loss since the last row, structure.  Raises ``TrainingDiverged`` when
        a model's parameters are not finite or its loss overflowed on every step since."""
        V, W = (A.detach() for A in self.model.matrices())
        bad = ~(torch.isfinite(V).flatten(1).all(1) & torch.isfinite(W).flatten(1).all(1))
        if bool(bad.any()):
            raise TrainingDiverged(self.iteration, "non-finite parameters" + self._which(bad.nonzero().flatten().tolist()),
                                   checkpoint=self.checkpoint_iteration)
        loss_sum, finite_steps, skipped = self.acc.tolist()
        overflowed = [j for j in range(self.M) if self.loss_count and finite_steps[j] == 0]
        if overflowed:
            raise TrainingDiverged(self.iteration, f"the training loss overflowed on all of the last "
                                                   f"{self.loss_count} iterations" + self._which(overflowed),
                                   checkpoint=self.checkpoint_iteration)
        reports = self._eval_reports(V, W, self.base.sigma)
        ood = {name: self._eval_reports(V, W, sigma) for name, sigma in self.ood.items()}
        structures = self._map(lambda j: self._structure(j, V[j], W[j]), range(self.M))
        self.last_structures = (self.iteration, structures)
        seconds = self.seconds_before + self.elapsed()
        rows = []
        for j in range(self.M):
            self.skipped_total[j] += int(skipped[j])
            rows.append({
                "iteration": self.iteration,
                "train_loss": loss_sum[j] / finite_steps[j] if self.loss_count else None,
                "train_loss_last": float(self.last_loss[j]) if self.loss_count else None,
                "skipped_steps": int(skipped[j]),
                "eval_loss": reports[j]["mean"], "eval": reports[j],
                "eval_loss_ood": {name: r[j]["mean"] for name, r in ood.items()},
                "eval_ood": {name: r[j] for name, r in ood.items()},
                "structure": None if structures[j] is None else {key: structures[j][key] for key in STRUCTURE_KEYS},
                "train_seconds": self.train_seconds, "seconds": seconds})
            self.histories[j].append(rows[-1])
        self.acc.zero_()
        self.loss_count = 0
        return rows

    def _which(self, models: list) -> str:
        return "" if self.M == 1 else f" in model(s) {models}"

    def _eval_reports(self, V: torch.Tensor, W: torch.Tensor, sigma) -> list:
        """Every model's evaluation report on covariance ``sigma``: one ``eval_losses`` pass per
        (seed, k) on the prompts of ``eval_generator(seed)`` (those a single run evaluates on),
        spread over the workers, largest k first."""
        b = self.base
        keys = sorted(dict.fromkeys((c.seed, c.k) for c in self.configs), key=lambda key: -key[1])

        def reports(key):
            idx = [j for j, c in enumerate(self.configs) if (c.seed, c.k) == key]
            losses, norms = eval_losses(b.mode, V[idx], W[idx], n=b.n, k=key[1], samples=b.eval_samples,
                                        generator=eval_generator(key[0], self.device), sigma=sigma,
                                        noise=b.noise)
            return list(zip(idx, (report_dict(r) for r in loss_reports(losses, norms))))

        out = [None] * self.M
        for pairs in self._map(reports, keys):
            for j, report in pairs:
                out[j] = report
        return out

    def _structure(self, j: int, V: torch.Tensor, W: torch.Tensor) -> dict | None:
        c = self.configs[j]
        step = structure_step(c, self.theory[j])
        if step is None:
            return None
        return structure_metrics(V, W, n=c.n, eta=step, k=c.k if c.mode == "cot" else 1,
                                 samples=c.structure_samples, seed=c.seed, device=self.device, sigma=c.sigma,
                                 noise=c.noise)

    # -- the loop
    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def run(self) -> list:
        """Train to ``iters`` (from wherever the engine stands) and return one ``TrainResult``
        per model, with the numerical settings pinned (``device.reproducible``)."""
        with reproducible(self.device):
            return self._run()

    def _run(self) -> list:
        from tqdm import tqdm
        b = self.base
        workers = worker_threads(b, self.M)
        if workers > 1:
            self.workers = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cotgd-model")
        dirs = None
        bar = None
        try:
            missing = [j for j in range(self.M) if self.theory[j] is None]
            for j, reference in zip(missing, self._map(lambda j: theory_reference(self.configs[j]), missing)):
                self.theory[j] = reference
            if self.out is not None:
                dirs = self.dirs = self._run_dirs()
                self._write_manifests(dirs, "running")
            if not self.histories[0]:
                self._record(self.evaluate(), dirs)
            show = sys.stderr.isatty() if b.progress is None else b.progress
            bar = tqdm(total=b.iters, initial=self.iteration, disable=not show, dynamic_ncols=True, leave=False,
                       desc=f"{b.mode}/{b.param}" + (f" x{self.M}" if self.M > 1 else ""))
            self.sync()
            t0 = time.perf_counter()
            while self.iteration < b.iters:
                self.step()
                bar.update(1)
                at_eval = self.iteration % b.eval_every == 0 or self.iteration == b.iters
                at_checkpoint = dirs is not None and b.checkpoint_every and self.iteration % b.checkpoint_every == 0
                if at_eval or at_checkpoint:
                    self.sync()
                    self.train_seconds += time.perf_counter() - t0
                    if at_eval:
                        rows = self.evaluate()
                        self._record(rows, dirs)
                        bar.set_postfix_str("eval " + " ".join(f"{row['eval_loss']:.4g}" for row in rows[:4]))
                    if at_checkpoint:
                        self.checkpoint()
                    self.sync()
                    t0 = time.perf_counter()
            results = self.results()
            if dirs is not None:
                self.checkpoint()
                for d, r in zip(dirs, results):
                    write_params(d.path, r.V, r.W, r.config)
                    write_summary(d.path, r.summary)
                statuses = [r.summary["status"] for r in results]
                self._write_manifests(dirs, FAILED if FAILED in statuses else FINISHED, statuses)
        except TrainingDiverged:
            self._stopped(dirs, "diverged")
            raise
        except KeyboardInterrupt:
            self._stopped(dirs, "interrupted")
            raise
        except Exception as exc:
            self._stopped(dirs, "error", f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}")
            raise
        finally:
            if bar is not None:
                bar.close()
            self.batches.shutdown()
            if self.workers is not None:
                self.workers.shutdown()
                self.workers = None
            self.dirs = None
        return results

    def _stopped(self, dirs: list | None, status: str, error: str | None = None) -> None:
        """The manifests of a run stopped before its end say so (``status``: diverged,
        interrupted, error), with the iteration reached and the checkpoint's.  A failure to
        write them does not hide the exception that stopped the run."""
        if dirs is None:
            return
        with contextlib.suppress(Exception):
            self._write_manifests(dirs, status, error=error)

    # -- run directory
    def _run_dirs(self) -> list:
        if self.M == 1:
            return [RunDir(self.out, self.histories[0])]
        return [RunDir(model_dir(self.out, j, c), self.histories[j])
                for j, c in enumerate(self.configs)]

    def _record(self, rows: list, dirs: list | None) -> None:
        if dirs is not None:
            for d, row in zip(dirs, rows):
                d.append_metrics(row)

    def manifest(self, status: str) -> dict:
        """The top manifest: status, iteration reached, iteration of the last checkpoint (where
        ``resume`` continues; None: none yet), config(s), device, versions, commit, threads,
        timings."""
        if self._provenance is None:
            self._provenance = {"versions": versions(), "git_commit": git_commit(), "platform": platform.platform()}
        out = {"status": status, "device": str(self.device), "device_record": device_record(self.device),
               "settings": run_settings(), "torch_threads": torch.get_num_threads(),
               **self._provenance,
               "iteration": self.iteration, "checkpoint_iteration": self.checkpoint_iteration,
               "timings": self.timings()}
        if self.M == 1:
            out.update(config=self.base.to_dict(), seed=self.base.seed)
        else:
            out.update(configs=[c.to_dict() for c in self.configs],
                       models=[model_dir_name(j, c) for j, c in enumerate(self.configs)])
        return out

    def _write_manifests(self, dirs: list, status: str, statuses: list | None = None, *,
                         error: str | None = None) -> None:
        """Rewrite the manifests (atomically): the top one with ``status``, each model's with
        its own (``statuses``, default ``status``); ``error``: what stopped the run."""
        top = self.manifest(status)
        if error is not None:
            top["error"] = error
        write_manifest(self.out, top)
        if self.M > 1:
            for j, d in enumerate(dirs):
                write_manifest(d.path, dict(top, config=self.configs[j].to_dict(), seed=self.configs[j].seed,
                                            configs=None, model_index=j, models=self.M,
                                            status=status if statuses is None else statuses[j]))

    def timings(self) -> dict:
        return {"seconds": self.seconds_before + self.elapsed(), "train_seconds": self.train_seconds,
                "ms_per_iteration": 1e3 * self.train_seconds / max(self.iteration, 1)}

    # -- checkpoints
    def checkpoint(self) -> None:
        V, W = self.model.matrices()
        if not (torch.isfinite(V).all() and torch.isfinite(W).all()):
            raise TrainingDiverged(self.iteration, "non-finite parameters", checkpoint=self.checkpoint_iteration)
        write_checkpoint(self.out, self.state())
        self.checkpoint_iteration = self.iteration
        if self.dirs is not None:
            self._write_manifests(self.dirs, "running")      # the manifest follows the checkpoint

    def state(self) -> dict:
        return {"configs": [c.to_dict() for c in self.configs], "iteration": self.iteration,
                "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "streams": self.batches.state(), "histories": self.histories,
                "train_seconds": self.train_seconds, "seconds": self.seconds_before + self.elapsed(),
                "acc": self.acc, "loss_count": self.loss_count, "last_loss": self.last_loss,
                "skipped_total": self.skipped_total, "theory": self.theory,
                "threads": torch.get_num_threads(), "device": device_record(self.device)}

    def load_state(self, state: dict) -> None:
        self.iteration = int(state["iteration"])
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.batches.load_state(state["streams"])
        self.histories = [list(h) for h in state["histories"]]
        self.train_seconds = float(state["train_seconds"])
        self.seconds_before = float(state["seconds"])
        self.acc = state["acc"].to(self.device).reshape(3, self.M)
        self.loss_count = int(state["loss_count"])
        self.last_loss = state["last_loss"].to(self.device).reshape(self.M)
        self.skipped_total = [int(v) for v in state["skipped_total"]]
        self.theory = list(state["theory"])
        self.checkpoint_iteration = self.iteration

    # -- results
    def results(self) -> list:
        V, W = (A.detach().cpu() for A in self.model.matrices())
        same = self._map(lambda j: self.theory_same_prompts(j), range(self.M))
        if self.last_structures is not None and self.last_structures[0] == self.iteration:
            structures = self.last_structures[1]             # the final evaluation measured them
        else:
            structures = self._map(lambda j: self._structure(j, V[j], W[j]), range(self.M))
        timings = self.timings()
        out = []
        for j, c in enumerate(self.configs):
            last, reference, structure = self.histories[j][-1], self.theory[j], structures[j]
            value = reference["value"]
            summary = {
                "final_eval_loss": last["eval_loss"],
                "theory_eval_loss": value,
                "seconds": timings["seconds"], "train_seconds": timings["train_seconds"],
                "structure": None if structure is None else {key: structure[key] for key in STRUCTURE_KEYS},
                "mode": c.mode, "param": c.param, "config": c.to_dict(), "device": str(self.device),
                "lr": resolved_lr(c), "clip_grad": resolved_clip(c), "init_scale": self.model.init_scale,
                "iterations": self.iteration, "ms_per_iteration": timings["ms_per_iteration"],
                "final_train_loss": last["train_loss"], "skipped_steps": self.skipped_total[j],
                "eval": last["eval"], "eval_ood": last["eval_ood"], "theory": reference,
                "relative_gap": None if value is None else (last["eval_loss"] - value) / value,
                "theory_same_prompts": same[j],
                "relative_gap_same_prompts": None if same[j] is None else (last["eval_loss"] - same[j]["mean"]) / same[j]["mean"],
                "learned_step": None if structure is None else structure["w24_v31"],
                "learned_contraction_step": None if structure is None else -structure["v31_w13"],
                "structure_step": structure_step(c, reference),
                "block_norms": None if structure is None else structure["block_norms"],
                "models": self.M, "model_index": j,
            }
            verdict = judge(c, last["eval"], iterations=self.iteration, same_prompts=same[j])
            summary.update(status=verdict["status"], verdict=verdict)
            if reference.get("rescaled_gd") is not None:
                summary["rescaled_gd_same_prompts"] = self._params_same_prompts(
                    j, numerics.RescaledGDOptimum(**{key: reference["rescaled_gd"][key] for key in ("c", "u", "loss")},
                                                  method="exact").params(c.d))
            out.append(TrainResult(summary=summary, V=V[j].clone(), W=W[j].clone(),
                                   history=list(self.histories[j]), config=c))
        return out

    def theory_same_prompts(self, j: int) -> dict | None:
        """The theory's model evaluated on the very prompts of model j's final evaluation (a
        paired comparison, free of the heavy-tail noise between independent samples): GD with
        step eta (cot), Theorem 3.1's parameters (nocot), GD with the best single step (looped).
        None where the theory has no such model (looped out of distribution)."""
        c = self.configs[j]
        if c.mode == "cot":
            V, W = numerics.gd_params(c.d, c.eta)
        elif c.mode == "nocot":
            V, W = numerics.nocot_params(c.d, c.n, c.sigma, noise_var=c.noise ** 2)
        elif self.theory[j].get("step") is not None:
            V, W = numerics.gd_params(c.d, self.theory[j]["step"])
        else:
            return None
        return self._params_same_prompts(j, (V, W))

    def _params_same_prompts(self, j: int, params: tuple) -> dict:
        """The evaluation report of float64 parameters ``(V, W)`` on model j's final prompts."""
        c = self.configs[j]
        V, W = (torch.as_tensor(A).unsqueeze(0) for A in params)
        losses, norms = eval_losses(c.mode, V, W, n=c.n, k=c.k, samples=c.eval_samples,
                                    generator=eval_generator(c.seed, self.device), sigma=c.sigma,
                                    noise=c.noise)
        return report_dict(loss_reports(losses, norms)[0])


# ------------------------------------------------------------------------------ threads
@contextlib.contextmanager
def torch_threads(threads: int | None):
    """Torch's CPU thread count set to ``threads`` (None: unchanged) inside the block."""
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def worker_threads(base: TrainConfig, models: int) -> int:
    """The worker threads of one engine of ``models`` models on ``base.device`` (threads inside
    one process, not the processes of ``training.sweep``): on a CPU the models' losses and
    gradients (loop path) and evaluations are independent, so they run on ``base.threads``
    workers (None: every core this process may use), at most one per model, each with one torch
    thread.  One model, or CUDA: one (the device runs the products).

    >>> worker_threads(TrainConfig(device="cpu", threads=4), 2), worker_threads(TrainConfig(device="cpu"), 1)
    (2, 1)
    """
    if models == 1 or resolve_device(base.device).type != "cpu":
        return 1
    cores = base.threads if base.threads is not None else len(_usable_cores())
    return max(1, min(cores, models))


def _usable_cores() -> list:
    try:
        return list(os.sched_getaffinity(0))
    except AttributeError:                      # not Linux
        return list(range(os.cpu_count() or 1))


def _engine_threads(configs: list) -> int | None:
    """Torch threads of a run: one per worker when the models run on several workers, else the
    config's (``config.resolved_threads``)."""
    return 1 if worker_threads(configs[0], len(configs)) > 1 else resolved_threads(configs[0])


# ------------------------------------------------------------------------------ entry points
def held_run(out: str) -> str | None:
    """A one-line description of the run that directory ``out`` holds, or None when it holds
    none (missing, empty, or without any run file)."""
    if not os.path.isdir(out) or not any(os.path.exists(os.path.join(out, name)) for name in RUN_FILES):
        return None
    manifest = read_manifest(out) or {}
    status = str(manifest.get("status", "unreadable"))
    configs = manifest.get("configs") or [manifest.get("config") or {}]
    iters = configs[0].get("iters") if isinstance(configs[0], dict) else None
    models = f"{len(configs)} models, " if len(configs) > 1 else ""
    article = "an" if status[:1] in tuple("aeiou") else "a"
    return f"{article} {status} run ({models}iteration {manifest.get('iteration', '?')} of {iters})"


def _fresh_run_dir(out: str, engine: Engine, overwrite: bool) -> None:
    """Start ``out`` afresh: the manifest (with the config) first, so that resume can restart a
    run killed at any point.  A directory that holds a run is refused (``RunExists``, nothing
    touched) unless ``overwrite``; then the previous run's files are removed so that they are
    never taken for this run's."""
    held = held_run(out)
    if held is not None and not overwrite:
        finished = (read_manifest(out) or {}).get("status") in ENDED
        keep = (f"read it with training.load_run({out!r})" if finished
                else f"continue it with cotgd train --resume {out}")
        raise RunExists(f"{out!r} holds {held}; {keep}, or overwrite it with --force (library: overwrite=True)")
    os.makedirs(out, exist_ok=True)
    for name in RUN_FILES:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(out, name))
    if os.path.isdir(os.path.join(out, MODELS_DIR)):
        shutil.rmtree(os.path.join(out, MODELS_DIR))
    remove_stale_temporaries(out)
    write_manifest(out, engine.manifest("running"))


def train(config: TrainConfig, *, overwrite: bool = False) -> TrainResult:
    """Train one model as ``config`` says and return its ``TrainResult``.

    ``summary`` holds ``final_eval_loss`` (mean over ``eval_samples`` fresh in-distribution
    prompts at the last iteration), ``theory_eval_loss`` (``evaluate.theory_reference``),
    ``seconds`` (whole run), ``train_seconds`` (optimisation loop only), ``structure``
    (``v31_w13``, ``w24_v31``, ``offdiag_energy``, ``functional_deviation``) and details
    (``eval``, ``eval_ood``, ``theory``, ``theory_same_prompts``, ``relative_gap``,
    ``ms_per_iteration``, ``learned_step``, ``block_norms``, ...).  Raises ValueError for a bad
    config field, ``RunExists`` when ``config.out`` holds a run and not ``overwrite``, and
    ``TrainingDiverged`` when the loss or parameters become non-finite.  Warns (``warnings``)
    before it starts when a CoT run's eta is past the stable step of the predicted spectrum
    (``evaluate.step_stability``)."""
    if not isinstance(config, TrainConfig):
        raise ValueError(f"config must be a TrainConfig, got {type(config).__name__}")
    engine = Engine([config], out=config.out)
    _warn_unstable(engine.configs)
    with torch_threads(_engine_threads(engine.configs)):
        if config.out is not None:
            _fresh_run_dir(config.out, engine, overwrite)
        return engine.run()[0]


def _warn_unstable(configs: list) -> None:
    for c in configs:
        verdict = step_stability(c)
        if c.mode == "cot" and not verdict["stable"]:
            warnings.warn(f"eta = {c.eta:g} is past the stable step {verdict['bound']:.4g} of the predicted "
                          f"spectrum ({verdict['rule']}): GD, and a model that "
                          f"learns it, diverges on many prompts", RuntimeWarning, stacklevel=3)


def model_grid_configs(base: TrainConfig, *, seeds=None, ks=None, etas=None) -> list[TrainConfig]:
    """The configs of the models of one many-model run (``train_models``, one ``Engine``):
    ``base`` with every combination of ``seeds``, ``etas`` and ``ks`` (in that nesting order;
    None keeps base's single value), each without a run directory of its own.  Raises
    ValueError naming the bad argument (not a non-empty list of distinct valid values).

    >>> [(c.seed, c.k) for c in model_grid_configs(TrainConfig(), seeds=[0, 1], ks=[2, 3])]
    [(0, 2), (0, 3), (1, 2), (1, 3)]
    """
    if not isinstance(base, TrainConfig):
        raise ValueError(f"base must be a TrainConfig, got {type(base).__name__}")
    base.validate()
    seeds = _values("seeds", seeds, base.seed, lambda v: check_int("seeds", v, 0))
    ks = _values("ks", ks, base.k, lambda v: check_int("ks", v, 1))
    etas = _values("etas", etas, base.eta, lambda v: check_positive_finite("etas", v))
    return [dataclasses.replace(base, seed=s, eta=e, k=k, out=None) for s in seeds for e in etas for k in ks]


def _values(name: str, values, default, check) -> list:
    if values is None:
        return [default]
    try:
        values = list(values)
    except TypeError:
        raise ValueError(f"{name} must be a list of values, got {values!r}") from None
    if not values:
        raise ValueError(f"{name} must not be empty")
    values = [check(v) for v in values]
    if len(set(values)) != len(values):
        raise ValueError(f"{name} must not repeat a value, got {values!r}")
    return values


def train_models(base: TrainConfig, *, seeds=None, ks=None, etas=None, overwrite: bool = False) -> list[TrainResult]:
    """Train every combination of ``seeds`` x ``etas`` x ``ks`` (None: base's value) of the run
    ``base`` as one computation (module docstring) and return one ``TrainResult`` per model, in
    ``model_grid_configs`` order.  Model j ends where ``train(model_grid_configs(...)[j])`` ends
    (same init, prompts, gradients and updates: bitwise on the loop path, to float rounding on
    the fused one, ``base.fused_models``, the default on CUDA), and its summary has the same
    keys, plus ``models`` (M) and ``model_index``; ``seconds``, ``train_seconds`` and
    ``ms_per_iteration`` are the whole run's.

    ``base.out``: the run directory (``rundir``: one directory per model under ``models/``, one
    checkpoint for all; ``resume`` continues it; a directory holding a run is refused unless
    ``overwrite``).  Threads: ``worker_threads(base, M)`` workers with one torch thread each;
    with a single worker, torch threads as ``train``; the caller's thread count is restored.
    Raises ValueError for a bad argument and ``TrainingDiverged`` when a model's parameters
    become non-finite."""
    configs = model_grid_configs(base, seeds=seeds, ks=ks, etas=etas)
    if len(configs) == 1:
        return [train(dataclasses.replace(configs[0], out=base.out), overwrite=overwrite)]
    engine = Engine(configs, out=base.out)
    _warn_unstable(configs)
    with torch_threads(_engine_threads(configs)):
        if base.out is not None:
            _fresh_run_dir(base.out, engine, overwrite)
        return engine.run()


def _deprecated(old: str, new):
    """``new`` under its former name ``old``, warning (DeprecationWarning) at each call."""
    def alias(*args, **kwargs):
        warnings.warn(f"training.engine.{old} is deprecated; use {new.__name__}", DeprecationWarning, stacklevel=2)
        return new(*args, **kwargs)
    alias.__name__ = alias.__qualname__ = old
    alias.__doc__ = f"Deprecated name of ``{new.__name__}``."
    return alias


#: Deprecated names of ``model_grid_configs`` and ``worker_threads`` ("sweep" names only the grid
#: of processes of ``training.sweep``).
sweep_configs = _deprecated("sweep_configs", model_grid_configs)
sweep_workers = _deprecated("sweep_workers", worker_threads)


def resume(out_dir):
    """Continue the run in ``out_dir`` to its configured number of iterations: a ``TrainResult``
    for a run of one model, the list of them for a run of several; bitwise the result of an
    uninterrupted run on the same device.

    From ``checkpoint.pt`` when there is one.  Without one, from the start with the config(s) in
    ``manifest.json`` (a run killed before its first checkpoint), saying so with a
    ``NoCheckpointWarning`` (a RuntimeWarning: "no checkpoint in DIR: starting from iteration 0"); a directory with
    neither file is not a run (FileNotFoundError: nothing is started in it).  Either way with the
    torch thread count the run had (CPU results depend on it), unless ``config.threads`` fixes
    it, and on the device it recorded (``device.resume_device``: a clear error when that device
    is missing here).  A run that ended (manifest status finished or failed) is read back
    (``finished_results``), not recomputed, with or without its checkpoint.  Temporary files of
    writes a kill interrupted (``.tmp-*``) are deleted.  A damaged, foreign or inconsistent
    manifest or checkpoint raises ``RunFileError`` (a ValueError) naming it."""
    if not isinstance(out_dir, (str, os.PathLike)):
        raise ValueError(f"out_dir must be a run directory path, got {out_dir!r}")
    out_dir = os.fspath(out_dir)
    if not os.path.isdir(out_dir):
        raise FileNotFoundError(f"no checkpoint to resume: {out_dir!r} is " + (
            "a file, not a run directory" if os.path.exists(out_dir) else "no such directory"))
    path = run_file(out_dir, CHECKPOINT)
    where = run_file(out_dir, MANIFEST)
    manifest = load_manifest(out_dir)
    remove_stale_temporaries(out_dir)
    ended = manifest is not None and manifest.get("status") in ENDED
    if not os.path.isfile(path):
        if ended:
            return finished_results(out_dir)
        if manifest is None:
            raise FileNotFoundError(f"no checkpoint to resume in {out_dir!r}: it is not a run directory "
                                    f"(checkpoint.pt and manifest.json missing); start a run with "
                                    f"cotgd train --out {out_dir}")
        configs = manifest_configs(manifest, where)
        reached = manifest.get("iteration")
        warnings.warn(f"no checkpoint in {out_dir}: starting from iteration 0 with the config of its manifest.json"
                      + (f" (the run had reached iteration {reached})" if isinstance(reached, int) and reached > 0
                         else ""), NoCheckpointWarning, stacklevel=2)
        device = resume_device(manifest.get("device_record"), configs[0].device)
        saved = manifest.get("torch_threads")
        threads = configs[0].threads if configs[0].threads is not None or not isinstance(saved, int) or saved < 1 \
            else saved
        if len(configs) == 1:
            configs = [dataclasses.replace(configs[0], out=out_dir)]
        engine = Engine(configs, out=out_dir, device=device)
        with torch_threads(threads):
            _fresh_run_dir(out_dir, engine, overwrite=True)
            results = engine.run()
        return results[0] if len(configs) == 1 else results
    state = load_checkpoint(path)
    configs = [config_from(c, path) for c in state["configs"]]
    if manifest is not None and (isinstance(manifest.get("config"), dict) or isinstance(manifest.get("configs"), list)):
        # both through TrainConfig, so that a field added since the run started compares equal
        mine = [{k: v for k, v in c.to_dict().items() if k != "out"} for c in manifest_configs(manifest, where)]
        theirs = [{k: v for k, v in c.to_dict().items() if k != "out"} for c in configs]
        if mine != theirs:
            raise RunFileError(path, "it belongs to another run: its config differs from manifest.json's")
    if ended:
        _repair_metrics(out_dir, manifest, state["histories"])
        return finished_results(out_dir)
    if len(configs) == 1:
        configs = [dataclasses.replace(configs[0], out=out_dir)]
    engine = Engine(configs, out=out_dir, device=resume_device(state.get("device"), configs[0].device))
    try:
        engine.load_state(state)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        message = one_line(exc, 200)
        raise RunFileError(path, f"it does not fit its config: {message}") from None
    threads = configs[0].threads if configs[0].threads is not None else state["threads"]
    with torch_threads(threads):
        results = engine.run()
    return results[0] if len(configs) == 1 else results


def _model_dirs(out_dir: str, manifest: dict) -> list:
    if isinstance(manifest.get("configs"), list):
        return [os.path.join(out_dir, MODELS_DIR, name) for name in manifest.get("models", [])]
    return [out_dir]


def _repair_metrics(out_dir: str, manifest: dict, histories: list) -> None:
    """Rewrite a model's metrics.jsonl from the checkpoint's history when it does not parse (a
    line torn by a crash of another kind, e.g. power loss)."""
    for path, history in zip(_model_dirs(out_dir, manifest), histories):
        try:
            rows = read_metrics(path)
        except RunFileError:
            rows = None
        if rows is None or len(rows) != len(history):
            RunDir(path, history)


def finished_results(out_dir) -> TrainResult | list:
    """The results of the finished run in ``out_dir``, read from its files (``load_run``): a
    ``TrainResult`` for a run of one model, the list of them for a run of several."""
    out_dir = os.fspath(out_dir)
    manifest = load_manifest(out_dir) or {}
    many = isinstance(manifest.get("configs"), list)
    results = []
    for path in _model_dirs(out_dir, manifest):
        run = load_run(path)
        for name, value in ((PARAMS, run.V), (SUMMARY, run.summary)):
            if value is None:
                raise RunFileError(run_file(path, name), f"the file is missing, but the run is marked "
                                                             f"{manifest.get('status', 'finished')}")
        results.append(TrainResult(summary=run.summary, V=run.V, W=run.W, history=run.metrics, config=run.config))
    return results if many else results[0]
