"""The shared stage of a run: what every unit uses, made once before any unit trains.

Data (suite, tokenizer), the teacher (:mod:`dpkd_bench.teacher`: loaded, or trained by the
supervised method and cached by content hash), ``student_init`` (a short supervised fine-tuning
every method starts from: one per training seed with ``student.init_per_seed``, saved in
``DIR/student_init`` for the seed-1 one and ``DIR/student_init-seed-<k>`` for the others, else
one for the whole run in ``DIR/student_init``), the reference evaluations of both (with their
model cards),
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
from pathlib import Path
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
from dpkd_bench.recipe import Recipe
from dpkd_bench.results import METRICS, file_sha256, unit_key
from dpkd_bench.teacher import TeacherSource

INIT_DIR = "student_init"


def init_seeds(recipe: Recipe) -> dict[int, int]:
    """Each training seed's ``student_init`` seed (:meth:`StudentConfig.init_seed`)."""
    return {k: recipe.student.init_seed(recipe.data.seed, k) for k in recipe.seeds}


def student_init_dir(root: Path, recipe: Recipe, seed: int) -> Path:
    """Where the ``student_init`` of training seed ``seed`` is saved in the run ``root``."""
    return Path(root) / recipe.student.init_dir_name(recipe.data.seed, seed)


def reference_seeds(recipe: Recipe, name: str) -> list[int]:
    """The seeds the reference row ``name`` is evaluated under: every training seed for
    ``student_init`` when its weights vary by seed, else the first seed alone."""
    varies = name == INIT_DIR and recipe.student.varies_by_seed
    return list(recipe.seeds) if varies else [recipe.seeds[0]]


