"""``dpkd-bench``: run | tune | report | ls | validate. Argument parsing only; the work is
elsewhere.

Exit status: 0 success; 2 a user error (one ``error:`` line on stderr); 1 an internal fault.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from datetime import datetime
from pathlib import Path

import yaml

from dpkd_bench.console import set_quiet
from dpkd_bench.errors import Terminated, UserError
from dpkd_bench.recipe import BUILTIN_RECIPES, DEFAULT_RECIPE, LAUNCHERS

# OpenMP threads that spin while waiting make small CPU models many times slower when another
# process shares the cores; passive waiting costs nothing when they don't. Set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def parse_seeds(text: str) -> list[int]:
    """``1,2,3`` -> [1, 2, 3]; empty items, non-integers and repeats are user errors."""
    parts = [s.strip() for s in text.split(",")]
    if not any(parts):
        raise UserError("--seeds is empty; give at least one integer, e.g. --seeds 1")
    try:
        seeds = [int(s) for s in parts]
    except ValueError:
        raise UserError(
            f"--seeds '{text}' is not a comma-separated list of integers; e.g. --seeds 1,2,3"
        ) from None
    repeats = sorted({s for s in seeds if seeds.count(s) > 1})
    if repeats:
        raise UserError(
            f"--seeds '{text}' repeats {', '.join(map(str, repeats))}; each seed trains its own "
            "units, so list each once, e.g. --seeds 1,2,3"
        )
    return seeds


def _method_list(text: str) -> list[str]:
    """Split ``a,b[k=1,j=2],c`` at commas outside brackets; ``all`` is every method."""
    from dpkd_bench.methods import METHODS

    if text.strip() == "all":
        return list(METHODS)
    names, depth, current = [], 0, ""
    for char in text:
        depth += {"[": 1, "]": -1}.get(char, 0)
        if char == "," and depth == 0:
            names.append(current.strip())
            current = ""
        else:
            current += char
    names.append(current.strip())
    return [n for n in names if n]


def method_names(args) -> list[str]:
    """--methods (``all`` or a list with variants) with --sweep's grid expanded; [] for none."""
    from dpkd_bench.methods import expand_sweeps
    from dpkd_bench.recipe import load_recipe

    if not (args.methods or args.sweep):
        return []
    names = _method_list(args.methods) if args.methods else load_recipe(args.recipe).methods
    try:
        return expand_sweeps(names, args.sweep or [])
    except yaml.YAMLError:
        raise UserError(
            f"--methods '{args.methods}' has a variant value that is not valid YAML; write "
            "variants as name[key=value,...], e.g. dpkd[beta=0.05]"
        ) from None


def run_overrides(args, grid: bool = True) -> list[str]:
    """CLI flags as recipe overrides (flags win over the recipe file and key=value pairs);
    ``grid``: --methods, --sweep and --seeds among them."""
    overrides = list(args.overrides)
    names = method_names(args) if grid else []
    if names:
        overrides.append("methods=" + json.dumps(names))
    if args.seeds and grid:
        overrides.append(f"seeds=[{','.join(map(str, parse_seeds(args.seeds)))}]")
    if args.launcher:
        overrides.append(f"launcher.name={args.launcher}")
    return overrides


def cmd_run(args) -> int:
    from dpkd_bench.methods import load_plugins
    from dpkd_bench.preflight import check_run
    from dpkd_bench.recipe import load_recipe
    from dpkd_bench.runner import Runner

    load_plugins(args.plugin)  # before --methods and --sweep name them
    if args.extend:
        from dpkd_bench.extend import extended_recipe

        if args.out or args.resume:
            raise UserError(
                "--extend DIR continues DIR with the run's own recipe (--recipe: the settings of "
                "the methods added); drop --out and --resume"
            )
        seeds = parse_seeds(args.seeds) if args.seeds else []
        recipe = extended_recipe(
            args.extend,
            method_names(args),
            seeds,
            run_overrides(args, grid=False),
            args.plugin,
            source=args.recipe,
        )
    else:
        recipe = load_recipe(args.recipe, run_overrides(args), args.plugin)
    if args.dry_run:
        from dpkd_bench.planner import format_plan, plan

        print(format_plan(plan(recipe)))
        return 0
    out = Path(args.extend or args.out or f"runs/{recipe.name}-{datetime.now():%Y%m%d-%H%M%S}")
    check_run(recipe, out)  # --out, eval backend, configs and tokenizers: before any training
    if out.exists() and any(out.iterdir()) and not (args.resume or args.extend):
        raise UserError(
            f"output directory {out} is not empty; pass --resume to continue that run "
            "or choose another --out"
        )
    command = shlex.join(["dpkd-bench", *args.argv])
    runner = Runner(recipe, out, resume=args.resume, command=command, extend=bool(args.extend))
    if recipe.launcher.name == "local":
        return runner.run()
    from dpkd_bench.launchers import launch_units

    return runner.run(launch_units)


