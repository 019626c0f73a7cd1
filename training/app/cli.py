"""The ``cotgd`` command line: a thin layer over the library.

    cotgd verify      every check of the paper (symbolic, numeric, statistical, training, OOD)
    cotgd train       train one model (CoT / no-CoT / looped) and write its run directory
    cotgd evaluate    a trained run's model on the out-of-distribution suite (Theorem 4.2)
    cotgd explain     which algorithm a trained run's model runs, beside GD, GD++, Newton-Schulz, ...
    cotgd reproduce   the paper's figures (and the OOD, looped and label-noise figures) as PNG
    cotgd dynamics    the reduced gradient-flow ODE laid over real training (Theorem 4.1)
    cotgd selftest    prove the toolkit on this device (sync-free steps, bitwise resume, ...)
    cotgd sweep run   a grid of cells on local processes or a Dask cluster, resumable
    cotgd sweep slurm the same on SLURM jobs (dask-jobqueue)
    cotgd sweep plot  its phase diagrams
    cotgd bench       speed figures (training step, rollout, many models, Monte Carlo, sweeps)

Bad arguments print one line on stderr and exit with status 2; a run that diverged or failed
(``training.verdict``), or a damaged run file, exits 1.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from ..config import PAPER, check_field, config_fields, field_kind, identity_scale, parse_field
from ..errors import one_line


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


def _checked(convert, check: str, *bound):
    """An argparse ``type``: the text read by ``convert`` and checked by ``check`` of
    ``theory.validation`` (the toolkit's one statement of each rule, imported on first use);
    a text ``convert`` cannot read is handed to the check as it is, which refuses it."""
    def parse(text: str):
        from theory import validation
        try:
            value = convert(text)
        except ValueError:
            value = text
        try:
            getattr(validation, check)("the value", value, *bound)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(one_line(exc)) from None
        return value
    parse.__name__ = convert.__name__
    return parse


_positive_int = _checked(int, "check_int", 1)
_nonnegative_int = _checked(int, "check_int", 0)
_positive_float = _checked(float, "check_positive_finite")
_finite_float = _checked(float, "check_finite")


def _field_type(name: str):
    """An argparse ``type`` for ``TrainConfig`` field ``name``: the text read by
    ``config.parse_field`` and checked by ``config.check_field`` (the field's own declaration);
    a refusal is the config's one-line message."""
    def parse(text: str):
        try:
            return check_field(name, parse_field(name, text))
        except ValueError as exc:
            raise argparse.ArgumentTypeError(one_line(exc)) from None
    parse.__name__ = name
    return parse


#: ``--device`` of every command: the rule of ``TrainConfig.device`` (auto, cpu, cuda, cuda:N; a
#: CUDA device must be there, which imports torch only for a CUDA name).
_device = _field_type("device")


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
    p.add_argument("--sigma", metavar="FILE.npy", type=_covariance_file,
                   help="covariance of x for training and in-distribution evaluation: a d x d symmetric "
                        "positive semi-definite matrix saved with numpy.save (singular allowed); default: identity")
    p.add_argument("--ood-sigma", metavar="NAME=FILE.npy|c", action="append", type=_ood_covariance, default=None,
                   help="an extra evaluation covariance, repeatable: a .npy file, or a number c meaning c I")
    p.add_argument("--force", action="store_true",
                   help="overwrite the run that --out already holds (default: refuse, exit 2)")
    p.add_argument("--out", metavar="DIR",
                   help="run directory (manifest.json, metrics.jsonl, checkpoint.pt, params.pt, summary.json)")
    p.add_argument("--json", dest="json_file", metavar="FILE", help="write the summary JSON to this file")
    p.add_argument("--resume", metavar="DIR", help="continue the run in this directory from its last checkpoint")

    p = sub.add_parser("evaluate", help="a trained run's model on the OOD suite, judged by Theorem 4.2",
                       description="Evaluate the model of a run directory (any mode) on the out-of-distribution "
                                   "suite of training.suite (Garg et al.'s covariance shifts adapted to weight "
                                   "prediction: skewed, half_subspace, scale-x=c, scale-w=c) and on covariances "
                                   "of your own: the model's loss statistics, GD with its learned step and Theorem "
                                   "3.1's no-CoT optimum on the same prompts, Theorem 4.2's stability verdict, the "
                                   "expected loss and the unrecoverable part of a singular Sigma.  Prints a table.",
                       formatter_class=_DefaultsShown)
    p.add_argument("run", metavar="RUN_DIR",
                   help="run directory of one model (a 'cotgd train --out' directory, or one of the "
                        "models/NN-seedS-kK-etaE/ directories of a many-model run)")
    p.add_argument("--suite", choices=["standard", "none"], default="standard",
                   help="the cases: standard (skewed, half_subspace, scale-x=0.333/0.5/2/3, scale-w=0.5/2) "
                        "or none (only the --sigma covariances)")
    p.add_argument("--sigma", action="extend", nargs="+", metavar="FILE.npy", default=None,
                   help="extra cases: d x d covariance files (.npy, or text for numpy.loadtxt), each named "
                        "after its file; repeatable (default: none)")
    p.add_argument("--samples", type=_positive_int, default=10000, metavar="N",
                   help="fresh prompts per case (the model, GD and no-CoT see the same ones)")
    p.add_argument("--theory-samples", type=_positive_int, default=100000, metavar="N",
                   help="Monte Carlo prompts for GD's expected loss where no exact value exists")
    p.add_argument("--seed", type=_nonnegative_int, default=0, metavar="N", help="seed of the prompts")
    p.add_argument("--step", type=_positive_float, default=None, metavar="X",
                   help="GD step the model is compared with (default: the model's learned step, the mean "
                        "diagonal of W24 V31)")
    p.add_argument("--device", type=_device, default="auto",
                   help="torch device: auto (CUDA when torch sees it, else CPU), cpu, cuda or cuda:N")
    p.add_argument("--json", dest="json_file", metavar="FILE",
                   help='write the result as JSON, {"cases": [{"name": ...}, ...], ...} (default: none)')
    p.add_argument("--figure", metavar="FILE.png",
                   help="write the figure (per case: model, GD and no-CoT medians with 10-90%% bands, unstable "
                        "cases shaded) as PNG (default: none)")

    p = sub.add_parser("explain", help="which algorithm family a trained run's model runs",
                       description="The learned model's estimates loop by loop beside the best member of each "
                                   "algorithm family (GD, stretched GD, preconditioned GD, GD++, Newton-Schulz; "
                                   "numerics.loop_families) on the same prompts of the run's distribution: "
                                   "median and mean loss, the functional deviation E||w_k - w_k^family||^2 / "
                                   "E||w_k - w*||^2, and (full looped models) the loss with groups of blocks "
                                   "set to zero.  Prints a table.",
                       formatter_class=_DefaultsShown)
    p.add_argument("run", metavar="RUN_DIR", help="run directory of one model (a 'cotgd train --out' directory)")
    p.add_argument("--samples", type=_positive_int, default=20000, metavar="N",
                   help="prompts of the run's distribution (the model and every family see the same ones)")
    p.add_argument("--fit-on", type=_positive_int, default=2000, metavar="N",
                   help="the first N prompts fit each family's scalars (all of them measure it)")
    p.add_argument("--seed", type=_nonnegative_int, default=0, metavar="N", help="seed of the prompts")
    p.add_argument("--rotations", type=_nonnegative_int, default=8, metavar="N",
                   help="group elements per prompt for the symmetry floor (the least deviation any equivariant "
                        "algorithm can have from the model; 0: leave it out)")
    p.add_argument("--families", metavar="NAME[,NAME...]", default=None,
                   help="families to fit (default: all: gd, stretched_gd, preconditioned_gd, gd++, newton_schulz)")
    p.add_argument("--json", dest="json_file", metavar="FILE",
                   help='write the result as JSON, {"learned": {...}, "families": [...], "best": NAME, ...}')
    p.add_argument("--figure", metavar="FILE.png",
                   help="write the figure (loss per loop; learned blocks beside the closest family's) as PNG")

    p = sub.add_parser("reproduce", help="write the paper's figures as PNG")
    p.add_argument("figure", choices=["fig2", "fig3", "structure", "ood", "looped", "noise", "all"])
    p.add_argument("--out", required=True, help="directory for the PNG files")
    p.add_argument("--device", type=_device, default="auto",
                   help="auto (CUDA when torch sees it, else CPU), cpu, cuda or cuda:N")
    p.add_argument("--seed", type=_nonnegative_int, default=0)
    p.add_argument("--quick", action="store_true", help="fewer iterations and samples")
    p.add_argument("--run", action="append", metavar="DIR", default=None,
                   help="ood only: use this finished run's model instead of training (a cot run, optionally "
                        "a second --run with a nocot run; default: none, train the models)")

    p = sub.add_parser("dynamics", help="reduced gradient flow vs training (Theorem 4.1)")
    for name in ("d", "n", "k", "eta"):                  # TrainConfig's fields, checked as there
        p.add_argument(f"--{name}", type=_field_type(name), default=getattr(PAPER, name))
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

    p = sub.add_parser("selftest", help="prove the toolkit on this device in a few minutes (PASS/FAIL lines)",
                       formatter_class=_DefaultsShown)
    p.add_argument("--device", type=_device, default="auto",
                   help="auto (CUDA when torch sees it, else CPU), cpu, cuda or cuda:N")
    p.add_argument("--json", dest="json_file", metavar="FILE", help="also write the report as JSON to this file")
    p.add_argument("--skip", action="append", default=[], metavar="CHECK",
                   choices=["sync", "twice", "resume", "models", "constructed", "dynamics", "verify"],
                   help="leave out a check (repeatable)")

    p = sub.add_parser("sweep", help="a grid of cells (theory, Monte Carlo, training) on local processes or "
                                     "Dask, and its phase diagrams",
                       description="cotgd sweep run GRID.toml --out DIR: every cell of the grid (theory, Monte "
                                   "Carlo, training), resumable; cotgd sweep plot DIR: phase diagrams from its table.")
    sweep = p.add_subparsers(dest="sweep_command", required=True, parser_class=_Parser)
    q = sweep.add_parser("run", help="run (or finish) a sweep", formatter_class=_DefaultsShown,
                         description="Run every cell of GRID.toml ([grid]: field -> list of values, their "
                                     "Cartesian product; [fixed]: scalar fields; training.sweep) into DIR: "
                                     "results.parquet / results.csv (one row per cell), cells/<cell>/ (run "
                                     "directories), sweep.json.  Rerunning skips finished cells and resumes "
                                     "interrupted ones.")
    q.add_argument("grid", metavar="GRID.toml", help="the grid file (TOML)")
    q.add_argument("--out", required=True, metavar="DIR", help="the sweep's directory")
    engine = q.add_mutually_exclusive_group()
    engine.add_argument("--workers", type=_positive_int, metavar="N",
                        help="local worker processes, one torch thread each (default: the usable cores)")
    engine.add_argument("--dask-local", type=_positive_int, metavar="N",
                        help="start a Dask LocalCluster of N worker processes and run the cells on it")
    engine.add_argument("--dask-scheduler", metavar="ADDRESS",
                        help="run the cells on the running Dask cluster at ADDRESS (e.g. tcp://host:8786)")
    q.add_argument("--retries", type=_nonnegative_int, default=None, metavar="N",
                   help="attempts after a lost worker (default: the grid's 'retries', else 2)")
    q.add_argument("--retry-failed", action="store_true", help="rerun the cells recorded as failed")
    q.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="a progress bar over cells with an ETA (default: when stderr is a terminal)")
    q.add_argument("--json", dest="json_file", metavar="FILE", help="write the sweep's counts as JSON")
    q = sweep.add_parser("slurm", help="run a sweep on SLURM jobs through dask-jobqueue (pip install \"cotgd[cluster]\")",
                         formatter_class=_DefaultsShown,
                         description="Run every cell of GRID.toml into DIR (on a filesystem the compute nodes share) "
                                     "on SLURM jobs started by dask_jobqueue.SLURMCluster, one core and one worker "
                                     "each; the jobs are cancelled at the end, even after a failure; each row of the "
                                     "table names its job (training.app.sweep_slurm).")
    q.add_argument("grid", metavar="GRID.toml", help="the grid file (TOML)")
    q.add_argument("--out", required=True, metavar="DIR", help="the sweep's directory (on a shared filesystem)")
    q.add_argument("--jobs", type=_positive_int, required=True, metavar="N", help="SLURM jobs, one worker (one core) each")
    q.add_argument("--memory", default="4GB", help="memory per job")
    q.add_argument("--walltime", default="04:00:00", help="walltime per job")
    q.add_argument("--prologue", action="append", default=[], metavar="LINE",
                   help="a shell line each job runs first (repeatable), e.g. 'source ~/venvs/cotgd/bin/activate'")
    q.add_argument("--slurm-option", action="append", default=[], metavar="KEY=VALUE",
                   help="an sbatch option (repeatable), e.g. partition=short or account=myproject")
    q.add_argument("--interface", default=None, help="network interface of the scheduler and workers (e.g. ib0, lo)")
    q.add_argument("--adapt", action="store_true", help="scale between 0 and N jobs with the queue")
    q = sweep.add_parser("plot", help="phase diagrams (PNG) from a sweep's table",
                         description="Phase diagrams from DIR/results.parquet: the trained CoT / no-CoT loss ratio "
                                     "over (n/d, k) with the theory's ratio as contours, trained / theory per cell, "
                                     "and the OOD stability boundary over (eta, c).")
    q.add_argument("dir", metavar="DIR", help="a sweep's directory")
    q.add_argument("--out", metavar="DIR", help="directory for the PNG files (default: DIR)")

    p = sub.add_parser("bench", help="speed figures; no pass/fail")
    p.add_argument("--device", type=_device, default="auto",
                   help="auto (CUDA when torch sees it, else CPU), cpu, cuda or cuda:N")
    p.add_argument("--json", dest="json_file", help="write the figures as JSON to this file")
    p.add_argument("--quick", action="store_true", help="fewer repetitions")
    return parser


def _write_json(path: str, payload) -> None:
    from ..io import atomic_write_text
    atomic_write_text(path, json.dumps(payload, indent=2, default=_json_default) + "\n")


def _json_default(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (set, tuple)):
        return list(value)
    return str(value)


def config_options() -> list:
    """The ``TrainConfig`` fields offered on the command line (metadata ``cli``), in order."""
    return [f for f in config_fields().values() if f.metadata["cli"]]


#: The metavar of an option by the kind of its field.
_METAVARS = {"int": "N", "float": "X"}


def add_config_options(parser: argparse.ArgumentParser) -> None:
    """One option per ``config_options()`` field, ``--name-with-dashes``, with the field's
    default, help text, choices and check (``_field_type``): the command line cannot drift from
    ``TrainConfig``."""
    for f in config_options():
        meta, flag = f.metadata, "--" + f.name.replace("_", "-")
        kind = field_kind(f.name)[0]
        options = {"default": f.default, "help": meta["help"]}
        if meta["choices"]:
            options.update(choices=list(meta["choices"]))
        elif kind == "bool":
            options.update(action=argparse.BooleanOptionalAction)
        elif kind in ("int", "float", "str"):
            options.update(type=_field_type(f.name))
            if kind in _METAVARS:
                options.update(metavar=_METAVARS[kind])
        else:
            raise TypeError(f"TrainConfig.{f.name}: no command-line type for {f.type!r}")
        parser.add_argument(flag, **options)


def _run_options() -> list:
    """``train`` options that define a run; ``--resume`` takes them from the run's saved config."""
    return [f.name for f in config_options()] + ["out", "sigma", "ood_sigma", "force"]


def _covariance_file(text: str) -> list:
    """A covariance from a ``.npy`` file, as a nested list (validated with the run's d later)."""
    import numpy as np
    try:
        value = np.load(text, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise argparse.ArgumentTypeError(f"cannot read a matrix from {text!r} ({one_line(exc)[:80]})") from None
    if value.ndim != 2:
        raise argparse.ArgumentTypeError(f"{text!r} holds an array of shape {value.shape}, expected a d x d matrix")
    return value.astype(float).tolist()


def _ood_covariance(text: str) -> tuple:
    """``NAME=FILE.npy`` or ``NAME=c`` (meaning c I: ``config.identity_scale``)."""
    name, sep, value = text.partition("=")
    if not sep or not name.strip() or not value:
        raise argparse.ArgumentTypeError(f"expected NAME=FILE.npy or NAME=c, got {text!r}")
    try:
        c = float(value)
    except ValueError:
        return name.strip(), _covariance_file(value)
    try:
        return name.strip(), identity_scale(name.strip(), c)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(one_line(exc)) from None


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
    from ..engine import resume, train
    from ..rundir import read_manifest
    _check_train_args(args)
    if args.resume is not None:
        manifest = read_manifest(args.resume) or {}
        results = resume(args.resume)
        if manifest.get("status") in ("finished", "failed"):
            ended = "is finished" if manifest["status"] == "finished" else "failed"
            print(f"cotgd: the run in {args.resume} {ended} (iteration {manifest.get('iteration')}); "
                  f"nothing to do", file=sys.stderr)
    else:
        results = train(_train_config(args), overwrite=args.force)
    results = results if isinstance(results, list) else [results]
    for result in results:
        print(headline(result.summary))
    if args.json_file:
        _write_json(args.json_file, results[0].summary if len(results) == 1 else [r.summary for r in results])
    from ..verdict import summary_verdict
    failed = [verdict["message"] for verdict in map(summary_verdict, (r.summary for r in results))
              if verdict["status"] == "failed"]
    for message in failed:                  # training.verdict: one line per failed model, exit 1
        print(f"cotgd: {message}", file=sys.stderr)
    return 1 if failed else 0


def headline(summary: dict) -> str:
    """A run's result on one line: the evaluation loss (mean, and beside it the median, the
    diverged fraction and the mean over non-diverged prompts: never a bare inf), the theory's
    value (exact when the toolkit has it, else Monte Carlo with its standard error), structure
    and times."""
    ev, theory = summary["eval"], summary.get("theory") or {}
    if theory.get("exact") is not None:
        theory_text = f"exact {theory['exact']:.6g}"
    elif theory.get("value") is None:
        theory_text = "n/a"
    elif theory.get("se"):
        theory_text = f"{theory['value']:.6g} +- {theory['se']:.2g} ({theory.get('method', '').split()[0]})"
    else:
        theory_text = f"{theory['value']:.6g}"
    text = (f"final eval loss: mean {ev['mean']:.6g}, median {ev['median']:.6g}, diverged "
            f"{ev['diverged_frac']:.2%}, mean without diverged {ev['mean_without_diverged']:.6g} "
            f"(theory {theory_text})")
    s = summary.get("structure")
    if s is not None:
        text += (f"; v31_w13 {s['v31_w13']:.4f}, w24_v31 {s['w24_v31']:.4f}, offdiag {s['offdiag_energy']:.2e}, "
                 f"functional deviation {s['functional_deviation']:.2e}")
    return text + f"; {summary['train_seconds']:.1f} s training, {summary['seconds']:.1f} s in all"


def _step_note(config) -> str:
    """``; eta = ... is past the stable step ...`` when Theorem 4.2 says so, else ''."""
    from ..evaluate import step_stability
    verdict = step_stability(config)
    if config.mode != "cot" or verdict["stable"]:
        return ""
    return (f"; eta = {config.eta:g} is past the stable step {verdict['bound']:.4g} of the predicted spectrum "
            f"({verdict['rule']})")


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
    if args.run and args.figure != "ood":
        raise UsageError(f"argument --run: only the ood figure uses existing runs, got {args.figure}")
    for path in reproduce(args.figure, out=args.out, device=args.device, seed=args.seed, quick=args.quick,
                          runs=args.run):
        print(path)
    return 0


def _cmd_evaluate(args) -> int:
    if args.figure is not None and (not args.figure.strip() or os.path.isdir(args.figure)):
        raise UsageError(f"argument --figure: expected a file name, got {args.figure!r}")
    from ..suite import evaluate_run, format_table
    result = evaluate_run(args.run, suite=args.suite, sigmas=args.sigma or (), samples=args.samples,
                          seed=args.seed, theory_samples=args.theory_samples, step=args.step, device=args.device)
    print(format_table(result))
    if args.json_file:
        _write_json(args.json_file, result)
    if args.figure:
        from .figures import suite_figure
        print(suite_figure(result, args.figure))
    return 0


def _cmd_explain(args) -> int:
    if args.figure is not None and (not args.figure.strip() or os.path.isdir(args.figure)):
        raise UsageError(f"argument --figure: expected a file name, got {args.figure!r}")
    families = None
    if args.families is not None:
        from numerics.loop_families import FAMILIES
        families = [name.strip() for name in args.families.split(",") if name.strip()]
        unknown = [name for name in families if name not in FAMILIES]
        if unknown or not families:
            raise UsageError(f"argument --families: expected names from {', '.join(FAMILIES)}, got {args.families!r}")
    from ..explain import explain_run, format_explanation
    from ..rundir import load_run
    run = load_run(args.run)
    result = explain_run(run, samples=args.samples, seed=args.seed, families=families, fit_on=args.fit_on,
                         rotations=args.rotations, progress=lambda line: print(f"  {line} ...", file=sys.stderr, flush=True))
    print(format_explanation(result))
    if args.json_file:
        _write_json(args.json_file, result)
    if args.figure:
        from .explain_plot import explain_figure
        print(explain_figure(result, run.V, run.W, args.figure))
    return 0


def _cmd_dynamics(args) -> int:
    from ..dynamics import run_dynamics
    options = {name: getattr(args, name) for name in ("lr", "steps", "a0", "b0")
               if getattr(args, name) is not None}
    result = run_dynamics(d=args.d, n=args.n, k=args.k, eta=args.eta, seed=args.seed,
                          device=args.device, out=args.out, **options)
    if args.out:
        from .dynamics_plot import plot_dynamics
        plot_dynamics(result, os.path.join(args.out, "dynamics.png"))
    print(f"final a {result['final_a']:.6f} (theory {-args.eta}), final b {result['final_b']:.6f} (theory 1); "
          f"max relative deviation ODE vs training {result['max_relative_deviation']:.4f}; "
          f"stage times {json.dumps(result['stage_times'], default=_json_default)}")
    if args.sparse:
        from ..dynamics import run_sparse_dynamics
        sparse = run_sparse_dynamics(d=args.d, n=args.n, k=args.k, eta=args.eta, seed=args.seed,
                                     device=args.device, out=args.out)
        if args.out:
            from .dynamics_plot import plot_sparse_dynamics
            plot_sparse_dynamics(sparse, os.path.join(args.out, "sparse_dynamics.png"))
        print(f"sparse: final V31 eigenvalues in [{min(sparse['final_v']):.4f}, {max(sparse['final_v']):.4f}], "
              f"W13 eigenvalues in [{min(sparse['final_w']):.4f}, {max(sparse['final_w']):.4f}], "
              f"largest off-diagonal share {sparse['max_offdiag']:.3g}")
        result = dict(result, sparse=sparse)
    if args.json_file:
        _write_json(args.json_file, result)
    return 0


def _cmd_selftest(args) -> int:
    from .selftest import format_line, format_selftest, run_selftest
    report = run_selftest(args.device, skip=tuple(args.skip), on_line=lambda line: print(format_line(line), flush=True))
    print(format_selftest(report, lines=False))
    if args.json_file:
        _write_json(args.json_file, report)
    return 0 if report["passed"] else 1


def _cmd_bench(args) -> int:
    from .bench import run_bench, format_bench
    figures = run_bench(device=args.device, quick=args.quick)
    print(format_bench(figures))
    if args.json_file:
        _write_json(args.json_file, figures)
    return 0


def _cmd_sweep(args) -> int:
    if args.sweep_command == "slurm":
        from .sweep_slurm import cli_slurm
        return cli_slurm(args)
    from .sweep_cli import cli_sweep
    return cli_sweep(args)


COMMANDS = {"selftest": _cmd_selftest, "train": _cmd_train, "verify": _cmd_verify, "reproduce": _cmd_reproduce,
            "explain": _cmd_explain,
            "evaluate": _cmd_evaluate,
            "dynamics": _cmd_dynamics, "bench": _cmd_bench, "sweep": _cmd_sweep}


def main(argv=None) -> int:
    """Entry point of the ``cotgd`` console script; returns the exit status."""
    import warnings
    with warnings.catch_warnings():        # each warning one line on stderr: "cotgd: warning: ..."
        warnings.simplefilter("default")
        warnings.showwarning = lambda message, *rest, **kw: print(f"cotgd: warning: {one_line(message)}",
                                                                  file=sys.stderr)
        return _main(argv)


def _main(argv) -> int:
    from ..errors import RunFileError, TrainingDiverged
    args = None
    try:
        args = build_parser().parse_args(argv)
        _check_paths(args)
        return COMMANDS[args.command](args)
    except UsageError as exc:
        print(f"cotgd: error: {one_line(exc)}", file=sys.stderr)
        return 2
    except RunFileError as exc:            # a damaged run file: the run is at fault, not the arguments
        print(f"cotgd: error: {one_line(exc)}", file=sys.stderr)
        return 1
    except (ValueError, OSError) as exc:   # OSError: an unusable path (FileNotFoundError, PermissionError, ...)
        print(f"cotgd: error: {one_line(exc)}", file=sys.stderr)
        return 2
    except TrainingDiverged as exc:
        note = _diverged_note(args)
        print(f"cotgd: {one_line(exc)}{note}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        run_dir = getattr(args, "resume", None) or getattr(args, "out", None)
        again = (f"; resume it with: cotgd train --resume {run_dir}"
                 if getattr(args, "command", None) == "train" and run_dir else "")
        print(f"cotgd: interrupted{again}", file=sys.stderr)
        return 130
    except RuntimeError as exc:              # CUDA out of memory, no kernel image, driver errors
        text = one_line(exc)
        if "CUDA" not in text and "cuda" not in text and "cuBLAS" not in text:
            raise
        print(f"cotgd: the GPU failed: {text[:300]}; try --device cpu, a smaller --batch, or check the "
              f"CUDA build of torch (cotgd selftest)", file=sys.stderr)
        return 1


def _diverged_note(args) -> str:
    """Theorem 4.2's word on a diverged ``train`` run's step, or ''."""
    if getattr(args, "command", None) != "train" or getattr(args, "resume", None):
        return ""
    try:
        return _step_note(_train_config(args))
    except (TypeError, ValueError):
        return ""


def _train_config(args):
    """The ``TrainConfig`` that ``cotgd train``'s arguments describe."""
    from ..config import TrainConfig
    return TrainConfig(**{f.name: getattr(args, f.name) for f in config_options()}, sigma=args.sigma,
                       out=args.out, ood_sigmas=None if not args.ood_sigma else dict(args.ood_sigma))


def console() -> None:
    sys.exit(main())


if __name__ == "__main__":
    console()
