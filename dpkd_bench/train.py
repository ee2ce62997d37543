"""The single training loop, on ``accelerate``, for every method.

Per optimiser step: draw ``grad_accum`` micro-batches, let the method prepare each (samples,
tensors, unit counts; ``Method.prepare_next``), attach a batch of pre-training chunks to each
when the method's ``pt_weight`` is > 0, add the counts over the whole accumulated batch, then
for each micro-batch back-propagate ``sum_term weight * term_sum / total_count(term)``. The
loss is thus normalised by the token (or sequence) count of the whole accumulated batch, never
per micro-batch. AdamW, a constant, linear or cosine schedule after a linear warm-up
(``train.schedule``), gradient clipping; the dev split scored every ``train.eval_every`` steps,
the best-on-dev weights kept when ``train.select`` is ``best_dev`` (:mod:`dpkd_bench.dev`).

Resume: given a checkpoint directory, ``train`` continues from the checkpoint found there and
writes a new one every ``checkpoint_every`` steps and after the last step
(``dpkd_bench.checkpoint``); a resumed unit ends with the same weights as an uninterrupted one.

Several processes (``accelerate launch`` or ``torchrun``; the model is wrapped in DDP by
``accelerator.prepare``): every process draws the same global micro-batch of ``batch_size`` from
its :class:`BatchStream` (same seed) and keeps its own contiguous slice of ``batch_size / N``
items. The unit counts are summed over processes before the loss is formed, and each process's
loss is multiplied by N to undo DDP's gradient averaging, so the gradient is that of the whole
global batch on one process (equal up to the order of float additions). Gradients are
synchronised once per optimiser step (``no_sync`` on every micro-batch but the last). Logged
values are summed over processes every step, so the log and the non-finite guard see the
global loss on every process; only the main process writes the log and checkpoints.

Lean options: ``mixed_precision`` ("bf16" or "fp16") runs the micro-batches' forward passes
(student and teacher) under ``torch.autocast`` of the device, with a gradient scaler for fp16
(whose scale a checkpoint does not keep: an fp16 unit resumes with a fresh scale);
``gradient_checkpointing`` turns on the student's activation checkpointing (non-reentrant, so it
works under DDP) for the unit and off again afterwards. Inside a step there is no host sync
beyond the methods' own unit counts (and, with several processes, their sum); the loss is read
on the host only at the logging interval.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import gather_object
from tqdm.auto import tqdm

from dpkd_bench import console
from dpkd_bench.checkpoint import Trainables, load_checkpoint, rank_state, save_checkpoint
from dpkd_bench.data.collate import collate_pairs
from dpkd_bench.dev import DevTracker
from dpkd_bench.errors import DataError, RecipeError, Terminated
from dpkd_bench.methods.base import (
    Method,
    TrainContext,
    check_corpus,
    response_token_count,
    to_device,
)
from dpkd_bench.optimisation import Optimisation, make_optimizer
from dpkd_bench.recipe import TrainConfig
from dpkd_bench.results import append_jsonl
from dpkd_bench.unit_scopes import (
    checkpointed_activations,
    counted_forwards,
    dropout_off,
    sigterm_requested,
)


class NonFiniteLoss(RuntimeError):
    """A NaN or inf loss: the unit stops with the first such step and every term's value."""


@dataclass
class BatchStream:
    """Shuffled, epoch-wise batches of training items, reproducible from ``seed``."""

    items: Sequence[dict]
    batch_size: int
    seed: int
    epoch: int = 0
    position: int = 0
    _order: list[int] = field(default_factory=list, repr=False)

    def _shuffle(self) -> None:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        self._order = torch.randperm(len(self.items), generator=generator).tolist()

    def next_batch(self) -> dict[str, list]:
        if not self._order:
            self._shuffle()
        chosen = []
        while len(chosen) < self.batch_size:
            if self.position >= len(self._order):
                self.epoch, self.position = self.epoch + 1, 0
                self._shuffle()
            chosen.append(self.items[self._order[self.position]])
            self.position += 1
        return {key: [item[key] for item in chosen] for key in chosen[0]}

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position, "order": list(self._order)}

    def load_state_dict(self, state: dict) -> None:
        if state["order"] and len(state["order"]) != len(self.items):
            raise DataError(
                f"the checkpoint was written for {len(state['order'])} training items but the "
                f"data has {len(self.items)}; resume with the data of the original run"
            )
        self.epoch, self.position, self._order = state["epoch"], state["position"], state["order"]


