"""The torch passes (training/kernels.py) against a literal column-by-column evaluation of
f(Z) = Z + V Z (Z^T W Z) / n, and the hand-written gradient of the CoT loss against
``torch.autograd.gradcheck``.  Numeric float64 checks."""
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import numerics
from theory import Layout
from training.data import Batch, make_batch, sample_prompts
from training.model import lsa
from training.kernels import (_CoTLoss, cot_loss, cot_rollout, nocot_estimate, looped_estimate, looped_loss, nocot_loss, objective,
                                 teacher_forced_predictions, teacher_forced_step)


def _setup(d, n, k, M, seed, scale=1.0, B=3):
    g = torch.Generator().manual_seed(seed)
    D = Layout(d).D
    p = sample_prompts(B, d, n, generator=g, dtype=torch.float64)
    V = scale * torch.randn(M, D, D, generator=g, dtype=torch.float64)
    W = scale * torch.randn(M, D, D, generator=g, dtype=torch.float64)
    return p, make_batch(p, 0.3, k), V, W


def _data_tokens(p, b, L, extra=0):
    n = p.X.shape[-1]
    Z = torch.zeros(L.D, n + extra, dtype=torch.float64)
    Z[L.x, :n] = p.X[b]
    Z[L.y, :n] = p.y[b]
    return Z


@given(d=st.integers(1, 4), n=st.integers(1, 7), k=st.integers(1, 5), M=st.integers(1, 2),
       seed=st.integers(0, 2**31))
def test_teacher_forcing_equals_literal_columns(d, n, k, M, seed):
    """Numeric float64: every step's prediction = w-block of the last column of the literal
    f(Z_i), Z_i = [data, c_0 .. c_i] built column by column, for random V, W."""
    L = Layout(d)
    p, batch, V, W = _setup(d, n, k, M, seed)
    pred = teacher_forced_predictions(V, W, batch.stat, batch.iterates[:, :-1], n)
    assert pred.shape == (M, 3, k, d)
    for m in range(M):
        for b in range(3):
            Z = _data_tokens(p, b, L)
            for i in range(k):
                c = torch.zeros(L.D, 1, dtype=torch.float64)
                c[L.w, 0] = batch.iterates[b, i]
                c[L.one, 0] = 1.0
                Z = torch.cat([Z, c], dim=1)
                ref = lsa(Z, V[m], W[m], n)[L.w, -1]
                torch.testing.assert_close(pred[m, b, i], ref, rtol=1e-10, atol=1e-10)


@given(d=st.integers(1, 4), n=st.integers(1, 7), k=st.integers(1, 6), M=st.integers(1, 2),
       seed=st.integers(0, 2**31))
