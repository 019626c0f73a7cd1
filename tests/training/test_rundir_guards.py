"""Guards from the mutation campaign (tests/mutation): what a user of ``training.rundir`` relies on,
written out as texts and numbers: the JSON a run writes (indented by 2, a trailing newline,
Infinity for a diverged loss), the one-line ``RunFileError`` of every damaged file (missing, a
directory, empty, a torn or foreign torch file with the first sentence of torch's reason, not
UTF-8, white space only, invalid JSON at its line and column, a JSON non-object, a bad metrics
line by its number), torch files written on a GPU read on the CPU and never unpickled beyond
weights (even where the environment asks torch for full pickles), an old single-model checkpoint
read as a run of one model, the checks of params.pt, the configs of a manifest, ``load_run``'s
refusals and the ``Run`` it returns, and what a manifest records (versions, load averages, the
git commit).  File checks in a temporary directory; no training."""
import datetime
import io
import os
import platform
import re
import subprocess

import numpy as np
import pytest
import scipy
import sympy
import torch
import torch.serialization

import training.rundir as rundir
from training.config import TrainConfig
from training.errors import RunFileError
from training.rundir import (CHECKPOINT, CHECKPOINT_KEYS, MANIFEST, METRICS, PARAMS, SUMMARY, RunDir, git_commit, load_average,
                             load_checkpoint, load_params, load_run, manifest_configs, model_dir_name,
                             read_metrics, read_run_file, run_file, to_json, versions, write_checkpoint,
                             write_manifest, write_params, write_summary)


def refusal(path, problem: str) -> str:
    """The whole message of a ``RunFileError``."""
    return f"cannot load {os.fspath(path)}: {problem}"


def refused(reader, path, problem: str) -> RunFileError:
    with pytest.raises(RunFileError) as info:
        reader()
    assert str(info.value) == refusal(path, problem)
    assert info.value.path == os.fspath(path) and info.value.problem == problem
    return info.value


# ---------------------------------------------------------------------------------------- written JSON
def test_json_is_indented_by_two_with_a_trailing_newline_and_infinity_allowed(tmp_path):
    payload = {"status": "diverged", "loss": float("inf"), "rows": [1, 2]}
    expected = '{\n  "status": "diverged",\n  "loss": Infinity,\n  "rows": [\n    1,\n    2\n  ]\n}\n'
    assert to_json(payload) == expected
    write_manifest(tmp_path, payload)
    write_summary(tmp_path, {"loss": float("nan")})
    assert (tmp_path / MANIFEST).read_text(encoding="utf-8") == expected
    assert (tmp_path / SUMMARY).read_text(encoding="utf-8") == '{\n  "loss": NaN\n}\n'


def test_metrics_lines_are_one_json_object_each(tmp_path):
    d = RunDir(tmp_path / "run", [{"iteration": 0, "loss": 1.5}])
    d.append_metrics({"iteration": 2, "loss": float("inf"), "note": "\u03b7"})
    assert (tmp_path / "run" / METRICS).read_bytes() == (
        b'{"iteration": 0, "loss": 1.5}\n{"iteration": 2, "loss": Infinity, "note": "\\u03b7"}\n')
    assert read_metrics(d.path)[1]["note"] == "\u03b7"


def test_model_dir_name_format():
    assert model_dir_name(3, TrainConfig(seed=1, k=20, eta=0.4)) == "03-seed1-k20-eta0.4"
    assert model_dir_name(12, TrainConfig(seed=0, k=5, eta=1.0)) == "12-seed0-k5-eta1"


