"""Every torch pass of the one-layer LSA ``f(Z) = Z + V Z (Z^T W Z) / n``, each written once
(docs/theory.md section 3): the teacher-forced CoT loss with its gradient, one model step, the
autoregressive rollout, the looped pass and the no-CoT pass.  Training and evaluation import them
from here; ``training.app.baseline`` keeps the formula evaluated literally (the reference of the tests
and the benchmark) and ``numerics.lsa`` the float64 reference.

Sufficient statistics.  ``V``, ``W`` are (M, D, D) (M models).  A prompt enters only through the
data statistic ``stat = Z_data Z_data^T / n`` on the data rows ``xy`` (B, d+1, d+1) and, for CoT,
its columns ``c_l = (0, 0, w_l, 1)``, non-zero on the CoT rows ``wo`` only (``theory.Layout``).
``Z_i Z_i^T`` is block diagonal in (xy, wo), so the last column of ``f(Z_i)`` is

    c_i + V r_i,   r_i = (stat q_xy,  (1/n) sum_{l <= i} (c_l . q_wo) c_l),   q = W[:, wo] c_i,

and only its w-block is read: ``w_{i+1} = w_i + V[w] r_i``.  A step costs the same for any n.
Every loss returns a vector (M,): one value per model.  The GD construction (``numerics.gd_params``)
predicts every teacher-forced step exactly, so its CoT loss is zero to rounding:

>>> import numerics
>>> from training.data import sample_batch, seeded_generator
>>> batch = sample_batch(8, d=2, n=5, eta=0.4, k=3, generator=seeded_generator(0, "data"), dtype=torch.float64)
>>> V, W = (torch.as_tensor(A).unsqueeze(0) for A in numerics.gd_params(2, 0.4))
>>> loss = objective("cot", V, W, batch, n=5, k=3)
>>> tuple(loss.shape), bool(loss < 1e-25)
((1,), True)

Per-model prompts.  ``stat`` may also be (M, B, d+1, d+1) and the iterates (M, B, k+1, d): model m
reads its own prompts and targets (a many-model run whose models differ in seed or eta, in one
call: docs/architecture.md section 5).  The CoT and looped losses then take ``ks`` (M,), each
model's own number of steps (loops), at most the k of the shapes: model m's loss is the loss of
a call with its own prompts and k alone (the mean over its own steps; the steps past them are
masked out), to rounding (sums run in another order; tests/training/test_kernels.py).  Calls with
shared (B, ...) shapes and no ``ks`` take the shared path (one product per prompt for all M
models); per-model shapes or ``ks`` take the per-model path (one per model and prompt).
"""
from __future__ import annotations

import torch

from theory import Layout

from .config import MODES
from .data import Batch

#: Training-time divergence threshold of the looped map (``looped_estimate``): an entry of
#: ``Z Z^T / n`` above 1e6 means the prompt has diverged (in distribution they are O(d)); one more
#: loop from there stays far below float32's overflow for parameters of order 1.
LOOPED_FREEZE = 1e6


