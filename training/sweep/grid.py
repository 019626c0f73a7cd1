"""The grid of a sweep: a grid file (TOML) read into a ``Grid`` and expanded into its ``Cell``s,
each a validated ``TrainConfig`` with a stable identity and directory name.

A grid file names ``TrainConfig`` fields::

    name = "phase"          # optional: the sweep's name (default: the file's stem)
    train = true            # optional: false computes the theory's values only
    retries = 2             # optional: attempts after a lost worker (default RETRIES)

    [grid]                  # each field -> a list of values; the cells are their Cartesian product
    n = [5, 10, 20]
    k = [1, 2, 4, 8]
    mode = ["cot", "nocot"]

    [fixed]                 # scalar fields shared by every cell
    d = 5
    iters = 2000

    [[cells]]               # optional explicit cells (fields over [fixed]), after the product
    n = 40
    k = 16

``sigma`` (the covariance of x) takes a d x d matrix or a number c, meaning ``c I`` in the cell's
dimension (1: the identity, the default); ``ood_sigmas`` a table ``{name = c or matrix}``.
``out`` and ``progress`` belong to the sweep (``SWEEP_OWNED``).  A cell's ``checkpoint_every``
defaults to its ``eval_every``, its ``prefetch`` to False (``CELL_DEFAULTS``).

A grid point is a ``Cell``; a cell is identified by the configuration that determines its result
for its mode (``result_config``: its config with the fields its mode does not read, the
``MODE_NEUTRAL_FIELDS``, at ``TrainConfig``'s defaults; ``cell_id``: a hash of the fields of that
which differ from the defaults, aside from ``out``, ``progress`` and the ``NEUTRAL_FIELDS`` that do
not change its numbers; ``same_config`` compares whole result configs before anything is reused),
and named by it (``cell_name``: its run directory under the sweep's).  Grid points of one identity
share one run (a no-CoT model is trained once for every k of the grid) and each keeps its row; a
rerun with an edited grid reuses the identical cells and never mixes different ones.  Bad input is
one ``ValueError`` naming the table and the field.
"""
from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import os
from dataclasses import dataclass, field

from ..config import TrainConfig, config_fields, covariance, identity_scale, parse_field
from ..errors import one_line

#: Attempts after the first for a cell whose worker died (``retries`` in the grid, ``--retries``).
RETRIES = 2
#: Grid-file keys outside the tables.
TOP_KEYS = ("name", "train", "retries", "grid", "fixed", "cells")
#: Fields the sweep sets itself: the cell's run directory and its (absent) progress bar.
SWEEP_OWNED = ("out", "progress")
#: Fields that do not change a run's numbers (the engine's runs are bitwise the same either
#: way): not part of a cell's identity, so a rerun that changes them reuses the cell.  A cell is
#: one model, which ``fused_models`` (a choice for runs of several) leaves alone.
NEUTRAL_FIELDS = ("prefetch", "checkpoint_every", "fused_models")
#: Per mode, the fields its training, evaluation and theory never read: a no-CoT model makes one
#: pass on Z_0 and its theory is Theorem 3.1's optimum, so neither the CoT length k nor the GD
#: step eta of the CoT targets changes a number of it (tests/training/test_sweep_identity.py
#: checks this bitwise).  Cells that differ only in these fields are one cell.
MODE_NEUTRAL_FIELDS = {"nocot": ("k", "eta")}
#: Defaults of the sweep's cells where they differ from ``TrainConfig``'s: cells run one per
#: core, so the background batch thread of ``prefetch`` would only compete with the other
#: workers for CPU time.
CELL_DEFAULTS = {"prefetch": False}
#: Fields whose single value is a list (a matrix, a pair).
LIST_FIELDS = ("sigma", "init_ab")
#: Fields whose single value is a table.
TABLE_FIELDS = ("ood_sigmas",)


@dataclass
class Cell:
    """One cell: its ``name`` (directory), ``config`` (validated, without ``out``), the values of
    the grid's axes (``axes``) and its ``index`` in the sweep."""

    name: str
    config: TrainConfig
    axes: dict
    index: int

    @property
    def id(self) -> str:
        return cell_id(self.config)

    @property
    def run_config(self) -> TrainConfig:
        """The configuration the cell runs (``result_config``): one for every grid point of its id."""
        return result_config(self.config)


