"""(recipe, method, seed) -> data -> models -> train -> evaluate -> results.

Stages, in order: data (suite, tokenizer), teacher (trained by ``sft`` and cached by content
hash, or loaded), ``student_init`` (a short ``sft`` shared by every method of the run), teacher
samples (once per recipe, cached, only when a method needs them), then one unit per (method,
seed), then the report. Every stage's wall time goes into the manifest.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed

from dpkd_bench import __version__
from dpkd_bench.data.prepare import EvalSet, PreparedData, prepare_data
from dpkd_bench.generate import DecodeSettings, generate_ids, generate_texts
from dpkd_bench.methods import get_method, parse_variant
from dpkd_bench.methods.base import TEACHER_SAMPLES, Method, TrainContext
from dpkd_bench.metrics import mean_over_generations, score_examples
from dpkd_bench.models import build_model, freeze, load_pretrained, preflight_models, save_model
from dpkd_bench.recipe import Recipe, SamplingConfig, TrainConfig, dump_yaml
from dpkd_bench.results import RunDir, atomic_write_text, check_method_name, write_json, write_jsonl
from dpkd_bench.train import BatchStream, train

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
    print(f"[dpkd-bench] {message}", file=sys.stderr, flush=True)


def decode_settings(cfg) -> DecodeSettings:
    greedy = getattr(cfg, "decoding", "sample") == "greedy"
    return DecodeSettings(greedy, cfg.temperature, cfg.top_k, cfg.top_p, cfg.max_new_tokens)


class Runner:
    """Runs one recipe into one run directory."""

    def __init__(self, recipe: Recipe, out: Path, cache_dir: Path | None = None):
        self.recipe = recipe
        self.run_dir = RunDir(out)
        self.cache = cache_dir or cache_root()
        self.accelerator = Accelerator(cpu=not torch.cuda.is_available())
        self.stage_times: dict[str, float] = {}
        self.methods = {name: self._method(name) for name in recipe.methods}

    def _method(self, spec: str) -> Method:
        """Unknown names and bad values fail here, before anything trains."""
        check_method_name(spec)
        base, _ = parse_variant(spec)
        return get_method(spec, **self.recipe.method_args.get(base, {}))

    # ---- manifest ----------------------------------------------------------------------
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
        if self.run_dir.is_run():
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
        data = self._timed("data", prepare_data, self.recipe, self.cache)
        self._start_manifest(data)
        teacher = self._timed("teacher", self.get_teacher, data)
        student_init = self._timed("student_init", self.get_student_init, data, teacher)
        preflight_models(teacher, student_init, data.tokenizer, self.recipe.data.max_length)
        self._timed("eval:teacher", self.evaluate_reference, "teacher", teacher, data)
        self._timed(
            "eval:student_init", self.evaluate_reference, "student_init", student_init, data
        )
        samples = None
        if any(m.uses_teacher_samples for m in self.methods.values()):
            samples = self._timed("teacher_samples", self.teacher_samples, data, teacher)
        failed = 0
        for seed in self.recipe.seeds:
            for name, method in self.methods.items():
                failed += not self.run_unit(
                    name, method, seed, data, teacher, student_init, samples
                )
        self._finish(time.time() - start)
        return 0 if failed == 0 else 1

    def _finish(self, total: float) -> None:
        from dpkd_bench.report import render

        self.stage_times["total"] = round(total, 2)
        manifest = self.run_dir.load_manifest()
        manifest["finished"] = now_iso()
        manifest["stage_times"] = self.stage_times
        self.run_dir.save_manifest(manifest)
        self._timed("report", render, self.run_dir.root)
        log(f"done in {total:.1f}s: {self.run_dir.root / 'leaderboard.md'}")

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
    ):
        set_seed(seed)
        device = self.accelerator.device
        if teacher is not None:
            teacher.to(device)
        ctx = TrainContext(
            student=model,
            teacher=teacher,
            tokenizer=tokenizer,
            sampling=decode_settings(self.recipe.sampling),
            generator=torch.Generator(device=device).manual_seed(seed),
            device=device,
            dev_items=dev_items,
            total_steps=cfg.steps,
        )
        stream = BatchStream(items, cfg.batch_size, seed)
        return train(method, model, cfg, stream, ctx, self.accelerator, log_path, desc)

    def get_teacher(self, data: PreparedData):
        cfg = self.recipe.teacher
        if cfg.model.name_or_path:
            return freeze(load_pretrained(cfg.model.name_or_path, cfg.model))
        key = teacher_key(self.recipe, data)
        path = self.cache / f"teacher-{key}"
        if (path / "model.safetensors").is_file():
            log(f"teacher: cached at {path}")
            return freeze(load_pretrained(path, cfg.model))
        shipped = shipped_teacher(key)
        if shipped is not None:
            log(f"teacher: shipped with the package ({shipped}), key {key}")
            model = load_pretrained(shipped, cfg.model).float()
            save_model(model, data.tokenizer, path)
            return freeze(model)
        log(f"teacher: training {cfg.model.n_layer}x{cfg.model.n_embd} for {cfg.train.steps} steps")
        model = build_model(cfg.model, data.tokenizer, seed=data_seed(self.recipe))
        self._train(
            get_method("sft"),
            model,
            cfg.train,
            data.train_items,
            data_seed(self.recipe),
            None,
            data.tokenizer,
            desc="teacher sft",
        )
        save_model(model, data.tokenizer, path)
        return freeze(model)

    def get_student_init(self, data: PreparedData, teacher):
        cfg = self.recipe.student
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
        save_model(model, data.tokenizer, self.run_dir.root / "student_init")
        return model

    def teacher_samples(self, data: PreparedData, teacher) -> list[tuple[int, ...]]:
        """Teacher responses for every training prompt, sampled once and cached on disk."""
        cfg: SamplingConfig = self.recipe.sampling
        path = self.cache / self.teacher_samples_name(data)
        shipped = SHIPPED_TEACHER / path.name
        if not path.is_file() and shipped.is_file():
            log(f"teacher samples: shipped with the package ({shipped})")
            shutil.copyfile(shipped, path)
        if path.is_file():
            log(f"teacher samples: cached at {path}")
            with open(path, encoding="utf-8") as handle:
                return [tuple(json.loads(line)) for line in handle]
        prompts = [item["prompts"] for item in data.train_items]
        ids = generate_ids(
            teacher.to(self.accelerator.device),
            prompts,
            decode_settings(cfg),
            eos_id=data.tokenizer.eos_token_id,
            pad_id=data.tokenizer.pad_token_id,
            seed=cfg.seed,
            batch_size=cfg.batch_size,
            keep_eos=True,
            progress="teacher samples",
        )
        write_jsonl(path, ids)
        return [tuple(r) for r in ids]

    def teacher_samples_name(self, data: PreparedData) -> str:
        """File name of the teacher samples: a hash of data, sampling settings and teacher."""
        key = content_key(data.hashes, asdict(self.recipe.sampling), self.teacher_identity(data))
        return f"teacher-samples-{key}.jsonl"

    def teacher_identity(self, data: PreparedData) -> str:
        cfg = self.recipe.teacher
        return cfg.model.name_or_path or teacher_key(self.recipe, data)

    # ---- units -------------------------------------------------------------------------
    def run_unit(self, name, method, seed, data, teacher, student_init, samples) -> bool:
        unit_dir = self.run_dir.unit_dir(name, seed)
        self.run_dir.update_unit(name, seed, state="running", error=None)
        start = time.time()
        try:
            items = unit_items(method, data.train_items, samples)
            model = copy.deepcopy(student_init)
            atomic_write_text(unit_dir / "config.yaml", dump_yaml(method.describe()))
            log_path = unit_dir / "train_log.jsonl"
            log_path.unlink(missing_ok=True)
            teacher_arg = teacher if method.uses_teacher else None
            result = self._train(
                method,
                model,
                self.recipe.train,
                items,
                seed,
                teacher_arg,
                data.tokenizer,
                log_path,
                desc=f"{name} seed {seed}",
                dev_items=data.dev_items,
            )
            save_model(model, data.tokenizer, unit_dir / "student")
            train_info = {
                "steps": result.steps,
                "wall_s": round(result.wall_s, 2),
                "tokens": result.tokens,
                "skipped_steps": result.skipped_steps,
            }
            self.evaluate(model, data, unit_dir, name, seed, train_info)
        except Exception as err:  # one failing unit must not lose the others
            self.run_dir.update_unit(
                name,
                seed,
                state="failed",
                error=f"{type(err).__name__}: {err}",
                wall_s=round(time.time() - start, 2),
            )
            log(f"{name} seed {seed}: FAILED ({type(err).__name__}: {err})")
            return False
        wall = time.time() - start
        self.run_dir.update_unit(name, seed, state="done", error=None, wall_s=round(wall, 2))
        self.stage_times[f"unit:{name}/seed-{seed}"] = round(wall, 2)
        log(f"{name} seed {seed}: {wall:.1f}s")
        return True

    def evaluate_reference(self, name: str, model, data: PreparedData) -> None:
        seed = self.recipe.seeds[0]
        self.evaluate(model, data, self.run_dir.unit_dir(name, seed), name, seed, None)
        self.run_dir.update_unit(name, seed, state="done", error=None)

    def evaluate(
        self, model, data: PreparedData, unit_dir: Path, name: str, seed: int, train_info
    ) -> dict:
        scores = {
            set_name: self.evaluate_set(model, data.tokenizer, eval_set, unit_dir, name)
            for set_name, eval_set in data.eval_sets.items()
        }
        metrics = {"method": name, "seed": seed, "eval": scores}
        if train_info is not None:
            metrics["train"] = train_info
        write_json(unit_dir / "metrics.json", metrics)
        return metrics

    def evaluate_set(self, model, tokenizer, eval_set: EvalSet, unit_dir: Path, name: str) -> dict:
        cfg = self.recipe.eval
        seeds = cfg.gen_seeds[:1] if cfg.decoding == "greedy" else cfg.gen_seeds
        references = [list(e.references) for e in eval_set.examples]
        predictions, per_seed = [], []
        for gen_seed in seeds:
            texts = generate_texts(
                model.to(self.accelerator.device),
                tokenizer,
                eval_set.prompt_ids,
                decode_settings(cfg),
                seed=gen_seed,
                batch_size=cfg.batch_size,
                progress=f"eval {name} {eval_set.name} seed {gen_seed}",
            )
            predictions.append(texts)
            per_seed.append(score_examples(texts, references))
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
