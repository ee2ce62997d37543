"""Dry-run planner: what a recipe will compute, from its values and model configs alone.

``plan(recipe)`` gives one row for the teacher, one for ``student_init`` and one per method
(all seeds together): optimiser steps, training tokens, teacher forwards, student
forward/backward passes, generated tokens, estimated FLOPs and a peak-memory estimate. It loads
no data and no weights: parameter counts come from the model configs, instantiated on the
``meta`` device (no memory), or for Hub names without a config in the local cache from a table
of known architectures (GPT-2 small/medium/large/XL, OPT-1.3B/13B; said so in the row's note).

Estimates (upper bounds where the data decides):

* every training sequence is ``data.max_length`` tokens and every prompt
  ``data.max_prompt_len`` (pass ``seq_len`` / ``prompt_len`` for measured averages); every
  sample runs to ``max_new_tokens``; Hub data sets have unknown sizes (shown as ``?``);
* FLOPs: 2 N per token of a forward pass and 3 times that for forward + backward, N = the
  model's parameter count, except that the output projection (d V of N) runs only on the
  positions whose logits are used (``methods.base.response_logits``; decoding: the last one):
  the response positions of a teacher-forced pass, one per prompt in a prefill, every sampled
  token;
* peak memory (bytes), per unit on one device::

      4 N_s (fp32 weights) + 4 N_s (grads) + 8 N_s (AdamW m, v) + w N_t (frozen teacher, fp32)
      + max(training activations, sampling KV cache)

  training activations = L b s d (34 + 5 a s / d) * c  (Korthikanti et al. 2022, per layer,
  no recomputation; with gradient checkpointing L b s d * 2c + one layer's full term)
  + 5 b r V * 4 (student logits, log-softmax, grad; teacher logits, log-softmax, fp32, on
  the r = seq_len - prompt_len response positions only);
  c = 2 bytes (x2 for fp32, x1 under bf16/fp16 autocast); b = micro-batch rows, s = seq_len,
  L layers, d width, a heads, V vocabulary; KV cache = 2 L d b (prompt_len + max_new_tokens) * 4
  for each model that samples. The teacher row is its own training when the toolkit trains it.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from dpkd_bench.errors import UserError, hub_offline
from dpkd_bench.methods.workload import Workload
from dpkd_bench.recipe import ModelConfig, Recipe, TrainConfig

# ---------------------------------------------------------------------------- model sizes

# Architecture facts of public checkpoints, for Hub names whose config is not cached locally.
KNOWN_ARCHITECTURES: dict[str, dict] = {
    "gpt2": {"model_type": "gpt2", "n_layer": 12, "n_embd": 768, "n_head": 12},
    "gpt2-medium": {"model_type": "gpt2", "n_layer": 24, "n_embd": 1024, "n_head": 16},
    "gpt2-large": {"model_type": "gpt2", "n_layer": 36, "n_embd": 1280, "n_head": 20},
    "gpt2-xl": {"model_type": "gpt2", "n_layer": 48, "n_embd": 1600, "n_head": 25},
    "facebook/opt-1.3b": {
        "model_type": "opt",
        "num_hidden_layers": 24,
        "hidden_size": 2048,
        "ffn_dim": 8192,
        "num_attention_heads": 32,
        "word_embed_proj_dim": 2048,
        "vocab_size": 50272,
        "max_position_embeddings": 2048,
    },
    "facebook/opt-13b": {
        "model_type": "opt",
        "num_hidden_layers": 40,
        "hidden_size": 5120,
        "ffn_dim": 20480,
        "num_attention_heads": 40,
        "word_embed_proj_dim": 5120,
        "vocab_size": 50272,
        "max_position_embeddings": 2048,
    },
}
GPT2_DEFAULTS = {"vocab_size": 50257, "n_positions": 1024}
# Hub names (lower case) -> the architecture they share (MiniLLM's checkpoints included).
NAME_PATTERNS: list[tuple[str, str]] = [
    (r"gpt2-(xl|1\.5b)$", "gpt2-xl"),
    (r"gpt2-(large|760m|774m)$", "gpt2-large"),
    (r"gpt2-(medium|340m|355m)$", "gpt2-medium"),
    (r"(^|/|-)gpt2(-(small|base|120m|124m))?$", "gpt2"),
    (r"opt-13b$", "facebook/opt-13b"),
    (r"opt-1\.3b$", "facebook/opt-1.3b"),
]


@dataclass(frozen=True)
class ModelSize:
    params: int
    n_layer: int
    d_model: int
    n_head: int
    vocab: int
    source: str


def known_architecture(name: str) -> str | None:
    """The table entry a Hub name shares its architecture with, if any."""
    lower = name.lower().rstrip("/")
    for pattern, arch in NAME_PATTERNS:
        if re.search(pattern, lower):
            return arch
    return None


def table_config(arch: str):
    from transformers import AutoConfig

    values = dict(KNOWN_ARCHITECTURES[arch])
    model_type = values.pop("model_type")
    if model_type == "gpt2":
        values = {**GPT2_DEFAULTS, **values}
    return AutoConfig.for_model(model_type, **values)


def _local_config(name: str):
    """The config from a local directory or the Hugging Face cache, or None (no download)."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(name, local_files_only=True)
    except (OSError, ValueError):
        return None


