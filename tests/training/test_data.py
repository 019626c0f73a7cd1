"""Prompts, statistics and GD targets (training/data.py).  Numeric float64 checks against numerics,
plus one statistical check of the covariance (within 4 standard errors), and the training prompt
streams."""
import dataclasses

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import numerics
from training.data import (derived_seed, gd_iterates, make_batch, sample_batch, sample_prompts,
                           seeded_generator, sigma_root)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


@given(d=st.integers(1, 5), n=st.integers(1, 9), k=st.integers(0, 6), seed=st.integers(0, 2**31))
def test_gd_iterates_match_numerics(d, n, k, seed):
    """Numeric float64: batched GD targets = numerics.gd_iterates on each prompt."""
    p = sample_prompts(3, d, n, generator=_gen(seed), dtype=torch.float64)
    its = gd_iterates(p.S, p.w_star, 0.3, k)
    assert its.shape == (3, k + 1, d)
    for b in range(3):
        ref = numerics.gd_iterates(p.X[b].numpy(), p.y[b].numpy(), 0.3, k)
        np.testing.assert_allclose(its[b].numpy(), ref, rtol=1e-10, atol=1e-12)


@given(d=st.integers(1, 5), n=st.integers(1, 9), seed=st.integers(0, 2**31))
def test_prompt_statistic_is_numerics_data_statistic(d, n, seed):
    """Numeric float64: the torch statistic is ``numerics.data_statistic`` (the reference) and
    is ``Z_data Z_data^T / n`` of the embedded prompt (``numerics.embed``); y = X^T w*."""
    p = sample_prompts(4, d, n, generator=_gen(seed), dtype=torch.float64)
    torch.testing.assert_close(p.y, torch.einsum("bdn,bd->bn", p.X, p.w_star))
    ref = numerics.data_statistic(p.S.numpy(), p.w_star.numpy())
    np.testing.assert_allclose(p.data_statistic.numpy(), ref, rtol=1e-13, atol=1e-13)
    for b in range(4):
        Z = numerics.embed(p.X[b].numpy(), p.y[b].numpy())[: d + 1, :n]
        np.testing.assert_allclose(ref[b], Z @ Z.T / n, rtol=1e-12, atol=1e-12)


def test_same_seed_same_prompts_and_streams_differ():
    a = sample_batch(5, 3, 4, 0.4, 2, generator=_gen(7))
    b = sample_batch(5, 3, 4, 0.4, 2, generator=_gen(7))
    assert torch.equal(a.stat, b.stat) and torch.equal(a.iterates, b.iterates)
    assert derived_seed(0, "data") != derived_seed(0, "eval") != derived_seed(1, "eval")
    x = torch.randn(3, generator=seeded_generator(0, "data"))
    assert torch.equal(x, torch.randn(3, generator=seeded_generator(0, "data")))


def test_sigma_is_applied():
    """Statistical: E[S] = Sigma for x ~ N(0, Sigma); mean of 20000 prompts within 4 SE."""
    sigma = [[2.0, 0.5], [0.5, 1.0]]
    p = sample_prompts(20000, 2, 5, generator=_gen(1), sigma_sqrt=sigma_root(sigma, 2), dtype=torch.float64)
    S = p.S
    mean, se = S.mean(0), S.std(0) / np.sqrt(S.shape[0])
    assert ((mean - torch.tensor(sigma, dtype=torch.float64)).abs() <= 4 * se).all()
    root = sigma_root(sigma, 2)
    torch.testing.assert_close(root @ root, torch.tensor(sigma, dtype=torch.float64))


@pytest.mark.parametrize("sigma, match", [([[1.0, 0.0]], "2 x 2"), ([[1.0, 2.0], [0.0, 1.0]], "symmetric"),
                                          ([[1.0, 0.0], [0.0, -1.0]], "positive semi-definite"),
                                          ("abc", "sigma")])
def test_bad_sigma_raises(sigma, match):
    with pytest.raises(ValueError, match=match):
        sigma_root(sigma, 2)


def test_bad_sizes_raise():
    with pytest.raises(ValueError, match="batch"):
        sample_prompts(0, 2, 3, generator=_gen())
    with pytest.raises(ValueError, match="eta"):
        make_batch(sample_prompts(2, 2, 3, generator=_gen()), -1.0, 2)


def test_prompt_streams_one_per_seed_with_each_eta_up_to_its_longest_k():
    """Exact: ``prompt_streams`` gives one stream per seed (in order of first appearance), with the
    etas of that seed's models and targets up to its largest k; a model with fewer steps reads the
    first k + 1 of them, bitwise the targets of a stream of its own k; a seed's draws are those of
    ``sample_batch`` on its data generator."""
    from training import TrainConfig
    from training.data import prompt_streams
    base = TrainConfig(d=2, n=5, batch=8, device="cpu")
    configs = [dataclasses.replace(base, seed=s, eta=e, k=k) for s, e, k in ((3, 0.3, 1), (0, 0.5, 4), (3, 0.5, 2))]
    streams = prompt_streams(configs, "cpu", torch.float64)
    assert list(streams) == [3, 0]
    assert (streams[3].etas, streams[3].kmax, streams[0].etas, streams[0].kmax) == ([0.3, 0.5], 2, [0.5], 4)
    draw = streams[3].draw()
    short = prompt_streams([configs[0]], "cpu", torch.float64)[3].draw()[0.3]
    assert torch.equal(draw[0.3].iterates[:, :2], short.iterates) and torch.equal(draw[0.3].stat, short.stat)
    ref = sample_batch(8, 2, 5, 0.5, 2, generator=seeded_generator(3, "data"), dtype=torch.float64)
    assert torch.equal(draw[0.5].stat, ref.stat) and torch.equal(draw[0.5].iterates, ref.iterates)


def test_pool_serves_each_prompt_once_per_pass_and_resumes():
    """Exact: with a pool of 10 and batches of 4, a pass serves 8 distinct prompts of the pool
    (the remainder of 2 left out); a stream restored from ``state()`` mid-pass draws what the
    original draws next."""
    from training.data import PromptStream
    stream = PromptStream(1, batch=4, d=2, n=5, etas=[0.4], kmax=1, pool=10, dtype=torch.float64)
    pool = stream.pool[0.4].w_star
    first = [stream.draw()[0.4].w_star for _ in range(2)]
    rows = torch.cat(first)
    assert len({tuple(r.tolist()) for r in rows}) == 8
    assert all(any(torch.equal(r, p) for p in pool) for r in rows)
    saved = stream.state()
    ahead = [stream.draw()[0.4].w_star for _ in range(3)]
    again = PromptStream(1, batch=4, d=2, n=5, etas=[0.4], kmax=1, pool=10, dtype=torch.float64)
    again.load_state(saved)
    assert all(torch.equal(a, again.draw()[0.4].w_star) for a in ahead)