def layout_of(V: torch.Tensor) -> Layout:
    """The token layout of (..., D, D) parameters, ``D = 2d + 2``."""
    return Layout((V.shape[-1] - 2) // 2)


def cot_columns(iterates: torch.Tensor) -> torch.Tensor:
    """The CoT columns on the ``wo`` rows, ``c_l = (w_l, 1)``: (B, k, d) -> (B, k, d+1)."""
    return torch.cat([iterates, iterates.new_ones(iterates.shape[:-1] + (1,))], -1)


# ------------------------------------------------------------------------ one model step
def teacher_forced_predictions(V: torch.Tensor, W: torch.Tensor, stat: torch.Tensor,
                               iterates: torch.Tensor, n: int) -> torch.Tensor:
    """Every step's prediction with teacher forcing (docs/theory.md section 3), the readable
    form of the module docstring's map: ``V``, ``W`` (M, D, D), ``stat`` (B, d+1, d+1),
    ``iterates`` the given history ``w_0 .. w_{k-1}`` (B, k, d) -> predictions of
    ``w_1 .. w_k`` (M, B, k, d).  Step i sees the columns ``c_0 .. c_i`` (a causal k x k mask).
    ``stat`` and ``iterates`` may each be per model, (M, B, ...)."""
    L = layout_of(V)
    k = iterates.shape[-2]
    C = cot_columns(iterates)
    C = C if C.dim() == 4 else C.unsqueeze(0)                               # (1 or M, B, k, d+1)
    q = C @ W[:, :, L.wo].transpose(-1, -2).unsqueeze(1)                    # (M, B, k, D): q_i = W[:, wo] c_i
    K = (q[..., L.wo] @ C.transpose(-1, -2)) * torch.ones(k, k, dtype=V.dtype, device=V.device).tril() / n
    r = torch.cat([q[..., L.xy] @ (stat if stat.dim() == 4 else stat.unsqueeze(0)), K @ C], -1)   # (M, B, k, D)
    return (iterates if iterates.dim() == 4 else iterates.unsqueeze(0)) + r @ V[:, L.w, :].transpose(-1, -2).unsqueeze(1)


def teacher_forced_step(V: torch.Tensor, W: torch.Tensor, stat: torch.Tensor, iterates: torch.Tensor,
                        steps: torch.Tensor, n: int) -> torch.Tensor:
    """One model step per prompt: the prediction of ``w_{s+1}`` for ``s = steps[b]`` with the
    true history ``w_0 .. w_s`` (docs/theory.md section 3): ``V``, ``W`` (M, D, D), ``stat``
    (B, d+1, d+1), ``iterates`` (B, k, d), ``steps`` (B,) in ``[0, k)`` -> (M, B, d); ``stat``
    and ``iterates`` may each be per model, (M, B, ...).

    Equal to ``teacher_forced_predictions(...)[:, b, steps[b]]`` without the other steps: the CoT
    columns enter through ``H = (1/n) sum_{l <= s} c_l c_l^T`` only, O(k d^2 + D^2) per prompt."""
    L = layout_of(V)
    B, k = iterates.shape[-3], iterates.shape[-2]
    C = cot_columns(iterates)                                                      # ([M,] B, k, d+1)
    keep = (torch.arange(k, device=steps.device).unsqueeze(0) <= steps.unsqueeze(1)).to(C.dtype)
    H = (C * keep.unsqueeze(-1)).transpose(-1, -2) @ C / n                          # ([M,] B, d+1, d+1)
    rows = torch.arange(B, device=steps.device)
    c = C[..., rows, steps, :]                                                     # ([M,] B, d+1)
    q = (c @ W[:, :, L.wo].transpose(-1, -2)).unsqueeze(-1)                         # (M, B, D, 1)
    r = torch.cat([stat @ q[:, :, L.xy], H @ q[:, :, L.wo]], -2).squeeze(-1)        # (M, B, D)
    return iterates[..., rows, steps, :] + r @ V[:, L.w, :].transpose(-1, -2)


def nocot_estimate(V: torch.Tensor, W: torch.Tensor, stat: torch.Tensor, n: int) -> torch.Tensor:
    """The no-CoT estimate (docs/theory.md sections 3 and 5): one model step from ``Z_0``, whose
    last column is ``c_0 = (0, 0, 0, 1)``: (M, B, d); ``stat`` (B, d+1, d+1) or per model."""
    B, d = stat.shape[-3], layout_of(V).d
    w0 = stat.new_zeros(stat.shape[:-2] + (1, d))
    return teacher_forced_step(V, W, stat, w0, torch.zeros(B, dtype=torch.long, device=stat.device), n)


# ------------------------------------------------------------------------ the CoT loss
class _CoTLoss(torch.autograd.Function):
    """``cot_loss`` with its gradient written out: a training step is a handful of large products
    and no intermediate bigger than (prompts x steps x D); the same map as
    ``teacher_forced_predictions`` (tests/training/test_kernels.py checks both, and the gradient
    by ``torch.autograd.gradcheck``).

    Tokens as rows, ``N = B k`` rows ``(prompt, step)``; per prompt one product ``[q_i] @ R`` with
    ``R = blockdiag(stat, C^T)`` (D x (d+1+k), ``C`` the k x (d+1) CoT columns) gives
    ``stat q_xy`` and ``K[i, l] = c_l . q_wo,i`` at once; the causal mask (``l <= i``, over n) and
    ``K @ C`` give the CoT-column part, and ``err_i = w_i - w_{i+1} + V[w] r_i``.  The backward
    pass runs the same products on ``p_i = V[w]^T dL/dpred_i``: ``dL/dq_i = (stat p_xy, (1/n)
    sum_{l<=i} (c_l . p_wo,i) c_l)``, ``dL/dW[:, wo] = sum_i dL/dq_i c_i^T``, ``dL/dV[w] = sum_i
    dL/dpred_i r_i^T``.  The M models' rows share ``R``.  With M = 1 the large products are
    taken with a wide output (N columns), which MKL runs faster.

    Per-model prompts (``stat`` (M, B, d+1, d+1) or ``iterates`` (M, B, k+1, d)) or per-model
    step counts ``ks`` (M,) take ``_per_model_forward``: the same products with one ``R`` per
    (model, prompt), batched over M B; model m's iterates past ``w_{ks[m]}`` are read as 0 and
    its errors past step ``ks[m] - 1`` are masked, its loss divided by ``B ks[m]``."""

    @staticmethod
    def forward(ctx, V, W, stat, iterates, n, ks=None):
        ctx.per_model = stat.dim() == 4 or iterates.dim() == 4 or ks is not None
        if ctx.per_model:
            return _per_model_forward(ctx, V, W, stat, iterates, n, ks)
        L = layout_of(V)
        B, k1, d = iterates.shape
        k, M, D = k1 - 1, V.shape[0], L.D
        d1, N = L.xy.stop, B * k
        R = stat.new_zeros((B, D, d1 + k))                      # blockdiag(stat, C^T) per prompt
        R[:, L.xy, :d1] = stat
        R[:, L.w, d1:] = iterates[:, :k].transpose(-1, -2)
        R[:, L.one, d1:] = 1.0
        C = R[:, L.wo, d1:].transpose(-1, -2).contiguous()    # (B, k, d+1): rows c_i
        if M == 1:                                              # q_i as columns (D, N), read per prompt as rows
            Q = (W[0, :, L.wo] @ C.view(N, d1).T).view(D, B, k).permute(1, 2, 0)
        else:
            Q = (C.view(N, d1) @ W[:, :, L.wo].permute(2, 0, 1).reshape(d1, M * D)).view(B, k * M, D)
        P = torch.bmm(Q, R)                                     # rows (i, m): [stat q_xy | K[i, :]]
        mask = torch.ones((k, k), dtype=V.dtype, device=V.device).tril_().div_(n).view(k, 1, k)
        K = P[..., d1:].view(B, k, M, k) * mask
        r = torch.cat([P[..., :d1], torch.bmm(K.view(B, k * M, k), C)], -1).view(N, M, D)
        base = (iterates[:, :k] - iterates[:, 1:]).reshape(N, d).T
        Vw = V[:, L.w, :]                                       # (M, d, D): the rows of V that write w
        if M == 1:                                              # errors as columns: err^T = base^T + V[w] r^T
            err = torch.addmm(base, Vw[0], r.view(N, D).T).unsqueeze(0)
        else:
            err = torch.baddbmm(base.expand(M, d, N), Vw, r.permute(1, 2, 0))
        ctx.save_for_backward(Vw, R, C, r, err, mask)
        return 0.5 * err.square().sum((1, 2)) / N

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_loss):
        if ctx.per_model:
            return _per_model_backward(ctx, grad_loss)
        Vw, R, C, r, err, mask = ctx.saved_tensors
        M, d, N = err.shape
        B, k, d1 = C.shape
        L = Layout(d)
        D = L.D
        g = err * (grad_loss / N).view(M, 1, 1)                 # dL/dpred as columns, (M, d, N)
        gV = Vw.new_zeros((M, D, D))
        if M == 1:
            gV[0, L.w, :] = g[0] @ r.view(N, D)
            p = (Vw[0].T @ g[0]).view(D, B, k).permute(1, 2, 0)  # dL/dr, columns read per prompt as rows
        else:
            gV[:, L.w, :] = torch.bmm(g, r.transpose(0, 1))
            p = torch.bmm(g.transpose(-1, -2), Vw).transpose(0, 1).reshape(B, k * M, D)
        P = torch.bmm(p, R)                                     # [stat p_xy | c_l . p_wo,i]
        J = P[..., d1:].view(B, k, M, k) * mask
        dq = torch.cat([P[..., :d1], torch.bmm(J.view(B, k * M, k), C)], -1)       # dL/dq, rows (i, m)
        gW = Vw.new_zeros((M, D, D))
        gW[:, :, L.wo] = (C.view(N, d1).T @ dq.view(N, M * D)).view(d1, M, D).permute(1, 2, 0)
        return gV, gW, None, None, None, None


