"""Guards from the mutation campaign (tests/mutation): the losses, estimates and gradients of
training/kernels.py against a plain float64 evaluation of ``f(Z) = Z + V Z (Z^T W Z) / n`` on the
literal tokens (data columns, then the CoT columns ``c_l = (0, 0, w_l, 1)`` one by one, or the
layer applied in place to ``Z_0`` for the looped map), for one model and stacks of models, shared
prompts (stat (B, d+1, d+1), iterates (B, k+1, d)) and per-model ones (a leading M), k = 1 and
k > 1, per-model step / loop counts ``ks`` (a tensor or a list), loop windows, the freezing rule of
the looped map (a prompt is frozen once an entry of ``Z Z^T / n`` is above the threshold: one
exactly at it still loops), a model stopped after its loops keeping its estimate, and the
parameters' dtype kept by every pass (float64 to 1e-12; float32 and bfloat16 too).  Numeric, a
few seconds."""
import pytest
import torch

from training.data import Batch
from training.kernels import (cot_loss, cot_rollout, looped_estimate, looped_loss, nocot_estimate, nocot_loss,
                              objective, teacher_forced_predictions, teacher_forced_step)

F64 = torch.float64
D_, N_, B_ = 2, 4, 5          # d, n, prompts: B differs from d, from k and from M (M is 1 or 3)


# ------------------------------------------------------------------------ the literal reference
def f(Z, V, W, n):
    """One LSA layer on the literal tokens Z (D, columns)."""
    return Z + V @ Z @ (Z.T @ W @ Z) / n


def tokens(X, y, w=None):
    """The data columns (x_j, y_j, 0, 0) of one prompt, then the column (0, 0, w, 1) (w = 0:
    the query column of Z_0)."""
    d, n = X.shape
    Z = X.new_zeros(2 * d + 2, n + 1)
    Z[:d, :n], Z[d, :n] = X, y
    Z[d + 1:2 * d + 1, n] = 0.0 if w is None else w
    Z[-1, n] = 1.0
    return Z


def column(w):
    d = w.shape[0]
    c = w.new_zeros(2 * d + 2, 1)
    c[d + 1:2 * d + 1, 0] = w
    c[-1, 0] = 1.0
    return c


def own(t, m, dims):
    """Model m's slice of a tensor that is per model when it has ``dims`` dimensions."""
    return t[m] if t.dim() == dims else t


def ref_cot_loss(V, W, X, y, its, n, ks):
    """Model m: the mean over prompts and steps i < ks[m] of (1/2) ||f(Z_i)[w, -1] - w_{i+1}||^2,
    Z_i = [data, c_0 .. c_i] built column by column."""
    out = []
    for m in range(V.shape[0]):
        Xm, ym, itm = own(X, m, 4), own(y, m, 3), own(its, m, 4)
        d = Xm.shape[1]
        total = 0.0
        for b in range(Xm.shape[0]):
            Z = tokens(Xm[b], ym[b], itm[b, 0])
            for i in range(ks[m]):
                if i:
                    Z = torch.cat([Z, column(itm[b, i])], 1)
                pred = f(Z, V[m], W[m], n)[d + 1:2 * d + 1, -1]
                total = total + 0.5 * (pred - itm[b, i + 1]).square().sum()
        out.append(total / (Xm.shape[0] * ks[m]))
    return torch.stack(out)


def ref_nocot(V, W, X, y, n):
    """(M, B, d): f(Z_0)[w, -1]."""
    d = X.shape[-2]
    return torch.stack([torch.stack([f(tokens(own(X, m, 4)[b], own(y, m, 3)[b]), V[m], W[m], n)[d + 1:2 * d + 1, -1]
                                     for b in range(X.shape[-3])]) for m in range(V.shape[0])])


def ref_looped(V, W, X, y, n, k, freeze=None, loops=None):
    """(M, B, k, d): the estimate after each of k loops Z <- f(Z) from Z_0; a prompt stops looping
    once an entry of Z Z^T / n is above ``freeze``, model m after ``loops[m]`` loops."""
    d = X.shape[-2]
    out = []
    for m in range(V.shape[0]):
        per_prompt = []
        for b in range(X.shape[-3]):
            Z, est = tokens(own(X, m, 4)[b], own(y, m, 3)[b]), []
            for loop in range(k):
                running = loops is None or loop < loops[m]
                calm = freeze is None or bool((Z @ Z.T / n).abs().max() <= freeze)
                if running and calm:
                    Z = f(Z, V[m], W[m], n)
                est.append(Z[d + 1:2 * d + 1, -1])
            per_prompt.append(torch.stack(est))
        out.append(torch.stack(per_prompt))
    return torch.stack(out)


