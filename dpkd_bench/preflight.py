"""Preflight: every check that can fail a run, made before anything trains.

Three tiers, cheapest first:

* :func:`check_recipe` (no I/O beyond ``stat``; run by ``load_recipe``, so ``validate`` runs
  it too): names that become paths, eval sets known, data paths present, and the longest
  sequence a run builds within the positions of models built here;
* :func:`check_output_dir`: ``--out`` can be created and written;
* :func:`check_eval_backend`: ``eval.backend: vllm`` has vllm importable and one process;
* :func:`check_launcher`: ``--launcher ray|slurm`` has its package, one driver process, and
  (SLURM) ``sbatch`` and run and cache directories off node-local storage;
* :func:`~dpkd_bench.trackers.check_trackers`: every tracker in ``train.report_to`` installed;
* :func:`check_pretrained` (reads configs and tokenizers, never weights): for pretrained models,
  the weight format, the configs' vocabulary sizes and positions, and that teacher, student and
  tokenizer share one vocabulary, the same special tokens and chat template, and a pad token.

The data stage then checks every eval set is non-empty after the prompt-length filter
(:func:`dpkd_bench.data.prepare.encode_eval_set`), and the loaded models are checked again by
:func:`dpkd_bench.models.preflight_models`, all before the first unit trains.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from dpkd_bench.data import synthetic
from dpkd_bench.data.loaders import (
    EVAL_SOURCES,
    check_source,
    unknown_eval_set,
)
from dpkd_bench.errors import RecipeError, UserError, hub_offline, load_error
from dpkd_bench.results import cache_root, check_method_name, is_safe_name
from dpkd_bench.trackers import check_trackers

if TYPE_CHECKING:
    from dpkd_bench.recipe import LauncherConfig, LmEvalConfig, ModelConfig, Recipe

PICKLE_PATTERNS = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")
ROLES = ("teacher", "student")
LAUNCHER_PACKAGES = {"ray": "ray", "slurm": "submitit"}  # launcher -> the package (and extra)
NODE_LOCAL = (Path("/tmp"), Path("/var/tmp"), Path("/dev/shm"))  # each node has its own


# ---- recipe: names, eval sets, data paths, lengths -----------------------------------------
def check_name(kind: str, name: str, key: str) -> None:
    """``name`` will name a file or directory: it must stay one level down."""
    if not is_safe_name(name):
        raise RecipeError(
            f"{kind} {name!r} cannot name a file or directory: it must be non-empty, not start "
            f"with '.', and contain no '/', '\\' or '..'; rename it in {key}"
        )


def check_names(recipe: Recipe) -> None:
    check_name("recipe name", recipe.name, "name")
    for method in recipe.methods:
        check_method_name(method)
    for name in [*recipe.data.eval_sets, *recipe.data.eval_paths]:
        check_name("eval set name", name, "data.eval_sets / data.eval_paths")


def known_eval_sets(recipe: Recipe) -> list[str]:
    """Synthetic sets, registered Hub sets, and the recipe's own named locations."""
    extra = [n for n in recipe.data.eval_paths if n not in (*synthetic.EVAL_SETS, *EVAL_SOURCES)]
    return [*synthetic.EVAL_SETS, *EVAL_SOURCES, *extra]


def check_eval_sets(recipe: Recipe) -> None:
    data = recipe.data
    known = known_eval_sets(recipe)
    for name in data.eval_sets:
        if name not in known:
            raise unknown_eval_set(name, known)
    repeats = sorted({n for n in data.eval_sets if data.eval_sets.count(n) > 1})
    if repeats:
        raise RecipeError(f"data.eval_sets lists {repeats} more than once; list each set once")
    for name, location in data.eval_paths.items():
        if name not in data.eval_sets:
            raise RecipeError(
                f"data.eval_paths.{name} is set but data.eval_sets does not list '{name}'; add "
                "it to data.eval_sets or remove that entry"
            )
        check_source(location, f"data.eval_paths.{name}")


