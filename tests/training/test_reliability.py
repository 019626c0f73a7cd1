"""Reliability of the training library (issue 7): resume from any state a crash can leave,
corrupt and foreign checkpoints, divergence, global-RNG hygiene and a table of bad arguments for
the public functions of theory, numerics and training.

Every test here is a training check (short runs, seconds) or an argument check; none repeats
tests/training/test_train.py (crash after a checkpoint, same-seed determinism, the manifest of a
finished run), which covers the basic paths.  The command line's side is
tests/cli/test_cli_reliability.py.
"""
import importlib
import json
import math
import os
import random
import shutil

import numpy as np
import pytest
import torch

import numerics
import theory
from training import TrainConfig, TrainingDiverged, evaluate_params, resume, train
from runlog import crash_at, metrics_rows, stripped

import training.engine as engine
io_module = importlib.import_module("training.io")

TINY = dict(d=2, n=5, k=2, batch=64, iters=20, eval_every=10, eval_samples=500, theory_samples=2000,
            structure_samples=200, device="cpu", progress=False, checkpoint_every=5)


def same_result(a, b) -> None:
    assert torch.equal(a.V, b.V) and torch.equal(a.W, b.W)
    assert stripped(a.summary) == stripped(b.summary)
    assert stripped(a.history) == stripped(b.history)


@pytest.fixture(scope="module")
def finished_runs(tmp_path_factory):
    """Two finished checkpointed runs (d = 2 and d = 3), one thread; tests copy them before
    touching them."""
    root = tmp_path_factory.mktemp("runs")
    out = {}
    for d in (2, 3):
        config = TrainConfig(**{**TINY, "d": d, "threads": 1}, out=str(root / f"d{d}"))
        out[d] = (config.out, train(config))
    return out


def copy_run(finished_runs, tmp_path, d=2) -> str:
    src, _ = finished_runs[d]
    dst = str(tmp_path / f"copy-d{d}")
    shutil.copytree(src, dst)
    return dst