def _step_counts(ks, M: int, device) -> torch.Tensor | None:
    """``ks`` as an (M,) integer tensor on ``device`` (None stays None).  A tensor already there
    is used as it is (no host-device copy: the engine passes one)."""
    if ks is None:
        return None
    ks = torch.as_tensor(ks, device=device)
    if ks.shape != (M,) or ks.dtype.is_floating_point:
        raise ValueError(f"ks must hold one integer step count per model ({M}), got {tuple(ks.shape)} {ks.dtype}")
    return ks


def _per_model_forward(ctx, V, W, stat, iterates, n, ks):
    """``_CoTLoss.forward`` with per-model prompts or step counts: rows ``(m, b)`` of M B prompts,
    each with its own ``R = blockdiag(stat, C^T)``; errors as columns per model, (M, d, B k)."""
    L = layout_of(V)
    B, k1, d = iterates.shape[-3:]
    k, M, D = k1 - 1, V.shape[0], L.D
    d1, N = L.xy.stop, B * k
    ks = _step_counts(ks, M, V.device)
    if ks is not None:                                          # model m reads w_0 .. w_{ks[m]} only
        reads = (torch.arange(k1, device=V.device) <= ks.view(M, 1)).view(M, 1, k1, 1)
        iterates = torch.where(reads, iterates, torch.zeros_like(iterates))
    R = stat.new_zeros((M, B, D, d1 + k))                       # blockdiag(stat, C^T) per (model, prompt)
    R[..., L.xy, :d1] = stat
    R[..., L.w, d1:] = iterates[..., :k, :].transpose(-1, -2)
    R[..., L.one, d1:] = 1.0
    C = R[..., L.wo, d1:].transpose(-1, -2).contiguous()       # (M, B, k, d+1): rows c_i
    R = R.view(M * B, D, d1 + k)
    Q = torch.bmm(C.view(M, N, d1), W[:, :, L.wo].transpose(-1, -2)).view(M * B, k, D)
    P = torch.bmm(Q, R)                                         # rows i: [stat q_xy | K[i, :]]
    mask = torch.ones((k, k), dtype=V.dtype, device=V.device).tril_().div_(n)
    K = P[..., d1:] * mask
    r = torch.cat([P[..., :d1], torch.bmm(K, C.view(M * B, k, d1))], -1).view(M, N, D)
    base = (iterates[..., :k, :] - iterates[..., 1:, :]).expand(M, B, k, d).reshape(M, N, d).transpose(1, 2)
    Vw = V[:, L.w, :]                                           # (M, d, D)
    err = torch.baddbmm(base, Vw, r.transpose(1, 2))            # (M, d, N)
    if ks is None:
        count = torch.full((M,), float(N), dtype=V.dtype, device=V.device)
    else:                                                       # steps past ks[m] - 1 are not model m's
        counted = (torch.arange(k, device=V.device) < ks.view(M, 1)).view(M, 1, 1, k).expand(M, 1, B, k)
        err = torch.where(counted.reshape(M, 1, N), err, torch.zeros_like(err))
        count = (ks * B).to(V.dtype)
    ctx.save_for_backward(Vw, R, C, r, err, mask, count)
    return 0.5 * err.square().sum((1, 2)) / count


