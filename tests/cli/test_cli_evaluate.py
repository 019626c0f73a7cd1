"""``cotgd evaluate RUN_DIR`` and ``cotgd reproduce ood --run DIR`` (issue 15): exit codes (bad
input: one line on stderr, status 2), the JSON written by ``--json``, the table, the figure, and
every option's help stating its default.  In-process calls of ``training.app.cli.main`` on tiny runs
trained once per module."""
import json
import os

import numpy as np
import pytest

from training import TrainConfig, train, train_models
from training.app.cli import build_parser, main
from training.suite import standard_suite

TINY = dict(d=3, n=6, k=2, batch=32, iters=5, eval_every=5, eval_samples=200, theory_samples=500,
            structure_samples=64, progress=False, device="cpu")


from threads import one_torch_thread  # noqa: F401,E402  (an autouse fixture: tests/threads.py)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    train(TrainConfig(**TINY, out=str(root / "cot")))
    train(TrainConfig(**TINY, mode="nocot", out=str(root / "nocot")))
    train_models(TrainConfig(**TINY, out=str(root / "many")), seeds=[0, 1])
    return root


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("cotgd: error:"), err
    return err


def test_evaluate_writes_table_json_and_figure(runs, tmp_path, capsys):
    np.save(tmp_path / "mine.npy", np.diag([2.0, 1.0, 0.5]))
    js, fig = tmp_path / "out.json", tmp_path / "suite.png"
    status = main(["evaluate", str(runs / "cot"), "--samples", "200", "--theory-samples", "200", "--device", "cpu",
                   "--sigma", str(tmp_path / "mine.npy"), "--json", str(js), "--figure", str(fig)])
    out = capsys.readouterr().out
    assert status == 0
    result = json.loads(js.read_text())
    names = [c.name for c in standard_suite(3)] + ["mine"]
    assert [c["name"] for c in result["cases"]] == names
    for case in result["cases"]:
        assert case["name"] in out
        assert {"mean", "median", "q10", "q90", "diverged_frac", "gd_median", "nocot_median", "predicted_stable",
                "unstable_frac", "expected_loss", "expected_method", "unrecoverable"} <= set(case)
    assert result["samples"] == 200 and result["model"]["mode"] == "cot"
    assert fig.is_file() and fig.stat().st_size > 10_000 and str(fig) in out


def test_evaluate_nocot_run_and_suite_none(runs, tmp_path, capsys):
    np.save(tmp_path / "flat.npy", np.eye(3))
    js = tmp_path / "n.json"
    assert main(["evaluate", str(runs / "nocot"), "--suite", "none", "--sigma", str(tmp_path / "flat.npy"),
                 "--samples", "100", "--json", str(js), "--device", "cpu"]) == 0
    result = json.loads(js.read_text())
    assert [c["name"] for c in result["cases"]] == ["flat"] and result["model"]["gd_steps"] == 1
    assert "1-step GD" in capsys.readouterr().out


def test_evaluate_one_model_of_a_many_model_run(runs, capsys):
    model_dir = sorted((runs / "many" / "models").iterdir())[1]
    assert main(["evaluate", str(model_dir), "--suite", "none", "--sigma", str(runs / "none.npy"),
                 "--samples", "50"]) == 2              # the covariance file is missing: exit 2
    assert "none.npy" in one_error_line(capsys)
    np.save(runs / "half.npy", 0.5 * np.eye(3))
    assert main(["evaluate", str(model_dir), "--suite", "none", "--sigma", str(runs / "half.npy"),
                 "--samples", "50", "--device", "cpu"]) == 0


def test_bad_run_dirs_exit_2_with_one_line(runs, tmp_path, capsys):
    assert main(["evaluate", str(tmp_path / "nowhere")]) == 2
    assert "nowhere" in one_error_line(capsys)
    assert main(["evaluate", str(runs / "many")]) == 2
    assert "models" in one_error_line(capsys)
    (tmp_path / "empty").mkdir()
    assert main(["evaluate", str(tmp_path / "empty")]) == 2
    one_error_line(capsys)


@pytest.mark.parametrize("argv,needle", [
    (["--samples", "0"], "--samples"),
    (["--theory-samples", "-1"], "--theory-samples"),
    (["--step", "nan"], "--step"),
    (["--suite", "bogus"], "--suite"),
    (["--device", "tpu"], "--device"),
])
def test_bad_options_exit_2_with_one_line(runs, argv, needle, capsys):
    assert main(["evaluate", str(runs / "cot")] + argv) == 2
    assert needle in one_error_line(capsys)


