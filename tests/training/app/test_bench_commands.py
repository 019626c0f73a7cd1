"""``cotgd bench``'s command-line figures (training/app/bench.py, ``bench_commands``):
``help_seconds`` (a subprocess ``cotgd --help``, best of 3) in every bench, ``verify_quick_seconds``
(a subprocess ``cotgd verify --quick``) in the full bench only.  The subprocess runner is
replaced by a recorder except in one real ``cotgd --help``.  No timed assertions."""
import json

import pytest

from training.app import bench


@pytest.fixture
def recorded(monkeypatch):
    calls = []

    def fake(args):
        calls.append(list(args))
        seconds = 20.0 if args[0] == "verify" else 0.5 + 0.1 * len(calls)
        return {"seconds": seconds, "cpu_seconds": 30.0, "exit_status": 0, "last_line": "31/31 checks passed"}

    monkeypatch.setattr(bench, "run_cotgd", fake)
    return calls


def test_quick_bench_times_help_only(recorded):
    figures = bench.bench_commands("cpu", quick=True)
    assert recorded == [["--help"]] * bench.HELP_REPS == [["--help"]] * 3
    assert figures["help_seconds"] == pytest.approx(0.6) and len(figures["help_seconds_samples"]) == 3
    assert "verify_quick_seconds" not in figures
    lines = bench.format_commands(figures)
    assert len(lines) == 1 and "help_seconds" in lines[0] and "best of 3" in lines[0]


def test_full_bench_times_verify_quick_on_the_device(recorded):
    figures = bench.bench_commands("cpu", quick=False)
    assert recorded[-1] == ["verify", "--quick", "--device", "cpu"] and len(recorded) == 4
    assert figures["verify_quick_seconds"] == 20.0 and figures["verify_quick"]["exit_status"] == 0
    json.dumps(figures)
    text = "\n".join(bench.format_commands(figures))
    assert "verify_quick_seconds" in text and "30 s CPU" in text and "31/31 checks passed" in text


def test_a_failing_help_is_an_error(monkeypatch):
    monkeypatch.setattr(bench, "run_cotgd", lambda args: {"seconds": 0.1, "cpu_seconds": None, "exit_status": 1,
                                                          "last_line": ""})
    with pytest.raises(RuntimeError, match="status 1"):
        bench.bench_commands("cpu", quick=True)


def test_run_cotgd_help_for_real():
    r = bench.run_cotgd(["--help"])
    assert r["exit_status"] == 0 and r["seconds"] > 0 and r["cpu_seconds"] > 0
    assert r["last_line"]                                   # the help's last line
