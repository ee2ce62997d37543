"""The run's teacher, and what is derived from it once per recipe; usable without a runner.

The teacher is, in this order: the recipe's pretrained model (``teacher.model.name_or_path``, a
local path or a Hub name); the one trained here earlier, cached by content hash (data,
tokenizer, teacher config: :func:`teacher_key`) under the cache directory; the one shipped with
the package when it was trained for exactly that hash (:func:`shipped_teacher`); else it is
trained here by the supervised method and cached.

Teacher samples (a teacher response for every training prompt, used by methods that train on
them or prefer them) are drawn once and cached on disk. Samples of one process (cached, or
shipped) serve every run; N > 1 processes that find none sample their own, cached under a name
of their own (``...-<N>proc.jsonl``). The teacher-logit cache (top-k log-probabilities over a
method's training items) is built once per item set and attached to every method that reads it.

    source = TeacherSource(recipe, data, Processes())
    teacher = source.load()
    samples = source.samples(teacher)
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from functools import partial
from pathlib import Path

from dpkd_bench.cache_check import discard, intact, is_sealed, seal
from dpkd_bench.console import log
from dpkd_bench.data.prepare import PreparedData
from dpkd_bench.generate import generate_ids
from dpkd_bench.methods import supervised_method
from dpkd_bench.methods.base import TEACHER_SAMPLES, Method
from dpkd_bench.models import build_model, freeze, load_pretrained
from dpkd_bench.processes import Processes, Training, decode_settings, fit
from dpkd_bench.recipe import Recipe, SamplingConfig
from dpkd_bench.results import atomic_write_bytes, cache_root, write_jsonl
from dpkd_bench.teacher_cache import build_cache, items_hash

SHIPPED_TEACHER = Path(__file__).parent / "assets" / "default-teacher"
TEACHER_FORMAT = 1  # bump when teacher training changes in a way that invalidates caches


def content_key(*parts) -> str:
    blob = json.dumps(parts, sort_keys=True, default=str).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()[:16]


def teacher_key(recipe: Recipe, data: PreparedData) -> str:
    """The content hash a teacher trained here is cached (and shipped) under."""
    config = asdict(recipe.teacher)
    config["train"] = recipe.teacher.train.identity()
    return content_key(TEACHER_FORMAT, data.hashes["train"], data.hashes["tokenizer"], config)


def shipped_teacher(key: str) -> Path | None:
    """The teacher shipped with the package, when it was trained for exactly this key.

    It is rebuilt by ``python -m dpkd_bench.assets.rebuild_teacher``; its ``key`` file holds the
    content hash (data, tokenizer, teacher config) it was trained for.
    """
    key_file = SHIPPED_TEACHER / "key"
    if key_file.is_file() and key_file.read_text(encoding="utf-8").strip() == key:
        return SHIPPED_TEACHER
    return None


def unit_items(method: Method, items: list[dict], samples) -> list[dict]:
    """Training items for a method: ground truth, teacher samples instead, or both."""
    if method.train_data == TEACHER_SAMPLES:
        return [
            {"prompts": i["prompts"], "responses": s} for i, s in zip(items, samples, strict=True)
        ]
    if method.needs_teacher_samples:
        return [{**i, "teacher_responses": s} for i, s in zip(items, samples, strict=True)]
    return items


def read_samples(path: Path) -> list[tuple[int, ...]] | None:
    """The teacher samples cached at ``path`` when it is there and intact, else None (a
    damaged file -- checksum, or lines that do not parse -- is removed, to be rebuilt)."""
    what = "the teacher-samples file"
    if not intact(path, what):
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            return [tuple(json.loads(line)) for line in handle]
    except (ValueError, TypeError, OSError) as err:  # an unsealed file from an older version
        discard(path, what, f"{type(err).__name__}: {err}")
        return None


class TeacherSource:
    """Where a recipe's teacher comes from on this data, and the teacher-derived inputs."""

    def __init__(
        self, recipe: Recipe, data: PreparedData, procs: Processes, cache: Path | None = None
    ):
        self.recipe = recipe
        self.data = data
        self.procs = procs
        self.cache = cache or cache_root()

    @property
    def dir(self) -> Path:
        """Where the teacher trained here is saved (cached by content hash)."""
        return self.cache / f"teacher-{teacher_key(self.recipe, self.data)}"

    @property
    def model_dir(self) -> str:
        """Where the teacher is saved, or its Hub name."""
        return self.recipe.teacher.model.name_or_path or str(self.dir)

    @property
    def identity(self) -> str:
        """The teacher's name in cache keys: its path or Hub name, else its content hash."""
        return self.recipe.teacher.model.name_or_path or teacher_key(self.recipe, self.data)

    @property
    def samples_name(self) -> str:
        """File name of the teacher samples: a hash of data, sampling settings and teacher."""
        key = content_key(self.data.hashes, asdict(self.recipe.sampling), self.identity)
        return f"teacher-samples-{key}.jsonl"

    def load(self):
        """The frozen teacher: pretrained, cached, shipped, or trained here (and cached)."""
        cfg, data = self.recipe.teacher, self.data
        if cfg.model.name_or_path:
            return freeze(load_pretrained(cfg.model.name_or_path, cfg.model))
        key, path = teacher_key(self.recipe, data), self.dir
        if self.procs.from_main(self.cached_teacher_ok(path) if self.procs.main else None):
            log(f"teacher: cached at {path}")
            return freeze(load_pretrained(path, cfg.model))
        shipped = shipped_teacher(key)
        if shipped is not None:
            log(f"teacher: shipped with the package ({shipped}), key {key}")
            model = load_pretrained(shipped, cfg.model).float()
            self.procs.publish_model(model, data.tokenizer, path)
            self.procs.on_main(seal, path)
            return freeze(model)
        log(f"teacher: training {cfg.model.n_layer}x{cfg.model.n_embd} for {cfg.train.steps} steps")
        seed = self.recipe.data.seed
        model = build_model(cfg.model, data.tokenizer, seed=seed)
        # response_rows=False: the shipped teacher's numerics
        method = supervised_method(response_rows=False)
        train = cfg.train.for_items(len(data.train_items))
        job = Training(method, model, train, data.train_items, seed, desc="teacher sft")
        fit(self.procs, job, data.tokenizer, self.recipe.sampling)
        self.procs.publish_model(model, data.tokenizer, path)
        self.procs.on_main(seal, path)
        return freeze(model)

    def cached_teacher_ok(self, path: Path) -> bool:
        """Whether an intact teacher is cached at ``path``. A damaged entry (its checksums;
        for an entry written before checksums, weights that do not load) is removed, to be
        rebuilt; an older entry that loads is sealed now."""
        what = "the teacher"
        if not (intact(path, what) and (path / "model.safetensors").is_file()):
            return False
        if is_sealed(path):
            return True
        try:
            load_pretrained(path, self.recipe.teacher.model)
        except Exception as err:  # a damaged file raises anything: header, decode, I/O
            discard(path, what, f"{type(err).__name__}: {' '.join(str(err).split())[:120]}")
            return False
        seal(path)
        return True

    def samples(self, teacher) -> list[tuple[int, ...]]:
        """Teacher responses for every training prompt, sampled once and cached on disk."""
        cfg: SamplingConfig = self.recipe.sampling
        procs, data = self.procs, self.data
        path = self.cache / self.samples_name
        shipped = SHIPPED_TEACHER / path.name
        what = "the teacher-samples file"
        if procs.from_main(not intact(path, what) and shipped.is_file() if procs.main else None):
            log(f"teacher samples: shipped with the package ({shipped})")
            procs.on_main(atomic_write_bytes, path, shipped.read_bytes())
            procs.on_main(seal, path)
        if procs.count > 1 and not path.is_file():
            path = path.with_name(f"{path.stem}-{procs.count}proc.jsonl")
        cached = read_samples(path) if procs.main else None
        if procs.from_main(cached is not None if procs.main else None):
            log(f"teacher samples: cached at {path}")
            return cached if procs.main else read_samples(path)
        ids = procs.sharded(
            partial(generate_ids, teacher.to(procs.device)),
            [item["prompts"] for item in data.train_items],
            cfg.seed,
            "teacher samples",
            settings=decode_settings(cfg),
            eos_id=data.tokenizer.eos_token_id,
            pad_id=data.tokenizer.pad_token_id,
            batch_size=cfg.batch_size,
            keep_eos=True,
        )
        procs.on_main(write_jsonl, path, ids)
        procs.on_main(seal, path)
        return [tuple(r) for r in ids]

    def attach_caches(self, methods, teacher, samples) -> None:
        """The teacher's top-k log-probabilities over each method's training items, built once
        per item set (on disk, content-hashed; the main process first, the others load it) and
        attached to every method that reads the cache; the largest k serves them all."""
        wanted = [m for m in methods if m.uses_teacher_cache]
        if not wanted:
            return
        k = max(m.config.teacher_cache_k for m in wanted)
        teacher = teacher.to(self.procs.device)
        caches = {}
        for method in wanted:
            items = unit_items(method, self.data.train_items, samples)
            key = items_hash(items)
            if key not in caches:
                with self.procs.main_first():
                    caches[key] = build_cache(
                        teacher,
                        items,
                        k,
                        self.cache,
                        self.recipe.sampling.batch_size,
                        teacher_id=self.identity,
                        pad_id=self.data.tokenizer.pad_token_id,
                    )
            method.use_teacher_cache(caches[key])
