"""The configuration as a leaf (issue 23): ``training.config`` imports neither torch nor sympy,
each ``TrainConfig`` field declares its check in its metadata and ``validate`` is one loop over
them; ``parse_field`` (command line, grid files) and ``covariance`` ("a number c means c I") are
the one reading of a field and of a covariance; the package imports its names lazily."""
import dataclasses
import math
import subprocess
import sys

import numpy as np
import pytest

import training
import training.config as config
from training.config import (MODES, PARAMS, TrainConfig, check_field, config_fields, covariance, field_kind,
                             identity_scale, ood_sigma_matrices, parse_field)

HEAVY = ("torch", "sympy", "numpy", "scipy", "numerics", "theory", "dask", "pandas", "matplotlib")


def _imported_by(code: str) -> set:
    """Top-level packages a fresh interpreter has loaded after running ``code``."""
    probe = code + "\nimport sys; print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))"
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return set(proc.stdout.split())


def test_the_config_and_the_package_import_no_engine():
    """Importing ``training``, ``training.config`` and reading every field's metadata loads none
    of torch, sympy, numpy, scipy, numerics, theory."""
    loaded = _imported_by("import training\nfrom training import PAPER, TrainConfig\n"
                          "from training.config import config_fields\nconfig_fields()\nTrainConfig()")
    assert not loaded & set(HEAVY), loaded & set(HEAVY)


def test_every_public_name_of_the_package_is_its_owners():
    """``from training import X`` for every X of ``__all__`` gives the owning module's object."""
    for name in training.__all__:
        value = getattr(training, name)
        owner = sys.modules[f"training.{training._OWNER[name]}"]
        assert getattr(owner, name) is value, name
    namespace: dict = {}
    exec("from training import *", namespace)
    assert set(training.__all__) <= set(namespace)
    with pytest.raises(AttributeError, match="no attribute 'bogus'"):
        training.bogus  # noqa: B018
    assert training.engine is sys.modules["training.engine"]          # as when the package imported it


def test_modes_params_and_dtypes_are_the_configs():
    """One definition: the kernels' MODES are the config's and the model checks its param by the
    config's field rule; dtypes are names, their torch objects looked up by name."""
    import torch

    import training.kernels as kernels
    import training.model as model
    assert kernels.MODES is MODES and not hasattr(model, "PARAMS")
    with pytest.raises(ValueError, match=f"^param must be one of {', '.join(PARAMS)}, got 'dense'$"):
        model.LSA(2, "dense", generator=torch.Generator().manual_seed(0))
    assert all(isinstance(getattr(torch, name), torch.dtype) for name in config.DTYPE_NAMES)
    assert not hasattr(config, "DTYPES")
    assert config_fields()["dtype"].metadata["choices"] == config.DTYPE_NAMES


def test_every_field_declares_its_check():
    """Each field has choices, a check of its own, or a kind the one loop knows (an int with its
    minimum, a float with a bound of 0 or none, a bool); the defaults pass."""
    for name, f in config_fields().items():
        meta, (kind, _) = f.metadata, field_kind(name)
        assert set(meta) >= {"help", "cli", "minimum", "above", "choices", "check"}, name
        if meta["choices"] is None and meta["check"] is None:
            assert kind in ("int", "float", "bool"), name
            if kind == "int":
                assert isinstance(meta["minimum"], int), name
        assert check_field(name, f.default, TrainConfig()) == f.default
    assert TrainConfig().validate() == TrainConfig()


BAD = [
    ("mode", "loop", "mode must be one of cot, nocot, looped"),
    ("param", "dense", "param must be one of full, sparse, isotropic"),
    ("d", 0, "d must be an integer >= 1"),
    ("d", True, "d must be an integer >= 1"),
    ("n", 2.0, "n must be an integer >= 1"),
    ("seed", -1, "seed must be an integer >= 0"),
    ("eta", 0.0, "eta must be a finite number > 0"),
    ("eta", "0.4", "eta must be a finite number > 0"),
    ("lr", math.nan, "lr must be a finite number > 0"),
    ("noise", -0.5, "noise must be a finite number >= 0"),
    ("clip_grad", math.inf, "clip_grad must be a finite number > 0"),
    ("threads", 0, "threads must be an integer >= 1"),
    ("device", "tpu", "device must be 'auto', 'cpu', 'cuda' or 'cuda:N'"),
    ("device", 0, "device must be 'auto', 'cpu', 'cuda' or 'cuda:N'"),
    ("dtype", "float16", "dtype must be one of float32, float64"),
    ("prefetch", "yes", "prefetch must be True or False"),
    ("progress", 2, "progress must be True, False or None"),
    ("optimizer", "rmsprop", "optimizer must be one of adam, sgd"),
    ("fused_models", "both", "fused_models must be one of auto, loop, fused"),
    ("out", 3, "out must be a directory path or None"),
    ("sigma", [[1.0, 2.0], [2.0, 1.0]], "sigma must be"),
    ("ood_sigmas", {"wide": -1}, "ood_sigmas['wide'] must be a number c > 0"),
    ("ood_sigmas", [1.0], "ood_sigmas must be a dict"),
    ("init_ab", [1.0], "init_ab must be a pair [a, b]"),
]


