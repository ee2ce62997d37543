"""(recipe, method, seed) -> data -> models -> train -> evaluate -> results.

Setup, once per run (:meth:`Runner.setup`): the data (suite, tokenizer), the teacher
(:mod:`dpkd_bench.teacher`: loaded, or trained by the supervised method and cached by content
hash), ``student_init`` (a short supervised fine-tuning shared by every method of the run), the
reference evaluations of both, then what the methods share beyond the data, each made only when
a method needs it: the pre-training corpus, the teacher samples (once per recipe, cached) and
the teacher-logit cache. Then one unit per (method, seed): train, evaluate
(:mod:`dpkd_bench.evaluation`); then the report. Every stage's wall time goes into the manifest
(:mod:`dpkd_bench.manifest`).

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

import copy
import socket
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dpkd_bench.checkpoint import (
    CHECKPOINT,
    checkpoint_step,
    readable_dir,
    remove_dir,
    remove_unfinished,
    trim_log,
)
from dpkd_bench.data.prepare import PreparedData, prepare_data
from dpkd_bench.data.pretrain import pretrain_chunks
from dpkd_bench.errors import UserError
from dpkd_bench.evaluation import Evaluator
from dpkd_bench.lock import run_lock
from dpkd_bench.manifest import Manifest, check_same_data
from dpkd_bench.methods import get_method, supervised_method
from dpkd_bench.methods.base import Method
from dpkd_bench.models import build_model, load_pretrained, preflight_models
from dpkd_bench.preflight import check_eval_backend, check_launcher
from dpkd_bench.processes import Processes, Training, fit, log
from dpkd_bench.recipe import Recipe, dump_yaml
from dpkd_bench.results import (
    METRICS,
    TRAIN_LOG,
    RunDir,
    atomic_write_text,
    check_method_name,
    unit_key,
)
from dpkd_bench.teacher import TeacherSource, cache_root, unit_items
from dpkd_bench.train import check_shardable
from dpkd_bench.variants import parse_variant


@dataclass
class RunInputs:
    """What setup gives every unit of the run."""

    data: PreparedData
    teacher: Any  # frozen
    student_init: Any  # every unit trains a copy
    samples: list[tuple[int, ...]] | None  # teacher samples, when a method uses them
    pretrain_items: list[dict]  # corpus chunks, when a method has a pre-training term


class Runner:
    """Runs one recipe into one run directory."""

    def __init__(
        self,
        recipe: Recipe,
        out: Path,
        cache_dir: Path | None = None,
        resume: bool = False,
        worker: bool = False,
    ):
        self.procs = Processes()
        for cfg in (recipe.train, recipe.student.init_train):
            check_shardable(cfg.batch_size, self.procs.count)
        check_eval_backend(recipe, self.procs.count)
        if not worker:
            check_launcher(recipe.launcher, out, cache_dir, self.procs.count)
        self.recipe = recipe
        self.run_dir = RunDir(self.procs.from_main(Path(out)))  # a default --out names a time
        self.resume = resume
        self.cache = cache_dir or cache_root()
        # a launcher's worker writes its unit's entry in the manifest, no stage times
        self.manifest = Manifest(self.run_dir, self.procs.main and not worker)
        self.evaluator = Evaluator(recipe, self.procs, self.run_dir)
        self.methods = {name: self._method(name) for name in recipe.methods}
        self.unit_fields = {"launcher": recipe.launcher.name}  # recorded with every unit

    def _method(self, spec: str) -> Method:
        """Unknown names and bad values fail here, before anything trains."""
        check_method_name(spec)
        base, _ = parse_variant(spec)
        return get_method(spec, **self.recipe.method_args.get(base, {}))

    def run(self) -> int:
        """Train and evaluate every unit, then render the report; one writer per run
        directory (``dpkd_bench.lock``)."""
        with run_lock(self.run_dir.root, enabled=self.procs.main):
            return self._run()

    def _run(self) -> int:
        start = time.time()
        if self.recipe.launcher.name == "local":
            failed = self.run_units(self.setup())
        else:  # one job per unit on the launcher's workers, connected to before setup
            from dpkd_bench.launchers import launch, make_launcher

            launcher = make_launcher(self)
            try:
                self.setup()
                failed = launch(self, launcher)
            finally:
                launcher.close()
        report_error = self._finish(time.time() - start) if self.procs.main else None
        self.procs.wait()
        if failed or report_error:
            if self.procs.main:
                units = len(self.recipe.seeds) * len(self.methods)
                summary = self.manifest.failure_summary(failed, units, report_error)
                print(summary, file=sys.stderr, flush=True)
            return 1
        return 0

    # ---- setup -------------------------------------------------------------------------
    def setup(self) -> RunInputs:
        """Data, teacher, student_init and their evaluations, and the methods' shared inputs."""
        timed = self.manifest.timed
        self.procs.wait()  # every process checked --out before any writes
        resumed = self.manifest.to_resume(self.recipe, self.resume)
        with self.procs.main_first():  # the main process fills the data cache
            data = timed("data", prepare_data, self.recipe, self.cache)
        if resumed is not None:  # on every process: none may go on alone
            check_same_data(resumed, data.hashes, self.run_dir.root)
        self.procs.on_main(self.manifest.open, self.recipe, data, resumed)
        source = TeacherSource(self.recipe, data, self.procs, self.cache)
        teacher = timed("teacher", source.load)
        self.evaluator.teacher = teacher
        student_init = self.saved_student_init()
        if student_init is None:
            student_init = timed("student_init", self.train_student_init, data)
        preflight_models(teacher, student_init, data.tokenizer, self.recipe.data.max_length)
        references = (
            ("teacher", teacher, source.model_dir),
            ("student_init", student_init, str(self.run_dir.root / "student_init")),
        )
        for name, model, model_dir in references:
            if not self.reference_done(name):
                timed(f"eval:{name}", self.evaluate_reference, name, model, data, model_dir)
        pretrain_items, samples = self.method_inputs(data, source, teacher)
        return RunInputs(data, teacher, student_init, samples, pretrain_items)

    def method_inputs(self, data: PreparedData, source: TeacherSource, teacher):
        """What the methods share beyond the data, each made only when a method needs it: the
        pre-training corpus and the teacher's samples (returned), the teacher-logit cache
        (attached to the methods that read it)."""
        timed, methods = self.manifest.timed, self.methods.values()
        pretrain_items = []
        if any(m.config.pt_weight > 0 for m in methods):
            pretrain_items = timed("pretrain_corpus", self.pretrain_corpus, data)
        samples = None
        if any(m.uses_teacher_samples for m in methods):
            samples = timed("teacher_samples", source.samples, teacher)
        if any(m.uses_teacher_cache for m in methods):
            timed("teacher_cache", source.attach_caches, methods, teacher, samples)
        return pretrain_items, samples

    def saved_student_init(self):
        """With ``resume``, the run's own ``student_init`` when it was saved; else None."""
        saved = self.procs.from_main(
            readable_dir(self.run_dir.root / "student_init", "model.safetensors")
        )
        if not self.resume or saved is None:
            return None
        log(f"student_init: reusing {saved}")
        return load_pretrained(saved, self.recipe.student.model)

    def train_student_init(self, data: PreparedData):
        """The student every unit starts from, by the supervised method; saved in the run."""
        cfg, seed = self.recipe.student, self.recipe.data.seed + 1
        self.procs.on_main(remove_unfinished, self.run_dir.root)
        model = build_model(cfg.model, data.tokenizer, seed=seed)
        if cfg.init_train.steps:
            method, items = supervised_method(), data.train_items
            job = Training(method, model, cfg.init_train, items, seed, desc="student_init sft")
            fit(self.procs, job, data.tokenizer, self.recipe.sampling)
        self.procs.publish_model(model, data.tokenizer, self.run_dir.root / "student_init")
        return model

    def pretrain_corpus(self, data: PreparedData) -> list[dict]:
        """Chunks of the pre-training corpus (``data.pretrain_source``) as training items."""
        cfg = self.recipe.data
        chunks = pretrain_chunks(
            cfg.pretrain_source,
            data.tokenizer,
            max_length=cfg.max_length,
            max_chunks=cfg.pretrain_chunks,
            text_field=cfg.pretrain_text_field,
            seed=cfg.seed,
        )
        log(f"pre-training corpus: {len(chunks)} chunks of {cfg.max_length} tokens")
        return [{"chunks": chunk} for chunk in chunks]

    def reference_done(self, name: str) -> bool:
        """With ``resume``, whether the reference row ``name`` has its metrics.json."""
        metrics = self.run_dir.unit_dir(name, self.recipe.seeds[0]) / METRICS
        if self.resume and self.procs.from_main(metrics.is_file()):
            log(f"{name}: evaluated already")
            return True
        return False

    def evaluate_reference(self, name: str, model, data: PreparedData, model_dir: str) -> None:
        """Evaluate the reference row ``name`` (teacher or student_init), saved at
        ``model_dir`` (or named so on the Hub)."""
        seed = self.recipe.seeds[0]
        self.evaluator.evaluate(model, data, name, seed, model_dir)
        self.procs.on_main(self.manifest.record_unit, name, seed, {"state": "done", "error": None})

    def unit_inputs(self) -> RunInputs:
        """On a launcher's worker: what setup made, loaded from the run directory and the cache;
        nothing is trained, sampled or evaluated here that setup did not already save."""
        root = self.run_dir.root
        data = prepare_data(self.recipe, self.cache)
        check_same_data(self.run_dir.load_manifest(), data.hashes, root)
        source = TeacherSource(self.recipe, data, self.procs, self.cache)
        if not (self.recipe.teacher.model.name_or_path or source.dir.is_dir()):
            raise UserError(
                f"the teacher is not in the cache {self.cache} on this worker; put the cache on "
                "storage every worker sees (DPKD_BENCH_CACHE) and rerun with --resume"
            )
        teacher = source.load()
        self.evaluator.teacher = teacher
        student_init = self.saved_student_init()
        if student_init is None:
            raise UserError(
                f"{root / 'student_init'} is not readable on this worker; the run directory "
                "must be on storage every worker sees"
            )
        pretrain_items, samples = self.method_inputs(data, source, teacher)
        return RunInputs(data, teacher, student_init, samples, pretrain_items)

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
        self.procs.on_main(record, name, seed, {**running, "host": socket.gethostname()})
        unit_dir, start = self.run_dir.unit_dir(name, seed), time.time()
        try:
            model, train_info = self.train_unit(name, method, seed, inputs)
            self.evaluator.evaluate(
                model, inputs.data, name, seed, unit_dir / "student", train_info
            )
        except Exception as err:  # one failing unit must not lose the others
            failure = {
                "state": "failed",
                "error": f"{type(err).__name__}: {err}",
                "wall_s": round(time.time() - start, 2),
            }
            if self.procs.main:  # no barrier: a process failing alone must not wait for the others
                record(name, seed, failure)
            log(f"{name} seed {seed}: FAILED ({type(err).__name__}: {err})")
            return False
        wall = time.time() - start
        done = {"state": "done", "error": None, "wall_s": round(wall, 2)}
        done["skipped_steps"] = train_info["skipped_steps"]
        done["resumed_from_step"] = train_info["resumed_from_step"]
        self.procs.on_main(record, name, seed, done)
        self.procs.on_main(remove_dir, unit_dir / CHECKPOINT)
        self.manifest.stage_times[f"unit:{name}/seed-{seed}"] = round(wall, 2)
        log(f"{name} seed {seed}: {wall:.1f}s")
        return True

    def train_unit(self, name: str, method: Method, seed: int, inputs: RunInputs):
        """Train one unit (from its checkpoint when resuming), save its student; (model, info)."""
        data, unit_dir = inputs.data, self.run_dir.unit_dir(name, seed)
        label, config = f"{name} seed {seed}", dump_yaml(method.describe())
        resumed_from = self.procs.from_main(
            prepare_unit_dir(unit_dir, label, self.resume) if self.procs.main else None
        )
        self.procs.wait()
        self.procs.on_main(atomic_write_text, unit_dir / "config.yaml", config)
        model = copy.deepcopy(inputs.student_init)
        job = Training(
            method,
            model,
            self.recipe.train,
            unit_items(method, data.train_items, inputs.samples),
            seed,
            desc=label,
            teacher=inputs.teacher if method.uses_teacher else None,
            dev_items=data.dev_items,
            log_path=unit_dir / TRAIN_LOG,
            checkpoint_dir=unit_dir / CHECKPOINT,
            pretrain_items=inputs.pretrain_items,
        )
        result = fit(self.procs, job, data.tokenizer, self.recipe.sampling)
        self.procs.publish_model(model, data.tokenizer, unit_dir / "student")
        return model, {
            "steps": result.steps,
            "wall_s": round(result.wall_s, 2),
            "tokens": result.tokens,
            "skipped_steps": result.skipped_steps,
            "teacher_forwards": result.teacher_forwards,
            "resumed_from_step": resumed_from,
        }

    def _finish(self, total: float) -> str | None:
        """Close the manifest and render the report; the report's error, if it failed."""
        from dpkd_bench.report import render

        self.manifest.finish(total)
        try:
            self.manifest.timed("report", render, self.run_dir.root)
        except Exception as err:  # the results are on disk; `dpkd-bench report` redoes this
            traceback.print_exc()
            return f"{type(err).__name__}: {(str(err).splitlines() or [''])[0][:200]}"
        log(f"done in {total:.1f}s: {self.run_dir.root / 'leaderboard.md'}")
        return None


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
