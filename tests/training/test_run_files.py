"""Run files (issue 22 section 5): every file of a run directory is read through one loader
(``training.rundir.read_run_file``), so a damaged one is a ``RunFileError``, one line naming the
file and what is wrong, from ``load_run`` and ``resume`` alike; the manifest is kept current (at
every checkpoint, on Ctrl-C "interrupted", on an error "error", at the end); ``resume`` of a
directory without a checkpoint says that it starts from iteration 0, and never retrains a run
that has ended.

Kinds of check: training (tiny CPU runs, seconds) and file checks on copies of a finished run.
The command line's side is tests/cli/test_cli_run_files.py."""
import json
import os
import shutil

import pytest
import torch

from runlog import crash_at
from training import TrainConfig, load_run, resume, train
from training.errors import RunFileError
from training.rundir import load_checkpoint, load_params, read_run_file

import training.engine as engine

TINY = dict(d=2, n=5, k=2, batch=32, iters=20, eval_every=10, eval_samples=300, theory_samples=1000,
            structure_samples=64, device="cpu", progress=False, checkpoint_every=5)
RUN_FILES = ("params.pt", "checkpoint.pt", "summary.json", "manifest.json", "metrics.jsonl")


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("finished") / "run"
    torch.set_num_threads(1)
    return out, train(TrainConfig(**TINY, out=str(out)))