def cmd_tune(args) -> int:
    from dpkd_bench.methods import load_plugins
    from dpkd_bench.preflight import check_run
    from dpkd_bench.recipe import load_recipe
    from dpkd_bench.tune_run import tune

    load_plugins(args.plugin)
    if args.trials is not None:
        args.overrides = [*args.overrides, f"tune.trials={args.trials}"]
    recipe = load_recipe(args.recipe, run_overrides(args), args.plugin)
    out = Path(args.out or f"runs/tune-{recipe.name}-{datetime.now():%Y%m%d-%H%M%S}")
    check_run(recipe, out)
    if out.exists() and any(out.iterdir()) and not args.resume:
        raise UserError(
            f"output directory {out} is not empty; pass --resume to continue that tuning or "
            "choose another --out"
        )
    command = shlex.join(["dpkd-bench", *args.argv])
    launch = None
    if recipe.launcher.name != "local":
        from dpkd_bench.launchers import launch_units as launch
    status = tune(recipe, out, args.resume, command, launch)
    if status == 0:
        print(out / "tuned.yaml")
    return status


def check_has_results(target) -> None:
    """A user error unless the run directory ``target`` holds a finished unit's results."""
    from dpkd_bench.report.view import load_run
    from dpkd_bench.results import RunDir

    if not load_run(RunDir(target)).units:
        raise UserError(
            f"{target} holds no unit results (no runs/<method>/seed-<k>/metrics.json of a "
            "finished unit), so there is nothing to report; finish the run first (dpkd-bench "
            f"run --resume --out {target}) or pass the directory of a finished run"
        )


def cmd_report(args) -> int:
    from dpkd_bench.report import render

    target = args.dirs[0]
    if len(args.dirs) > 1 or args.out:
        from dpkd_bench.report.merge import merge_runs

        if not args.out:
            raise UserError(
                "several run directories are merged into a new one; name it with --out DIR"
            )
        target = merge_runs(args.dirs, args.out)
    from dpkd_bench.report.tuning import is_tuning_run
    from dpkd_bench.results import RunDir

    if not is_tuning_run(RunDir(target)):
        check_has_results(target)
    paths = render(target)
    if args.archive:
        from dpkd_bench.report.archive import archive_run, differing_tables

        archive = archive_run(target, args.archive)
        paths = render(archive)
        differ = differing_tables(target, archive)
        if differ:
            raise RuntimeError(
                f"the archive {archive} renders other tables than {target}: {', '.join(differ)}"
            )
    for path in paths:
        print(path)
    return 0


def cmd_ls(args) -> int:
    from dpkd_bench.data.loaders import EVAL_SOURCES
    from dpkd_bench.data.synthetic import EVAL_SETS
    from dpkd_bench.methods import METHODS, PLUGIN_SOURCES, load_plugins

    load_plugins(args.plugin)
    print("methods:")
    for name, cls in METHODS.items():
        info = cls().describe()
        if name in PLUGIN_SOURCES:
            info["paper"] = f"{info['paper']} [plugin: {PLUGIN_SOURCES[name]['source']}]"
        defaults = ", ".join(f"{k}={v}" for k, v in info["defaults"].items()) or "-"
        print(f"  {name:<11} {info['paper']}")
        print(f"  {'':<11} trains on: {info['data']}")
        print(f"  {'':<11} student dropout: {info['dropout']}")
        print(f"  {'':<11} defaults: {defaults}")
        space = ", ".join(f"{k} in {list(v)}" for k, v in cls.search_space.items())
        print(f"  {'':<11} tune: the learning rate{f', {space}' if space else ''}")
        if info["deviation"]:
            print(f"  {'':<11} differs from the official code: {info['deviation']}")
    print("eval sets:")
    for name in EVAL_SETS:
        print(f"  {name:<15} embedded synthetic suite")
    for name, source in EVAL_SOURCES.items():
        print(f"  {name:<15} Hub dataset {source.hub} ({source.file}): {source.about}")
    print(f"  {'':<15} or a local copy / your own set: data.eval_paths.NAME=DIR")
    print("recipes:")
    for name in BUILTIN_RECIPES:
        print(f"  {name}{' (default)' if name == DEFAULT_RECIPE else ''}")
    return 0


