"""Guards of training/data.py (the prompts a model trains and is evaluated on): exact identities
on the numbers a user reproduces from a seed.

* The seed derivation is the documented ``SeedSequence`` one (and its recorded values), and a
  batch is exactly the documented draws from the seeded generator in the documented order (X,
  then w*, then eps), in the requested dtype, whatever the global RNG and default dtype.
* The statistic is the literal ``Z Z^T / n`` of the returned x and y rows, the GD targets are
  literal GD steps ``w_{i+1} = w_i - eta/n X (X^T w_i - y)`` on the returned prompt, for any
  leading batch axes; ``Sigma^{1/2}`` squared is Sigma, in the requested dtype.
* The training streams serve the documented draws (fresh, or shuffled passes over a pool), resume
  from ``state()``, and ``BatchFeed`` prefetches on its one ``cotgd-data`` thread without changing a
  number; a refusal names the bad argument first.
"""
import dataclasses
import threading

import numpy as np
import pytest
import sympy
import torch

from training.data import (BatchFeed, PromptStream, derived_seed, exact_noise_var, gd_iterates, make_batch,
                           prompt_streams, sample_batch, sample_prompts, seeded_generator, sigma_root)

SIGMA = [[2.0, 0.5], [0.5, 1.0]]


def _literal_gd(X, y, eta, k):
    """GD on the least squares of one prompt, step by step: ``w_{i+1} = w_i - eta/n X (X^T w_i - y)``."""
    n = X.shape[-1]
    w = torch.zeros(X.shape[0], dtype=X.dtype)
    out = [w]
    for _ in range(k):
        w = w - eta / n * (X @ (X.T @ w - y))
        out.append(w)
    return torch.stack(out)


