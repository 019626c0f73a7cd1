"""The registry of ``cotgd verify``: rows (``Check``, ``result``), what a run is
(``VerifySettings``), the trained models (``MODEL_SPECS``, ``TrainedModels``,
``train_models_for_verify``), the ``@check`` decorator and ``REGISTRY``, selection
(``select_checks``), running (``run_check``, ``run_verify``) and the text (``format_report``,
``format_check_list``).  The checks themselves live in the modules of their kind
(``symbolic``, ``numeric``, ``statistical``, ``training``), which register with ``@check``.

Time (``run_verify``): the models train on worker threads (one per core, longest first, each
with one torch thread) while the checks that need no model run; each training check runs as
soon as its models are there.  The rows are reported in registry order whatever the order they
ran in; every run of a model is seeded, so the numbers do not depend on the schedule.
"""
from __future__ import annotations

import contextlib
import dataclasses
import fnmatch
import functools
import inspect
import os
import queue
import re
import sys
import textwrap
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np

import theory

from ... import PAPER, TrainConfig, train, train_models
from ...device import reproducible, resolve_device
from ...engine import torch_threads

#: The kinds of check, in the order the report lists them.
KINDS = ("symbolic", "numeric", "statistical", "training")
#: The trained models a check can ask for (``TrainedModels`` fields).
MODEL_NAMES = ("cot", "nocot", "looped", "looped_full", "cot_noise")
#: How each model is trained (``TrainConfig`` fields on top of ``PAPER``); ``quick`` adds the
#: ``quick`` overrides; ``ks``: several k trained as one run (``train_models``), the model is
#: then a dict k -> ``TrainResult``.
MODEL_SPECS = {
    "cot": {"mode": "cot", "param": "full"},
    "nocot": {"mode": "nocot", "param": "full"},
    # The sparse looped model (V31, W13 free, W24 = -1) learns fast; quick trains it less.
    "looped": {"mode": "looped", "param": "sparse", "quick": {"iters": 300, "batch": 200}},
    # The full looped model (every entry of V, W; config.LOOPED_LR) at the paper's size: with
    # batches of 250 it ended at median 0.23 (the target: 0.108; seed 0, 750 steps).  Its one
    # check is full-run only (``FULL_ONLY_REASON``), so quick never trains it.
    "looped_full": {"mode": "looped", "param": "full"},
    # Label noise s = 1 (docs/theory.md section 16), k = 5 and 10 in one run (about the time of one
    # model on two cores); the paper's size even when quick.
    "cot_noise": {"mode": "cot", "param": "full", "noise": 1.0, "ks": (5, 10)},
}
#: The order in which the models start training: longest first (full run, each alone with one
#: torch thread on a 2-core CPU: looped 87 s, looped_full 84 s, cot_noise 7 s, cot 4 s, nocot
#: 2 s), so that the short ones fill the core that comes free first (longest-processing-time
#: scheduling).
TRAINING_ORDER = ("looped", "looped_full", "cot_noise", "cot", "nocot")
#: Why the full looped model's check is left out of ``--quick``: measured on a 2-core CPU.
FULL_ONLY_REASON = ("full run only: the full looped model trains at the paper's size (750 steps of "
                    "1000 prompts, about 85 s of CPU on a 2-core machine, more than all of --quick); a "
                    "smaller run misses the target (batch 250: median 0.23 against 0.108)")
#: The exact eta of the paper's setting, 2/5 (docs/theory.md section 17).
ETA = theory.validation.exact_real("eta", PAPER.eta)
_NAME = re.compile(r"[a-z0-9]+(?:[.-][a-z0-9]+)*\Z")
_GLOB = set("*?[")


# ---------------------------------------------------------------- rows, settings, models
@dataclass(frozen=True)
class Check:
    """One row of the report.  ``measured`` / ``expected``: numbers, sympy expressions or text;
    ``tolerance``: the pass criterion in words; ``detail``: where, how many samples, the error."""

    name: str
    kind: str
    measured: object
    expected: object
    tolerance: str
    passed: bool
    detail: str = ""