def hub_config(name: str) -> tuple[object, str]:
    """(config, where it came from) for a model name, downloading only as a last resort."""
    config = _local_config(name)
    if config is not None:
        return config, "config" if Path(name).is_dir() else "cached Hub config"
    arch = known_architecture(name)
    if arch is not None:
        return table_config(arch), f"built-in table ({arch}; no cached config for {name})"
    if hub_offline():
        raise UserError(
            f"cannot size model '{name}': no local config and HF_HUB_OFFLINE is set; download "
            f"its config once (`hf download {name} config.json`) or unset HF_HUB_OFFLINE"
        )
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(name), "Hub config"
    except (OSError, ValueError) as err:
        raise UserError(
            f"cannot size model '{name}' ({type(err).__name__}); check the name or your network"
        ) from None


def count_params(config) -> int:
    """Parameters of a causal LM built from ``config`` on the meta device (no memory)."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters())


def _attr(config, *names: str) -> int:
    for name in names:
        value = getattr(config, name, None)
        if value is not None:
            return int(value)
    raise UserError(f"model config {type(config).__name__} lacks {names[0]}; cannot size it")


def size_of(config, source: str) -> ModelSize:
    return ModelSize(
        params=count_params(config),
        n_layer=_attr(config, "num_hidden_layers", "n_layer"),
        d_model=_attr(config, "hidden_size", "n_embd"),
        n_head=_attr(config, "num_attention_heads", "n_head"),
        vocab=_attr(config, "vocab_size"),
        source=source,
    )


def recipe_vocab(recipe: Recipe) -> int:
    """The vocabulary of models the toolkit builds: its trained BPE, or a pretrained one's."""
    name = recipe.tokenizer.name_or_path or recipe.teacher.model.name_or_path
    if name is None:
        return recipe.tokenizer.vocab_size
    return _attr(hub_config(name)[0], "vocab_size")


def model_size(cfg: ModelConfig, vocab: int) -> ModelSize:
    """Size of a pretrained model (from its config) or of a GPT-2 built from the recipe."""
    if cfg.name_or_path:
        return size_of(*hub_config(cfg.name_or_path))
    from transformers import GPT2Config

    config = GPT2Config(
        vocab_size=vocab,
        n_positions=cfg.n_positions,
        n_embd=cfg.n_embd,
        n_layer=cfg.n_layer,
        n_head=cfg.n_head,
        bos_token_id=0,
        eos_token_id=0,
    )
    return size_of(config, "recipe shape")


# ---------------------------------------------------------------------------- workloads


