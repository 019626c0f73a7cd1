"""Many models as one computation: ``train_models(base, seeds=..., ks=..., etas=...)``.

A sweep over seeds, numbers of CoT steps k and GD steps eta (e.g. Figure 3: k = 10, 20, 30, 40 for
three seeds) trains all its models in one loop: one ``LSA(models=M)`` holding every model's (V, W),
one Adam optimiser, one backward pass per iteration on the sum of the M losses.  The losses are
independent and Adam, like the gradient guard, acts per parameter entry, so each model follows
exactly the run ``train.train`` would give it alone:

* model ``j`` with ``(seed, k, eta)`` starts from ``LSA`` initialised by ``seeded_generator(seed,
  'init')`` and draws its prompts from ``seeded_generator(seed, 'data')``, as a single run does;
* models with the same seed see the same prompts (a single run with that seed would draw the
  same ones), so prompts are drawn once per seed, GD targets once per (seed, eta) up to the
  largest k; a model with fewer steps reads the first ``k + 1`` iterates, which are the very
  numbers a shorter run computes;
* each model's loss is ``objectives.objective`` on its own (V, W) and its data, so its gradient
  is the one of its single run.

What is shared is the sampling, the optimiser and the evaluation passes, not the arithmetic of the
objective: on a CPU the objective is compute-bound and M models cost about M times one.  The
models' losses and gradients are independent, so on a CPU they run on one worker thread per core
(``sweep_workers``), each model on its own detached (V, W), and one backward pass through
``LSA.matrices`` collects them; the numbers are those of the serial loop, bitwise.
tests/training/test_batched.py checks model by model against ``train``.
"""
from __future__ import annotations

import dataclasses
import os
import time
from concurrent.futures import ThreadPoolExecutor

import torch

from theory.validation import check_int, check_positive_finite

from .data import Batch, make_batch, sample_prompts, seeded_generator, sigma_root
from .device import resolve_device
from .errors import TrainingDiverged
from .evaluate import eval_generator, eval_losses, loss_reports, report_dict
from .model import LSA
from .objectives import objective
from .structure import STRUCTURE_KEYS, structure_metrics
from .config import DTYPES, TrainConfig, ood_sigma_matrices, resolved_clip, resolved_lr, resolved_threads
from .train import (TrainResult, guard_gradients,
                    theory_reference)


def sweep_configs(base: TrainConfig, *, seeds=None, ks=None, etas=None) -> list[TrainConfig]:
    """The configs of a sweep: ``base`` with every combination of ``seeds``, ``etas`` and ``ks``
    (in that nesting order; None keeps base's single value).  Raises ValueError naming the bad
    argument (not a non-empty list of distinct valid values)."""
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


