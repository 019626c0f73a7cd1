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

Exit status 0 then, 1 otherwise, with one line per mutant.  Two mutants run at a time (``-j``).
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

try:
    import tomllib
except ImportError:                          # Python 3.10
    import tomli as tomllib

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SAMPLE = HERE / "sample.toml"


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


def pytest(copy: Path, tests: list[str]) -> tuple[int, str]:
    env = dict(os.environ, CI="true", PYTHONDONTWRITEBYTECODE="1")
    r = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "--no-header",
                        *tests], cwd=copy, env=env, capture_output=True, text=True, check=False)
    return r.returncode, (r.stdout + r.stderr).strip().splitlines()[-1:] and (r.stdout + r.stderr).strip().splitlines()[-1]


def run_one(m: dict, copy: Path) -> tuple[bool, str]:
    path = copy / m["file"]
    pristine = path.read_text()
    found = pristine.count(m["old"])
    if found != 1:
        return False, f"SOURCE MOVED  {m['name']}: `{m['old'].strip()}` occurs {found} times in {m['file']} (update sample.toml)"
    t0 = time.monotonic()
    try:
        path.write_text(pristine.replace(m["old"], m["new"]))
        rc, last = pytest(copy, m["tests"])
    finally:
        path.write_text(pristine)
    took = f"{time.monotonic() - t0:.0f} s"
    if rc == 1:
        return True, f"killed    {m['name']} ({took})"
    if rc == 0:
        return False, f"SURVIVED  {m['name']}: {' '.join(m['tests'])} pass with `{m['new'].strip()}` ({took})"
    return False, f"ERROR     {m['name']}: pytest exit status {rc}, not a kill: {last}"


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
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="cotgd-sample-") as tmp:
        copies = [Path(tmp) / f"copy{i}" for i in range(max(1, args.j))]
        for c in copies:
            copy_tree(c)
        tests = sorted({t for m in mutants for t in m["tests"]})
        rc, last = pytest(copies[0], tests)
        if rc != 0:
            print(f"mutation sample: the sample's tests fail on the unmutated tree (exit {rc}): {last}")
            return 1
        print(f"mutation sample: {len(tests)} test files pass unmutated ({time.monotonic() - t0:.0f} s)", flush=True)
        free = list(copies)
        results = []

        def job(m):
            c = free.pop()
            try:
                ok, line = run_one(m, c)
            finally:
                free.append(c)
            print("  " + line, flush=True)
            return ok

        with ThreadPoolExecutor(len(copies)) as pool:
            results = list(pool.map(job, mutants))
    killed = sum(results)
    print(f"mutation sample: {killed} of {len(mutants)} mutants killed in {time.monotonic() - t0:.0f} s")
    return 0 if killed == len(mutants) else 1


if __name__ == "__main__":
    sys.exit(main())
