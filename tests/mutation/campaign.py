"""The mutation-testing campaign of the training layer (mutmut, one module at a time).

    python tests/mutation/campaign.py                      # every module of map.toml, in its order
    python tests/mutation/campaign.py suite evaluate       # some modules
    python tests/mutation/campaign.py --ref HEAD           # a committed tree instead of the work tree
    python tests/mutation/campaign.py --report-only        # re-read the last results
    python tests/mutation/campaign.py --resume suite       # go on with an interrupted module

For each module of ``tests/mutation/map.toml`` it copies the repository (the work tree's tracked
and untracked-but-not-ignored files, or ``git archive REF``) to ``WORKDIR/<module>`` (default
``$TMPDIR/cotgd-mutation``, outside the repository, so no mutant ever reaches the normal test
run), writes mutmut's settings for that module into the copy's pyproject.toml (the module's
files to mutate, its tests from the map, the skipped message lines) and runs ``nice -n 19
mutmut run --max-children N`` there with CI=true (derandomized hypothesis, reduced slow tests).
Then it counts per module: generated, killed, equivalent (listed in
``tests/mutation/equivalent.txt`` with a one-line reason), survived, and writes each surviving
mutant's diff to ``WORKDIR/<module>/survivors.txt`` and all counts to ``WORKDIR/report.json``.

``--after`` re-runs a finished module's surviving mutants only (those of the last ``--after``
when there was one), against the tests of the work tree now (test files new since the module's
run, the ``*_guards.py`` files and the ``*_helpers.py`` are copied into the module's copy; its
other tests stay as they were, matching the source it mutated), with mutmut's test links
collected afresh: the counts before (saved as
``WORKDIR/<module>/before.json``) and after.  A mutant killed before stays killed (tests are
only added).  So a campaign is: ``campaign.py --ref BASE`` (before), add tests, ``campaign.py
--after`` (after).

Exit status 0 when every module's campaign ran; the counts are the report, not a gate (the gate
in CI is ``tests/mutation/sample.py``).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

try:
    import tomllib
except ImportError:                          # Python 3.10
    import tomli as tomllib


HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
MAP = HERE / "map.toml"
EQUIVALENT = HERE / "equivalent.txt"
STAMP = re.compile(r"^[0-9a-f]{12}$")
# mutmut's exit codes -> status (mutmut.stats.status_by_exit_code)
STATUS = {1: "killed", 3: "killed", 0: "survived", 5: "no tests", 33: "no tests", 34: "skipped",
          36: "timeout", 24: "timeout", -24: "timeout", 152: "timeout", 255: "timeout",
          37: "caught by type check", None: "not checked"}


def load_map() -> dict:
    return tomllib.loads(MAP.read_text())


def load_equivalents() -> dict[str, tuple[str | None, str]]:
    """``name | reason`` or ``name | stamp | reason`` per line -> {name: (stamp, reason)}; '#' starts a
    comment.  A stamp is mutmut's hash of the mutant's function when the mutant last ran and
    survived (``--stamp``)."""
    out = {}
    for line in EQUIVALENT.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, _, rest = (part.strip() for part in line.partition("|"))
        stamp, bar, reason = (part.strip() for part in rest.partition("|"))
        if not (bar and STAMP.match(stamp)):
            stamp, reason = None, rest
        if not reason:
            raise SystemExit(f"{EQUIVALENT.name}: no reason given for {name}")
        out[name] = (stamp, reason)
    return out


def stamp_context(skip_lines: list[str]) -> str:
    """What a stamp also depends on: mutmut's version (its operators) and the map's skip_lines (which
    lines of a function are mutated); mutants are numbered within their function."""
    from importlib.metadata import version
    skip = hashlib.sha256(json.dumps(skip_lines).encode()).hexdigest()[:12]
    return f"mutmut {version('mutmut')}, skip_lines {skip}"


def stamps_apply(skip_lines: list[str]) -> bool:
    """Whether equivalent.txt's stamps were made under this mutmut and these skip_lines."""
    header = re.search(r"^# stamps: (.*)$", EQUIVALENT.read_text(), re.M)
    return bool(header) and header.group(1).strip() == stamp_context(skip_lines)


def function_of(mutant: str, source: str) -> str | None:
    """mutmut's function key of ``mutant`` (``x_f``, ``xǁClassǁmethod``) if it mutates ``source``."""
    prefix = source[:-len(".py")].replace("/", ".") + "."
    if not mutant.startswith(prefix) or "__mutmut_" not in mutant:
        return None
    return mutant[len(prefix):].partition("__mutmut_")[0]


