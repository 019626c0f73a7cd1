"""Documentation references: every ``docs/<name>.md section N`` that the code cites must exist.

The scan covers every ``.py`` file under theory/, numerics/, training/, examples/ and tests/
(tracked or not: the directories are walked).  Before matching, each line loses its leading
indentation and ``#`` comment markers and the lines are joined by single spaces, so a reference
that wraps inside a docstring or a comment is still one reference.  Forms followed:

* ``docs/<name>.md`` alone: the file must exist;
* ``docs/<name>.md section N`` and ``docs/<name>.md sections N, M and K`` (commas, "and", ranges
  ``N-M``): the file must exist and have a heading ``## N.`` for each number;
* repository paths ``{theory,numerics,training,tests,examples,docs}/....{py,md,png,toml}``: the
  file must exist.

Also: no ``.py`` file names the theory / architecture notes other than by their docs/ path, and
nothing in the repository names the private source material.  README.md's repository paths must
exist.  Each failure lists every broken reference as ``file:line: reference``.  Pure Python, fast.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCANNED = ("theory", "numerics", "training", "examples", "tests")
PATH_ROOTS = ("theory", "numerics", "training", "tests", "examples", "docs")

_NUMBER = r"\d+(?:\s*[-\u2013]\s*\d+)?"
_SEPARATOR = r"\s*(?:,\s*and\s+|,\s*|\s+and\s+|\s*&\s*)"
DOC_REF = re.compile(r"(?<![\w/.-])docs/(?P<name>[\w.-]+?)\.md(?![\w])"
                     r"(?:,?\s+sections?\s+(?P<numbers>" + _NUMBER + r"(?:" + _SEPARATOR + _NUMBER + r")*))?",
                     re.IGNORECASE)
PATH_REF = re.compile(r"(?<![\w/.-])(?P<path>(?:" + "|".join(PATH_ROOTS) + r")/[\w./-]*?\.(?:py|md|png|toml))(?![\w])")
# A notes file named without its docs/ directory, in any case (a capitalised bare name counts).
BARE_NOTES = re.compile(r"(?<![\w/.-])(?:theory|architecture)\.md(?![\w])", re.IGNORECASE)
PRIVATE = "shared" + "/spec"          # split so that this file does not mention it
HEADING = re.compile(r"^##\s+(\d+)\.\s+\S")


# ---------------------------------------------------------------------------------------- scanning
def normalised(text: str) -> tuple[str, list[int]]:
    """``text`` with every line stripped of indentation and leading ``#`` markers, joined by single
    spaces; and the offset in the joined string at which each line (1-based index - 1) starts."""
    parts, starts, offset = [], [], 0
    for line in text.splitlines():
        body = re.sub(r"^\s*(?:#+\s*)?", "", line).rstrip()
        starts.append(offset)
        parts.append(body)
        offset += len(body) + 1
    return " ".join(parts), starts


def line_of(starts: list[int], position: int) -> int:
    """1-based line number of ``position`` in the joined string."""
    lo, hi = 0, len(starts) - 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if starts[mid] <= position:
            lo = mid
        else:
            hi = mid - 1
    return lo + 1


def section_numbers(spec: str | None) -> list[int]:
    """``"2, 5 and 9"`` -> [2, 5, 9]; ``"3-5"`` -> [3, 4, 5]; None -> []."""
    if not spec:
        return []
    out = []
    for item in re.findall(_NUMBER, spec):
        bounds = [int(x) for x in re.split(r"\s*[-\u2013]\s*", item)]
        out.extend(range(bounds[0], bounds[-1] + 1) if len(bounds) == 2 else bounds)
    return out


def doc_references(text: str):
    """``(line, docs path, [section numbers], matched text)`` for every docs/ reference."""
    joined, starts = normalised(text)
    for m in DOC_REF.finditer(joined):
        yield (line_of(starts, m.start()), f"docs/{m.group('name')}.md", section_numbers(m.group("numbers")),
               m.group(0))


def path_references(text: str):
    """``(line, path)`` for every repository path outside docs/ (those are ``doc_references``)."""
    joined, starts = normalised(text)
    for m in PATH_REF.finditer(joined):
        if not m.group("path").startswith("docs/"):
            yield line_of(starts, m.start()), m.group("path")


def python_sources() -> list[Path]:
    files = []
    for top in SCANNED:
        for root, dirs, names in os.walk(REPO / top):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__" and not d.startswith("."))
            files.extend(Path(root) / name for name in sorted(names) if name.endswith(".py"))
    return files


def _rel(path: Path) -> str:
    return path.relative_to(REPO).as_posix()


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace")


SOURCES = {_rel(p): _read(p) for p in python_sources()}
DOC_REFS = [(src, line, doc, numbers, raw) for src, text in SOURCES.items()
            for line, doc, numbers, raw in doc_references(text)]
PATH_REFS = [(src, line, path) for src, text in SOURCES.items() for line, path in path_references(text)]


def headings(path: Path) -> set[int]:
    """Numbers N of the ``## N. Title`` headings of a markdown file (fenced code skipped)."""
    found, fenced = set(), False
    for line in _read(path).splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced and (m := HEADING.match(line)):
            found.add(int(m.group(1)))
    return found