# ---------------------------------------------------------------------------------------- damaged files
JSON_DAMAGES = {
    # name: (file name, bytes, problem; None: the rows read)
    "empty json": (SUMMARY, b"", "the file is empty (0 bytes)"),
    "empty pt": (PARAMS, b"", "the file is empty (0 bytes)"),
    "empty metrics": (METRICS, b"", []),
    "white space": (MANIFEST, b" \n\t\n", "the file holds only white space"),
    "white space metrics": (METRICS, b"\n  \n", []),
    "not utf-8": (SUMMARY, b'{"a": "\xff"}\n', "not UTF-8 text (byte 7): not a file this toolkit wrote"),
    "not utf-8 metrics": (METRICS, b'{"a": 1}\n\xfe\n', "not UTF-8 text (byte 9): not a file this toolkit wrote"),
    "invalid json": (MANIFEST, b'{\n  "a": 1,\n  "b": \n}\n',
                     "is not valid JSON (Expecting value at line 4 column 1): truncated or edited"),
    "torn json": (SUMMARY, b'{"a": [1, 2', "is not valid JSON (Expecting ',' delimiter at line 1 column 12): "
                                           "truncated or edited"),
    "invalid metrics line": (METRICS, b'{"a": 1}\n\n{"a": \n',
                             "line 3 is not valid JSON (Expecting value at column 7): truncated or edited"),
    "json list": (MANIFEST, b"[1, 2]\n", "holds a JSON list, expected an object"),
    "json number": (SUMMARY, b"3.5\n", "holds a JSON float, expected an object"),
    "metrics line not an object": (METRICS, b'{"a": 1}\n7\n', "line 2 holds a JSON int, expected an object"),
    "metrics rows": (METRICS, b'{"a": 1}\n\n{"b": Infinity}\n', [{"a": 1}, {"b": float("inf")}]),
}


@pytest.mark.parametrize("case", list(JSON_DAMAGES))
def test_each_damage_is_one_line_naming_the_file_and_the_problem(tmp_path, case):
    name, data, problem = JSON_DAMAGES[case]
    path = tmp_path / name
    path.write_bytes(data)
    if isinstance(problem, list):
        assert read_run_file(path) == problem
        return
    refused(lambda: read_run_file(path), path, problem)


def test_a_missing_file_is_refused_unless_missing_ok_and_a_directory_is_not_a_file(tmp_path):
    for name in (SUMMARY, METRICS, PARAMS):
        path = tmp_path / name
        refused(lambda path=path: read_run_file(path), path, "the file is missing")
        assert read_run_file(path, missing_ok=True) is None
    refused(lambda: load_checkpoint(str(tmp_path / CHECKPOINT)), tmp_path / CHECKPOINT,
            "the file is missing")
    refused(lambda: load_params(str(tmp_path / PARAMS)), tmp_path / PARAMS, "the file is missing")
    (tmp_path / MANIFEST).mkdir()
    refused(lambda: read_run_file(tmp_path / MANIFEST, missing_ok=True), tmp_path / MANIFEST,
            "it is a directory, expected a file")


def test_a_torn_torch_file_is_refused_naming_it(tmp_path):
    path = tmp_path / PARAMS
    write_params(tmp_path, torch.zeros(6, 6), torch.zeros(6, 6), TrainConfig(d=2))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(RunFileError) as info:
        load_params(str(path))
    message = str(info.value)
    assert re.fullmatch(re.escape(refusal(path, "truncated, or not a torch file of this toolkit (")) + r"\w+: [^\n]+\)",
                        message), message
    assert ". " not in message                          # the first sentence of torch's reason only


#: What torch raised -> the reason in parentheses: its type and its first sentence, on one line,
#: at most 120 characters of it; the type alone for an empty message.
TORCH_REASONS = [
    (RuntimeError("PytorchStreamReader failed reading zip archive: failed finding central directory. This is "
                  "an internal miniz error."),
     "RuntimeError: PytorchStreamReader failed reading zip archive: failed finding central directory"),
    (EOFError(), "EOFError"),
    (ValueError("x" * 200 + ". more"), "ValueError: " + "x" * 120),
    (OSError("torn\n  at byte 12. Try again"), "OSError: torn at byte 12"),
]


@pytest.mark.parametrize("raised, reason", TORCH_REASONS)
def test_a_torch_file_torch_cannot_load_gives_the_first_sentence_of_its_reason(tmp_path, monkeypatch, raised, reason):
    path = tmp_path / CHECKPOINT
    path.write_bytes(b"PK\x03\x04 not really")

    def failing(*args, **kwargs):
        raise raised

    monkeypatch.setattr(torch, "load", failing)
    refused(lambda: read_run_file(path), path, f"truncated, or not a torch file of this toolkit ({reason})")


class Foreign:
    """A pickled object that is not weights."""

    def __init__(self):
        self.when = datetime.date(2020, 1, 2)


@pytest.mark.parametrize("force_full_pickles", [False, True])
def test_a_torch_file_is_never_unpickled_beyond_weights(tmp_path, monkeypatch, force_full_pickles):
    """A params.pt holding arbitrary Python objects is refused as foreign, also where the
    environment asks torch to unpickle anything by default."""
    if force_full_pickles:
        monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    path = tmp_path / PARAMS
    buffer = io.BytesIO()
    torch.save({"V": torch.zeros(6, 6), "W": torch.zeros(6, 6), "extra": Foreign()}, buffer)
    path.write_bytes(buffer.getvalue())
    with pytest.raises(RunFileError) as info:
        load_params(str(path))
    assert info.value.problem.startswith("truncated, or not a torch file of this toolkit (UnpicklingError: ")


