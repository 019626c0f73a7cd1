"""Training objectives of the one-layer LSA (theory.md section 3), computed from sufficient
statistics so that a step costs the same for any number of examples n.

Notation: ``V``, ``W`` are (M, D, D) (M models); a batch holds ``G = Z_data Z_data^T / n`` on the
(x, y) rows (B, d+1, d+1), ``w*`` (B, d) and the GD iterates ``w_0 .. w_k`` (B, k+1, d).
CoT columns are ``c_l = (0, 0, w_l, 1)``.  Since ``Z Z^T = Z_data Z_data^T + sum_l c_l c_l^T``, the
last column of ``f(Z_i)`` with ``Z_i = [Z_data, c_0 .. c_i]`` is

    c_i + V (n G + sum_{l <= i} c_l c_l^T) W c_i / n,

and only its w-block is read.  Every loss returns a vector (M,): one value per model.
"""
from __future__ import annotations

import torch

from theory import Layout

from .data import Batch

MODES = ("cot", "nocot", "looped")

#: Training-time divergence threshold of the looped map (``looped_estimate``): an entry of
#: ``Z Z^T / n`` above 1e6 means the prompt has diverged (in distribution they are O(d)); one more
#: loop from there stays far below float32's overflow for parameters of order 1.
LOOPED_FREEZE = 1e6


def teacher_forced_predictions(V: torch.Tensor, W: torch.Tensor, stat: torch.Tensor,
                               iterates: torch.Tensor, n: int) -> torch.Tensor:
    """The w-block of the last column of ``f(Z_i)`` for every step ``i`` at once (teacher
    forcing, theory.md section 3): ``V``, ``W`` (M, D, D), ``stat`` (B, d+1, d+1), ``iterates``
    the given CoT history ``w_0 .. w_{k-1}`` (B, k, d) -> predictions of ``w_1 .. w_k``,
    (M, B, k, d).

    With ``u_i = W c_i`` and ``K[l, i] = c_l^T u_i`` (only ``l <= i`` kept: step i sees the columns
    ``c_0 .. c_i``, a causal k x k mask), the update of step i is ``V_w r_i`` where
    ``r_i = (G u_i[xy], (1/n) sum_{l<=i} K[l, i] w_l, (1/n) sum_{l<=i} K[l, i])`` in the
    (x, y | w | one) rows (data columns have zero w and one rows, CoT columns zero x and y rows).
    Tokens are kept as rows so that each product with a block of V or W is one matrix product over
    all prompts and steps; no loop over steps or prompts.
    """
    B, k, d = iterates.shape
    M = V.shape[0]
    L = Layout(d)
    xyw, w, one = slice(0, 2 * d + 1), L.w, L.one
    flat = iterates.reshape(B * k, d)
    # u_i = W c_i = W[:, w] w_i + W[:, one] for all prompts and steps, as rows: (x, y, w) part and one part
    u_xyw = (flat @ W[:, xyw, w].transpose(-1, -2) + W[:, xyw, one].transpose(-1, -2)).view(M, B, k, 2 * d + 1)
    u_one = (flat @ W[:, one, w].transpose(-1, -2) + W[:, one, one].transpose(-1, -2)).view(M, B, k, 1)
    # one per-prompt product gives G u_i on the (x, y) rows and u_i[w] . w_l:  [u_xy | u_w] [[G, 0], [0, w^T]]
    R = iterates.new_zeros((B, 2 * d + 1, d + 1 + k))
    R[:, :d + 1, :d + 1] = stat
    R[:, d + 1:, d + 1:] = iterates.transpose(-1, -2)
    P = u_xyw @ R                                                       # (M, B, k, d+1+k)
    mask = torch.ones((k, k), dtype=V.dtype, device=V.device).tril() / n
    K = (P[..., d + 1:] + u_one) * mask                                 # K[l, i] / n at [i, l], l <= i only
    update = (P[..., :d + 1].reshape(M, B * k, d + 1) @ V[:, w, :d + 1].transpose(-1, -2)   # V_w,xy G u_xy
              + (K @ iterates).view(M, B * k, d) @ V[:, w, w].transpose(-1, -2)          # V_ww sum_l K w_l / n
              + K.sum(-1).view(M, B * k, 1) @ V[:, w, one].transpose(-1, -2))            # V_w,one sum_l K / n
    return iterates.unsqueeze(0) + update.view(M, B, k, d)


def cot_loss(V: torch.Tensor, W: torch.Tensor, batch: Batch, n: int) -> torch.Tensor:
    """CoT objective with teacher forcing (theory.md section 3): mean over steps ``i = 0 .. k-1``
    and prompts of ``(1/2) ||pred_i - w_{i+1}||^2``, pred_i the w-block of the last column of
    ``f(Z_i)`` with the true GD history.  Returns (M,)."""
    its = batch.iterates
    pred = teacher_forced_predictions(V, W, batch.stat, its[:, :-1, :], n)
    return 0.5 * (pred - its[:, 1:, :]).square().sum(-1).mean(dim=(-1, -2))


