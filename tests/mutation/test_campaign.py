"""The campaign's stamped equivalents (tests/mutation/campaign.py): a listed equivalent is not run
while its function is the one it was stamped on, and is run as soon as that function changes
(mutmut numbers mutants within a function, so an edited function's mutant N may be another
mutation).  Exact checks against mutmut's own generation of a small module."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

pytest.importorskip("mutmut")

spec = importlib.util.spec_from_file_location("campaign", Path(__file__).with_name("campaign.py"))
campaign = importlib.util.module_from_spec(spec)
spec.loader.exec_module(campaign)

SKIP = ["^\\s*raise"]
SOURCE = '''def f(a, b):
    return a + b * 2


def g(x):
    if x > 1:
        return x - 1
    return 0
'''


def generate(root: Path, source: str, monkeypatch) -> dict:
    """mutmut's generation of ``pkg/mod.py`` in ``root``: its meta file (codes and hashes)."""
    (root / "pkg").mkdir(parents=True, exist_ok=True)
    (root / "mutants" / "pkg").mkdir(parents=True, exist_ok=True)
    (root / "pkg" / "mod.py").write_text(source)
    (root / "pyproject.toml").write_text('[tool.mutmut]\nsource_paths = ["pkg"]\n')
    monkeypatch.chdir(root)
    from mutmut.__main__ import create_mutants_for_file   # reads its settings from the working directory
    create_mutants_for_file(Path("pkg/mod.py"), Path("mutants/pkg/mod.py"))
    return json.loads((root / "mutants" / "pkg" / "mod.py.meta").read_text())


@pytest.fixture
def reviewed(tmp_path, monkeypatch):
    """The function hashes of a first generation (the run that found the equivalents)."""
    return generate(tmp_path / "review", SOURCE, monkeypatch)["hash_by_function_name"]


def test_function_of_names_mutmuts_key_only_for_its_source():
    assert campaign.function_of("training.engine.x_step__mutmut_3", "training/engine.py") == "x_step"
    assert campaign.function_of("training.suite.xǁCaseǁ__post_init____mutmut_12", "training/suite.py") \
        == "xǁCaseǁ__post_init__"
    assert campaign.function_of("training.sweep.cell.x_run__mutmut_1", "training/sweep/cell.py") == "x_run"
    assert campaign.function_of("training.engine.x_step__mutmut_3", "training/evaluate.py") is None
    assert campaign.function_of("training.engine_extra.x_step__mutmut_3", "training/engine.py") is None


def test_a_stamped_equivalent_is_not_run_while_its_function_is_unchanged(tmp_path, monkeypatch, reviewed):
    eq = {"pkg.mod.x_g__mutmut_2": (reviewed["x_g"], "a reason"), "pkg.mod.x_f__mutmut_1": (None, "unstamped")}
    dest = tmp_path / "run"
    assert campaign.seed_equivalents(dest, ["pkg/mod.py"], eq) == 1
    codes = generate(dest, SOURCE, monkeypatch)["exit_code_by_key"]
    assert codes["pkg.mod.x_g__mutmut_2"] == 34                        # decided: mutmut will not run it
    assert {m: c for m, c in codes.items() if m != "pkg.mod.x_g__mutmut_2"} == dict.fromkeys(
        [m for m in codes if m != "pkg.mod.x_g__mutmut_2"])            # every other mutant runs
    assert len(codes) == 8


def test_an_edited_function_runs_its_stamped_equivalents_again(tmp_path, monkeypatch, reviewed):
    eq = {"pkg.mod.x_g__mutmut_2": (reviewed["x_g"], "a reason"), "pkg.mod.x_f__mutmut_3": (reviewed["x_f"], "r")}
    dest = tmp_path / "run"
    assert campaign.seed_equivalents(dest, ["pkg/mod.py"], eq) == 2
    codes = generate(dest, SOURCE.replace("x > 1", "x >= 2"), monkeypatch)["exit_code_by_key"]
    assert codes["pkg.mod.x_g__mutmut_2"] is None                     # g changed: run it
    assert codes["pkg.mod.x_f__mutmut_3"] == 34                       # f did not


def test_a_wrong_stamp_or_two_stamps_of_one_function_run_the_mutants(tmp_path, monkeypatch, reviewed):
    eq = {"pkg.mod.x_g__mutmut_2": ("0" * 12, "r"),
          "pkg.mod.x_f__mutmut_1": (reviewed["x_f"], "r"), "pkg.mod.x_f__mutmut_2": ("1" * 12, "r")}
    dest = tmp_path / "run"
    assert campaign.seed_equivalents(dest, ["pkg/mod.py"], eq) == 1    # f's two stamps clash: not seeded
    codes = generate(dest, SOURCE, monkeypatch)["exit_code_by_key"]
    assert all(c is None for c in codes.values())


