"""CI's sample of the mutation campaign: a dozen planted bugs in the numbers users read, each of
which its tests must catch.

    python tests/mutation/sample.py            # every mutant of sample.toml (CI: .ci/run)
    python tests/mutation/sample.py --list     # what they are

Each mutant of ``tests/mutation/sample.toml`` replaces one exact piece of source (``old``, which
must occur exactly once in ``file``) by ``new`` in a copy of the repository (outside it), and
runs its ``tests`` there with CI=true.  The sample passes only when

* the tests of every mutant pass on the unmutated copy (so a kill is not a test that fails anyway),
* every ``old`` is found exactly once (source that moved fails loudly: update the sample), and
* every mutant makes its tests fail (pytest exit status 1; a collection or usage error, exit
  status 2-5, is not a kill).

Exit status 0 then, 1 otherwise, with one line per mutant.  Two mutants run at a time (``-j``),
each in a child forked from this process once it has imported the heavy libraries (torch, numpy,
scipy, sympy, pytest), so a mutant costs its tests, not an interpreter start; the project's own
packages are imported in the child, from the mutated copy.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

try:
    import tomllib
except ImportError:                          # Python 3.10
    import tomli as tomllib

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SAMPLE = HERE / "sample.toml"
OWN = ("theory", "numerics", "training")     # imported only in the children, from the copy


def load() -> list[dict]:
    mutants = tomllib.loads(SAMPLE.read_text())["mutant"]
    for m in mutants:
        missing = {"name", "file", "old", "new", "tests"} - set(m)
        if missing:
            raise SystemExit(f"sample.toml: mutant {m.get('name', '?')!r} lacks {sorted(missing)}")
    return mutants


def copy_tree(dest: Path) -> None:
    files = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-co", "--exclude-standard", "-z"],
                           capture_output=True, check=True).stdout.decode().split("\0")
    for f in filter(None, files):
        src = ROOT / f
        if src.is_file() and not f.startswith(("examples/figures/", "docs/")):
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / f)


def fork_pytest(copy: Path, tests: list[str], log: Path) -> int:
    """Run pytest on ``tests`` in ``copy`` in a forked child (output to ``log``); its pid."""
    pid = os.fork()
    if pid:
        return pid
    rc = 99
    try:
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.chdir(copy)
        os.environ.update(CI="true", PYTHONDONTWRITEBYTECODE="1")
        sys.dont_write_bytecode = True           # no .pyc of a mutant outlives it in the copy
        sys.path.insert(0, str(copy))
        import pytest
        rc = int(pytest.main(["-x", "-q", "-p", "no:cacheprovider", "--no-header", *tests]))
    except BaseException as exc:                 # noqa: BLE001 - the child reports and exits, whatever it was
        print(f"sample child: {type(exc).__name__}: {exc}", flush=True)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(rc)


def last_line(log: Path) -> str:
    lines = log.read_text(errors="replace").strip().splitlines()
    return lines[-1] if lines else "(no output)"


def verdict(m: dict, rc: int, took: float, log: Path) -> tuple[bool, str]:
    if rc == 1:
        return True, f"killed    {m['name']} ({took:.0f} s)"
    if rc == 0:
        return False, f"SURVIVED  {m['name']}: {' '.join(m['tests'])} pass with `{m['new'].strip()}` ({took:.0f} s)"
    return False, f"ERROR     {m['name']}: pytest exit status {rc}, not a kill: {last_line(log)}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--list", action="store_true")
    p.add_argument("-j", type=int, default=2, help="mutants at a time (default 2)")
    args = p.parse_args(argv)
    mutants = load()
    if args.list:
        for m in mutants:
            print(f"{m['name']}: {m['file']}: `{m['old'].strip()}` -> `{m['new'].strip()}`  [{' '.join(m['tests'])}]")
        return 0
    leaked = [name for name in OWN if name in sys.modules]
    if leaked:
        raise SystemExit(f"mutation sample: {leaked} imported before the fork; the children would not read the copy")
    t0 = time.monotonic()
    for heavy in ("numpy", "scipy", "sympy", "torch", "pytest", "hypothesis"):   # once here, for every child
        __import__(heavy)
    with tempfile.TemporaryDirectory(prefix="cotgd-sample-") as tmp:
        copies = [Path(tmp) / f"copy{i}" for i in range(max(1, args.j))]
        for c in copies:
            copy_tree(c)
        tests = sorted({t for m in mutants for t in m["tests"]})
        log = Path(tmp) / "clean.log"
        _, status = os.waitpid(fork_pytest(copies[0], tests, log), 0)
        rc = os.waitstatus_to_exitcode(status)
        if rc != 0:
            print(f"mutation sample: the sample's tests fail on the unmutated tree (exit {rc}): {last_line(log)}")
            return 1
        print(f"mutation sample: {len(tests)} test selections pass unmutated ({time.monotonic() - t0:.0f} s)",
              flush=True)
        pending, free, running, results = list(mutants), list(copies), {}, []
        while pending or running:
            while pending and free:
                m, copy = pending.pop(0), free.pop()
                path = copy / m["file"]
                pristine = path.read_text()
                found = pristine.count(m["old"])
                if found != 1:
                    results.append(False)
                    print(f"  SOURCE MOVED  {m['name']}: `{m['old'].strip()}` occurs {found} times in {m['file']} "
                          f"(update sample.toml)", flush=True)
                    free.append(copy)
                    continue
                path.write_text(pristine.replace(m["old"], m["new"]))
                log = Path(tmp) / f"{len(results) + len(running)}.log"
                pid = fork_pytest(copy, m["tests"], log)
                running[pid] = (m, copy, path, pristine, time.monotonic(), log)
            if running:
                pid, status = os.wait()
                m, copy, path, pristine, start, log = running.pop(pid)
                path.write_text(pristine)
                free.append(copy)
                ok, line = verdict(m, os.waitstatus_to_exitcode(status), time.monotonic() - start, log)
                results.append(ok)
                print("  " + line, flush=True)
    killed = sum(results)
    print(f"mutation sample: {killed} of {len(mutants)} mutants killed in {time.monotonic() - t0:.0f} s")
    return 0 if killed == len(mutants) else 1


if __name__ == "__main__":
    sys.exit(main())