def ref_looped_loss(est, w_star, window, ks):
    """Model m: the mean over its last min(window, ks[m]) loops up to ks[m] of the mean over
    prompts of (1/2) ||estimate - w*||^2."""
    out = []
    for m in range(est.shape[0]):
        wm = min(window, ks[m])
        per_loop = 0.5 * (est[m] - own(w_star, m, 3).unsqueeze(1)).square().sum(-1).mean(0)
        out.append(per_loop[ks[m] - wm:ks[m]].mean())
    return torch.stack(out)


# ------------------------------------------------------------------------ inputs
def prompts(M, per_model, seed, integer=False, d=D_, n=N_, B=B_):
    """X ([M,] B, d, n), y, w* and the statistic Z_data Z_data^T / n; ``integer``: small integer
    entries, so that the statistic is exact."""
    g = torch.Generator().manual_seed(seed)
    lead = (M, B) if per_model else (B,)
    if integer:
        X = torch.randint(-2, 3, lead + (d, n), generator=g).to(F64)
        w_star = torch.randint(-1, 2, lead + (d,), generator=g).to(F64)
    else:
        X = torch.randn(lead + (d, n), generator=g, dtype=F64)
        w_star = torch.randn(lead + (d,), generator=g, dtype=F64)
    y = (X * w_star.unsqueeze(-1)).sum(-2)
    Zd = torch.cat([X, y.unsqueeze(-2)], -2)
    return X, y, w_star, Zd @ Zd.transpose(-1, -2) / n


def params(M, seed, scale=0.4, d=D_):
    g = torch.Generator().manual_seed(1000 + seed)
    D = 2 * d + 2
    V = scale * torch.randn(M, D, D, generator=g, dtype=F64)
    W = scale * torch.randn(M, D, D, generator=g, dtype=F64)
    return V.requires_grad_(True), W.requires_grad_(True)


def close(a, b, tol=1e-12):
    """float64 agreement: max |a - b| <= tol (1 + max |b|), and a in b's dtype and shape."""
    a, b = a.detach(), b.detach()
    assert a.dtype == b.dtype and a.shape == b.shape, (a.dtype, b.dtype, a.shape, b.shape)
    assert torch.isfinite(a).all() and torch.isfinite(b).all()
    err = float((a - b).abs().max())
    assert err <= tol * (1 + float(b.abs().max())), err


def grads(loss, V, W):
    return torch.autograd.grad(loss.sum(), (V, W))


def same_grads(loss, ref, V, W, ref_grads=None):
    """The gradients of ``loss`` in V and W equal those of ``ref`` (autograd through the
    literal reference) to 1e-11 of their scale."""
    for a, b in zip(grads(loss, V, W), ref_grads or grads(ref, V, W), strict=True):
        close(a, b, 1e-11)


def counts(ks, form):
    return None if ks is None else torch.tensor(ks) if form == "tensor" else list(ks)


LAYOUTS = {"shared": (False, False), "stat4": (True, False), "iterates4": (False, True), "both4": (True, True)}


# ------------------------------------------------------------------------ the CoT loss
@pytest.mark.parametrize("ks_form", [None, "tensor", "list"])
@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("M", [1, 3])
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_cot_loss_and_gradient_equal_the_literal_reference(layout, M, k, ks_form):
    """float64: ``cot_loss`` (shared or per-model statistic and iterates, 3 or 4 dimensions;
    every model k steps, or its own ``ks[m]`` as a tensor or a list) equals the literal
    teacher-forced loss to 1e-12, stays float64, and its hand-written gradient equals autograd
    through the literal reference."""
    stat4, its4 = LAYOUTS[layout]
    X, y, w_star, stat = prompts(M, stat4, seed=k + 10 * M)
    g = torch.Generator().manual_seed(7 * k + M)
    its = torch.randn(((M,) if its4 else ()) + (B_, k + 1, D_), generator=g, dtype=F64)
    ks = None if ks_form is None else ([1] * M if k == 1 else [3, 1, 2][:M] if M > 1 else [2])
    V, W = params(M, seed=k)
    loss = cot_loss(V, W, Batch(stat=stat, w_star=w_star, iterates=its), N_, counts(ks, ks_form))
    ref = ref_cot_loss(V, W, X, y, its, N_, ks or [k] * M)
    close(loss, ref)
    same_grads(loss, ref, V, W)


