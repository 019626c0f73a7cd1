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
