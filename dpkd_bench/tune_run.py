"""Running ``dpkd-bench tune``: the two stages of trials in one run directory, then the report.

The protocol is :mod:`dpkd_bench.tune`'s. Stage 1 is a run of every method's grid trials
(``tuning_run``, one seed); stage 2 extends that run with the trials stage 1's dev scores call
for. ``tuning.json`` in the run directory names each method's trials by stage; the report
(:mod:`dpkd_bench.report.tuning`) reads it with the trials' metrics and writes the trials table,
the plot and the tuned recipe.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from dpkd_bench.console import log
from dpkd_bench.errors import UserError
from dpkd_bench.recipe import Recipe
from dpkd_bench.results import RunDir, read_json, unit_training, write_json
from dpkd_bench.tune import PLAN, TUNED, first_stage, lr_grid, search_space, second_stage
from dpkd_bench.variants import parse_variant


def trial_recipe(recipe: Recipe, trials: list[str]) -> Recipe:
    """The run of ``trials``: one seed (``tune.seed``), scored on the dev split only; with
    validation off in the recipe, each trial is scored at its start and its end (or once per
    epoch, when the recipe counts epochs)."""
    train = recipe.train
    if not train.eval_every:
        every = -1 if train.epochs else max(train.steps, 1)
        train = dataclasses.replace(train, eval_every=every)
    return dataclasses.replace(
        recipe, methods=trials, seeds=[recipe.tune.seed], tuning_run=True, train=train
    )


def trial_score(run_dir: RunDir, name: str, seed: int) -> float | None:
    """The dev score of the weights trial ``name`` kept; None until it has one."""
    dev = unit_training(run_dir, name, seed).get("dev")
    return None if not dev else dev.get("selected_score")


def stage_scores(run_dir: RunDir, spec: str, recipe: Recipe) -> dict[float, float]:
    """Stage 1's dev scores of method ``spec``, by learning rate."""
    scores = {}
    for name in first_stage(spec, recipe.tune):
        score = trial_score(run_dir, name, recipe.tune.seed)
        if score is None:
            raise UserError(
                f"trial {name} has no dev score, so stage 2 of the tuning cannot be chosen; "
                f"finish it with `dpkd-bench tune --resume --out {run_dir.root}`"
            )
        scores[float(parse_variant(name)[1]["train.lr"])] = score
    return scores


def check_space(spec: str) -> None:
    """A user error unless method ``spec``'s search space is one the protocol can run."""
    try:
        search_space(parse_variant(spec)[0])
    except ValueError as err:
        raise UserError(f"cannot tune {spec}: {err}; declare at most two knobs") from None


def check_resumable(run_dir: RunDir, recipe: Recipe) -> None:
    """A user error unless the tuning run in ``run_dir`` was made with ``recipe`` (its trials
    aside)."""
    from dpkd_bench.manifest import recipe_changes

    manifest = run_dir.load_manifest()
    if not (manifest.get("recipe") or {}).get("tuning_run"):
        raise UserError(
            f"{run_dir.root} is not a tuning run (made by `dpkd-bench run`); resume it with "
            "`dpkd-bench run --resume`, or give `tune` another --out"
        )
    trials = trial_recipe(recipe, list(manifest["recipe"]["methods"]))
    changes = recipe_changes(manifest, trials, ignoring=("launcher",))
    if changes:
        raise UserError(
            f"cannot resume the tuning in {run_dir.root}: the recipe differs from its "
            f"({'; '.join(changes[:3])}); resume with the tuning's recipe and overrides"
        )


def _stage(run_dir: RunDir, plan: dict, key: str, runner, launch) -> int:
    """Run one stage's runner; its wall time is added to the plan's ``wall_s``."""
    started = time.time()
    status = runner.run(launch)
    plan["wall_s"][key] = round(plan["wall_s"].get(key, 0.0) + time.time() - started, 2)
    write_json(run_dir.root / PLAN, plan)
    return status


def tune(recipe: Recipe, out: Path, resume: bool, command: str | None, launch=None) -> int:
    """Run both stages of the tuning of ``recipe.methods`` into ``out``; the exit status."""
    from dpkd_bench.manifest import plain_recipe
    from dpkd_bench.runner import Runner

    run_dir, specs = RunDir(out), list(recipe.methods)
    for spec in specs:  # a plugin's search space is checked before anything trains
        check_space(spec)
    exists = resume and run_dir.is_run()
    if exists:
        check_resumable(run_dir, recipe)
    (run_dir.root / TUNED).unlink(missing_ok=True)  # written again once every trial has run
    before = read_json(run_dir.root / PLAN) if exists else None
    plan = {
        "recipe": plain_recipe(recipe),  # the tuned recipe is this one, with the chosen settings
        "methods": {s: {"stage1": first_stage(s, recipe.tune), "stage2": []} for s in specs},
        "wall_s": (before or {}).get("wall_s", {}),
    }
    run_dir.root.mkdir(parents=True, exist_ok=True)
    write_json(run_dir.root / PLAN, plan)
    stage1 = [name for entry in plan["methods"].values() for name in entry["stage1"]]
    log(f"tune: stage 1, {len(stage1)} trials (learning rates {lr_grid(recipe.tune)})")
    first = Runner(trial_recipe(recipe, stage1), out, resume=exists, command=command, extend=exists)
    status = _stage(run_dir, plan, "stage1", first, launch)
    if status:
        return status
    for spec in specs:
        scores = stage_scores(run_dir, spec, recipe)
        plan["methods"][spec]["stage2"] = second_stage(spec, recipe, scores)
    plan["planned"] = True  # both stages known: the report may write the tuned recipe
    stage2 = [name for entry in plan["methods"].values() for name in entry["stage2"]]
    write_json(run_dir.root / PLAN, plan)
    if not stage2:
        return 0
    log(f"tune: stage 2, {len(stage2)} trials")
    second = Runner(trial_recipe(recipe, [*stage1, *stage2]), out, command=command, extend=True)
    return _stage(run_dir, plan, "stage2", second, launch)