def test_step_counts_are_refused_unless_one_integer_per_model():
    """``ks`` must be M integers: a wrong length and float counts are refused, by the CoT loss, the
    looped loss and the looped estimate."""
    X, y, w_star, stat = prompts(3, False, seed=0)
    batch = Batch(stat=stat, w_star=w_star, iterates=torch.zeros(B_, 3, D_, dtype=F64))
    V, W = params(3, seed=0)
    for bad in ([1, 2], torch.tensor([1, 2]), [1.0, 2.0, 2.0], torch.tensor([1.0, 2.0, 2.0])):
        with pytest.raises(ValueError, match="ks must"):
            cot_loss(V, W, batch, N_, bad)
        with pytest.raises(ValueError, match="ks must"):
            looped_loss(V, W, batch, N_, 2, ks=bad)
        with pytest.raises(ValueError, match="ks must"):
            looped_estimate(V, W, stat, 2, N_, loops=bad)


# ------------------------------------------------------------------------ the one-step passes
@pytest.mark.parametrize("M", [1, 3])
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_one_step_passes_equal_the_literal_reference(layout, M):
    """float64: every teacher-forced prediction, the one step of chosen prompts, the no-CoT
    estimate and loss and the rollout's first step equal f(Z) on the literal tokens to 1e-12,
    stay float64, and the no-CoT gradient equals the literal one (B differs from d)."""
    stat4, its4 = LAYOUTS[layout]
    X, y, w_star, stat = prompts(M, stat4, seed=3 + M)
    k = 3
    its = torch.randn(((M,) if its4 else ()) + (B_, k, D_), generator=torch.Generator().manual_seed(M), dtype=F64)
    V, W = params(M, seed=5)
    d = D_
    every = torch.stack([torch.stack([torch.stack([
        f(torch.cat([tokens(own(X, m, 4)[b], own(y, m, 3)[b], own(its, m, 4)[b, 0])]
                    + [column(own(its, m, 4)[b, l]) for l in range(1, i + 1)], 1), V[m], W[m], N_)[d + 1:2 * d + 1, -1]
        for i in range(k)]) for b in range(B_)]) for m in range(M)])
    close(teacher_forced_predictions(V, W, stat, its, N_), every)
    steps = torch.tensor([2, 0, 1, 2, 1])
    close(teacher_forced_step(V, W, stat, its, steps, N_), every[:, torch.arange(B_), steps])
    est = ref_nocot(V, W, X, y, N_)
    close(nocot_estimate(V, W, stat, N_), est)
    close(cot_rollout(V.detach(), W.detach(), stat, 1, N_)[:, :, 1], est.detach())
    loss = nocot_loss(V, W, Batch(stat=stat, w_star=w_star, iterates=its), N_)
    ref = 0.5 * (est - w_star).square().sum(-1).mean(-1)
    close(loss, ref)
    close(objective("nocot", V, W, Batch(stat=stat, w_star=w_star, iterates=its), N_, k), ref)
    same_grads(loss, ref, V, W)


# ------------------------------------------------------------------------ the looped loss
@pytest.mark.parametrize("ks_form", [None, "tensor", "list"])
@pytest.mark.parametrize("window", [1, 2])
@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("stat4", [False, True])
def test_looped_loss_and_gradient_equal_the_literal_reference(stat4, k, window, ks_form):
    """float64: the looped objective (window of last loops, per-model loop counts as a tensor or a
    list, shared or per-model prompts) equals the literal in-place loops to 1e-12 and its gradient
    autograd through them; nothing comes near the freezing threshold here."""
    M = 3
    X, y, w_star, stat = prompts(M, stat4, seed=20 + k)
    V, W = params(M, seed=k, scale=0.3)
    ks = None if ks_form is None else ([1, 1, 1] if k == 1 else [3, 1, 2])
    batch = Batch(stat=stat, w_star=w_star, iterates=torch.zeros(B_, k + 1, D_, dtype=F64))
    ref = ref_looped_loss(ref_looped(V, W, X, y, N_, k), w_star, window, ks or [k] * M)
    ref_grads = grads(ref, V, W)
    for loss in (objective("looped", V, W, batch, N_, k, window=window, ks=counts(ks, ks_form)),
                 looped_loss(V, W, batch, N_, k, freeze_above=None, window=window, ks=counts(ks, ks_form))):
        close(loss, ref)
        same_grads(loss, ref, V, W, ref_grads)