@pytest.mark.parametrize("name, value, message", BAD)
def test_a_bad_field_is_one_error_naming_it(name, value, message):
    fields = {"d": 2, "param": "isotropic"} if name in ("sigma", "init_ab") else {}
    with pytest.raises(ValueError) as info:
        TrainConfig(**{**fields, name: value}).validate()
    assert str(info.value).startswith(message), str(info.value)


@pytest.mark.parametrize("fields, message", [
    ({"pool": 10, "batch": 20}, "pool must be >= batch"),
    ({"loop_window": 2}, "loop_curriculum and loop_window are for mode 'looped'"),
    ({"init_ab": [0.1, -0.1]}, "init_ab is for param 'isotropic' only"),
])
def test_bad_combinations_are_refused(fields, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**fields).validate()


def test_validate_keeps_the_values_and_makes_init_ab_floats():
    c = TrainConfig(d=np.int64(3), eta=1, param="isotropic", init_ab=[np.float32(0.5), -1]).validate()
    assert type(c.d) is np.int64 and type(c.eta) is int                # checked, not rewritten
    assert c.init_ab == [0.5, -1.0] and all(type(v) is float for v in c.init_ab)


def test_parse_field_reads_text_and_file_values_as_the_field_holds_them():
    assert parse_field("d", "3") == 3 and parse_field("eta", "0.25") == 0.25
    assert parse_field("eta", 1) == 1.0 and type(parse_field("eta", 1)) is float
    assert parse_field("lr", None) is None and parse_field("prefetch", "false") is False
    assert parse_field("mode", "looped") == "looped" and parse_field("d", 4) == 4
    assert parse_field("sigma", [[1, 0], [0, 2]]) == [[1.0, 0.0], [0.0, 2.0]]
    assert parse_field("ood_sigmas", {"wide": 3, 5: [[1, 0], [0, 1]]}) == {"wide": 3.0, "5": [[1.0, 0.0], [0.0, 1.0]]}
    assert parse_field("init_ab", [1, True]) == [1.0, True]
    for name, text, message in (("d", "x", "d must be an integer, got 'x'"), ("d", "1.5", "d must be an integer"),
                                ("eta", "fast", "eta must be a number, got 'fast'"),
                                ("prefetch", "maybe", "prefetch must be a bool"),
                                ("bogus", 1, "unknown TrainConfig field 'bogus'")):
        with pytest.raises(ValueError, match=message):
            parse_field(name, text)


def test_a_number_c_means_c_identity():
    """``covariance``: c -> c I (c > 0), a matrix (singular allowed) checked and kept, None kept;
    ``ood_sigma_matrices`` reads each entry by it."""
    assert covariance("s", 0.5, 2) == [[0.5, 0.0], [0.0, 0.5]]
    assert covariance("s", None, 3) is None
    assert covariance("s", np.diag([2, 0]), 2) == [[2.0, 0.0], [0.0, 0.0]]
    assert identity_scale("c", 3) == 3.0
    for bad in (0, -1.0, math.nan, math.inf, True, "2"):
        with pytest.raises(ValueError, match="s must be"):
            covariance("s", bad, 2)
    with pytest.raises(ValueError, match="s must be 2 x 2"):
        covariance("s", np.eye(3), 2)
    c = 1.7
    matrices = ood_sigma_matrices(TrainConfig(d=3, ood_sigmas={"wide": c, "own": np.eye(3).tolist()}))
    assert matrices == {"wide": (c * np.eye(3)).tolist(), "own": np.eye(3).tolist()}


def test_the_command_line_options_are_the_fields():
    """``cotgd train``: one option per offered field, its default the field's, its check the
    field's (``--noise 0`` is a valid noise)."""
    from training.app.cli import build_parser, config_options
    defaults = build_parser().parse_args(["train"])
    offered = [f.name for f in config_options()]
    assert offered == [f.name for f in dataclasses.fields(TrainConfig) if f.metadata["cli"]]
    for name in offered:
        assert getattr(defaults, name) == getattr(TrainConfig(), name), name
    assert build_parser().parse_args(["train", "--noise", "0", "--eta", "1"]).eta == 1.0
