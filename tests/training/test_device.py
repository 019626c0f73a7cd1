"""Device resolution (training/device.py).  Plain checks of the error contract; the CUDA test is
marked ``cuda`` and skipped on machines without CUDA."""
import pytest
import torch

from training import TrainConfig, resolve_device, train


def test_cpu_and_auto():
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")


@pytest.mark.parametrize("spec", ["gpu", "", "cuda:x", 3, None])
def test_bad_device_names_raise(spec):
    with pytest.raises(ValueError, match="device"):
        resolve_device(spec)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.parametrize("spec", ["cuda", "cuda:0"])
def test_cuda_without_cuda_raises(spec):
    with pytest.raises(ValueError, match=f"device '{spec}' is not available"):
        resolve_device(spec)
    with pytest.raises(ValueError, match="not available"):
        TrainConfig(device=spec).validate()


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_training_runs_on_cuda():
    """Training (reduced config) on CUDA: same code path, converges like on the CPU."""
    config = dict(mode="cot", d=3, n=8, k=3, batch=256, iters=300, lr=1e-2, eval_every=300,
                  eval_samples=4000, theory_samples=20000, progress=False)
    gpu = train(TrainConfig(device="cuda", **config))
    cpu = train(TrainConfig(device="cpu", **config))
    assert gpu.summary["device"].startswith("cuda")
    assert abs(gpu.summary["relative_gap"]) < 0.1
    assert abs(gpu.summary["structure"]["v31_w13"] + 0.4) < 0.02
    assert abs(gpu.summary["final_eval_loss"] - cpu.summary["final_eval_loss"]) / cpu.summary["final_eval_loss"] < 0.1


# ---------------------------------------------------------------- the CUDA path, checked on a CPU
import json  # noqa: E402
import warnings  # noqa: E402

import training.device as device_module  # noqa: E402
from training import resume  # noqa: E402
from training.engine import Engine, guard_gradients  # noqa: E402
from training.app.selftest import host_sync_guard, run_selftest  # noqa: E402

TINY = dict(d=2, n=5, k=2, batch=32, iters=12, eval_every=6, eval_samples=200, theory_samples=500,
            structure_samples=64, progress=False, device="cpu")


def test_run_records_its_device_and_settings(tmp_path):
    """The manifest and the checkpoint record the resolved device (not 'auto') and the numerical
    settings the run had: float32 matmul precision pinned to 'highest'."""
    train(TrainConfig(**{**TINY, "device": "auto"}, out=str(tmp_path / "run")))
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert manifest["device_record"]["type"] == expected and manifest["config"]["device"] == "auto"
    assert manifest["settings"]["matmul_precision"] == "highest"
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert state["device"]["type"] == expected


def test_matmul_precision_is_pinned_inside_runs_and_restored():
    """A caller's ``set_float32_matmul_precision('medium')`` neither leaks into a run (the run
    is bitwise the one under 'highest') nor is lost after it."""
    before = torch.get_float32_matmul_precision()
    try:
        reference = train(TrainConfig(**TINY))
        torch.set_float32_matmul_precision("medium")
        seen = []
        engine = Engine([TrainConfig(**TINY)], on_step=lambda e, loss: seen.append(torch.get_float32_matmul_precision()))
        result = engine.run()[0]
        assert set(seen) == {"highest"}
        assert torch.get_float32_matmul_precision() == "medium"
        assert torch.equal(result.V, reference.V) and torch.equal(result.W, reference.W)
    finally:
        torch.set_float32_matmul_precision(before)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_resume_of_a_cuda_run_without_cuda_names_both_devices(tmp_path, monkeypatch):
    """A checkpoint written on a GPU, resumed where there is none: one ValueError naming the
    recorded device and its GPU model and saying none is usable here (the CLI's exit 2)."""
    from runlog import crash_at
    crash_at(monkeypatch, 8)
    with pytest.raises(KeyboardInterrupt):
        train(TrainConfig(**TINY, checkpoint_every=6, out=str(tmp_path / "run")))
    monkeypatch.undo()
    path = tmp_path / "run" / "checkpoint.pt"
    state = torch.load(path, weights_only=True)
    state["device"] = {"device": "cuda:0", "type": "cuda", "name": "NVIDIA A100-SXM4-40GB", "capability": "8.0",
                       "cuda": "12.4"}
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"cuda:0 \(NVIDIA A100-SXM4-40GB\).*no usable CUDA device"):
        resume(tmp_path / "run")
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    manifest["device_record"] = state["device"]
    (tmp_path / "run" / "manifest.json").write_text(json.dumps(manifest))
    path.unlink()                                         # killed before its first checkpoint
    with pytest.raises(ValueError, match="cuda:0"):
        resume(tmp_path / "run")