def cmd_validate(args) -> int:
    from dpkd_bench.planner import train_text
    from dpkd_bench.recipe import load_recipe

    recipe = load_recipe(args.recipe, args.overrides, args.plugin)
    print(f"ok: recipe '{recipe.name}': methods {', '.join(recipe.methods)}; seeds {recipe.seeds}")
    print("training settings per method:")
    for name in recipe.methods:
        print(f"  {name}: {train_text(recipe.unit_train(name))}")
    if recipe.tuned is not None:
        print(f"  ({recipe.tuned.describe()})")
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse with the contract's one-line ``error:`` report (exit status 2)."""

    def error(self, message: str):
        self.exit(2, f"error: {message}; see `{self.prog} --help`\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="dpkd-bench", description="Benchmark knowledge-distillation methods for LMs."
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    run = sub.add_parser("run", help="train and evaluate methods (default: synthetic benchmark)")
    run.add_argument("--recipe", help=f"recipe YAML or built-in name {BUILTIN_RECIPES}")
    run.add_argument("--methods", help="comma-separated method names, or 'all'")
    run.add_argument(
        "--sweep",
        action="append",
        metavar="METHOD.KEY=V1,V2",
        help="grid of named variants, e.g. --sweep dpkd.beta=0.05,0.1 (repeatable)",
    )
    run.add_argument("--seeds", help="comma-separated training seeds, e.g. 1,2,3")
    run.add_argument("--out", help="run directory (default: runs/<recipe>-<time>)")
    run.add_argument("--resume", action="store_true", help="continue the run in --out")
    run.add_argument(
        "--extend",
        metavar="DIR",
        help="add --methods and/or --seeds to the finished run in DIR (its recipe, teacher and "
        "student_init; with --recipe, the added methods' settings from that recipe); trains "
        "only the new units",
    )
    run.add_argument(
        "--launcher",
        choices=LAUNCHERS,
        help="where the units run: here one after another (local, the default), one Ray task "
        "each (ray), one SLURM job each (slurm); settings under launcher.* in the recipe",
    )
    run.add_argument(
        "--quiet",
        action="store_true",
        help="print warnings and errors only (no progress lines or bars)",
    )
    run.add_argument(
        "--dry-run",
        action="store_true",
        help="print per-method tokens, teacher forwards, steps, FLOPs and memory; train nothing",
    )
    run.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. train.steps=200")
    tune = sub.add_parser(
        "tune",
        help="tune every method with the same number of trials on the dev split; writes a "
        "tuned recipe",
    )
    tune.add_argument("--recipe", help=f"recipe YAML or built-in name {BUILTIN_RECIPES}")
    tune.add_argument("--methods", help="comma-separated method names, or 'all'")
    tune.add_argument("--trials", type=int, help="trials per method (the recipe's tune.trials)")
    tune.add_argument("--out", help="run directory (default: runs/tune-<recipe>-<time>)")
    tune.add_argument("--resume", action="store_true", help="continue the tuning in --out")
    tune.add_argument("--launcher", choices=LAUNCHERS, help="where the trials run (as for run)")
    tune.add_argument("--quiet", action="store_true", help="print warnings and errors only")
    tune.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. tune.lr_points=4")
    tune.set_defaults(func=cmd_tune, seeds=None, sweep=None)
    ls = sub.add_parser("ls", help="list methods, eval sets and recipes")
    validate = sub.add_parser("validate", help="check a recipe without running it")
    for command in (run, tune, ls, validate):
        command.add_argument(
            "--plugin",
            action="append",
            default=[],
            metavar="FILE.py|MODULE",
            help="register the methods of a .py file or module (repeatable)",
        )
    run.set_defaults(func=cmd_run)
    report = sub.add_parser(
        "report", help="re-render tables and plots of a run directory, or merge several into one"
    )
    report.add_argument("dirs", nargs="+", metavar="DIR")
    report.add_argument("--out", help="merge the DIRs (same data, teacher, student_init) here")
    report.add_argument(
        "--archive",
        metavar="DIR",
        help="also copy what the report reads (manifest, per-unit metrics and per-example "
        "scores, logs, the generations shown; no weights) into DIR, a report to check in "
        "that `dpkd-bench report DIR` re-renders to the same tables",
    )
    report.set_defaults(func=cmd_report)
    ls.set_defaults(func=cmd_ls)
    validate.add_argument("recipe")
    validate.add_argument("overrides", nargs="*", metavar="key=value")
    validate.set_defaults(func=cmd_validate)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = build_parser().parse_args(argv)
        args.argv = argv
    except SystemExit as done:  # --help, or a usage error already reported on one line
        return done.code if isinstance(done.code, int) else 2
    set_quiet(getattr(args, "quiet", False))
    try:
        return args.func(args)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as stop:
        why = str(stop) or "interrupted"  # Terminated says at which step it checkpointed
        print(f"error: {why}; rerun with --resume --out DIR to continue", file=sys.stderr)
        return 143 if isinstance(stop, Terminated) else 130


if __name__ == "__main__":
    sys.exit(main())
