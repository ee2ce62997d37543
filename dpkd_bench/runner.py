"""(recipe, method, seed) -> data -> models -> train -> evaluate -> results.

Stages, in order: data (suite, tokenizer), teacher (trained by ``sft`` and cached by content
hash, or loaded), ``student_init`` (a short ``sft`` shared by every method of the run), teacher
samples (once per recipe, cached, only when a method needs them), then one unit per (method,
seed), then the report. Every stage's wall time goes into the manifest.

Resume (``resume=True``, the CLI's ``--resume``): the run directory's manifest must hold the same
recipe and data; units whose state is "done" and that have metrics.json are skipped, the others
continue from their checkpoint, ``student_init`` is loaded from the run directory and the
reference evaluations are skipped when their metrics.json exist. A failing unit is marked
failed in the manifest with its error and the others go on; the run then ends with one
``error:`` line on stderr naming the failed units, and ``run`` returns 1.

Several processes (``accelerate launch`` or ``torchrun``): every stage runs on every process and
the run directory is one set of results. Training (teacher, ``student_init`` and the units)
shards each global batch over the processes (:mod:`dpkd_bench.train`); teacher samples and the
evaluation generations shard the prompts, each process with its own seed derived from the
recipe's, and gather them in prompt order. The main process alone writes files (models, logs,
generations, metrics, fidelity, manifest, report); the others wait for it where they read them.
Each process's on-policy sampling generator is seeded with ``seed + process_index``, so
on-policy methods (and any sampling: teacher samples, evaluation) are not bit-identical to a
single-process run; teacher-forced methods train to the same weights up to the order of float
additions. Teacher samples drawn by N > 1 processes are cached under their own name; those of a
single process (or shipped with the package) are used by runs of any process count.

Evaluation decodes with the built-in decoder, or, with ``eval.backend: vllm``, with one vLLM
engine per evaluated model, built on the directory where that model is saved (the unit's
``student/``, ``student_init/``, the cached or pretrained teacher) and released after its last
eval set; a run with that backend must be a single process (:mod:`dpkd_bench.vllm_backend`).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import subprocess
import sys
import time
import traceback
from contextlib import nullcontext
from dataclasses import asdict
from datetime import datetime, timezone
from functools import partial
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list, gather_object, set_seed

from dpkd_bench import __version__
from dpkd_bench.checkpoint import (
    CHECKPOINT,
    checkpoint_step,
    publish_dir,
    readable_dir,
    remove_dir,
    remove_unfinished,
    trim_log,
)
from dpkd_bench.data.prepare import EvalSet, PreparedData, prepare_data
from dpkd_bench.data.pretrain import pretrain_chunks
from dpkd_bench.errors import DataError, RecipeError, UserError
from dpkd_bench.fidelity import TeacherRows, write_fidelity
from dpkd_bench.generate import (
    DecodeSettings,
    generate_ids,
    generate_texts,
    shard_seed,
    shard_slice,
)
from dpkd_bench.methods import get_method, parse_variant
from dpkd_bench.methods.base import TEACHER_SAMPLES, Method, TrainContext
from dpkd_bench.metrics import mean_over_generations, score_examples
from dpkd_bench.models import build_model, freeze, load_pretrained, preflight_models, save_model
from dpkd_bench.preflight import check_eval_backend
from dpkd_bench.recipe import Recipe, SamplingConfig, TrainConfig, dump_yaml
from dpkd_bench.results import (
    METRICS,
    TRAIN_LOG,
    RunDir,
    atomic_write_bytes,
    atomic_write_text,
    check_method_name,
    unit_key,
    write_json,
    write_jsonl,
)
from dpkd_bench.teacher_cache import build_cache, items_hash
from dpkd_bench.train import BatchStream, check_shardable, train
from dpkd_bench.vllm_backend import VllmDecoder

PRETRAIN_SEED = 7919  # offsets a unit's seed for the order of its pre-training chunks
TEACHER_FORMAT = 1  # bump when teacher training changes in a way that invalidates caches


def cache_root() -> Path:
    root = os.environ.get("DPKD_BENCH_CACHE") or Path.home() / ".cache" / "dpkd-bench"
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def content_key(*parts) -> str:
    blob = json.dumps(parts, sort_keys=True, default=str).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()[:16]


def package_versions() -> dict[str, str]:
    import accelerate
    import datasets
    import transformers

    return {
        "dpkd_bench": __version__,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "accelerate": accelerate.__version__,
        "datasets": datasets.__version__,
    }


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def log(message: str) -> None:
    """One progress line on stderr (from the main process only, when there are several)."""
    if torch.distributed.is_initialized() and torch.distributed.get_rank() != 0:
        return
    print(f"[dpkd-bench] {message}", file=sys.stderr, flush=True)


def decode_settings(cfg) -> DecodeSettings:
    greedy = getattr(cfg, "decoding", "sample") == "greedy"
    return DecodeSettings(greedy, cfg.temperature, cfg.top_k, cfg.top_p, cfg.max_new_tokens)


class Runner:
    """Runs one recipe into one run directory."""

    def __init__(
        self, recipe: Recipe, out: Path, cache_dir: Path | None = None, resume: bool = False
    ):
        self.accelerator = Accelerator(cpu=not torch.cuda.is_available())
        self.main = self.accelerator.is_main_process
        self.processes = self.accelerator.num_processes
        for cfg in (recipe.train, recipe.student.init_train):
            check_shardable(cfg.batch_size, self.processes)
        check_eval_backend(recipe, self.processes)
        self.recipe = recipe
        self.run_dir = RunDir(self._from_main(Path(out)))  # a default --out names a time
        self.resume = resume
        self.cache = cache_dir or cache_root()
        self.stage_times: dict[str, float] = {}
        self.teacher = None  # set by run(): the frozen teacher, for fidelity figures
        self.teacher_rows = TeacherRows()  # its eval logits, shared by every unit's figures
        self.pretrain_items: list[dict] = []  # chunks of data.pretrain_source, when one is used
        self.methods = {name: self._method(name) for name in recipe.methods}

    def _method(self, spec: str) -> Method:
        """Unknown names and bad values fail here, before anything trains."""
        check_method_name(spec)
        base, _ = parse_variant(spec)
        return get_method(spec, **self.recipe.method_args.get(base, {}))

    # ---- several processes -------------------------------------------------------------
    def _from_main(self, value):
        """The main process's ``value``, on every process (a decision they must share)."""
        if self.processes == 1:
            return value
        return broadcast_object_list([value])[0]

    def _on_main(self, fn, *args) -> None:
        """``fn(*args)`` on the main process (a file write); the others wait for it."""
        if self.main:
            fn(*args)
        self.accelerator.wait_for_everyone()

    def _sharded(self, generate, prompts, seed: int, progress: str, **kwargs) -> list:
        """``generate(prompts, seed=..., ...)`` with the prompts shared out over the processes
        (each with its own seed), gathered back in prompt order."""
        if self.processes == 1:
            return generate(prompts, seed=seed, progress=progress, **kwargs)
        rank = self.accelerator.process_index
        part = list(prompts[shard_slice(len(prompts), rank, self.processes)])
        shown = progress if self.main else None
        return gather_object(generate(part, seed=shard_seed(seed, rank), progress=shown, **kwargs))

    # ---- manifest ----------------------------------------------------------------------
    def _manifest_to_resume(self) -> dict | None:
        """With ``resume``, the run's manifest once its recipe is this one; None otherwise."""
        root = self.run_dir.root
        if not self.resume:
            return None
        if not self.run_dir.is_run():
            if root.is_dir() and any(root.iterdir()):
                raise UserError(
                    f"cannot resume {root}: it is not a dpkd-bench run directory (no "
                    "manifest.json); pass the --out of an earlier `dpkd-bench run`, or drop "
                    "--resume and choose an empty --out"
                )
            log(f"nothing to resume in {root} (no run there yet): starting the run")
            return None
        manifest = self.run_dir.load_manifest()
        check_same_recipe(manifest, self.recipe, root)
        self.stage_times.update(manifest.get("stage_times") or {})
        self.stage_times.pop("total", None)
        return manifest

    def _open_manifest(self, data: PreparedData, manifest: dict | None) -> None:
        """Start a manifest, or continue the resumed run's once its data is this data."""
        if manifest is None:
            self._start_manifest(data)
            return
        check_same_data(manifest, data.hashes, self.run_dir.root)
        manifest["resumed"] = [*manifest.get("resumed", []), now_iso()]
        manifest["finished"] = None
        manifest["stage_times"] = self.stage_times
        self.run_dir.save_manifest(manifest)
        log(f"resuming {self.run_dir.root}")

    def _start_manifest(self, data: PreparedData) -> None:
        manifest = {
            "recipe_name": self.recipe.name,
            "recipe": self.recipe.to_dict(),
            "methods": list(self.recipe.methods),
            "seeds": list(self.recipe.seeds),
            "eval_sets": list(data.eval_sets),
            "eval_dropped": {n: s.dropped for n, s in data.eval_sets.items()},
            "versions": package_versions(),
            "git_commit": git_commit(),
            "data_hashes": data.hashes,
            "started": now_iso(),
            "finished": None,
            "stage_times": self.stage_times,
            "units": {},
        }
        self.run_dir.save_manifest(manifest)

    def _record_stage(self, stage: str, seconds: float) -> None:
        self.stage_times[stage] = round(seconds, 2)
        if self.main and self.run_dir.is_run():
            manifest = self.run_dir.load_manifest()
            manifest["stage_times"] = self.stage_times
            self.run_dir.save_manifest(manifest)
        log(f"{stage}: {seconds:.1f}s")

    def _timed(self, stage: str, fn, *args):
        start = time.time()
        result = fn(*args)
        self._record_stage(stage, time.time() - start)
        return result

    # ---- stages ------------------------------------------------------------------------
    def run(self) -> int:
        start = time.time()
        self.accelerator.wait_for_everyone()  # every process checked --out before any writes
        resumed = self._manifest_to_resume()
        with self.accelerator.main_process_first():  # the main process fills the data cache
            data = self._timed("data", prepare_data, self.recipe, self.cache)
        if resumed is not None:  # on every process: none may go on alone
            check_same_data(resumed, data.hashes, self.run_dir.root)
        self._on_main(self._open_manifest, data, resumed)
        teacher = self._timed("teacher", self.get_teacher, data)
        self.teacher = teacher
        student_init = self.saved_student_init()
        if student_init is None:
            student_init = self._timed("student_init", self.get_student_init, data, teacher)
        preflight_models(teacher, student_init, data.tokenizer, self.recipe.data.max_length)
        for name, model in (("teacher", teacher), ("student_init", student_init)):
            if not self.reference_done(name):
                self._timed(f"eval:{name}", self.evaluate_reference, name, model, data)
        samples = self.method_inputs(data, teacher)
        failed = []
        for seed in self.recipe.seeds:
            for name, method in self.methods.items():
                if not self.run_unit(name, method, seed, data, teacher, student_init, samples):
                    failed.append(unit_key(name, seed))
        report_error = self._finish(time.time() - start) if self.main else None
        self.accelerator.wait_for_everyone()
        if failed or report_error:
            if self.main:
                print(self.failure_summary(failed, report_error), file=sys.stderr, flush=True)
            return 1
        return 0

    def method_inputs(self, data: PreparedData, teacher):
        """What the methods share beyond the data: the pre-training corpus, the teacher's
        samples (returned) and the teacher-logit cache, each made only when a method needs it."""
        methods = self.methods.values()
        if any(m.config.pt_weight > 0 for m in methods):
            self.pretrain_items = self._timed("pretrain_corpus", self.pretrain_corpus, data)
        samples = None
        if any(m.uses_teacher_samples for m in methods):
            samples = self._timed("teacher_samples", self.teacher_samples, data, teacher)
        if any(getattr(m.config, "teacher_cache_k", 0) for m in methods):
            self._timed("teacher_cache", self.attach_teacher_caches, data, teacher, samples)
        return samples

    def _finish(self, total: float) -> str | None:
        """Close the manifest and render the report; the report's error, if it failed."""
        from dpkd_bench.report import render

        self.stage_times["total"] = round(total, 2)
        manifest = self.run_dir.load_manifest()
        manifest["finished"] = now_iso()
        manifest["stage_times"] = self.stage_times
        self.run_dir.save_manifest(manifest)
        try:
            self._timed("report", render, self.run_dir.root)
        except Exception as err:  # the results are on disk; `dpkd-bench report` redoes this
            traceback.print_exc()
            return f"{type(err).__name__}: {(str(err).splitlines() or [''])[0][:200]}"
        log(f"done in {total:.1f}s: {self.run_dir.root / 'leaderboard.md'}")
        return None

    def failure_summary(self, failed: list[str], report_error: str | None = None) -> str:
        """One line: the failed units, where their errors are, and how to redo what failed."""
        root = self.run_dir.root
        parts = []
        if failed:
            units = self.run_dir.load_manifest().get("units", {})
            kinds = [(units.get(key, {}).get("error") or "?").split(":")[0] for key in failed]
            named = [f"{key} ({kind})" for key, kind in zip(failed, kinds, strict=True)]
            total = len(self.recipe.seeds) * len(self.methods)
            parts.append(
                f"{len(failed)} of {total} units failed: {', '.join(named)}; their errors are in "
                f"{self.run_dir.manifest_path}; fix the cause and rerun them with --resume "
                f"--out {root}"
            )
        if report_error:
            parts.append(
                f"the report failed ({report_error}); redo it with `dpkd-bench report {root}`"
            )
        return "error: " + "; ".join(parts)

    def _train(
        self,
        method: Method,
        model,
        cfg: TrainConfig,
        items,
        seed: int,
        teacher,
        tokenizer,
        log_path=None,
        desc="train",
        dev_items=(),
        checkpoint_dir=None,
    ):
        set_seed(seed)
        pretrain = None
        if method.config.pt_weight > 0:  # the corpus's own order, independent of the method
            pretrain = BatchStream(self.pretrain_items, cfg.batch_size, seed + PRETRAIN_SEED)
        device = self.accelerator.device
        if teacher is not None:
            teacher.to(device)
        ctx = TrainContext(
            student=model,
            teacher=teacher,
            tokenizer=tokenizer,
            sampling=decode_settings(self.recipe.sampling),
            # each process samples on its own stream (see the module docstring)
            generator=torch.Generator(device=device).manual_seed(
                seed + self.accelerator.process_index
            ),
            device=device,
            dev_items=dev_items,
            total_steps=cfg.steps,
            grad_accum=cfg.grad_accum,
            steps_per_epoch=len(items) // (cfg.batch_size * cfg.grad_accum),
        )
        stream = BatchStream(items, cfg.batch_size, seed)
        return train(
            method,
            model,
            cfg,
            stream,
            ctx,
            self.accelerator,
            log_path,
            desc,
            checkpoint_dir,
            pretrain,
        )

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

    def get_teacher(self, data: PreparedData):
        cfg = self.recipe.teacher
        if cfg.model.name_or_path:
            return freeze(load_pretrained(cfg.model.name_or_path, cfg.model))
        key = teacher_key(self.recipe, data)
        path = self.teacher_dir(data)
        if self._from_main((path / "model.safetensors").is_file()):
            log(f"teacher: cached at {path}")
            return freeze(load_pretrained(path, cfg.model))
        shipped = shipped_teacher(key)
        if shipped is not None:
            log(f"teacher: shipped with the package ({shipped}), key {key}")
            model = load_pretrained(shipped, cfg.model).float()
            self._on_main(publish_model, model, data.tokenizer, path)
            return freeze(model)
        log(f"teacher: training {cfg.model.n_layer}x{cfg.model.n_embd} for {cfg.train.steps} steps")
        model = build_model(cfg.model, data.tokenizer, seed=data_seed(self.recipe))
        self._train(
            get_method("sft", response_rows=False),  # the shipped teacher's numerics (SFTConfig)
            model,
            cfg.train,
            data.train_items,
            data_seed(self.recipe),
            None,
            data.tokenizer,
            desc="teacher sft",
        )
        self._on_main(publish_model, model, data.tokenizer, path)
        return freeze(model)

    def teacher_dir(self, data: PreparedData) -> Path:
        """Where the teacher trained here is saved (cached by content hash)."""
        return self.cache / f"teacher-{teacher_key(self.recipe, data)}"

    def saved_student_init(self):
        """With ``resume``, the run's own ``student_init`` when it was saved; else None."""
        saved = self._from_main(
            readable_dir(self.run_dir.root / "student_init", "model.safetensors")
        )
        if not self.resume or saved is None:
            return None
        log(f"student_init: reusing {saved}")
        return load_pretrained(saved, self.recipe.student.model)

    def get_student_init(self, data: PreparedData, teacher):
        cfg = self.recipe.student
        path = self.run_dir.root / "student_init"
        self._on_main(remove_unfinished, self.run_dir.root)
        model = build_model(cfg.model, data.tokenizer, seed=data_seed(self.recipe) + 1)
        if cfg.init_train.steps:
            self._train(
                get_method("sft"),
                model,
                cfg.init_train,
                data.train_items,
                data_seed(self.recipe) + 1,
                None,
                data.tokenizer,
                desc="student_init sft",
            )
        self._on_main(publish_model, model, data.tokenizer, path)
        return model

    def teacher_samples(self, data: PreparedData, teacher) -> list[tuple[int, ...]]:
        """Teacher responses for every training prompt, sampled once and cached on disk.

        Samples of one process (cached, or shipped) serve every run; N > 1 processes that find
        none sample their own, cached under a name of their own (``...-<N>proc.jsonl``).
        """
        cfg: SamplingConfig = self.recipe.sampling
        path = self.cache / self.teacher_samples_name(data)
        shipped = SHIPPED_TEACHER / path.name
        if self._from_main(not path.is_file() and shipped.is_file()):
            log(f"teacher samples: shipped with the package ({shipped})")
            self._on_main(atomic_write_bytes, path, shipped.read_bytes())
        if self.processes > 1 and not path.is_file():
            path = path.with_name(f"{path.stem}-{self.processes}proc.jsonl")
        path, cached = self._from_main((path, path.is_file()))
        if cached:
            log(f"teacher samples: cached at {path}")
            with open(path, encoding="utf-8") as handle:
                return [tuple(json.loads(line)) for line in handle]
        ids = self._sharded(
            partial(generate_ids, teacher.to(self.accelerator.device)),
            [item["prompts"] for item in data.train_items],
            cfg.seed,
            "teacher samples",
            settings=decode_settings(cfg),
            eos_id=data.tokenizer.eos_token_id,
            pad_id=data.tokenizer.pad_token_id,
            batch_size=cfg.batch_size,
            keep_eos=True,
        )
        self._on_main(write_jsonl, path, ids)
        return [tuple(r) for r in ids]

    def teacher_samples_name(self, data: PreparedData) -> str:
        """File name of the teacher samples: a hash of data, sampling settings and teacher."""
        key = content_key(data.hashes, asdict(self.recipe.sampling), self.teacher_identity(data))
        return f"teacher-samples-{key}.jsonl"

    def teacher_identity(self, data: PreparedData) -> str:
        cfg = self.recipe.teacher
        return cfg.model.name_or_path or teacher_key(self.recipe, data)

    def attach_teacher_caches(self, data: PreparedData, teacher, samples) -> None:
        """The teacher's top-k log-probabilities over each method's training items, built once
        per item set (on disk, content-hashed; the main process first, the others load it) and
        attached to every method with ``teacher_cache_k > 0``; the largest k serves them all."""
        wanted = [m for m in self.methods.values() if getattr(m.config, "teacher_cache_k", 0)]
        k = max(m.config.teacher_cache_k for m in wanted)
        teacher = teacher.to(self.accelerator.device)
        caches = {}
        for method in wanted:
            items = unit_items(method, data.train_items, samples)
            key = items_hash(items)
            if key not in caches:
                with self.accelerator.main_process_first():
                    caches[key] = build_cache(
                        teacher,
                        items,
                        k,
                        self.cache,
                        self.recipe.sampling.batch_size,
                        teacher_id=self.teacher_identity(data),
                        pad_id=data.tokenizer.pad_token_id,
                    )
            method.use_teacher_cache(caches[key])

    # ---- units -------------------------------------------------------------------------
    def run_unit(self, name, method, seed, data, teacher, student_init, samples) -> bool:
        """Train and evaluate one (method, seed); False when it failed (recorded, not raised)."""
        if self.resume and self._from_main(self.unit_done(name, seed)):
            log(f"{name} seed {seed}: done already")
            return True
        self._on_main(self.record_unit, name, seed, {"state": "running", "error": None})
        unit_dir, start = self.run_dir.unit_dir(name, seed), time.time()
        try:
            model, train_info = self.train_unit(
                name, method, seed, data, teacher, student_init, samples
            )
            self.evaluate(model, data, unit_dir, name, seed, train_info, unit_dir / "student")
        except Exception as err:  # one failing unit must not lose the others
            failure = {
                "state": "failed",
                "error": f"{type(err).__name__}: {err}",
                "wall_s": round(time.time() - start, 2),
            }
            if self.main:  # no barrier: a process failing alone must not wait for the others
                self.record_unit(name, seed, failure)
            log(f"{name} seed {seed}: FAILED ({type(err).__name__}: {err})")
            return False
        wall = time.time() - start
        done = {"state": "done", "error": None, "wall_s": round(wall, 2)}
        done["skipped_steps"] = train_info["skipped_steps"]
        self._on_main(self.record_unit, name, seed, done)
        self._on_main(remove_dir, unit_dir / CHECKPOINT)
        self.stage_times[f"unit:{name}/seed-{seed}"] = round(wall, 2)
        log(f"{name} seed {seed}: {wall:.1f}s")
        return True

    def record_unit(self, name: str, seed: int, fields: dict) -> None:
        """Set a unit's fields in the manifest."""
        self.run_dir.update_unit(name, seed, **fields)

    def unit_done(self, name: str, seed: int) -> bool:
        """Whether the manifest says done and the unit's metrics.json exists."""
        units = self.run_dir.load_manifest().get("units", {})
        done = units.get(unit_key(name, seed), {}).get("state") == "done"
        return done and (self.run_dir.unit_dir(name, seed) / METRICS).is_file()

    def train_unit(self, name, method, seed, data, teacher, student_init, samples):
        """Train one unit (from its checkpoint when resuming), save its student; (model, info)."""
        unit_dir = self.run_dir.unit_dir(name, seed)
        checkpoint = unit_dir / CHECKPOINT
        self._on_main(self._prepare_unit_dir, unit_dir, f"{name} seed {seed}")
        self._on_main(atomic_write_text, unit_dir / "config.yaml", dump_yaml(method.describe()))
        model = copy.deepcopy(student_init)
        result = self._train(
            method,
            model,
            self.recipe.train,
            unit_items(method, data.train_items, samples),
            seed,
            teacher if method.uses_teacher else None,
            data.tokenizer,
            unit_dir / TRAIN_LOG,
            desc=f"{name} seed {seed}",
            dev_items=data.dev_items,
            checkpoint_dir=checkpoint,
        )
        self._on_main(publish_model, model, data.tokenizer, unit_dir / "student")
        return model, {
            "steps": result.steps,
            "wall_s": round(result.wall_s, 2),
            "tokens": result.tokens,
            "skipped_steps": result.skipped_steps,
        }

    def _prepare_unit_dir(self, unit_dir: Path, label: str) -> Path:
        """Clear what an earlier attempt left, except, on resume, its checkpoint and its train
        log up to that checkpoint's step; return the checkpoint directory."""
        remove_unfinished(unit_dir)
        checkpoint, log_path = unit_dir / CHECKPOINT, unit_dir / TRAIN_LOG
        step = checkpoint_step(checkpoint) if self.resume else None
        if step is None:
            remove_dir(checkpoint)
            log_path.unlink(missing_ok=True)
        else:
            trim_log(log_path, step)
            log(f"{label}: continuing from the checkpoint of step {step}")
        return checkpoint

    def reference_done(self, name: str) -> bool:
        """With ``resume``, whether the reference row ``name`` has its metrics.json."""
        metrics = self.run_dir.unit_dir(name, self.recipe.seeds[0]) / METRICS
        if self.resume and self._from_main(metrics.is_file()):
            log(f"{name}: evaluated already")
            return True
        return False

    def evaluate_reference(self, name: str, model, data: PreparedData) -> None:
        seed = self.recipe.seeds[0]
        unit_dir = self.run_dir.unit_dir(name, seed)
        self.evaluate(model, data, unit_dir, name, seed, None, self.reference_dir(name, data))
        self._on_main(self.record_unit, name, seed, {"state": "done", "error": None})

    def reference_dir(self, name: str, data: PreparedData) -> str:
        """Where the reference model ``name`` (teacher or student_init) is saved, or its name."""
        if name == "teacher":
            return self.recipe.teacher.model.name_or_path or str(self.teacher_dir(data))
        return str(self.run_dir.root / "student_init")

    def eval_engine(self, name: str, model_dir):
        """A vLLM engine on the saved model (``eval.backend: vllm``), released on leaving it;
        for the built-in decoder, an empty context that gives None."""
        cfg = self.recipe.eval
        if cfg.backend != "vllm":
            return nullcontext()
        log(f"eval {name}: vLLM engine on {model_dir}")
        role = self.recipe.teacher if name == "teacher" else self.recipe.student
        return VllmDecoder(
            model_dir,
            trust_remote_code=role.model.trust_remote_code,
            gpu_memory_utilization=cfg.vllm_gpu_memory_utilization,
        )

    def evaluate(
        self,
        model,
        data: PreparedData,
        unit_dir: Path,
        name: str,
        seed: int,
        train_info,
        model_dir: str | Path,
    ) -> dict:
        """Score ``model`` on every eval set; ``model_dir`` (where it is saved) serves the vLLM
        backend, which builds one engine for all the sets and seeds."""
        with self.eval_engine(name, model_dir) as engine:
            scores = {
                set_name: self.evaluate_set(model, data.tokenizer, eval_set, unit_dir, name, engine)
                for set_name, eval_set in data.eval_sets.items()
            }
        metrics = {"method": name, "seed": seed, "eval": scores}
        if train_info is not None:
            metrics["train"] = train_info
        if self.main:
            self._write_evaluation(model, data, unit_dir, name, metrics)
        self.accelerator.wait_for_everyone()
        return metrics

    def _write_evaluation(self, model, data: PreparedData, unit_dir: Path, name, metrics) -> None:
        """Fidelity figures (when on) and metrics.json, last: it marks the unit done."""
        if self.recipe.eval.fidelity and name != "teacher" and self.teacher is not None:
            write_fidelity(
                unit_dir,
                model,
                self.teacher,
                data.eval_sets,
                data.tokenizer,
                self.accelerator.device,
                self.recipe.eval.batch_size,
                self.run_dir.unit_dir("teacher", self.recipe.seeds[0]),
                self.teacher_rows,
            )
        write_json(unit_dir / "metrics.json", metrics)

    def evaluate_set(
        self,
        model,
        tokenizer,
        eval_set: EvalSet,
        unit_dir: Path,
        name: str,
        engine: VllmDecoder | None = None,
    ) -> dict:
        """Generate, score and write one eval set: with ``engine`` (vLLM) when given, else with
        the built-in decoder."""
        cfg = self.recipe.eval
        seeds = cfg.gen_seeds[:1] if cfg.decoding == "greedy" else cfg.gen_seeds
        references = [list(e.references) for e in eval_set.examples]
        if engine is None:
            decoder = partial(
                generate_texts,
                model.to(self.accelerator.device),
                tokenizer,
                batch_size=cfg.batch_size,
            )
        else:
            decoder = partial(engine.generate_texts, tokenizer)
        predictions, per_seed = [], []
        for gen_seed in seeds:
            texts = self._sharded(
                decoder,
                eval_set.prompt_ids,
                gen_seed,
                f"eval {name} {eval_set.name} seed {gen_seed}",
                settings=decode_settings(cfg),
            )
            if not self.main:  # the main process scores and writes
                continue
            predictions.append(texts)
            per_seed.append(score_examples(texts, references))
        if not self.main:
            return {}
        per_example = mean_over_generations(per_seed)
        records = [
            {
                "id": example.id,
                "family": example.family,
                "prompt": example.prompt,
                "references": list(example.references),
                "predictions": [p[i] for p in predictions],
                **scores,
            }
            for i, (example, scores) in enumerate(zip(eval_set.examples, per_example, strict=True))
        ]
        write_jsonl(unit_dir / "generations" / f"{eval_set.name}.jsonl", records)
        n = len(records)
        return {
            "exact_match": sum(r["exact_match"] for r in records) / n,
            "rougeL": sum(r["rougeL"] for r in records) / n,
            "n": n,
        }


