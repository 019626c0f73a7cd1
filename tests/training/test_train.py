"""The training run (training/engine.py): config validation, run directory, determinism,
checkpoint/resume and divergence.  Short training runs (seconds); convergence is tested in
test_convergence.py."""
import json
import os

import pytest
import torch

from engine_helpers import thread_spy
from training import TrainConfig, TrainingDiverged, resume, train
from training.config import resolved_lr
from training.data import BatchFeed
from runlog import crash_at

import training.engine as engine

TINY = dict(d=2, n=5, k=2, batch=64, iters=20, eval_every=10, eval_samples=500, theory_samples=2000,
            structure_samples=200, device="cpu", progress=False)


@pytest.mark.parametrize("field, value", [
    ("mode", "chain"), ("param", "dense"), ("d", 0), ("n", 1.5), ("k", 0), ("eta", 0.0), ("eta", float("nan")),
    ("batch", 0), ("iters", -1), ("lr", -1e-3), ("seed", -1), ("eval_every", 0), ("eval_samples", 0),
    ("init_scale", 0.0), ("checkpoint_every", -2), ("dtype", "float16"), ("device", "tpu"),
    ("sigma", [[1.0, 0.0], [0.0, -1.0]]), ("ood_sigmas", {"big": -2.0}), ("ood_sigmas", [1.0]),
    ("progress", "yes"), ("theory_samples", 0), ("clip_grad", 0.0), ("prefetch", "yes")])
def test_bad_config_field_is_named(field, value):
    config = TrainConfig(**{**TINY, field: value})
    with pytest.raises(ValueError, match=field if field not in ("sigma",) else "sigma"):
        config.validate()
    with pytest.raises(ValueError):
        train(config)


def test_train_rejects_non_config():
    with pytest.raises(ValueError, match="TrainConfig"):
        train({"mode": "cot"})


def test_defaults_are_the_papers():
    c = TrainConfig()
    assert (c.d, c.n, c.k, c.eta, c.batch, c.iters, c.seed) == (10, 20, 10, 0.4, 1000, 750, 0)
    assert c.mode == "cot" and c.param == "full" and c.device == "auto"
    assert resolved_lr(c) == 1e-3