def longest_sequence(recipe: Recipe) -> tuple[int, str]:
    """The longest sequence a run builds (tokens) and the recipe keys it comes from."""
    prompt, eval_new, sample_new = (
        recipe.data.max_prompt_len,
        recipe.eval.max_new_tokens,
        recipe.sampling.max_new_tokens,
    )
    new, new_key = (eval_new, "eval") if eval_new >= sample_new else (sample_new, "sampling")
    if recipe.data.max_length >= prompt + new:
        return recipe.data.max_length, f"data.max_length={recipe.data.max_length}"
    return prompt + new, f"data.max_prompt_len={prompt} + {new_key}.max_new_tokens={new}"


def check_positions(role: str, limit: int, recipe: Recipe, key: str) -> None:
    need, why = longest_sequence(recipe)
    if need > limit:
        raise RecipeError(
            f"the {role} has {limit} positions ({key}) but this recipe builds sequences of up "
            f"to {need} tokens ({why}); lower those values to fit {limit} or raise {key}"
        )


def check_recipe(recipe: Recipe) -> None:
    """Recipe-level preflight: cheap, offline, the same for ``validate`` and ``run``."""
    check_names(recipe)
    check_eval_sets(recipe)
    if recipe.data.source != "synthetic":
        check_source(recipe.data.source, "data.source")
    for role in ROLES:
        cfg: ModelConfig = getattr(recipe, role).model
        if not cfg.name_or_path:
            check_positions(role, cfg.n_positions, recipe, f"{role}.model.n_positions")


# ---- output directory ---------------------------------------------------------------------
def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_output_dir(out: str | Path) -> None:
    """``--out`` must be a directory, or a path whose nearest existing parent is writable."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, not a directory; choose a directory path")
    anchor = _nearest_existing(out.absolute())
    if not anchor.is_dir():
        raise UserError(
            f"--out {out} cannot be created: {anchor} is a file; choose a path under a directory"
        )
    if not os.access(anchor, os.W_OK | os.X_OK):
        raise UserError(
            f"--out {out} is not writable (no write permission on {anchor}); choose a directory "
            "you can write to"
        )


# ---- pretrained models and tokenizers -----------------------------------------------------
def local_dir(name: str) -> Path | None:
    path = Path(name).expanduser()
    return path if path.is_dir() else None


def check_weights_format(role: str, cfg: ModelConfig) -> None:
    """A local model directory must hold safetensors weights unless ``allow_pickle`` is set."""
    path = local_dir(cfg.name_or_path or "")
    if path is None or cfg.allow_pickle or any(path.glob("*.safetensors")):
        return
    pickles = sorted(p.name for pattern in PICKLE_PATTERNS for p in path.glob(pattern))
    if pickles:
        raise UserError(
            f"{role} model {path} has only pickle weights ({', '.join(pickles[:3])}), which can "
            "run arbitrary code when loaded; convert them to safetensors "
            "(model.save_pretrained(dir, safe_serialization=True)) or, if you trust the file, "
            f"set {role}.model.allow_pickle: true"
        )


def load_model_config(role: str, cfg: ModelConfig):
    """The model's ``config.json`` (no weights), from a local directory or the Hub."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(
            cfg.name_or_path,
            trust_remote_code=cfg.trust_remote_code,
            local_files_only=hub_offline(),
        )
    except (OSError, ValueError, KeyError) as err:
        raise load_error(
            f"the {role} model's config", cfg.name_or_path, err, f"{role}.model.name_or_path"
        ) from None


def config_positions(config) -> int | None:
    for key in ("n_positions", "max_position_embeddings"):
        value = getattr(config, key, None)
        if isinstance(value, int):
            return value
    return None


