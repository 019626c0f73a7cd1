"""The fused many-model step (training/engine.py, ``fused_gradients``; docs/architecture.md
section 5): one objective call for M models with their own seeds, k and eta, the default on CUDA,
run here on the CPU (``fused_models='fused'``).  Each model's loss and gradient are those of its
single run to float32 rounding (tests/training/test_gradient_paths.py), so a fused run follows the
loop path (bitwise its single runs) and the single runs closely; a fused step asks the host
nothing; runs resume bitwise, and runs saved without the field still load.  Training checks, a
few seconds each."""
import dataclasses
import json

import pytest
import torch

from runlog import crash_at
from training import TrainConfig, resume, train
from training.app.cli import main
from training.engine import (Engine, fused_gradients, fused_path, loop_gradients, loops_trained, model_grid_configs,
                             train_models)
from training.app.selftest import host_sync_guard

TINY = dict(d=2, n=5, k=2, batch=32, iters=12, eval_every=6, eval_samples=300, theory_samples=1000,
            structure_samples=100, device="cpu", progress=False, clip_grad=1e-3)
GRID = dict(seeds=[0, 3], etas=[0.3, 0.5], ks=[1, 3])
MODES = [("cot", {}), ("nocot", {}), ("looped", {}), ("looped", {"loop_window": 2, "loop_curriculum": 6})]