def _per_model_backward(ctx, grad_loss):
    """``_CoTLoss.backward`` of ``_per_model_forward``: the same products per (model, prompt)."""
    Vw, R, C, r, err, mask, count = ctx.saved_tensors
    M, d, N = err.shape
    _, B, k, d1 = C.shape
    L = Layout(d)
    D = L.D
    g = err * (grad_loss / count).view(M, 1, 1)                 # dL/dpred as columns, (M, d, N)
    gV = Vw.new_zeros((M, D, D))
    gV[:, L.w, :] = torch.bmm(g, r)
    p = torch.bmm(g.transpose(1, 2), Vw).view(M * B, k, D)      # dL/dr, rows (m, b, i)
    P = torch.bmm(p, R)                                         # [stat p_xy | c_l . p_wo,i]
    J = P[..., d1:] * mask
    dq = torch.cat([P[..., :d1], torch.bmm(J, C.view(M * B, k, d1))], -1).view(M, N, D)
    gW = Vw.new_zeros((M, D, D))
    gW[:, :, L.wo] = torch.bmm(dq.transpose(1, 2), C.view(M, N, d1))
    return gV, gW, None, None, None, None


def cot_loss(V: torch.Tensor, W: torch.Tensor, batch: Batch, n: int, ks=None) -> torch.Tensor:
    """CoT objective with teacher forcing (docs/theory.md section 3): the mean over steps
    ``i = 0 .. k-1`` and prompts of ``(1/2) ||pred_i - w_{i+1}||^2`` with the true GD history.
    Returns (M,).  ``batch`` may hold per-model prompts ((M, B, ...), module docstring); ``ks``
    (M,): model m's steps (the mean over its steps ``0 .. ks[m] - 1`` only, reading
    ``w_0 .. w_{ks[m]}``), each at most the batch's k (None: all k)."""
    return _CoTLoss.apply(V, W, batch.stat, batch.iterates, n, ks)