def test_resume_warns_when_the_gpu_model_differs(monkeypatch):
    """``resume_device``: the recorded GPU present under another model name gives a warning that
    the run is no longer bitwise (CUDA faked: is_available, the probe and the record)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(device_module, "_auto_device", lambda: torch.device("cuda"))
    monkeypatch.setattr(device_module, "device_record",
                        lambda d: {"device": "cuda:0", "type": "cuda", "name": "GPU B", "capability": "9.0"})
    recorded = {"device": "cuda:0", "type": "cuda", "name": "GPU A", "capability": "8.0"}
    with pytest.warns(RuntimeWarning, match="no longer bitwise"):
        assert device_module.resume_device(recorded, "auto") == torch.device("cuda:0")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert device_module.resume_device(dict(recorded, name="GPU B", capability="9.0"), "auto").type == "cuda"
    assert device_module.resume_device({"device": "cpu", "type": "cpu"}, "auto") == torch.device("cpu")


def test_auto_falls_back_to_cpu_when_the_gpu_cannot_be_used(monkeypatch):
    """torch sees a GPU but a small test allocation fails (no kernel image, ...): 'auto' is the
    CPU, with a warning naming the error."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    real_arange = torch.arange

    def failing_arange(*args, **kwargs):
        if str(kwargs.get("device", "")).startswith("cuda"):
            raise RuntimeError("CUDA error: no kernel image is available for execution on the device")
        return real_arange(*args, **kwargs)

    monkeypatch.setattr(torch, "arange", failing_arange)
    device_module._auto_device.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match="no kernel image"):
            assert device_module.resolve_device("auto") == torch.device("cpu")
    finally:
        device_module._auto_device.cache_clear()


def test_gradient_norms_are_per_model():
    """``guard_gradients`` on M stacked models scales each exactly as on that model alone
    (bitwise), whatever M: the reduction runs over each model's own entries."""
    g = torch.Generator().manual_seed(0)
    grads = [torch.randn(5, 6, 6, generator=g) * s for s in (1.0, 10.0)]
    stacked = [torch.nn.Parameter(torch.zeros(5, 6, 6)) for _ in grads]
    for p, grad in zip(stacked, grads):
        p.grad = grad.clone()
    guard_gradients(stacked, 1.0)
    for j in range(5):
        alone = [torch.nn.Parameter(torch.zeros(1, 6, 6)) for _ in grads]
        for p, grad in zip(alone, grads):
            p.grad = grad[j:j + 1].clone()
        guard_gradients(alone, 1.0)
        for p, q in zip(stacked, alone):
            assert torch.equal(p.grad[j], q.grad[0])


def test_training_steps_ask_the_host_nothing():
    """The CPU proxy of CUDA's sync debug mode: inside ``host_sync_guard`` the engine's steps run
    (no host read from cotgd's code), and a host read planted in cotgd's code is caught."""
    engine = Engine([TrainConfig(**TINY, prefetch=False)])
    engine.step()
    with host_sync_guard():
        for _ in range(3):
            engine.step()
    planted = {"__name__": "training.planted"}
    exec("def on_step(engine, loss):\n    loss.sum().item()\n", planted)
    engine.on_step = planted["on_step"]
    with host_sync_guard(), pytest.raises(RuntimeError, match="host synchronisation: Tensor.item"):
        engine.step()


def test_selftest_on_cpu_passes_and_reports_numbers():
    """``cotgd selftest``'s checks on the CPU (the dynamics and verify checks, each tested on
    their own elsewhere, left out here for time)."""
    report = run_selftest("cpu", skip=("dynamics", "verify"))
    assert report["passed"], report
    assert [line["passed"] for line in report["lines"]] == [True] * 5
    assert report["device_record"]["type"] == "cpu"
    with pytest.raises(ValueError, match="skip"):
        run_selftest("cpu", skip=("nothing",))