def test_a_torch_file_written_on_a_gpu_loads_on_the_cpu(tmp_path, monkeypatch):
    """Tensors saved from a CUDA device (their storages tagged cuda:0) come back on the CPU."""
    V, W = torch.randn(6, 6), torch.randn(6, 6)
    with monkeypatch.context() as m:
        m.setattr(torch.serialization, "location_tag", lambda storage: "cuda:0")
        write_params(tmp_path, V, W, TrainConfig(d=2))
    V2, W2 = load_params(run_file(tmp_path, PARAMS), TrainConfig(d=2))
    assert V2.device.type == "cpu" and W2.device.type == "cpu"
    assert torch.equal(V2, V) and torch.equal(W2, W)


# ---------------------------------------------------------------------------------------- params.pt
SQUARE = "V and W must be square floating-point matrices of one shape, got {} and {}"
BAD_PARAMS = [
    (torch.zeros(6, 6, dtype=torch.int64), torch.zeros(6, 6, dtype=torch.int64), SQUARE.format((6, 6), (6, 6))),
    (torch.zeros(6, 6), torch.zeros(4, 4), SQUARE.format((6, 6), (4, 4))),
    (torch.zeros(6, 4), torch.zeros(6, 4), SQUARE.format((6, 4), (6, 4))),
    (torch.zeros(6, 6, 6), torch.zeros(6, 6, 6), SQUARE.format((6, 6, 6), (6, 6, 6))),
    (torch.zeros(6), torch.zeros(6), SQUARE.format((6,), (6,))),
    (torch.zeros(6, 6), torch.full((6, 6), float("nan")), "V or W holds non-finite entries"),
    (torch.full((6, 6), float("inf")), torch.zeros(6, 6), "V or W holds non-finite entries"),
    (torch.zeros(6, 6), None, "not the parameters of a run (expected a dict with tensors V and W)"),
]


@pytest.mark.parametrize("V, W, problem", BAD_PARAMS)
def test_bad_params_are_refused_naming_the_shapes(tmp_path, V, W, problem):
    path = tmp_path / PARAMS
    torch.save({"V": V, "W": W, "param": "full", "d": 2}, path)
    refused(lambda: load_params(str(path)), path, problem)
    refused(lambda: load_params(str(path), TrainConfig(d=2)), path, problem)


def test_params_of_another_d_name_the_sizes_2d_plus_2(tmp_path):
    path = tmp_path / PARAMS
    write_params(tmp_path, torch.eye(6), 2 * torch.eye(6), TrainConfig(d=2))
    refused(lambda: load_params(str(path), TrainConfig(d=3)), path,
            "V is 6 x 6, but the run's d = 3 needs 8 x 8: the file belongs to another run")
    refused(lambda: load_params(str(path), TrainConfig(d=1)), path,
            "V is 6 x 6, but the run's d = 1 needs 4 x 4: the file belongs to another run")
    V, W = load_params(str(path))                      # without a config: any square size
    assert torch.equal(V, torch.eye(6)) and torch.equal(W, 2 * torch.eye(6))


# ---------------------------------------------------------------------------------------- checkpoints
def old_checkpoint(config) -> dict:
    """A checkpoint of the engine before it held M models (``SINGLE_MODEL_KEYS``)."""
    return {"config": config, "iteration": 40, "model": {"V": torch.eye(6)}, "optimizer": {"step": 40},
            "data_generator": torch.arange(5, dtype=torch.uint8), "history": [{"iteration": 0, "loss": 2.0}],
            "train_seconds": 1.5, "seconds": 2.5, "acc": torch.tensor([1.0, 2.0, 3.0]), "loss_count": 4,
            "last_loss": torch.tensor(0.75), "skipped_total": 3, "theory": {"loss": 0.125}, "threads": 2}