def nocot_loss(V: torch.Tensor, W: torch.Tensor, batch: Batch, n: int) -> torch.Tensor:
    """No-CoT objective (docs/theory.md section 3): ``(1/2) ||nocot_estimate - w*||^2`` averaged
    over prompts.  Returns (M,)."""
    return 0.5 * (nocot_estimate(V, W, batch.stat, n) - batch.w_star).square().sum(-1).mean(-1)


# ------------------------------------------------------------------------ the looped pass
def looped_estimate(V: torch.Tensor, W: torch.Tensor, stat: torch.Tensor, k: int, n: int, *,
                    freeze_above: float | None = None, last: int = 1, loops=None) -> torch.Tensor:
    """The w-block of the last column after applying the layer k times in place to ``Z_0``
    (looped transformer, docs/theory.md section 3): (M, B, d); with ``last`` > 1 the estimates
    after each of the last ``last`` loops, (M, B, last, d).

    One layer maps ``Z -> A Z`` with ``A = I + V (Z Z^T / n) W``; so with ``G = Z Z^T / n`` and z the
    last column, ``G <- A G A^T`` and ``z <- A z``, exactly, at O(D^3) per prompt and layer.

    ``freeze_above`` (training only): a prompt whose ``G`` has an entry above this value has
    diverged; it is frozen for the remaining loops (its estimate stays the last one computed), so
    that its loss stays finite and its gradient still pushes the model back toward stability
    instead of overflowing into inf / nan.  None: the exact map (evaluation).

    ``stat`` may be per model, (M, B, d+1, d+1).  ``loops`` (M,): model m stops after its own
    ``loops[m]`` (<= k) loops, each of its prompts frozen from there on, so that every estimate
    after a later loop is its estimate after ``loops[m]`` loops (None: every model loops k times)."""
    L = layout_of(V)
    M, D, B = V.shape[0], L.D, stat.shape[-3]
    loops = _step_counts(loops, M, V.device)
    G = stat.new_zeros(stat.shape[:-3] + (B, D, D))                         # Z_0 Z_0^T / n
    G[..., L.xy, L.xy] = stat
    G[..., L.one, L.one] = 1.0 / n
    G = (G if G.dim() == 4 else G.unsqueeze(0)).expand(M, -1, -1, -1)       # (M, B, D, D)
    z = G.new_zeros((M, B, D, 1))
    z[:, :, L.one, 0] = 1.0
    Vt = V.transpose(-1, -2)
    eye = torch.eye(D, dtype=V.dtype, device=V.device)
    estimates = []
    for loop in range(k):
        if freeze_above is not None:
            active = (G.detach().abs().amax(dim=(-1, -2)) <= freeze_above).view(M, B, 1, 1)
        if loops is not None:                                            # models past their loops: frozen
            running = (loops > loop).view(M, 1, 1, 1)
            active = running if freeze_above is None else active & running
        if freeze_above is not None or loops is not None:
            G_in = torch.where(active, G, torch.zeros_like(G))          # frozen prompts: a harmless input
        else:
            G_in = G
        # V G W for all prompts as two large products: G V^T = (V G)^T (G symmetric), then (V G) W
        VG = (G_in.reshape(M, B * D, D) @ Vt).view(M, B, D, D).transpose(-1, -2)
        A = (VG.reshape(M, B * D, D) @ W).view(M, B, D, D) + eye
        z_next = A @ z
        G_next = A @ G_in @ A.transpose(-1, -2) if loop < k - 1 else G
        if freeze_above is not None or loops is not None:
            z_next = torch.where(active, z_next, z)
            G_next = torch.where(active, G_next, G)
        z, G = z_next, G_next
        if loop >= k - last:
            estimates.append(z[:, :, L.w, 0])
    return estimates[-1] if last == 1 else torch.stack(estimates, 2)


