"""The two gradient paths of a many-model run (training/engine.py, docs/architecture.md section 5):
``loop_gradients`` (one objective call per model) and ``fused_gradients`` (one call for all M)
take the same arguments and return the same structure, and on the same inputs they agree: the
loop path bitwise with each model computed alone, the fused path with the loop path to float
rounding.  Numeric checks on one draw of prompts, a few seconds in all."""
import dataclasses

import pytest
import torch

from training import TrainConfig
from training.data import BatchFeed, prompt_streams
from training.engine import Gradients, fused_gradients, gradient_path, loop_gradients, model_grid_configs
from training.model import LSA

TINY = dict(d=2, n=5, k=2, batch=32, device="cpu", progress=False)
#: M models: one seed with a k per model; two seeds; two seeds x two etas (each with k 1 and 3)
GRIDS = {2: dict(ks=[1, 3]), 4: dict(seeds=[0, 3], ks=[1, 3]), 8: dict(seeds=[0, 3], etas=[0.3, 0.5], ks=[1, 3])}
MODES = [("cot", {}), ("nocot", {}), ("looped", {}), ("looped", {"loop_window": 2, "loop_curriculum": 6})]
#: The fused call sums the same terms as the loop's calls in another order (products batched over
#: (model, prompt), padded steps masked), so the two differ by rounding: a few units in the last
#: place (float32 1.2e-7, float64 2.2e-16) grown over sums of B k terms.  The bounds are relative
#: (a loss to itself, a gradient to its model's largest entry), with a margin over the largest
#: deviations on these grids (float32 3.6e-7, float64 3.9e-16).
TOLERANCE = {"float32": 2e-6, "float64": 1e-13}
ITERATION = 3        # with loop_curriculum 6 the models of k 1 and 3 train 1 and 2 loops


def _inputs(mode: str, extra: dict, dtype: str, M: int, init_scale: float | None):
    """The arguments of a gradient path: random (V, W) of M models and one draw of their prompts."""
    configs = model_grid_configs(TrainConfig(**TINY, mode=mode, dtype=dtype, **extra), **GRIDS[M])
    torch_dtype = getattr(torch, dtype)
    batches = BatchFeed(prompt_streams(configs, "cpu", torch_dtype), prefetch=False).next(more=False)
    model = LSA(TINY["d"], models=M, init_scale=init_scale, generator=torch.Generator().manual_seed(M),
                dtype=torch_dtype)
    V, W = (A.detach() for A in model.matrices())
    return V, W, batches, configs


def _deviation(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| over max |b|: the deviation relative to the tensor's scale."""
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("init_scale", [None, 0.2], ids=["init", "scale0.2"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("M", list(GRIDS))
@pytest.mark.parametrize("mode, extra", MODES, ids=["cot", "nocot", "looped", "looped-window-curriculum"])
def test_loop_and_fused_gradients_agree(mode, extra, M, dtype, init_scale):
    """Numeric: the same structure from both (``Gradients``: losses (M,), gradients (M, D, D),
    detached, the parameters' dtype); the fused losses and every model's fused gradient equal the
    loop path's within ``TOLERANCE`` (the models differ in seed, eta and k, and in loops under
    the curriculum); the loop path's model j is bitwise the loop path of model j alone."""
    V, W, batches, configs = _inputs(mode, extra, dtype, M, init_scale)
    loop = loop_gradients(V, W, batches, configs, ITERATION)
    fused = fused_gradients(V, W, batches, configs, ITERATION)
    for g in (loop, fused):
        assert type(g) is Gradients
        assert g.loss.shape == (M,) and g.V.shape == V.shape and g.W.shape == W.shape
        assert {t.dtype for t in g} == {V.dtype} and not any(t.requires_grad for t in g)
        assert all(bool(torch.isfinite(t).all()) for t in g)
    rtol = TOLERANCE[dtype]
    torch.testing.assert_close(fused.loss, loop.loss, rtol=rtol, atol=0.0)
    for j in range(M):
        assert _deviation(fused.V[j], loop.V[j]) < rtol and _deviation(fused.W[j], loop.W[j]) < rtol, j
        alone = loop_gradients(V[j:j + 1], W[j:j + 1], batches, configs[j:j + 1], ITERATION)
        assert all(torch.equal(a[0], b[j]) for a, b in zip(alone, loop)), j


def test_workers_change_no_number():
    """Exact: the loop path on four worker threads is bitwise the loop path in this thread (the
    fused path takes the same argument and ignores it)."""
    from concurrent.futures import ThreadPoolExecutor
    V, W, batches, configs = _inputs("cot", {}, "float32", 8, None)
    inline = loop_gradients(V, W, batches, configs, ITERATION)
    with ThreadPoolExecutor(4) as workers:
        threaded = loop_gradients(V, W, batches, configs, ITERATION, workers=workers)
        fused = fused_gradients(V, W, batches, configs, ITERATION, workers=workers)
    assert all(torch.equal(a, b) for a, b in zip(inline, threaded))
    assert all(torch.equal(a, b) for a, b in zip(fused, fused_gradients(V, W, batches, configs, ITERATION)))


def test_gradient_path_is_chosen_by_fused_models():
    """``gradient_path``: the loop for one model and for 'loop'; the fused call for 'fused' and,
    with 'auto', on CUDA."""
    auto, cpu, cuda = TrainConfig(**TINY), torch.device("cpu"), torch.device("cuda")
    fused = dataclasses.replace(auto, fused_models="fused")
    assert gradient_path(auto, 4, cpu) is loop_gradients and gradient_path(auto, 4, cuda) is fused_gradients
    assert gradient_path(fused, 4, cpu) is fused_gradients and gradient_path(fused, 1, cpu) is loop_gradients
    assert gradient_path(dataclasses.replace(auto, fused_models="loop"), 4, cuda) is loop_gradients
