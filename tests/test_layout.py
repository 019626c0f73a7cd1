"""The house rules of the layout (docs/architecture.md), checked on the source text:

* the training library never imports its applications (``training/app``): an import of
  ``training.app`` or a relative ``.app`` / ``..app`` in a library module fails;
* ``theory`` imports neither numpy nor torch, ``numerics`` not torch (module level or inside
  functions).
"""
from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def imported_modules(path: pathlib.Path, package: str | None = None) -> list[tuple[int, str]]:
    """``(line, absolute module name)`` of every import in the file, relative ones resolved
    against ``package`` (default: the file's own package in this repository)."""
    if package is None:
        package = ".".join(path.relative_to(ROOT).parts[:-1])
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module
            out.append((node.lineno, name))
            out += [(node.lineno, f"{name}.{alias.name}") for alias in node.names]
    return out


def files(folder: str, exclude: str | None = None) -> list[pathlib.Path]:
    return sorted(p for p in (ROOT / folder).rglob("*.py") if exclude is None or exclude not in p.parts)


@pytest.mark.parametrize("path", files("training", exclude="app"), ids=lambda p: str(p.relative_to(ROOT)))
def test_the_library_never_imports_the_applications(path):
    bad = [(line, name) for line, name in imported_modules(path) if name == "training.app" or name.startswith("training.app.")]
    assert not bad, f"{path.relative_to(ROOT)} imports the applications: {bad}"


@pytest.mark.parametrize("folder, forbidden", [("theory", ("numpy", "torch", "scipy")), ("numerics", ("torch",))])
def test_theory_and_numerics_stay_light(folder, forbidden):
    bad = [(str(p.relative_to(ROOT)), line, name) for p in files(folder) for line, name in imported_modules(p)
           if name.split(".")[0] in forbidden]
    assert not bad, bad


@pytest.mark.parametrize("source, package", [("from .app.cli import console\n", "training"),
                                             ("from ..app import cli\n", "training.sweep"),
                                             ("import training.app.verify\n", "training")])
def test_the_rule_sees_a_planted_import(tmp_path, source, package):
    """The checker itself: an import of the applications from a library module is found."""
    planted = tmp_path / "planted.py"
    planted.write_text(source)
    assert any(name.startswith("training.app") for _, name in imported_modules(planted, package))