@dataclass
class TrainResult:
    steps: int
    wall_s: float
    tokens: int
    skipped_steps: int
    teacher_forwards: int = 0  # sequences through the teacher's forward, every process
    dev: dict | None = None  # the dev curve and the point kept (DevTracker.summary), if any


@dataclass
class Progress:
    """The loop's counters; a checkpoint saves them with the step they were reached at."""

    step: int = 0
    tokens: int = 0
    skipped: int = 0  # steps without any unit to learn from (e.g. every response empty)
    teacher_forwards: int = 0  # sequences through the teacher's forward, this process
    elapsed_s: float = 0.0  # training wall time, over every run of the unit


class FiniteGuard:
    """The first step whose loss is NaN or inf, and its term values, kept on the device.

    ``observe`` runs every step without a host sync; ``check`` (one sync) raises
    :class:`NonFiniteLoss` naming that step and its terms.
    """

    def __init__(self):
        self.step: torch.Tensor | None = None  # -1 while every loss was finite
        self.terms: dict[str, torch.Tensor] = {}

    def observe(self, step: int, loss: torch.Tensor, terms: dict[str, torch.Tensor]) -> None:
        loss = loss.detach()
        if self.step is None:
            self.step = torch.full((), -1, dtype=torch.long, device=loss.device)
        first = ~torch.isfinite(loss) & (self.step < 0)
        self.step = torch.where(first, step, self.step)
        for name, value in {"loss": loss, **terms}.items():
            value = torch.as_tensor(value).detach().to(loss.device, torch.float32)
            before = self.terms.get(name, torch.full_like(value, float("nan")))
            self.terms[name] = torch.where(first, value, before)

    def check(self) -> None:
        if self.step is None or int(self.step) < 0:
            return
        values = ", ".join(f"{name}={float(v):.4g}" for name, v in self.terms.items())
        raise NonFiniteLoss(
            f"non-finite loss at step {int(self.step)} (the first one): {values}; "
            "lower train.lr or train.max_grad_norm, or check the method's inputs"
        )


def _step_loss(terms, weights, units, totals):
    """Weighted sum of term sums, each divided by its unit's total over the accumulated batch."""
    loss = None
    for term, weight in weights.items():
        if weight == 0:
            continue
        value = weight * terms[term] / max(totals[units[term]], 1)
        loss = value if loss is None else loss + value
    return loss


def local_totals(micro: list[dict]) -> Counter:
    """Each unit's count over the step's micro-batches (of this process)."""
    return sum((Counter(m["counts"]) for m in micro), Counter())


def accumulate(
    method: Method,
    model,
    micro: list[dict],
    ctx: TrainContext,
    backward,
    totals: Counter | None = None,
    no_sync: Callable[[], contextlib.AbstractContextManager] | None = None,
    autocast: Callable[[], contextlib.AbstractContextManager] | None = None,
):
    """Back-propagate one optimiser step's micro-batches; return the logged term values.

    Each term is divided by its unit's count over *all* micro-batches of the step (``totals``;
    by default this process's, with several processes the global ones), so the gradient equals
    that of one big batch. ``no_sync`` (DDP's) wraps every micro-batch but the last; ``autocast``
    the forward passes. Returns None when no weighted term has any unit.
    """
    weights, units = method.term_weights(), method.term_units()
    totals = local_totals(micro) if totals is None else totals
    if all(totals[units[t]] == 0 for t, w in weights.items() if w):
        return None
    logged: dict[str, torch.Tensor] = {}
    for index, prepared in enumerate(micro):
        last = index == len(micro) - 1
        with contextlib.nullcontext() if last or no_sync is None else no_sync():
            with autocast() if autocast is not None else contextlib.nullcontext():
                terms = method.loss_terms(model, prepared, ctx)
                if "pretrain" in prepared:
                    terms.update(method.pretrain_terms(model, prepared["pretrain"], ctx))
                loss = _step_loss(terms, weights, units, totals)
            backward(loss)
        for term, value in terms.items():
            part = value.detach() / max(totals[units[term]], 1)
            logged[term] = logged.get(term, 0) + part
    return logged


def weighted_loss(logged: dict[str, torch.Tensor], weights: dict[str, float]) -> torch.Tensor:
    """The step's loss as back-propagated: the weighted sum of its (normalised) terms."""
    return sum(weight * logged[term] for term, weight in weights.items() if weight)