@pytest.mark.parametrize("config, seed", [({"d": 2, "seed": 7}, 7), ({"d": 2}, 0), (None, 0), ("cfg", 0)])
def test_an_old_single_model_checkpoint_reads_as_a_run_of_one_model(tmp_path, config, seed):
    write_checkpoint(tmp_path, old_checkpoint(config))
    state = load_checkpoint(run_file(tmp_path, CHECKPOINT))
    assert all(key in state for key in CHECKPOINT_KEYS)
    assert state["configs"] == [config]
    assert state["histories"] == [[{"iteration": 0, "loss": 2.0}]]
    assert list(state["streams"]) == [seed] and list(state["streams"][seed]) == ["generator"]
    assert torch.equal(state["streams"][seed]["generator"], torch.arange(5, dtype=torch.uint8))
    assert state["acc"].shape == (3, 1) and state["acc"].flatten().tolist() == [1.0, 2.0, 3.0]
    assert state["last_loss"].shape == (1,) and state["last_loss"].tolist() == [0.75]
    assert state["skipped_total"] == [3] and state["theory"] == [{"loss": 0.125}]
    # the rest as it was
    assert (state["iteration"], state["train_seconds"], state["seconds"], state["loss_count"], state["threads"]) == (
        40, 1.5, 2.5, 4, 2)
    assert torch.equal(state["model"]["V"], torch.eye(6)) and state["optimizer"] == {"step": 40}
    assert state["config"] == config


def new_checkpoint(configs) -> dict:
    return {"configs": configs, "iteration": 10, "model": {}, "optimizer": {}, "streams": {0: {}},
            "histories": [[]], "train_seconds": 0.5, "seconds": 1.0, "acc": torch.zeros(3, 1), "loss_count": 0,
            "last_loss": torch.zeros(1), "skipped_total": [0], "theory": [None], "threads": 1}


def test_a_checkpoint_with_configs_is_read_as_it_is(tmp_path):
    """One holding ``configs`` is of the M-model kind even if it also holds the old keys."""
    state = dict(old_checkpoint({"d": 2, "seed": 7}), **new_checkpoint([{"d": 2, "seed": 1}, {"d": 2, "seed": 2}]))
    write_checkpoint(tmp_path, state)
    read = load_checkpoint(run_file(tmp_path, CHECKPOINT))
    assert read["configs"] == [{"d": 2, "seed": 1}, {"d": 2, "seed": 2}]
    assert read["streams"] == {0: {}} and read["histories"] == [[]] and read["skipped_total"] == [0]
    assert read["acc"].shape == (3, 1) and read["last_loss"].shape == (1,)


@pytest.mark.parametrize("configs", [[], {"d": 2}, "config"])
def test_a_checkpoint_without_a_list_of_model_configs_is_refused(tmp_path, configs):
    write_checkpoint(tmp_path, new_checkpoint(configs))
    path = run_file(tmp_path, CHECKPOINT)
    refused(lambda: load_checkpoint(path), path, "not a training checkpoint of this toolkit (no model configs)")


def test_an_incomplete_checkpoint_names_the_missing_keys(tmp_path):
    state = new_checkpoint([{"d": 2}])
    del state["theory"], state["acc"]
    write_checkpoint(tmp_path, state)
    path = run_file(tmp_path, CHECKPOINT)
    refused(lambda: load_checkpoint(path), path, "not a training checkpoint of this toolkit (missing acc, theory)")


# ---------------------------------------------------------------------------------------- manifests, load_run
def test_manifest_configs_reads_every_model_and_names_the_manifest(tmp_path):
    where = str(tmp_path / MANIFEST)
    c1, c2 = TrainConfig(d=2, seed=1).to_dict(), TrainConfig(d=3, seed=2, k=4).to_dict()
    configs = manifest_configs({"configs": [c1, c2]}, where)
    assert [c.to_dict() for c in configs] == [c1, c2]
    assert [c.to_dict() for c in manifest_configs({"config": c2}, where)] == [c2]
    for manifest in ({"configs": [c1, dict(c2, d=0)]}, {"config": dict(c1, d=0)}):
        with pytest.raises(RunFileError, match=r"^cannot load .*manifest\.json: it holds a bad run config: d must be"):
            manifest_configs(manifest, where)
    refused(lambda: manifest_configs({"configs": [c1, 5]}, where), where, "it holds no run config")
    refused(lambda: manifest_configs({"status": "running"}, where), where, "it holds no run config")


def test_load_run_of_an_unfinished_run_has_no_params_summary_or_metrics(tmp_path):
    config = TrainConfig(d=2, seed=5, k=3)
    manifest = {"status": "running", "iteration": 0, "config": config.to_dict()}
    write_manifest(tmp_path, manifest)
    run = load_run(tmp_path)
    assert run.path == str(tmp_path) and run.config.to_dict() == config.to_dict()
    assert (run.V, run.W, run.summary, run.metrics) == (None, None, None, [])
    assert run.manifest == manifest


