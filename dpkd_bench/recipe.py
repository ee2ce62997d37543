"""Recipes: typed, strict experiment configs.

A recipe is a YAML file of values only. Its schema is the dataclasses below: an unknown key, a
wrong type or an out-of-range value is a :class:`RecipeError` that names the key. Precedence is
CLI overrides > recipe file > dataclass defaults. Method hyper-parameters live under
``method_args.<method>`` and are checked against that method's own config dataclass.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from dpkd_bench.config import build, did_you_mean, require
from dpkd_bench.errors import RecipeError
from dpkd_bench.methods import DEFAULT_METHODS
from dpkd_bench.preflight import check_recipe
from dpkd_bench.stats.board import StatsSettings
from dpkd_bench.train_config import TrainConfig
from dpkd_bench.tune import TuneConfig, TunedRecord
from dpkd_bench.variants import parse_variant, split_train

BUILTIN_RECIPES = ("synthetic", "synthetic-quick")
DEFAULT_RECIPE = "synthetic"
EVAL_BACKENDS = ("hf", "vllm")  # eval.backend: the built-in decoder, or vLLM
LAUNCHERS = ("local", "ray", "slurm")  # launcher.name / --launcher
SUBMITIT_CLUSTERS = ("slurm", "local")  # launcher.cluster: SLURM, or subprocesses here
SLURM_TIME = re.compile(r"^(?:(\d+)-)?(\d+):(\d{2})(?::(\d{2}))?$")  # [D-]H:MM[:SS]
KEY_PART = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]*$")  # one part of an override's key path


@dataclass
class DataConfig:
    """Where the training data and the eval sets come from, and how they are cut."""

    source: str = "synthetic"  # "synthetic", a local JSONL file or directory, or a Hub name
    eval_sets: list[str] = field(
        default_factory=lambda: ["synthetic-id", "synthetic-long", "synthetic-para"]
    )
    # eval-set name -> local directory, JSONL file or Hub dataset holding it: a local copy of a
    # registered set (dolly: /data/dolly) or a set of your own (my-set: data/my-set)
    eval_paths: dict[str, str] = field(default_factory=dict)
    n_train: int = 6000  # synthetic suite: training examples
    n_eval: int = 500  # synthetic suite: examples per eval set
    max_eval_examples: int = 0  # 0 = all; otherwise the first N of each eval set
    dev_num: int = 1000  # instruction JSONL: the first dev_num records are validation
    max_prompt_len: int = 256  # prompts longer than this (in tokens) are dropped
    max_length: int = 384  # prompt + response tokens for training
    seed: int = 0  # synthetic generator seed
    # The optional pre-training (language-modelling) corpus of MiniLLM, DistiLLM and the DPKD
    # code: "synthetic" (plain text of the suite's facts), a local .txt / .jsonl file or a
    # directory of them, or a Hub dataset name (streamed, e.g. Skylion007/openwebtext). Used by
    # a method whose pt_weight is > 0; None = no corpus.
    pretrain_source: str | None = None
    pretrain_text_field: str = "text"  # the text field of JSONL / Hub records
    pretrain_chunks: int = 20000  # chunks of max_length tokens read from the corpus (at most)

    def __post_init__(self):
        require(self.pretrain_chunks >= 1, "pretrain_chunks", "must be >= 1")
        require(self.n_train >= 1, "n_train", f"must be >= 1 (got {self.n_train})")
        require(self.n_eval >= 1, "n_eval", f"must be >= 1 (got {self.n_eval})")
        require(self.max_eval_examples >= 0, "max_eval_examples", "must be >= 0")
        require(self.dev_num >= 0, "dev_num", f"must be >= 0 (got {self.dev_num})")
        require(self.max_prompt_len >= 8, "max_prompt_len", "must be >= 8")
        require(
            self.max_length > self.max_prompt_len,
            "max_length",
            f"must exceed max_prompt_len ({self.max_length} <= {self.max_prompt_len})",
        )
        require(len(self.eval_sets) >= 1, "eval_sets", "must name at least one eval set")


@dataclass
class TokenizerConfig:
    """A pretrained tokenizer (``name_or_path``) or one trained on the synthetic suite."""

    name_or_path: str | None = None
    vocab_size: int = 512

    def __post_init__(self):
        require(self.vocab_size >= 300, "vocab_size", f"must be >= 300 (got {self.vocab_size})")


@dataclass
class ModelConfig:
    """A model loaded with ``from_pretrained`` or built from a GPT-2 architecture config."""

    name_or_path: str | None = None
    n_layer: int = 2
    n_embd: int = 96
    n_head: int = 4
    n_positions: int = 512
    dropout: float = 0.0
    trust_remote_code: bool = False
    allow_pickle: bool = False  # load non-safetensors weights (runs code from the file)

    def __post_init__(self):
        for key in ("n_layer", "n_embd", "n_head", "n_positions"):
            require(getattr(self, key) >= 1, key, f"must be >= 1 (got {getattr(self, key)})")
        require(
            self.n_embd % self.n_head == 0,
            "n_embd",
            f"must be divisible by n_head ({self.n_embd} % {self.n_head} != 0)",
        )
        require(0.0 <= self.dropout < 1.0, "dropout", f"must be in [0, 1) (got {self.dropout})")


@dataclass
class TeacherConfig:
    """The teacher: pretrained, or trained here by ``sft`` (cached by content hash)."""

    model: ModelConfig = field(default_factory=lambda: ModelConfig(n_layer=4, n_embd=192, n_head=6))
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(steps=1200, batch_size=32, lr=3e-3)
    )


@dataclass
class StudentConfig:
    """The student and the short ``sft`` that gives ``student_init`` (steps=0 skips it).

    ``init_per_seed``: one ``student_init`` per training seed k (model built and trained with
    seed ``data.seed + k``), each unit of seed k starting from its own, so that the spread
    over seeds, and the tests over them, include the variance of the starting point. Seed 1's
    is the shared ``student_init`` of ``init_per_seed: false`` (seed ``data.seed + 1``), so a
    run of seed 1 alone is the same either way.
    """

    model: ModelConfig = field(default_factory=ModelConfig)
    init_train: TrainConfig = field(
        default_factory=lambda: TrainConfig(steps=100, batch_size=32, lr=3e-3)
    )
    init_per_seed: bool = True

    @property
    def varies_by_seed(self) -> bool:
        """Whether the seeds' ``student_init`` differ: per seed, and trained or built at random
        (a pretrained model used as it is, ``init_train.steps: 0``, is the same for all)."""
        return self.init_per_seed and bool(self.init_train.steps or not self.model.name_or_path)

    def init_seed(self, data_seed: int, seed: int) -> int:
        """The seed that builds and trains the ``student_init`` of training seed ``seed``."""
        return data_seed + (seed if self.varies_by_seed else 1)

    def init_dir_name(self, data_seed: int, seed: int) -> str:
        """The directory of the run that holds training seed ``seed``'s ``student_init``:
        ``student_init`` for the shared one (that of seed 1), ``student_init-seed-<k>`` else."""
        shared = self.init_seed(data_seed, seed) == data_seed + 1
        return "student_init" if shared else f"student_init-seed-{seed}"


@dataclass
class DecodingConfig:
    """Sampling settings shared by evaluation and by teacher / student sampling."""

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    max_new_tokens: int = 64
    batch_size: int = 64

    def __post_init__(self):
        require(self.temperature > 0, "temperature", "must be > 0")
        require(self.top_k >= 0, "top_k", "must be >= 0 (0 = no top-k filter)")
        require(0 < self.top_p <= 1, "top_p", "must be in (0, 1]")
        require(self.max_new_tokens >= 1, "max_new_tokens", "must be >= 1")
        require(self.batch_size >= 1, "batch_size", "must be >= 1")


@dataclass
class LmEvalConfig:
    """lm-evaluation-harness tasks scored on the teacher, student_init and every student."""

    tasks: list[str] = field(default_factory=lambda: ["dpkd_synthetic_mc"])
    num_fewshot: int | None = None  # None: each task's own default
    limit: float | None = None  # items per task: a count (>= 1) or a share (< 1); None: all
    include_path: str | None = None  # a folder of your own task YAMLs (beside the shipped ones)
    batch_size: int = 16

    def __post_init__(self):
        require(len(self.tasks) >= 1, "tasks", "must name at least one task")
        require(self.num_fewshot is None or self.num_fewshot >= 0, "num_fewshot", "must be >= 0")
        require(self.limit is None or self.limit > 0, "limit", "must be > 0")
        require(self.batch_size >= 1, "batch_size", "must be >= 1")


@dataclass
class EvalConfig(DecodingConfig):
    """Decoding protocol of the evaluation (MiniLLM/DPKD: sampling, seeds 10..50)."""

    decoding: str = "sample"  # "sample" or "greedy"
    gen_seeds: list[int] = field(default_factory=lambda: [10, 20, 30, 40, 50])
    fidelity: bool = True  # teacher-fidelity figures (KL both ways, top-1 agreement, length)
    # "hf": the built-in batched decoder (the reference); "vllm": a vLLM engine on the saved
    # model (GPU machines, `pip install vllm`; one process only), see dpkd_bench/vllm_backend.py
    backend: str = "hf"
    vllm_gpu_memory_utilization: float = 0.5  # share of GPU memory vLLM may take (backend vllm)
    # lm-evaluation-harness scores (`pip install -e ".[lm-eval]"`; dpkd_bench/lm_eval_scores.py)
    lm_eval: LmEvalConfig | None = None

    def __post_init__(self):
        super().__post_init__()
        require(
            self.decoding in ("sample", "greedy"),
            "decoding",
            f"must be 'sample' or 'greedy' (got {self.decoding!r})",
        )
        require(len(self.gen_seeds) >= 1, "gen_seeds", "must list at least one seed")
        require(
            self.backend in EVAL_BACKENDS,
            "backend",
            f"must be one of {', '.join(EVAL_BACKENDS)} (got {self.backend!r})",
        )
        require(
            0 < self.vllm_gpu_memory_utilization <= 1,
            "vllm_gpu_memory_utilization",
            "must be in (0, 1]",
        )


@dataclass
class SamplingConfig(DecodingConfig):
    """How teacher samples (SeqKD, DPKD's y_t) and on-policy student samples are drawn."""

    batch_size: int = 128
    seed: int = 1234


def slurm_minutes(value: int | str) -> int:
    """A SLURM time limit, minutes or ``[D-]H:MM[:SS]``, in whole minutes (rounded up)."""
    if isinstance(value, int):
        return value
    match = SLURM_TIME.match(value.strip())
    if not match:
        raise ValueError(value)
    days, hours, minutes, seconds = (int(g or 0) for g in match.groups())
    return days * 1440 + hours * 60 + minutes + (1 if seconds else 0)


@dataclass
class LauncherConfig:
    """Where the units (method x seed) run once the shared stage is done (``--launcher``).

    ``local``: one after another in this process. ``ray``: one Ray task per unit. ``slurm``: one
    SLURM job per unit, through submitit. None of these settings enters the results' identity:
    a run may be resumed under another launcher.
    """

    name: str = "local"
    # Intra-op threads of each unit, and the CPUs it asks for. None: torch's default (local),
    # 1 (ray, slurm), so that parallel units do not oversubscribe the cores.
    cpus_per_unit: int | None = None
    gpus_per_unit: int = 0  # above 1, the unit runs under torchrun, one process per GPU
    max_retries: int = 1  # a failed or lost unit is run again this often, from its checkpoint
    # ray: "auto" (the cluster this machine belongs to) or "ray://HOST:PORT"; None starts a
    # local cluster for the run, of this machine's CPUs
    address: str | None = None
    partition: str | None = None  # slurm: the partition (None: the cluster's default)
    time: int | str = 60  # slurm: a unit job's time limit, minutes or "[D-]H:MM[:SS]"
    extra: dict[str, Any] = field(default_factory=dict)  # slurm: more sbatch options
    cluster: str = "slurm"  # slurm: submitit's "slurm", or "local" (subprocesses, no SLURM)

    def __post_init__(self):
        require(
            self.name in LAUNCHERS,
            "name",
            f"must be one of {', '.join(LAUNCHERS)} (got {self.name!r})",
        )
        require(
            self.cpus_per_unit is None or self.cpus_per_unit >= 1,
            "cpus_per_unit",
            "must be >= 1 (or unset: torch's default here, 1 on ray and slurm)",
        )
        require(self.gpus_per_unit >= 0, "gpus_per_unit", "must be >= 0")
        require(self.max_retries >= 0, "max_retries", "must be >= 0")
        try:
            minutes = slurm_minutes(self.time)
        except ValueError:
            minutes = -1
        require(minutes >= 1, "time", "must be minutes >= 1 or '[D-]H:MM[:SS]'")
        require(
            self.cluster in SUBMITIT_CLUSTERS,
            "cluster",
            f"must be one of {', '.join(SUBMITIT_CLUSTERS)} (got {self.cluster!r})",
        )


@dataclass
class Recipe:
    """One experiment: data, teacher, student, methods, seeds and protocol."""

    name: str = "custom"
    methods: list[str] = field(default_factory=lambda: list(DEFAULT_METHODS))
    seeds: list[int] = field(default_factory=lambda: [1])
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    method_args: dict[str, dict[str, Any]] = field(default_factory=dict)
    # The published setting this recipe replicates, "<baselines file>/<setting>" (e.g.
    # "dpkd-2024/gpt2-1.5b-to-120m"): the report shows those numbers beside the measured ones.
    replicates: str | None = None
    # A smoke test (seconds, tiny models): its report says at the top that the numbers carry
    # no meaning.
    smoke: bool = False
    # Methods from outside the package: .py files (relative to the recipe's folder or the
    # working directory) or module names, loaded before the methods are checked.
    plugins: list[str] = field(default_factory=list)
    launcher: LauncherConfig = field(default_factory=LauncherConfig)
    # How the leaderboard tests: correction (holm | bh | none), alpha, bootstrap resamples.
    stats: StatsSettings = field(default_factory=StatsSettings)
    # `dpkd-bench tune`: trials per method, the learning-rate grid, the trials' seed.
    tune: TuneConfig = field(default_factory=TuneConfig)
    # How this recipe's per-method settings were tuned (written by `dpkd-bench tune`); None:
    # untuned, every method trains with the settings written here by hand.
    tuned: TunedRecord | None = None
    # A tuning run (set by `dpkd-bench tune`): its units are trials, scored on the dev split
    # only; no eval set is decoded.
    tuning_run: bool = False

    def __post_init__(self):
        require(
            self.replicates is None
            or re.fullmatch(r"[A-Za-z0-9._-]+/[A-Za-z0-9._-]+", self.replicates) is not None,
            "replicates",
            f"must look like 'dpkd-2024/gpt2-1.5b-to-120m' (got {self.replicates!r})",
        )
        require(len(self.methods) >= 1, "methods", "must name at least one method")
        require(len(self.seeds) >= 1, "seeds", "must list at least one seed")
        for section, cfg in (("teacher", self.teacher.train), ("student", self.student.init_train)):
            require(
                cfg.eval_every == 0 and cfg.select == "last" and cfg.init_from is None,
                section,
                "trains without validation: eval_every, select and init_from belong to the "
                "units' train section and methods' train blocks",
            )
        require(len(set(self.seeds)) == len(self.seeds), "seeds", f"has repeats: {self.seeds}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def unit_train(self, spec: str) -> TrainConfig:
        """The training settings of method ``spec``'s units (a name or a variant).

        Precedence, highest first: the variant's ``train.<key>`` values (sweeps), the method's
        ``train`` block (``method_args.<method>.train``; ``<method>.train.<key>=v`` on the
        command line), the recipe's ``train`` section (``train.<key>=v`` on the command line),
        the defaults.
        """
        base, variant = parse_variant(spec)
        own = split_train({**self.method_args.get(base, {}), **variant})[1]
        if not own:
            return self.train
        where = f"method_args.{base}.train"
        return build(TrainConfig, {**dataclasses.asdict(self.train), **own}, where=where)

    def method_train_keys(self, spec: str) -> set[str]:
        """The training keys method ``spec`` sets for itself (block or variant)."""
        base, variant = parse_variant(spec)
        return set(split_train({**self.method_args.get(base, {}), **variant})[1])


# --------------------------------------------------------------------------- loading
def _unshare(value: Any) -> Any:
    """A copy with no shared sub-mappings: a YAML alias (``*m``) becomes its own copy, so an
    override of one section never changes another that reused it."""
    if isinstance(value, dict):
        return {k: _unshare(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unshare(v) for v in value]
    return value


def _read_yaml(text: str, origin: str) -> dict:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise RecipeError(
            f"recipe {origin} is not valid YAML{where}: "
            f"{getattr(err, 'problem', None) or err}; fix the syntax and retry"
        ) from None
    if data is None:
        raise RecipeError(
            f"recipe {origin} is empty (no keys, only comments or whitespace): running it "
            "would silently use every default, so it is refused as a likely mistake (a wrong "
            "or unsaved file); write the keys to change, e.g. `base: synthetic` and then "
            "`train: {steps: 100}`, or run the default benchmark with no --recipe"
        )
    if not isinstance(data, dict):
        raise RecipeError(
            f"recipe {origin} must be a YAML mapping of keys (e.g. `methods: [sft]`), got a "
            f"{type(data).__name__}; is it a recipe? see `dpkd-bench validate synthetic`"
        )
    return _unshare(data)


def recipe_text(recipe: str) -> tuple[str, str]:
    """Return (YAML text, origin) for a built-in recipe name or a path."""
    if recipe in BUILTIN_RECIPES:
        path = resources.files("dpkd_bench") / "recipes" / f"{recipe}.yaml"
        return path.read_text(encoding="utf-8"), f"'{recipe}' (built-in)"
    path = Path(recipe)
    if not path.is_file():
        raise RecipeError(
            f"recipe '{recipe}' is neither a file nor a built-in recipe"
            f"{did_you_mean(recipe, BUILTIN_RECIPES)}; built-ins: {', '.join(BUILTIN_RECIPES)}"
        )
    try:
        return path.read_text(encoding="utf-8"), f"file {path}"
    except UnicodeDecodeError:
        raise RecipeError(
            f"recipe file {path} is not UTF-8 text, so it is not a recipe; give a YAML recipe "
            "file or a built-in name"
        ) from None
    except OSError as err:
        raise RecipeError(f"cannot read recipe file {path} ({err.strerror or err})") from None


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse ``section.key=value`` (value read as YAML) into (key path, value)."""
    key, sep, raw = text.partition("=")
    parts = key.strip().split(".")
    if not sep or not key.strip() or any(not p for p in parts):
        raise RecipeError(
            f"bad override '{text}': expected section.key=value, e.g. train.steps=200"
        )
    bad = [p for p in parts if not KEY_PART.match(p)]
    if bad:
        raise RecipeError(
            f"bad override '{text}': key part '{bad[0]}' is not a name (letters, digits, '_' "
            "and '-' only); write section.key=value, e.g. train.steps=200"
        )
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return parts, value


def apply_override(data: dict, text: str, method_names: typing.Iterable[str] = ()) -> None:
    """Apply one override to the raw recipe mapping. ``<method>.key=v`` goes to method_args."""
    parts, value = parse_override(text)
    if parts[0] in set(method_names) and parts[0] not in {
        f.name for f in dataclasses.fields(Recipe)
    }:
        parts = ["method_args", *parts]
    node = data
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise RecipeError(f"bad override '{text}': '{part}' is a value, not a section")
        node = child
    node[parts[-1]] = value


def _deep_merge(base: dict, top: dict) -> dict:
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def raw_recipe(recipe: str, base_override: str | None = None, depth: int = 0) -> dict:
    """A recipe's mapping with its ``base:`` recipe (built-in name or path) merged under it."""
    text, origin = recipe_text(recipe)
    data = _read_yaml(text, origin)
    base = base_override or data.pop("base", None)
    data.pop("base", None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise RecipeError(f"recipe key 'base' in {origin} must be a recipe name or path")
    if depth >= 3:
        raise RecipeError(f"recipe {origin}: 'base' chains deeper than 3 recipes; flatten them")
    if base not in BUILTIN_RECIPES and not Path(base).is_absolute():
        sibling = Path(recipe).parent / base
        base = str(sibling) if sibling.is_file() else base
    return _deep_merge(raw_recipe(base, None, depth + 1), data)


def load_recipe(
    recipe: str | None = None,
    overrides: typing.Sequence[str] = (),
    plugins: typing.Sequence[str] = (),
) -> Recipe:
    """Load a built-in recipe or a YAML file, apply overrides and validate everything.

    A recipe may name a ``base:`` recipe whose values it overrides; ``base=NAME`` on the
    command line swaps that base (e.g. run an ablation at the scale of ``synthetic-quick``).
    ``plugins`` (``--plugin``) are added to the recipe's own ``plugins:`` list; every plugin and
    installed method is registered before the methods are checked.
    """
    bases = [parse_override(o)[1] for o in overrides if o.strip().startswith("base=")]
    data = raw_recipe(recipe or DEFAULT_RECIPE, str(bases[-1]) if bases else None)
    folder = Path(recipe).parent if recipe and recipe not in BUILTIN_RECIPES else None
    return resolve_recipe(data, overrides, plugins, folder)


def resolve_recipe(
    data: dict,
    overrides: typing.Sequence[str] = (),
    plugins: typing.Sequence[str] = (),
    folder: Path | None = None,
) -> Recipe:
    """A recipe's mapping (a file's, or a run's from its manifest) as a checked Recipe: its
    plugins (and ``plugins``, relative to ``folder``) loaded, ``overrides`` applied."""
    from dpkd_bench.methods import METHODS, load_plugins, validate_methods

    listed = data.get("plugins") or []
    if not isinstance(listed, list) or not all(isinstance(p, str) for p in listed):
        raise RecipeError(
            f"recipe key 'plugins' must be a list of .py paths or module names, got {listed!r}"
        )
    data["plugins"] = [*listed, *(p for p in plugins if p not in listed)]
    load_plugins(data["plugins"], folder)
    for item in overrides:
        if not item.strip().startswith("base="):
            apply_override(data, item, METHODS)
    resolved = build(Recipe, data)
    for spec in [*resolved.methods, *resolved.method_args]:
        resolved.unit_train(spec)  # an unknown or bad training key fails here, by its path
    check_recipe(resolved)  # names, eval sets, data paths, sequence lengths
    warn_shadowed(resolved, overrides)
    try:
        validate_methods(
            resolved.methods, resolved.method_args, resolved.data.pretrain_source is not None
        )
    except yaml.YAMLError as err:
        raise RecipeError(
            f"a method variant's value is not valid YAML ({getattr(err, 'problem', None) or err}"
            "); write variants as name[key=value,...], e.g. dpkd[beta=0.05]"
        ) from None
    return resolved


def warn_shadowed(recipe: Recipe, overrides: typing.Sequence[str]) -> None:
    """One warning per command-line ``train.<key>`` that a listed method's own training
    settings override, so that nobody reads a leaderboard as trained with it."""
    from dpkd_bench.console import warn

    for item in overrides:
        parts, value = parse_override(item)
        if len(parts) != 2 or parts[0] != "train":
            continue
        shadowed = [m for m in recipe.methods if parts[1] in recipe.method_train_keys(m)]
        if shadowed:
            warn(
                f"train.{parts[1]}={value} does not reach {', '.join(shadowed)}: their own "
                f"training settings set {parts[1]}; change it with "
                f"{parse_variant(shadowed[0])[0]}.train.{parts[1]}=VALUE"
            )


def dump_yaml(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