def test_bad_covariance_files_and_paths_exit_2(runs, tmp_path, capsys):
    np.save(tmp_path / "wide.npy", np.eye(4))
    assert main(["evaluate", str(runs / "cot"), "--suite", "none", "--sigma", str(tmp_path / "wide.npy")]) == 2
    assert "wide must be 3 x 3" in one_error_line(capsys)
    np.save(tmp_path / "neg.npy", -np.eye(3))
    assert main(["evaluate", str(runs / "cot"), "--suite", "none", "--sigma", str(tmp_path / "neg.npy")]) == 2
    assert "positive semi-definite" in one_error_line(capsys)
    assert main(["evaluate", str(runs / "cot"), "--json", str(tmp_path)]) == 2
    assert "--json" in one_error_line(capsys)
    assert main(["evaluate", str(runs / "cot"), "--figure", str(tmp_path)]) == 2
    assert "--figure" in one_error_line(capsys)
    assert main(["evaluate", str(runs / "cot"), "--suite", "none"]) == 2
    assert "no cases" in one_error_line(capsys)


def test_every_evaluate_option_states_its_default(capsys):
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices["evaluate"]
    for action in sub._actions:
        if action.option_strings and action.dest != "help":
            text = action.help if action.default is None else sub.formatter_class("x")._get_help_string(action)
            assert "default" in text, action.option_strings
    reproduce = next(a for a in parser._actions if a.dest == "command").choices["reproduce"]
    run = next(a for a in reproduce._actions if a.dest == "run")
    assert "default" in run.help


def test_reproduce_ood_from_existing_runs(runs, tmp_path, capsys, monkeypatch):
    import theory
    monkeypatch.setattr(theory, "MAX_EXACT_MOMENT", 8)     # the exact curve of the k panel up to k = 4: seconds
    out = tmp_path / "figs"
    assert main(["reproduce", "ood", "--quick", "--out", str(out), "--device", "cpu",
                 "--run", str(runs / "cot"), "--run", str(runs / "nocot")]) == 0
    assert (out / "ood.png").is_file() and not (out / "runs").exists()        # nothing trained
    assert str(out / "ood.png") in capsys.readouterr().out
    assert main(["reproduce", "fig2", "--out", str(out), "--run", str(runs / "cot")]) == 2
    assert "--run" in one_error_line(capsys)
    assert main(["reproduce", "ood", "--out", str(out), "--run", str(runs / "nocot")]) == 2
    assert "cot run" in one_error_line(capsys)
    assert main(["reproduce", "ood", "--out", str(out), "--run", str(runs / "many")]) == 2
    assert "models" in one_error_line(capsys)
    assert not os.path.exists(tmp_path / "nothing")


def test_evaluate_judges_a_sigma_run_on_its_own_distribution(tmp_path, capsys):
    """``cotgd train --sigma diag.npy`` then ``cotgd evaluate``: the in-distribution row and the
    scale-x cases use the training Sigma (issue 22: they used I), and the row is the run's own
    final evaluation."""
    np.save(tmp_path / "diag.npy", np.diag([1.0, 2.0, 3.0]))
    run, js = tmp_path / "run", tmp_path / "out.json"
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in TINY.items() if k != "progress"]
    assert main(["train", *flags, "--eval-samples", "150", "--sigma", str(tmp_path / "diag.npy"),
                 "--out", str(run)]) == 0
    assert main(["evaluate", str(run), "--samples", "150", "--theory-samples", "150", "--device", "cpu",
                 "--json", str(js)]) == 0
    out = capsys.readouterr().out
    result = json.loads(js.read_text())
    ref = result["in_distribution"]
    assert ref["sigma_eigenvalues"] == [3.0, 2.0, 1.0] and "Sigma = Sigma_train" in ref["description"]
    summary = json.loads((run / "summary.json").read_text())
    assert ref["median"] == pytest.approx(summary["eval"]["median"], rel=1e-9)
    scaled = next(c for c in result["cases"] if c["name"] == "scale-x=2")
    assert scaled["sigma_eigenvalues"] == [12.0, 8.0, 4.0]
    assert "Trained on its own distribution" in out
