"""The ``cotgd`` command line: a thin layer over the library.

    cotgd verify     every check of the paper (symbolic, numeric, statistical, training, OOD)
    cotgd train      train one model (CoT / no-CoT / looped) and write its run directory
    cotgd reproduce  the paper's figures (and the OOD figure) as PNG
    cotgd dynamics   the reduced gradient-flow ODE laid over real training (Theorem 4.1)
    cotgd bench      speed figures (training step, rollout, many models, Monte Carlo)

Bad arguments print one line on stderr and exit with status 2; a diverged training run exits 1.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys


class UsageError(Exception):
    """A bad command-line argument: one line on stderr, exit status 2."""


class _DefaultsShown(argparse.ArgumentDefaultsHelpFormatter):
    """Help with "(default: X)" after every option whose default is not None (a None default's
    meaning is in its help text)."""

    def _get_help_string(self, action):
        return action.help if action.default is None else super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage block, exit 2
        raise UsageError(message)


def _parsed(convert, accept, expected: str):
    """An argparse ``type``: ``convert(text)`` when it works and ``accept``s the value, else one
    clear error line naming what was expected."""
    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            value = None
        if value is None or not accept(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value
    return parse


_positive_int = _parsed(int, lambda v: v >= 1, "a positive integer")
_nonnegative_int = _parsed(int, lambda v: v >= 0, "an integer >= 0")
_positive_float = _parsed(float, lambda v: math.isfinite(v) and v > 0, "a finite number > 0")
_finite_float = _parsed(float, math.isfinite, "a finite number")


def _device(text: str) -> str:
    if text not in ("auto", "cpu") and not (text == "cuda" or text.startswith("cuda:")):
        raise argparse.ArgumentTypeError(f"unknown device {text!r} (auto, cpu, cuda, cuda:N)")
    if text.startswith("cuda"):              # is it there?  (imports torch, only for CUDA requests)
        from .device import resolve_device
        try:
            resolve_device(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="cotgd", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("verify", help="run the checks (all, or --only some) and print a PASS/FAIL report",
                       description="Run the registered checks of the paper's claims (symbolic, numeric, "
                                   "statistical, training) and print a PASS/FAIL table; exit status 0 when "
                                   "all pass, 1 otherwise.  Only the models the selected checks need are trained.",
                       formatter_class=_DefaultsShown)
    p.add_argument("--quick", action="store_true",
                   help="smaller Monte Carlo samples and grids, a shorter looped training")
    p.add_argument("--device", type=_device, default="auto",
                   help="torch device for training: auto (cuda when present, else cpu), cpu, cuda or cuda:N")
    p.add_argument("--out", metavar="DIR",
                   help="directory for verify.json and the training runs (cot-full/, nocot-full/, looped-sparse/)")
    p.add_argument("--json", dest="json_file", metavar="FILE", help="also write the report as JSON to this file")
    p.add_argument("--seed", type=_nonnegative_int, default=0, metavar="N",
                   help="seed of every sampled prompt and of the training runs")
    p.add_argument("--only", metavar="PATTERN",
                   help="run only the checks whose names match: comma-separated patterns, each a shell-style "
                        "glob matched against the whole name (fnmatch) when it contains * ? or [, else a "
                        "substring; case-insensitive; e.g. 'symbolic*' or 'ood,cot-structure'. A pattern "
                        "matching no check is an error (exit 2)")
    p.add_argument("--list", action="store_true",
                   help="print the check names, kinds, the models they train and descriptions (with --only: "
                        "the matching ones) and exit")

    p = sub.add_parser("train", help="train one model and write its run directory",
                       description="Train one model; every option is a field of training.TrainConfig "
                                   "(defaults: the paper's setting, training.PAPER).",
                       formatter_class=_DefaultsShown)
    add_config_options(p)
    p.add_argument("--out", metavar="DIR",
                   help="run directory (manifest.json, metrics.jsonl, checkpoint.pt, params.pt, summary.json)")
    p.add_argument("--json", dest="json_file", metavar="FILE", help="write the summary JSON to this file")
    p.add_argument("--resume", metavar="DIR", help="continue the run in this directory from its last checkpoint")

    p = sub.add_parser("reproduce", help="write the paper's figures as PNG")
    p.add_argument("figure", choices=["fig2", "fig3", "structure", "ood", "all"])
    p.add_argument("--out", required=True, help="directory for the PNG files")
    p.add_argument("--device", type=_device, default="auto",
                   help="auto (CUDA when torch sees it, else CPU), cpu, cuda or cuda:N")
    p.add_argument("--seed", type=_nonnegative_int, default=0)
    p.add_argument("--quick", action="store_true", help="fewer iterations and samples")

    p = sub.add_parser("dynamics", help="reduced gradient flow vs training (Theorem 4.1)")
    p.add_argument("--d", type=_positive_int, default=10)
    p.add_argument("--n", type=_positive_int, default=20)
    p.add_argument("--k", type=_positive_int, default=10)
    p.add_argument("--eta", type=_positive_float, default=0.4)
    p.add_argument("--lr", type=_positive_float, default=None)
    p.add_argument("--steps", type=_positive_int, default=None)
    p.add_argument("--a0", type=_finite_float, default=None)
    p.add_argument("--b0", type=_finite_float, default=None)
    p.add_argument("--seed", type=_nonnegative_int, default=0)
    p.add_argument("--device", type=_device, default="auto",
                   help="auto (CUDA when torch sees it, else CPU), cpu, cuda or cuda:N")
    p.add_argument("--sparse", action="store_true",
                   help="also train the sparse model (V31, W13 free) and track their eigenvalues")
    p.add_argument("--out", help="directory for dynamics.png and dynamics.json")
    p.add_argument("--json", dest="json_file", help="write the result JSON to this file")

    p = sub.add_parser("bench", help="speed figures; no pass/fail")
    p.add_argument("--device", type=_device, default="auto",
                   help="auto (CUDA when torch sees it, else CPU), cpu, cuda or cuda:N")
    p.add_argument("--json", dest="json_file", help="write the figures as JSON to this file")
    p.add_argument("--quick", action="store_true", help="fewer repetitions")
    return parser


def _write_json(path: str, payload) -> None:
    from .io import atomic_write_text
    atomic_write_text(path, json.dumps(payload, indent=2, default=_json_default) + "\n")


def _json_default(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (set, tuple)):
        return list(value)
    return str(value)


def config_options() -> list:
    """The ``TrainConfig`` fields offered on the command line (metadata ``cli``), in order."""
    import dataclasses
    from .config import TrainConfig
    return [f for f in dataclasses.fields(TrainConfig) if f.metadata.get("cli")]


def add_config_options(parser: argparse.ArgumentParser) -> None:
    """One option per ``config_options()`` field, ``--name-with-dashes``, with the field's
    default, help text, choices and range: the command line cannot drift from ``TrainConfig``."""
    for f in config_options():
        meta, flag = f.metadata, "--" + f.name.replace("_", "-")
        kind = str(f.type).split("|")[0].strip()
        options = {"default": f.default, "help": meta["help"]}
        if meta["choices"]:
            options.update(choices=list(meta["choices"]))
        elif f.name == "device":
            options.update(type=_device)
        elif kind == "bool":
            options.update(action=argparse.BooleanOptionalAction)
        elif kind == "int":
            low = meta["minimum"] if meta["minimum"] is not None else 0
            options.update(type=_positive_int if low >= 1 else _nonnegative_int, metavar="N")
        elif kind == "float":
            options.update(type=_positive_float, metavar="X")
        else:
            raise TypeError(f"TrainConfig.{f.name}: no command-line type for {f.type!r}")
        parser.add_argument(flag, **options)


def _run_options() -> list:
    """``train`` options that define a run; ``--resume`` takes them from the run's saved config."""
    return [f.name for f in config_options()] + ["out"]