def nocot_loss(V: torch.Tensor, W: torch.Tensor, batch: Batch, n: int) -> torch.Tensor:
    """No-CoT objective (theory.md section 3): one pass on ``Z_0`` (last column ``c_0 = (0,0,0,1)``),
    ``(1/2) ||pred - w*||^2`` averaged over prompts.  Returns (M,)."""
    w0 = batch.w_star.new_zeros((batch.w_star.shape[0], 1, batch.w_star.shape[-1]))
    pred = teacher_forced_predictions(V, W, batch.stat, w0, n)[..., 0, :]
    return 0.5 * (pred - batch.w_star).square().sum(-1).mean(-1)


def initial_gram(stat: torch.Tensor, D: int, n: int) -> torch.Tensor:
    """``Z_0 Z_0^T / n`` (B, D, D) for ``Z_0 = [Z_data, c_0]``, ``c_0 = (0, 0, 0, 1)``."""
    B, d1, _ = stat.shape
    G = stat.new_zeros((B, D, D))
    G[:, :d1, :d1] = stat
    G[:, D - 1, D - 1] = 1.0 / n
    return G


def looped_estimate(V: torch.Tensor, W: torch.Tensor, stat: torch.Tensor, k: int, n: int, *,
                    freeze_above: float | None = None) -> torch.Tensor:
    """The w-block of the last column after applying the layer k times in place to ``Z_0``
    (looped transformer, theory.md section 3): (M, B, d).

    One layer maps ``Z -> A Z`` with ``A = I + V (Z Z^T / n) W``; so with ``G = Z Z^T / n`` and z the
    last column, ``G <- A G A^T`` and ``z <- A z``, exactly, at O(D^3) per prompt and layer.

    ``freeze_above`` (training only): a prompt whose ``G`` has an entry above this value has
    diverged; it is frozen for the remaining loops (its estimate stays the last one computed), so
    that its loss stays finite and its gradient still pushes the model back toward stability
    instead of overflowing into inf / nan.  None: the exact map (evaluation)."""
    M, D = V.shape[0], V.shape[-1]
    B = stat.shape[0]
    d = (D - 2) // 2
    G = initial_gram(stat, D, n).unsqueeze(0).expand(M, -1, -1, -1)       # (M, B, D, D)
    z = G.new_zeros((M, B, D, 1))
    z[:, :, D - 1, 0] = 1.0
    Vt = V.transpose(-1, -2)
    eye = torch.eye(D, dtype=V.dtype, device=V.device)
    for loop in range(k):
        if freeze_above is not None:
            active = (G.detach().abs().amax(dim=(-1, -2)) <= freeze_above).view(M, B, 1, 1)
            G_in = torch.where(active, G, torch.zeros_like(G))          # frozen prompts: a harmless input
        else:
            G_in = G
        # V G W for all prompts as two large products: G V^T = (V G)^T (G symmetric), then (V G) W
        VG = (G_in.reshape(M, B * D, D) @ Vt).view(M, B, D, D).transpose(-1, -2)
        A = (VG.reshape(M, B * D, D) @ W).view(M, B, D, D) + eye
        z_next = A @ z
        G_next = A @ G_in @ A.transpose(-1, -2) if loop < k - 1 else G
        if freeze_above is not None:
            z_next = torch.where(active, z_next, z)
            G_next = torch.where(active, G_next, G)
        z, G = z_next, G_next
    return z[:, :, Layout(d).w, 0]


def looped_loss(V: torch.Tensor, W: torch.Tensor, batch: Batch, n: int, k: int,
                freeze_above: float | None = LOOPED_FREEZE) -> torch.Tensor:
    """Looped objective (theory.md section 3): the layer applied k times in place to ``Z_0``, loss
    ``(1/2) ||w-block of the last column - w*||^2`` on the final estimate only.  Returns (M,).
    Prompts that diverge past ``freeze_above`` are frozen (``looped_estimate``)."""
    pred = looped_estimate(V, W, batch.stat, k, n, freeze_above=freeze_above)
    return 0.5 * (pred - batch.w_star).square().sum(-1).mean(-1)


def objective(mode: str, V: torch.Tensor, W: torch.Tensor, batch: Batch, n: int, k: int) -> torch.Tensor:
    """The training loss (M,) of ``mode`` ('cot', 'nocot' or 'looped') on ``batch``."""
    if mode == "cot":
        return cot_loss(V, W, batch, n)
    if mode == "nocot":
        return nocot_loss(V, W, batch, n)
    if mode == "looped":
        return looped_loss(V, W, batch, n, k)
    raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
