"""training.explain and ``cotgd explain`` (issue 24): a run whose model is GD at the exact optimal
step is explained by GD, the result carries the issue's keys, the ablations zero the blocks they
name, and the command line prints the table, writes the JSON and the figure, and refuses bad
input with one line.

The "trained model" of most tests is Theorem 3.2's transformer ``numerics.gd_params(d, eta)``
held in a ``training.Run`` built in memory: its estimates are GD's exactly, so what the fit
recovers is known.  The fits are Monte Carlo on a few thousand prompts: their tolerances are
statistical and each test says where they come from.  In-process ``training.app.cli.main``; a
few seconds in all."""
import json
import os
import shutil

import numpy as np
import pytest
import torch

import numerics
from numerics import loop_families as lf
from training import TrainConfig
from training.app.cli import main
from training.explain import explain_run, format_explanation
from training.rundir import Run

D, N, K = 3, 6, 3
SAMPLES = 3000
OPTIMUM = numerics.looped_optimal_eta(D, N, K)        # exact (theory.gd_eval_loss), not Monte Carlo


def _run(V, W, *, mode="looped", **config) -> Run:
    """A ``training.Run`` held in memory, with float32 parameters as training writes them."""
    cfg = TrainConfig(mode=mode, d=D, n=N, k=K, **config)
    return Run(path="in-memory", config=cfg, V=torch.tensor(V, dtype=torch.float32),
               W=torch.tensor(W, dtype=torch.float32), summary=None, metrics=[], manifest={})


@pytest.fixture(scope="module")
def gd_explained():
    """The GD model at the exact optimal step, explained on 3000 prompts (all of them fit)."""
    run = _run(*numerics.gd_params(D, OPTIMUM.eta))
    return explain_run(run, samples=SAMPLES, fit_on=SAMPLES, seed=0, families=["gd", "stretched_gd", "gd++"])


def test_gd_model_is_explained_by_gd(gd_explained):
    """Statistical: the best GD member on 3000 prompts of d 3, n 6, k 3 is the exact optimum
    within 15% (the fitted step's sampling sd is 3.7% here, 30 seeds measured when this test was
    written: 15% is 4 sd; the loss has heavy tails at n = 2d, so the step is not better
    determined by a few thousand prompts); it matches the model (the module's rule: median and
    mean within 10%, deviation <= 0.1), its deviation is below 0.03 (over 30 seeds the largest
    was 0.015) and the deviation of medians below 0.01 (largest 0.005).  It is the closest family
    and the only one that explains the model: stretched GD's and GD++'s best members are other
    algorithms (deviation > 0.05)."""
    r = gd_explained
    fams = {f["name"]: f for f in r["families"]}
    gd = fams["gd"]
    assert abs(gd["params"]["eta"] / OPTIMUM.eta - 1) <= 0.15, (gd["params"], OPTIMUM.eta)
    assert gd["matches"] is True
    assert gd["deviation"] < 0.03 and gd["deviation_median"] < 0.01
    assert r["best"] == "gd"
    assert r["explained_by"] == ["gd"]
    assert fams["stretched_gd"]["deviation"] > 0.05 and fams["gd++"]["deviation"] > 0.05
    assert len(gd["deviation_per_loop"]) == K and len(gd["curve_median"]) == K + 1


def test_gd_model_losses_are_the_exact_gd_loss(gd_explained):
    """Statistical: the learned model is GD at the exact optimum, so its mean loss after k loops
    is ``theory.gd_eval_loss`` there (OPTIMUM.loss) within 4 se (heavy tails: 4 rather than 3);
    nothing diverges.  Exact: the curves have k + 1 points and start at (1/2) ||w*||^2's
    median / mean (w_0 = 0 for the model and every family)."""
    learned = gd_explained["learned"]
    assert abs(learned["mean"] - OPTIMUM.loss) <= 4 * learned["se"], (learned, OPTIMUM.loss)
    assert learned["diverged_frac"] == 0.0
    assert len(learned["curve_median"]) == K + 1
    for f in gd_explained["families"]:
        assert f["curve_median"][0] == learned["curve_median"][0]
        assert f["curve_mean"][0] == pytest.approx(learned["curve_mean"][0], rel=1e-12)