@pytest.mark.parametrize("freeze", [False, True])
@pytest.mark.parametrize("stat4", [False, True])
def test_looped_estimates_with_loop_counts_equal_the_literal_loops(stat4, freeze):
    """float64: with per-model loop counts (and no freezing, or a threshold that freezes some
    prompts), every estimate after loops 1 .. k is the literal one: a model stopped after its
    loops keeps its last estimate, a frozen prompt its estimate at freezing."""
    M, k = 3, 4
    X, y, w_star, stat = prompts(M, stat4, seed=31)
    V, W = params(M, seed=31, scale=0.6)
    loops = [2, 4, 1]
    free = ref_looped(V, W, X, y, N_, k, loops=loops)
    thr = float(stat.abs().amax((-1, -2)).max()) * 4.0 if freeze else None
    ref = ref_looped(V, W, X, y, N_, k, freeze=thr, loops=loops)
    if thr is not None:
        assert float((ref - free).detach().abs().max()) > 1e-3    # the threshold freezes some prompt early
    for form in ("tensor", "list"):
        est = looped_estimate(V, W, stat, k, N_, freeze_above=thr, last=k, loops=counts(loops, form))
        close(est, ref)
    assert not torch.equal(ref[:, :, -1], ref_looped(V, W, X, y, N_, k, freeze=thr)[:, :, -1])


@pytest.mark.parametrize("window", [1, 2])
@pytest.mark.parametrize("stat4", [False, True])
def test_per_model_looped_loss_freezes_prompts(stat4, window):
    """float64: the looped loss with per-model loop counts and a freezing threshold is the literal
    loss of the frozen loops (not of the exact map), and so is its gradient."""
    M, k = 3, 4
    X, y, w_star, stat = prompts(M, stat4, seed=31)
    V, W = params(M, seed=31, scale=0.6)
    ks = [2, 4, 3]
    thr = float(stat.abs().amax((-1, -2)).max()) * 4.0
    batch = Batch(stat=stat, w_star=w_star, iterates=torch.zeros(B_, k + 1, D_, dtype=F64))
    ref = ref_looped_loss(ref_looped(V, W, X, y, N_, k, freeze=thr), w_star, window, ks)
    exact = ref_looped_loss(ref_looped(V, W, X, y, N_, k), w_star, window, ks)
    assert float((ref - exact).detach().abs().max()) > 1e-3
    loss = looped_loss(V, W, batch, N_, k, freeze_above=thr, window=window, ks=torch.tensor(ks))
    close(loss, ref)
    same_grads(loss, ref, V, W)


@pytest.mark.parametrize("k", [1, 2])
def test_freezing_threshold_is_inclusive(k):
    """float64, exact statistics: a prompt whose largest |Z_0 Z_0^T / n| entry equals
    ``freeze_above`` still loops (frozen only above it); prompts above it keep the estimate 0."""
    M = 2
    X, y, w_star, stat = prompts(M, False, seed=6, integer=True)
    V, W = params(M, seed=6, scale=0.3)
    peaks = torch.maximum(stat.abs().amax((-1, -2)), torch.tensor(1.0 / N_, dtype=F64))
    thr = float(peaks.median())
    at = peaks == thr
    assert at.any() and (peaks > thr).any() and (peaks < thr).any()
    ref = ref_looped(V, W, X, y, N_, k, freeze=thr)
    assert (ref[:, at].abs().amax(-1) > 1e-3).all() and (ref[:, peaks > thr] == 0).all()
    close(looped_estimate(V, W, stat, k, N_, freeze_above=thr, last=k).reshape(ref.shape), ref)
    batch = Batch(stat=stat, w_star=w_star, iterates=torch.zeros(B_, k + 1, D_, dtype=F64))
    close(looped_loss(V, W, batch, N_, k, freeze_above=thr), ref_looped_loss(ref, w_star, 1, [k] * M))
    close(looped_loss(V, W, batch, N_, k, freeze_above=thr, ks=[k] * M), ref_looped_loss(ref, w_star, 1, [k] * M))


# ------------------------------------------------------------------------ non-finite loops stay out
@pytest.mark.parametrize("ks", [None, [2, 2]])
def test_a_frozen_huge_prompt_leaves_the_gradient_finite(ks):
    """float64: a prompt whose statistic is far past the threshold (entries ~1e160, so that one
    more layer would overflow) is frozen from the start: its estimate stays 0, and the loss and
    its gradient are the literal ones (finite), over two loops."""
    M, k = 2, 2
    X, y, w_star, stat = prompts(M, False, seed=8)
    X = X.clone()
    X[0] *= 1e80
    y = (X * w_star.unsqueeze(-1)).sum(-2)
    Zd = torch.cat([X, y.unsqueeze(-2)], -2)
    stat = Zd @ Zd.transpose(-1, -2) / N_
    V, W = params(M, seed=8, scale=0.3)
    batch = Batch(stat=stat, w_star=w_star, iterates=torch.zeros(B_, k + 1, D_, dtype=F64))
    est = ref_looped(V, W, X, y, N_, k, freeze=1e6)
    assert (est[:, 0] == 0).all()
    ref = ref_looped_loss(est, w_star, 1, [k] * M)
    loss = looped_loss(V, W, batch, N_, k, ks=ks)
    close(loss, ref)
    same_grads(loss, ref, V, W)