def looped_loss(V: torch.Tensor, W: torch.Tensor, batch: Batch, n: int, k: int,
                freeze_above: float | None = LOOPED_FREEZE, window: int = 1, ks=None) -> torch.Tensor:
    """Looped objective (docs/theory.md section 3): the layer applied k times in place to ``Z_0``,
    loss ``(1/2) ||w-block of the last column - w*||^2`` on the final estimate (``window`` > 1:
    averaged over the estimates after each of the last ``window`` loops).  Returns (M,).
    Prompts that diverge past ``freeze_above`` are frozen (``looped_estimate``).

    ``batch`` may hold per-model prompts ((M, B, ...)); ``ks`` (M,): model m's own loop count
    (<= k), its loss that of a call with k = ``ks[m]`` (window ``min(window, ks[m])``; the mean over
    prompts of each estimate, then over the window)."""
    if ks is not None:
        return _looped_loss_per_model(V, W, batch, n, k, freeze_above, window, _step_counts(ks, V.shape[0], V.device))
    window = min(window, k)
    pred = looped_estimate(V, W, batch.stat, k, n, freeze_above=freeze_above, last=window)
    if window > 1:
        return 0.5 * (pred - batch.w_star.unsqueeze(-2)).square().sum(-1).mean((-1, -2))
    return 0.5 * (pred - batch.w_star).square().sum(-1).mean(-1)


