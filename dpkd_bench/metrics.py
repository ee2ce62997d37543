"""Evaluation metrics, pinned to the reference ``rouge_metric.py`` of MiniLLM, DistiLLM and DPKD.

The reference is ``minillm/rouge_metric.py`` in microsoft/LMOps (``dpkd/rouge_metric.py`` there
is the same file). What it does, and what this module therefore does:

* **Exact match** compares strings normalised as in SQuAD v1.1 *without* removing articles:
  lowercase, drop every character of ``string.punctuation`` (ASCII only; e.g. ``’`` or ``—``
  stay), collapse whitespace with ``str.split``. "the cat" and "cat" therefore differ. Nothing
  special is done for empty strings: an empty prediction (or one of punctuation only) matches
  a reference that also normalises to the empty string.
* **ROUGE-L** is the F-measure of ``rouge_score``'s ``RougeScorer(['rougeL'], use_stemmer=True)``
  on the *raw* strings (not the exact-match normalisation); the scorer's own tokeniser
  lowercases, keeps only ``[a-z0-9]`` runs and Porter-stems tokens longer than three
  characters. An empty prediction or reference scores 0. Non-ASCII letters are dropped by that
  tokeniser (``café`` -> ``caf``; CJK text has no tokens at all and scores 0). The reference
  takes an ``xlingual`` flag and imports ``AutoTokenizer`` but ignores both: there is no
  tokenizer special-casing for non-English text, so none here either.
* Both are the maximum over an example's references; corpus figures are means over examples
  x 100, rounded to 4 decimals as the reference does.

Deliberate departures: the reference silently cuts predictions and references to the shorter
list (and its script keeps only the first 1,000 predictions); here different lengths raise
``ValueError`` and nothing is truncated. The reference asserts each reference entry is a list;
here a plain ``str`` is accepted as a single reference.
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from typing import Any

METRICS: dict[str, dict[str, Any]] = {
    "exact_match": {
        "higher_is_better": True,
        "normalisation": "lowercase, strip string.punctuation, collapse whitespace; articles kept",
        "aggregation": "max over references, mean over examples",
        "scale": "percent",
    },
    "rougeL": {
        "higher_is_better": True,
        "normalisation": "rouge_score tokeniser (lowercase, [a-z0-9] tokens), Porter stemming",
        "aggregation": "F-measure, max over references, mean over examples",
        "scale": "percent",
    },
}

_PUNCTUATION = str.maketrans("", "", string.punctuation)
_SCORER = None  # built on first use: importing rouge_score is not free


def normalize_answer(text: str) -> str:
    """Lowercase, remove ``string.punctuation``, collapse whitespace (articles are kept)."""
    return " ".join(text.lower().translate(_PUNCTUATION).split())


def _rouge_scorer():
    global _SCORER
    if _SCORER is None:
        from rouge_score import rouge_scorer

        _SCORER = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    return _SCORER


def _check_text(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, got {type(value).__name__}: {value!r:.80}")
    return value


def _as_references(references: Sequence[str] | str) -> list[str]:
    refs = [references] if isinstance(references, str) else list(references)
    if not refs:
        raise ValueError(
            "an example has an empty reference list; every prediction needs at least one "
            "reference string (use [''] if the expected answer really is empty)"
        )
    return [_check_text(ref, "each reference") for ref in refs]


def exact_match(prediction: str, references: Sequence[str] | str) -> float:
    """1.0 when the normalised prediction equals any normalised reference, else 0.0."""
    pred = normalize_answer(_check_text(prediction, "the prediction"))
    return float(any(pred == normalize_answer(ref) for ref in _as_references(references)))


def rouge_l(prediction: str, references: Sequence[str] | str) -> float:
    """ROUGE-L F-measure in [0, 1] (stemmed, raw strings), max over references."""
    _check_text(prediction, "the prediction")
    scorer = _rouge_scorer()
    return float(
        max(
            scorer.score(target=ref, prediction=prediction)["rougeL"].fmeasure
            for ref in _as_references(references)
        )
    )


def score_examples(
    predictions: Sequence[str], references: Sequence[Sequence[str] | str]
) -> list[dict[str, float]]:
    """Per-example scores in percent: ``[{"exact_match": 0|100, "rougeL": 0..100}, ...]``.

    ``references[i]`` holds the references of ``predictions[i]``: a list of strings, or one str.
    """
    if isinstance(predictions, str) or isinstance(references, str):
        raise TypeError("predictions and references must be lists (one entry per example)")
    if len(predictions) != len(references):
        raise ValueError(
            f"{len(predictions)} predictions but {len(references)} reference lists; they must "
            "pair one to one (nothing is truncated): pass one reference list per prediction"
        )
    return [
        {"exact_match": 100.0 * exact_match(pred, refs), "rougeL": 100.0 * rouge_l(pred, refs)}
        for pred, refs in zip(predictions, references, strict=True)
    ]


def _mean(rows: Sequence[dict[str, float]], key: str) -> float:
    return sum(row[key] for row in rows) / len(rows)


def mean_metrics(scores: Sequence[dict[str, float]]) -> dict[str, float]:
    """``{"exact_match": %, "rougeL": %}``: the means over examples of per-example scores (as
    returned by :func:`score_examples` or :func:`mean_over_generations`), unrounded."""
    if not scores:
        raise ValueError("no predictions to score: the prediction and reference lists are empty")
    return {key: _mean(scores, key) for key in METRICS}


def compute_metrics(
    predictions: Sequence[str], references: Sequence[Sequence[str] | str]
) -> dict[str, float]:
    """``{"exact_match": %, "rougeL": %}``: means over examples x 100, rounded to 4 decimals.

    A run's evaluation scores several generations per example; it averages each example over
    them (:func:`mean_over_generations`) and takes :func:`mean_metrics` of that, unrounded.
    """
    means = mean_metrics(score_examples(predictions, references))
    return {key: round(value, 4) for key, value in means.items()}


def mean_over_generations(
    per_seed_scores: Sequence[Sequence[dict[str, float]]],
) -> list[dict[str, float]]:
    """Average per-example scores over generation seeds.

    ``per_seed_scores[s][i]`` is the score dict of example ``i`` under seed ``s`` (as returned by
    :func:`score_examples`); every seed must score the same examples in the same order.
    """
    if not per_seed_scores:
        raise ValueError("no generation seeds to average: pass one score list per seed")
    lengths = [len(scores) for scores in per_seed_scores]
    if len(set(lengths)) != 1:
        raise ValueError(
            f"generation seeds scored different numbers of examples ({lengths}); every seed "
            "must score the same examples in the same order"
        )
    averaged = []
    for i, rows in enumerate(zip(*per_seed_scores, strict=True)):
        keys = [sorted(row) for row in rows]
        if any(k != keys[0] for k in keys):
            raise ValueError(
                f"example {i} has different metric names across seeds ({keys}); score every "
                "seed with the same metrics"
            )
        averaged.append({key: _mean(rows, key) for key in rows[0]})
    return averaged
