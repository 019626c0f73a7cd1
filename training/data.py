"""Prompts for in-context weight prediction, drawn on the training device (docs/theory.md section 1).

A prompt: ``w* ~ N(0, I_d)``, ``x_j ~ N(0, Sigma)`` (``Sigma = I`` in distribution), ``y_j = <w*,
x_j>`` (plus ``eps_j ~ N(0, s^2)`` with label noise, ``noise = s``, docs/theory.md section 16),
drawn from an explicit ``torch.Generator`` (no global RNG), so the same seed gives the same prompts
on the same device.  The objectives see a prompt only through

* the data statistic ``G = Z_data Z_data^T / n`` on the (x, y) rows, i.e.
  ``[[S, S w*], [w*^T S, w*^T S w*]]`` with ``S = X X^T / n`` (docs/theory.md sections 3, 4;
  with noise ``X y / n = S w* + X eps / n``), and
* the GD iterates ``w_0 = 0, w_{i+1} = w_i - eta (S w_i - X y / n)`` (docs/theory.md section 2),

which is why one training step costs the same for any n.  A ``Batch`` holds the two (and ``w*``):

>>> g = seeded_generator(0, "data")
>>> batch = sample_batch(4, d=2, n=5, eta=0.4, k=3, generator=g, dtype=torch.float64)
>>> tuple(batch.stat.shape), tuple(batch.iterates.shape)
((4, 3, 3), (4, 4, 2))

Training draws its batches through ``PromptStream`` (one per seed: fresh prompts every step, or
shuffled passes over a fixed pool) and ``BatchFeed`` (every seed's batch of one iteration, the
next one optionally drawn on a background thread); ``prompt_streams`` makes the streams of a run.
"""
from __future__ import annotations

import contextlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

import numerics

from theory.validation import check_int, check_nonnegative_finite, check_positive_finite


