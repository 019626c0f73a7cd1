"""Guards from the mutation campaign (tests/mutation): what a user of ``training.config`` relies on,
written out as numbers and texts: the field metadata the command line builds its ``train``
options from (also from the module's definition run afresh, since the fields are made at import), the
resolved defaults (learning rate, gradient clip, CPU threads), the paper's problem, ``true`` /
``false`` on the command line, integers in a file read as floats, the covariances a number or a
matrix stands for, and the refusals naming what is wrong (the pieces of init_ab, ood_sigmas'
entries, a CUDA device that is not there)."""
import json
import math
import re
import runpy
from pathlib import Path

import numpy as np
import pytest
import torch

import training.config as config
import training.device
from training.config import (PAPER, TrainConfig, check_field, covariance, ood_sigma_matrices, parse_field,
                             resolved_clip, resolved_lr, resolved_threads)

# name: (default, offered on the command line, minimum, above, choices, a check of its own)
FIELDS = {
    "mode": ("cot", True, None, None, ["cot", "nocot", "looped"], False),
    "param": ("full", True, None, None, ["full", "sparse", "isotropic"], False),
    "d": (10, True, 1, None, None, False),
    "n": (20, True, 1, None, None, False),
    "k": (10, True, 1, None, None, False),
    "eta": (0.4, True, None, 0, None, False),
    "batch": (1000, True, 1, None, None, False),
    "iters": (750, True, 1, None, None, False),
    "lr": (None, True, None, 0, None, False),
    "seed": (0, True, 0, None, None, False),
    "device": ("auto", True, None, None, None, True),
    "eval_every": (50, True, 1, None, None, False),
    "eval_samples": (20000, True, 1, None, None, False),
    "sigma": (None, False, None, None, None, True),
    "ood_sigmas": (None, False, None, None, None, True),
    "noise": (0.0, True, 0, None, None, False),
    "init_scale": (None, True, None, 0, None, False),
    "checkpoint_every": (0, True, 0, None, None, False),
    "out": (None, False, None, None, None, True),
    "progress": (None, False, None, None, None, False),
    "dtype": ("float32", True, None, None, ["float32", "float64"], False),
    "theory_samples": (200000, True, 1, None, None, False),
    "structure_samples": (4096, True, 1, None, None, False),
    "clip_grad": (None, True, None, 0, None, False),
    "threads": (None, True, 1, None, None, False),
    "prefetch": (True, True, None, None, None, False),
    "optimizer": ("adam", True, None, None, ["adam", "sgd"], False),
    "pool": (None, True, 1, None, None, False),
    "init_ab": (None, False, None, None, None, True),
    "loop_curriculum": (0, True, 0, None, None, False),
    "loop_window": (1, True, 1, None, None, False),
    "fused_models": ("auto", True, None, None, ["auto", "loop", "fused"], False),
}


def field_table(fields: dict) -> dict:
    """What the command line reads of each field (``dataclasses.Field``), as JSON values."""
    table = {}
    for name, f in fields.items():
        m = f.metadata
        assert isinstance(m["help"], str) and m["help"].strip(), name
        table[name] = [f.default, m["cli"], m["minimum"], m["above"],
                       None if m["choices"] is None else list(m["choices"]), m["check"] is not None]
    return table


@pytest.mark.parametrize("source", ["imported", "defined afresh"])
def test_the_fields_metadata_is_the_documented_one(source):
    """Defaults, command-line offer, bounds, choices and own checks of every field (what ``cotgd
    train`` builds its options and refusals from).  The fields are made when the module is
    defined, so its definition is also run afresh (as a new interpreter's import would) and its
    fields and checks read from that."""
    namespace = vars(config) if source == "imported" else runpy.run_path(config.__file__, run_name=config.__name__)
    assert field_table(namespace["config_fields"]()) == {name: list(row) for name, row in FIELDS.items()}
    check = namespace["check_field"]
    assert check("mode", "looped") == "looped" and check("eta", 1) == 1 and check("lr", None) is None
    for name, value, message in (("d", 0, "d must be an integer >= 1"), ("eta", 0.0, "eta must be a finite number > 0"),
                                 ("noise", -1.0, "noise must be a finite number >= 0"),
                                 ("mode", "loop", "mode must be one of cot, nocot, looped"),
                                 ("device", "tpu", "device must be 'auto'"), ("prefetch", None, "prefetch must be True")):
        with pytest.raises(ValueError, match=f"^{re.escape(message)}"):
            check(name, value)


def test_the_papers_problem_is_d_n_k_eta():
    assert PAPER.problem() == {"d": 10, "n": 20, "k": 10, "eta": 0.4}
    assert list(PAPER.problem()) == ["d", "n", "k", "eta"]


@pytest.mark.parametrize("fields, lr, clip", [
    ({}, 1e-3, None),
    ({"mode": "nocot"}, 1e-3, None),
    ({"param": "sparse"}, 3e-3, None),
    ({"param": "isotropic", "mode": "nocot"}, 3e-3, None),
    ({"mode": "looped"}, 3e-3, 1.0),                       # LOOPED_LR for the full model too
    ({"mode": "looped", "param": "isotropic"}, 3e-3, 1.0),
    ({"mode": "looped", "lr": 0.02, "clip_grad": 0.5}, 0.02, 0.5),
    ({"mode": "cot", "lr": 5e-4, "clip_grad": 2.0}, 5e-4, 2.0),
])
def test_resolved_learning_rate_and_clip(fields, lr, clip):
    config = TrainConfig(**fields).validate()
    assert resolved_lr(config) == lr
    assert resolved_clip(config) == clip