def test_load_run_of_a_finished_run_returns_its_files(tmp_path):
    config = TrainConfig(d=2, seed=5)
    manifest = {"status": "finished", "iteration": 4, "config": config.to_dict()}
    write_manifest(tmp_path, manifest)
    write_params(tmp_path, torch.eye(6), -torch.eye(6), config)
    write_summary(tmp_path, {"status": "finished", "final_eval_loss": 0.5})
    RunDir(tmp_path, [{"iteration": 0, "loss": 1.0}, {"iteration": 4, "loss": 0.5}])
    run = load_run(str(tmp_path))
    assert run.config.to_dict() == config.to_dict() and run.manifest == manifest
    assert torch.equal(run.V, torch.eye(6)) and torch.equal(run.W, -torch.eye(6))
    assert run.summary == {"status": "finished", "final_eval_loss": 0.5}
    assert run.metrics == [{"iteration": 0, "loss": 1.0}, {"iteration": 4, "loss": 0.5}]


def test_load_run_refuses_what_is_not_a_run_of_one_model(tmp_path):
    with pytest.raises(ValueError, match=r"^path must be a run directory, got 3$"):
        load_run(3)
    (tmp_path / "f").write_text("x")
    with pytest.raises(ValueError, match=r"is not a run directory \(a file\)$"):
        load_run(tmp_path / "f")
    with pytest.raises(ValueError, match=r"is not a run directory \(no such directory\)$"):
        load_run(tmp_path / "nothing")
    with pytest.raises(ValueError, match=r"is not a run directory \(no manifest.json\)$"):
        load_run(tmp_path)
    write_manifest(tmp_path, {"configs": [TrainConfig(d=2).to_dict()] * 2})
    with pytest.raises(ValueError) as info:
        load_run(tmp_path)
    assert str(info.value) == f"{str(tmp_path)!r} holds 2 models: load one of {os.path.join(tmp_path, 'models', '*')}"


# ---------------------------------------------------------------------------------------- what a manifest records
def test_versions_name_python_and_the_numerical_libraries():
    assert versions() == {"python": platform.python_version(), "torch": torch.__version__,
                          "numpy": np.__version__, "scipy": scipy.__version__, "sympy": sympy.__version__}


def test_load_average_is_three_numbers_to_two_decimals(monkeypatch):
    monkeypatch.setattr(os, "getloadavg", lambda: (0.123456, 1.98765, 2.5))
    averages = load_average()
    assert averages == [0.12, 1.99, 2.5] and all(isinstance(x, float) for x in averages)

    def unavailable():
        raise OSError("no load average")

    monkeypatch.setattr(os, "getloadavg", unavailable)
    assert load_average() is None
    monkeypatch.delattr(os, "getloadavg")
    assert load_average() is None


def git(repo, *args) -> str:
    return subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t",
                           "-c", "commit.gpgsign=false", *args], check=True, capture_output=True,
                          text=True).stdout.strip()


@pytest.fixture
def checkout(tmp_path, monkeypatch):
    """A git repository whose training/rundir.py is the module's file."""
    repo = tmp_path / "repo"
    (repo / "training").mkdir(parents=True)
    git(repo, "init", "-q")
    monkeypatch.setattr(rundir, "__file__", str(repo / "training" / "rundir.py"))
    return repo


def test_git_commit_is_the_checkouts_head(checkout):
    git(checkout, "commit", "-q", "--allow-empty", "-m", "first")
    head = git(checkout, "rev-parse", "HEAD")
    commit = git_commit()
    assert isinstance(commit, str) and commit == head and len(commit) == 40


def test_git_commit_is_none_without_a_commit_or_without_git(checkout, monkeypatch, tmp_path):
    assert git_commit() is None                      # git fails (and prints "HEAD" on stdout)
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    assert git_commit() is None                      # no git at all


def test_git_commit_gives_a_hung_git_five_seconds(monkeypatch):
    waited = []

    def hung(cmd, **kwargs):
        if kwargs.get("timeout") is None:
            pytest.fail("git_commit would wait forever for a hung git")
        waited.append(kwargs["timeout"])
        raise subprocess.TimeoutExpired(cmd, kwargs["timeout"])

    monkeypatch.setattr(subprocess, "run", hung)
    assert git_commit() is None and waited == [5]