def test_one_step_per_prompt_equals_all_steps(d, n, k, M, seed):
    """Numeric float64: ``teacher_forced_step`` (one step per prompt, through the running
    statistic) = the chosen step of ``teacher_forced_predictions``, for every step choice."""
    p, batch, V, W = _setup(d, n, k, M, seed)
    its = batch.iterates[:, :-1]
    every = teacher_forced_predictions(V, W, batch.stat, its, n)
    for steps in ([0, k - 1, k // 2], [k - 1, 0, 0]):
        steps = torch.tensor(steps)
        one = teacher_forced_step(V, W, batch.stat, its, steps, n)
        torch.testing.assert_close(one, every[:, torch.arange(3), steps], rtol=1e-12, atol=1e-12)


@given(d=st.integers(1, 4), n=st.integers(1, 7), k=st.integers(1, 5), seed=st.integers(0, 2**31))
def test_looped_equals_literal_in_place_loops(d, n, k, seed):
    """Numeric float64: the Gram recursion G <- A G A^T, z <- A z = k literal in-place layers
    Z <- f(Z) on Z_0 (small random V, W so that nothing overflows)."""
    L = Layout(d)
    p, batch, V, W = _setup(d, n, k, 2, seed, scale=0.3)
    est = looped_estimate(V, W, batch.stat, k, n)
    for m in range(2):
        for b in range(3):
            Z = _data_tokens(p, b, L, extra=1)
            Z[L.one, n] = 1.0
            for _ in range(k):
                Z = lsa(Z, V[m], W[m], n)
            ref = Z[L.w, -1]
            torch.testing.assert_close(est[m, b], ref, rtol=1e-9, atol=1e-9 * (1 + float(ref.abs().max())))


def test_nocot_is_one_pass_on_z0():
    """Numeric float64: no-CoT loss = (1/2) mean ||w-block of f(Z_0)[:, -1] - w*||^2."""
    d, n = 3, 6
    L = Layout(d)
    p, batch, V, W = _setup(d, n, 1, 1, 5)
    ref = []
    for b in range(3):
        Z = _data_tokens(p, b, L, extra=1)
        Z[L.one, n] = 1.0
        ref.append(0.5 * (lsa(Z, V[0], W[0], n)[L.w, -1] - p.w_star[b]).square().sum())
    torch.testing.assert_close(nocot_loss(V, W, batch, n)[0], torch.stack(ref).mean())


def test_theory_point_has_zero_cot_loss_and_gd_looped():
    """Numeric float64: at Theorem 3.2's parameters the CoT loss is 0 (to rounding) and the
    looped model reproduces k GD steps (numerics.gd_iterates)."""
    d, n, k, eta = 4, 9, 6, 0.3
    g = torch.Generator().manual_seed(0)
    p = sample_prompts(50, d, n, generator=g, dtype=torch.float64)
    batch = make_batch(p, eta, k)
    V, W = (torch.as_tensor(a).unsqueeze(0) for a in numerics.gd_params(d, eta))
    assert float(cot_loss(V, W, batch, n)[0]) < 1e-25
    est = looped_estimate(V, W, batch.stat, k, n)[0]
    ref = np.stack([numerics.gd_iterates(p.X[b].numpy(), p.y[b].numpy(), eta, k)[-1] for b in range(50)])
    np.testing.assert_allclose(est.numpy(), ref, rtol=1e-9, atol=1e-12)


def test_losses_are_per_model_and_differentiable():
    d, n, k = 2, 5, 3
    p, batch, V, W = _setup(d, n, k, 3, 1, scale=0.2)
    V.requires_grad_(True)
    W.requires_grad_(True)
    for mode in ("cot", "nocot", "looped"):
        losses = objective(mode, V, W, batch, n, k)
        assert losses.shape == (3,)
        V.grad = W.grad = None
        losses[1].backward()
        assert V.grad[0].abs().max() == 0 and V.grad[2].abs().max() == 0 and V.grad[1].abs().max() > 0
    assert torch.allclose(objective("looped", V, W, batch, n, k), looped_loss(V, W, batch, n, k))
    with pytest.raises(ValueError, match="mode"):
        objective("chain", V, W, batch, n, k)


def test_looped_freeze_keeps_loss_and_gradients_finite():
    """Numeric: with parameters under which some prompts blow up in float32, the exact looped map
    overflows while the training loss (prompts frozen past LOOPED_FREEZE) and its gradient stay
    finite, and prompts that never reach the threshold are unchanged by the freeze."""
    d, n, k = 3, 6, 10
    g = torch.Generator().manual_seed(0)
    p = sample_prompts(200, d, n, generator=g)
    batch = make_batch(p, 0.3, k)
    D = Layout(d).D
    V = (0.3 * torch.randn(1, D, D, generator=g)).requires_grad_(True)
    W = (0.3 * torch.randn(1, D, D, generator=g)).requires_grad_(True)
    exact = looped_estimate(V.detach(), W.detach(), batch.stat, k, n)
    blown = ~torch.isfinite(exact).all(-1)[0]
    assert blown.any() and not blown.all()
    loss = looped_loss(V, W, batch, n, k)
    loss.sum().backward()
    assert torch.isfinite(loss).all() and torch.isfinite(V.grad).all() and torch.isfinite(W.grad).all()
    frozen = looped_estimate(V.detach(), W.detach(), batch.stat, k, n, freeze_above=1e6)[0]
    calm = torch.isfinite(exact[0]).all(-1) & (exact[0].abs().amax(-1) < 1.0)
    torch.testing.assert_close(frozen[calm], exact[0][calm])


@pytest.mark.parametrize("M", [1, 3])
@pytest.mark.parametrize("d, n, k", [(1, 2, 1), (2, 5, 3), (3, 4, 4)])
def test_cot_loss_gradient_passes_gradcheck(M, d, n, k):
    """Numeric float64: ``_CoTLoss``'s hand-written backward pass equals finite differences of
    its forward pass in every entry of V and W (``torch.autograd.gradcheck``), for one model
    (the wide-output path) and several."""
    p, batch, V, W = _setup(d, n, k, M, seed=11 * M + d, scale=0.5)
    V.requires_grad_(True)
    W.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda V, W: _CoTLoss.apply(V, W, batch.stat, batch.iterates, n), (V, W),
                                    eps=1e-6, atol=1e-7, rtol=1e-5)


def test_cot_loss_gradient_equals_autograd_of_the_readable_form():
    """Numeric float64: the gradient of ``cot_loss`` equals autograd through
    ``teacher_forced_predictions`` (the readable form of the same map)."""
    d, n, k = 3, 7, 5
    p, batch, V, W = _setup(d, n, k, 2, seed=3, scale=0.4)
    V.requires_grad_(True)
    W.requires_grad_(True)
    fast = torch.autograd.grad(cot_loss(V, W, batch, n).sum(), (V, W))
    pred = teacher_forced_predictions(V, W, batch.stat, batch.iterates[:, :-1], n)
    slow = torch.autograd.grad((0.5 * (pred - batch.iterates[:, 1:]).square().sum(-1).mean((-1, -2))).sum(), (V, W))
    for a, b in zip(fast, slow):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_rollout_and_nocot_are_the_one_step_map():
    """Numeric float64: the autoregressive rollout's first step and the no-CoT estimate are
    the model's one step from ``c_0`` (``teacher_forced_predictions`` with ``w_0 = 0``)."""
    d, n = 3, 6
    p, batch, V, W = _setup(d, n, 2, 2, seed=9, scale=0.5)
    w0 = torch.zeros(3, 1, d, dtype=torch.float64)
    one = teacher_forced_predictions(V, W, batch.stat, w0, n)[:, :, 0]
    torch.testing.assert_close(nocot_estimate(V, W, batch.stat, n), one, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(cot_rollout(V, W, batch.stat, 1, n)[:, :, 1], one, rtol=1e-12, atol=1e-12)


def test_looped_window_averages_the_last_loops():
    """Numeric float64: the looped loss over a window of w last loops is the mean of the losses
    of the estimates after k - w + 1 .. k loops, each computed on its own."""
    d, n, k = 3, 6, 5
    p, batch, V, W = _setup(d, n, k, 2, seed=4, scale=0.3)
    window = looped_loss(V, W, batch, n, k, freeze_above=None, window=3)
    each = torch.stack([looped_loss(V, W, batch, n, j, freeze_above=None) for j in (3, 4, 5)]).mean(0)
    torch.testing.assert_close(window, each, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(looped_loss(V, W, batch, n, 2, freeze_above=None, window=9),
                               torch.stack([looped_loss(V, W, batch, n, j, freeze_above=None) for j in (1, 2)]).mean(0))


def test_loop_curriculum_schedule():
    """The loops trained grow linearly from 1 to k over ``loop_curriculum`` iterations, then
    stay at k; without a curriculum (or for another mode) they are k."""
    from training import TrainConfig
    from training.engine import loops_trained
    c = TrainConfig(mode="looped", k=10, loop_curriculum=90)
    assert [loops_trained(c, i) for i in (0, 9, 10, 45, 89, 90, 500)] == [1, 1, 2, 5, 9, 10, 10]
    assert loops_trained(TrainConfig(mode="looped", k=10), 0) == 10
    with pytest.raises(ValueError, match="loop_curriculum"):
        TrainConfig(mode="cot", loop_curriculum=5).validate()


def _per_model_setup(d, n, k, ks, seed, scale=0.5, B=3):
    """Per-model batches: model m has its own prompts and GD step (M, B, ...), and step count
    ``ks[m]``; the iterates past each model's ``w_{ks[m]}`` are set to inf (never read)."""
    g = torch.Generator().manual_seed(seed)
    D, M = Layout(d).D, len(ks)
    batches = [make_batch(sample_prompts(B, d, n, generator=g, dtype=torch.float64), 0.2 + 0.1 * m, k)
               for m in range(M)]
    stat = torch.stack([b.stat for b in batches])
    iterates = torch.stack([b.iterates for b in batches])
    for m, km in enumerate(ks):
        iterates[m, :, km + 1:] = float("inf")
    V = scale * torch.randn(M, D, D, generator=g, dtype=torch.float64)
    W = scale * torch.randn(M, D, D, generator=g, dtype=torch.float64)
    return batches, Batch(stat=stat, w_star=torch.stack([b.w_star for b in batches]), iterates=iterates), V, W


@pytest.mark.parametrize("d, n, k, ks", [(1, 2, 1, [1, 1]), (2, 5, 3, [3, 1, 2]), (3, 4, 4, [2, 4, 4])])
def test_cot_loss_per_model_gradient_passes_gradcheck(d, n, k, ks):
    """Numeric float64: ``_CoTLoss``'s per-model path (stat (M, B, d+1, d+1), iterates (M, B, k+1,
    d), step counts ``ks``; and shared stat with per-model iterates) against finite differences
    (``torch.autograd.gradcheck``)."""
    batches, batch, V, W = _per_model_setup(d, n, k, ks, seed=7 * d + k)
    V.requires_grad_(True)
    W.requires_grad_(True)
    counts = torch.tensor(ks)
    assert torch.autograd.gradcheck(lambda V, W: _CoTLoss.apply(V, W, batch.stat, batch.iterates, n, counts), (V, W),
                                    eps=1e-6, atol=1e-7, rtol=1e-5)
    finite = torch.nan_to_num(batch.iterates, posinf=0.0)
    assert torch.autograd.gradcheck(lambda V, W: _CoTLoss.apply(V, W, batches[0].stat, finite, n, None), (V, W),
                                    eps=1e-6, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("ks", [[4, 1, 3], None])
@pytest.mark.parametrize("mode, window", [("cot", 1), ("nocot", 1), ("looped", 1), ("looped", 2), ("looped", 4)])
def test_per_model_losses_equal_each_model_alone(mode, window, ks):
    """Numeric float64: with per-model prompts and step (loop) counts (or none: every model k),
    model m's loss and gradient are those of the call with its own batch cut to its k (its single
    run's objective), to rounding; iterates past a model's k (inf here) are never read."""
    d, n, k = 2, 5, 4
    batches, batch, V, W = _per_model_setup(d, n, k, ks or [k] * 3, seed=5, scale=0.3)
    V.requires_grad_(True)
    W.requires_grad_(True)
    losses = objective(mode, V, W, batch, n, k, window=window, ks=None if ks is None else torch.tensor(ks))
    ks = ks or [k] * 3
    grads = torch.autograd.grad(losses.sum(), (V, W))
    for m, km in enumerate(ks):
        b = batches[m]
        alone = Batch(stat=b.stat, w_star=b.w_star, iterates=b.iterates[:, :km + 1])
        Vm, Wm = V[m:m + 1].detach().requires_grad_(True), W[m:m + 1].detach().requires_grad_(True)
        loss = objective(mode, Vm, Wm, alone, n, km, window=window)
        for a, b_ in zip(grads, torch.autograd.grad(loss.sum(), (Vm, Wm))):
            torch.testing.assert_close(a[m], b_[0], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(losses[m], loss[0], rtol=1e-14, atol=0.0)


def test_per_model_passes_equal_the_shared_ones_model_by_model():
    """Numeric float64: the readable teacher-forced map, the one-step map, the no-CoT estimate,
    the rollout and the looped estimate with per-model statistics give, for model m, the shared
    pass on model m's prompts; the per-model CoT loss without step counts equals the readable
    form's mean."""
    d, n, k = 3, 6, 3
    batches, batch, V, W = _per_model_setup(d, n, k, [k, k], seed=2, scale=0.3)
    its = batch.iterates[..., :-1, :]
    steps = torch.tensor([2, 0, 1])
    per = {"tfp": teacher_forced_predictions(V, W, batch.stat, its, n),
           "tfs": teacher_forced_step(V, W, batch.stat, its, steps, n),
           "nocot": nocot_estimate(V, W, batch.stat, n), "rollout": cot_rollout(V, W, batch.stat, k, n),
           "looped": looped_estimate(V, W, batch.stat, k, n, last=2)}
    for m, b in enumerate(batches):
        one = {"tfp": teacher_forced_predictions(V[m:m + 1], W[m:m + 1], b.stat, b.iterates[:, :-1], n),
               "tfs": teacher_forced_step(V[m:m + 1], W[m:m + 1], b.stat, b.iterates[:, :-1], steps, n),
               "nocot": nocot_estimate(V[m:m + 1], W[m:m + 1], b.stat, n),
               "rollout": cot_rollout(V[m:m + 1], W[m:m + 1], b.stat, k, n),
               "looped": looped_estimate(V[m:m + 1], W[m:m + 1], b.stat, k, n, last=2)}
        for name, value in one.items():
            torch.testing.assert_close(per[name][m], value[0], rtol=1e-12, atol=1e-12, msg=name)
    pred = per["tfp"]
    readable = 0.5 * (pred - batch.iterates[..., 1:, :]).square().sum(-1).mean((-1, -2))
    torch.testing.assert_close(cot_loss(V, W, batch, n), readable, rtol=1e-12, atol=0.0)
