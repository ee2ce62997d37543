"""The method interface: what data a method needs, and its loss, as small hooks.

The training loop (``dpkd_bench.train``) is the same for every method. Per optimiser step it
calls, for each micro-batch:

1. ``prepare(batch, ctx)`` under ``torch.no_grad``: turn raw token lists into tensors and draw
   whatever samples the method needs (on-policy student samples, ...). It returns a dict that
   must hold ``counts``: the number of units (tokens, sequences, ...) each loss term averages
   over. The loop adds the counts of all micro-batches of the step first, so that gradient
   accumulation normalises by the whole accumulated batch, never per micro-batch.
2. ``loss_terms(student, prepared, ctx)``: a dict of per-term **sums** (tensors). The loop
   divides each by the step's total count of that term's unit and weights it with ``weights()``.

The loop draws each micro-batch through ``prepare_next(draw, ctx)``, which by default is
``prepare(draw(), ctx)``; a method that trains on a store of its own (MiniLLM's rollouts) draws
the batches it needs to fill the store and serves micro-batches from it.

Shared parts every method has:

* the LM term on a pre-training corpus (MiniLLM, DistiLLM and the DPKD code add one): when the
  method's ``pt_weight`` is > 0 the loop attaches a batch of corpus chunks to every prepared
  micro-batch (``prepared["pretrain"]``) and ``pretrain_terms`` adds its terms, averaged over the
  corpus tokens of the accumulated batch and weighted by ``pretrain_weights``;
* dropout: a method whose official code trains without dropout says so with
  ``disables_dropout``, and the loop turns the student's dropout off for its unit.

A method is one file: its ``Config`` dataclass (official defaults, ranges checked in
``__post_init__``; every Config derives from :class:`MethodConfig`), its hooks and its paper.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import torch

from dpkd_bench import losses
from dpkd_bench.config import require
from dpkd_bench.data.collate import IGNORE, collate_pairs, collate_prompts
from dpkd_bench.errors import RecipeError
from dpkd_bench.generate import DecodeSettings, decode, response_lists
from dpkd_bench.methods.workload import Workload

GROUND_TRUTH = "ground_truth"
TEACHER_SAMPLES = "teacher_samples"
TRAIN_DATA = (GROUND_TRUTH, TEACHER_SAMPLES)
# What ``describe()["data"]`` names, per source of the responses a method trains on.
DATA_LABELS = {
    GROUND_TRUTH: "ground-truth responses",
    TEACHER_SAMPLES: "cached teacher samples",
}


@dataclass
class MethodConfig:
    """Settings every method has.

    ``pt_weight``: weight of the term on the pre-training corpus (``data.pretrain_source``),
    averaged over the corpus tokens of the accumulated batch; 0 leaves the corpus out. The term
    is ``(1 - pt_kd_ratio) * CE + pt_kd_ratio * KL(p || q)`` on the corpus: plain language
    modelling in DistiLLM (``pt_kd_ratio`` 0), half LM and half forward KD in MiniLLM and the
    DPKD code (0.5).
    """

    pt_weight: float = 0.0
    pt_kd_ratio: float = 0.0

    def __post_init__(self):
        require(self.pt_weight >= 0, "pt_weight", "must be >= 0 (0 = no pre-training term)")
        require(0.0 <= self.pt_kd_ratio <= 1.0, "pt_kd_ratio", "must be in [0, 1]")


@dataclass
class TrainContext:
    """What a method may use besides the student: the frozen teacher and sampling settings."""

    student: Any  # the model being trained (unwrapped), for on-policy sampling
    teacher: Any  # frozen model, or None for methods that do not use it
    tokenizer: Any
    sampling: DecodeSettings  # on-policy sampling (student samples)
    generator: torch.Generator  # seeded source of on-policy sampling randomness
    device: torch.device
    dev_items: Sequence[dict] = ()  # validation items {"prompts", "responses"} (token ids)
    total_steps: int = 0  # optimiser steps of the whole unit, for step-dependent schedules
    grad_accum: int = 1  # micro-batches per optimiser step
    steps_per_epoch: int = 0  # optimiser steps per pass over the training items (0: unknown)
    processes: int = 1  # processes training together, each drawing its share of every batch


class Method:
    """Base class of every distillation method (see the module docstring for the protocol)."""

    name: ClassVar[str]
    paper: ClassVar[str]
    Config: ClassVar[type]
    uses_teacher: ClassVar[bool] = True
    # Which response the batches carry: the dataset's ground truth, or cached teacher samples.
    train_data: ClassVar[str] = GROUND_TRUTH
    # Whether batches also carry the cached teacher sample (e.g. DPKD's chosen response y_t).
    needs_teacher_samples: ClassVar[bool] = False
    # Loss term -> the count it is averaged over ("tokens", "sequences", ...).
    units: ClassVar[dict[str, str]] = {}
    # How this toolkit deliberately differs from the official code ("" when it does not).
    deviation: ClassVar[str] = ""
    # Whether the official code trains (and samples) with the student's dropout off.
    disables_dropout: ClassVar[bool] = False
    # Config settings that keep every batch teacher-forced on the training items, so the
    # teacher-logit cache can serve the method (``teacher_cache_k`` > 0); None: it cannot.
    teacher_forced: ClassVar[dict[str, Any] | None] = None
    # `dpkd-bench tune`: at most two of the method's own Config knobs and the values tried,
    # beside the learning rate every method is tuned over (dpkd_bench.tune)
    search_space: ClassVar[dict[str, tuple]] = {}

    def __init__(self, config=None):
        self.config = config if config is not None else self.Config()

    @property
    def uses_teacher_samples(self) -> bool:
        """Whether the run must sample teacher responses for this method."""
        return self.needs_teacher_samples or self.train_data == TEACHER_SAMPLES

    @property
    def uses_teacher_cache(self) -> bool:
        """Whether this method reads the teacher-logit cache (its ``teacher_cache_k`` > 0)."""
        return getattr(self.config, "teacher_cache_k", 0) > 0

    # ---- hooks -------------------------------------------------------------------------
    def weights(self) -> dict[str, float]:
        raise NotImplementedError

    def prepare(self, batch: dict, ctx: TrainContext) -> dict:
        return prepare_ground_truth(batch, ctx)

    def prepare_next(self, draw: Callable[[], dict], ctx: TrainContext) -> dict:
        """The next micro-batch, prepared; ``draw()`` returns the next batch of training items
        (this process's share). Called by the loop under ``torch.no_grad``."""
        return self.prepare(draw(), ctx)

    def loss_terms(self, student, prepared: dict, ctx: TrainContext) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    # ---- the pre-training term (shared; see the module docstring) ---------------------
    def pretrain_terms(self, student, pairs: dict, ctx: TrainContext) -> dict[str, torch.Tensor]:
        """Term sums on a batch of pre-training chunks (every token but the first counts):
        the student's CE and, when ``pt_kd_ratio`` > 0, KL(p || q) against the teacher."""
        labels, mask = shifted_labels(pairs)
        rows = response_logits(student, pairs, mask)  # [N, V]
        ce = losses.token_cross_entropy(rows[None], labels[mask][None])[0]
        terms = {"pt": scatter_sum(ce, mask)}
        if self.config.pt_kd_ratio > 0:
            teacher = teacher_response_logits(ctx, pairs, mask)
            terms["pt_kd"] = scatter_sum(
                losses.token_forward_kl(rows[None], teacher[None])[0], mask
            )
        return terms

    def pretrain_weights(self) -> dict[str, float]:
        c = self.config
        return {"pt": c.pt_weight * (1 - c.pt_kd_ratio), "pt_kd": c.pt_weight * c.pt_kd_ratio}

    def term_weights(self) -> dict[str, float]:
        """Every weighted term the loop back-propagates: the method's and the corpus's."""
        extra = self.pretrain_weights() if self.config.pt_weight > 0 else {}
        return {**self.weights(), **extra}

    def term_units(self) -> dict[str, str]:
        """The count each term is averaged over; corpus terms over ``pt_tokens``."""
        return {**self.units, **dict.fromkeys(self.pretrain_weights(), "pt_tokens")}

    # ---- resumable state (optional) ----------------------------------------------------
    def start(self, ctx: TrainContext) -> None:
        """Called by the training loop before a unit's first step (and before a checkpoint is
        restored): reset whatever state the method carries from one unit to the next."""

    def end_step(self, step: int, logged: dict[str, torch.Tensor]) -> None:
        """Called after optimiser step ``step`` (1-based) with the step's logged term values:
        each term's mean over the whole accumulated batch of every process, so that every
        process (and every ``grad_accum``) sees the same values. A schedule that follows
        training (TAID's interpolation, DistiLLM-2's loss weights) advances here."""

    def state_dict(self) -> dict[str, Any]:
        """State the method carries across optimiser steps (a replay buffer, a schedule), for
        checkpoints: plain Python data and tensors only (read back with weights_only=True)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned, before a resumed unit continues."""

    # ---- description -------------------------------------------------------------------
    def workload(self) -> Workload:
        """Passes of each model per training sequence, for the planner (the pre-training term
        is added by the planner): one teacher forward unless the cache serves it."""
        cached = self.uses_teacher_cache or not self.uses_teacher
        return Workload(teacher_forward=0.0 if cached else 1.0)

    def data_sources(self) -> list[str]:
        """What the method trains on, with its settings (``dpkd-bench ls``)."""
        sources = [DATA_LABELS[self.train_data]]
        if self.needs_teacher_samples and self.train_data != TEACHER_SAMPLES:
            sources.append(DATA_LABELS[TEACHER_SAMPLES])
        return sources

    def describe(self) -> dict[str, Any]:
        sources = self.data_sources()
        if self.config.pt_weight > 0:
            sources.append(f"pre-training corpus (pt_weight {self.config.pt_weight})")
        return {
            "name": self.name,
            "paper": self.paper,
            "data": "; ".join(sources),
            "dropout": "off" if self.disables_dropout else "as the model is configured",
            "uses_teacher": self.uses_teacher,
            "defaults": {f.name: getattr(self.config, f.name) for f in fields(self.config)},
            "deviation": self.deviation,
        }


def check_corpus(method: Method, has_corpus: bool) -> None:
    """A user error when ``method`` weights a pre-training term but there is no corpus."""
    if method.config.pt_weight > 0 and not has_corpus:
        raise RecipeError(
            f"{method.name}.pt_weight={method.config.pt_weight} weights a term on a "
            "pre-training corpus but the recipe has none; set data.pretrain_source (synthetic, "
            f"a .txt/.jsonl path or a Hub dataset) or {method.name}.pt_weight=0"
        )


# ---- shared pieces used by the method files -------------------------------------------------


def to_device(tensors: dict[str, torch.Tensor], device) -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in tensors.items()}