SHIPPED_TEACHER = Path(__file__).parent / "assets" / "default-teacher"


def shipped_teacher(key: str) -> Path | None:
    """The teacher shipped with the package, when it was trained for exactly this key.

    It is rebuilt by ``python -m dpkd_bench.assets.rebuild_teacher``; its ``key`` file holds the
    content hash (data, tokenizer, teacher config) it was trained for.
    """
    key_file = SHIPPED_TEACHER / "key"
    if key_file.is_file() and key_file.read_text(encoding="utf-8").strip() == key:
        return SHIPPED_TEACHER
    return None


def publish_model(model, tokenizer, path: Path) -> None:
    """``save_model`` into ``path`` atomically: a kill never leaves half a model there."""
    publish_dir(path, lambda tmp: save_model(model, tokenizer, tmp))


def differences(old: dict, new: dict, prefix: str = "", defaults: dict | None = None) -> list[str]:
    """'key: a in the run, b now' for every leaf where two nested mappings differ.

    A key missing from ``old`` whose value in ``new`` is its value in ``defaults`` (a key added
    to the recipe since the run was made, left at its default) is no difference.
    """
    defaults = defaults if isinstance(defaults, dict) else {}
    found = []
    for key in sorted(set(old) | set(new), key=str):
        then, now = old.get(key, "<unset>"), new.get(key, "<unset>")
        if isinstance(then, dict) and isinstance(now, dict):
            found += differences(then, now, f"{prefix}{key}.", defaults.get(key))
        elif then != now and not (key not in old and key in defaults and now == defaults[key]):
            found.append(f"{prefix}{key}: {then!r} in the run, {now!r} now")
    return found