def _report(what: str, broken: list[str]) -> str:
    return f"{len(broken)} broken {what}:\n  " + "\n  ".join(broken)


# ------------------------------------------------------------------------------------------- tests
def test_scanner_reads_every_reference_form():
    """The parser itself: wrapped lines, comment markers, lists, ranges and plain paths."""
    text = ('"""A (docs/theory.md\n    section 5) and docs/theory.md sections 2, 5 and 9;\n'
            'docs/theory.md sections 3-5, docs/theory.md section 6, Theorem 4.1."""\n'
            '# see docs/theory.md\n#   sections 1 and 7 and ' + 'tests' + '/numerics/test_x.py\n'
            'x = 1  # docs/theory.md')
    refs = [(line, doc, numbers) for line, doc, numbers, _ in doc_references(text)]
    assert refs == [(1, "docs/theory.md", [5]), (2, "docs/theory.md", [2, 5, 9]),
                    (3, "docs/theory.md", [3, 4, 5]), (3, "docs/theory.md", [6]),
                    (4, "docs/theory.md", [1, 7]), (6, "docs/theory.md", [])]
    assert list(path_references(text)) == [(5, "tests" + "/numerics/test_x.py")]
    text = "src/theory/x.py and theory/y.pyc, " + "examples" + "/figures/f.png."
    assert list(path_references(text)) == [(1, "examples" + "/figures/f.png")]
    assert section_numbers("2, 4 and 7") == [2, 4, 7]


def test_the_scan_finds_the_code_references():
    """A guard against a scan that silently matches nothing: the code cites the theory notes
    in well over a hundred places."""
    assert len(SOURCES) > 50
    assert sum(1 for ref in DOC_REFS if ref[2] == "docs/theory.md") >= 100


def test_theory_notes_headings():
    """docs/theory.md numbers its sections 1, 2, ... without gaps or repeats (code cites 1..9)."""
    path = REPO / "docs/theory.md"
    numbers = [int(m.group(1)) for line in _read(path).splitlines() if (m := HEADING.match(line))]
    assert numbers == list(range(1, len(numbers) + 1)) and len(numbers) >= 9, numbers


@pytest.mark.parametrize("doc", sorted({ref[2] for ref in DOC_REFS} | {"docs/theory.md"}))
def test_doc_references_resolve(doc):
    """Every reference to ``doc`` in the code: the file exists and has each cited ``## N.``."""
    path = REPO / doc
    refs = [ref for ref in DOC_REFS if ref[2] == doc]
    if not path.is_file():
        pytest.fail(_report(f"references to the missing {doc}",
                            [f"{src}:{line}: {raw}" for src, line, _, _, raw in refs]))
    present = headings(path)
    broken = [f"{src}:{line}: {raw} (no '## {n}.' in {doc})"
              for src, line, _, numbers, raw in refs for n in numbers if n not in present]
    assert not broken, _report(f"section references to {doc}", broken)


def test_path_references_exist():
    """Every repository path named in the code (outside docs/, tested above) exists."""
    broken = [f"{src}:{line}: {path}" for src, line, path in PATH_REFS if not (REPO / path).exists()]
    assert not broken, _report("path references", broken)


def test_notes_are_named_by_their_docs_path():
    """The theory and architecture notes are named ``docs/<name>.md``, never bare (any case)."""
    broken = []
    for src, text in SOURCES.items():
        joined, starts = normalised(text)
        broken += [f"{src}:{line_of(starts, m.start())}: {m.group(0)}" for m in BARE_NOTES.finditer(joined)]
    assert not broken, _report("bare mentions (write docs/<name>.md)", broken)


def test_private_source_material_is_not_mentioned():
    """The private source the notes were written from is not part of the repository."""
    files = dict(SOURCES)
    for extra in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        if extra.is_file():
            files[_rel(extra)] = _read(extra)
    broken = [f"{name}:{number}" for name, text in files.items()
              for number, line in enumerate(text.splitlines(), 1) if PRIVATE in line]
    assert not broken, _report(f"mentions of {PRIVATE}", broken)


def test_readme_references_exist():
    """README.md's repository paths and docs/ references resolve, sections included."""
    text = _read(REPO / "README.md")
    broken = [f"README.md:{line}: {path}" for line, path in path_references(text) if not (REPO / path).exists()]
    for line, doc, numbers, raw in doc_references(text):
        if not (REPO / doc).is_file():
            broken.append(f"README.md:{line}: {raw} (missing file)")
            continue
        present = headings(REPO / doc)
        broken += [f"README.md:{line}: {raw} (no '## {n}.')" for n in numbers if n not in present]
    assert not broken, _report("README.md references", broken)