def _check_train_args(args) -> None:
    """Argument combinations argparse cannot check: UsageError (one line, exit 2)."""
    if args.resume is not None:
        if not args.resume.strip():
            raise UsageError("argument --resume: expected a run directory, got ''")
        defaults = build_parser().parse_args(["train"])
        given = [name for name in _run_options() if getattr(args, name) != getattr(defaults, name)]
        if given:
            raise UsageError("argument --resume: a resumed run keeps the config saved in its directory; "
                             "drop " + ", ".join("--" + name.replace("_", "-") for name in given))
    elif args.checkpoint_every and args.out is None:
        raise UsageError("argument --checkpoint-every: needs --out (the run directory the checkpoints go to)")


def _check_paths(args) -> None:
    """``--out`` must not be an existing file, ``--json`` not an existing directory."""
    out = getattr(args, "out", None)
    if out is not None and os.path.exists(out) and not os.path.isdir(out):
        raise UsageError(f"argument --out: {out!r} exists and is not a directory")
    json_file = getattr(args, "json_file", None)
    if json_file is not None and os.path.isdir(json_file):
        raise UsageError(f"argument --json: {json_file!r} is a directory, expected a file name")


def _cmd_train(args) -> int:
    from .config import TrainConfig
    from .engine import resume, train
    _check_train_args(args)
    if args.resume is not None:
        result = resume(args.resume)
    else:
        config = TrainConfig(**{f.name: getattr(args, f.name) for f in config_options()}, out=args.out)
        result = train(config)
    summary = result.summary
    s = summary["structure"]
    theory_value = summary["theory_eval_loss"]
    theory_text = "n/a" if theory_value is None else f"{theory_value:.6g}"
    print(f"final eval loss {summary['final_eval_loss']:.6g} (theory {theory_text}); "
          f"v31_w13 {s['v31_w13']:.4f}, w24_v31 {s['w24_v31']:.4f}, offdiag {s['offdiag_energy']:.2e}, "
          f"functional deviation {s['functional_deviation']:.2e}; {summary['train_seconds']:.1f} s training, "
          f"{summary['seconds']:.1f} s in all")
    if args.json_file:
        _write_json(args.json_file, summary)
    return 0


