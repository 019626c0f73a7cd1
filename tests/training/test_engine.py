"""Many models as one computation (training/engine.py): model j of a run of M models ends
exactly where its single run (training.train) ends, with the same outputs (metrics rows, summary,
run directory, resume).  Training checks, a few seconds in all."""
import json

import numpy as np
import pytest
import torch

from runlog import crash_at
from training import TrainConfig, evaluate_params, load_run, resume, train
from training.engine import model_grid_configs, train_models, worker_threads

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
        assert set(r.summary) == set(single.summary)          # the same outputs for every model
        assert set(r.history[-1]) == set(single.history[-1])
        assert r.summary["structure"] == pytest.approx(single.summary["structure"], rel=1e-9)
        assert r.summary["theory_eval_loss"] == single.summary["theory_eval_loss"]
        assert r.summary["theory_same_prompts"] == single.summary["theory_same_prompts"]


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
    """Training, exact: a many-model run on one worker and on three worker threads (more than the models
    of a seed, fewer than all models) gives bitwise the models of their single runs, and
    restores the caller's torch thread count."""
    before = torch.get_num_threads()
    results = train_models(TrainConfig(**TINY, threads=threads), seeds=[0, 1], ks=[1, 2, 3])
    assert torch.get_num_threads() == before
    _assert_same_as_single_runs(results)


def test_worker_threads():
    """One worker per model at most; ``threads`` sets the count, None takes every usable core."""
    assert worker_threads(TrainConfig(**TINY, threads=4), 2) == 2
    assert worker_threads(TrainConfig(**TINY, threads=1), 12) == 1
    assert 1 <= worker_threads(TrainConfig(**TINY), 12) <= 12


def test_deprecated_names_warn_and_answer_as_the_new_ones():
    """``engine.sweep_configs`` and ``engine.sweep_workers`` are ``model_grid_configs`` and
    ``worker_threads`` under their deprecated names: a DeprecationWarning naming the new one."""
    from training import engine
    base = TrainConfig(**TINY, threads=4)
    with pytest.warns(DeprecationWarning, match="model_grid_configs"):
        assert engine.sweep_configs(base, ks=[1, 2]) == model_grid_configs(base, ks=[1, 2])
    with pytest.warns(DeprecationWarning, match="worker_threads"):
        assert engine.sweep_workers(base, 3) == worker_threads(base, 3) == 3


@pytest.mark.parametrize("mode", ["nocot", "looped"])
def test_batched_other_modes_equal_their_single_runs(mode):
    """Training, exact: no-CoT and looped runs of many models over seeds and k (k = loops for looped)."""
    _assert_same_as_single_runs(train_models(TrainConfig(**TINY, mode=mode), seeds=[1, 2], ks=[1, 2]))


def test_many_model_rows_and_ood_values():
    """Training, exact: every model's rows at every evaluation point; the in-training OOD
    evaluation is the one ``evaluate_params`` gives on that covariance (values, not only keys),
    and differs from the in-distribution one."""
    base = TrainConfig(**TINY, ood_sigmas={"wide": 2.0})
    results = train_models(base, ks=[1, 2], seeds=[0, 4])
    assert all(r.summary["theory_eval_loss"] > 0 and r.summary["models"] == 4 for r in results)
    assert [row["iteration"] for row in results[0].history] == [0, 6, 12]
    for r in results:
        c = r.config
        wide = evaluate_params(r.V.double(), r.W.double(), d=c.d, n=c.n, k=c.k, samples=c.eval_samples,
                               seed=c.seed, sigma=2.0 * np.eye(c.d))
        ident = evaluate_params(r.V.double(), r.W.double(), d=c.d, n=c.n, k=c.k, samples=c.eval_samples,
                                seed=c.seed)
        assert r.summary["eval_ood"]["wide"]["mean"] == pytest.approx(wide["mean"], rel=1e-12)
        assert r.summary["eval_ood"]["wide"]["median"] == pytest.approx(wide["median"], rel=1e-12)
        assert r.summary["eval"]["mean"] == pytest.approx(ident["mean"], rel=1e-12)
        assert r.summary["eval_ood"]["wide"]["mean"] != pytest.approx(ident["mean"], rel=1e-9)


def test_many_model_run_directory_and_resume(tmp_path, monkeypatch):
    """Training, exact: a run of M models writes one directory per model that ``load_run``
    reads, and a run killed after its checkpoint resumes to bitwise the uninterrupted models."""
    base = TrainConfig(**TINY, checkpoint_every=6)
    whole = train_models(TrainConfig(**{**base.to_dict(), "out": str(tmp_path / "whole")}), ks=[1, 2])
    names = sorted(p.name for p in (tmp_path / "whole" / "models").iterdir())
    assert names == ["00-seed0-k1-eta0.4", "01-seed0-k2-eta0.4"]
    run = load_run(tmp_path / "whole" / "models" / names[1])
    assert run.config.k == 2 and torch.equal(run.V, whole[1].V)
    assert run.summary["final_eval_loss"] == whole[1].summary["final_eval_loss"]
    assert [row["iteration"] for row in run.metrics] == [0, 6, 12]
    with pytest.raises(ValueError, match="models"):
        load_run(tmp_path / "whole")
    crash_at(monkeypatch, 8)
    with pytest.raises(KeyboardInterrupt):
        train_models(TrainConfig(**{**base.to_dict(), "out": str(tmp_path / "cut")}), ks=[1, 2])
    monkeypatch.undo()
    resumed = resume(tmp_path / "cut")
    assert len(resumed) == 2
    for a, b in zip(resumed, whole):
        assert torch.equal(a.V, b.V) and torch.equal(a.W, b.W)
        assert [row["eval_loss"] for row in a.history] == [row["eval_loss"] for row in b.history]
    lines = (tmp_path / "cut" / "models" / names[0] / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["iteration"] for line in lines] == [0, 6, 12]


def test_models_may_differ_only_in_seed_k_eta():
    """Bad input: an engine of models that differ in another field is refused, naming it."""
    from training.engine import Engine
    with pytest.raises(ValueError, match="n"):
        Engine([TrainConfig(**TINY), TrainConfig(**{**TINY, "n": 6}, seed=1)])
    with pytest.raises(ValueError, match="same"):
        Engine([TrainConfig(**TINY), TrainConfig(**TINY)])


@pytest.mark.parametrize("kwargs, name", [
    ({"seeds": []}, "seeds"), ({"seeds": [0, 0]}, "seeds"), ({"seeds": [-1]}, "seeds"), ({"seeds": 3}, "seeds"),
    ({"ks": [0]}, "ks"), ({"ks": [2.5]}, "ks"), ({"etas": [0.0]}, "etas"), ({"etas": [float("nan")]}, "etas")])
def test_bad_grid_arguments_are_named(kwargs, name):
    """Bad input: ValueError naming the argument."""
    with pytest.raises(ValueError, match=name):
        train_models(TrainConfig(**TINY), **kwargs)


def test_bad_base_config_is_named():
    """Bad input: the base config is validated like train's."""
    with pytest.raises(ValueError, match="base"):
        model_grid_configs({"d": 2})
    with pytest.raises(ValueError, match="batch"):
        model_grid_configs(TrainConfig(**{**TINY, "batch": 0}))
