"""Evaluation of trained LSA parameters on fresh prompts (docs/theory.md sections 2, 3 and 7).

CoT models are evaluated autoregressively: each generated estimate ``w_{i+1}`` (the w-block of
the last output column) is appended as the column ``(0, 0, w_{i+1}, 1)``.  The rollout carries
the running statistic ``G_i = Z_i Z_i^T / n`` (in the reduced form of ``cot_rollout``: d x (d+1)
per prompt) and adds ``c c^T / n`` per generated column, so one step costs O(D^2) per prompt
whatever n and k.  No-CoT is one pass on
``Z_0``; looped is the layer applied k times in place.  Evaluation runs in float64.

Losses are summarised by ``numerics.loss_report`` (mean, se, median, q10, q90, diverged_frac, ...)
with numerics' divergence rule, so training and numerics report the same statistics.
"""
from __future__ import annotations

import numpy as np
import torch

import numerics
from theory.validation import check_int

from .data import sample_prompts, seeded_generator, sigma_root
from .device import resolve_device
from .objectives import MODES, looped_estimate

#: Prompts per evaluation chunk: bounds the (M, chunk, D, D) running statistic.
EVAL_CHUNK = 8192


def cot_rollout(V: torch.Tensor, W: torch.Tensor, stat: torch.Tensor, k: int, n: int) -> torch.Tensor:
    """Autoregressive CoT generation (docs/theory.md section 3) from ``w_0 = 0``: ``V``, ``W``
    (M, D, D), ``stat`` = ``Z_data Z_data^T / n`` on the (x, y) rows (B, d+1, d+1) -> the model's
    iterates ``w_0 .. w_k``, (M, B, k+1, d).

    With ``G = Z_i Z_i^T / n`` and ``c = (0, 0, w_i, 1)`` the last column of ``f(Z_i)`` is
    ``c + V G W c``; its w-block is ``w_{i+1}``, and the new column ``c'`` adds ``c' c'^T / n`` to
    G.  G is block diagonal: the constant data block ``stat`` on the (x, y) rows and the running
    block ``Gamma`` of the CoT columns on the (w, one) rows.  Only the w-rows of ``V G W c`` are
    read, and c lives on the (w, one) rows, so with ``c_wo = (w_i, 1)`` the step is

        w_{i+1} = w_i + A c_wo + T P c_wo,   A = V[w, xy] stat W[xy, wo],   P = W[wo, wo],
        T = V[w, wo] Gamma = (1/n) sum_{l <= i} (V[w, wo] c_l) c_l^T   (d x (d+1) per prompt),

    with A fixed per prompt and T updated by one outer product per generated column: O(d^2) per
    prompt and step, whatever n and k.  Prompts sit on the last (contiguous) axis, where every
    per-prompt product is one elementwise product and a sum."""
    k = check_int("k", k, 0)
    M, D = V.shape[0], V.shape[-1]
    d = (D - 2) // 2
    d1 = d + 1
    B = stat.shape[0]
    Vw = V[:, d1:D - 1, :]                                                   # (M, d, D): rows of V that write w
    A = (Vw[:, :, :d1].unsqueeze(1) @ stat.unsqueeze(0) @ W[:, :d1, d1:].unsqueeze(1))
    A = A.permute(0, 2, 3, 1).contiguous()                                   # (M, d, d+1, B)
    P = W[:, d1:, d1:]                                                       # (M, d+1, d+1)
    Vwo = Vw[:, :, d1:]                                                      # (M, d, d+1)
    c = stat.new_zeros((M, d1, B))
    c[:, d] = 1.0                                                            # c_0 = (w_0, 1) = (0, 1)
    T = (Vwo @ c).unsqueeze(2) * c.unsqueeze(1) / n                          # (M, d, d+1, B)
    out = stat.new_empty((k + 1, M, d, B))
    out[0] = 0.0
    for i in range(k):
        step = (A * c.unsqueeze(1)).sum(2) + (T * (P @ c).unsqueeze(1)).sum(2)   # (M, d, B)
        c = torch.cat([c[:, :d] + step, c[:, d:]], 1)
        out[i + 1] = c[:, :d]
        T += (Vwo @ c).unsqueeze(2) * c.unsqueeze(1) / n
    return out.permute(1, 3, 0, 2)


def final_estimate(mode: str, V: torch.Tensor, W: torch.Tensor, stat: torch.Tensor, k: int, n: int) -> torch.Tensor:
    """The model's final estimate of ``w*`` (M, B, d): ``cot`` after k generated steps, ``nocot``
    after one pass on ``Z_0``, ``looped`` after k loops (docs/theory.md section 3)."""
    if mode == "cot":
        return cot_rollout(V, W, stat, k, n)[..., -1, :]
    if mode == "nocot":
        return cot_rollout(V, W, stat, 1, n)[..., -1, :]
    if mode == "looped":
        return looped_estimate(V, W, stat, k, n)
    raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")