# ---------------------------------------------------------------------------- resume paths
def test_crash_before_first_checkpoint_resumes_from_saved_config(tmp_path, monkeypatch):
    """Training: a crash after the run directory and manifest exist but before the first
    checkpoint (iteration 3 of checkpoint_every 5).  The issue asks for resume after a kill 'at
    any moment', so resume must start again from the config saved in the directory and end
    bitwise on the uninterrupted result (not FileNotFoundError)."""
    whole = train(TrainConfig(**TINY, out=str(tmp_path / "whole")))
    crash_at(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        train(TrainConfig(**TINY, out=str(tmp_path / "cut")))
    monkeypatch.undo()
    assert not (tmp_path / "cut" / "checkpoint.pt").exists()
    assert json.loads((tmp_path / "cut" / "manifest.json").read_text())["config"]["d"] == TINY["d"]
    resumed = resume(str(tmp_path / "cut"))
    same_result(resumed, whole)
    assert stripped(metrics_rows(tmp_path / "cut")) == stripped(whole.history)


def test_resume_deletes_temporaries_of_a_killed_write_and_accepts_older_manifests(tmp_path, monkeypatch):
    """Training: a SIGKILL inside an atomic write leaves a ``.tmp-*`` file (no handler runs);
    resume deletes it and ends bitwise on the uninterrupted run.  A manifest and checkpoint
    written before a config field existed (here ``prefetch``) still resume: both configs are
    read through TrainConfig, so the new field's default compares equal."""
    whole = train(TrainConfig(**TINY, out=str(tmp_path / "whole")))
    crash_at(monkeypatch, 7)
    with pytest.raises(KeyboardInterrupt):
        train(TrainConfig(**TINY, out=str(tmp_path / "cut")))
    monkeypatch.undo()
    cut = tmp_path / "cut"
    (cut / ".tmp-abc123checkpoint.pt").write_bytes(b"half a checkpoint")
    manifest = json.loads((cut / "manifest.json").read_text())
    del manifest["config"]["prefetch"]
    (cut / "manifest.json").write_text(json.dumps(manifest))
    state = torch.load(cut / "checkpoint.pt", weights_only=False)
    del state["configs"][0]["prefetch"]
    torch.save(state, cut / "checkpoint.pt")
    same_result(resume(str(cut)), whole)
    assert not [f for f in os.listdir(cut) if f.startswith(".tmp")]


def test_crash_while_writing_a_checkpoint_keeps_the_previous_one(tmp_path, monkeypatch):
    """Training: the process dies inside the atomic write of the second checkpoint, after the
    temporary file is complete and before the rename.  checkpoint.pt is still the first one
    (iteration 5), no temporary file is left, and resume ends bitwise on the uninterrupted run."""
    whole = train(TrainConfig(**TINY, out=str(tmp_path / "whole")))
    replace = os.replace
    calls = []

    def dying_replace(src, dst):
        if os.path.basename(dst) == "checkpoint.pt":
            calls.append(dst)
            if len(calls) == 2:
                raise KeyboardInterrupt
        return replace(src, dst)

    monkeypatch.setattr(io_module.os, "replace", dying_replace)
    with pytest.raises(KeyboardInterrupt):
        train(TrainConfig(**TINY, out=str(tmp_path / "cut")))
    monkeypatch.undo()
    cut = tmp_path / "cut"
    assert torch.load(cut / "checkpoint.pt", weights_only=True)["iteration"] == 5
    assert not [f for f in os.listdir(cut) if f.startswith(".tmp")]
    same_result(resume(str(cut)), whole)


def test_resume_of_a_finished_run_is_a_no_op(finished_runs, tmp_path, monkeypatch):
    """Training: resuming a finished run trains no further step and returns the same
    parameters, summary (up to wall-clock timings) and metrics file."""
    run_dir = copy_run(finished_runs, tmp_path)
    _, whole = finished_runs[2]
    metrics_before = open(os.path.join(run_dir, "metrics.jsonl"), encoding="utf-8").read()

    def no_step(self):
        raise AssertionError("a finished run must not train again")

    monkeypatch.setattr(engine.Engine, "step", no_step)
    again = resume(run_dir)
    same_result(again, whole)
    assert open(os.path.join(run_dir, "metrics.jsonl"), encoding="utf-8").read() == metrics_before
    params = torch.load(os.path.join(run_dir, "params.pt"), weights_only=True)
    assert torch.equal(params["V"], whole.V) and torch.equal(params["W"], whole.W)


def test_torn_metrics_line_is_repaired_on_resume(finished_runs, tmp_path):
    """Training: a metrics.jsonl ending in half a line (a crash of another kind, e.g. power loss)
    is rewritten on resume from the checkpoint's history: every line parses again."""
    run_dir = copy_run(finished_runs, tmp_path)
    _, whole = finished_runs[2]
    with open(os.path.join(run_dir, "metrics.jsonl"), "a", encoding="utf-8") as f:
        f.write('{"iteration": 25, "train_lo')
    resume(run_dir)
    assert stripped(metrics_rows(run_dir)) == stripped(whole.history)


@pytest.mark.parametrize("crash", [4, 2], ids=["after-checkpoint", "before-first-checkpoint"])
def test_resume_restores_the_runs_torch_thread_count(tmp_path, monkeypatch, crash):
    """Training: a run trained with 2 torch threads and resumed by a process that has 1 (another
    machine, another OMP_NUM_THREADS) must still end bitwise on the uninterrupted run.  At d = 10
    the CPU kernels' results depend on the thread count (measured: 1 vs 2 threads give different
    bits after 3 steps), so the checkpoint (or, before the first one, the manifest) has to carry
    the thread count and resume has to use it when config.threads is None."""
    config = dict(TINY, d=10, n=8, k=3, batch=256, iters=6, eval_every=6, checkpoint_every=3,
                  eval_samples=200, theory_samples=500, structure_samples=50)
    torch.set_num_threads(2)
    whole = train(TrainConfig(**config, out=str(tmp_path / "whole")))
    crash_at(monkeypatch, crash)
    with pytest.raises(KeyboardInterrupt):
        train(TrainConfig(**config, out=str(tmp_path / "cut")))
    monkeypatch.undo()
    torch.set_num_threads(1)                        # the resuming process differs
    resumed = resume(str(tmp_path / "cut"))
    assert torch.get_num_threads() == 1             # restored after the run
    assert torch.equal(resumed.V, whole.V) and torch.equal(resumed.W, whole.W)


# ---------------------------------------------------------------------------- bad checkpoints
def _truncated(path, tmp_path, finished_runs):
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 2])


def _random_bytes(path, tmp_path, finished_runs):
    open(path, "wb").write(np.random.default_rng(7).integers(0, 256, 4096, dtype=np.uint8).tobytes())


def _empty(path, tmp_path, finished_runs):
    open(path, "wb").close()


def _foreign_torch_file(path, tmp_path, finished_runs):
    torch.save({"a": 1}, path)


def _torch_list(path, tmp_path, finished_runs):
    torch.save([torch.zeros(3)], path)


def _other_runs_checkpoint(path, tmp_path, finished_runs):
    shutil.copyfile(os.path.join(finished_runs[3][0], "checkpoint.pt"), path)   # d = 3 into a d = 2 run


def _config_weights_mismatch(path, tmp_path, finished_runs):
    state = torch.load(path, weights_only=True)
    state["configs"][0]["d"] = 4                                   # weights stay 6 x 6 (d = 2)
    torch.save(state, path)