class _Sweep:
    """State of a batched sweep: the M configs, the batched model, optimiser, per-seed data."""

    def __init__(self, configs: list[TrainConfig]):
        base = configs[0]
        self.configs = configs
        self.base = base
        self.M = len(configs)
        self.device = resolve_device(base.device)
        self.dtype = DTYPES[base.dtype]
        self.model = LSA(base.d, base.param, models=self.M, init_scale=base.init_scale, dtype=self.dtype,
                         generator=seeded_generator(base.seed, "init", self.device))
        with torch.no_grad():                   # every model's init is its single run's
            for j, c in enumerate(configs):
                single = LSA(c.d, c.param, init_scale=c.init_scale, dtype=self.dtype,
                             generator=seeded_generator(c.seed, "init", self.device))
                for mine, theirs in zip(self.model.parameters(), single.parameters()):
                    mine[j] = theirs[0]
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=resolved_lr(base))
        self.sigma_sqrt = sigma_root(base.sigma, base.d, dtype=self.dtype, device=self.device)
        seeds = list(dict.fromkeys(c.seed for c in configs))
        self.generators = {s: seeded_generator(s, "data", self.device) for s in seeds}
        # (seed, eta) -> [(k, model index)], and the largest k of each seed
        self.groups: dict = {}
        for j, c in enumerate(configs):
            self.groups.setdefault((c.seed, c.eta), []).append((c.k, j))
        self.kmax = {s: max(c.k for c in configs if c.seed == s) for s in seeds}
        self.order = sorted(range(self.M), key=lambda j: -configs[j].k)     # longest first: balanced workers
        self.pool: ThreadPoolExecutor | None = None
        self.iteration = 0
        self.train_seconds = 0.0
        self.acc = torch.zeros((3, self.M), dtype=torch.float64, device=self.device)
        self.loss_count = 0
        self.histories: list = [[] for _ in configs]
        self.ood = ood_sigma_matrices(base)

    def step(self) -> None:
        """One Adam step of all M models (no host-device synchronisation): the seeds' batches,
        then every model's loss and gradient on its own detached (V, W), spread over the
        workers (largest k first), then one backward pass through ``matrices()``."""
        b = self.base
        V, W = self.model.matrices()
        Vd, Wd = V.detach(), W.detach()
        batches = dict(self._map(self._seed_batches, list(self.generators)))
        grads = dict(self._map(lambda j: (j, self._model_grad(j, Vd, Wd, batches)), self.order))
        losses = torch.cat([grads[j][0] for j in range(self.M)])
        gV = torch.cat([grads[j][1] for j in range(self.M)])
        gW = torch.cat([grads[j][2] for j in range(self.M)])
        self.optimizer.zero_grad(set_to_none=True)
        torch.autograd.backward([V, W], [gV, gW])
        finite = guard_gradients(list(self.model.parameters()), resolved_clip(b))
        self.optimizer.step()
        loss = losses.detach().double()
        ok = finite & torch.isfinite(loss)
        self.acc += torch.stack([torch.where(ok, loss, torch.zeros_like(loss)), ok.double(), (~ok).double()])
        self.loss_count += 1
        self.iteration += 1

    def _map(self, fn, items) -> list:
        """``[fn(x) for x in items]``, on the worker threads when there are several."""
        if self.pool is None:
            return [fn(x) for x in items]
        return list(self.pool.map(fn, items))

    def _seed_batches(self, seed: int) -> tuple:
        """(seed, {eta: Batch up to the seed's largest k}): the prompts a single run with this
        seed draws at this iteration, and their GD targets."""
        b = self.base
        prompts = sample_prompts(b.batch, b.d, b.n, generator=self.generators[seed], sigma_sqrt=self.sigma_sqrt,
                                 dtype=self.dtype)
        etas = dict.fromkeys(eta for (s, eta) in self.groups if s == seed)
        return seed, {eta: make_batch(prompts, eta, self.kmax[seed]) for eta in etas}

    def _model_grad(self, j: int, V: torch.Tensor, W: torch.Tensor, batches: dict) -> tuple:
        """Model j's loss (1,) and its gradient in its (V, W), each (1, D, D), on its batch: the
        numbers its single run computes."""
        c = self.configs[j]
        full = batches[c.seed][c.eta]
        batch = Batch(stat=full.stat, w_star=full.w_star, iterates=full.iterates[:, :c.k + 1])
        Vj, Wj = V[j:j + 1].detach().requires_grad_(), W[j:j + 1].detach().requires_grad_()
        loss = objective(self.base.mode, Vj, Wj, batch, self.base.n, c.k)
        gV, gW = torch.autograd.grad(loss.sum(), (Vj, Wj))
        return loss.detach(), gV, gW

    def evaluate(self) -> None:
        """Append one history row per model (the fields of ``train``'s metrics rows that do not
        need the theory: losses in and out of distribution, train loss since the last row)."""
        V, W = self.model.matrices()
        V, W = V.detach(), W.detach()
        bad = ~(torch.isfinite(V).flatten(1).all(1) & torch.isfinite(W).flatten(1).all(1))
        if bool(bad.any()):
            raise TrainingDiverged(self.iteration, f"non-finite parameters in model(s) "
                                                   f"{bad.nonzero().flatten().tolist()}")
        loss_sum, finite_steps, skipped = self.acc.tolist()
        reports, ood = self._eval_reports(V, W, None), {name: self._eval_reports(V, W, sigma)
                                                       for name, sigma in self.ood.items()}
        for j in range(self.M):
            train_loss = loss_sum[j] / finite_steps[j] if self.loss_count and finite_steps[j] else None
            self.histories[j].append({
                "iteration": self.iteration, "train_loss": train_loss, "skipped_steps": int(skipped[j]),
                "eval_loss": reports[j]["mean"], "eval": reports[j],
                "eval_loss_ood": {name: r[j]["mean"] for name, r in ood.items()},
                "eval_ood": {name: r[j] for name, r in ood.items()},
                "train_seconds": self.train_seconds})
        self.acc.zero_()
        self.loss_count = 0

    def _eval_reports(self, V, W, sigma) -> list:
        """Evaluation reports of every model: one ``eval_losses`` pass per (seed, k), on the
        prompts of ``eval_generator(seed)`` (those a single run evaluates on), the passes spread
        over the workers (largest k first)."""
        b = self.base
        keys = sorted(dict.fromkeys((c.seed, c.k) for c in self.configs), key=lambda key: -key[1])

        def reports(key):
            seed, k = key
            idx = [j for j, c in enumerate(self.configs) if (c.seed, c.k) == key]
            losses, norms = eval_losses(b.mode, V[idx], W[idx], n=b.n, k=k, samples=b.eval_samples,
                                        generator=eval_generator(seed, self.device), sigma=sigma)
            return list(zip(idx, (report_dict(r) for r in loss_reports(losses, norms))))

        out = [None] * self.M
        for pairs in self._map(reports, keys):
            for j, report in pairs:
                out[j] = report
        return out

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def run(self, theory: bool) -> list[TrainResult]:
        b = self.base
        started = time.perf_counter()
        self.evaluate()
        self.sync()
        t0 = time.perf_counter()
        while self.iteration < b.iters:
            self.step()
            if self.iteration % b.eval_every == 0 or self.iteration == b.iters:
                self.sync()
                self.train_seconds += time.perf_counter() - t0
                self.evaluate()
                self.sync()
                t0 = time.perf_counter()
        return self.results(theory, time.perf_counter() - started)

    def results(self, theory: bool, seconds: float) -> list[TrainResult]:
        V, W = self.model.matrices()
        V, W = V.detach().cpu(), W.detach().cpu()
        out = []
        for j, c in enumerate(self.configs):
            reference = theory_reference(c) if theory else None
            step = c.eta if c.mode == "cot" else (reference or {}).get("step")
            structure = (structure_metrics(V[j], W[j], n=c.n, eta=step, k=c.k if c.mode == "cot" else 1,
                                           samples=c.structure_samples, seed=c.seed, device=self.device,
                                           sigma=c.sigma) if step is not None else None)
            last = self.histories[j][-1]
            summary = {
                "final_eval_loss": last["eval_loss"],
                "theory_eval_loss": None if reference is None else reference["value"],
                "seconds": seconds, "train_seconds": self.train_seconds,
                "ms_per_iteration": 1e3 * self.train_seconds / max(self.iteration, 1),
                "structure": None if structure is None else {key: structure[key] for key in STRUCTURE_KEYS},
                "block_norms": None if structure is None else structure["block_norms"],
                "mode": c.mode, "param": c.param, "config": c.to_dict(), "device": str(self.device),
                "iterations": self.iteration, "final_train_loss": last["train_loss"],
                "skipped_steps": sum(row["skipped_steps"] for row in self.histories[j]),
                "eval": last["eval"], "eval_ood": last["eval_ood"], "theory": reference,
                "models": self.M, "model_index": j,
            }
            out.append(TrainResult(summary=summary, V=V[j].clone(), W=W[j].clone(),
                                   history=list(self.histories[j]), config=c))
        return out


