"""A report that can be checked in: ``dpkd-bench report RUN --archive DIR``.

The archive holds what ``render`` reads and nothing more: the manifest; per finished unit its
``metrics.json``, per-example scores (``scores.csv.gz``, written from the generation files for
runs made before that file existed), ``fidelity.json``, ``train_log.jsonl`` and
``config.yaml``; and the generations the report shows (the first examples of each eval set,
from each method's lowest seed). No weights, checkpoints or other generations. The archive is
then rendered, and its tables must be byte for byte those of the run: ``dpkd-bench report
DIR`` re-renders it to the same tables later.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from dpkd_bench.errors import UserError
from dpkd_bench.report.samples import SAMPLES_PER_SET
from dpkd_bench.report.tuning import is_tuning_run
from dpkd_bench.report.view import (
    first_seed_units,
    load_run,
    read_generations,
    unit_example_scores,
)
from dpkd_bench.results import (
    EXAMPLE_SCORES,
    GENERATIONS,
    MANIFEST,
    METRICS,
    TRAIN_LOG,
    RunDir,
    parse_seed_dir,
    write_example_scores,
    write_jsonl,
)
from dpkd_bench.tune import PLAN

KEPT = (METRICS, "fidelity.json", TRAIN_LOG, "config.yaml")
TABLES = ("leaderboard.csv", "leaderboard.md", "leaderboard.tex", "families.csv")
# A tuning run's (dpkd-bench tune): its trials' metrics.json hold everything it reports; its
# tuned.yaml names the directory it was rendered in, so it is not compared.
TUNING_TABLES = ("trials.csv", "tuning.md")


def tables_of(root: str | Path) -> tuple[str, ...]:
    """The tables a rendered run directory is compared by."""
    return TUNING_TABLES if is_tuning_run(RunDir(root)) else TABLES


def archive_run(source: str | Path, target: str | Path) -> Path:
    """Copy what the report of the run ``source`` reads into the new directory ``target``."""
    view = load_run(RunDir(source))
    target = Path(target)
    if target.exists() and any(target.iterdir()):
        raise UserError(f"--archive {target} is not empty; choose a new directory")
    if not view.units:
        raise UserError(f"{source} holds no unit results; there is nothing to archive")
    out = RunDir(target)
    out.root.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(view.run.manifest_path, out.root / MANIFEST)
    if is_tuning_run(view.run):  # the plan and each trial's files; no eval set was decoded
        shutil.copyfile(view.run.root / PLAN, out.root / PLAN)
        for method, seed in view.units:
            _copy_kept(view.run.unit_dir(method, seed), out.unit_dir(method, seed))
        return target
    for method, seed in view.units:
        unit, copy = view.run.unit_dir(method, seed), out.unit_dir(method, seed)
        _copy_kept(unit, copy)
        if (unit / EXAMPLE_SCORES).is_file():
            shutil.copyfile(unit / EXAMPLE_SCORES, copy / EXAMPLE_SCORES)
        else:  # a run made before the file: from its generations
            write_example_scores(copy / EXAMPLE_SCORES, unit_example_scores(unit, view.eval_sets))
    for method, unit in first_seed_units(view).items():
        seed = parse_seed_dir(unit.name)
        for eval_set in view.eval_sets:
            shown = read_generations(unit, eval_set)[:SAMPLES_PER_SET]
            if shown:
                path = out.unit_dir(method, seed) / GENERATIONS / f"{eval_set}.jsonl"
                write_jsonl(path, shown)
    return target


def _copy_kept(unit: Path, copy: Path) -> None:
    copy.mkdir(parents=True, exist_ok=True)
    for name in KEPT:
        if (unit / name).is_file():
            shutil.copyfile(unit / name, copy / name)


def differing_tables(first: str | Path, second: str | Path) -> list[str]:
    """The rendered tables whose bytes differ between two rendered run directories."""
    return [
        name
        for name in tables_of(first)
        if (Path(first) / name).read_bytes() != (Path(second) / name).read_bytes()
    ]
