"""(recipe, method, seed) -> data -> models -> train -> evaluate -> results.

Setup, once per run (:meth:`Runner.setup`, :mod:`dpkd_bench.shared_stage`): the data, the
teacher, ``student_init``, their reference evaluations and what the methods share beyond the
data. Then one unit per (method, seed): train, evaluate (:mod:`dpkd_bench.evaluation`); then
the report. Every stage's wall time goes into the manifest (:mod:`dpkd_bench.manifest`).

Resume (``resume=True``, the CLI's ``--resume``): the run directory's manifest must hold the same
recipe and data; units whose state is "done" and that have metrics.json are skipped, the others
continue from their checkpoint, ``student_init`` is loaded from the run directory and the
reference evaluations are skipped when their metrics.json exist. A failing unit is marked
failed in the manifest with its error and the others go on; the run then ends with one
``error:`` line on stderr naming the failed units, and ``run`` returns 1.

Launchers (``recipe.launcher``, the CLI's ``--launcher``): ``local`` runs the units here, one
after another; ``ray`` and ``slurm`` (:mod:`dpkd_bench.launchers`) run each unit as a job of its
own once setup is done, on workers that load what setup made (:meth:`Runner.unit_inputs`) from
the run directory and the cache, and hold the unit's lock while they write it.

Several processes (``accelerate launch`` or ``torchrun``): every stage runs on every process,
the main process alone writes files (:mod:`dpkd_bench.processes`). Teacher samples drawn by
N > 1 processes are cached under their own name; those of a single process (or shipped with the
package) are used by runs of any process count.
"""

from __future__ import annotations

import contextlib
import copy
import socket
import sys
import time
import traceback
from dataclasses import asdict
from pathlib import Path

import torch

from dpkd_bench import console
from dpkd_bench.checkpoint import (
    CHECKPOINT,
    checkpoint_step,
    remove_dir,
    remove_unfinished,
    trim_log,
)
from dpkd_bench.console import log
from dpkd_bench.dev import DevSet
from dpkd_bench.errors import UserError, describe_error, is_disk_full
from dpkd_bench.evaluation import Evaluator
from dpkd_bench.lock import run_lock
from dpkd_bench.manifest import Manifest, git_commit, plain_recipe, thread_settings
from dpkd_bench.methods import get_method
from dpkd_bench.methods.base import Method
from dpkd_bench.preflight import check_eval_backend, check_launcher
from dpkd_bench.processes import Processes, Training, fit
from dpkd_bench.recipe import Recipe, dump_yaml
from dpkd_bench.results import (
    TRAIN_LOG,
    RunDir,
    atomic_write_text,
    check_method_name,
    unit_key,
)
from dpkd_bench.shared_stage import RunInputs, SharedStage
from dpkd_bench.teacher import cache_root, unit_items
from dpkd_bench.train import check_shardable
from dpkd_bench.variants import parse_variant