def train_models(base: TrainConfig, *, seeds=None, ks=None, etas=None, theory: bool = False) -> list[TrainResult]:
    """Train every combination of ``seeds`` x ``etas`` x ``ks`` (None: base's value) of the run
    ``base`` as one batched computation (module docstring) and return one ``TrainResult`` per
    model, in ``sweep_configs`` order.

    Model j ends where ``train(sweep_configs(...)[j])`` ends (same init, prompts, gradients and
    Adam updates; equal to rounding, tests/training/test_batched.py).  Each summary has
    ``final_eval_loss``, ``eval``, ``eval_ood``, ``structure`` and ``block_norms`` as ``train``'s,
    ``seconds`` / ``train_seconds`` / ``ms_per_iteration`` of the whole batched run, ``models`` (M)
    and ``model_index``; ``theory_eval_loss`` and ``theory`` (``train.theory_reference``) only with
    ``theory=True`` (a Monte Carlo per model), else None; structure metrics of no-CoT / looped
    models need the theory's step and are None without it.  ``base.out``, ``checkpoint_every``
    and ``progress`` are not used (no run directory).  Threads: ``sweep_workers(base, M)``
    worker threads with one torch thread each; with a single worker, torch threads as ``train``
    (``train.resolved_threads``); the caller's torch thread count is restored.  Raises
    ValueError for a bad argument and ``TrainingDiverged`` when a model's parameters become
    non-finite."""
    configs = sweep_configs(base, seeds=seeds, ks=ks, etas=etas)
    if theory not in (True, False):
        raise ValueError(f"theory must be True or False, got {theory!r}")
    workers = sweep_workers(base, len(configs))
    before = torch.get_num_threads()
    threads = 1 if workers > 1 else resolved_threads(base)
    if threads is not None:
        torch.set_num_threads(threads)
    sweep = None
    try:
        sweep = _Sweep(configs)
        if workers > 1:
            sweep.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cotgd-sweep")
        return sweep.run(theory)
    finally:
        if sweep is not None and sweep.pool is not None:
            sweep.pool.shutdown()
        torch.set_num_threads(before)


def sweep_workers(base: TrainConfig, models: int) -> int:
    """Worker threads of a sweep of ``models`` models on ``base.device``.  On a CPU the models'
    losses and gradients are independent, so they run on ``base.threads`` workers (None: every
    core this process may use), at most one per model, each with one torch thread: on the
    2-core test machine two workers train Figure 3's 12 models 1.5x faster than one (108
    against 159 ms per iteration, ``cotgd bench``), where two torch threads inside each product
    gained about 1.2x.  On CUDA: one worker (the device runs the products)."""
    if resolve_device(base.device).type != "cpu":
        return 1
    cores = base.threads if base.threads is not None else len(_usable_cores())
    return max(1, min(cores, models))


def _usable_cores() -> list:
    try:
        return list(os.sched_getaffinity(0))
    except AttributeError:                      # not Linux
        return list(range(os.cpu_count() or 1))
