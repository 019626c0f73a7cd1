"""Run-directory files have one owner, ``training.rundir``: their names (``RUN_FILES``), paths
(``run_file``), writers and readers, checked here by round trips and against a run that the
engine wrote; and a source check that no other module of training/ spells a run file's name in
code (a string literal that is the name, or a path ending in it; docstrings and comments do not
count), nor a sweep file's name outside the sweep module that owns it.

Kinds of check: file checks (round trips in a temporary directory), one training check (a tiny
CPU run, seconds) and source checks (the AST of every module of training/)."""
from __future__ import annotations

import ast
import json
import pathlib

import pytest
import torch

from training import TrainConfig, load_run, train
from training.errors import RunFileError
from training.rundir import (CHECKPOINT, MANIFEST, METRICS, PARAMS, RUN_FILES, SUMMARY, RunDir, load_manifest,
                             load_params, read_metrics, read_run_file, read_summary, run_file, write_checkpoint,
                             write_manifest, write_params, write_summary)

ROOT = pathlib.Path(__file__).resolve().parents[2]
TRAINING = ROOT / "training"
TINY = dict(d=2, n=5, k=2, batch=16, iters=4, eval_every=2, eval_samples=64, theory_samples=256,
            structure_samples=16, device="cpu", progress=False, checkpoint_every=2)


# ---------------------------------------------------------------------------------------- names
def test_the_run_files_are_named_once_as_documented():
    """The names are the documented interface (docs/architecture.md section 4)."""
    assert (MANIFEST, METRICS, CHECKPOINT, PARAMS, SUMMARY) == (
        "manifest.json", "metrics.jsonl", "checkpoint.pt", "params.pt", "summary.json")
    assert sorted(RUN_FILES) == sorted((MANIFEST, METRICS, CHECKPOINT, PARAMS, SUMMARY))


def test_run_file_is_the_path_of_a_run_file_and_refuses_other_names(tmp_path):
    assert run_file(tmp_path, SUMMARY) == str(tmp_path / "summary.json")
    assert run_file(str(tmp_path), CHECKPOINT) == str(tmp_path / "checkpoint.pt")
    with pytest.raises(ValueError, match="name must be one of the run files.*got 'cell.json'"):
        run_file(tmp_path, "cell.json")


# ---------------------------------------------------------------------------------------- round trips
def test_json_files_round_trip_and_are_indented_json(tmp_path):
    manifest = {"status": "running", "iteration": 3, "loss": float("inf")}
    write_manifest(tmp_path, manifest)
    write_summary(tmp_path, {"final_eval_loss": 0.25})
    assert load_manifest(tmp_path) == manifest
    assert read_summary(tmp_path) == {"final_eval_loss": 0.25}
    text = (tmp_path / "manifest.json").read_text()
    assert text.endswith("\n") and text.startswith("{\n  ") and "Infinity" in text
    assert json.loads((tmp_path / "summary.json").read_text()) == {"final_eval_loss": 0.25}


def test_missing_files_are_none_with_missing_ok_else_one_line_naming_them(tmp_path):
    assert load_manifest(tmp_path) is None
    assert read_summary(tmp_path, missing_ok=True) is None
    assert read_metrics(tmp_path, missing_ok=True) is None
    for reader, name in ((read_summary, "summary.json"), (read_metrics, "metrics.jsonl")):
        with pytest.raises(RunFileError, match=f"{name}: the file is missing"):
            reader(tmp_path)


def test_metrics_are_rewritten_then_appended(tmp_path):
    rows = [{"iteration": 0, "loss": 1.0}, {"iteration": 2, "loss": 0.5}]
    d = RunDir(tmp_path / "run", rows[:1])
    assert read_metrics(d.path) == rows[:1]
    d.append_metrics(rows[1])
    assert read_metrics(d.path) == rows
    RunDir(d.path, [])                                   # a restart rewrites the file from its history
    assert read_metrics(d.path) == [] and (tmp_path / "run" / "metrics.jsonl").read_text() == ""


