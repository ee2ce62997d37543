"""The shared stage of a run: what every unit uses, made once before any unit trains.

Data (suite, tokenizer), the teacher (:mod:`dpkd_bench.teacher`: loaded, or trained by the
supervised method and cached by content hash), ``student_init`` (a short supervised fine-tuning
shared by every method of the run), the reference evaluations of both (with their model cards),
then what the methods share beyond the data, each made only when a method needs it: the
pre-training corpus, the teacher samples (once per recipe, cached) and the teacher-logit cache.
A launcher's worker loads all of it from the run directory and the cache instead
(:meth:`SharedStage.unit_inputs`).

:class:`SharedStage` is the part of :class:`dpkd_bench.runner.Runner` that makes it; it uses the
runner's ``recipe``, ``procs``, ``run_dir``, ``manifest``, ``evaluator``, ``methods``, ``cache``
and ``resume``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from dpkd_bench.checkpoint import readable_dir, remove_unfinished
from dpkd_bench.console import log
from dpkd_bench.data.prepare import PreparedData, prepare_data
from dpkd_bench.data.pretrain import pretrain_chunks
from dpkd_bench.errors import UserError
from dpkd_bench.manifest import check_same_data
from dpkd_bench.methods import supervised_method
from dpkd_bench.model_card import model_info, write_card
from dpkd_bench.models import build_model, load_pretrained, preflight_models
from dpkd_bench.processes import Training, fit
from dpkd_bench.results import METRICS, file_sha256, unit_key
from dpkd_bench.teacher import TeacherSource


@dataclass
class RunInputs:
    """What setup gives every unit of the run."""

    data: PreparedData
    teacher: Any  # frozen
    student_init: Any  # every unit trains a copy
    samples: list[tuple[int, ...]] | None  # teacher samples, when a method uses them
    pretrain_items: list[dict]  # corpus chunks, when a method has a pre-training term


class SharedStage:
    """Makes (or, on a worker, loads) what every unit of the run uses."""

    def setup(self) -> RunInputs:
        """Data, teacher, student_init and their evaluations, and the methods' shared inputs."""
        timed = self.manifest.timed
        self.procs.wait()  # every process checked --out before any writes
        resumed = self.manifest.to_resume(self.recipe, self.resume, self.extend)
        with self.procs.main_first():  # the main process fills the data cache
            data = timed("data", prepare_data, self.recipe, self.cache)
        if resumed is not None:  # on every process: none may go on alone
            check_same_data(resumed, data.hashes, self.run_dir.root)
        self.procs.on_main(self.manifest.open, self.recipe, data, resumed)
        source = TeacherSource(self.recipe, data, self.procs, self.cache)
        self.teacher_dir = source.model_dir
        teacher = timed("teacher", source.load)
        self.evaluator.teacher = teacher
        student_init = self.saved_student_init()
        if student_init is None:
            student_init = timed("student_init", self.train_student_init, data)
        preflight_models(teacher, student_init, data.tokenizer, self.recipe.data.max_length)
        weights = self.run_dir.root / "student_init" / "model.safetensors"
        identity = (source.identity, file_sha256(weights) if self.procs.main else "")
        self.procs.on_main(self.manifest.record_models, *identity)
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
        seed, recipe = self.recipe.seeds[0], self.recipe
        metrics = self.evaluator.evaluate(model, data, name, seed, model_dir)
        if name != "teacher" or not recipe.teacher.model.name_or_path:  # not a Hub model's card
            cfg = recipe.teacher.train if name == "teacher" else recipe.student.init_train
            settings = {"train": dataclasses.asdict(cfg)}
            self.procs.on_main(self.write_card, name, seed, settings, model_dir, metrics["eval"])
        self.procs.on_main(self.manifest.record_unit, name, seed, {"state": "done", "error": None})

    def write_card(self, name: str, seed: int, settings: dict, model_dir, scores: dict) -> None:
        """The model card (README.md) of the model of ``name`` saved in ``model_dir``."""
        info = model_info(self.recipe, self.run_dir.root, name, settings, self.teacher_dir)
        write_card(model_dir, f"{self.recipe.name}/{unit_key(name, seed)}", scores, info)

    def unit_inputs(self) -> RunInputs:
        """On a launcher's worker: what setup made, loaded from the run directory and the cache;
        nothing is trained, sampled or evaluated here that setup did not already save."""
        root = self.run_dir.root
        data = prepare_data(self.recipe, self.cache)
        check_same_data(self.run_dir.load_manifest(), data.hashes, root)
        source = TeacherSource(self.recipe, data, self.procs, self.cache)
        self.teacher_dir = source.model_dir
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