def prepare_ground_truth(batch: dict, ctx: TrainContext) -> dict:
    """Teacher-forced pairs (prompt + the batch's response) and their token count."""
    pairs = to_device(
        collate_pairs(batch["prompts"], batch["responses"], ctx.tokenizer.pad_token_id), ctx.device
    )
    return {"pairs": pairs, "counts": {"tokens": response_token_count(pairs["labels"])}}


def response_token_count(labels: torch.Tensor) -> int:
    return int((labels[:, 1:] != IGNORE).sum())


def forward_logits(model, pairs: dict[str, torch.Tensor]) -> torch.Tensor:
    """Logits for next-token prediction, aligned with ``labels[:, 1:]``. [B, L-1, V]"""
    return model(input_ids=pairs["input_ids"], attention_mask=pairs["attention_mask"]).logits[
        :, :-1
    ]


def _forward_source(model) -> str:
    """The source of the forward of ``model`` (unwrapped from DDP/FSDP/compile wrappers)."""
    while hasattr(model, "module") or hasattr(model, "_orig_mod"):
        model = getattr(model, "module", None) or model._orig_mod
    forward = type(model).forward
    if forward not in _SOURCES:
        try:
            _SOURCES[forward] = inspect.getsource(forward)
        except (OSError, TypeError):
            _SOURCES[forward] = ""
    return _SOURCES[forward]


