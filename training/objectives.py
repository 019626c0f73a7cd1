"""Training objectives of the one-layer LSA (docs/theory.md section 3), computed from sufficient
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
    forcing, docs/theory.md section 3): ``V``, ``W`` (M, D, D), ``stat`` (B, d+1, d+1), ``iterates``
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


def teacher_forced_step(V: torch.Tensor, W: torch.Tensor, stat: torch.Tensor, iterates: torch.Tensor,
                        steps: torch.Tensor, n: int) -> torch.Tensor:
    """The prediction of ``w_{s+1}`` for one step ``s = steps[b]`` per prompt (teacher forcing,
    docs/theory.md section 3): ``V``, ``W`` (M, D, D), ``stat`` (B, d+1, d+1), ``iterates`` (B, k, d)
    of which prompt b's ``w_0 .. w_{s}`` are read, ``steps`` (B,) integers in [0, k) -> (M, B, d).

    Equal to ``teacher_forced_predictions(V, W, stat, iterates, n)[:, b, steps[b]]``, without the
    other steps: the CoT columns enter only through ``H = (1/n) sum_{l <= s} c_l c_l^T``, so the
    update is ``V_w (G q_xy, H q_wo)`` with ``q = W c_s``, O(k d^2 + D^2) per prompt instead of
    O(k (k d + D^2))."""
    B, k, d = iterates.shape
    D = V.shape[-1]
    d1 = d + 1
    C = torch.cat([iterates, iterates.new_ones((B, k, 1))], -1)                     # rows c_l = (w_l, 1)
    keep = (torch.arange(k, device=steps.device).unsqueeze(0) <= steps.unsqueeze(1)).to(C.dtype)
    H = (C * keep.unsqueeze(-1)).transpose(-1, -2) @ C / n                           # (B, d+1, d+1)
    c = C[torch.arange(B, device=steps.device), steps]                             # (B, d+1)
    q = (c @ W[:, :, d1:].transpose(-1, -2)).unsqueeze(-1)                          # (M, B, D, 1)
    r = torch.cat([stat @ q[:, :, :d1], H @ q[:, :, d1:]], -2).squeeze(-1)          # (M, B, D)
    return c[:, :d] + r @ V[:, d1:D - 1, :].transpose(-1, -2)


class _CoTLoss(torch.autograd.Function):
    """``cot_loss`` with its gradient written out: a training step is a handful of large products
    and no intermediate bigger than (prompts x steps x D) (the training path; 1.7x faster than
    autograd through ``teacher_forced_predictions``, which is the same map kept readable).

    Tokens as rows, ``N = B k`` rows ``(prompt, step)``; per model ``q_i = W[:, (w, one)] c_i``
    (D), and per prompt one product ``[q_i] @ R`` with ``R = blockdiag(G, C^T)`` (D x (d+1+k),
    ``C`` the k x (d+1) CoT columns ``(w_l, 1)``) gives ``G q_xy`` and ``K[i, l] = c_l . q_wo,i``
    at once; the causal mask (``l <= i``, over n) and ``K @ C`` give the CoT-column part, and
    ``err_i = w_i - w_{i+1} + V[w] r_i`` with ``r_i = (G q_xy, (1/n) sum_{l<=i} K[i, l] c_l)``.
    The backward pass runs the same products on ``p_i = V[w]^T dL/dpred_i``: ``dL/dq_i =
    (G p_xy, (1/n) sum_{l<=i} (c_l . p_wo,i) c_l)``, ``dL/dW[:, (w, one)] = sum_i dL/dq_i c_i^T``,
    ``dL/dV[w] = sum_i dL/dpred_i r_i^T``.  The M models' rows share ``R`` (M k rows per prompt).
    With M = 1 the large products are taken with a wide output (N columns): faster in MKL."""

    @staticmethod
    def forward(ctx, V, W, stat, iterates, n):
        B, k1, d = iterates.shape
        k, M, D = k1 - 1, V.shape[0], V.shape[-1]
        d1, N = d + 1, B * (k1 - 1)
        R = stat.new_zeros((B, D, d1 + k))                      # blockdiag(G, C^T) per prompt
        R[:, :d1, :d1] = stat
        R[:, d1:D - 1, d1:] = iterates[:, :k].transpose(-1, -2)
        R[:, D - 1, d1:] = 1.0
        C = R[:, d1:, d1:].transpose(-1, -2).contiguous()     # (B, k, d+1): rows c_i = (w_i, 1)
        if M == 1:                                              # q_i as columns (D, N), read per prompt as rows
            Q = (W[0, :, d1:] @ C.view(N, d1).T).view(D, B, k).permute(1, 2, 0)
        else:
            Q = (C.view(N, d1) @ W[:, :, d1:].permute(2, 0, 1).reshape(d1, M * D)).view(B, k * M, D)
        P = torch.bmm(Q, R)                                     # rows (i, m): [G q_xy | K[i, :]]
        mask = torch.ones((k, k), dtype=V.dtype, device=V.device).tril_().div_(n).view(k, 1, k)
        K = P[..., d1:].view(B, k, M, k) * mask
        r = torch.cat([P[..., :d1], torch.bmm(K.view(B, k * M, k), C)], -1).view(N, M, D)
        base = (iterates[:, :k] - iterates[:, 1:]).reshape(N, d).T
        Vw = V[:, d1:D - 1, :]                                  # (M, d, D): the rows of V that write w
        if M == 1:                                              # errors as columns: err^T = base^T + V[w] r^T
            err = torch.addmm(base, Vw[0], r.view(N, D).T).unsqueeze(0)
        else:
            err = torch.baddbmm(base.expand(M, d, N), Vw, r.permute(1, 2, 0))
        ctx.save_for_backward(Vw, R, C, r, err, mask)
        return 0.5 * err.square().sum((1, 2)) / N

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_loss):
        Vw, R, C, r, err, mask = ctx.saved_tensors
        M, d, N = err.shape
        B, k, d1 = C.shape
        D = 2 * d1
        g = err * (grad_loss / N).view(M, 1, 1)                 # dL/dpred as columns, (M, d, N)
        gV = Vw.new_zeros((M, D, D))
        if M == 1:
            gV[0, d1:D - 1, :] = g[0] @ r.view(N, D)
            p = (Vw[0].T @ g[0]).view(D, B, k).permute(1, 2, 0)  # dL/dr, as columns read per prompt as rows
        else:
            gV[:, d1:D - 1, :] = torch.bmm(g, r.transpose(0, 1))
            p = torch.bmm(g.transpose(-1, -2), Vw).transpose(0, 1).reshape(B, k * M, D)
        P = torch.bmm(p, R)                                     # [G p_xy | c_l . p_wo,i]
        J = P[..., d1:].view(B, k, M, k) * mask
        dq = torch.cat([P[..., :d1], torch.bmm(J.view(B, k * M, k), C)], -1)       # dL/dq, rows (i, m)
        gW = Vw.new_zeros((M, D, D))
        gW[:, :, d1:] = (C.view(N, d1).T @ dq.view(N, M * D)).view(d1, M, D).permute(1, 2, 0)
        return gV, gW, None, None, None


def cot_loss(V: torch.Tensor, W: torch.Tensor, batch: Batch, n: int) -> torch.Tensor:
    """CoT objective with teacher forcing (docs/theory.md section 3): mean over steps ``i = 0 .. k-1``
    and prompts of ``(1/2) ||pred_i - w_{i+1}||^2``, pred_i the w-block of the last column of
    ``f(Z_i)`` with the true GD history.  Returns (M,).  Computed by ``_CoTLoss`` (the same
    predictions as ``teacher_forced_predictions``, with an explicit gradient)."""
    return _CoTLoss.apply(V, W, batch.stat, batch.iterates, n)


def nocot_loss(V: torch.Tensor, W: torch.Tensor, batch: Batch, n: int) -> torch.Tensor:
    """No-CoT objective (docs/theory.md section 3): one pass on ``Z_0`` (last column ``c_0 = (0,0,0,1)``),
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
    (looped transformer, docs/theory.md section 3): (M, B, d).

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
    """Looped objective (docs/theory.md section 3): the layer applied k times in place to ``Z_0``, loss
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
