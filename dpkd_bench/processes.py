"""A run's processes, and training one model through the single loop on them.

A run is one process, or several (``accelerate launch`` or ``torchrun``). Every stage runs on
every process and the run directory is one set of results. Training (teacher, ``student_init``
and the units) shards each global batch over the processes (:mod:`dpkd_bench.train`); teacher
samples and the evaluation generations shard the prompts (:meth:`Processes.sharded`), each
process with its own seed derived from the recipe's, and gather them in prompt order. The main
process alone writes files (models, logs, generations, metrics, fidelity, manifest, report);
the others wait for it where they read them (:meth:`Processes.on_main`). Each process's
on-policy sampling generator is seeded with ``seed + process_index`` (:func:`fit`), so
on-policy methods (and any sampling: teacher samples, evaluation) are not bit-identical to a
single-process run; teacher-forced methods train to the same weights up to the order of float
additions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list, gather_object, set_seed

from dpkd_bench.checkpoint import publish_dir
from dpkd_bench.dev import DevTracker
from dpkd_bench.errors import RecipeError
from dpkd_bench.generate import DecodeSettings, shard_seed, shard_slice
from dpkd_bench.methods.base import Method, TrainContext
from dpkd_bench.models import save_model
from dpkd_bench.recipe import SamplingConfig, TrainConfig
from dpkd_bench.train import BatchStream, TrainLog, TrainResult, train

PRETRAIN_SEED = 7919  # offsets a unit's seed for the order of its pre-training chunks


def decode_settings(cfg) -> DecodeSettings:
    """The decoding settings of a recipe's ``sampling`` or ``eval`` section."""
    greedy = getattr(cfg, "decoding", "sample") == "greedy"
    return DecodeSettings(greedy, cfg.temperature, cfg.top_k, cfg.top_p, cfg.max_new_tokens)


class Processes:
    """The run's processes, through one ``Accelerator``: who writes, what they share."""

    def __init__(self, accelerator: Accelerator | None = None):
        self.accelerator = accelerator or Accelerator(cpu=not torch.cuda.is_available())
        self.main = self.accelerator.is_main_process
        self.count = self.accelerator.num_processes

    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    def wait(self) -> None:
        self.accelerator.wait_for_everyone()

    def main_first(self):
        """A context in which the main process goes first (it fills a cache the others read)."""
        return self.accelerator.main_process_first()

    def from_main(self, value):
        """The main process's ``value``, on every process (a decision they must share)."""
        if self.count == 1:
            return value
        return broadcast_object_list([value])[0]

    def on_main(self, fn, *args) -> None:
        """``fn(*args)`` on the main process (a file write); the others wait for it."""
        if self.main:
            fn(*args)
        self.wait()

    def publish_model(self, model, tokenizer, path: Path) -> None:
        """Save ``model`` into ``path`` atomically, on the main process: a kill never leaves half
        a model there."""
        self.on_main(publish_dir, path, lambda tmp: save_model(model, tokenizer, tmp))

    def sharded(self, generate, prompts, seed: int, progress: str, **kwargs) -> list:
        """``generate(prompts, seed=..., ...)`` with the prompts shared out over the processes
        (each with its own seed), gathered back in prompt order."""
        if self.count == 1:
            return generate(prompts, seed=seed, progress=progress, **kwargs)
        rank = self.accelerator.process_index
        part = list(prompts[shard_slice(len(prompts), rank, self.count)])
        shown = progress if self.main else None
        return gather_object(generate(part, seed=shard_seed(seed, rank), progress=shown, **kwargs))


@dataclass
class Training:
    """One model to train through the single loop: what trains it, on what, where it logs."""

    method: Method
    model: Any  # trained in place
    cfg: TrainConfig
    items: Sequence[dict]
    seed: int
    desc: str = "train"
    teacher: Any = None  # the frozen teacher, for methods that use it
    dev_items: Sequence[dict] = ()
    log_path: Path | None = None
    on_record: Any = None  # called with every record of the training log (trackers)
    checkpoint_dir: Path | None = None  # resume from / write checkpoints here
    pretrain_items: Sequence[dict] = ()  # corpus chunks, for a method with a pre-training term
    dev: Any = None  # the dev split as scored during training (dpkd_bench.dev.DevSet)


def fit(procs: Processes, job: Training, tokenizer, sampling: SamplingConfig) -> TrainResult:
    """Train ``job.model`` in place; ``sampling`` drives the method's on-policy samples."""
    cfg, seed = job.cfg, job.seed
    set_seed(seed)
    pretrain = None
    if job.method.config.pt_weight > 0:  # the corpus's own order, independent of the method
        pretrain = BatchStream(job.pretrain_items, cfg.batch_size, seed + PRETRAIN_SEED)
    device = procs.device
    if job.teacher is not None:
        job.teacher.to(device)
    ctx = TrainContext(
        student=job.model,
        teacher=job.teacher,
        tokenizer=tokenizer,
        sampling=decode_settings(sampling),
        # each process samples on its own stream (see the module docstring)
        generator=torch.Generator(device=device).manual_seed(
            seed + procs.accelerator.process_index
        ),
        device=device,
        dev_items=job.dev_items,
        total_steps=cfg.steps,
        grad_accum=cfg.grad_accum,
        steps_per_epoch=len(job.items) // (cfg.batch_size * cfg.grad_accum),
    )
    stream = BatchStream(job.items, cfg.batch_size, seed)
    tracker = None
    if cfg.eval_every:
        if job.dev is None or not len(job.dev.prompt_ids):
            raise RecipeError(
                f"{job.desc}: train.eval_every={cfg.eval_every} scores a dev split, and this "
                "data has none; set data.dev_num > 0 (instruction JSONL) or eval_every: 0"
            )
        tracker = DevTracker(job.dev, cfg)
    return train(
        job.method,
        job.model,
        cfg,
        stream,
        ctx,
        procs.accelerator,
        TrainLog(job.log_path, job.on_record),
        job.desc,
        job.checkpoint_dir,
        pretrain,
        tracker,
    )