def _looped_loss_per_model(V, W, batch, n, k, freeze_above, window, ks) -> torch.Tensor:
    """``looped_loss`` with per-model loop counts: every estimate after loops 1 .. k (model m
    frozen after ``ks[m]``), each one's loss averaged over prompts, and per model the mean over
    its window of loops ``ks[m] - min(window, ks[m]) + 1 .. ks[m]``."""
    pred = looped_estimate(V, W, batch.stat, k, n, freeze_above=freeze_above, last=k, loops=ks)
    pred = pred if k > 1 else pred.unsqueeze(2)                                  # (M, B, k, d)
    target = batch.w_star.unsqueeze(-2)
    per_loop = 0.5 * (pred - target).square().sum(-1).mean(1)                    # (M, k)
    after = torch.arange(1, k + 1, device=V.device)                              # loops done
    width = ks.clamp(max=window)
    inside = (after <= ks.view(-1, 1)) & (after > (ks - width).view(-1, 1))
    return torch.where(inside, per_loop, torch.zeros_like(per_loop)).sum(-1) / width.to(per_loop.dtype)


# ------------------------------------------------------------------------ the rollout
def cot_rollout(V: torch.Tensor, W: torch.Tensor, stat: torch.Tensor, k: int, n: int) -> torch.Tensor:
    """Autoregressive CoT generation from ``w_0 = 0`` (docs/theory.md section 3): ``V``, ``W``
    (M, D, D), ``stat`` (B, d+1, d+1) -> the model's iterates ``w_0 .. w_k``, (M, B, k+1, d).

    Each generated column ``c = (w_i, 1)`` adds ``c c^T / n`` to the CoT block of ``Z Z^T / n``.
    With ``A = V[w, xy] stat W[xy, wo]`` (fixed per prompt), ``P = W[wo, wo]`` and the running
    ``T = V[w, wo] Gamma = (1/n) sum_{l <= i} (V[w, wo] c_l) c_l^T`` (d x (d+1) per prompt, one
    outer product per step), the step is ``w_{i+1} = w_i + A c + T P c``: O(d^2) per prompt and
    step, whatever n and k.  Prompts sit on the last (contiguous) axis, where every per-prompt
    product is one elementwise product and a sum.  Not differentiable (in-place updates).
    ``stat`` may be per model, (M, B, d+1, d+1)."""
    L = layout_of(V)
    M, d, B = V.shape[0], L.d, stat.shape[-3]
    Vw = V[:, L.w, :]                                                        # (M, d, D)
    A = (Vw[:, :, L.xy].unsqueeze(1) @ (stat if stat.dim() == 4 else stat.unsqueeze(0)) @ W[:, L.xy, L.wo].unsqueeze(1))
    A = A.permute(0, 2, 3, 1).contiguous()                                   # (M, d, d+1, B)
    P = W[:, L.wo, L.wo]                                                     # (M, d+1, d+1)
    Vwo = Vw[:, :, L.wo]                                                     # (M, d, d+1)
    c = stat.new_zeros((M, d + 1, B))
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


# ------------------------------------------------------------------------ by mode
def final_estimate(mode: str, V: torch.Tensor, W: torch.Tensor, stat: torch.Tensor, k: int, n: int) -> torch.Tensor:
    """The model's final estimate of ``w*`` (M, B, d): ``cot`` after k generated steps, ``nocot``
    after one pass on ``Z_0``, ``looped`` after k loops (docs/theory.md section 3)."""
    if mode == "cot":
        return cot_rollout(V, W, stat, k, n)[..., -1, :]
    if mode == "nocot":
        return nocot_estimate(V, W, stat, n)
    if mode == "looped":
        return looped_estimate(V, W, stat, k, n)
    raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")


def objective(mode: str, V: torch.Tensor, W: torch.Tensor, batch: Batch, n: int, k: int, *,
              window: int = 1, ks=None) -> torch.Tensor:
    """The training loss (M,) of ``mode`` ('cot', 'nocot' or 'looped') on ``batch``; ``window``:
    the looped loss's window of last loops (``looped_loss``).  ``batch`` may hold per-model
    prompts, and ``ks`` (M,) per-model steps (cot) or loops (looped) up to k (module docstring);
    no-CoT has no steps."""
    if mode == "cot":
        return cot_loss(V, W, batch, n, ks)
    if mode == "nocot":
        return nocot_loss(V, W, batch, n)
    if mode == "looped":
        return looped_loss(V, W, batch, n, k, window=window, ks=ks)
    raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
