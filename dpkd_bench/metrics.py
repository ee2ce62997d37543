"""Evaluation metrics, pinned to the reference ``rouge_metric.py`` of MiniLLM, DistiLLM and DPKD.

* Exact match compares SQuAD-style normalised strings (lowercase, ``string.punctuation``
  removed, whitespace collapsed) **without** removing articles, max over references.
* ROUGE-L is ``rouge_score``'s ``RougeScorer(['rougeL'], use_stemmer=True)`` F-measure on the raw
  strings (the scorer tokenises and lowercases itself), max over references. The reference
  switches to a GPT-2 tokenizer only for non-English tasks; every set here is English.
* Corpus figures are means over examples x 100. Predictions and references of different
  lengths raise ``ValueError``: nothing is ever truncated.
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from functools import lru_cache

_PUNCTUATION = str.maketrans("", "", string.punctuation)

METRICS = {
    "exact_match": {
        "higher_is_better": True,
        "normalisation": "lowercase, strip string.punctuation, collapse whitespace; articles kept",
        "scale": "percent",
    },
    "rougeL": {
        "higher_is_better": True,
        "normalisation": "rouge_score tokeniser with Porter stemming, F-measure",
        "scale": "percent",
    },
}


def normalize_answer(text: str) -> str:
    """Lowercase, remove punctuation, collapse whitespace (articles are kept)."""
    return " ".join(text.lower().translate(_PUNCTUATION).split())


def _as_list(references: Sequence[str] | str) -> list[str]:
    refs = [references] if isinstance(references, str) else list(references)
    if not refs:
        raise ValueError("an example has no reference; every prediction needs at least one")
    return refs


@lru_cache(maxsize=1)
def _scorer():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def exact_match(prediction: str, references: Sequence[str] | str) -> float:
    """1.0 when the normalised prediction equals a normalised reference, else 0.0."""
    pred = normalize_answer(prediction)
    return float(any(pred == normalize_answer(ref) for ref in _as_list(references)))


def rouge_l(prediction: str, references: Sequence[str] | str) -> float:
    """ROUGE-L F-measure in [0, 1], max over references."""
    return max(_scorer().score(ref, prediction)["rougeL"].fmeasure for ref in _as_list(references))


def score_examples(
    predictions: Sequence[str], references: Sequence[Sequence[str] | str]
) -> list[dict[str, float]]:
    """Per-example scores in percent: [{"exact_match": 0|100, "rougeL": 0..100}, ...]."""
    if len(predictions) != len(references):
        raise ValueError(
            f"{len(predictions)} predictions but {len(references)} reference lists; "
            "they must pair one to one (nothing is truncated)"
        )
    return [
        {"exact_match": 100.0 * exact_match(p, r), "rougeL": 100.0 * rouge_l(p, r)}
        for p, r in zip(predictions, references, strict=True)
    ]


def compute_metrics(
    predictions: Sequence[str], references: Sequence[Sequence[str] | str]
) -> dict[str, float]:
    """{"exact_match": %, "rougeL": %}: means over examples x 100."""
    scores = score_examples(predictions, references)
    if not scores:
        raise ValueError("no predictions to score")
    return {key: sum(s[key] for s in scores) / len(scores) for key in METRICS}


def mean_over_generations(per_seed: Sequence[Sequence[dict[str, float]]]) -> list[dict[str, float]]:
    """Average per-example scores over generation seeds (same examples in the same order)."""
    if not per_seed:
        raise ValueError("no generation seeds to average")
    lengths = {len(scores) for scores in per_seed}
    if len(lengths) != 1:
        raise ValueError(
            f"generation seeds scored different numbers of examples: {sorted(lengths)}"
        )
    return [
        {key: sum(s[i][key] for s in per_seed) / len(per_seed) for key in per_seed[0][i]}
        for i in range(len(per_seed[0]))
    ]
