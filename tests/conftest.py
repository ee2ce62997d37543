"""Shared fixtures: a tokenizer trained on the fly and tiny random-weight GPT-2 models."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: no spinning threads

import pytest  # noqa: E402
import torch  # noqa: E402

from dpkd_bench.data.collate import encode_pair  # noqa: E402
from dpkd_bench.data.template import build_prompt  # noqa: E402
from dpkd_bench.data.tokenizer import train_bpe_tokenizer
from dpkd_bench.generate import DecodeSettings  # noqa: E402
from dpkd_bench.methods.base import TrainContext  # noqa: E402
from dpkd_bench.models import build_model
from dpkd_bench.recipe import ModelConfig

torch.set_num_threads(min(2, os.cpu_count() or 1))

WORDS = [
    "red",
    "green",
    "blue",
    "cat",
    "dog",
    "sun",
    "moon",
    "star",
    "tree",
    "river",
    "stone",
    "cloud",
]


def tiny_corpus() -> list[tuple[str, str]]:
    pairs = []
    for i, word in enumerate(WORDS):
        for j in range(10):
            pairs.append(
                (build_prompt(f"repeat the word {word}", str(j)), f"{word} {j} {WORDS[i - 1]}")
            )
    return pairs


@pytest.fixture(scope="session")
def tokenizer():
    texts = [p + r for p, r in tiny_corpus()]
    return train_bpe_tokenizer(texts, vocab_size=320)


@pytest.fixture
def make_model(tokenizer):
    def make(n_layer=1, n_embd=32, n_head=2, seed=0):
        cfg = ModelConfig(n_layer=n_layer, n_embd=n_embd, n_head=n_head, n_positions=256)
        return build_model(cfg, tokenizer, seed=seed)

    return make


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch):
    """Every test session shares one cache directory of its own, never the user's."""
    cache = tmp_path_factory.getbasetemp() / "dpkd-cache"
    monkeypatch.setenv("DPKD_BENCH_CACHE", str(cache))
    return cache


# ---- helpers shared by the method and training tests


def context(tokenizer, student, teacher=None, seed=0):
    return TrainContext(
        student=student,
        teacher=teacher,
        tokenizer=tokenizer,
        sampling=DecodeSettings(max_new_tokens=8),
        generator=torch.Generator().manual_seed(seed),
        device=torch.device("cpu"),
    )


def items(tokenizer, n=8):
    out = []
    for prompt, response in tiny_corpus()[:n]:
        pair = encode_pair(tokenizer, prompt, response * (1 + len(out) % 3), max_length=256)
        out.append({"prompts": pair.prompt_ids, "responses": pair.response_ids})
    return out