def test_result_has_the_issue_keys_and_is_json(gd_explained):
    """Exact: the result is JSON (round trip) with issue 24's keys: {"learned": {"median",
    "mean"}, "families": [{"name", "params", "median", "mean", "deviation"}], "best"}; the
    table names every family, marks GD and says what explains the model."""
    r = json.loads(json.dumps(gd_explained, default=lambda v: v.tolist()))
    assert {"learned", "families", "best"} <= set(r)
    assert {"median", "mean"} <= set(r["learned"])
    assert [f["name"] for f in r["families"]] == ["gd", "stretched_gd", "gd++"]
    for f in r["families"]:
        assert {"name", "params", "median", "mean", "deviation"} <= set(f)
        assert set(f["params"]) == set(lf.FAMILIES[f["name"]])
    assert (r["mode"], r["d"], r["n"], r["k"], r["samples"]) == ("looped", D, N, K, SAMPLES)
    table = format_explanation(gd_explained)
    lines = table.splitlines()
    assert any(line.startswith("gd ") and "<- explains it" in line for line in lines)
    assert not any(line.startswith(("stretched_gd", "gd++")) and "explains" in line for line in lines)
    assert "explained by: gd " in table


def test_ablations_zero_the_blocks_they_name():
    """Numeric (float64): the model GD++ (gamma 0.1, eta 0.5) has V11 beside the GD blocks.
    Setting the data rewrite V1*, V2* to zero, or keeping only the GD blocks, leaves GD of step
    0.5 (its median loss on the same prompts, computed here); zeroing blocks that are zero
    changes nothing (bitwise), and so does averaging blocks that are multiples of I (to rounding);
    every ablation is listed for a full looped model, none when ``ablations=False``."""
    V, W = lf.family_params("gd++", D, {"gamma": 0.1, "eta": 0.5})
    r = explain_run(_run(V, W), samples=500, fit_on=200, families=["gd"], rotations=0)
    X, y, w_star = numerics.sample_prompts(D, N, 500, 0)
    gd_median = float(np.median(lf.per_loop_losses(lf.family_iterates("gd", X, y, {"eta": 0.5}, K), w_star)[:, -1]))
    by_name = {a["name"]: a for a in r["ablations"]}
    assert len(by_name) == 7
    learned = r["learned"]["median"]
    assert abs(learned - gd_median) > 1e-3                        # V11 matters: GD++ is not GD
    for name, a in by_name.items():
        if name.startswith(("only V31", "without the data rewrite")):
            assert a["median"] == pytest.approx(gd_median, rel=1e-6), name
        elif name.startswith("only the isotropic part"):
            assert a["median"] == pytest.approx(learned, rel=1e-9), name
        else:
            assert a["median"] == learned, name
    assert explain_run(_run(V, W), samples=200, fit_on=100, families=["gd"], ablations=False,
                       rotations=0)["ablations"] == []


def test_explain_run_refusals():
    """Exact: a run without parameters, an unknown family, too few samples: one ValueError line."""
    run = _run(*numerics.gd_params(D, 0.4))
    cases = [
        (Run(path="nowhere", config=run.config, V=None, W=None, summary=None, metrics=[], manifest={}), {},
         "params.pt"),
        (run, {"families": ["gd", "bogus"]}, "bogus"),
        (run, {"samples": 1}, "samples"),
    ]
    for target, kwargs, needle in cases:
        with pytest.raises(ValueError) as info:
            explain_run(target, **kwargs)
        assert "\n" not in str(info.value) and needle in str(info.value), str(info.value)


def test_best_prefers_the_simpler_of_equal_families():
    """Numeric: for a GD model on Sigma = I, where preconditioned GD is GD whatever alpha (Sigma^-alpha
    = I), the best family is "gd", not the nested family that ties with it up to the optimiser's
    tolerance."""
    r = explain_run(_run(*numerics.gd_params(D, OPTIMUM.eta)), samples=SAMPLES, fit_on=1000, seed=0,
                    families=["gd", "preconditioned_gd"], ablations=False, rotations=0)
    assert r["best"] == "gd"


# ---------------------------------------------------------------------------------------------
# the command line


def _err_lines_from(text: str) -> list:
    return [line for line in text.splitlines() if line.strip()]