def workload(method) -> Workload:
    """How a method uses the models per training sequence (teacher-forced by default), with
    its pre-training term: one corpus chunk per sequence, and a teacher pass when it has KD."""
    base = method.workload()
    c = method.config
    if c.pt_weight == 0:
        return base
    return dataclasses.replace(
        base,
        student_train=base.student_train + 1.0,
        teacher_forward=base.teacher_forward + (1.0 if c.pt_kd_ratio > 0 else 0.0),
    )


# ---------------------------------------------------------------------------- rows


@dataclass
class PlanRow:
    name: str
    units: int  # trainings (seeds)
    optimizer_steps: int
    train_tokens: int  # tokens through the student's forward + backward
    teacher_forwards: int | None  # sequences through the teacher's forward
    student_fwd_bwd: int  # micro-batch forward/backward passes of the trained model
    generated_tokens: int | None  # sampled tokens (on-policy samples, teacher samples)
    eval_generated_tokens: int | None  # None: eval set sizes unknown before loading the data
    flops: float
    peak_memory_bytes: float
    note: str = field(default="")
    student_flops: float = 0.0  # of the trained model alone (training and its sampling)


@dataclass(frozen=True)
class Shapes:
    seq_len: int
    prompt_len: int
    gen_tokens: int  # sampling max_new_tokens
    eval_prompts: int | None  # prompts per evaluation (all sets and generation seeds)
    eval_tokens: int  # eval max_new_tokens
    n_train: int | None
    bytes_per_act: int

    @property
    def response_len(self) -> int:
        """Response positions of a training sequence (the ones with logits)."""
        return max(1, self.seq_len - self.prompt_len)


def forward_flops(size: ModelSize, tokens: float, logit_tokens: float) -> float:
    """FLOPs of forward passes over ``tokens`` positions, ``logit_tokens`` of them projected
    onto the vocabulary (2 per parameter and position; the projection only where needed)."""
    head = size.d_model * size.vocab
    return 2 * ((size.params - head) * tokens + head * logit_tokens)


def eval_prompts(recipe: Recipe) -> int | None:
    """Eval prompts per evaluation (every set, every generation seed), when known."""
    data, cfg = recipe.data, recipe.eval
    per_set = data.max_eval_examples or (data.n_eval if data.source == "synthetic" else 0)
    if not per_set:
        return None
    seeds = 1 if cfg.decoding == "greedy" else len(cfg.gen_seeds)
    return per_set * len(data.eval_sets) * seeds


def shapes_of(recipe: Recipe, seq_len: int | None, prompt_len: int | None) -> Shapes:
    return Shapes(
        seq_len=seq_len or recipe.data.max_length,
        prompt_len=prompt_len or recipe.data.max_prompt_len,
        gen_tokens=recipe.sampling.max_new_tokens,
        eval_prompts=eval_prompts(recipe),
        eval_tokens=recipe.eval.max_new_tokens,
        n_train=recipe.data.n_train if recipe.data.source == "synthetic" else None,
        bytes_per_act=2 if recipe.train.mixed_precision != "no" else 4,
    )


def activation_bytes(size: ModelSize, rows: float, s: Shapes, checkpointing: bool) -> float:
    """Training activations of one micro-batch of ``rows`` sequences (module docstring)."""
    n_layer, d, heads, seq = size.n_layer, size.d_model, size.n_head, s.seq_len
    one_layer = rows * seq * d * (34 + 5 * heads * seq / d) * s.bytes_per_act / 2
    if checkpointing:
        layers = n_layer * rows * seq * d * s.bytes_per_act + one_layer
    else:
        layers = n_layer * one_layer
    return layers + 5 * rows * s.response_len * size.vocab * 4


def kv_cache_bytes(size: ModelSize, rows: float, s: Shapes) -> float:
    return 2 * size.n_layer * size.d_model * rows * (s.prompt_len + s.gen_tokens) * 4