@dataclass
class RunInputs:
    """What setup gives every unit of the run."""

    data: PreparedData
    teacher: Any  # frozen
    student_init: dict[int, Any]  # training seed -> its starting model (every unit trains a copy)
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
        student_init = self.student_inits(data)
        first = student_init[self.recipe.seeds[0]]
        preflight_models(teacher, first, data.tokenizer, self.recipe.data.max_length)
        hashes = self.procs.from_main(self.init_hashes() if self.procs.main else None)
        self.procs.on_main(self.manifest.record_models, source.identity, hashes)
        references = [("teacher", teacher, source.model_dir, self.recipe.seeds[0])]
        for seed in reference_seeds(self.recipe, INIT_DIR):
            model_dir = str(student_init_dir(self.run_dir.root, self.recipe, seed))
            references.append((INIT_DIR, student_init[seed], model_dir, seed))
        if self.recipe.tuning_run:  # trials are scored on the dev split only
            references = []
        for name, model, model_dir, seed in references:
            if not self.reference_done(name, seed):
                stage = f"eval:{name}" if seed == self.recipe.seeds[0] else f"eval:{name}/{seed}"
                timed(stage, self.evaluate_reference, name, model, data, model_dir, seed)
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

    def student_inits(self, data: PreparedData) -> dict[int, Any]:
        """Every training seed's ``student_init``: the run's saved one when resuming, else
        trained now (once per distinct init seed)."""
        models: dict[int, Any] = {}
        seeds = init_seeds(self.recipe)
        for seed, init_seed in seeds.items():
            shared = next((m for k, m in models.items() if seeds[k] == init_seed), None)
            if shared is not None:
                models[seed] = shared
                continue
            models[seed] = self.saved_student_init(seed)
            if models[seed] is None:
                stage = INIT_DIR if seed == self.recipe.seeds[0] else f"{INIT_DIR}/{seed}"
                models[seed] = self.manifest.timed(stage, self.train_student_init, data, seed)
        return models

    def init_hashes(self) -> str | dict[str, str]:
        """The SHA-256 of ``student_init``'s weights; per training seed (``{"<k>": sha}``)
        when they vary by seed."""
        root, recipe = self.run_dir.root, self.recipe
        dirs = {str(k): student_init_dir(root, recipe, k) for k in recipe.seeds}
        sums = {d: file_sha256(d / "model.safetensors") for d in set(dirs.values())}
        hashes = {k: sums[d] for k, d in dirs.items()}  # one hash per saved model
        return hashes if recipe.student.varies_by_seed else hashes[str(recipe.seeds[0])]

    def saved_student_init(self, seed: int):
        """With ``resume``, the run's own ``student_init`` of ``seed`` when it was saved; else
        None."""
        where = student_init_dir(self.run_dir.root, self.recipe, seed)
        saved = self.procs.from_main(readable_dir(where, "model.safetensors"))
        if not self.resume or saved is None:
            return None
        log(f"{where.name}: reusing {saved}")
        return load_pretrained(saved, self.recipe.student.model)

    def train_student_init(self, data: PreparedData, seed: int):
        """The student the units of training seed ``seed`` start from, by the supervised
        method; saved in the run."""
        cfg = self.recipe.student
        init_seed = cfg.init_seed(self.recipe.data.seed, seed)
        self.procs.on_main(remove_unfinished, self.run_dir.root)
        model = build_model(cfg.model, data.tokenizer, seed=init_seed)
        if cfg.init_train.steps:
            method, items = supervised_method(), data.train_items
            where = student_init_dir(self.run_dir.root, self.recipe, seed).name
            train = cfg.init_train.for_items(len(items))
            job = Training(method, model, train, items, init_seed, desc=f"{where} sft")
            fit(self.procs, job, data.tokenizer, self.recipe.sampling)
        target = student_init_dir(self.run_dir.root, self.recipe, seed)
        self.procs.publish_model(model, data.tokenizer, target)
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

    def reference_done(self, name: str, seed: int) -> bool:
        """With ``resume``, whether the reference row ``name`` has its metrics.json."""
        metrics = self.run_dir.unit_dir(name, seed) / METRICS
        if self.resume and self.procs.from_main(metrics.is_file()):
            log(f"{name}: evaluated already")
            return True
        return False

    def evaluate_reference(
        self, name: str, model, data: PreparedData, model_dir: str, seed: int
    ) -> None:
        """Evaluate the reference row ``name`` (teacher or student_init) as unit ``seed``,
        saved at ``model_dir`` (or named so on the Hub)."""
        recipe = self.recipe
        metrics = self.evaluator.evaluate(model, data, name, seed, model_dir)
        if name != "teacher" or not recipe.teacher.model.name_or_path:  # not a Hub model's card
            cfg = recipe.teacher.train if name == "teacher" else recipe.student.init_train
            settings = {"train": dataclasses.asdict(cfg)}
            self.procs.on_main(self.write_card, name, seed, settings, model_dir, metrics["eval"])
        self.procs.on_main(self.manifest.record_unit, name, seed, {"state": "done", "error": None})

    def write_card(self, name: str, seed: int, settings: dict, model_dir, scores: dict) -> None:
        """The model card (README.md) of the model of ``name`` saved in ``model_dir``."""
        info = model_info(self.recipe, self.run_dir.root, name, settings, self.teacher_dir, seed)
        write_card(model_dir, f"{self.recipe.name}/{unit_key(name, seed)}", scores, info)

    def unit_inputs(self, seeds: list[int] | None = None) -> RunInputs:
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
        student_init, loaded = {}, {}
        for seed in seeds or self.recipe.seeds:  # a worker loads its unit's seed only
            where = student_init_dir(root, self.recipe, seed)
            if where not in loaded:
                loaded[where] = self.saved_student_init(seed)
            student_init[seed] = loaded[where]
            if student_init[seed] is None:
                raise UserError(
                    f"{student_init_dir(root, self.recipe, seed)} is not readable on this "
                    "worker; the run directory must be on storage every worker sees"
                )
        pretrain_items, samples = self.method_inputs(data, source, teacher)
        return RunInputs(data, teacher, student_init, samples, pretrain_items)