def result(measured, expected, tolerance: str, passed, detail: str = "") -> Check:
    """A ``Check`` row whose name and kind the registry fills in (``@check``)."""
    return Check("", "", measured, expected, tolerance, bool(passed), detail)


@dataclass(frozen=True)
class VerifySettings:
    """What a run of ``cotgd verify`` is: ``quick`` (smaller samples, shorter looped training),
    ``seed`` (of every sampled prompt and of the training runs), ``device`` (a resolved torch
    device name, for training) and ``out`` (directory for the training runs, or None)."""

    quick: bool = False
    seed: int = 0
    device: str = "cpu"
    out: str | None = None


@dataclass(frozen=True)
class TrainedModels:
    """The trained models the selected checks need (``training.TrainResult`` or None when not
    trained): ``cot`` (full V, W, CoT objective), ``nocot`` (full, no-CoT objective), ``looped``
    (sparse, looped objective), ``looped_full`` (full, looped objective), ``cot_noise`` (full, CoT
    objective on prompts with label noise s = 1: a dict k -> result for k 5 and 10); ``errors``:
    model name -> error text for a model whose training raised; ``seconds``: model name -> wall
    seconds of its training."""

    cot: object = None
    nocot: object = None
    looped: object = None
    looped_full: object = None
    cot_noise: object = None
    errors: dict = field(default_factory=dict)
    seconds: dict = field(default_factory=dict)

    def missing(self, names: Iterable[str]) -> list:
        """The error texts of the models among ``names`` that are not available."""
        out = []
        for name in names:
            if getattr(self, name) is None:
                out.append(f"the {name} model did not train: {self.errors[name]}" if name in self.errors
                           else f"the {name} model was not trained")
        return out


# ---------------------------------------------------------------- the registry
@dataclass(frozen=True)
class RegisteredCheck:
    """A registered check: ``name``, ``kind``, ``description``, the models it ``needs``, the
    function (called with the arguments it names: ``settings``, ``models``) and ``full_only``
    (None, or why ``--quick`` leaves it out)."""

    name: str
    kind: str
    description: str
    needs: tuple
    func: Callable
    params: tuple
    full_only: str | None = None

    def __call__(self, settings: VerifySettings, models: TrainedModels | None = None) -> list:
        inputs = {"settings": settings, "models": models}
        return self.func(**{p: inputs[p] for p in self.params})

    def runs(self, quick: bool) -> bool:
        """Whether a run (``quick`` or full) runs this check."""
        return not (quick and self.full_only)


#: name -> ``RegisteredCheck``, in registration order (the order of the report).
REGISTRY: dict = {}