def test_equivalents_file_reads_both_forms_and_needs_a_reason(tmp_path, monkeypatch):
    f = tmp_path / "equivalent.txt"
    f.write_text("# a comment | with a bar\n"
                 "a.b.x_f__mutmut_1 | 0123456789ab | V.shape[+1]: the same | even with a bar\n"
                 "a.b.x_f__mutmut_2 | device None: the CPU\n\n")
    monkeypatch.setattr(campaign, "EQUIVALENT", f)
    assert campaign.load_equivalents() == {
        "a.b.x_f__mutmut_1": ("0123456789ab", "V.shape[+1]: the same | even with a bar"),
        "a.b.x_f__mutmut_2": (None, "device None: the CPU")}
    f.write_text("a.b.x_f__mutmut_1 | 0123456789ab |  \n")
    with pytest.raises(SystemExit, match="no reason given for a.b.x_f__mutmut_1"):
        campaign.load_equivalents()


def test_stamp_writes_the_survivors_hashes_and_drops_the_killed(tmp_path, monkeypatch, reviewed):
    f = tmp_path / "equivalent.txt"
    f.write_text("# header comment\n"
                 "pkg.mod.x_g__mutmut_2 | survived: stamped\n"
                 "pkg.mod.x_f__mutmut_1 | 0123456789ab | killed now: its stamp goes\n"
                 "pkg.mod.x_f__mutmut_3 | not run in this workdir\n"
                 "other.mod.x_h__mutmut_1 | 0123456789ab | another module: kept as it is\n")
    monkeypatch.setattr(campaign, "EQUIVALENT", f)
    workdir = tmp_path / "work"
    generate(workdir / "m", SOURCE, monkeypatch)
    (workdir / "m" / "latest.json").write_text(json.dumps(
        {"pkg.mod.x_g__mutmut_2": 0, "pkg.mod.x_f__mutmut_1": 1, "pkg.mod.x_f__mutmut_3": None}))
    counts = campaign.stamp_equivalents(workdir, ["m"], {"m": {"source": ["pkg/mod.py"]}}, SKIP)
    assert counts == {"stamped": 1, "kept": 0, "dropped": 1}
    assert f.read_text().splitlines() == [
        "# header comment",
        f"# stamps: {campaign.stamp_context(SKIP)}",
        f"pkg.mod.x_g__mutmut_2 | {reviewed['x_g']} | survived: stamped",
        "pkg.mod.x_f__mutmut_1 | killed now: its stamp goes",
        "pkg.mod.x_f__mutmut_3 | not run in this workdir",
        "other.mod.x_h__mutmut_1 | 0123456789ab | another module: kept as it is"]
    assert campaign.stamps_apply(SKIP)
    assert not campaign.stamps_apply([*SKIP, "help="])        # other skip_lines: other numbering


def test_the_summary_counts_a_seeded_equivalent_as_equivalent_not_run():
    eq = {"m.x_f__mutmut_1": ("0123456789ab", "r"), "m.x_f__mutmut_2": (None, "r")}
    s = campaign.summarise("m", {"m.x_f__mutmut_1": 34, "m.x_f__mutmut_2": 0, "m.x_f__mutmut_3": 1,
                                 "m.x_f__mutmut_4": 0}, eq)
    assert (s["killed"], s["equivalent"], s["equivalent_not_run"], s["survived"]) == (1, 2, 1, 1)
    assert s["survivors"] == ["m.x_f__mutmut_4"] and s["killed_of_non_equivalent"] == 0.5


def test_an_unchecked_mutant_is_not_checked_even_when_listed_equivalent():
    """A failed or interrupted mutmut run leaves codes None: they are counted as not checked, and
    the killed share is over the checked mutants only."""
    eq = {"m.x_f__mutmut_1": (None, "r")}
    s = campaign.summarise("m", {"m.x_f__mutmut_1": None, "m.x_f__mutmut_2": None, "m.x_f__mutmut_3": 1}, eq)
    assert (s["not_checked"], s["equivalent"], s["killed"], s["killed_of_non_equivalent"]) == (2, 0, 1, 1.0)
    assert campaign.summarise("m", {"m.x_f__mutmut_1": None}, eq)["killed_of_non_equivalent"] is None


def test_a_listed_equivalent_no_longer_generated_is_named():
    eq = {"training.structure.x_f__mutmut_9": (None, "r"), "training.structure.x_g__mutmut_1": (None, "r"),
          "training.suite.x_h__mutmut_1": (None, "r")}
    s = campaign.summarise("structure", {"training.structure.x_f__mutmut_1": 1,
                                         "training.structure.x_g__mutmut_1": 0}, eq)
    assert s["equivalent_not_generated"] == ["training.structure.x_f__mutmut_9"]   # not suite's
    assert s["equivalent"] == 1 and "equivalent_not_generated" not in campaign.counts_only(s)