def test_params_and_checkpoint_round_trip(tmp_path):
    config = TrainConfig(d=2)
    V, W = torch.randn(6, 6), torch.randn(6, 6)
    write_params(tmp_path, V, W, config)
    saved = read_run_file(run_file(tmp_path, PARAMS))
    assert set(saved) == {"V", "W", "param", "d"} and saved["param"] == config.param and saved["d"] == 2
    V2, W2 = load_params(run_file(tmp_path, PARAMS), config)
    assert torch.equal(V, V2) and torch.equal(W, W2)
    write_checkpoint(tmp_path, {"iteration": 7, "model": {"V": V}})
    state = read_run_file(run_file(tmp_path, CHECKPOINT))
    assert state["iteration"] == 7 and torch.equal(state["model"]["V"], V)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt", "params.pt"]     # no temporaries


def test_a_run_writes_exactly_the_run_files_and_reads_back(tmp_path):
    """Training: the engine's run directory holds the run files, and ``load_run`` reads them."""
    torch.set_num_threads(1)
    result = train(TrainConfig(**TINY, out=str(tmp_path / "run")))
    names = sorted(p.name for p in (tmp_path / "run").iterdir())
    assert names == sorted(RUN_FILES)
    run = load_run(tmp_path / "run")
    assert torch.equal(run.V, result.V) and run.summary == read_summary(run.path)
    assert run.metrics == read_metrics(run.path) and len(run.metrics) == len(result.history)
    assert load_manifest(run.path)["status"] in ("finished", "failed")


# ---------------------------------------------------------------------------------------- source check
#: The sweep's own files: each named by one module of the sweep package.
SWEEP_FILES = {"sweep.json": "training/sweep/driver.py", "results.parquet": "training/sweep/driver.py",
               "results.csv": "training/sweep/driver.py", "cell.json": "training/sweep/cell.py",
               "worker.json": "training/sweep/cell.py"}
OWNERS = {**{name: "training/rundir.py" for name in RUN_FILES}, **SWEEP_FILES}
#: Modules of other owners that still spell a run file's name (strict: remove the entry when fixed).
PENDING: dict = {}          # module -> reason, for a literal awaiting its owner (xfail, strict)


def docstring_nodes(tree: ast.AST) -> set:
    """The string constants that are docstrings (a string statement: a module's, a class's, a
    function's or an attribute's)."""
    return {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Expr)
            and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)}


def spelled_file_names(source: str, filename: str = "<source>") -> list[tuple[int, str]]:
    """``(line, name)`` for every string literal in code (docstrings excluded) that is the name of
    a run or sweep file, or a path ending in one (``dir/summary.json``)."""
    tree = ast.parse(source, filename)
    skip = docstring_nodes(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
            for name in OWNERS:
                if node.value == name or node.value.endswith(("/" + name, "\\" + name)):
                    found.append((node.lineno, name))
    return found


def modules() -> list[pathlib.Path]:
    return sorted(p for p in TRAINING.rglob("*.py") if "__pycache__" not in p.parts)


def _param(path: pathlib.Path):
    rel = path.relative_to(ROOT).as_posix()
    marks = [pytest.mark.xfail(strict=True, reason=PENDING[rel])] if rel in PENDING else []
    return pytest.param(path, id=rel, marks=marks)


@pytest.mark.parametrize("path", [_param(p) for p in modules()])
def test_only_the_owner_spells_a_file_name(path):
    rel = path.relative_to(ROOT).as_posix()
    bad = [(line, name) for line, name in spelled_file_names(path.read_text(encoding="utf-8"), rel)
           if OWNERS[name] != rel]
    assert not bad, (f"{rel} spells file names owned elsewhere (use the owner's names): "
                     + ", ".join(f"line {line}: {name!r} ({OWNERS[name]})" for line, name in bad))


def test_every_owner_names_its_files():
    """The owners do spell their names (so the check above is not vacuous)."""
    spelled = {rel: {name for _, name in spelled_file_names((ROOT / rel).read_text(encoding="utf-8"), rel)}
               for rel in set(OWNERS.values())}
    assert all(name in spelled[owner] for name, owner in OWNERS.items()), spelled


def test_the_source_check_sees_a_planted_name_and_not_a_docstring():
    planted = ('"""Reads summary.json."""\n'
               'import os\n'
               'def f(d):\n'
               '    """The manifest.json of d."""\n'
               '    # checkpoint.pt\n'
               '    message = f"{d} has no params.pt"\n'
               '    return os.path.join(d, "summary.json"), "run/metrics.jsonl", message\n')
    assert sorted(spelled_file_names(planted)) == [(7, "metrics.jsonl"), (7, "summary.json")]
