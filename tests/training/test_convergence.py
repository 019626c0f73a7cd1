"""Training lands on the theory's numbers and structure (issue 4).  Every test here is a
training check: a model trained with Adam on fresh prompts, judged against numerics / theory.

Fast tests (default suite) use a reduced configuration (d 3, n 8, k 3, batch 256, 300 Adam steps
of lr 1e-2: seconds).  The ``slow`` tests train at the paper's configuration (d 10, n 20, k 10,
eta 0.4, batch 1000, 750 iterations, the defaults) for seeds 0, 1, 2; with ``slow_scale ==
'reduced'`` (CI) they run seed 0 only, and the looped model at a smaller size.  A full run takes
about 15 minutes on 2 CPU cores (the looped model is 15x costlier per step than CoT).
"""
import functools

import pytest
import torch

import theory
from theory import Layout
from training import TrainConfig, train

ETA = 0.4
REDUCED = dict(d=3, n=8, k=3, batch=256, iters=300, lr=1e-2, eval_every=300, eval_samples=4000,
               theory_samples=20000, structure_samples=1000, device="cpu", progress=False)


@functools.lru_cache(maxsize=None)
def _run(mode, param, **overrides):
    return train(TrainConfig(mode=mode, param=param, **{**REDUCED, **overrides}))


def _assert_gd_structure(summary, eta=ETA, tol=0.03):
    s = summary["structure"]
    assert abs(s["v31_w13"] + eta) <= tol * eta, s
    assert abs(s["w24_v31"] - eta) <= tol * eta, s
    assert s["offdiag_energy"] <= 0.05, s
    assert s["functional_deviation"] <= 0.03, s


def _assert_blocks(result, eta=ETA, tol=0.03):
    """V31 -> -eta I and W13 -> I (relative Frobenius distance)."""
    L = Layout(result.config.d)
    eye = torch.eye(L.d, dtype=result.V.dtype)
    V31, W13 = result.V[L.w, L.x], result.W[L.x, L.w]
    assert torch.linalg.norm(V31 + eta * eye) <= tol * torch.linalg.norm(eta * eye)
    assert torch.linalg.norm(W13 - eye) <= tol * torch.linalg.norm(eye)


@pytest.mark.parametrize("param", ["full", "sparse", "isotropic"])
def test_cot_reduced_learns_gd(param):
    """Training: CoT with teacher forcing reaches the k-step GD loss (numerics Monte Carlo, within
    10%) and Theorem 3.2's scale-free structure."""
    r = _run("cot", param)
    assert abs(r.summary["relative_gap"]) <= 0.10, r.summary["relative_gap"]
    _assert_gd_structure(r.summary)
    if param != "full":
        _assert_blocks(r)


def test_nocot_reduced_sits_at_the_floor():
    """Training: without CoT the loss stays at Theorem 3.1's floor d(d+1)/(2(n+d+1)) (within 5%,
    never below it by more than 4 SE), far above the CoT model's."""
    r = _run("nocot", "full")
    floor = float(theory.nocot_min_loss(3, 8))
    s = r.summary
    assert s["theory_eval_loss"] == floor
    assert abs(s["final_eval_loss"] - floor) <= 0.05 * floor
    assert s["final_eval_loss"] >= floor - 4 * s["eval"]["se"]
    assert s["final_eval_loss"] > 1.5 * _run("cot", "full").summary["final_eval_loss"]
    assert abs(s["learned_step"] - float(theory.nocot_optimal_eta(3, 8))) <= 0.05 * s["learned_step"]


@pytest.mark.parametrize("param", ["full", "sparse"])
def test_looped_reduced_beats_cot(param):
    """Training: the looped model (k loops in place, loss on the last estimate) ends below the
    CoT model and at or below the best single-step GD (numerics.looped_optimal_eta): with free
    parameters it can do better than any single step (see the issue-4 report)."""
    r = _run("looped", param)
    s = r.summary
    assert s["final_eval_loss"] < _run("cot", param).summary["final_eval_loss"]
    assert s["final_eval_loss"] <= 1.05 * s["theory_eval_loss"]
    assert s["final_eval_loss"] <= s["theory_same_prompts"]["mean"]
    assert s["learned_step"] > 0.3


# ------------------------------------------------------------------------------ paper config
PAPER = dict(device="cpu", progress=False, eval_every=250)
SEEDS = [0, 1, 2]


@functools.lru_cache(maxsize=None)
def _paper(mode, param, seed, **overrides):
    return train(TrainConfig(mode=mode, param=param, seed=seed, **{**PAPER, **overrides}))


def _seed_for(slow_scale, seed):
    if slow_scale == "reduced" and seed != 0:
        pytest.skip("reduced slow run: seed 0 only")


@pytest.mark.slow
@pytest.mark.parametrize("seed", SEEDS)
def test_paper_cot_full(slow_scale, seed):
    """Training, paper config: CoT with full V, W (defaults) within 10% of the k-step GD loss,
    v31_w13 / w24_v31 within 3% of -eta / eta, functional deviation <= 0.03, off-diagonal <= 0.05."""
    _seed_for(slow_scale, seed)
    s = _paper("cot", "full", seed).summary
    assert abs(s["relative_gap"]) <= 0.10
    _assert_gd_structure(s)


@pytest.mark.slow
@pytest.mark.parametrize("seed", SEEDS)
def test_paper_cot_sparse(slow_scale, seed):
    """Training, paper config: CoT with the sparse parameters from Assumption 4.1's init: same
    tolerances, and V31 -> -eta I, W13 -> I."""
    _seed_for(slow_scale, seed)
    r = _paper("cot", "sparse", seed)
    assert abs(r.summary["relative_gap"]) <= 0.10
    _assert_gd_structure(r.summary)
    _assert_blocks(r)


@pytest.mark.slow
@pytest.mark.parametrize("seed", SEEDS)
def test_paper_nocot(slow_scale, seed):
    """Training, paper config: no CoT within 5% of the floor and never credibly below it."""
    _seed_for(slow_scale, seed)
    s = _paper("nocot", "full", seed).summary
    floor = float(theory.nocot_min_loss(10, 20))
    assert abs(s["final_eval_loss"] - floor) <= 0.05 * floor
    assert s["final_eval_loss"] >= floor - 4 * s["eval"]["se"]


@pytest.mark.slow
@pytest.mark.parametrize("seed", SEEDS)
def test_paper_looped(slow_scale, seed):
    """Training: looped (k 10, sparse parameters, defaults otherwise): its median loss is below the
    CoT model's and below the best single GD step's on the same prompts.  Medians, because the
    looped model's step sits near the stability edge of rare prompts: at seed 2 one prompt in
    20000 has loss 2.3e3 and moves the mean from about 0.16 to 0.29 (issue-4 report).  The reduced
    form uses d 5, n 10, k 5.  (The fully parametrised looped model does not train at the paper's
    size: see the report.)"""
    _seed_for(slow_scale, seed)
    size = {} if slow_scale == "full" else dict(d=5, n=10, k=5, batch=500, iters=400, lr=1e-2)
    looped = _paper("looped", "sparse", seed, **size).summary
    cot = _paper("cot", "sparse", seed, **size).summary
    assert looped["eval"]["median"] < cot["eval"]["median"]
    assert looped["eval"]["median"] < looped["theory_same_prompts"]["median"]
    assert looped["eval"]["diverged_frac"] <= 1e-3