@pytest.fixture
def run_copy(finished, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(finished[0], out)
    return out


def truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


DAMAGES = {
    "empty": (lambda p: p.write_bytes(b""), {"params.pt": "empty", "checkpoint.pt": "empty", "summary.json": "empty",
                                             "manifest.json": "empty", "metrics.jsonl": None}),
    "truncated": (truncate, {"params.pt": "truncated", "checkpoint.pt": "truncated", "summary.json": "not valid JSON",
                             "manifest.json": "not valid JSON", "metrics.jsonl": "not valid JSON"}),
    "binary": (lambda p: p.write_bytes(bytes(range(256)) * 8), {name: "truncated" if name.endswith(".pt")
                                                                else "not UTF-8" for name in RUN_FILES}),
    "other content": (lambda p: (torch.save([1, 2], p) if p.suffix == ".pt"
                                 else p.write_text("[1, 2]\n")),
                      {"params.pt": "expected a dict with tensors V and W",
                       "checkpoint.pt": "not a training checkpoint", "summary.json": "holds a JSON list, expected an object",
                       "manifest.json": "holds a JSON list, expected an object",
                       "metrics.jsonl": "line 1 holds a JSON list, expected an object"}),
}


def load(out, name):
    """What reads ``name`` for a user: load_run, or resume for the checkpoint."""
    return resume(str(out)) if name == "checkpoint.pt" else load_run(out)


#: The loader of each file (read_run_file and a check of what the file holds).
LOADERS = {"params.pt": load_params, "checkpoint.pt": load_checkpoint}


@pytest.mark.parametrize("name", RUN_FILES)
@pytest.mark.parametrize("damage", list(DAMAGES))
def test_a_damaged_run_file_is_one_line_naming_it(run_copy, name, damage, monkeypatch):
    """File check: each run file, emptied, cut in half, overwritten with binary or with the wrong
    kind of content, gives RunFileError (a ValueError) whose message is one line naming the
    file's path and the problem, from the loader and from load_run / resume (nothing is
    trained).  An empty metrics.jsonl is a run with no evaluation yet, not damage."""
    spoil, problems = DAMAGES[damage]
    path = run_copy / name
    spoil(path)
    monkeypatch.setattr(engine.Engine, "run", lambda self: pytest.fail("a damaged run was trained"))
    if problems[name] is None:
        assert read_run_file(path) == []
        return
    for reader in (lambda: LOADERS.get(name, read_run_file)(path), lambda: load(run_copy, name)):
        with pytest.raises(RunFileError) as info:
            reader()
        message = str(info.value)
        assert "\n" not in message and message.startswith(f"cannot load {path}: ")
        assert problems[name] in message, message
        assert info.value.path == str(path)


def test_torn_metrics_line_is_named_by_its_number(run_copy):
    """File check: a metrics.jsonl whose third line was cut (a crash mid-write of another kind)
    names line 3."""
    lines = (run_copy / "metrics.jsonl").read_text().splitlines()
    (run_copy / "metrics.jsonl").write_text("\n".join(lines[:2] + [lines[2][:40]]) + "\n")
    with pytest.raises(RunFileError, match=r"metrics.jsonl: line 3 is not valid JSON"):
        load_run(run_copy)


def test_params_of_another_dimension_belong_to_another_run(run_copy):
    """File check: a params.pt of d = 3 in a run of d = 2 is named as another run's."""
    torch.save({"V": torch.zeros(8, 8), "W": torch.zeros(8, 8), "param": "full", "d": 3}, run_copy / "params.pt")
    with pytest.raises(RunFileError, match="params.pt: V is 8 x 8, but the run's d = 2 needs 6 x 6"):
        load_run(run_copy)


def test_a_bad_config_in_the_manifest_names_the_manifest(run_copy):
    manifest = json.loads((run_copy / "manifest.json").read_text())
    manifest["config"]["d"] = 0
    (run_copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(RunFileError, match=r"manifest.json: it holds a bad run config: d must be"):
        load_run(run_copy)


def test_missing_files_of_an_unfinished_run_are_none_but_a_finished_run_needs_them(run_copy):
    """A run directory without params.pt / summary.json loads with None for them (it is not
    finished); resume of a run marked finished without them names the missing file."""
    (run_copy / "params.pt").unlink()
    run = load_run(run_copy)
    assert run.V is None and run.summary is not None
    with pytest.raises(RunFileError, match="params.pt: the file is missing, but the run is marked finished"):
        resume(str(run_copy))


# ---------------------------------------------------------------------------- the manifest is current
def test_manifest_follows_every_checkpoint(tmp_path, monkeypatch):
    """Training: right after each checkpoint the manifest says running at that iteration (not
    iteration 0), and at the end finished at the last one."""
    seen = []
    checkpoint = engine.Engine.checkpoint

    def watched(self):
        checkpoint(self)
        m = json.loads((tmp_path / "run" / "manifest.json").read_text())
        seen.append((m["status"], m["iteration"], m["checkpoint_iteration"]))

    monkeypatch.setattr(engine.Engine, "checkpoint", watched)
    train(TrainConfig(**TINY, out=str(tmp_path / "run")))
    assert seen == [("running", i, i) for i in (5, 10, 15, 20, 20)]
    m = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert (m["status"], m["iteration"], m["checkpoint_iteration"]) == ("finished", 20, 20)


def test_interrupt_marks_the_manifest_interrupted_and_resume_finishes(tmp_path, monkeypatch, finished):
    """Training: Ctrl-C at iteration 12 (checkpoints every 5): the manifest says interrupted, at
    iteration 12, resumable from the checkpoint of iteration 10; resume ends on the
    uninterrupted run's parameters and a finished manifest."""
    crash_at(monkeypatch, 12)
    with pytest.raises(KeyboardInterrupt):
        train(TrainConfig(**TINY, out=str(tmp_path / "run")))
    monkeypatch.undo()
    m = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert (m["status"], m["iteration"], m["checkpoint_iteration"]) == ("interrupted", 12, 10)
    result = resume(str(tmp_path / "run"))
    assert torch.equal(result.V, finished[1].V) and torch.equal(result.W, finished[1].W)
    assert json.loads((tmp_path / "run" / "manifest.json").read_text())["status"] == "finished"


def test_an_error_marks_the_manifest_with_it(tmp_path, monkeypatch):
    """Training: an exception inside the loop leaves status 'error' and its message, not
    'running'."""
    step = engine.Engine.step

    def failing(self):
        if self.iteration == 7:
            raise RuntimeError("the disk is on fire")
        step(self)

    monkeypatch.setattr(engine.Engine, "step", failing)
    with pytest.raises(RuntimeError):
        train(TrainConfig(**TINY, out=str(tmp_path / "run")))
    m = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert (m["status"], m["iteration"], m["checkpoint_iteration"]) == ("error", 7, 5)
    assert m["error"] == "RuntimeError: the disk is on fire"


# ---------------------------------------------------------------------------- resume without a checkpoint
def test_resume_without_a_checkpoint_says_it_starts_from_0(tmp_path, monkeypatch, finished):
    """Training: a run stopped before its first checkpoint resumes from iteration 0 with a
    RuntimeWarning naming the directory and the iteration the run had reached, and ends on the
    uninterrupted run."""
    crash_at(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        train(TrainConfig(**TINY, out=str(tmp_path / "run")))
    monkeypatch.undo()
    assert not (tmp_path / "run" / "checkpoint.pt").exists()
    with pytest.warns(RuntimeWarning, match=f"no checkpoint in {tmp_path / 'run'}: starting from iteration 0 .*"
                                            f"reached iteration 3"):
        result = resume(str(tmp_path / "run"))
    assert torch.equal(result.V, finished[1].V)


def test_resume_of_a_finished_run_without_its_checkpoint_reads_it_back(run_copy, finished, monkeypatch):
    """Training: a finished run whose checkpoint was deleted is read back, not trained again
    from scratch over its results."""
    os.unlink(run_copy / "checkpoint.pt")
    before = (run_copy / "params.pt").read_bytes()
    monkeypatch.setattr(engine.Engine, "run", lambda self: pytest.fail("a finished run was recomputed"))
    result = resume(str(run_copy))
    assert torch.equal(result.V, finished[1].V) and (run_copy / "params.pt").read_bytes() == before


def test_resume_of_a_directory_without_a_manifest_refuses(tmp_path):
    """A directory with metrics but neither manifest nor checkpoint is not resumed (nothing is
    written into it)."""
    (tmp_path / "metrics.jsonl").write_text("")
    with pytest.raises(FileNotFoundError, match="not a run directory"):
        resume(str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == ["metrics.jsonl"]