def peak_bytes(
    student: ModelSize, teacher: ModelSize | None, work: Workload, cfg: TrainConfig, s: Shapes
) -> float:
    states = 16 * student.params + (4 * teacher.params if teacher is not None else 0)
    rows = cfg.batch_size * work.student_train
    train = activation_bytes(student, rows, s, cfg.gradient_checkpointing) if cfg.steps else 0
    sampling = kv_cache_bytes(student, cfg.batch_size, s) if work.samples else 0.0
    if work.samples and work.teacher_in_sampling and teacher is not None:
        sampling += kv_cache_bytes(teacher, cfg.batch_size, s)
    return states + max(train, sampling)


def training_row(
    name: str, units: int, cfg: TrainConfig, work: Workload, sizes: tuple, s: Shapes
) -> PlanRow:
    """Counts and FLOPs of ``units`` trainings with ``cfg`` (evaluation not included)."""
    student, teacher = sizes
    sequences = units * cfg.steps * cfg.batch_size * cfg.grad_accum
    samples = sequences * work.samples
    generated = samples * s.gen_tokens
    forward_only = sequences * work.student_forward * s.seq_len + samples * s.prompt_len
    teacher_tokens = sequences * work.teacher_forward * s.seq_len
    if work.teacher_in_sampling:
        teacher_tokens += generated + samples * s.prompt_len
    trained = sequences * work.student_train
    flops = 3 * forward_flops(student, trained * s.seq_len, trained * s.response_len)
    forward_rows = sequences * work.student_forward
    flops += forward_flops(
        student, forward_only + generated, forward_rows * s.response_len + samples + generated
    )
    student_flops = flops
    if teacher is not None:
        forced = sequences * work.teacher_forward
        logit_tokens = forced * s.response_len
        if work.teacher_in_sampling:
            logit_tokens += samples + generated
        flops += forward_flops(teacher, teacher_tokens, logit_tokens)
    return PlanRow(
        name=name,
        units=units,
        optimizer_steps=units * cfg.steps,
        train_tokens=round(sequences * work.student_train * s.seq_len),
        teacher_forwards=round(sequences * work.teacher_forward),
        student_fwd_bwd=round(units * cfg.steps * cfg.grad_accum * math.ceil(work.student_train)),
        generated_tokens=round(generated),
        eval_generated_tokens=None,
        flops=flops,
        peak_memory_bytes=peak_bytes(student, teacher, work, cfg, s),
        student_flops=student_flops,
        note=work.note,
    )


def add_eval(row: PlanRow, size: ModelSize, evaluations: int, s: Shapes) -> PlanRow:
    """Add ``evaluations`` runs of the eval protocol (prefill + sampling, forward only)."""
    if s.eval_prompts is None:
        return row
    prompts = evaluations * s.eval_prompts
    row.eval_generated_tokens = prompts * s.eval_tokens
    generated = row.eval_generated_tokens
    row.flops += forward_flops(size, generated + prompts * s.prompt_len, generated + prompts)
    return row


def _add_teacher_pass(row: PlanRow, teacher: ModelSize, s: Shapes, generate: bool) -> None:
    """One pass of the teacher over the training prompts: sampling them, or a forward (cache)."""
    if s.n_train is None:
        return
    if generate:
        row.generated_tokens = (row.generated_tokens or 0) + s.n_train * s.gen_tokens
        row.flops += forward_flops(
            teacher, s.n_train * (s.prompt_len + s.gen_tokens), s.n_train * (1 + s.gen_tokens)
        )
    else:
        row.teacher_forwards = (row.teacher_forwards or 0) + s.n_train
        row.flops += forward_flops(teacher, s.n_train * s.seq_len, s.n_train * s.response_len)


def _no_steps(cfg: TrainConfig) -> TrainConfig:
    return replace(cfg, steps=0)