def seed_equivalents(dest: Path, sources: list[str], equivalents: dict) -> int:
    """Mark the stamped equivalents of ``sources`` as already decided (exit code 34, mutmut's
    "skipped") in the copy's mutmut files, with their functions' stamped hashes: mutmut keeps a
    decided code only while its function's hash is unchanged, so a mutant whose function has been
    edited since (and may now be another mutation under the same name) is run after all.  The
    number seeded."""
    seeded = 0
    for src in sources:
        codes, hashes, clash = {}, {}, set()
        for mutant, (stamp, _) in equivalents.items():
            func = function_of(mutant, src)
            if func is None or stamp is None:
                continue
            if hashes.setdefault(func, stamp) != stamp:
                clash.add(func)                  # stamped at two versions of the function: run them
            codes[mutant] = 34
        codes = {m: c for m, c in codes.items() if function_of(m, src) not in clash}
        hashes = {f: h for f, h in hashes.items() if f not in clash}
        if not codes:
            continue
        meta = dest / "mutants" / (src + ".meta")
        meta.parent.mkdir(parents=True, exist_ok=True)
        meta.write_text(json.dumps({"exit_code_by_key": codes, "hash_by_function_name": hashes,
                                    "type_check_error_by_key": {}, "durations_by_key": {},
                                    "estimated_durations_by_key": {}}))
        seeded += len(codes)
    return seeded


def copy_tree(dest: Path, ref: str | None) -> None:
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    if ref:
        with tempfile.TemporaryFile() as tar:
            subprocess.run(["git", "-C", str(ROOT), "archive", ref], stdout=tar, check=True)
            tar.seek(0)
            with tarfile.open(fileobj=tar) as t:
                t.extractall(dest, filter="data")
        return
    files = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-co", "--exclude-standard", "-z"],
                           capture_output=True, check=True).stdout.decode().split("\0")
    for f in filter(None, files):
        src = ROOT / f
        if src.is_file():
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / f)


def toml_list(items) -> str:
    return "[" + ", ".join(json.dumps(str(i)) for i in items) + "]"


def drop_table(text: str, name: str) -> str:
    """``text`` (TOML) without its ``[name]`` table: from that header to the next table header."""
    out, skipping = [], False
    for line in text.splitlines(keepends=True):
        header = re.match(r"^\[([A-Za-z0-9_.\-]+)\]\s*$", line)
        if header:
            skipping = header.group(1) == name
        if not skipping:
            out.append(line)
    return "".join(out)


def configure(dest: Path, module: dict, skip_lines: list[str]) -> list[str]:
    """Write [tool.mutmut] for one module; returns the tests that exist in the copy."""
    tests = [t for t in module["tests"] if (dest / t.split("::")[0]).exists()]
    missing = sorted(set(module["tests"]) - set(tests))
    for t in missing:
        print(f"  (not in this tree, left out: {t})", flush=True)
    py = dest / "pyproject.toml"
    text = drop_table(py.read_text(), "tool.mutmut")
    text += (
        "\n[tool.mutmut]\n"
        'source_paths = ["training", "theory", "numerics"]\n'
        f"only_mutate = {toml_list(module['source'])}\n"
        f"pytest_add_cli_args_test_selection = {toml_list(tests)}\n"
        # no:unraisableexception: that plugin's gc.collect at the end of each forked session scans
        # the whole warmed-up heap (torch, sympy), ~0.2 CPU-s a mutant; it only ever warns
        'pytest_add_cli_args = ["-p", "no:cacheprovider", "-p", "no:unraisableexception"]\n'
        f"do_not_mutate_patterns = {toml_list(skip_lines)}\n"
        'process_isolation = "forkserver"\n'
        'also_copy = ["examples"]\n'       # tests read the example grids and covariances
    )
    py.write_text(text)
    return tests


def results(dest: Path, sources: list[str]) -> dict[str, int | None]:
    out: dict[str, int | None] = {}
    for src in sources:
        meta = dest / "mutants" / (src + ".meta")
        if meta.exists():
            out.update(json.loads(meta.read_text())["exit_code_by_key"])
    return out