@dataclass
class _Throughput:
    """Tokens per second since the last log record."""

    tokens: int = 0
    since: float = field(default_factory=time.time)

    def rate(self) -> float:
        now = time.time()
        rate = self.tokens / max(now - self.since, 1e-9)
        self.tokens, self.since = 0, now
        return rate


def _log_record(step, lr, logged, weights, throughput, elapsed_s) -> dict:
    values = {k: float(v) for k, v in logged.items()}
    loss = sum(weight * values[term] for term, weight in weights.items() if weight)
    return {
        "step": step,
        "lr": lr,
        "loss": loss,
        **values,
        "tokens_per_s": throughput.rate(),
        "elapsed_s": elapsed_s,
    }


def _restore(
    checkpoint_dir: Path | None, parts: Trainables, cfg: TrainConfig, accelerator: Accelerator
) -> Progress:
    found = None
    if checkpoint_dir is not None:
        rank, processes = accelerator.process_index, accelerator.num_processes
        found = load_checkpoint(checkpoint_dir, parts, rank=rank, processes=processes)
    progress = Progress(**found) if found is not None else Progress()
    if progress.step > cfg.steps:
        raise DataError(
            f"checkpoint {checkpoint_dir} is at step {progress.step}, past train.steps="
            f"{cfg.steps}; resume with the recipe of the original run"
        )
    return progress


def _save(checkpoint_dir: Path, parts: Trainables, progress: Progress, accelerator) -> None:
    """Checkpoint from the main process, with every other process's own RNG and method state."""
    others = None
    if accelerator.num_processes > 1:
        others = gather_object([rank_state(parts)])[1:]
    if accelerator.is_main_process:
        save_checkpoint(checkpoint_dir, parts, asdict(progress), others)
    accelerator.wait_for_everyone()


def _due(step: int, every: int, last: int) -> bool:
    return every > 0 and (step % every == 0 or step == last)


# ---- several processes ---------------------------------------------------------------------
def check_shardable(batch_size: int, processes: int) -> None:
    """A user error unless a global micro-batch splits evenly over the processes."""
    if batch_size % processes:
        raise RecipeError(
            f"batch_size {batch_size} does not split over {processes} processes: every process "
            f"takes an equal part of each micro-batch; set the train batch_size (teacher.train, "
            f"student.init_train and train) to a multiple of {processes}, or launch a number "
            f"of processes that divides {batch_size}"
        )


def shard_batch(batch: dict[str, list], index: int, count: int) -> dict[str, list]:
    """Part ``index`` of ``count`` equal contiguous parts of every list of ``batch``."""
    size = len(next(iter(batch.values()))) // count
    return {key: values[index * size : (index + 1) * size] for key, values in batch.items()}


def count_keys(method: Method) -> list[str]:
    """The unit counts a step needs: those of the method's terms, and tokens (throughput)."""
    return sorted(set(method.term_units().values()) | {"tokens"})


def global_totals(totals: Counter, keys: list[str], accelerator) -> Counter:
    """``totals`` summed over every process (one host sync; the counts are host numbers)."""
    if accelerator.num_processes == 1:
        return totals
    local = torch.tensor([totals[k] for k in keys], dtype=torch.long, device=accelerator.device)
    return Counter(dict(zip(keys, accelerator.reduce(local, "sum").tolist(), strict=True)))


def global_logged(logged: dict[str, torch.Tensor], accelerator) -> dict[str, torch.Tensor]:
    """Each logged term summed over processes (on the device: no host sync)."""
    if accelerator.num_processes == 1:
        return logged
    names = sorted(logged)
    device = accelerator.device
    stacked = torch.stack([torch.as_tensor(logged[n]).to(device, torch.float32) for n in names])
    return dict(zip(names, accelerator.reduce(stacked, "sum").unbind(), strict=True))


def with_pretrain(prepared: dict, pretrain: BatchStream | None, ctx: TrainContext, shard):
    """``prepared`` with a batch of pre-training chunks (``pretrain``, ``pt_tokens``) when
    there is a corpus stream; every chunk token but the first is a target."""
    if pretrain is None:
        return prepared
    chunks = shard(pretrain.next_batch())["chunks"]
    pairs = to_device(
        collate_pairs([[]] * len(chunks), chunks, ctx.tokenizer.pad_token_id), ctx.device
    )
    counts = {**prepared["counts"], "pt_tokens": response_token_count(pairs["labels"])}
    return {**prepared, "pretrain": pairs, "counts": counts}