def derived_seed(seed: int, stream: str) -> int:
    """A 63-bit seed for the named ``stream`` ('data', 'init', 'eval', 'structure', ...) of a run
    with ``seed``: independent random streams from one user seed (numpy ``SeedSequence``).

    >>> derived_seed(0, "data") == derived_seed(0, "data") != derived_seed(0, "eval")
    True
    """
    seed = check_int("seed", seed, 0)
    key = [seed] + [ord(ch) for ch in stream]
    return int(np.random.SeedSequence(key).generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def seeded_generator(seed: int, stream: str, device: torch.device | str = "cpu") -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded with ``derived_seed(seed, stream)``."""
    return torch.Generator(device=device).manual_seed(derived_seed(seed, stream))


@dataclass
class Prompts:
    """A batch of B prompts: ``X`` (B, d, n), ``w_star`` (B, d), labels ``y = X^T w* + eps``
    (B, n) and the label noise ``eps`` (B, n; None without noise, docs/theory.md section 16)."""

    X: torch.Tensor
    w_star: torch.Tensor
    y: torch.Tensor
    eps: torch.Tensor | None = None

    @property
    def S(self) -> torch.Tensor:
        """``S = X X^T / n``, (B, d, d)."""
        n = self.X.shape[-1]
        return self.X @ self.X.transpose(-1, -2) / n

    @property
    def data_statistic(self) -> torch.Tensor:
        """``Z_data Z_data^T / n`` on the (x, y) rows: (B, d + 1, d + 1), docs/theory.md section 3.

        ``Z_data = [X; y^T]`` are the n data columns' (x, y) rows (their w and one rows are 0)."""
        return gram_statistic(self.S, self.w_star, *self.noise_terms)

    @property
    def noise_terms(self) -> tuple:
        """``(X eps / n, eps^T eps / n)``, (B, d) and (B,), or ``(None, None)`` without noise."""
        return noise_terms(self.X, self.eps)


def noise_terms(X: torch.Tensor, eps: torch.Tensor | None) -> tuple:
    """``(X eps / n, eps^T eps / n)`` of prompts ``X`` (B, d, n) with label noise ``eps`` (B, n):
    what the noise adds to ``X y / n`` and ``y^T y / n`` (docs/theory.md section 16);
    ``(None, None)`` for ``eps=None``."""
    if eps is None:
        return None, None
    n = X.shape[-1]
    return (X @ eps.unsqueeze(-1)).squeeze(-1) / n, eps.square().sum(-1) / n


def gram_statistic(S: torch.Tensor, w_star: torch.Tensor, Xeps: torch.Tensor | None = None,
                   eps_sq: torch.Tensor | None = None) -> torch.Tensor:
    """``numerics.data_statistic`` on the device: ``Z_data Z_data^T / n = [[S, S w*], [w*^T S,
    w*^T S w*]]`` (B, d+1, d+1) from ``S`` (B, d, d) and ``w*`` (B, d) (docs/theory.md sections 1
    and 3; tests/training/test_data.py checks it against numerics).  Label noise (``noise_terms``,
    docs/theory.md section 16): ``X y / n = S w* + Xeps``, ``y^T y / n = w*^T S w* + 2 w*^T Xeps +
    eps_sq``."""
    B, d = w_star.shape
    h = S @ w_star.unsqueeze(-1)
    yy = w_star.unsqueeze(-2) @ h
    if Xeps is not None:
        yy = yy + (2 * (w_star * Xeps).sum(-1) + eps_sq).view(B, 1, 1)
        h = h + Xeps.unsqueeze(-1)
    stat = S.new_empty((B, d + 1, d + 1))
    stat[:, :d, :d] = S
    stat[:, :d, d:] = h
    stat[:, d:, :d] = h.transpose(-1, -2)
    stat[:, d:, d:] = yy
    return stat


def sigma_root(sigma, d: int, *, dtype=torch.float64, device=None, name: str = "sigma") -> torch.Tensor | None:
    """``Sigma^{1/2}`` (d, d) as a tensor: ``numerics.covariance_root`` (the one validation of a
    covariance: symmetric positive semi-definite, singular allowed, docs/theory.md section 10;
    ValueError naming ``name`` otherwise); ``None`` stays ``None`` (``Sigma = I``)."""
    if isinstance(sigma, torch.Tensor):
        sigma = sigma.detach().cpu().double().numpy()
    root = numerics.covariance_root(sigma, d, name=name)
    return None if root is None else torch.as_tensor(root).to(dtype=dtype, device=device)


def sample_prompts(batch: int, d: int, n: int, *, generator: torch.Generator,
                   sigma_sqrt: torch.Tensor | None = None, dtype=torch.float32, noise: float = 0.0) -> Prompts:
    """Fresh prompts on ``generator.device``: ``X = Sigma^{1/2} N(0, I)`` (B, d, n), then
    ``w* ~ N(0, I_d)`` (B, d), ``y = X^T w*`` (docs/theory.md section 1) plus, with ``noise = s >
    0``, label noise ``eps ~ N(0, s^2 I_n)`` drawn last (docs/theory.md section 16).  Draw order is
    fixed (X, w*, eps), so a generator state determines the batch; without noise nothing is drawn
    after ``w*``."""
    X, w_star, eps = _draw(batch, d, n, generator, sigma_sqrt, dtype, noise)
    y = (w_star.unsqueeze(-2) @ X).squeeze(-2)
    if eps is not None:
        y = y + eps
    return Prompts(X=X, w_star=w_star, y=y, eps=eps)


def _draw(batch: int, d: int, n: int, generator: torch.Generator, sigma_sqrt, dtype, noise: float = 0.0) -> tuple:
    """``X`` (B, d, n), then ``w*`` (B, d), then ``eps`` (B, n; None for ``noise = 0``): the
    draws of ``sample_prompts``."""
    batch = check_int("batch", batch)
    d = check_int("d", d)
    n = check_int("n", n)
    noise = check_nonnegative_finite("noise", noise)
    device = generator.device
    X = torch.randn((batch, d, n), generator=generator, device=device, dtype=dtype)
    if sigma_sqrt is not None:
        X = sigma_sqrt.to(dtype=dtype, device=device) @ X
    w_star = torch.randn((batch, d), generator=generator, device=device, dtype=dtype)
    eps = None
    if noise:
        eps = noise * torch.randn((batch, n), generator=generator, device=device, dtype=dtype)
    return X, w_star, eps


def exact_noise_var(noise):
    """The label-noise variance ``s^2`` of a standard deviation ``s`` as an exact sympy number for
    theory's functions (0.5 -> 1/4; ``theory.validation.check_noise_var``, docs/theory.md section 16)."""
    from theory.validation import check_noise_var
    return check_noise_var("noise", noise, std=True)


def gd_iterates(S: torch.Tensor, w_star: torch.Tensor, eta: float, k: int,
                Xeps: torch.Tensor | None = None) -> torch.Tensor:
    """GD iterates ``w_0 = 0, w_{i+1} = w_i - eta S (w_i - w*)`` (docs/theory.md section 2), batched
    over prompts: ``S`` (..., d, d), ``w_star`` (..., d) -> (..., k + 1, d).  A loop over the k
    steps, never over prompts: ``w_{i+1} = (I - eta S) w_i + eta S w*`` with the prompts on the
    last (contiguous) axis, where a step is one elementwise product and one sum (a batched
    matrix-vector product is slower for d x d blocks this small).  ``Xeps``: label noise's
    ``X eps / n`` (..., d); GD then runs on the noisy prompt, ``w_{i+1} = (I - eta S) w_i + eta
    (S w* + X eps / n)`` (docs/theory.md section 16)."""
    eta = check_positive_finite("eta", eta)
    k = check_int("k", k, 0)
    d = w_star.shape[-1]
    lead = w_star.shape[:-1]
    St = S.reshape(-1, d, d).permute(1, 2, 0)                                # (d, d, B)
    At = (torch.eye(d, dtype=S.dtype, device=S.device).unsqueeze(-1) - eta * St).contiguous()
    b = eta * (St * w_star.reshape(-1, d).T.unsqueeze(0)).sum(1)            # eta S w*, (d, B)
    if Xeps is not None:
        b = b + eta * Xeps.reshape(-1, d).T
    out = w_star.new_zeros((k + 1, d, St.shape[-1]))
    for i in range(k):
        out[i + 1] = torch.mul(At, out[i].unsqueeze(0)).sum(1).add_(b)
    return out.permute(2, 0, 1).reshape(lead + (k + 1, d))


@dataclass
class Batch:
    """What the objectives read from a batch of prompts (docs/theory.md sections 3-5):
    ``stat`` = ``Z_data Z_data^T / n`` on the (x, y) rows (B, d+1, d+1), ``w_star`` (B, d) and the
    GD iterates ``w_0 .. w_k`` (B, k+1, d)."""

    stat: torch.Tensor
    w_star: torch.Tensor
    iterates: torch.Tensor


def make_batch(prompts: Prompts, eta: float, k: int) -> Batch:
    """The statistic and the GD targets of ``prompts`` for step ``eta`` and ``k`` CoT steps (GD on
    the prompts' labels, noisy ones included; ``w_star`` stays the truth the loss is measured
    against, docs/theory.md section 16)."""
    return _batch(prompts.X, prompts.w_star, eta, k, prompts.eps)


def _batch(X: torch.Tensor, w_star: torch.Tensor, eta: float, k: int, eps: torch.Tensor | None = None) -> Batch:
    S = X @ X.transpose(-1, -2) / X.shape[-1]
    Xeps, eps_sq = noise_terms(X, eps)
    return Batch(stat=gram_statistic(S, w_star, Xeps, eps_sq), w_star=w_star,
                 iterates=gd_iterates(S, w_star, eta, k, Xeps))


def sample_batch(batch: int, d: int, n: int, eta: float, k: int, *, generator: torch.Generator,
                 sigma_sqrt: torch.Tensor | None = None, dtype=torch.float32, noise: float = 0.0) -> Batch:
    """``make_batch(sample_prompts(...), eta, k)``: one training batch of fresh prompts (the same
    draws and numbers, without forming the labels y, which the batch does not need)."""
    X, w_star, eps = _draw(batch, d, n, generator, sigma_sqrt, dtype, noise)
    return _batch(X, w_star, eta, k, eps)


# ------------------------------------------------------------------------ the training streams
class PromptStream:
    """The training prompts of one seed, drawn from ``seeded_generator(seed, 'data', device)``:
    each ``draw()`` gives ``{eta: Batch}`` with the GD targets ``w_0 .. w_kmax`` for every step in
    ``etas`` (a model with fewer steps reads the first ``k + 1`` iterates, the very numbers a
    shorter run computes).  ``batch``, ``d``, ``n``, ``noise``, ``dtype`` and ``sigma_sqrt`` are
    ``sample_prompts``'s.

    Fresh prompts every draw by default; with ``pool`` a set of ``pool`` prompts is drawn once
    and served in shuffled passes (each prompt once per pass, a remainder smaller than a batch
    left out of that pass).  ``state()`` / ``load_state()`` make a stream resumable:

    >>> stream = PromptStream(0, batch=4, d=2, n=5, etas=[0.3, 0.5], kmax=2, pool=10)
    >>> saved = stream.state()
    >>> first = stream.draw()
    >>> sorted(first), tuple(first[0.3].iterates.shape)
    ([0.3, 0.5], (4, 3, 2))
    >>> stream.load_state(saved)
    >>> torch.equal(stream.draw()[0.5].stat, first[0.5].stat)
    True
    """

    def __init__(self, seed: int, *, batch: int, d: int, n: int, etas: list, kmax: int, noise: float = 0.0,
                 pool: int | None = None, device: torch.device | str = "cpu", dtype=torch.float32,
                 sigma_sqrt: torch.Tensor | None = None):
        self.batch, self.d, self.n, self.noise, self.pool_size = batch, d, n, noise, pool
        self.etas, self.kmax, self.dtype, self.sigma_sqrt = list(etas), kmax, dtype, sigma_sqrt
        self.generator = seeded_generator(seed, "data", device)
        self.pool = None
        if pool is not None:
            self.pool = self._batches(pool)
            self._new_pass()

    def _batches(self, size: int) -> dict:
        prompts = sample_prompts(size, self.d, self.n, generator=self.generator, sigma_sqrt=self.sigma_sqrt,
                                 noise=self.noise, dtype=self.dtype)
        return {eta: make_batch(prompts, eta, self.kmax) for eta in self.etas}

    def _new_pass(self) -> None:
        self.pass_state = self.generator.get_state()
        self.perm = torch.randperm(self.pool_size, generator=self.generator, device=self.generator.device)
        self.position = 0

    def draw(self) -> dict:
        """The next ``{eta: Batch}``."""
        if self.pool is None:
            return self._batches(self.batch)
        if self.position + self.batch > self.pool_size:
            self._new_pass()
        idx = self.perm[self.position:self.position + self.batch]
        self.position += self.batch
        return {eta: Batch(stat=b.stat[idx], w_star=b.w_star[idx], iterates=b.iterates[idx])
                for eta, b in self.pool.items()}

    def state(self) -> dict:
        """What ``load_state`` needs to draw the next batch again: the generator's state (with a
        pool: at the start of the current pass, and the position in it)."""
        if self.pool is None:
            return {"generator": self.generator.get_state()}
        return {"generator": self.pass_state, "position": self.position}

    def load_state(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        if self.pool is not None:
            self._new_pass()
            self.position = int(state["position"])


def prompt_streams(configs: list, device: torch.device | str = "cpu", dtype=torch.float32) -> dict:
    """The ``PromptStream`` of every seed of the run of ``configs`` (``TrainConfig``s that share
    everything but seed, k and eta), ``{seed: stream}`` in the order the seeds first appear; a
    seed's stream draws the targets of each of its etas up to its largest k, on ``configs[0]``'s
    covariance (``sigma_root``), batch, pool and label noise."""
    base = configs[0]
    sigma_sqrt = sigma_root(base.sigma, base.d, dtype=dtype, device=device)
    streams = {}
    for seed in dict.fromkeys(c.seed for c in configs):
        mine = [c for c in configs if c.seed == seed]
        streams[seed] = PromptStream(seed, batch=base.batch, d=base.d, n=base.n, noise=base.noise, pool=base.pool,
                                     etas=list(dict.fromkeys(c.eta for c in mine)), kmax=max(c.k for c in mine),
                                     device=device, dtype=dtype, sigma_sqrt=sigma_sqrt)
    return streams


class BatchFeed:
    """The batches of ``streams`` (``{seed: PromptStream}``, or anything with ``draw``, ``state``
    and ``load_state``) iteration by iteration: ``next()`` hands out ``{seed: stream.draw()}``.

    With ``prefetch`` the next draw runs on a background thread while the caller computes; the
    draws are the same, in the same order, from the same generators, so the numbers do not
    depend on ``prefetch``.  ``state()`` is the streams' state from which the first batch not yet
    handed out is drawn (what a checkpoint stores): while a draw is in flight, the state before
    it.  ``shutdown()`` discards a draw in flight (the streams go back to ``state()``) and stops
    the thread; later batches are drawn inline.

    >>> feed = BatchFeed({0: PromptStream(0, batch=4, d=2, n=5, etas=[0.4], kmax=1)}, prefetch=True)
    >>> saved = feed.state()
    >>> first = feed.next(more=True)          # the second draw starts on the thread
    >>> feed.shutdown()
    >>> feed.load_state(saved)
    >>> torch.equal(feed.next(more=False)[0][0.4].stat, first[0][0.4].stat)
    True
    """

    def __init__(self, streams: dict, prefetch: bool):
        self.streams = streams
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cotgd-data") if prefetch else None
        self.pending = None
        self.state_before_pending = None

    def draw(self) -> dict:
        return {seed: stream.draw() for seed, stream in self.streams.items()}

    def next(self, more: bool) -> dict:
        """The next batches; with ``more`` (another will be asked for) start drawing those."""
        if self.pending is None:
            batches = self.draw()
        else:
            pending, self.pending = self.pending, None
            batches = pending.result()
        if more and self.pool is not None:
            self.state_before_pending = self._state()
            self.pending = self.pool.submit(self.draw)
        return batches

    def _state(self) -> dict:
        return {seed: stream.state() for seed, stream in self.streams.items()}

    def state(self) -> dict:
        if self.pending is not None:
            self.pending.result()               # the thread is done with the generators
            return self.state_before_pending
        return self._state()

    def load_state(self, state: dict) -> None:
        self.discard()
        for seed, stream in self.streams.items():
            stream.load_state(state[seed])

    def discard(self) -> None:
        """Wait for a draw in flight and undo it: the streams are back at ``state()``."""
        if self.pending is not None:
            pending, self.pending = self.pending, None
            with contextlib.suppress(Exception):     # a failed draw: its error is not this caller's
                pending.result()
            self.load_state(self.state_before_pending)

    def shutdown(self) -> None:
        """Discard a draw in flight and stop the thread; later batches are drawn inline."""
        self.discard()
        if self.pool is not None:
            self.pool.shutdown()
            self.pool = None