_SOURCES: dict = {}


def keeps_masked_logits(model) -> bool:
    """Whether ``model`` computes its logits on the positions of a boolean ``logits_to_keep``
    mask only (transformers' ``slice_logits_to_keep``, used by the causal LMs of
    transformers 5)."""
    return "slice_logits_to_keep" in _forward_source(model)


def response_logits(model, pairs: dict[str, torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
    """``forward_logits(model, pairs)[mask]`` without projecting the other positions on the
    vocabulary. [N, V]

    ``mask`` [B, L-1] marks the positions wanted (the response positions of
    ``shifted_labels``). The body of the model still runs on every position; only the output
    projection (the ``lm_head``, [H, V] per position) is restricted, which skips most of its cost
    and of the ``[B, L, V]`` logits' memory when prompts are long or vocabularies large. Models
    that take a boolean ``logits_to_keep`` get exactly the masked rows; other models with an
    integer ``logits_to_keep`` get the positions from the first masked column on; others the
    full logits. The rows are those of the full computation up to the rounding of a matmul over
    fewer rows.
    """
    kwargs = {"input_ids": pairs["input_ids"], "attention_mask": pairs["attention_mask"]}
    if keeps_masked_logits(model):
        keep = torch.cat([mask, torch.zeros_like(mask[:, :1])], dim=1)
        return model(**kwargs, logits_to_keep=keep).logits
    columns = mask.any(0).nonzero()
    first = int(columns[0]) if len(columns) else mask.shape[1]
    if first == 0 or "logits_to_keep" not in _forward_source(model):
        return forward_logits(model, pairs)[mask]
    logits = model(**kwargs, logits_to_keep=mask.shape[1] + 1 - first).logits[:, :-1]
    return logits[mask[:, first:]]


def teacher_response_logits(ctx: TrainContext, pairs: dict, mask: torch.Tensor) -> torch.Tensor:
    """The frozen teacher's ``response_logits``, without autograd. [N, V]"""
    with torch.no_grad():
        return response_logits(ctx.teacher, pairs, mask)


def shifted_labels(pairs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(labels [B, L-1], mask [B, L-1]) for the positions that predict a response token."""
    labels = pairs["labels"][:, 1:]
    return labels, labels != IGNORE


def scatter_rows(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-row values [N] placed at the set positions of ``mask`` [B, T], 0 elsewhere. [B, T]"""
    full = torch.zeros(mask.shape, dtype=values.dtype, device=values.device)
    return full.masked_scatter(mask, values)


def scatter_sum(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sum of per-row values [N] placed at the set positions of ``mask`` [B, T]. -> scalar

    The same sum, bit for bit, as ``losses.masked_sum`` of the full per-position values.
    """
    return losses.masked_sum(scatter_rows(values, mask), mask)


def row_logprobs(rows: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """log softmax(rows)[label] of the response rows ``rows`` [N, V] (``response_logits``),
    placed back at their positions: ``losses.token_logprobs`` of the full logits. [B, T]"""
    return scatter_rows(losses.token_logprobs(rows[None], labels[mask][None])[0], mask)


def response_ce_sum(model, pairs: dict[str, torch.Tensor]) -> torch.Tensor:
    """Summed next-token CE of ``model`` on the response tokens of ``pairs``, with the logits of
    the response positions only (``response_logits``). -> scalar"""
    labels, mask = shifted_labels(pairs)
    rows = response_logits(model, pairs, mask)
    return scatter_sum(losses.token_cross_entropy(rows[None], labels[mask][None])[0], mask)


@torch.no_grad()
def sample_student(
    prompts: list,
    ctx: TrainContext,
    settings: DecodeSettings | None = None,
    mix_alpha: float = 0.0,
) -> list[list[int]]:
    """On-policy samples from the student (EOS kept; nothing after the first EOS); with
    ``mix_alpha`` > 0 from the teacher-mixed ``mix_alpha * p + (1 - mix_alpha) * q``."""
    student = ctx.student
    batch = to_device(collate_prompts(prompts, ctx.tokenizer.pad_token_id), ctx.device)
    was_training = student.training
    student.eval()
    mix = {"mix_model": ctx.teacher, "mix_alpha": mix_alpha} if mix_alpha > 0 else {}
    out = decode(
        student,
        batch["input_ids"],
        batch["attention_mask"],
        settings or ctx.sampling,
        ctx.tokenizer.eos_token_id,
        ctx.tokenizer.pad_token_id,
        ctx.generator,
        **mix,
    )
    student.train(was_training)
    return response_lists(out.cpu(), ctx.tokenizer.eos_token_id, keep_eos=True)