@pytest.mark.parametrize("mode", ["cot", "nocot", "looped"])
def test_summary_keys_history_and_run_directory(tmp_path, mode):
    out = tmp_path / mode
    result = train(TrainConfig(mode=mode, out=str(out), ood_sigmas={"scaled": 1.5}, **TINY))
    s = result.summary
    for key in ("final_eval_loss", "theory_eval_loss", "seconds", "train_seconds", "structure"):
        assert key in s
    assert set(s["structure"]) == {"v31_w13", "w24_v31", "offdiag_energy", "functional_deviation"}
    assert 0 < s["train_seconds"] <= s["seconds"]
    assert result.V.shape == result.W.shape == (6, 6)
    assert [row["iteration"] for row in result.history] == [0, 10, 20]
    assert set(s["eval"]) >= {"mean", "se", "median", "q10", "q90", "diverged_frac"}
    assert "scaled" in s["eval_ood"] and "scaled" in result.history[-1]["eval_loss_ood"]
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["iteration"] for line in lines] == [0, 10, 20]
    assert json.loads((out / "summary.json").read_text())["final_eval_loss"] == s["final_eval_loss"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "finished" and manifest["seed"] == 0
    assert set(manifest["versions"]) == {"python", "torch", "numpy", "scipy", "sympy"}
    assert "git_commit" in manifest and "train_seconds" in manifest["timings"]
    params = torch.load(out / "params.pt")
    assert torch.equal(params["V"], result.V) and torch.equal(params["W"], result.W)
    assert not [f for f in os.listdir(out) if f.startswith(".tmp")]


def test_same_seed_same_numbers_bitwise():
    """Determinism on the CPU: the same config gives bitwise the same parameters and metrics;
    another seed does not."""
    a = train(TrainConfig(**TINY))
    b = train(TrainConfig(**TINY))
    c = train(TrainConfig(**{**TINY, "seed": 1}))
    assert torch.equal(a.V, b.V) and torch.equal(a.W, b.W)
    assert a.summary["final_eval_loss"] == b.summary["final_eval_loss"]
    assert not torch.equal(a.V, c.V)


def test_eval_points_do_not_change_training():
    """Evaluation draws from its own generators: the trained parameters do not depend on
    eval_every."""
    a = train(TrainConfig(**TINY))
    b = train(TrainConfig(**{**TINY, "eval_every": 3}))
    assert torch.equal(a.V, b.V) and torch.equal(a.W, b.W)


@pytest.mark.parametrize("mode", ["cot", "looped"])
def test_prefetch_changes_no_number(tmp_path, mode):
    """Training, exact: drawing the next batch on a background thread gives bitwise the run that
    draws inline: parameters, history rows and the generator state stored at a checkpoint taken
    while a draw is in flight (checkpoint_every 3, so the stored state is mid-run)."""
    runs = {}
    for prefetch in (True, False):
        out = tmp_path / str(prefetch)
        runs[prefetch] = train(TrainConfig(**{**TINY, "mode": mode, "iters": 9, "checkpoint_every": 3},
                                           prefetch=prefetch, out=str(out)))
    a, b = runs[True], runs[False]
    assert torch.equal(a.V, b.V) and torch.equal(a.W, b.W)
    strip = lambda rows: [{k: v for k, v in r.items() if k not in ("seconds", "train_seconds")} for r in rows]
    assert strip(a.history) == strip(b.history)


class _RandnStream:
    """A stand-in prompt stream: ``draw()`` is ``randn(size)`` from its generator."""

    def __init__(self, generator, size=1000, fail_at=None):
        self.generator, self.size, self.fail_at, self.calls = generator, size, fail_at, 0

    def draw(self):
        self.calls += 1
        if self.calls == self.fail_at:
            raise MemoryError("no room for the batch")
        return torch.randn(self.size, generator=self.generator)

    def state(self):
        return {"generator": self.generator.get_state()}

    def load_state(self, state):
        self.generator.set_state(state["generator"])


def test_prefetched_batches_and_checkpoint_state():
    """Training, exact: ``data.BatchFeed`` hands out the streams' draws in order; while the next draw
    is in flight the state a checkpoint stores is the one before it, and ``discard`` puts the
    generator back there."""
    g, ref = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    batches = BatchFeed({0: _RandnStream(g)}, prefetch=True)
    for _ in range(3):
        expected_state = ref.get_state()
        assert torch.equal(batches.state()[0]["generator"], expected_state)
        assert torch.equal(batches.next(more=True)[0], torch.randn(1000, generator=ref))
    assert torch.equal(batches.state()[0]["generator"], ref.get_state())
    batches.shutdown()
    assert torch.equal(g.get_state(), ref.get_state())
    assert torch.equal(batches.next(more=True)[0], torch.randn(1000, generator=ref))   # inline after shutdown


def test_a_failed_background_draw_raises_its_own_error_once():
    """Training: an error inside a prefetched draw reaches the caller of ``next`` as itself,
    and shutting down afterwards neither raises it again nor hangs."""
    batches = BatchFeed({0: _RandnStream(torch.Generator().manual_seed(0), 4, fail_at=2)}, prefetch=True)
    batches.next(more=True)
    with pytest.raises(MemoryError, match="no room"):
        batches.next(more=True)
    batches.shutdown()


@pytest.mark.parametrize("param", ["full", "sparse"])
def test_resume_is_bitwise_identical(tmp_path, monkeypatch, param):
    """Checkpoint at iteration 10, crash at 15, resume: parameters, metrics and metrics.jsonl are
    those of the uninterrupted run."""
    config = dict(TINY, param=param, checkpoint_every=5)
    whole = train(TrainConfig(**config, out=str(tmp_path / "whole")))
    crash_at(monkeypatch, 12)
    with pytest.raises(KeyboardInterrupt):
        train(TrainConfig(**config, out=str(tmp_path / "cut")))
    monkeypatch.undo()
    assert torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=False)["iteration"] == 10
    resumed = resume(str(tmp_path / "cut"))
    assert torch.equal(resumed.V, whole.V) and torch.equal(resumed.W, whole.W)
    strip = lambda rows: [{k: v for k, v in r.items() if k not in ("seconds", "train_seconds")} for r in rows]
    assert strip(resumed.history) == strip(whole.history)
    lines = [json.loads(x) for x in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    assert strip(lines) == strip(whole.history)


def test_resume_without_checkpoint_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint"):
        resume(str(tmp_path))


def test_divergence_raises_with_iteration(tmp_path):
    """A step size far beyond stability makes the GD targets overflow: TrainingDiverged names the
    iteration, and the last good checkpoint stays."""
    config = TrainConfig(**{**TINY, "eta": 1e3, "k": 30, "dtype": "float32", "checkpoint_every": 1},
                         out=str(tmp_path))
    with pytest.raises(TrainingDiverged, match="diverged at iteration"):
        train(config)


def test_guard_gradients_skips_non_finite_and_clips_per_model():
    """Numeric: model 0's non-finite gradient is zeroed, model 1's is scaled to the clip norm,
    model 2's (already small) is untouched."""
    p = torch.nn.Parameter(torch.zeros(3, 2, 2))
    p.grad = torch.tensor([[[float("inf"), 1.0], [0.0, 0.0]], [[3.0, 4.0], [0.0, 0.0]], [[0.1, 0.0], [0.0, 0.0]]])
    finite = engine.guard_gradients([p], 1.0)
    assert finite.tolist() == [False, True, True]
    assert p.grad[0].abs().sum() == 0
    torch.testing.assert_close(p.grad[1], torch.tensor([[0.6, 0.8], [0.0, 0.0]]))
    torch.testing.assert_close(p.grad[2], torch.tensor([[0.1, 0.0], [0.0, 0.0]]))


def test_threads_are_set_for_the_run_and_restored(monkeypatch):
    before = torch.get_num_threads()
    wanted = 3 if before != 3 else 2
    seen = thread_spy(monkeypatch)
    train(TrainConfig(**{**TINY, "threads": wanted, "iters": 2, "eval_every": 2}))
    assert seen == [wanted, wanted] and torch.get_num_threads() == before