@dataclass
class TrainLog:
    """Where the loop's records go (main process): the training log file, ``on_record`` (the
    unit's trackers), and, when stderr shows no bars, one progress line per record."""

    path: Path | None = None
    on_record: Callable[[dict], None] | None = None

    def write(self, record: dict, desc: str, total: int) -> None:
        if self.path is not None:
            append_jsonl(self.path, record)
        if self.on_record is not None:
            self.on_record(record)
        if console.lines():
            step, elapsed = record["step"], record["elapsed_s"]
            rate = step / elapsed if elapsed > 0 else 0.0
            left = (total - step) / rate if rate > 0 else 0.0
            console.log(
                f"{desc}: step {step}/{total}, loss {record['loss']:.4f}, {rate:.2f} it/s, "
                f"{console.clock(left)} left"
            )


def train(
    method: Method,
    student,
    cfg: TrainConfig,
    stream: BatchStream,
    ctx: TrainContext,
    accelerator: Accelerator,
    log: TrainLog | Path | None = None,
    desc: str = "train",
    checkpoint_dir: Path | None = None,
    pretrain: BatchStream | None = None,
    dev: DevTracker | None = None,
) -> TrainResult:
    """Train ``student`` in place with ``method`` for ``cfg.steps`` optimiser steps.

    With ``checkpoint_dir``, training starts from the checkpoint there if any (weights,
    optimiser, schedule, RNG states, data position, method state, counters) and writes one every
    ``cfg.checkpoint_every`` steps and after the last step; the caller deletes it when the unit
    is done. With several processes, ``stream.batch_size`` is the global micro-batch (a multiple
    of the process count), the main process alone writes the log (:class:`TrainLog`; a path is
    the training log file) and the checkpoint, and
    the checkpoint keeps every process's own RNG and method state.

    Non-finite losses are caught without a host sync per step: a device-side guard keeps the
    first non-finite step and its term values, and is checked at every log record, before every
    checkpoint and at the end, raising :class:`NonFiniteLoss` with that step and those values.
    The optimiser steps taken from that step to the check are not undone; the unit fails, its
    weights are never saved, and its last checkpoint predates the non-finite step.

    ``pretrain``: batches of pre-training chunks (items ``{"chunks": ids}``, batch size that of
    ``stream``) for a method with ``pt_weight`` > 0; ignored otherwise. A method with
    ``disables_dropout`` trains (and samples) with the student's dropout off. The sequences
    through the teacher's forward (``ctx.teacher``) are counted into ``teacher_forwards``.
    ``dev``: validation (``cfg.eval_every``; :mod:`dpkd_bench.dev`): the dev split is scored
    before the first step, every ``eval_every`` steps and after the last; with ``cfg.select``
    ``best_dev`` the student ends with the best point's weights. Its curve is in the result.
    With ``checkpoint_dir`` and one process, SIGTERM (a scheduler preempting or timing out the
    job) makes the loop checkpoint after the current step and raise :class:`Terminated`.
    """
    check_shardable(stream.batch_size, accelerator.num_processes)
    check_corpus(method, pretrain is not None)
    pretrain = pretrain if method.config.pt_weight > 0 else None
    # the schedule the methods see is the loop's own
    ctx = dataclasses.replace(
        ctx,
        grad_accum=cfg.grad_accum,
        total_steps=cfg.steps,
        processes=accelerator.num_processes,
    )
    student.train()
    with (
        checkpointed_activations(student, cfg.gradient_checkpointing),
        dropout_off(student, method.disables_dropout),
        counted_forwards(ctx.teacher) as teacher_forwards,
        sigterm_requested(accelerator.num_processes == 1 and checkpoint_dir is not None) as stop,
    ):
        result = _loop(
            method,
            student,
            cfg,
            (stream, pretrain),
            ctx,
            accelerator,
            log if isinstance(log, TrainLog) else TrainLog(log),
            desc,
            checkpoint_dir,
            (teacher_forwards, stop),
            dev,
        )
    accelerator.free_memory()
    return result