def test_a_model_diverging_after_its_loops_keeps_a_finite_gradient():
    """float64, no freezing: model 0 (V, W ~1e50) trains 1 loop of 3; its loss and gradient are
    those of its one loop (finite, ~1e198), though its later loops would overflow."""
    M, k = 2, 3
    X, y, w_star, stat = prompts(M, False, seed=9)
    V, W = params(M, seed=9, scale=0.3)
    with torch.no_grad():
        V[0] *= 1e50
        W[0] *= 1e50
    assert not torch.isfinite(looped_estimate(V.detach(), W.detach(), stat, k, N_, last=k)[0, :, -1]).all()
    batch = Batch(stat=stat, w_star=w_star, iterates=torch.zeros(B_, k + 1, D_, dtype=F64))
    loss = looped_loss(V, W, batch, N_, k, freeze_above=None, ks=[1, 3])
    ref = ref_looped_loss(ref_looped(V, W, X, y, N_, k, loops=[1, 3]), w_star, 1, [1, 3])
    close(loss, ref)
    same_grads(loss, ref, V, W)


def test_a_stopped_model_keeps_its_overflowed_estimate_exactly():
    """A model stopped after its loops keeps its estimate bit for bit, even a non-finite one:
    model 0's one loop writes (inf, 0) (V[w_0, one] = 1e308, W[one, one] = 1e10), and its
    estimates after loops 2 and 3 are (inf, 0) too, not nan."""
    M, k = 2, 3
    X, y, w_star, stat = prompts(M, False, seed=10)
    V, W = (t.detach() for t in params(M, seed=10, scale=0.3))
    V[0], W[0] = 0.0, 0.0
    one, w0 = 2 * D_ + 1, D_ + 1
    V[0, w0, one], W[0, one, one] = 1e308, 1e10
    est = looped_estimate(V, W, stat, k, N_, last=k, loops=[1, 3])
    expect = torch.tensor([float("inf"), 0.0], dtype=F64).expand(B_, k, D_)
    assert torch.equal(est[0], expect)
    close(est[1], ref_looped(V[1:], W[1:], X, y, N_, k)[0])


# ------------------------------------------------------------------------ precision
@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.bfloat16, 6e-2)])
def test_passes_compute_in_the_parameters_dtype(dtype, tol):
    """The passes return the parameters' dtype (no float32 constant promotes a bfloat16 result or
    breaks its products), close to the float64 reference: the readable predictions, the per-model
    CoT loss, the looped estimate and loss."""
    M, k = 2, 3
    X, y, w_star, stat = prompts(M, True, seed=12)
    its = torch.randn(M, B_, k + 1, D_, generator=torch.Generator().manual_seed(12), dtype=F64)
    V, W = (t.detach() for t in params(M, seed=12, scale=0.3))
    lo = [t.to(dtype) for t in (V, W, stat, its, w_star)]
    ref_pred = torch.stack([torch.stack([torch.stack([
        f(torch.cat([tokens(X[m, b], y[m, b], its[m, b, 0])] + [column(its[m, b, l]) for l in range(1, i + 1)], 1),
          V[m], W[m], N_)[D_ + 1:2 * D_ + 1, -1] for i in range(k)]) for b in range(B_)]) for m in range(M)])
    ref_est = ref_looped(V, W, X, y, N_, k)
    batch = Batch(stat=lo[2], w_star=lo[4], iterates=lo[3])
    out = {"pred": (teacher_forced_predictions(lo[0], lo[1], lo[2], lo[3][..., :-1, :], N_), ref_pred),
           "cot": (cot_loss(lo[0], lo[1], batch, N_), ref_cot_loss(V, W, X, y, its, N_, [k] * M)),
           "looped": (looped_estimate(lo[0], lo[1], lo[2], k, N_, last=k), ref_est),
           "looped_loss": (looped_loss(lo[0], lo[1], batch, N_, k, window=2),
                           ref_looped_loss(ref_est, w_star, 2, [k] * M))}
    for name, (value, ref) in out.items():
        assert value.dtype == dtype, name
        ref = ref.detach()
        assert float((value.to(F64) - ref).abs().max()) <= tol * (1 + float(ref.abs().max())), name
