"""Recipe -> tokenizer, training examples and eval sets (one place for every data source)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from dpkd_bench.cache_check import discard, intact, seal
from dpkd_bench.data import synthetic
from dpkd_bench.data.collate import encode_pair, encode_prompt
from dpkd_bench.data.example import Example
from dpkd_bench.data.loaders import load_eval_set, load_instruction_data
from dpkd_bench.data.template import build_prompt
from dpkd_bench.data.tokenizer import train_bpe_tokenizer
from dpkd_bench.errors import DataError
from dpkd_bench.recipe import Recipe


@dataclass
class EvalSet:
    """An eval set after the prompt-length filter: examples and their prompt ids."""

    name: str
    examples: list[Example]
    prompt_ids: list[tuple[int, ...]]
    dropped: int = 0  # prompts longer than data.max_prompt_len


@dataclass
class PreparedData:
    tokenizer: object
    train: list[Example]
    train_items: list[dict]  # {"prompts": ids, "responses": ids}
    eval_sets: dict[str, EvalSet]
    hashes: dict[str, str] = field(default_factory=dict)
    dropped_train: int = 0
    dev_items: list[dict] = field(default_factory=list)  # validation split, same shape as train
    dev: EvalSet | None = None  # the validation split as scored during training (train.eval_every)


def text_hash(texts: Iterable[str]) -> str:
    digest = hashlib.sha256()
    for text in texts:
        digest.update(text.encode("utf-8"))
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def tokenizer_hash(tokenizer) -> str:
    return text_hash([tokenizer.backend_tokenizer.to_str()])


def synthetic_examples(records: list[dict]) -> list[Example]:
    return [
        Example(
            r["id"],
            build_prompt(r["instruction"], r["input"]),
            r.get("response", r["output"][0]),
            tuple(r["output"]),
            r["family"],
        )
        for r in records
    ]


def load_sources(
    recipe: Recipe,
) -> tuple[list[Example], list[Example], dict[str, list[Example]]]:
    """Training examples, validation examples and the raw eval sets named by the recipe."""
    data = recipe.data
    suite = None
    if data.source == "synthetic" or any(
        n in synthetic.EVAL_SETS and n not in data.eval_paths for n in data.eval_sets
    ):
        suite = synthetic.generate_suite(data.seed, data.n_train, data.n_eval)
    if data.source == "synthetic":
        train = synthetic_examples(suite["train"])
        dev = synthetic_examples(suite[synthetic.DEV_SPLIT])
    else:
        train, dev = load_instruction_data(data.source, data.dev_num)
    evals = {}
    for name in data.eval_sets:
        if name in synthetic.EVAL_SETS and name not in data.eval_paths:
            examples = synthetic_examples(suite[name])
        else:
            examples = load_eval_set(name, data.eval_paths.get(name))
        if data.max_eval_examples:
            examples = examples[: data.max_eval_examples]
        evals[name] = examples
    return train, dev, evals


def get_tokenizer(recipe: Recipe, train: Sequence[Example], cache_dir: Path):
    """A pretrained tokenizer, or a BPE trained on the training texts (cached by content)."""
    from dpkd_bench.checkpoint import publish_dir
    from dpkd_bench.models import load_tokenizer

    name = recipe.tokenizer.name_or_path or recipe.teacher.model.name_or_path
    if name:
        return load_tokenizer(name, recipe.teacher.model.trust_remote_code)
    texts = [e.prompt + e.response for e in train]
    key = text_hash([*texts, str(recipe.tokenizer.vocab_size)])
    path = cache_dir / f"tokenizer-{key}"
    if intact(path, "the tokenizer"):
        try:
            return load_tokenizer(str(path))
        except Exception as err:  # an unsealed entry from an older version, damaged
            discard(path, "the tokenizer", f"{type(err).__name__}: {str(err)[:120]}")
    tokenizer = train_bpe_tokenizer(texts, recipe.tokenizer.vocab_size)
    publish_dir(path, tokenizer.save_pretrained)  # whole or not at all
    seal(path)
    return tokenizer


def encode_eval_set(name: str, examples: list[Example], tokenizer, max_prompt_len: int) -> EvalSet:
    kept, ids = [], []
    for example in examples:
        prompt = encode_prompt(tokenizer, example.prompt)
        if len(prompt) <= max_prompt_len:
            kept.append(example)
            ids.append(prompt)
    if not kept:
        raise DataError(
            f"eval set '{name}' is empty after dropping prompts over {max_prompt_len} tokens "
            f"({len(examples)} dropped); raise data.max_prompt_len or check the data"
        )
    return EvalSet(name, kept, ids, len(examples) - len(kept))


def encode_train(
    examples: list[Example], tokenizer, recipe: Recipe
) -> tuple[list[Example], list[dict]]:
    kept, items = [], []
    for example in examples:
        pair = encode_pair(tokenizer, example.prompt, example.response, recipe.data.max_length)
        if len(pair.prompt_ids) <= recipe.data.max_prompt_len:
            kept.append(example)
            items.append({"prompts": pair.prompt_ids, "responses": pair.response_ids})
    if not items:
        raise DataError(
            f"no training example has a prompt within {recipe.data.max_prompt_len} tokens; "
            "raise data.max_prompt_len or check the data"
        )
    return kept, items


def prepare_data(recipe: Recipe, cache_dir: Path) -> PreparedData:
    train, dev, raw_evals = load_sources(recipe)
    tokenizer = get_tokenizer(recipe, train, cache_dir)
    kept, items = encode_train(train, tokenizer, recipe)
    dev_kept, dev_items = encode_train(dev, tokenizer, recipe) if dev else ([], [])
    dev_set = (
        encode_eval_set("dev", dev_kept, tokenizer, recipe.data.max_prompt_len) if dev else None
    )
    eval_sets = {
        name: encode_eval_set(name, examples, tokenizer, recipe.data.max_prompt_len)
        for name, examples in raw_evals.items()
    }
    hashes = {
        "train": text_hash(e.prompt + "\x1f" + e.response for e in kept),
        "tokenizer": tokenizer_hash(tokenizer),
        **{
            f"eval:{n}": text_hash(
                e.prompt + "\x1f" + "\x1e".join(e.references) for e in s.examples
            )
            for n, s in eval_sets.items()
        },
    }
    return PreparedData(
        tokenizer, kept, items, eval_sets, hashes, len(train) - len(kept), dev_items, dev_set
    )