# ------------------------------------------------------------------ refusals naming the argument
def _S_w():
    p = sample_prompts(2, 3, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return p.S, p.w_star


@pytest.mark.parametrize("call, name", [
    (lambda: sample_prompts(0, 2, 3, generator=torch.Generator()), "batch"),
    (lambda: sample_prompts(2, 0, 3, generator=torch.Generator()), "d"),
    (lambda: sample_prompts(2, 2, 0, generator=torch.Generator()), "n"),
    (lambda: sample_prompts(2, 2, 3, generator=torch.Generator(), noise=-0.1), "noise"),
    (lambda: sample_batch(2, 0, 3, 0.3, 1, generator=torch.Generator()), "d"),
    (lambda: sample_batch(2, 2, 3.5, 0.3, 1, generator=torch.Generator()), "n"),
    (lambda: derived_seed(-1, "data"), "seed"),
    (lambda: seeded_generator(-3, "eval"), "seed"),
    (lambda: exact_noise_var(-1), "noise"),
    (lambda: gd_iterates(*_S_w(), 0.0, 2), "eta"),
    (lambda: gd_iterates(*_S_w(), 0.3, -1), "k"),
    (lambda: sigma_root([[1.0, 2.0], [0.0, 1.0]], 2), "sigma"),
    (lambda: sigma_root([[1.0, 2.0], [0.0, 1.0]], 2, name="Sigma_eval"), "Sigma_eval"),
    (lambda: sigma_root([[1.0, 0.0], [0.0, -1.0]], 2, name="ood_sigmas['wide']"), r"ood_sigmas\['wide'\]"),
])
def test_a_refusal_names_the_bad_argument_first(call, name):
    with pytest.raises(ValueError, match=f"^{name} must"):
        call()


def test_exact_noise_var_is_the_exact_square_of_the_std():
    assert exact_noise_var(0.5) == sympy.Rational(1, 4)
    assert exact_noise_var(0) == 0


# ------------------------------------------------------------------------------- seeds and draws
@pytest.mark.parametrize("seed, stream, recorded", [
    (0, "data", 1557076856005854010), (0, "eval", 1888590100720109591),
    (3, "init", 6139224044021725270), (12345, "structure", 1920378879560040229),
])
def test_derived_seed_is_the_documented_seed_sequence_word(seed, stream, recorded):
    """Exact: the first uint64 word of ``SeedSequence([seed, *ord(stream)])`` shifted to 63 bits, and
    the recorded value (a run's numbers are reproduced from it); the generator is seeded with it."""
    word = np.random.SeedSequence([seed] + [ord(ch) for ch in stream]).generate_state(1, dtype=np.uint64)[0]
    assert derived_seed(seed, stream) == int(word) >> 1 == recorded
    assert 0 <= recorded < 2 ** 63
    g = seeded_generator(seed, stream)
    assert g.device == torch.device("cpu") and g.initial_seed() == recorded
    assert torch.equal(torch.randn(5, generator=g), torch.randn(5, generator=torch.Generator().manual_seed(recorded)))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("sigma", [None, SIGMA])
@pytest.mark.parametrize("noise", [0.0, 0.7])
def test_prompts_are_the_documented_draws_in_order(dtype, sigma, noise):
    """Exact: X = Sigma^{1/2} Z (Z, then w*, then eps = s N(0, 1), all from the seeded generator,
    none from the global RNG), y = X^T w* + eps of shape (B, n), everything in ``dtype`` (a float64
    root is cast to it)."""
    B, d, n = 6, 2, 5
    root = sigma_root(sigma, d)                       # float64, whatever the prompts' dtype
    torch.manual_seed(999)                            # the global RNG must not matter
    p = sample_prompts(B, d, n, generator=seeded_generator(4, "data"), sigma_sqrt=root, dtype=dtype, noise=noise)
    g = seeded_generator(4, "data")
    X = torch.randn((B, d, n), generator=g, dtype=dtype)
    if root is not None:
        X = root.to(dtype) @ X
    w = torch.randn((B, d), generator=g, dtype=dtype)
    assert p.X.dtype == p.w_star.dtype == p.y.dtype == dtype
    assert torch.equal(p.X, X) and torch.equal(p.w_star, w)
    assert p.y.shape == (B, n)
    y = torch.einsum("bdn,bd->bn", X, w)
    if noise:
        eps = noise * torch.randn((B, n), generator=g, dtype=dtype)
        assert p.eps.dtype == dtype and torch.equal(p.eps, eps)
        y = y + eps
    else:
        assert p.eps is None
    torch.testing.assert_close(p.y, y)
    # nothing else was drawn: the generators are in the same state
    assert torch.equal(g.get_state(), _state_after(B, d, n, root, dtype, noise))


def _state_after(B, d, n, root, dtype, noise):
    g = seeded_generator(4, "data")
    sample_prompts(B, d, n, generator=g, sigma_sqrt=root, dtype=dtype, noise=noise)
    return g.get_state()


@pytest.mark.parametrize("sigma", [None, SIGMA])
@pytest.mark.parametrize("noise", [0.0, 0.5])
def test_sample_batch_is_make_batch_of_the_same_prompts_and_literal(sigma, noise):
    """Exact: ``sample_batch`` = ``make_batch(sample_prompts(...))`` bitwise on the same seed (same
    covariance, same label noise); its statistic is the literal ``Z Z^T / n`` of the prompt's (x, y)
    rows and its targets the literal GD steps on (X, y)."""
    B, d, n, eta, k = 5, 2, 4, 0.3, 3
    root = sigma_root(sigma, d)
    b = sample_batch(B, d, n, eta, k, generator=seeded_generator(2, "data"), sigma_sqrt=root,
                     dtype=torch.float64, noise=noise)
    p = sample_prompts(B, d, n, generator=seeded_generator(2, "data"), sigma_sqrt=root, dtype=torch.float64,
                       noise=noise)
    ref = make_batch(p, eta, k)
    assert torch.equal(b.stat, ref.stat) and torch.equal(b.iterates, ref.iterates)
    assert torch.equal(b.w_star, p.w_star)
    assert b.stat.dtype == b.iterates.dtype == torch.float64
    assert b.stat.shape == (B, d + 1, d + 1) and b.iterates.shape == (B, k + 1, d)
    for i in range(B):
        Z = torch.cat([p.X[i], p.y[i].unsqueeze(0)])          # (d + 1, n): the x rows and the y row
        torch.testing.assert_close(b.stat[i], Z @ Z.T / n, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(b.iterates[i], _literal_gd(p.X[i], p.y[i], eta, k), rtol=1e-12, atol=1e-12)
    if noise:       # the noise reaches the targets and the statistic
        clean = sample_batch(B, d, n, eta, k, generator=seeded_generator(2, "data"), sigma_sqrt=root,
                             dtype=torch.float64)
        assert not torch.allclose(clean.stat[:, d, d], b.stat[:, d, d])
        assert not torch.allclose(clean.iterates[:, -1], b.iterates[:, -1])


# --------------------------------------------------------------------------------- the GD targets
@pytest.mark.parametrize("lead", [(), (3,), (2, 3)])
def test_gd_iterates_over_any_leading_axes_are_literal_gd(lead):
    """Exact: ``gd_iterates`` on S (..., d, d), w* (..., d) is the literal GD of each prompt, for no,
    one or two leading axes (M models x B prompts); d = 4 differs from every leading size."""
    d, n, eta, k = 4, 5, 0.2, 3
    count = int(np.prod(lead)) if lead else 1
    p = sample_prompts(count, d, n, generator=seeded_generator(1, "data"), dtype=torch.float64)
    S, w = p.S.reshape(lead + (d, d)), p.w_star.reshape(lead + (d,))
    its = gd_iterates(S, w, eta, k)
    assert its.shape == lead + (k + 1, d) and its.dtype == torch.float64
    flat = its.reshape(count, k + 1, d)
    for i in range(count):
        torch.testing.assert_close(flat[i], _literal_gd(p.X[i], p.y[i], eta, k), rtol=1e-12, atol=1e-12)


def test_float32_targets_do_not_depend_on_torch_default_dtype():
    """Exact: float32 GD targets are computed in float32, bitwise the same under
    ``torch.set_default_dtype(torch.float64)`` (a common notebook setting)."""
    p = sample_prompts(64, 3, 5, generator=seeded_generator(0, "data"), dtype=torch.float32)
    ref = gd_iterates(p.S, p.w_star, 0.4, 6)
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        again = gd_iterates(p.S, p.w_star, 0.4, 6)
    finally:
        torch.set_default_dtype(old)
    assert again.dtype == torch.float32 and torch.equal(again, ref)


# ------------------------------------------------------------------------------------ Sigma^{1/2}
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sigma_root_squares_to_sigma_in_the_requested_dtype(dtype):
    """Exact: the root of a list and of a tensor Sigma are the same, in ``dtype``, and square to
    Sigma (float64: to 1e-12); the float32 root is the float64 one rounded."""
    root = sigma_root(SIGMA, 2, dtype=dtype)
    from_tensor = sigma_root(torch.tensor(SIGMA, dtype=torch.float32), 2, dtype=dtype)
    assert root.dtype == from_tensor.dtype == dtype
    assert torch.equal(root, from_tensor)
    assert torch.equal(root, sigma_root(SIGMA, 2).to(dtype))
    tol = 1e-12 if dtype == torch.float64 else 1e-6
    torch.testing.assert_close(root @ root, torch.tensor(SIGMA, dtype=dtype), rtol=tol, atol=tol)
    assert sigma_root(None, 2) is None


# --------------------------------------------------------------------------------- the streams
def _ref_fresh(seed, n_draws, *, batch, d, n, etas, kmax, noise=0.0, root=None, dtype=torch.float64):
    g = seeded_generator(seed, "data")
    out = []
    for _ in range(n_draws):
        p = sample_prompts(batch, d, n, generator=g, sigma_sqrt=root, dtype=dtype, noise=noise)
        out.append({eta: make_batch(p, eta, kmax) for eta in etas})
    return out


def _ref_pool(seed, n_draws, *, batch, pool, d, n, etas, kmax, noise=0.0, root=None, dtype=torch.float64):
    """The documented pool: ``pool`` prompts drawn once, then a ``randperm`` per pass, batches of
    consecutive entries of it, a new pass when a batch no longer fits."""
    g = seeded_generator(seed, "data")
    p = sample_prompts(pool, d, n, generator=g, sigma_sqrt=root, dtype=dtype, noise=noise)
    full = {eta: make_batch(p, eta, kmax) for eta in etas}
    out, perm, pos = [], torch.randperm(pool, generator=g), 0
    for _ in range(n_draws):
        if pos + batch > pool:
            perm, pos = torch.randperm(pool, generator=g), 0
        idx = perm[pos:pos + batch]
        pos += batch
        out.append({eta: (b.stat[idx], b.w_star[idx], b.iterates[idx]) for eta, b in full.items()})
    return out


def _same(draw, ref):
    assert sorted(draw) == sorted(ref)
    for eta, b in draw.items():
        r = ref[eta]
        r = (r.stat, r.w_star, r.iterates) if not isinstance(r, tuple) else r
        assert torch.equal(b.stat, r[0]) and torch.equal(b.w_star, r[1]) and torch.equal(b.iterates, r[2])


@pytest.mark.parametrize("noise", [None, 0.0, 0.6])
def test_fresh_stream_is_the_documented_draws(noise):
    """Exact: a stream without a pool draws ``make_batch(sample_prompts(...))`` on its data generator
    for every eta; ``noise`` left out is no label noise; ``state()``/``load_state`` replays a draw."""
    kw = dict(batch=3, d=2, n=4, etas=[0.3, 0.5], kmax=2)
    stream = PromptStream(5, dtype=torch.float64, **kw) if noise is None else \
        PromptStream(5, dtype=torch.float64, noise=noise, **kw)
    ref = _ref_fresh(5, 3, noise=noise or 0.0, **kw)
    saved = None
    for i in range(3):
        if i == 2:
            saved = stream.state()
        _same(stream.draw(), ref[i])
    stream.load_state(saved)
    _same(stream.draw(), ref[2])


@pytest.mark.parametrize("pool", [8, 10])
def test_pool_stream_serves_the_documented_passes(pool):
    """Exact: with a pool, each draw is the next ``batch`` entries of the pass's permutation (from
    the first entry on), a new permutation when the next batch no longer fits (pool 8: two full
    batches per pass; pool 10: a remainder of 2 left out); stat, w* and targets all indexed."""
    kw = dict(batch=4, d=2, n=5, etas=[0.4, 0.2], kmax=2)
    stream = PromptStream(7, pool=pool, dtype=torch.float64, noise=0.3, **kw)
    ref = _ref_pool(7, 6, pool=pool, noise=0.3, **kw)
    for i in range(6):
        _same(stream.draw(), ref[i])


def test_prompt_streams_take_pool_noise_and_sigma_from_the_config_on_the_cpu_by_default():
    """Exact: ``prompt_streams(configs)`` (default device and dtype: the CPU, float32) builds each
    seed's stream with the config's pool, label noise and covariance: its draws are the documented
    ones."""
    from training import TrainConfig
    base = TrainConfig(d=2, n=5, batch=4, pool=8, noise=0.5, sigma=SIGMA, device="cpu")
    configs = [dataclasses.replace(base, seed=s, eta=0.3, k=2) for s in (1, 2)]
    streams = prompt_streams(configs)
    assert list(streams) == [1, 2]
    root = sigma_root(SIGMA, 2, dtype=torch.float32)
    for seed, stream in streams.items():
        assert stream.generator.device == torch.device("cpu") and stream.pool_size == 8 and stream.noise == 0.5
        ref = _ref_pool(seed, 3, batch=4, pool=8, d=2, n=5, etas=[0.3], kmax=2, noise=0.5, root=root,
                        dtype=torch.float32)
        for i in range(3):
            draw = stream.draw()
            assert draw[0.3].stat.dtype == torch.float32
            _same(draw, ref[i])


# ------------------------------------------------------------------------------------- BatchFeed
class _Recorder:
    """A stream that records the thread of each draw; draw number ``fail_at`` raises."""

    def __init__(self, fail_at=None):
        self.count, self.threads, self.fail_at = 0, [], fail_at

    def draw(self):
        self.threads.append(threading.current_thread().name)
        self.count += 1
        if self.count == self.fail_at:
            raise RuntimeError("draw failed")
        return self.count

    def state(self):
        return self.count

    def load_state(self, state):
        self.count = state


def test_prefetch_draws_the_next_batch_on_the_cotgd_data_thread():
    """With ``prefetch`` the draw after ``next(more=True)`` runs on the ``cotgd-data`` thread (the
    first is drawn inline); ``shutdown`` stops it and later draws are inline again."""
    rec = _Recorder()
    feed = BatchFeed({0: rec}, prefetch=True)
    main = threading.current_thread().name
    assert feed.next(more=True) == {0: 1}
    assert feed.next(more=True) == {0: 2}
    assert feed.next(more=False) == {0: 3}
    assert rec.threads[0] == main
    assert len(rec.threads) == 3 and all(t.startswith("cotgd-data") for t in rec.threads[1:])
    feed.shutdown()
    assert feed.pool is None
    assert feed.next(more=True) == {0: 4} and feed.next(more=True) == {0: 5}
    assert rec.threads[3:] == [main, main]


def test_without_prefetch_every_draw_is_inline():
    rec = _Recorder()
    feed = BatchFeed({0: rec}, prefetch=False)
    assert feed.pool is None
    assert [feed.next(more=True)[0] for _ in range(3)] == [1, 2, 3]
    assert rec.threads == [threading.current_thread().name] * 3
    feed.shutdown()                                   # nothing to stop
    assert feed.next(more=False) == {0: 4}


@pytest.mark.parametrize("prefetch", [False, True])
def test_feed_state_resumes_the_first_batch_not_handed_out(prefetch):
    """Exact: ``state()`` (also while a draw is in flight) is where the first batch not yet handed
    out is drawn from; ``load_state`` and ``discard`` bring the streams back to it, so the batches are
    the same with and without prefetch."""
    def streams():
        return {s: PromptStream(s, batch=3, d=2, n=4, etas=[0.4], kmax=2, dtype=torch.float64) for s in (0, 1)}
    ref = _ref_fresh(0, 4, batch=3, d=2, n=4, etas=[0.4], kmax=2)
    feed = BatchFeed(streams(), prefetch=prefetch)
    start = feed.state()
    _same(feed.next(more=True)[0], ref[0])
    mid = feed.state()                                # a draw may be in flight: the state before it
    _same(feed.next(more=True)[0], ref[1])
    feed.load_state(mid)
    _same(feed.next(more=True)[0], ref[1])
    feed.discard()                                    # the draw in flight (if any) is undone
    _same(feed.next(more=False)[0], ref[2])
    feed.load_state(start)
    _same(feed.next(more=True)[0], ref[0])
    feed.shutdown()
    _same(feed.next(more=False)[0], ref[1])


def test_a_failed_draw_in_flight_is_discarded_quietly():
    """A prefetched draw that failed is not the caller's error: ``discard`` undoes it and the
    stream draws again from the state before it."""
    rec = _Recorder(fail_at=2)
    feed = BatchFeed({0: rec}, prefetch=True)
    assert feed.next(more=True) == {0: 1}             # draw 2 (failing) is in flight
    feed.discard()
    assert rec.count == 1
    rec.fail_at = None
    assert feed.next(more=False) == {0: 2}
    feed.shutdown()