def _deviation(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| over max |b|: the deviation relative to the tensor's scale."""
    return float((a - b).abs().max() / b.abs().max())


def _fused(config: TrainConfig) -> TrainConfig:
    return dataclasses.replace(config, fused_models="fused")


@pytest.mark.parametrize("mode, extra", MODES)
def test_fused_run_equals_loop_path_and_single_runs(mode, extra):
    """Training, float32: 2 seeds x 2 etas x 2 ks (1 and 3) in one fused run, clipping engaged
    (clip 1e-3, below every model's gradient norm: ``test_every_gradient_is_clipped_...``).
    After 12 Adam steps every model's V, W deviate from the loop path's and from its single run's
    by at most 1.2e-7 of their scale (measured: cot 1.1e-7, nocot 4e-8, looped 0), its train and
    evaluation losses by 5.3e-8 relative; the loop path is bitwise its single runs."""
    base = TrainConfig(**TINY, mode=mode, **extra)
    loop = train_models(base, **GRID)
    fused = train_models(_fused(base), **GRID)
    assert [r.config.fused_models for r in fused] == ["fused"] * 8
    for f, lp in zip(fused, loop):
        single = train(lp.config)
        assert torch.equal(lp.V, single.V) and torch.equal(lp.W, single.W)
        for other in (lp, single):
            assert _deviation(f.V, other.V) < 1e-6 and _deviation(f.W, other.W) < 1e-6, f.config
        for row, ref in zip(f.history, single.history):
            assert row["iteration"] == ref["iteration"]
            for key in ("train_loss", "eval_loss"):
                if ref[key] is not None:
                    assert row[key] == pytest.approx(ref[key], rel=1e-6), key
        assert set(f.summary) == set(single.summary)


@pytest.mark.parametrize("mode, extra", MODES)
def test_every_gradient_is_clipped_in_the_run_tests(mode, extra):
    """Numeric: at the start of the runs above (iteration 3, so that the curriculum's models train
    1 and 2 loops) every model's gradient norm is above the clip of TINY, so those runs engage
    clipping; the engine takes the fused path."""
    engine = Engine(model_grid_configs(_fused(TrainConfig(**TINY, mode=mode, **extra)), **GRID))
    assert engine.gradients is fused_gradients
    engine.iteration = 3
    assert len({loops_trained(c, engine.iteration) for c in engine.configs}) == 2
    batches = engine.batches.next(more=False)
    V, W = (A.detach() for A in engine.model.matrices())
    g = engine.gradients(V, W, batches, engine.configs, engine.iteration)
    norms = torch.cat([g.V.flatten(1), g.W.flatten(1)], 1).norm(dim=1)
    assert bool((norms > TINY["clip_grad"]).all()), norms


@pytest.mark.parametrize("mode", ["cot", "looped"])
def test_fused_step_asks_the_host_nothing(mode):
    """The CPU proxy of CUDA's sync debug mode (``selftest.host_sync_guard``) on fused steps of
    models with different seeds, k and eta (the per-model step counts come from the device)."""
    engine = Engine(model_grid_configs(_fused(TrainConfig(**TINY, mode=mode, prefetch=False)), **GRID))
    assert engine.gradients is fused_gradients
    engine.step()
    with host_sync_guard():
        for _ in range(3):
            engine.step()
    assert engine.iteration == 4


def test_fused_run_resumes_bitwise(tmp_path, monkeypatch):
    """Training, exact: a fused run killed after its checkpoint resumes (fused again: the field is
    in its saved config) to bitwise the uninterrupted fused run."""
    base = _fused(TrainConfig(**TINY, checkpoint_every=6))
    whole = train_models(dataclasses.replace(base, out=str(tmp_path / "whole")), seeds=[0, 1], ks=[1, 2])
    crash_at(monkeypatch, 8)
    with pytest.raises(KeyboardInterrupt):
        train_models(dataclasses.replace(base, out=str(tmp_path / "cut")), seeds=[0, 1], ks=[1, 2])
    monkeypatch.undo()
    for a, b in zip(resume(tmp_path / "cut"), whole):
        assert torch.equal(a.V, b.V) and torch.equal(a.W, b.W)
        assert a.config.fused_models == "fused"


def test_runs_saved_without_the_field_still_resume(tmp_path, monkeypatch):
    """Training, exact: a many-model run whose manifest and checkpoint lack ``fused_models``
    (written before it existed) resumes with its default, auto (the loop path on a CPU, as the
    run had), to bitwise the uninterrupted run."""
    base = TrainConfig(**TINY, checkpoint_every=6)
    whole = train_models(dataclasses.replace(base, out=str(tmp_path / "whole")), ks=[1, 2])
    crash_at(monkeypatch, 8)
    with pytest.raises(KeyboardInterrupt):
        train_models(dataclasses.replace(base, out=str(tmp_path / "cut")), ks=[1, 2])
    monkeypatch.undo()
    cut = tmp_path / "cut"
    manifest = json.loads((cut / "manifest.json").read_text())
    for c in manifest["configs"]:
        del c["fused_models"]
    (cut / "manifest.json").write_text(json.dumps(manifest))
    state = torch.load(cut / "checkpoint.pt", weights_only=False)
    for c in state["configs"]:
        del c["fused_models"]
    torch.save(state, cut / "checkpoint.pt")
    for a, b in zip(resume(cut), whole):
        assert torch.equal(a.V, b.V) and torch.equal(a.W, b.W)
        assert a.config.fused_models == "auto"


def test_fused_models_selection_and_option(capsys):
    """auto is fused on CUDA and the loop on a CPU; loop and fused force either; one model is
    always its single run.  A bad value is a ValueError naming the field; ``cotgd train --help``
    offers the option with its default."""
    auto, cpu, cuda = TrainConfig(**TINY), torch.device("cpu"), torch.device("cuda")
    assert not fused_path(auto, 4, cpu) and fused_path(auto, 4, cuda) and not fused_path(auto, 1, cuda)
    assert fused_path(_fused(auto), 4, cpu) and not fused_path(_fused(auto), 1, cpu)
    assert not fused_path(dataclasses.replace(auto, fused_models="loop"), 4, cuda)
    assert Engine(model_grid_configs(auto, ks=[1, 2])).gradients is loop_gradients
    assert Engine(model_grid_configs(_fused(auto), ks=[1, 2])).gradients is fused_gradients
    with pytest.raises(ValueError, match="fused_models"):
        TrainConfig(**TINY, fused_models="both").validate()
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--fused-models {auto,loop,fused}" in text and "(default: auto)" in text


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_fused_is_the_cuda_default_syncs_nothing_and_equals_single_runs():
    """On CUDA (skipped elsewhere): ``auto`` takes the fused step, whose steps pass torch's sync
    debug mode; the models end within 1e-4 of their single runs' scale (``selftest.FUSED_TOLERANCE``)
    and the loop path bitwise on them."""
    base = TrainConfig(**{**TINY, "device": "cuda", "prefetch": False})
    engine = Engine(model_grid_configs(base, **GRID))
    assert engine.gradients is fused_gradients
    engine.step()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            engine.step()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    fused = train_models(base, **GRID)
    loop = train_models(dataclasses.replace(base, fused_models="loop"), **GRID)
    for f, lp in zip(fused, loop):
        single = train(lp.config)
        assert torch.equal(lp.V, single.V) and torch.equal(lp.W, single.W)
        assert _deviation(f.V, single.V) < 1e-4 and _deviation(f.W, single.W) < 1e-4
