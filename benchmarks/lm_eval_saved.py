"""lm-evaluation-harness scores of a finished run's saved models, after the fact.

    .venv/bin/python benchmarks/lm_eval_saved.py RUN_DIR [--tasks a,b] [--seed 1]

Scores the teacher (from the cache, by the identity the manifest records, or its Hub name),
``student_init`` and every method's student of training seed ``--seed`` with the same code a
run with ``eval.lm_eval`` uses (:func:`dpkd_bench.lm_eval_scores.lm_eval_scores`), and prints
one Markdown row per model. Needs ``pip install -e ".[lm-eval]"``; reads the run, writes only
lm-eval's task folder under it.
"""

from __future__ import annotations

import benchkit  # noqa: F401  (first: sets OMP_WAIT_POLICY before torch loads)

# isort: split
import argparse
import sys
from pathlib import Path

from benchkit import print_machine, saved_models

from dpkd_bench.data.lm_eval_task import TASKS
from dpkd_bench.models import load_pretrained, load_tokenizer
from dpkd_bench.recipe import LmEvalConfig, resolve_recipe
from dpkd_bench.results import RunDir


def model_dirs(run: RunDir, manifest: dict, seed: int) -> dict[str, Path]:
    """Where each model of training seed ``seed`` is saved: teacher, student_init (its seed's,
    else the run's one), then every student."""
    recipe = resolve_recipe(dict(manifest["recipe"]))
    found: dict[str, Path] = {}
    for name, model_seed, path in saved_models(run, manifest, recipe):
        if model_seed == seed or (name in ("teacher", "student_init") and name not in found):
            found[name] = path
    return found


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    from dpkd_bench.lm_eval_scores import lm_eval_scores

    print_machine()
    run = RunDir(args.run_dir)
    cfg = LmEvalConfig(tasks=args.tasks.split(","))
    rows = []
    manifest = run.load_manifest()
    for name, path in model_dirs(run, manifest, args.seed).items():
        model = load_pretrained(path).eval()
        tokenizer = load_tokenizer(str(path))
        scores, seconds = lm_eval_scores(model, tokenizer, cfg, run.root, "cpu", name)
        figures = [
            f"{task}/{metric} {value:.3f}"
            for task, m in scores.items()
            for metric, value in m.items()
        ]
        rows.append(f"| {name} | " + " | ".join(figures) + f" | {seconds:.1f} s |")
    print(*rows, sep="\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