def _validate(dev: DevTracker, student, progress: Progress, desc: str, accelerator) -> float:
    """Score the dev split at ``progress``'s step; the seconds it took (not training time)."""
    started = time.time()
    forwards = progress.teacher_forwards  # this process's: summed over every process
    if accelerator.num_processes > 1:
        local = torch.tensor(forwards, device=accelerator.device)
        forwards = int(accelerator.reduce(local, "sum"))
    point = {
        "step": progress.step,
        "tokens": progress.tokens,
        "teacher_forwards": forwards,
        "elapsed_s": round(progress.elapsed_s, 3),
    }
    score = dev.observe(student, point, accelerator)
    console.log(f"{desc}: step {progress.step}, dev {dev.metric} {score:.2f}")
    return time.time() - started


def _loop(
    method, student, cfg, streams, ctx, accelerator, train_log, desc, checkpoint_dir, flags, dev
):
    """The loop of :func:`train`, once the student is set up for it. ``flags``: the count of
    the teacher's sequences (:func:`counted_forwards`) and the SIGTERM request
    (:func:`sigterm_requested`): the loop checkpoints after the step it arrives in, then raises
    :class:`Terminated`."""
    counted, terminate = flags
    stream, pretrain = streams
    optimizer, scheduler = make_optimizer(student, cfg)
    parts = Trainables(student, optimizer, scheduler, stream, method, ctx.generator, pretrain, dev)
    # The scheduler stays unprepared: accelerate's would step it once per process.
    model, prepared_optimizer = accelerator.prepare(student, optimizer)
    run = Optimisation(model, prepared_optimizer, scheduler, cfg, accelerator)
    method.start(ctx)
    progress = _restore(checkpoint_dir, parts, cfg, accelerator)
    counted[0] = progress.teacher_forwards
    rank, processes, main = (
        accelerator.process_index,
        accelerator.num_processes,
        accelerator.is_main_process,
    )
    no_sync = run.no_sync if processes > 1 else None
    keys, weights, guard, throughput = (
        count_keys(method),
        method.term_weights(),
        FiniteGuard(),
        _Throughput(),
    )

    def shard(batch):
        return shard_batch(batch, rank, processes)

    def draw():
        return shard(stream.next_batch())

    started = time.time() - progress.elapsed_s
    if dev is not None and dev.due(progress.step) and progress.step == 0:
        spent = _validate(dev, student, progress, desc, accelerator)
        started, throughput.since = started + spent, throughput.since + spent
    steps = range(progress.step + 1, cfg.steps + 1)
    bar = tqdm(
        steps,
        initial=progress.step,
        total=cfg.steps,
        desc=desc,
        leave=False,
        dynamic_ncols=True,
        disable=not main or not console.bars(),
    )
    for step in bar:
        with torch.no_grad():
            micro = [
                with_pretrain(method.prepare_next(draw, ctx), pretrain, ctx, shard)
                for _ in range(cfg.grad_accum)
            ]
        totals = global_totals(local_totals(micro), keys, accelerator)
        logged = accumulate(method, model, micro, ctx, run.backward, totals, no_sync, run.autocast)
        if logged is None:
            progress.skipped += 1  # nothing to learn from (e.g. every response empty): never NaN
        else:
            logged = global_logged(logged, accelerator)
            guard.observe(step, weighted_loss(logged, weights), logged)
            run.step()
            method.end_step(step, logged)
            progress.tokens += totals["tokens"]
            throughput.tokens += totals["tokens"]
        progress.step, progress.elapsed_s = step, time.time() - started
        progress.teacher_forwards = counted[0]
        if dev is not None and dev.due(step):  # its time is neither training nor throughput
            spent = _validate(dev, student, progress, desc, accelerator)
            started, throughput.since = started + spent, throughput.since + spent
        if logged is not None and _due(step, cfg.log_every, cfg.steps):
            guard.check()
            lr = scheduler.get_last_lr()[0]
            record = _log_record(step, lr, logged, weights, throughput, progress.elapsed_s)
            bar.set_postfix(loss=f"{record['loss']:.4f}")
            if main:
                train_log.write(record, desc, cfg.steps)
        if checkpoint_dir is not None and (
            _due(step, cfg.checkpoint_every, cfg.steps) or terminate[0]
        ):
            guard.check()
            _save(checkpoint_dir, parts, progress, accelerator)
        if terminate[0]:
            raise Terminated(step)
    guard.check()
    forwards = accelerator.reduce(torch.tensor(counted[0], device=accelerator.device), "sum")
    if dev is not None:
        dev.restore_best(student)
    return TrainResult(
        cfg.steps,
        progress.elapsed_s,
        progress.tokens,
        progress.skipped,
        int(forwards),
        dev.summary() if dev is not None else None,
    )