def diffs(dest: Path, names: list[str]) -> str:
    """Each mutant's diff, by mutmut's own differ, run inside the copy."""
    if not names:
        return ""
    code = ("import sys\nfrom mutmut.__main__ import find_mutant\n"
            "from mutmut.mutation.diff_apply import get_diff_for_mutant\n"
            "for n in sys.argv[1:]:\n"
            "    print('#', n); print(get_diff_for_mutant(n, path=find_mutant(n).path))\n")
    r = subprocess.run([sys.executable, "-c", code, *names], cwd=dest, capture_output=True, text=True, check=False)
    return r.stdout + r.stderr


def summarise(name: str, codes: dict, equivalents: dict) -> dict:
    counts = {"generated": len(codes), "killed": 0, "equivalent": 0, "equivalent_not_run": 0, "survived": 0,
              "other": 0, "timeout": 0}
    survivors, stale = [], []
    for mutant, code in sorted(codes.items()):
        status = STATUS.get(code, "suspicious")
        if status in ("killed", "timeout", "caught by type check"):
            counts["killed"] += 1                      # a timeout counts as caught, as in mutmut
            counts["timeout"] += status == "timeout"
            if mutant in equivalents:
                stale.append(mutant)
        elif code is None:                             # not run (an interrupted or failed mutmut run)
            counts["not_checked"] = counts.get("not_checked", 0) + 1
        elif mutant in equivalents:
            counts["equivalent"] += 1
            counts["equivalent_not_run"] += code == 34          # stamped, seeded, not run (--stamp)
        elif status == "survived" or status == "no tests":
            counts["survived"] += 1
            survivors.append(mutant)
        else:
            counts["other"] += 1
            survivors.append(mutant)
    live = counts["generated"] - counts["equivalent"] - counts.get("not_checked", 0)
    counts["killed_of_non_equivalent"] = round(counts["killed"] / live, 4) if live else None
    counts["survivors"] = survivors
    counts["equivalent_but_killed"] = stale
    # listed for this module's files but no longer generated (its function was edited): a stale line
    modules = {m.rsplit(".", 1)[0] + "." for m in codes if "." in m}
    counts["equivalent_not_generated"] = sorted(m for m in equivalents if m not in codes
                                                and any(m.startswith(p) for p in modules))
    return counts


def counts_only(summary: dict) -> dict:
    """A module's summary without its lists of mutant names (the "before" of a report)."""
    return {k: v for k, v in summary.items()
            if k not in ("survivors", "equivalent_but_killed", "equivalent_not_generated")}


def rerun_survivors(dest: Path, module: dict, skip_lines, args) -> dict:
    """``--after``: the before-survivors against the work tree's tests now; the merged codes."""
    before_path = dest / "before.json"
    if not before_path.exists():
        before_path.write_text(json.dumps(results(dest, module["source"]), indent=0))
    latest_path = dest / "latest.json"                   # the merged codes of an earlier --after
    before = json.loads((latest_path if latest_path.exists() else before_path).read_text())
    survivors = [m for m, code in before.items()             # timeouts again too: a busy machine makes them
                 if code is not None and STATUS.get(code, "suspicious") not in ("killed", "caught by type check",
                                                                                 "skipped")]
    # the tests added since (new files, the guards, which grow, and the test helpers): the other tests stay as they
    # were at its run, which match its source (the work tree's may test a newer one)
    for src in sorted((ROOT / "tests").rglob("*")):
        rel = src.relative_to(ROOT)
        if not src.is_file() or "__pycache__" in rel.parts:
            continue
        for sub in (dest, dest / "mutants"):
            if not (sub / rel).exists() or src.name.endswith(("_guards.py", "_helpers.py")):
                (sub / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, sub / rel)
    configure(dest, module, skip_lines)
    shutil.copy2(dest / "pyproject.toml", dest / "mutants" / "pyproject.toml")
    # which tests call which function, collected afresh: mutmut would otherwise re-link only new test
    # names, and a changed test keeps its old links
    (dest / "mutants" / "mutmut-stats.json").unlink(missing_ok=True)
    print(f"   re-running {len(survivors)} survivors with the current tests", flush=True)
    if survivors:
        env = dict(os.environ, CI="true", PYTHONDONTWRITEBYTECODE="1")
        with open(dest / "mutmut-after.log", "w") as log:
            subprocess.run(["nice", "-n", str(args.nice), "mutmut", "run", "--max-children", str(args.children),
                            *survivors], cwd=dest, env=env, stdout=log, stderr=subprocess.STDOUT, check=False)
    now = results(dest, module["source"])
    # a survivor mutmut did not get to again keeps its earlier code (it is not counted as killed)
    merged = {m: (now[m] if m in survivors and now.get(m) is not None else code) for m, code in before.items()}
    latest_path.write_text(json.dumps(merged, indent=0))
    return merged