def eval_generator(seed: int, device: torch.device) -> torch.Generator:
    """The generator of evaluation prompts for ``seed``: separate from the training stream (a
    different seed derived with numpy's SeedSequence), re-created for every evaluation so that
    every evaluation point of a run sees the same prompts."""
    return seeded_generator(seed, "eval", device)


def eval_losses(mode: str, V: torch.Tensor, W: torch.Tensor, *, n: int, k: int, samples: int,
                generator: torch.Generator, sigma=None, chunk: int = EVAL_CHUNK) -> tuple[np.ndarray, np.ndarray]:
    """Per-prompt losses ``(1/2) ||w_hat - w*||^2`` and ``||w*||^2`` on ``samples`` fresh prompts
    (float64, drawn from ``generator`` on its device, chunk by chunk): arrays (M, samples) and
    (samples,).  Non-finite errors become ``inf``."""
    samples = check_int("samples", samples, 1)
    chunk = check_int("chunk", chunk, 1)
    V = V.detach().to(device=generator.device, dtype=torch.float64)
    W = W.detach().to(device=generator.device, dtype=torch.float64)
    d = (V.shape[-1] - 2) // 2
    root = sigma_root(sigma, d, device=generator.device)
    losses, norms = [], []
    for start in range(0, samples, chunk):
        size = min(chunk, samples - start)
        prompts = sample_prompts(size, d, n, generator=generator, sigma_sqrt=root, dtype=torch.float64)
        est = final_estimate(mode, V, W, prompts.data_statistic, k, n)
        sq = (est - prompts.w_star).square().sum(-1)
        sq = torch.where(torch.isnan(sq), torch.full_like(sq, float("inf")), sq)
        losses.append((sq / 2).cpu())
        norms.append(prompts.w_star.square().sum(-1).cpu())
    return torch.cat(losses, dim=-1).numpy(), torch.cat(norms).numpy()


def loss_reports(losses: np.ndarray, w_star_sq: np.ndarray) -> list:
    """One ``numerics.LossReport`` per model from ``eval_losses``' arrays, with numerics'
    divergence rule (``numerics.diverged_mask``)."""
    return [numerics.loss_report(row, numerics.diverged_mask(2 * row, w_star_sq)) for row in losses]


def report_dict(report) -> dict:
    """A ``LossReport`` as a plain JSON-ready dict (its mapping keys)."""
    return {key: (int(report[key]) if key in ("samples", "diverged") else float(report[key])) for key in report}


def _as_models(V, W) -> tuple[torch.Tensor, torch.Tensor, bool]:
    V, W = _as_matrix("V", V), _as_matrix("W", W)
    single = V.dim() == 2
    if single:
        V, W = V.unsqueeze(0), W.unsqueeze(0)
    if V.dim() != 3 or V.shape != W.shape or V.shape[-1] != V.shape[-2] or V.shape[-1] % 2 or V.shape[-1] < 4:
        raise ValueError(f"V and W must both be (D, D) or (M, D, D) with D = 2d + 2, got "
                         f"{tuple(V.shape)} and {tuple(W.shape)}")
    return V, W, single


def _as_matrix(name: str, value) -> torch.Tensor:
    try:
        out = torch.as_tensor(value)
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"{name} must be a (D, D) or (M, D, D) matrix, got {value!r:.40}") from None
    if not (out.is_floating_point() or out.dtype in (torch.int32, torch.int64)):
        raise ValueError(f"{name} must be a real matrix, got dtype {out.dtype}")
    return out


def evaluate_params(V, W, *, d: int, n: int, k: int, samples: int, seed: int, sigma=None,
                    mode: str = "cot", device: str | torch.device = "cpu", chunk: int = EVAL_CHUNK):
    """Evaluation loss of LSA parameters on ``samples`` fresh prompts (float64), as
    ``numerics.LossReport`` (mean, se, median, q10, q90, diverged_frac, ...).

    ``V``, ``W``: (D, D) (one model: one report) or (M, D, D) (a list of M reports), tensors or
    arrays, ``D = 2d + 2``.  ``mode``: 'cot' (k generated steps), 'nocot' (one pass) or 'looped'
    (k loops).  ``sigma``: covariance of x (None: identity, in distribution).  Prompts come from
    ``eval_generator(seed)``: the same seed gives the same prompts."""
    d = check_int("d", d)
    n = check_int("n", n)
    k = check_int("k", k, 0)
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    V, W, single = _as_models(V, W)
    if V.shape[-1] != 2 * d + 2:
        raise ValueError(f"V must be {2 * d + 2} x {2 * d + 2} for d = {d}, got {tuple(V.shape[-2:])}")
    device = resolve_device(device)
    losses, norms = eval_losses(mode, V, W, n=n, k=k, samples=samples, generator=eval_generator(seed, device),
                                sigma=sigma, chunk=chunk)
    reports = loss_reports(losses, norms)
    return reports[0] if single else reports