def _err_lines(capsys) -> list:
    return _err_lines_from(capsys.readouterr().err)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A tiny looped run trained by the command line (a second or two)."""
    out = str(tmp_path_factory.mktemp("explain") / "run")
    status = main(["train", "--mode", "looped", "--d", "2", "--n", "4", "--k", "2", "--iters", "20",
                   "--batch", "64", "--eval-every", "10", "--eval-samples", "200", "--theory-samples", "200",
                   "--structure-samples", "64", "--device", "cpu", "--out", out])
    assert status == 0
    return out


def test_cli_explain_prints_the_table_and_writes_json_and_figure(trained_run, tmp_path, capsys):
    """Exact (file contents): ``cotgd explain`` on a trained run exits 0, prints the table (a row
    for the learned model and for each family asked for), writes the JSON with issue 24's keys
    and the figure as a non-empty PNG (its path printed)."""
    capsys.readouterr()
    js, png = tmp_path / "explain.json", tmp_path / "explain.png"
    status = main(["explain", trained_run, "--samples", "600", "--fit-on", "300", "--seed", "1",
                   "--families", "gd,gd++", "--json", str(js), "--figure", str(png)])
    out = capsys.readouterr().out
    assert status == 0
    lines = out.splitlines()
    assert lines[0].startswith(trained_run) and "looped" in lines[0] and "600 prompts" in lines[0]
    assert any(line.startswith("learned ") for line in lines)
    assert any(line.startswith("gd ") for line in lines) and any(line.startswith("gd++ ") for line in lines)
    assert lines[-1] == str(png)
    result = json.loads(js.read_text())
    assert {"median", "mean"} <= set(result["learned"])
    assert [f["name"] for f in result["families"]] == ["gd", "gd++"]
    for f in result["families"]:
        assert {"name", "params", "median", "mean", "deviation"} <= set(f)
    assert result["best"] in ("gd", "gd++") and (result["d"], result["k"], result["seed"]) == (2, 2, 1)
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


@pytest.mark.parametrize("argv, needle", [
    (["--families", "bogus"], "--families"),
    (["--families", "gd,bogus"], "bogus"),
    (["--families", ","], "--families"),
    (["--samples", "0"], "--samples"),
    (["--fit-on", "x"], "--fit-on"),
    (["--seed", "-1"], "--seed"),
])
def test_cli_explain_bad_arguments_exit_2(trained_run, capsys, argv, needle):
    """Exact: bad options of ``cotgd explain`` exit 2 with one line on stderr naming the option."""
    capsys.readouterr()
    assert main(["explain", trained_run, *argv]) == 2
    err = _err_lines(capsys)
    assert len(err) == 1 and err[0].startswith("cotgd: error:") and needle in err[0], err


def test_cli_explain_figure_to_a_directory_exits_2(trained_run, tmp_path, capsys):
    """Exact: --figure naming a directory is refused before any work, one line."""
    capsys.readouterr()
    assert main(["explain", trained_run, "--figure", str(tmp_path)]) == 2
    err = _err_lines(capsys)
    assert len(err) == 1 and "--figure" in err[0]


def test_cli_explain_missing_directory_exits_2(tmp_path, capsys):
    """Exact: a directory that does not exist: exit 2, one line naming it, no traceback."""
    assert main(["explain", str(tmp_path / "nowhere")]) == 2
    captured = capsys.readouterr()
    err = _err_lines_from(captured.err)
    assert len(err) == 1 and "nowhere" in err[0] and "Traceback" not in captured.err
    assert captured.out == ""


def test_cli_explain_run_without_params_is_one_line(trained_run, tmp_path, capsys):
    """Exact: a run directory without params.pt (unfinished) is one line naming params.pt, exit 1
    or 2; a damaged params.pt is a damaged run file, exit 1."""
    unfinished = tmp_path / "unfinished"
    shutil.copytree(trained_run, unfinished)
    os.remove(unfinished / "params.pt")
    capsys.readouterr()
    assert main(["explain", str(unfinished), "--samples", "100"]) in (1, 2)
    captured = capsys.readouterr()
    err = _err_lines_from(captured.err)
    assert len(err) == 1 and "params.pt" in err[0] and "Traceback" not in captured.err
    damaged = tmp_path / "damaged"
    shutil.copytree(trained_run, damaged)
    (damaged / "params.pt").write_bytes(b"not a torch file")
    assert main(["explain", str(damaged), "--samples", "100"]) == 1
    err = _err_lines(capsys)
    assert len(err) == 1 and "params.pt" in err[0]