def reference_row(
    name: str, cfg: TrainConfig, size: ModelSize, s: Shapes, units: int = 1
) -> PlanRow:
    """``units`` models trained by ``sft`` for ``cfg.steps`` (possibly 0), without a teacher."""
    row = training_row(name, units, cfg, Workload(teacher_forward=0.0), (size, None), s)
    if not cfg.steps:  # inference only: weights and the evaluation's KV cache
        row.peak_memory_bytes = 4 * size.params + kv_cache_bytes(size, cfg.batch_size, s)
    return row


def teacher_row(recipe: Recipe, methods: list, teacher: ModelSize, s: Shapes) -> PlanRow:
    """The teacher's own training (when built here), its samples, its cache and its eval."""
    cfg = recipe.teacher.train
    row = reference_row(
        "teacher", _no_steps(cfg) if recipe.teacher.model.name_or_path else cfg, teacher, s
    )
    if any(m.uses_teacher_samples for m in methods):
        _add_teacher_pass(row, teacher, s, generate=True)
    if any(m.uses_teacher_cache for m in methods):
        _add_teacher_pass(row, teacher, s, generate=False)
    return add_eval(row, teacher, 1, s)


@dataclass
class PlanResult:
    """The plan's rows with the model sizes and the shapes they were estimated for."""

    rows: list[PlanRow]
    sizes: dict[str, ModelSize]
    shapes: Shapes
    trains: dict[str, TrainConfig] = field(default_factory=dict)  # method -> its settings

    def row(self, name: str) -> PlanRow:
        return next(r for r in self.rows if r.name == name)

    def to_frame(self):
        """The rows as a pandas DataFrame, one column per field."""
        import pandas as pd

        return pd.DataFrame([{f.name: getattr(r, f.name) for f in fields(r)} for r in self.rows])


def plan(recipe: Recipe, seq_len: int | None = None, prompt_len: int | None = None) -> PlanResult:
    """Rows for the teacher, ``student_init`` and every method of ``recipe`` (module doc)."""
    from dpkd_bench.methods import get_method
    from dpkd_bench.variants import parse_variant

    vocab = recipe_vocab(recipe)
    teacher = model_size(recipe.teacher.model, vocab)
    student = model_size(recipe.student.model, vocab)
    s = shapes_of(recipe, seq_len, prompt_len)
    methods = {
        spec: get_method(spec, **recipe.method_args.get(parse_variant(spec)[0], {}))
        for spec in recipe.methods
    }
    units = len(recipe.seeds)
    inits = units if recipe.student.varies_by_seed else 1  # one student_init per seed, or one
    init_row = reference_row("student_init", recipe.student.init_train, student, s, inits)
    rows = [
        teacher_row(recipe, list(methods.values()), teacher, s),
        add_eval(init_row, student, inits, s),
    ]
    for spec, method in methods.items():
        sizes = (student, teacher if method.uses_teacher else None)
        cfg = planned_train(recipe, spec, s)
        row = training_row(spec, units, cfg, workload(method), sizes, s)
        if cfg.epochs and s.n_train is None:
            row.note = (
                f"{cfg.epochs:g} epochs: steps known once the data is loaded ({cfg.steps} shown)"
            )
        rows.append(add_eval(row, student, units, s))
    trains = {spec: recipe.unit_train(spec) for spec in recipe.methods}
    return PlanResult(rows, {"teacher": teacher, "student": student}, s, trains)


def planned_train(recipe: Recipe, spec: str, s: Shapes) -> TrainConfig:
    """Method ``spec``'s training settings, its epochs as steps where the data size is known."""
    cfg = recipe.unit_train(spec)
    return cfg.for_items(s.n_train) if s.n_train else cfg