def run_module(name: str, module: dict, skip_lines, args, equivalents) -> dict:
    dest = args.workdir / name
    t0 = time.monotonic()
    if args.after:
        before = summarise(name, json.loads((dest / "before.json").read_text()), equivalents) \
            if (dest / "before.json").exists() else summarise(name, results(dest, module["source"]), equivalents)
        codes = rerun_survivors(dest, module, skip_lines, args)
        summary = summarise(name, codes, equivalents)
        summary["before"] = counts_only(before)
        summary["seconds"] = round(time.monotonic() - t0, 1)
        (dest / "survivors.txt").write_text(diffs(dest, summary["survivors"]))
        print(f"   {name} after: {summary['generated']} generated, {summary['killed']} killed, "
              f"{summary['equivalent']} equivalent, {summary['survived']} survived, {summary['other']} other "
              f"({summary['killed_of_non_equivalent']} of non-equivalent killed; before "
              f"{before['killed_of_non_equivalent']}) in {summary['seconds']} s", flush=True)
        return summary
    rc = 0
    if not args.report_only:
        if args.resume and (dest / "mutants").exists():
            print(f"== {name}: resuming in {dest} (mutants not yet checked)", flush=True)
        else:
            print(f"== {name}: copying the tree to {dest}", flush=True)
            copy_tree(dest, args.ref)
            tests = configure(dest, module, skip_lines)
            print(f"   mutating {', '.join(module['source'])} against {len(tests)} test selections", flush=True)
            if args.run_equivalents:
                print("   the listed equivalents run too (--run-equivalents)", flush=True)
            elif stamps_apply(skip_lines):
                seeded = seed_equivalents(dest, module["source"], equivalents)
                print(f"   {seeded} stamped equivalents not run while their functions are unchanged", flush=True)
            elif any(stamp for stamp, _ in equivalents.values()):
                print(f"   equivalent.txt's stamps are not of {stamp_context(skip_lines)}: every mutant runs",
                      flush=True)
        env = dict(os.environ, CI="true", PYTHONDONTWRITEBYTECODE="1")
        with open(dest / "mutmut.log", "a" if args.resume else "w") as log:
            rc = subprocess.run(["nice", "-n", str(args.nice), "mutmut", "run", "--max-children",
                                 str(args.children)], cwd=dest, env=env, stdout=log,
                                stderr=subprocess.STDOUT, check=False).returncode
        if rc != 0:
            print(f"   mutmut exited {rc}; see {dest / 'mutmut.log'}", flush=True)
    codes = results(dest, module["source"])
    if args.report_only and (dest / "latest.json").exists():
        # after --after: mutmut's own files hold the re-run survivors' codes only, latest.json all
        codes = json.loads((dest / "latest.json").read_text())
    if not args.report_only or not (dest / "before.json").exists():
        (dest / "before.json").write_text(json.dumps(codes, indent=0))
    summary = summarise(name, codes, equivalents)
    if args.report_only and (dest / "before.json").exists():
        before = summarise(name, json.loads((dest / "before.json").read_text()), equivalents)
        summary["before"] = counts_only(before)
    summary["seconds"] = round(time.monotonic() - t0, 1) if not args.report_only else None
    if rc != 0:
        summary["mutmut_exit"] = rc                    # its counts are of what ran before it stopped
    (dest / "survivors.txt").write_text(diffs(dest, summary["survivors"]))
    print(f"   {name}: {summary['generated']} generated, {summary['killed']} killed, "
          f"{summary['equivalent']} equivalent, {summary['survived']} survived, {summary['other']} other "
          f"({summary['killed_of_non_equivalent']} of non-equivalent killed; {summary['timeout']} of the kills timeouts)"
          + (f" in {summary['seconds']} s" if summary["seconds"] is not None else ""), flush=True)
    return summary