class Runner(SharedStage):
    """Runs one recipe into one run directory."""

    def __init__(
        self,
        recipe: Recipe,
        out: Path,
        cache_dir: Path | None = None,
        resume: bool = False,
        worker: bool = False,
        command: str | None = None,
        extend: bool = False,
    ):
        self.procs = Processes()
        console.library_bars()
        unit_trains = [recipe.unit_train(name) for name in recipe.methods]
        for cfg in (*unit_trains, recipe.student.init_train):
            check_shardable(cfg.batch_size, self.procs.count)
        check_eval_backend(recipe, self.procs.count)
        if not worker:
            check_launcher(recipe.launcher, out, cache_dir, self.procs.count)
        self.recipe = recipe
        self.run_dir = RunDir(self.procs.from_main(Path(out)))  # a default --out names a time
        self.resume = resume or extend
        self.extend = extend  # more methods or seeds than the resumed run (`run --extend`)
        self.cache = cache_dir or cache_root()
        # a launcher's worker writes its unit's entry in the manifest, no stage times
        self.manifest = Manifest(self.run_dir, self.procs.main and not worker, command)
        self.evaluator = Evaluator(recipe, self.procs, self.run_dir)
        # the code this process loaded: a grown or resumed run's units may come from later commits
        self.commit = git_commit()
        self.methods = {name: self._method(name) for name in recipe.methods}
        self.unit_fields = {"launcher": recipe.launcher.name}  # recorded with every unit
        self.teacher_dir = recipe.teacher.model.name_or_path  # or where setup finds it

    def _method(self, spec: str) -> Method:
        """Unknown names and bad values fail here, before anything trains."""
        check_method_name(spec)
        base, _ = parse_variant(spec)
        return get_method(spec, **self.recipe.method_args.get(base, {}))

    def run(self, launch=None) -> int:
        """Train and evaluate every unit, then render the report; one writer per run
        directory (``dpkd_bench.lock``). ``launch(runner) -> failed unit keys`` makes the shared
        stage and runs the units on a launcher (:func:`dpkd_bench.launchers.launch_units`, for
        ``launcher.name`` ray or slurm); without it they run here, one after another."""
        if launch is None and self.recipe.launcher.name != "local":
            raise UserError(
                f"launcher {self.recipe.launcher.name} needs Runner.run(launch_units) (from "
                "dpkd_bench.launchers); `dpkd-bench run --launcher` passes it"
            )
        with run_lock(self.run_dir.root, enabled=self.procs.main):
            return self._run(launch)

    def _run(self, launch) -> int:
        start = time.time()
        failed = self.run_units(self.setup()) if launch is None else launch(self)
        report_error = self._finish(time.time() - start) if self.procs.main else None
        self.procs.wait()
        if failed or report_error:
            if self.procs.main:
                units = len(self.recipe.seeds) * len(self.methods)
                summary = self.manifest.failure_summary(failed, units, report_error)
                print(summary, file=sys.stderr, flush=True)
            return 1
        return 0

    # ---- units -------------------------------------------------------------------------
    def run_units(self, inputs: RunInputs) -> list[str]:
        """Every unit here, one after another (the local launcher); the failed units' keys."""
        failed = []
        threads = self.recipe.launcher.cpus_per_unit
        previous = torch.get_num_threads()
        if threads:
            torch.set_num_threads(threads)
        try:
            for seed in self.recipe.seeds:
                for name, method in self.methods.items():
                    if not self.run_unit(name, method, seed, inputs):
                        failed.append(unit_key(name, seed))
        finally:
            torch.set_num_threads(previous)
        return failed

    def run_unit(self, name: str, method: Method, seed: int, inputs: RunInputs) -> bool:
        """Train and evaluate one (method, seed); False when it failed (recorded, not raised)."""
        if self.resume and self.procs.from_main(self.manifest.unit_done(name, seed)):
            log(f"{name} seed {seed}: done already")
            return True
        record = self.manifest.record_unit
        running = {"state": "running", "error": None, **self.unit_fields}
        where = {
            "host": socket.gethostname(),
            "threads": thread_settings(),
            "git_commit": self.commit,
        }
        self.procs.on_main(record, name, seed, {**running, **where})
        unit_dir, start = self.run_dir.unit_dir(name, seed), time.time()
        try:
            with self.tracking(name, seed, method) as trackers:
                model, train_info = self.train_unit(name, method, seed, inputs, trackers)
                if self.recipe.tuning_run:  # a trial: its dev curve is its result
                    self.procs.on_main(self.evaluator.record_trial, name, seed, train_info)
                    self.procs.wait()
                    return self.unit_done(name, seed, start, train_info)
                metrics = self.evaluator.evaluate(
                    model, inputs.data, name, seed, unit_dir / "student", train_info
                )
                settings = unit_settings(method, train_info["settings"])
                card = (name, seed, settings, unit_dir / "student", metrics["eval"])
                self.procs.on_main(self.write_card, *card)
                if trackers is not None:
                    trackers.scores(metrics["eval"], train_info["steps"])
        except Exception as err:  # one failing unit must not lose the others
            failure = {
                "state": "failed",
                "error": describe_error(err),
                "wall_s": round(time.time() - start, 2),
            }
            if self.procs.main:  # no barrier: a process failing alone must not wait for the others
                with contextlib.suppress(OSError):  # a full disk: the log line below says it
                    record(name, seed, failure)
            log(f"{name} seed {seed}: FAILED ({describe_error(err)})")
            return False
        return self.unit_done(name, seed, start, train_info)

    def unit_done(self, name: str, seed: int, start: float, train_info: dict) -> bool:
        """Mark a finished unit done in the manifest and drop its checkpoint; True."""
        wall = time.time() - start
        done = {"state": "done", "error": None, "wall_s": round(wall, 2)}
        done["skipped_steps"] = train_info["skipped_steps"]
        done["resumed_from_step"] = train_info["resumed_from_step"]
        self.procs.on_main(self.manifest.record_unit, name, seed, done)
        self.procs.on_main(remove_dir, self.run_dir.unit_dir(name, seed) / CHECKPOINT)
        self.manifest.stage_times[f"unit:{name}/seed-{seed}"] = round(wall, 2)
        log(f"{name} seed {seed}: {wall:.1f}s")
        return True

    @contextlib.contextmanager
    def tracking(self, name: str, seed: int, method: Method):
        """The unit's tracker runs (``train.report_to``; main process), finished on leaving;
        None without trackers."""
        names = self.recipe.unit_train(name).report_to
        if not names or not self.procs.main:
            yield None
            return
        from dpkd_bench.trackers import UnitTrackers

        config = {**plain_recipe(self.recipe), "unit": {"method": name, "seed": seed}}
        train = asdict(self.recipe.unit_train(name))  # epochs not resolved yet: before the data
        config["unit"]["settings"] = unit_settings(method, train)
        key = unit_key(name, seed)
        trackers = UnitTrackers(names, self.run_dir.root, key, self.recipe.name, config)
        try:
            yield trackers
        finally:
            trackers.finish()

    def train_unit(self, name: str, method: Method, seed: int, inputs: RunInputs, trackers=None):
        """Train one unit (from its checkpoint when resuming), save its student; (model, info).
        ``trackers`` get every record of its training log."""
        data, unit_dir = inputs.data, self.run_dir.unit_dir(name, seed)
        items = unit_items(method, data.train_items, inputs.samples)
        cfg = self.recipe.unit_train(name).for_items(len(items))
        config = dump_yaml({**method.describe(), "train": asdict(cfg)})
        label = f"{name} seed {seed}"
        resumed_from = self.procs.from_main(
            prepare_unit_dir(unit_dir, label, self.resume) if self.procs.main else None
        )
        self.procs.wait()
        self.procs.on_main(atomic_write_text, unit_dir / "config.yaml", config)
        self.procs.on_main(self.manifest.record_unit, name, seed, {"train": asdict(cfg)})
        model = self.starting_model(cfg, inputs, seed)
        job = Training(
            method,
            model,
            cfg,
            items,
            seed,
            desc=label,
            teacher=inputs.teacher if method.uses_teacher else None,
            dev_items=data.dev_items,
            log_path=unit_dir / TRAIN_LOG,
            on_record=trackers.log if trackers is not None else None,
            checkpoint_dir=unit_dir / CHECKPOINT,
            pretrain_items=inputs.pretrain_items,
            dev=self.dev_set(data) if cfg.eval_every else None,
        )
        result = fit(self.procs, job, data.tokenizer, self.recipe.sampling)
        if not self.recipe.tuning_run:  # a trial keeps its dev curve, not its weights
            self.procs.publish_model(model, data.tokenizer, unit_dir / "student")
        return model, {
            "steps": result.steps,
            "wall_s": round(result.wall_s, 2),
            "tokens": result.tokens,
            "skipped_steps": result.skipped_steps,
            "teacher_forwards": result.teacher_forwards,
            "resumed_from_step": resumed_from,
            "student_flops_per_step": self.flops_per_step(name),
            "settings": asdict(cfg),  # epochs resolved to steps
            **({"dev": result.dev} if result.dev is not None else {}),
        }

    def flops_per_step(self, name: str) -> float | None:
        """The planner's estimate of a step's student FLOPs (learning curves against FLOPs);
        None when the model sizes cannot be read here."""
        from dpkd_bench.planner import student_flops_per_step

        try:
            return student_flops_per_step(self.recipe, name)
        except Exception as err:  # an estimate must never fail a trained unit
            log(f"{name}: no FLOPs estimate ({type(err).__name__}: {err})")
            return None

    def starting_model(self, cfg, inputs: RunInputs, seed: int):
        """The model a unit trains: a copy of its seed's student_init, or ``cfg.init_from``."""
        if cfg.init_from is None:
            return copy.deepcopy(inputs.student_init[seed])
        from dpkd_bench.models import load_pretrained, preflight_models

        model = load_pretrained(cfg.init_from, self.recipe.student.model).to(self.procs.device)
        preflight_models(inputs.teacher, model, inputs.data.tokenizer, self.recipe.data.max_length)
        return model

    def dev_set(self, data) -> DevSet | None:
        """The dev split as training scores it (greedy, the eval section's lengths)."""
        if data.dev is None:
            return None
        cfg = self.recipe.eval
        references = [list(e.references) for e in data.dev.examples]
        return DevSet(
            data.dev.prompt_ids, references, data.tokenizer, cfg.max_new_tokens, cfg.batch_size
        )

    def _finish(self, total: float) -> str | None:
        """Close the manifest and render the report; the report's error, if it failed."""
        from dpkd_bench.report import render

        try:
            self.manifest.finish(total)
            self.manifest.timed("report", render, self.run_dir.root)
        except Exception as err:  # the results are on disk; `dpkd-bench report` redoes this
            if not isinstance(err, OSError) and not is_disk_full(err):
                traceback.print_exc()  # an internal fault: the trace is for its bug report
            return describe_error(err)
        log(f"done in {total:.1f}s: {self.run_dir.root / 'leaderboard.md'}")
        return None


def unit_settings(method: Method, train: dict) -> dict:
    """A unit's settings as its model card and trackers show them: the method's, and its
    training settings under ``train``."""
    return {**method.describe()["defaults"], "train": train}


def prepare_unit_dir(unit_dir: Path, label: str, resume: bool) -> int | None:
    """Clear what an earlier attempt left, except, on resume, its checkpoint and its train log
    up to that checkpoint's step; that step (None: the unit starts from step 0)."""
    remove_unfinished(unit_dir)
    checkpoint, log_path = unit_dir / CHECKPOINT, unit_dir / TRAIN_LOG
    step = checkpoint_step(checkpoint) if resume else None
    if step is None:
        remove_dir(checkpoint)
        log_path.unlink(missing_ok=True)
    else:
        trim_log(log_path, step)
        log(f"{label}: continuing from the checkpoint of step {step}")
    return step