def check(name: str, *, kind: str, needs: Iterable[str] = (), description: str | None = None,
          full_only: str | None = None):
    """Register the decorated function as the check ``name`` of ``kind``.

    ``name``: unique, lower-case words joined by ``-`` or ``.``, starting with ``<kind>.``.
    ``needs``: the trained models (``MODEL_NAMES``) the function reads from its ``models``
    argument.  ``description``: defaults to the first paragraph of the docstring.
    ``full_only``: the reason a quick run leaves the check out (reported as a skipped row, its
    models not trained).  The function's parameters are among ``settings`` and ``models``
    (``models`` exactly when ``needs``).  The decorated function returns a list of complete
    ``Check`` rows: rows built with ``result`` get the registered name and kind."""
    needs = tuple(needs)
    if kind not in KINDS:
        raise ValueError(f"check {name!r}: kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if not _NAME.match(name) or not name.startswith(kind + "."):
        raise ValueError(f"check name {name!r}: expected '{kind}.' followed by lower-case words "
                         "joined by '-' or '.'")
    if unknown := [m for m in needs if m not in MODEL_NAMES]:
        raise ValueError(f"check {name!r}: unknown models {unknown} (known: {', '.join(MODEL_NAMES)})")

    def register(func):
        if name in REGISTRY:
            raise ValueError(f"check {name!r} is registered twice")
        params = tuple(inspect.signature(func).parameters)
        if not set(params) <= {"settings", "models"} or ("models" in params) != bool(needs):
            raise ValueError(f"check {name!r}: parameters must be among settings, models "
                             f"(models exactly when the check needs trained models), got {params}")
        text = description or (inspect.getdoc(func) or "").split("\n\n")[0]
        if not text.strip():
            raise ValueError(f"check {name!r} needs a description (or a docstring)")

        @functools.wraps(func)
        def run(*args, **kwargs) -> list:
            rows = func(*args, **kwargs)
            rows = [rows] if isinstance(rows, Check) else list(rows)
            return [dataclasses.replace(r, name=r.name or name, kind=r.kind or kind, passed=bool(r.passed))
                    for r in rows]

        REGISTRY[name] = RegisteredCheck(name, kind, " ".join(text.split()), needs, run, params, full_only)
        return run

    return register


def select_checks(only=None) -> list:
    """The registered checks whose names match ``only`` (all when None), in registry order.

    ``only``: a string of comma-separated patterns, or a list of patterns.  A pattern with one of
    ``* ? [`` is a shell-style glob matched against the whole name (``fnmatch``); any other is a
    substring of the name.  Case-insensitive.  A pattern that matches no check is a ValueError."""
    if only is None:
        return list(REGISTRY.values())
    parts = only.split(",") if isinstance(only, str) else list(only)
    patterns = [p.strip().lower() for p in parts if p.strip()]
    if not patterns:
        raise ValueError(f"--only {only!r}: no pattern given (cotgd verify --list shows the check names)")
    chosen = set()
    for pattern in patterns:
        hits = {name for name in REGISTRY if _matches(name, pattern)}
        if not hits:
            raise ValueError(f"--only: no check matches {pattern!r} (a glob if it has * ? [, else a "
                             "substring; cotgd verify --list shows the check names)")
        chosen |= hits
    return [entry for name, entry in REGISTRY.items() if name in chosen]


def _matches(name: str, pattern: str) -> bool:
    if _GLOB & set(pattern):
        return fnmatch.fnmatchcase(name, pattern)
    return pattern in name


def models_needed(entries: Iterable[RegisteredCheck]) -> tuple:
    """The models (in ``MODEL_NAMES`` order) that the checks ``entries`` need."""
    needed = {m for e in entries for m in e.needs}
    return tuple(m for m in MODEL_NAMES if m in needed)


# ---------------------------------------------------------------- training the models
def train_config(settings: VerifySettings, name: str) -> TrainConfig:
    """The ``TrainConfig`` of model ``name`` (``MODEL_SPECS``) in a run with ``settings``: the
    paper's setting, one torch thread, the run's seed and device, quick's overrides when quick,
    evaluated at the start and the end, its run directory under ``settings.out``."""
    spec = dict(MODEL_SPECS[name])
    quick = spec.pop("quick", {})
    spec.pop("ks", None)
    config = dict(PAPER.problem(), seed=settings.seed, device=settings.device, progress=False, threads=1,
                  eval_samples=5_000 if settings.quick else 20_000,
                  theory_samples=50_000 if settings.quick else 200_000, **spec)
    if settings.quick:
        config.update(quick)
    if settings.out:
        noise = f"-noise{spec['noise']:g}" if spec.get("noise") else ""
        config["out"] = os.path.join(settings.out, f"{spec['mode']}-{spec['param']}{noise}")
    # The checks read the final evaluation alone: none in between (the engine's first one, at
    # iteration 0, stays); evaluations do not touch the training, which is the same bitwise.
    config = TrainConfig(**config)
    return dataclasses.replace(config, eval_every=config.iters)


def _train_one(settings: VerifySettings, name: str) -> object:
    """Model ``name`` trained: a ``TrainResult``, or for a spec with ``ks`` a dict k ->
    ``TrainResult`` (the ks trained as one run, ``train_models``)."""
    config, ks = train_config(settings, name), MODEL_SPECS[name].get("ks")
    if ks:
        return dict(zip(ks, train_models(config, ks=list(ks), overwrite=True)))
    return train(config, overwrite=True)


def training_workers(models: int) -> int:
    """Worker threads for ``models`` trainings: one per core this process may use, at most one
    per model."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:                      # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, models))


class ModelTraining:
    """The models ``needed`` training on worker threads (``training_workers``), started in
    ``TRAINING_ORDER`` (longest first), each seeded, with one torch thread (``train_config``),
    so each ends bitwise where it ends trained alone.  ``done(timeout)``: the names finished
    since the last call; ``models()``: the ``TrainedModels`` so far.  A model whose training
    raises is left None with its error (the checks that need it fail with it).

    Use as a context manager: the numerical settings of a run (``device.reproducible``) and the
    torch thread count, which are process-wide, are set once around all the threads.  The
    workers are daemon threads: an interrupted run (Ctrl-C) exits without waiting for them."""

    def __init__(self, settings: VerifySettings, needed: Iterable[str], workers: int | None = None):
        needed = tuple(needed)
        self.settings = settings
        self.names = [m for m in TRAINING_ORDER if m in needed]
        self.workers = training_workers(len(self.names)) if workers is None else workers
        self.trained, self.errors, self.seconds = {}, {}, {}
        self.finished: list = []                 # names, in the order they finished and were reported
        self._todo: queue.Queue = queue.Queue()
        self._done: queue.Queue = queue.Queue()
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> "ModelTraining":
        if self.names:
            self._stack.enter_context(reproducible(resolve_device(self.settings.device)))
            self._stack.enter_context(torch_threads(1))
            for name in self.names:
                self._todo.put(name)
            for j in range(self.workers):
                threading.Thread(target=self._work, name=f"cotgd-verify-{j}", daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()

    def _work(self) -> None:
        while True:
            try:
                name = self._todo.get_nowait()
            except queue.Empty:
                return
            start = time.perf_counter()
            try:
                self.trained[name] = _train_one(self.settings, name)
            except Exception as exc:   # reported by every check that needs the model
                self.errors[name] = f"{type(exc).__name__}: {exc}"
            self.seconds[name] = time.perf_counter() - start
            self._done.put(name)

    def pending(self) -> bool:
        """Whether a model is still training (or waiting to)."""
        return len(self.finished) < len(self.names)

    def done(self, timeout: float | None = None) -> list:
        """The models finished since the last call; when none has, waits up to ``timeout``
        seconds (None: until one finishes, when one is still training)."""
        names = []
        while self.pending():
            try:
                names.append(self._done.get(block=not names and timeout != 0, timeout=timeout))
            except queue.Empty:
                break
            self.finished.append(names[-1])
        return names

    def models(self) -> TrainedModels:
        return TrainedModels(**{name: self.trained[name] for name in self.finished if name in self.trained},
                             errors={name: self.errors[name] for name in self.finished if name in self.errors},
                             seconds={name: self.seconds[name] for name in self.finished})


def train_models_for_verify(settings: VerifySettings, needed: Iterable[str] = MODEL_NAMES,
                            on_model: Callable | None = None) -> TrainedModels:
    """Train the models ``needed`` (names from ``MODEL_NAMES``) in the paper's setting
    (docs/theory.md section 8; ``MODEL_SPECS``), on one worker thread per core
    (``ModelTraining``), and return them as ``TrainedModels``.  A model whose training raises is
    left None and its error recorded (the checks that need it fail with it).  ``on_model(name,
    seconds)`` is called as each model finishes (progress).  A spec with ``ks`` trains them as
    one run (``train_models``) and gives a dict k -> ``TrainResult``."""
    with ModelTraining(settings, needed) as training:
        while training.pending():
            for name in training.done():
                if on_model is not None:
                    on_model(name, training.seconds[name])
        return training.models()


# ---------------------------------------------------------------- running
def run_check(entry: RegisteredCheck, settings: VerifySettings, models: TrainedModels | None = None) -> list:
    """Run one registered check: its rows, or one failed row with the error when it raises or a
    model it needs is missing.  Each row's detail ends with the check's time."""
    start = time.perf_counter()
    missing = (models or TrainedModels()).missing(entry.needs)
    if missing:
        rows = [Check(entry.name, entry.kind, "error: " + "; ".join(missing), "no error", "-", False)]
    else:
        try:
            rows = entry(settings, models)
            if not rows:
                raise RuntimeError("the check returned no rows")
        except Exception as exc:   # a crashing check is a failed row with its error, never skipped
            rows = [Check(entry.name, entry.kind, f"error: {type(exc).__name__}: {exc}", "no error", "-", False)]
    seconds = time.perf_counter() - start
    return [dataclasses.replace(r, detail=(r.detail + "; " if r.detail else "") + f"{seconds:.2f} s")
            for r in rows]


def _json_value(value):
    if isinstance(value, np.generic):
        value = value.item()
    return value if value is None or isinstance(value, (bool, int, float, str)) else str(value)


class Progress:
    """Progress of a run on ``stream`` (stderr): a tqdm bar on a terminal; otherwise (a file, a
    pipe, CI's log) one line per finished model and per finished check, as it finishes."""

    def __init__(self, total: int, stream=None):
        self.stream = sys.stderr if stream is None else stream
        self.total, self.count, self.start = total, 0, time.perf_counter()
        self.bar = None
        isatty = getattr(self.stream, "isatty", None)
        if isatty is not None and isatty():
            from tqdm import tqdm
            self.bar = tqdm(total=total, desc="cotgd verify", file=self.stream, leave=False, dynamic_ncols=True)

    def _lines(self, lines: list) -> None:
        self.count += 1
        if self.bar is not None:
            self.bar.set_postfix_str(lines[-1][:60])
            self.bar.update()
            return
        at = f"[{self.count:>{len(str(self.total))}}/{self.total} {time.perf_counter() - self.start:5.1f} s]"
        for line in lines:
            print(f"{at} {line}", file=self.stream, flush=True)

    def model(self, name: str, seconds: float, error: str | None) -> None:
        self._lines([f"trained {name} in {seconds:.1f} s" + (f": FAILED {error}" if error else "")])

    def check(self, rows: list) -> None:
        self._lines([f"{'PASS' if r.passed else 'FAIL'} {r.name} ({r.detail.rsplit('; ', 1)[-1]})" for r in rows])

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run_verify(*, quick: bool = False, device: str = "auto", out: str | None = None, seed: int = 0,
               only=None, progress=None) -> dict:
    """Run the registered checks (``only``: the patterns of ``select_checks``; None: all), training
    only the models they need; return the JSON-ready report ``{"passed", "quick", "device"
    (resolved), "seed", "seconds", "checks": [{name, kind, measured, expected, tolerance, passed,
    detail}], "skipped": [{name, kind, reason}], "model_seconds": {model: wall seconds of its
    training (the trainings overlap)}}``.

    The checks that need no model run while the models train (module docstring), each training
    check as soon as its models are there; the rows come in registry order.  A quick run skips
    the ``full_only`` checks (listed in ``skipped``, their models not trained).  ``progress``: a
    stream for the progress (default stderr: a bar on a terminal, else a line per finished check
    and model); False: none.  Raises ValueError for a pattern that matches no check, a bad seed
    or device."""
    from theory.validation import check_int
    selected = select_checks(only)
    seed = check_int("seed", seed, 0)
    settings = VerifySettings(quick=bool(quick), seed=seed, device=str(resolve_device(device)), out=out)
    start = time.perf_counter()
    running = [e for e in selected if e.runs(settings.quick)]
    skipped = [e for e in selected if not e.runs(settings.quick)]
    needed = models_needed(running)
    bar = None
    if progress is not False:
        bar = Progress(len(needed) + len(running), None if progress is None or progress is True else progress)
    rows: dict = {}

    def run(entry, models=None):
        rows[entry.name] = run_check(entry, settings, models)
        if bar is not None:
            bar.check(rows[entry.name])

    try:
        with ModelTraining(settings, needed) as training:
            waiting = [e for e in running if e.needs]

            def run_ready(timeout):
                """Report the models finished (waiting up to ``timeout`` s for one), then run the
                checks whose models are all there (all that wait when none is training)."""
                for name in training.done(timeout):
                    if bar is not None:
                        bar.model(name, training.seconds[name], training.errors.get(name))
                models = training.models()
                for entry in [e for e in waiting if set(e.needs) <= set(training.finished) or not training.pending()]:
                    run(entry, models)
                    waiting.remove(entry)

            for entry in running:
                if not entry.needs:
                    run(entry)
                    run_ready(0)
            while waiting:
                run_ready(None)
            model_seconds = training.models().seconds
    finally:
        if bar is not None:
            bar.close()
    ordered = [r for e in running for r in rows[e.name]]
    checks = [{k: _json_value(v) for k, v in dataclasses.asdict(r).items()} for r in ordered]
    return {"passed": all(c["passed"] for c in checks), "quick": settings.quick, "device": settings.device,
            "seed": seed, "seconds": time.perf_counter() - start, "checks": checks,
            "skipped": [{"name": e.name, "kind": e.kind, "reason": e.full_only} for e in skipped],
            "model_seconds": {name: round(s, 2) for name, s in model_seconds.items()}}


# ---------------------------------------------------------------- text
def _fmt(value) -> str:
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, (float, np.floating)):
        return f"{value:.6g}"
    return str(value)


def _table(header: tuple, rows: list, caps: tuple) -> list:
    """Lines of a table whose cells wrap (textwrap, breaking long words and after hyphens) inside
    columns at most ``caps`` wide: nothing is cut."""
    widths = [max(1, min(max(len(str(r[i])) for r in rows + [header]), cap)) for i, cap in enumerate(caps)]

    def physical(r):
        cells = [textwrap.wrap(str(v), w) or [""] for v, w in zip(r, widths)]
        for j in range(max(len(c) for c in cells)):
            yield "  ".join((c[j] if j < len(c) else "").ljust(w) for c, w in zip(cells, widths)).rstrip()

    out = list(physical(header)) + ["  ".join("-" * w for w in widths)]
    for r in rows:
        out.extend(physical(r))
    return out


#: Column caps of the report: check, kind, measured, expected, tolerance, result, detail.
REPORT_WIDTHS = (50, 11, 13, 13, 24, 6, 34)


def format_report(report: dict) -> str:
    """The report as a plain-text table (check, kind, measured, expected, tolerance, result,
    detail; long cells wrap inside their column, never cut; a check a quick run leaves out is a
    SKIP row with the reason) and the summary line."""
    header = ("check", "kind", "measured", "expected", "tolerance", "result", "detail")
    rows = [(c["name"], c["kind"], _fmt(c["measured"]), _fmt(c["expected"]), c["tolerance"],
             "PASS" if c["passed"] else "FAIL", c.get("detail", "")) for c in report["checks"]]
    skipped = report.get("skipped") or []
    rows += [(s["name"], s["kind"], "-", "-", "-", "SKIP", s["reason"]) for s in skipped]
    n_pass = sum(bool(c["passed"]) for c in report["checks"])
    out = _table(header, rows, REPORT_WIDTHS)
    models = report.get("model_seconds") or {}
    if models:
        out.append("trained " + ", ".join(f"{name} {s:.1f} s" for name, s in models.items())
                   + " (wall seconds each; the models train side by side on one thread per core)")
    skip = (f", {len(skipped)} skipped (full run only: cotgd verify without --quick)" if skipped else "")
    out.append(f"{n_pass}/{len(report['checks'])} checks passed in {report['seconds']:.1f} s "
               f"({'quick' if report['quick'] else 'full'}, device {report['device']}){skip}: "
               f"{'ALL PASS' if report['passed'] else 'FAILURES'}")
    return "\n".join(out)


def format_check_list(only=None) -> str:
    """The registered checks (those matching ``only``): name, kind, the models they train, and
    description (a full-run-only check says so), as a table whose cells wrap."""
    entries = select_checks(only)
    rows = [(e.name, e.kind, ", ".join(e.needs) or "-", ("(full run only) " if e.full_only else "") + e.description)
            for e in entries]
    lines = _table(("check", "kind", "trains", "description"), rows, (60, 11, 11, 64))
    lines.append(f"{len(rows)} checks; run some with --only PATTERN (a glob if it has * ? [, else a substring; "
                 "comma-separated)")
    return "\n".join(lines)
