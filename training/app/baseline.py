"""A straightforward implementation of CoT training, written from the formula (docs/theory.md
section 3), kept as the reference that ``training.app.bench`` times the project's training against.

Per batch of prompts it does what the formula says, with nothing precomputed:

* GD targets by a Python loop of GD steps on the data itself,
  ``w_{i+1} = w_i - eta X (X^T w_i - y) / n`` (docs/theory.md section 2);
* ``Z_0 = [[X, 0], [y^T, 0], [0, w_0], [0, 1]]`` (D x (n+1)), then for ``i = 0 .. k-1`` the model
  output ``f(Z_i) = Z_i + V Z_i (Z_i^T W Z_i) / n`` evaluated in full, the w-block of its last
  column compared with ``w_{i+1}``, and the column ``(0, 0, w_{i+1}, 1)`` appended (teacher
  forcing) to give ``Z_{i+1}``;
* the mean of ``(1/2) ||pred_i - w_{i+1}||^2`` over prompts and steps, an Adam step.

Batched over prompts (and over the model axis M), as anyone writing it in torch would; a step
costs O(k D (n + k)^2) per prompt against O(k D^2) for ``kernels.cot_loss``.  Tests check that
its loss equals ``kernels.cot_loss`` on the same data (tests/training/app/test_bench.py).
"""
from __future__ import annotations

import torch

from theory import Layout
from theory.validation import check_int, check_positive_finite

from ..config import PAPER
from ..data import Prompts, sample_prompts, seeded_generator
from ..model import LSA


def straightforward_gd_targets(X: torch.Tensor, y: torch.Tensor, eta: float, k: int) -> list:
    """GD iterates ``w_0 = 0, w_{i+1} = w_i - eta X (X^T w_i - y) / n`` (docs/theory.md section 2)
    by a Python loop over the steps, from the data ``X`` (B, d, n) and ``y`` (B, n): a list of
    k + 1 tensors (B, d)."""
    eta = check_positive_finite("eta", eta)
    k = check_int("k", k, 0)
    n = X.shape[-1]
    w = X.new_zeros(X.shape[:-1])
    out = [w]
    for _ in range(k):
        residual = (X.transpose(-1, -2) @ w.unsqueeze(-1)).squeeze(-1) - y      # X^T w - y, (B, n)
        w = w - eta * (X @ residual.unsqueeze(-1)).squeeze(-1) / n
        out.append(w)
    return out


def straightforward_cot_loss(V: torch.Tensor, W: torch.Tensor, prompts: Prompts, eta: float, k: int) -> torch.Tensor:
    """The CoT training loss (docs/theory.md section 3) evaluated literally: ``V``, ``W`` (M, D, D),
    ``prompts`` with ``X`` (B, d, n), ``y`` (B, n) -> (M,), the mean over prompts and steps
    ``i = 0 .. k-1`` of ``(1/2) ||w-block of f(Z_i)[:, -1] - w_{i+1}||^2``, the token matrix
    ``Z_i`` grown column by column and ``f`` evaluated in full at every step."""
    k = check_int("k", k)
    X, y = prompts.X, prompts.y
    B, d, n = X.shape
    L = Layout(d)
    targets = straightforward_gd_targets(X, y, eta, k)
    Z = X.new_zeros((B, L.D, n + 1))
    Z[:, L.x, :n] = X
    Z[:, L.y, :n] = y.unsqueeze(-2)
    Z[:, L.one, n] = 1.0                                    # last column (0, 0, w_0, 1), w_0 = 0
    Vm, Wm = V.unsqueeze(1), W.unsqueeze(1)                 # (M, 1, D, D) against (B, D, N)
    total = 0.0
    for i in range(k):
        F = Z + Vm @ Z @ (Z.transpose(-1, -2) @ Wm @ Z) / n                  # f(Z_i), (M, B, D, N)
        pred = F[..., L.w, -1]                                              # (M, B, d)
        total = total + 0.5 * (pred - targets[i + 1]).square().sum(-1).mean(-1)
        column = X.new_zeros((B, L.D, 1))
        column[:, L.w, 0] = targets[i + 1]
        column[:, L.one, 0] = 1.0
        Z = torch.cat([Z, column], dim=-1)
    return total / k


class StraightforwardTrainer:
    """CoT training of the full LSA with Adam, every step by ``straightforward_cot_loss`` on a
    fresh batch (``data.sample_prompts``): the baseline of ``training.app.bench``.  Same model, init
    and data stream as ``engine.train`` for the same seed (``seeded_generator(seed, 'init')`` and
    ``'data'``); ``step()`` does one iteration.  Defaults: the paper's setting, ``training.PAPER``."""

    def __init__(self, *, d: int = PAPER.d, n: int = PAPER.n, k: int = PAPER.k, eta: float = PAPER.eta,
                 batch: int = PAPER.batch, lr: float = PAPER.lr, seed: int = 0, device: str | torch.device = "cpu",
                 dtype=torch.float32):
        self.d, self.n, self.k = check_int("d", d), check_int("n", n), check_int("k", k)
        self.eta = check_positive_finite("eta", eta)
        self.batch = check_int("batch", batch)
        self.model = LSA(self.d, "full", generator=seeded_generator(seed, "init", device), dtype=dtype)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=check_positive_finite("lr", lr))
        self.generator = seeded_generator(seed, "data", device)
        self.dtype = dtype

    def step(self) -> torch.Tensor:
        """One Adam step on a fresh batch; returns the (M,) loss before the step (detached)."""
        prompts = sample_prompts(self.batch, self.d, self.n, generator=self.generator, dtype=self.dtype)
        V, W = self.model.matrices()
        loss = straightforward_cot_loss(V, W, prompts, self.eta, self.k)
        self.optimizer.zero_grad(set_to_none=True)
        loss.sum().backward()
        self.optimizer.step()
        return loss.detach()