@dataclass
class Grid:
    """A parsed grid: ``name``, ``train``, ``retries``, the ``grid`` axes, the ``fixed`` fields,
    explicit ``cells``, and the ``raw`` table it came from (for the manifest)."""

    name: str
    grid: dict
    fixed: dict
    cells: list = field(default_factory=list)
    train: bool = True
    retries: int = RETRIES
    raw: dict = field(default_factory=dict)
    source: str | None = None

    def expand(self) -> list[Cell]:
        """The grid points: the product of the axes (first axis slowest) over ``fixed``, then the
        explicit cells; duplicates (the same config) once, at their first place.  Points of one
        identity (``cell_id``) are distinct points of one cell (``MODE_NEUTRAL_FIELDS``)."""
        keys = list(self.grid)
        combos = [dict(zip(keys, values)) for values in itertools.product(*(self.grid[k] for k in keys))]
        where = [f"[grid] cell {', '.join(f'{k} = {_show(v)}' for k, v in c.items()) or '(fixed only)'}"
                 for c in combos]
        combos += self.cells
        where += [f"[[cells]] entry {i + 1}" for i in range(len(self.cells))]
        out, seen = [], set()
        for fields, label in zip(combos, where):
            config = make_config({**self.fixed, **fields}, label)
            ident = _hash(_differing(config))
            if ident in seen:
                continue
            seen.add(ident)
            out.append(Cell(name=cell_name(config), config=config, axes=dict(fields), index=len(out)))
        return out


def _show(value) -> str:
    return json.dumps(value) if isinstance(value, (str, list, dict)) else repr(value)


def _field(name: str, value, where: str):
    """A grid-file value of field ``name`` as ``TrainConfig`` holds it (``config.parse_field``:
    ``eta = 1`` and ``eta = 1.0`` are one cell); ValueError naming ``where``."""
    try:
        return parse_field(name, value)
    except ValueError as exc:
        raise ValueError(f"{where}: {one_line(exc)}") from None


def make_config(fields: dict, where: str = "cell") -> TrainConfig:
    """The validated ``TrainConfig`` of a cell from its fields (``sigma = c`` becomes ``c I``, and
    ``sigma = 1`` the default identity, None; ``checkpoint_every`` defaults to ``eval_every``,
    and ``CELL_DEFAULTS`` apply); ValueError naming ``where`` and the field."""
    known = config_fields()
    fields = {k: (_field(k, v, where) if k in known else v) for k, v in fields.items()}
    sigma = fields.get("sigma")
    if isinstance(sigma, (int, float)) and not isinstance(sigma, bool):
        d = fields.get("d", TrainConfig.d)
        if isinstance(d, int) and not isinstance(d, bool) and d >= 1:
            scale = identity_scale(f"{where}: sigma", sigma)       # the rule "a number c means c I"
            fields["sigma"] = None if scale == 1 else covariance(f"{where}: sigma", scale, d)
    fields.setdefault("checkpoint_every", fields.get("eval_every", TrainConfig.eval_every))
    for key, value in CELL_DEFAULTS.items():
        fields.setdefault(key, value)
    try:
        config = TrainConfig(**fields, progress=False)
        config.validate()
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: {one_line(exc)}") from None
    return config


def identity_dict(config: TrainConfig) -> dict:
    """The cell's full config: every field but ``out`` and ``progress``."""
    return {k: v for k, v in config.to_dict().items() if k not in SWEEP_OWNED}


def _defining(fields: dict) -> dict:
    return {k: v for k, v in fields.items() if k not in NEUTRAL_FIELDS}


def _defaults() -> dict:
    return _defining(identity_dict(TrainConfig()))


def result_config(config: TrainConfig) -> TrainConfig:
    """The configuration that determines the cell's result for its mode: ``config`` with the
    fields its mode never reads (``MODE_NEUTRAL_FIELDS``: k and eta for no-CoT) at
    ``TrainConfig``'s defaults.  The cell runs this config; its grid points keep their own."""
    neutral = MODE_NEUTRAL_FIELDS.get(config.mode, ())
    if not neutral:
        return config
    defaults = TrainConfig()
    return dataclasses.replace(config, **{name: getattr(defaults, name) for name in neutral})


def _differing(config: TrainConfig) -> dict:
    defaults = _defaults()
    return {k: v for k, v in _defining(identity_dict(config)).items() if k not in defaults or v != defaults[k]}