def _missing_key(path, tmp_path, finished_runs):
    state = torch.load(path, weights_only=True)
    del state["optimizer"]
    torch.save(state, path)


BAD_CHECKPOINTS = [_truncated, _random_bytes, _empty, _foreign_torch_file, _torch_list,
                   _other_runs_checkpoint, _config_weights_mismatch, _missing_key]


@pytest.mark.parametrize("spoil", BAD_CHECKPOINTS, ids=lambda f: f.__name__.strip("_"))
def test_bad_checkpoint_raises_value_error_naming_it(spoil, finished_runs, tmp_path):
    """Argument check: a corrupt, foreign or inconsistent checkpoint.pt makes resume raise one
    ValueError that names the checkpoint (not RuntimeError / UnpicklingError / KeyError from
    torch, and never a silent resume of another run's state)."""
    run_dir = copy_run(finished_runs, tmp_path)
    spoil(os.path.join(run_dir, "checkpoint.pt"), tmp_path, finished_runs)
    with pytest.raises(ValueError, match="checkpoint") as info:
        resume(run_dir)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("value", [None, 3, 2.5])
def test_resume_rejects_a_non_path(value):
    """Argument check: resume's out_dir must be a path; ValueError naming it."""
    with pytest.raises(ValueError, match="out_dir"):
        resume(value)


def test_resume_of_a_directory_that_is_not_a_run(tmp_path):
    """Argument check: a directory with neither checkpoint.pt nor manifest.json is refused with
    an error naming the directory (FileNotFoundError, as test_train expects, or ValueError)."""
    (tmp_path / "notes.txt").write_text("not a run")
    with pytest.raises((FileNotFoundError, ValueError), match="checkpoint"):
        resume(str(tmp_path))


# ---------------------------------------------------------------------------- divergence
DIVERGING = dict(TINY, d=3, n=8, k=3, lr=1e6, iters=40, eval_every=10, checkpoint_every=2)


def test_divergence_keeps_a_loadable_good_checkpoint_and_a_manifest(tmp_path):
    """Training: Adam with lr 1e6 overflows the loss.  TrainingDiverged names the iteration; the
    checkpoint left behind is an earlier iteration, loads with weights_only=True and has finite
    parameters; the manifest no longer says 'running' and has the timings so far (the issue:
    every run directory has a manifest with timings)."""
    with pytest.raises(TrainingDiverged) as info:
        train(TrainConfig(**DIVERGING, out=str(tmp_path)))
    it = info.value.iteration
    assert 0 < it <= DIVERGING["iters"] and f"iteration {it}" in str(info.value)
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert state["iteration"] < it
    assert all(torch.isfinite(p).all() for p in state["model"].values())
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["status"] != "running"
    assert "timings" in manifest


def test_resume_of_a_diverged_run_diverges_at_the_same_iteration(tmp_path):
    """Training: divergence is reproducible: resuming from the last good checkpoint diverges
    again at the same iteration with the same message."""
    with pytest.raises(TrainingDiverged) as first:
        train(TrainConfig(**DIVERGING, out=str(tmp_path)))
    with pytest.raises(TrainingDiverged) as again:
        resume(str(tmp_path))
    assert again.value.iteration == first.value.iteration and str(again.value) == str(first.value)


def test_evaluation_reports_diverged_prompts_as_a_fraction():
    """Numeric float64: GD with step 1.0 diverges on the prompts whose S has an eigenvalue above
    2 (n = 5, d = 2: a fair share of them).  evaluate_params counts them in diverged_frac, strictly
    between 0 and 1, and mean_without_diverged stays finite and below the divergence threshold."""
    V, W = numerics.gd_params(2, 1.0)
    report = evaluate_params(V, W, d=2, n=5, k=30, samples=4000, seed=0)
    assert 0.0 < report["diverged_frac"] < 1.0
    assert report["diverged"] == round(report["diverged_frac"] * report["samples"])
    assert math.isfinite(report["mean_without_diverged"])
    assert report["mean_without_diverged"] < report["mean"]


# ---------------------------------------------------------------------------- global RNG
def test_training_neither_reads_nor_moves_the_global_rngs():
    """Training: a run draws only from its own seeded generators: the global torch, numpy and
    random states are untouched, and the result does not depend on them."""
    config = dict(TINY, checkpoint_every=0)
    torch.manual_seed(1234)
    np.random.seed(1234)
    random.seed(1234)
    t_state, n_state, r_state = torch.get_rng_state(), np.random.get_state(), random.getstate()
    a = train(TrainConfig(**config))
    assert torch.equal(torch.get_rng_state(), t_state)
    n_after = np.random.get_state()
    assert n_after[0] == n_state[0] and np.array_equal(n_after[1], n_state[1]) and n_after[2:] == n_state[2:]
    assert random.getstate() == r_state
    torch.manual_seed(99)
    np.random.seed(99)
    random.seed(99)
    b = train(TrainConfig(**config))
    assert torch.equal(a.V, b.V) and torch.equal(a.W, b.W)