def plain_recipe(recipe: Recipe) -> dict:
    """The recipe as the manifest stores it (JSON types)."""
    return json.loads(json.dumps(recipe.to_dict()))


def check_same_recipe(manifest: dict, recipe: Recipe, root: Path) -> None:
    """Raise a user error unless the run in ``root`` was made with ``recipe``."""
    then = manifest.get("recipe") if isinstance(manifest.get("recipe"), dict) else {}
    changes = differences(then, plain_recipe(recipe), defaults=plain_recipe(Recipe()))
    if changes:
        more = f"; and {len(changes) - 3} more" if len(changes) > 3 else ""
        raise RecipeError(
            f"cannot resume {root}: the recipe differs from the run's ({'; '.join(changes[:3])}"
            f"{more}); resume with the run's recipe, methods, seeds and overrides, or choose "
            "another --out"
        )


def check_same_data(manifest: dict, data_hashes: dict, root: Path) -> None:
    """Raise a user error unless the run in ``root`` was made on data of these hashes."""
    old = manifest.get("data_hashes") or {}
    changed = sorted(k for k in set(old) | set(data_hashes) if old.get(k) != data_hashes.get(k))
    if changed:
        raise DataError(
            f"cannot resume {root}: the data ({', '.join(changed)}) differs from the run's (the "
            "data files or the generator changed since); start a new run with another --out"
        )


def teacher_key(recipe: Recipe, data: PreparedData) -> str:
    return content_key(
        TEACHER_FORMAT, data.hashes["train"], data.hashes["tokenizer"], asdict(recipe.teacher)
    )


def data_seed(recipe: Recipe) -> int:
    return recipe.data.seed


def unit_items(method: Method, items: list[dict], samples) -> list[dict]:
    """Training items for a method: ground truth, teacher samples instead, or both."""
    if method.train_data == TEACHER_SAMPLES:
        return [
            {"prompts": i["prompts"], "responses": s} for i, s in zip(items, samples, strict=True)
        ]
    if method.needs_teacher_samples:
        return [{**i, "teacher_responses": s} for i, s in zip(items, samples, strict=True)]
    return items
