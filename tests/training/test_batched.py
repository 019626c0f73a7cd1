"""Many models as one computation (training/batched.py): model j of a batched sweep ends exactly
where its single run (training.train) ends.  Training checks, a few seconds in all."""
import pytest
import torch

from training import TrainConfig, train
from training.batched import sweep_configs, sweep_workers, train_models

TINY = dict(d=2, n=5, k=2, batch=32, iters=12, eval_every=6, eval_samples=300, theory_samples=1000,
            structure_samples=100, device="cpu", progress=False)


def _assert_same_as_single_runs(results):
    for r in results:
        single = train(r.config)
        # bitwise: the same objective on the same slices, per-entry Adam; any rounding difference
        # would show here first
        assert torch.equal(r.V, single.V) and torch.equal(r.W, single.W), r.config
        assert r.summary["final_eval_loss"] == pytest.approx(single.summary["final_eval_loss"], rel=1e-9)
        assert [row["iteration"] for row in r.history] == [row["iteration"] for row in single.history]
        assert r.history[-1]["train_loss"] == pytest.approx(single.history[-1]["train_loss"], rel=1e-9)


@pytest.mark.parametrize("param", ["full", "sparse", "isotropic"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_batched_models_equal_their_single_runs(param, dtype):
    """Training, exact: 2 seeds x 2 etas x 2 ks = 8 models in one run; each model's final V, W
    are bitwise those of train() with its config (same init, prompts, gradients, Adam steps)."""
    results = train_models(TrainConfig(**TINY, param=param, dtype=dtype), seeds=[0, 3], etas=[0.3, 0.5], ks=[1, 3])
    assert len(results) == 8
    assert [(r.config.seed, r.config.eta, r.config.k) for r in results] == [
        (s, e, k) for s in (0, 3) for e in (0.3, 0.5) for k in (1, 3)]
    _assert_same_as_single_runs(results)


@pytest.mark.parametrize("threads", [1, 3])
def test_worker_threads_change_no_number(threads):
    """Training, exact: a sweep on one worker and on three worker threads (more than the models
    of a seed, fewer than all models) gives bitwise the models of their single runs, and
    restores the caller's torch thread count."""
    before = torch.get_num_threads()
    results = train_models(TrainConfig(**TINY, threads=threads), seeds=[0, 1], ks=[1, 2, 3])
    assert torch.get_num_threads() == before
    _assert_same_as_single_runs(results)


def test_sweep_workers():
    """One worker per model at most; ``threads`` sets the count, None takes every usable core."""
    assert sweep_workers(TrainConfig(**TINY, threads=4), 2) == 2
    assert sweep_workers(TrainConfig(**TINY, threads=1), 12) == 1
    assert 1 <= sweep_workers(TrainConfig(**TINY), 12) <= 12


@pytest.mark.parametrize("mode", ["nocot", "looped"])
def test_batched_other_modes_equal_their_single_runs(mode):
    """Training, exact: no-CoT and looped sweeps over seeds and k (k = loops for looped)."""
    _assert_same_as_single_runs(train_models(TrainConfig(**TINY, mode=mode), seeds=[1, 2], ks=[1, 2]))


def test_batched_summary_and_history():
    """Training: per-model history rows at every evaluation point, OOD losses, structure
    metrics, the theory only when asked."""
    base = TrainConfig(**TINY, ood_sigmas={"wide": 2.0})
    plain = train_models(base, ks=[1, 2])
    assert all(r.summary["theory_eval_loss"] is None and r.summary["models"] == 2 for r in plain)
    assert [row["iteration"] for row in plain[0].history] == [0, 6, 12]
    assert set(plain[1].history[-1]["eval_loss_ood"]) == {"wide"}
    assert set(plain[0].summary["structure"]) == {"v31_w13", "w24_v31", "offdiag_energy", "functional_deviation"}
    with_theory = train_models(base, ks=[1], theory=True)
    assert with_theory[0].summary["theory_eval_loss"] > 0


@pytest.mark.parametrize("kwargs, name", [
    ({"seeds": []}, "seeds"), ({"seeds": [0, 0]}, "seeds"), ({"seeds": [-1]}, "seeds"), ({"seeds": 3}, "seeds"),
    ({"ks": [0]}, "ks"), ({"ks": [2.5]}, "ks"), ({"etas": [0.0]}, "etas"), ({"etas": [float("nan")]}, "etas"),
    ({"theory": "yes"}, "theory")])
def test_bad_sweep_arguments_are_named(kwargs, name):
    """Bad input: ValueError naming the argument."""
    with pytest.raises(ValueError, match=name):
        train_models(TrainConfig(**TINY), **kwargs)


def test_bad_base_config_is_named():
    """Bad input: the base config is validated like train's."""
    with pytest.raises(ValueError, match="base"):
        sweep_configs({"d": 2})
    with pytest.raises(ValueError, match="batch"):
        sweep_configs(TrainConfig(**{**TINY, "batch": 0}))
