"""Evaluate a finished run's saved models again under another decoding, into a new run directory.

    .venv/bin/python benchmarks/sampled_eval.py RUN_DIR --out NEW_DIR [--gen-seeds 10,20,30,40,50]

The papers (MiniLLM, DistiLLM, DPKD) score by sampling at temperature 1 over five generation
seeds; the default recipe decodes greedily. This script loads every model ``RUN_DIR`` saved (the
teacher, each training seed's ``student_init``, every method's student of every seed), decodes
every eval set with ``eval.decoding=sample`` (or ``--decoding greedy``) over ``--gen-seeds`` with
the run's own evaluation code (:class:`dpkd_bench.evaluation.Evaluator`), and writes
``NEW_DIR`` as a run directory of its own: the same units, their training records and logs, the
new scores, and a manifest whose recipe states the new decoding. ``dpkd-bench report NEW_DIR``
(run at the end) then gives the leaderboard, its tiers and its corrected tests under that
decoding. Units already scored in ``NEW_DIR`` are kept, so an interrupted evaluation continues
where it stopped. Teacher-fidelity figures are left out (they do not depend on the decoding).
"""

from __future__ import annotations

import benchkit  # noqa: F401  (first: sets OMP_WAIT_POLICY before torch loads)

# isort: split
import argparse
import shutil
import sys
import time
from pathlib import Path

from benchkit import print_machine, saved_models

from dpkd_bench.console import log
from dpkd_bench.data.prepare import prepare_data
from dpkd_bench.errors import UserError
from dpkd_bench.evaluation import Evaluator
from dpkd_bench.manifest import git_commit
from dpkd_bench.models import load_pretrained
from dpkd_bench.processes import Processes
from dpkd_bench.recipe import resolve_recipe
from dpkd_bench.report import render
from dpkd_bench.results import METRICS, RunDir, cache_root, read_json

CARRIED = ("config.yaml", "train_log.jsonl")  # a unit's files the new directory keeps


def new_manifest(source: dict, recipe, command: list[str], source_dir: Path) -> dict:
    """The source run's manifest with the new evaluation's recipe and provenance."""
    manifest = {**source, "recipe": recipe.to_dict(), "command": command}
    manifest["evaluated_from"] = {
        "run": str(source_dir),
        "git_commit": git_commit(),
        "eval": {k: v for k, v in recipe.to_dict()["eval"].items() if k != "lm_eval"},
    }
    return manifest


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--decoding", choices=("sample", "greedy"), default="sample")
    parser.add_argument("--gen-seeds", default="10,20,30,40,50")
    args = parser.parse_args(argv)
    print_machine()
    source = RunDir(args.run_dir)
    manifest = source.load_manifest()
    if args.out.resolve() == args.run_dir.resolve():
        raise UserError("--out is the run itself; give a new directory for the re-evaluation")
    seeds = [int(s) for s in args.gen_seeds.split(",")]
    overrides = [
        f"eval.decoding={args.decoding}",
        f"eval.gen_seeds=[{','.join(map(str, seeds))}]",
        "eval.fidelity=false",
    ]
    recipe = resolve_recipe(dict(manifest["recipe"]), overrides)
    data = prepare_data(recipe, cache_root())
    if data.hashes != manifest.get("data_hashes"):
        raise UserError(
            f"the data prepared from {source.manifest_path}'s recipe does not hash as the run's "
            "did; re-evaluate with the dpkd-bench version that ran it"
        )
    target = RunDir(args.out)
    target.root.mkdir(parents=True, exist_ok=True)
    target.save_manifest(new_manifest(manifest, recipe, sys.argv, args.run_dir))
    evaluator = Evaluator(recipe, Processes(), target)
    start = time.perf_counter()
    for name, seed, path in saved_models(source, manifest, recipe):
        unit = target.unit_dir(name, seed)
        if (unit / METRICS).is_file():
            log(f"{name} seed {seed}: already evaluated in {args.out}")
            continue
        model = load_pretrained(path).eval()
        if name == "teacher":
            evaluator.teacher = model
        old = source.unit_dir(name, seed)
        train = read_json(old / METRICS).get("train") if (old / METRICS).is_file() else None
        scores = evaluator.evaluate(model, data, name, seed, path, train_info=train)["eval"]
        for carried in CARRIED:
            if (old / carried).is_file():
                shutil.copy2(old / carried, unit / carried)
        figures = ", ".join(f"{s} EM {m['exact_match']:.1f}" for s, m in scores.items())
        log(f"{name} seed {seed}: {figures} ({time.perf_counter() - start:.0f} s)")
    print(f"evaluation wall_s {time.perf_counter() - start:.1f}")
    render(target.root)
    print(f"report: {target.root / 'leaderboard.md'}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