def _cmd_verify(args) -> int:
    from .verify import format_check_list, format_report, run_verify
    if args.list:
        print(format_check_list(args.only))
        return 0
    report = run_verify(quick=args.quick, device=args.device, out=args.out, seed=args.seed, only=args.only)
    print(format_report(report))
    if args.out:
        _write_json(os.path.join(args.out, "verify.json"), report)
    if args.json_file:
        _write_json(args.json_file, report)
    return 0 if report["passed"] else 1


def _cmd_reproduce(args) -> int:
    from .figures import reproduce
    for path in reproduce(args.figure, out=args.out, device=args.device, seed=args.seed, quick=args.quick):
        print(path)
    return 0


def _cmd_dynamics(args) -> int:
    from .dynamics import run_dynamics
    options = {name: getattr(args, name) for name in ("lr", "steps", "a0", "b0")
               if getattr(args, name) is not None}
    result = run_dynamics(d=args.d, n=args.n, k=args.k, eta=args.eta, seed=args.seed,
                          device=args.device, out=args.out, **options)
    print(f"final a {result['final_a']:.6f} (theory {-args.eta}), final b {result['final_b']:.6f} (theory 1); "
          f"max relative deviation ODE vs training {result['max_relative_deviation']:.4f}; "
          f"stage times {json.dumps(result['stage_times'], default=_json_default)}")
    if args.sparse:
        from .dynamics import run_sparse_dynamics
        sparse = run_sparse_dynamics(d=args.d, n=args.n, k=args.k, eta=args.eta, seed=args.seed,
                                     device=args.device, out=args.out)
        print(f"sparse: final V31 eigenvalues in [{min(sparse['final_v']):.4f}, {max(sparse['final_v']):.4f}], "
              f"W13 eigenvalues in [{min(sparse['final_w']):.4f}, {max(sparse['final_w']):.4f}], "
              f"largest off-diagonal share {sparse['max_offdiag']:.3g}")
        result = dict(result, sparse=sparse)
    if args.json_file:
        _write_json(args.json_file, result)
    return 0


def _cmd_bench(args) -> int:
    from .bench import run_bench, format_bench
    figures = run_bench(device=args.device, quick=args.quick)
    print(format_bench(figures))
    if args.json_file:
        _write_json(args.json_file, figures)
    return 0


COMMANDS = {"train": _cmd_train, "verify": _cmd_verify, "reproduce": _cmd_reproduce,
            "dynamics": _cmd_dynamics, "bench": _cmd_bench}


def main(argv=None) -> int:
    """Entry point of the ``cotgd`` console script; returns the exit status."""
    from .errors import TrainingDiverged
    try:
        args = build_parser().parse_args(argv)
        _check_paths(args)
        return COMMANDS[args.command](args)
    except UsageError as exc:
        print(f"cotgd: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except (ValueError, OSError) as exc:   # OSError: an unusable path (FileNotFoundError, PermissionError, ...)
        print(f"cotgd: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except TrainingDiverged as exc:
        print(f"cotgd: {_one_line(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("cotgd: interrupted", file=sys.stderr)
        return 130


def _one_line(exc: BaseException) -> str:
    """The exception's message on one line (the command line promises one line of error)."""
    return " ".join(str(exc).split())


def console() -> None:
    sys.exit(main())


if __name__ == "__main__":
    console()