def test_manifest_git_commit_is_none_without_git(monkeypatch):
    """The manifest's git commit is 'when available': with no git executable it is None, not an
    exception."""
    monkeypatch.setenv("PATH", "")
    assert engine.git_commit() is None


# ---------------------------------------------------------------------------- bad arguments
SPD_BREAKERS = {
    "non-symmetric": [[1.0, 0.5], [0.0, 1.0]],
    "not positive definite": [[1.0, 2.0], [2.0, 1.0]],
    "wrong size": np.eye(3).tolist(),
    "non-finite": [[1.0, float("nan")], [float("nan"), 1.0]],
    "not a matrix": "identity",
}

CONFIG_BAD = [
    ("d", True), ("d", 2.0), ("n", 0), ("k", -1), ("eta", float("inf")), ("eta", -1.0),
    ("batch", -5), ("iters", 0), ("lr", float("nan")), ("lr", float("inf")), ("lr", 0.0), ("seed", 1.5),
    ("structure_samples", 0), ("threads", 0), ("clip_grad", float("nan")), ("init_scale", float("inf")),
    ("device", 5), ("device", "cuda:x"), ("mode", None), ("out", 5),
    ("ood_sigmas", {"skew": [[1.0, 0.5], [0.0, 1.0]]}), ("ood_sigmas", {"zero": 0.0}),
] + [("sigma", value) for value in SPD_BREAKERS.values()]


@pytest.mark.parametrize("field, value", CONFIG_BAD)
def test_train_config_bad_field_is_named(field, value):
    """Argument check: TrainConfig.validate (and so train) raises one ValueError naming the
    field, before any training."""
    with pytest.raises(ValueError, match=field):
        TrainConfig(**{**TINY, "checkpoint_every": 0, field: value}).validate()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA message")
@pytest.mark.parametrize("device", ["cuda", "cuda:0", "cuda:3"])
def test_train_config_unavailable_cuda_is_named(device):
    with pytest.raises(ValueError, match="device"):
        TrainConfig(**{**TINY, "device": device}).validate()


def _mc(**kw):
    args = dict(d=2, n=5, eta=0.4, k=2, samples=10, seed=0)
    args.update(kw)
    return numerics.eval_loss_mc(args.pop("d"), args.pop("n"), args.pop("eta"), args.pop("k"), **args)


def _gd(**kw):
    args = dict(d=2, eta=0.4)
    args.update(kw)
    return theory.gd_transformer_params(args["d"], args["eta"])


def _ev(**kw):
    args = dict(V=torch.zeros(6, 6), W=torch.zeros(6, 6), d=2, n=5, k=2, samples=10, seed=0)
    args.update(kw)
    return evaluate_params(args.pop("V"), args.pop("W"), **args)


LIBRARY_BAD = [
    (_mc, "d", 0), (_mc, "d", 1.5), (_mc, "n", -1), (_mc, "k", -1), (_mc, "eta", 0.0),
    (_mc, "eta", float("nan")), (_mc, "eta", float("inf")), (_mc, "eta", -0.1), (_mc, "samples", 0),
    (_mc, "seed", None), (_mc, "seed", -1), (_mc, "chunk", 0),
    (_gd, "d", 0), (_gd, "d", -2), (_gd, "eta", 0), (_gd, "eta", float("nan")), (_gd, "eta", float("inf")),
    (_gd, "eta", -1), (_gd, "eta", "x"),
    (_ev, "d", 0), (_ev, "n", 0), (_ev, "k", -1), (_ev, "samples", 0), (_ev, "seed", -1), (_ev, "seed", None),
    (_ev, "mode", "chain"), (_ev, "device", "tpu"), (_ev, "chunk", 0),
    (_ev, "V", torch.zeros(8, 8)), (_ev, "W", torch.zeros(6, 5)), (_ev, "V", "abc"), (_ev, "W", [[1.0, 2.0]]),
] + [(f, "sigma", value) for f in (_mc, _ev) for value in SPD_BREAKERS.values()]


@pytest.mark.parametrize("call, name, value", LIBRARY_BAD,
                         ids=[f"{c.__name__.strip('_')}-{n}-{v!r:.20}" for c, n, v in LIBRARY_BAD])
def test_library_bad_argument_raises_value_error_naming_it(call, name, value):
    """Argument check: numerics.eval_loss_mc, theory.gd_transformer_params and
    training.evaluate_params raise one ValueError whose message names the parameter."""
    with pytest.raises(ValueError, match=name):
        call(**{name: value})