def student_flops_per_step(recipe: Recipe, spec: str) -> float:
    """The estimated FLOPs of one optimiser step of method ``spec``'s student (its forward and
    backward passes and its own sampling; the teacher's passes not counted), at the recipe's
    sequence lengths (upper bounds, as in the plan)."""
    from dpkd_bench.methods import get_method
    from dpkd_bench.variants import parse_variant

    method = get_method(spec, **recipe.method_args.get(parse_variant(spec)[0], {}))
    student = model_size(recipe.student.model, recipe_vocab(recipe))
    cfg = replace(recipe.unit_train(spec), steps=1)
    row = training_row(
        spec, 1, cfg, workload(method), (student, None), shapes_of(recipe, None, None)
    )
    return row.student_flops


# ---------------------------------------------------------------------------- formatting


def human(value: float | None, unit: str = "") -> str:
    """1234567 -> '1.23M' (k, M, G, T, P, E); None -> '?'."""
    if value is None:
        return "?"
    for scale, prefix in (
        (1e18, "E"),
        (1e15, "P"),
        (1e12, "T"),
        (1e9, "G"),
        (1e6, "M"),
        (1e3, "k"),
    ):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{prefix}{unit}"
    return f"{value:.3g}{unit}"


COLUMNS = [
    ("row", lambda r: r.name),
    ("steps", lambda r: human(r.optimizer_steps)),
    ("train tokens", lambda r: human(r.train_tokens)),
    ("teacher fwd seqs", lambda r: human(r.teacher_forwards)),
    ("student fwd/bwd", lambda r: human(r.student_fwd_bwd)),
    ("generated", lambda r: human(r.generated_tokens)),
    ("eval generated", lambda r: human(r.eval_generated_tokens)),
    ("FLOPs", lambda r: f"{r.flops:.2e}"),
    ("peak mem", lambda r: f"{r.peak_memory_bytes / 2**30:.2f} GiB"),
]


def train_text(cfg: TrainConfig) -> str:
    """A unit's training settings on one line."""
    every = "epoch" if cfg.eval_every == -1 else f"{cfg.eval_every} steps"
    kept = f"best dev every {every}" if cfg.select == "best_dev" else "last"
    dev = f", dev every {every}" if cfg.eval_every and cfg.select != "best_dev" else ""
    budget = f"{cfg.epochs:g} epochs" if cfg.epochs else f"{cfg.steps} steps"
    start = f", starts from {cfg.init_from}" if cfg.init_from else ""
    return (
        f"lr {cfg.lr:g} {cfg.schedule} (warm-up {cfg.warmup_ratio:g}), {budget} x "
        f"{cfg.batch_size * cfg.grad_accum} sequences ({cfg.batch_size} x {cfg.grad_accum} "
        f"accumulated), weight decay {cfg.weight_decay:g}, clip {cfg.max_grad_norm:g}, "
        f"weights kept: {kept}{dev}{start}"
    )


def format_plan(result: PlanResult) -> str:
    """A plain-text table of the plan with its assumptions and the model sizes' sources."""
    lines = [
        f"{role}: {human(size.params)} parameters ({size.n_layer} layers, d={size.d_model}, "
        f"vocab {size.vocab}; from {size.source})"
        for role, size in result.sizes.items()
    ]
    s = result.shapes
    lines.append(
        f"assumed per sequence: {s.seq_len} tokens, prompts {s.prompt_len}, samples "
        f"{s.gen_tokens} new tokens (upper bounds); FLOPs 6N/trained token, 2N/forward token"
    )
    table = [[name for name, _ in COLUMNS]] + [[fn(r) for _, fn in COLUMNS] for r in result.rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(COLUMNS))]
    for row in table:
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))
    lines += [f"note {r.name}: {r.note}" for r in result.rows if r.note]
    if result.trains:
        lines += ["training settings per method (recipe train, the method's own block, variant):"]
        lines += [f"  {name}: {train_text(cfg)}" for name, cfg in result.trains.items()]
    if s.n_train is None:
        lines.append("note: training set size unknown before loading: teacher passes not counted")
    if s.eval_prompts is None:
        lines.append("note: eval set sizes unknown before loading: evaluation not counted")
    return "\n".join(lines)