def stamp_equivalents(workdir: Path, names: list[str], mods: dict, skip_lines: list[str]) -> dict[str, int]:
    """``--stamp``: give each listed equivalent that ran and survived in WORKDIR's last results the
    hash of its function there; drop the stamp of one that was killed or left unchecked.  Rewrites
    equivalent.txt (order, reasons and comments kept) with the stamps' context.  The counts."""
    equivalents = load_equivalents()
    stamps = {m: stamp for m, (stamp, _) in equivalents.items()}
    counts = {"stamped": 0, "kept": 0, "dropped": 0}
    for n in names:
        dest = workdir / n
        latest = dest / "latest.json"
        codes = json.loads(latest.read_text()) if latest.exists() else results(dest, mods[n]["source"])
        for src in mods[n]["source"]:
            meta = dest / "mutants" / (src + ".meta")
            hashes = json.loads(meta.read_text()).get("hash_by_function_name", {}) if meta.exists() else {}
            for mutant in equivalents:
                func = function_of(mutant, src)
                if func is None or mutant not in codes:
                    continue
                if codes[mutant] == 0 and func in hashes:
                    stamps[mutant] = hashes[func]
                    counts["stamped"] += 1
                elif codes[mutant] == 34 and stamps[mutant] == hashes.get(func):
                    counts["kept"] += 1
                else:
                    counts["dropped"] += stamps[mutant] is not None
                    stamps[mutant] = None
    lines, header_done = [], False
    for line in EQUIVALENT.read_text().splitlines():
        if line.startswith("# stamps: "):
            continue
        body = line.strip()
        if body and not body.startswith("#"):
            if not header_done:
                lines.append(f"# stamps: {stamp_context(skip_lines)}")
                header_done = True
            name = body.partition("|")[0].strip()
            reason = equivalents[name][1]
            line = f"{name} | {stamps[name]} | {reason}" if stamps[name] else f"{name} | {reason}"
        lines.append(line)
    tmp = EQUIVALENT.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, EQUIVALENT)
    return counts


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("modules", nargs="*", help="modules of map.toml (default: all, in its order)")
    p.add_argument("--ref", help="mutate `git archive REF` instead of the work tree")
    p.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "cotgd-mutation")
    p.add_argument("--children", type=int, default=2, help="parallel mutant runs (default 2)")
    p.add_argument("--nice", type=int, default=19)
    p.add_argument("--report-only", action="store_true", help="re-count the results in WORKDIR")
    p.add_argument("--resume", action="store_true",
                   help="go on with an interrupted module in WORKDIR (its copy and settings as they are)")
    p.add_argument("--after", action="store_true",
                   help="re-run each module's survivors against the work tree's tests now")
    p.add_argument("--run-equivalents", action="store_true",
                   help="run the stamped equivalents too (by default they are not run while their functions "
                        "are unchanged)")
    p.add_argument("--stamp", action="store_true",
                   help="stamp the listed equivalents that survived in WORKDIR's last results (rewrites "
                        "equivalent.txt)")
    args = p.parse_args(argv)
    spec = load_map()
    mods = spec["modules"]
    names = args.modules or list(mods)
    unknown = [n for n in names if n not in mods]
    if unknown:
        p.error(f"unknown modules {unknown}; map.toml has {list(mods)}")
    if args.stamp:
        counts = stamp_equivalents(args.workdir, [n for n in names if (args.workdir / n).exists()], mods,
                                   spec.get("skip_lines", []))
        print(f"{EQUIVALENT.name}: {counts['stamped']} stamped, {counts['kept']} kept (not run, function "
              f"unchanged), {counts['dropped']} stamps dropped")
        return 0
    equivalents = load_equivalents()
    args.workdir.mkdir(parents=True, exist_ok=True)
    report_path = args.workdir / "report.json"
    t0 = time.monotonic()
    for n in names:
        summary = run_module(n, mods[n], spec.get("skip_lines", []), args, equivalents)
        # campaigns of other modules may run at the same time: re-read, then write this module's entry
        report = json.loads(report_path.read_text()) if report_path.exists() else {}
        report[n] = summary
        tmp = report_path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(report, indent=1))
        os.replace(tmp, report_path)
    print(f"campaign: {round(time.monotonic() - t0)} s; report {report_path}")
    print("| module | generated | not checked | killed | equivalent | survived | killed of non-equivalent (checked) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for n, s in report.items():
        print(f"| {n} | {s['generated']} | {s.get('not_checked', 0)} | {s['killed']} | {s['equivalent']} "
              f"| {s['survived'] + s['other']} | {s['killed_of_non_equivalent']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