def _hash(fields: dict) -> str:
    text = json.dumps(fields, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def cell_id(config: TrainConfig) -> str:
    """A stable hash of the configuration that determines the cell's result (``result_config``):
    12 hex digits of SHA-256 of its fields that differ from ``TrainConfig``'s defaults (so a
    field added to ``TrainConfig`` later, with a default, leaves every cell's identity as it was;
    ``same_config`` compares the whole config), but the ``NEUTRAL_FIELDS``, which do not change a
    run's numbers.  Every other field counts (the seed included)."""
    return _hash(_differing(result_config(config)))


def same_config(saved, config: TrainConfig) -> bool:
    """Whether saved config fields (a cell record's, a run manifest's) determine the result of
    ``config`` (their ``result_config``s are equal): both through ``TrainConfig``, so that a
    field added since they were saved takes its default and compares equal, and a default that
    changed since does not."""
    if not isinstance(saved, dict):
        return False
    try:
        theirs = TrainConfig(**{k: v for k, v in saved.items() if k not in SWEEP_OWNED})
    except (TypeError, ValueError):
        return False
    return _defining(identity_dict(result_config(theirs))) == _defining(identity_dict(result_config(config)))


def cell_name(config: TrainConfig) -> str:
    """The cell's directory name: readable fields of its result config and the hash, e.g.
    ``cot-full-d5-n10-k8-eta0.4-seed0-3f2a9c01b7d4`` (no-CoT: without k and eta,
    ``nocot-full-d5-n10-seed0-...``)."""
    c, neutral = config, MODE_NEUTRAL_FIELDS.get(config.mode, ())
    parts = [c.mode, c.param, f"d{c.d}", f"n{c.n}"] + ([] if "k" in neutral else [f"k{c.k}"]) \
        + ([] if "eta" in neutral else [f"eta{c.eta:g}"]) + [f"seed{c.seed}", cell_id(c)]
    return "-".join(parts)


def parse_grid(table: dict, *, name: str = "sweep", source: str | None = None) -> Grid:
    """A ``Grid`` from a grid file's table (``load_grid``); one-line ValueError naming the table
    and the field for an unknown field, a non-list in ``[grid]``, a list in ``[fixed]``, a bad
    value (``TrainConfig.validate``) or a bad top-level key."""
    if not isinstance(table, dict):
        raise ValueError(f"a grid must be a table, got {type(table).__name__}")
    unknown = [k for k in table if k not in TOP_KEYS]
    if unknown:
        raise ValueError(f"unknown top-level key {unknown[0]!r} in the grid (expected {', '.join(TOP_KEYS)}; "
                         f"fields go in [grid] or [fixed])")
    name = table.get("name", name)
    if not isinstance(name, str) or not name.strip() or "/" in name:
        raise ValueError(f"name must be a non-empty string without '/', got {name!r}")
    train = table.get("train", True)
    if train not in (True, False):
        raise ValueError(f"train must be true or false, got {train!r}")
    retries = table.get("retries", RETRIES)
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ValueError(f"retries must be an integer >= 0, got {retries!r}")
    grid = _table(table, "grid")
    fixed = _table(table, "fixed")
    axes = {}
    for key, values in grid.items():
        _check_field("[grid]", key)
        if not isinstance(values, list):
            raise ValueError(f"[grid] {key}: expected a list of values, got {_show(values)} "
                             f"(a single value goes in [fixed])")
        if not values:
            raise ValueError(f"[grid] {key}: the list of values is empty")
        axes[key] = [_field(key, v, f"[grid] {key}") for v in values]
    fixed_fields = {}
    for key, value in fixed.items():
        _check_field("[fixed]", key)
        if key in axes:
            raise ValueError(f"[fixed] {key}: also an axis in [grid]; give it in one table")
        if isinstance(value, list) and key not in LIST_FIELDS:
            raise ValueError(f"[fixed] {key}: expected a single value, got the list {_show(value)} "
                             f"(a list of values goes in [grid])")
        fixed_fields[key] = _field(key, value, f"[fixed] {key}")
    cells = table.get("cells", [])
    if not isinstance(cells, list) or not all(isinstance(c, dict) for c in cells):
        raise ValueError("cells must be an array of tables ([[cells]])")
    explicit = []
    for i, cell in enumerate(cells):
        fields = {}
        for key, value in cell.items():
            _check_field(f"[[cells]] entry {i + 1}", key)
            if isinstance(value, list) and key not in LIST_FIELDS:
                raise ValueError(f"[[cells]] entry {i + 1} {key}: expected a single value, got the list {_show(value)}")
            fields[key] = _field(key, value, f"[[cells]] {key}")
        explicit.append(fields)
    g = Grid(name=name, grid=axes, fixed=fixed_fields, cells=explicit, train=train, retries=retries,
             raw=table, source=source)
    if not g.expand():
        raise ValueError("the grid has no cells")
    return g


def _table(table: dict, key: str) -> dict:
    value = table.get(key, {})
    if not isinstance(value, dict):
        raise ValueError(f"{key} must be a table ([{key}]), got {_show(value)}")
    return value


def _check_field(where: str, key: str) -> None:
    if key in SWEEP_OWNED:
        raise ValueError(f"{where} {key}: set by the sweep (each cell's run directory is DIR/cells/<cell>)")
    if key not in config_fields():
        known = ", ".join(config_fields())
        raise ValueError(f"{where} {key}: unknown field (TrainConfig fields: {known})")


def load_grid(path) -> Grid:
    """Read a grid file (TOML) as a ``Grid`` (``parse_grid``); its name defaults to the file's
    stem.  ValueError for a file that is not TOML."""
    try:
        import tomllib
    except ImportError:                          # Python 3.10
        import tomli as tomllib
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            table = tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"grid {path!r} is not valid TOML: {exc}") from None
    stem = os.path.splitext(os.path.basename(path))[0]
    return parse_grid(table, name=stem, source=os.path.abspath(path))

