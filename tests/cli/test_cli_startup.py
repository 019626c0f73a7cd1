"""``cotgd --help`` and ``cotgd CMD --help`` start quickly (issue 23): the parser is built from the
config's metadata, so no heavy package is imported.  Checked with ``python -X importtime`` in a
fresh interpreter (the imported modules, not the time: timings do not belong in tests)."""
import subprocess
import sys

import pytest

HEAVY = ("torch", "sympy", "scipy", "dask", "pandas", "matplotlib", "numpy", "numerics", "theory")

COMMANDS = [[], ["verify"], ["train"], ["evaluate"], ["reproduce"], ["dynamics"], ["selftest"], ["sweep"],
            ["sweep", "run"], ["sweep", "plot"], ["bench"]]


def imported_modules(stderr: str) -> set:
    """The module names of ``-X importtime``'s lines ``import time: self | cumulative | name``."""
    names = set()
    for line in stderr.splitlines():
        if line.startswith("import time:") and line.count("|") == 2:
            name = line.rsplit("|", 1)[1].strip()
            if name != "package":                     # the header line
                names.add(name)
    return names


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "cotgd")
def test_help_imports_no_heavy_package(command):
    code = ("import sys; sys.argv = ['cotgd', *sys.argv[1:]]; "
            "from training.app.cli import console; console()")
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", code, *command, "--help"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "usage: cotgd" in proc.stdout
    modules = imported_modules(proc.stderr)
    assert "training.app.cli" in modules and "training.config" in modules
    heavy = sorted(m for m in modules if m.split(".")[0] in HEAVY)
    assert not heavy, heavy