def check_configs(recipe: Recipe, configs: dict) -> None:
    """Pretrained teacher and student: one vocabulary size; positions for the longest sequence."""
    sizes = {role: getattr(c, "vocab_size", None) for role, c in configs.items()}
    if len(configs) == 2 and sizes["teacher"] != sizes["student"]:
        raise UserError(
            f"teacher vocabulary size {sizes['teacher']} != student vocabulary size "
            f"{sizes['student']}: token-level distillation compares distributions over the same "
            "tokens; use a teacher and student that share one tokenizer and embedding size"
        )
    for role, config in configs.items():
        limit = config_positions(config)
        if limit is not None:
            check_positions(role, limit, recipe, f"the {role} model's config")


def has_tokenizer(name: str) -> bool:
    """False for a local model directory without tokenizer files (it uses the recipe's)."""
    path = local_dir(name)
    return path is None or any((path / f).is_file() for f in TOKENIZER_FILES)


def pretrained_tokenizers(recipe: Recipe) -> dict[str, object]:
    """Tokenizers named by the recipe: tokenizer.name_or_path and each pretrained model's."""
    from dpkd_bench.models import load_tokenizer

    names = {"tokenizer": recipe.tokenizer.name_or_path}
    names.update({role: getattr(recipe, role).model.name_or_path for role in ROLES})
    trust = recipe.teacher.model.trust_remote_code
    found = {}
    for role, name in names.items():
        if not name or (role != "tokenizer" and not has_tokenizer(name)):
            continue
        try:
            found[role] = load_tokenizer(name, trust)
        except UserError:
            if role == "tokenizer" or local_dir(name) is not None or hub_offline():
                raise
            # a Hub model repository without tokenizer files: the recipe's tokenizer is used
    return found


def _first_difference(a: dict, b: dict) -> str:
    for token, index in sorted(a.items(), key=lambda kv: kv[1]):
        if b.get(token) != index:
            return f"'{token}' is id {index} in one and {b.get(token)} in the other"
    return "the same tokens under different ids"


def tokenizer_difference(a, b) -> str | None:
    """Why two tokenizers cannot share logits (size, tokens, special tokens, template)."""
    if len(a) != len(b):
        return f"{len(a)} tokens vs {len(b)} tokens"
    vocab_a, vocab_b = a.get_vocab(), b.get_vocab()
    if vocab_a != vocab_b:
        return f"same size ({len(a)}), different tokens: {_first_difference(vocab_a, vocab_b)}"
    for attr in ("eos_token", "bos_token", "unk_token"):
        if getattr(a, attr, None) != getattr(b, attr, None):
            return f"{attr} {getattr(a, attr, None)!r} vs {getattr(b, attr, None)!r}"
    if getattr(a, "chat_template", None) != getattr(b, "chat_template", None):
        return "different chat templates"
    return None


def check_tokenizers(tokenizers: dict[str, object]) -> None:
    roles = list(tokenizers)
    for first, second in zip(roles, roles[1:], strict=False):
        why = tokenizer_difference(tokenizers[first], tokenizers[second])
        if why:
            raise UserError(
                f"the {first} and {second} tokenizers differ ({why}): distillation compares "
                "teacher and student distributions token by token, so they must share one "
                "tokenizer; pick models of one family or set tokenizer.name_or_path to theirs"
            )


def check_tokenizer_fits(tokenizer, configs: dict) -> None:
    for role, config in configs.items():
        size = getattr(config, "vocab_size", None)
        if isinstance(size, int) and len(tokenizer) > size:
            raise UserError(
                f"the tokenizer has {len(tokenizer)} tokens but the {role} model's embeddings "
                f"have {size}; use the tokenizer the {role} was trained with "
                "(tokenizer.name_or_path)"
            )