def test_cpu_threads_default_and_cuda_keeps_torchs(monkeypatch):
    assert resolved_threads(TrainConfig(device="cpu")) == 1
    assert resolved_threads(TrainConfig(device="cpu", threads=3)) == 3
    # on a CUDA device (simulated: this machine has none) torch's own setting stays
    monkeypatch.setattr(training.device, "resolve_device", lambda spec: torch.device("cuda"))
    assert resolved_threads(TrainConfig(device="cuda")) is None
    assert resolved_threads(TrainConfig(device="cuda", threads=2)) == 2


def test_to_dict_writes_out_as_its_path_text():
    d = TrainConfig(out=Path("runs") / "a").to_dict()
    assert d["out"] == str(Path("runs") / "a")
    assert json.loads(json.dumps(d))["out"] == d["out"]
    assert TrainConfig().to_dict()["out"] is None


@pytest.mark.parametrize("text, value", [
    ("true", True), ("false", False), ("True", True), (" FALSE ", False), ("TRUE", True),
])
@pytest.mark.parametrize("name", ["prefetch", "progress"])
def test_command_line_bools(name, text, value):
    assert parse_field(name, text) is value


def test_integers_in_a_files_matrices_are_read_as_floats():
    """``sigma = [[1, 0], [0, 2]]`` and ``[[1.0, 0.0], [0.0, 2.0]]`` are one config (one JSON)."""
    assert json.dumps(parse_field("sigma", [[1, 0], [0, 2]])) == "[[1.0, 0.0], [0.0, 2.0]]"
    assert json.dumps(parse_field("init_ab", [1, -2])) == "[1.0, -2.0]"
    assert json.dumps(parse_field("ood_sigmas", {"wide": 3})) == '{"wide": 3.0}'


def test_covariance_is_a_nested_list_of_floats():
    assert json.dumps(covariance("s", [[2, 0], [0, 1]], 2)) == "[[2.0, 0.0], [0.0, 1.0]]"
    assert json.dumps(covariance("s", np.diag([2, 0]), 2)) == "[[2.0, 0.0], [0.0, 0.0]]"
    assert json.dumps(covariance("s", 3, 2)) == "[[3.0, 0.0], [0.0, 3.0]]"


@pytest.mark.parametrize("ood, message", [
    ({"wide": np.eye(3).tolist()}, r"^ood_sigmas\['wide'\] must be 2 x 2"),
    ({"flat": 0}, r"^ood_sigmas\['flat'\] must be a number c > 0"),
    ([1.0], r"^ood_sigmas must be a dict"),
])
def test_ood_sigma_matrices_names_the_entry(ood, message):
    """On a config not validated (or whose d changed since), the error names ood_sigmas[name]."""
    with pytest.raises(ValueError, match=message):
        ood_sigma_matrices(TrainConfig(d=2, ood_sigmas=ood))


def test_covariances_are_checked_at_the_configs_own_d():
    eye3 = np.eye(3).tolist()
    c = TrainConfig(d=3, sigma=eye3, ood_sigmas={"own": eye3, "wide": 2}).validate()
    assert ood_sigma_matrices(c) == {"own": eye3, "wide": (2 * np.eye(3)).tolist()}
    assert check_field("sigma", eye3, TrainConfig(d=3)) == eye3
    assert check_field("ood_sigmas", {"own": eye3}, TrainConfig(d=3)) == {"own": eye3}
    # without a config: the defaults' d = 10
    assert check_field("sigma", np.eye(10).tolist()) == np.eye(10).tolist()
    assert check_field("ood_sigmas", {"wide": 2.0}) == {"wide": 2.0}
    with pytest.raises(ValueError, match="^sigma must be 10 x 10"):
        check_field("sigma", eye3)


def test_a_sigma_tensor_with_autograd_history_is_accepted():
    """A covariance computed by torch (e.g. A A^T of a parameter) is checked as its values."""
    A = torch.tensor([[1.0, 0.5], [0.0, 1.0]], requires_grad=True)
    S = A @ A.T
    assert TrainConfig(d=2, sigma=S).validate().sigma is S
    bad = torch.tensor([[1.0, 0.5], [0.0, 1.0]], requires_grad=True) * 1.0
    with pytest.raises(ValueError, match="^sigma must be symmetric"):
        TrainConfig(d=2, sigma=bad).validate()


@pytest.mark.parametrize("fields", [
    {"pool": 1000, "batch": 1000},
    {"pool": 21, "batch": 20},
    {"mode": "looped", "loop_window": 3, "loop_curriculum": 100},
])
def test_allowed_combinations_pass(fields):
    c = TrainConfig(**fields).validate()
    assert all(getattr(c, name) == value for name, value in fields.items())


def test_a_cuda_device_that_is_not_there_is_named():
    """'cuda:N' is the documented form: it is looked for, not refused as malformed."""
    with pytest.raises(ValueError, match=r"^device 'cuda:99' is not available"):
        check_field("device", "cuda:99")
    with pytest.raises(ValueError, match=r"^device 'cuda:99' is not available"):
        TrainConfig(device="cuda:99").validate()
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match=r"^device 'cuda' is not available"):
            check_field("device", "cuda")


@pytest.mark.parametrize("pair, message", [
    ([math.nan, 1.0], r"^init_ab\[0\] must be a finite real number"),
    ([0.5, math.inf], r"^init_ab\[1\] must be a finite real number"),
    (["a", 1.0], r"^init_ab\[0\] must be"),
    ([1.0, None], r"^init_ab\[1\] must be"),
])
def test_init_ab_names_the_bad_number(pair, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(d=2, param="isotropic", init_ab=pair).validate()