def check_pretrained(recipe: Recipe) -> None:
    """Pretrained teacher / student / tokenizer fit together (configs and tokenizers only)."""
    pretrained = {
        r: getattr(recipe, r).model for r in ROLES if getattr(recipe, r).model.name_or_path
    }
    if "student" in pretrained and not (recipe.tokenizer.name_or_path or "teacher" in pretrained):
        raise UserError(
            "the student is pretrained but the tokenizer would be trained here from the data; "
            "set tokenizer.name_or_path to the student's tokenizer"
        )
    for role, cfg in pretrained.items():
        check_weights_format(role, cfg)
    configs = {role: load_model_config(role, cfg) for role, cfg in pretrained.items()}
    check_configs(recipe, configs)
    tokenizers = pretrained_tokenizers(recipe)
    check_tokenizers(tokenizers)
    if tokenizers:
        check_tokenizer_fits(next(iter(tokenizers.values())), configs)


# ---- evaluation backend -------------------------------------------------------------------
def check_eval_backend(recipe: Recipe, processes: int = 1) -> None:
    """``eval.backend: vllm`` needs vllm importable here and a run of one process."""
    if recipe.eval.backend != "vllm":
        return
    from dpkd_bench.vllm_backend import check_processes, import_vllm

    check_processes(processes)
    import_vllm()


# ---- launcher ----------------------------------------------------------------------------
def check_shared(path: str | Path, what: str) -> None:
    """A UserError when ``path`` lies where every node of a cluster has its own copy."""
    resolved = Path(path).resolve()
    for local in NODE_LOCAL:
        if resolved == local or local in resolved.parents:
            raise UserError(
                f"{what} {resolved} is under {local}, which each cluster node has its own copy "
                "of; put it on storage every node sees (a shared home or scratch file system)"
            )


def check_launcher(
    cfg: LauncherConfig, out: str | Path, cache: str | Path | None = None, processes: int = 1
) -> None:
    """``launcher.name`` ray or slurm: its package importable, a driver of one process, and,
    for SLURM, ``sbatch`` on this machine and run and cache directories that are not
    node-local. (Ray checks the storage from every node once connected.)"""
    if cfg.name == "local":
        return
    if processes > 1:
        raise UserError(
            f"--launcher {cfg.name} sends each unit to a job of its own; start the driver as one "
            "process (`dpkd-bench run`, not accelerate launch or torchrun) and set "
            "launcher.gpus_per_unit for units of several GPUs"
        )
    package = LAUNCHER_PACKAGES[cfg.name]
    if importlib.util.find_spec(package) is None:
        raise UserError(
            f"--launcher {cfg.name} needs {package}, which is not installed; install it with "
            f'`pip install -e ".[{cfg.name}]"` (or `pip install {package}`), or use '
            "--launcher local"
        )
    if cfg.name == "slurm" and cfg.cluster == "slurm":
        if shutil.which("sbatch") is None:
            raise UserError(
                "--launcher slurm found no `sbatch` on this machine; start the run on a SLURM "
                "login node, or set launcher.cluster=local to run the unit jobs as processes "
                "of this machine"
            )
        check_shared(out, "the run directory (--out)")
        check_shared(cache or cache_root(), "the cache directory (DPKD_BENCH_CACHE)")


def check_lm_eval(cfg: LmEvalConfig | None) -> None:
    """A UserError when ``eval.lm_eval`` is set but lm-eval is not installed."""
    if cfg is not None and importlib.util.find_spec("lm_eval") is None:
        raise UserError(
            "eval.lm_eval is set, but lm-eval is not installed; install it with "
            '`pip install -e ".[lm-eval]"` (or `pip install lm-eval`), or unset eval.lm_eval'
        )


def check_run(recipe: Recipe, out: str | Path) -> None:
    """Everything ``run`` checks before the Runner starts (the recipe was checked on load)."""
    check_output_dir(out)
    check_eval_backend(recipe)
    check_launcher(recipe.launcher, out)
    check_trackers(recipe.train.report_to)
    check_lm_eval(recipe.eval.lm_eval)
    check_pretrained(recipe)
