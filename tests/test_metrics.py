"""Metrics pinned to the reference protocol, checked against rouge_score directly."""

from __future__ import annotations

import pytest
from rouge_score import rouge_scorer

from dpkd_bench.metrics import (
    METRICS,
    compute_metrics,
    exact_match,
    mean_over_generations,
    rouge_l,
    score_examples,
)

SCORER = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)

TRICKY = [
    ("The cat sat on the mat.", "the cat sat on a mat"),
    ("Running runs ran", "run running"),
    ("", "something"),
    ("something", ""),
    ("12 + 7 = 19", "19"),
    ("Hello,\n\nworld!!  ", "hello world"),
    ("café naïve", "cafe naive"),
    ("a b c d e f", "f e d c b a"),
]


@pytest.mark.parametrize("prediction, reference", TRICKY)
def test_rouge_l_equals_rouge_score(prediction, reference):
    assert (
        rouge_l(prediction, [reference]) == SCORER.score(reference, prediction)["rougeL"].fmeasure
    )


def test_rouge_l_max_over_references():
    refs = ["totally different words", "the cat sat"]
    assert rouge_l("the cat sat", refs) == 1.0
    assert rouge_l("the cat sat", "the cat sat") == 1.0


@pytest.mark.parametrize(
    "prediction, references, expected",
    [
        ("The Cat.", ["the cat"], 1.0),
        ("  the   cat ", ["the cat"], 1.0),
        ("the cat", ["cat"], 0.0),  # articles are kept
        ("it is y.", ["y is the capital", "it is y"], 1.0),
        ("19", "19", 1.0),
        ("19", ["1 9"], 0.0),
        ("", [""], 1.0),
    ],
)
def test_exact_match(prediction, references, expected):
    assert exact_match(prediction, references) == expected


def test_compute_metrics_scales_and_averages():
    out = compute_metrics(["the cat", "a dog"], [["the cat"], ["a bird"]])
    assert out["exact_match"] == 50.0
    expected_rouge = 100 * (1.0 + SCORER.score("a bird", "a dog")["rougeL"].fmeasure) / 2
    assert out["rougeL"] == pytest.approx(expected_rouge)
    assert set(out) == set(METRICS)


def test_length_mismatch_raises_and_never_truncates():
    with pytest.raises(ValueError, match="3 predictions but 2 reference lists"):
        compute_metrics(["a", "b", "c"], [["a"], ["b"]])
    with pytest.raises(ValueError):
        compute_metrics([], [])


def test_score_examples_and_mean_over_generations():
    refs = [["x y"], ["z"]]
    first = score_examples(["x y", "q"], refs)
    second = score_examples(["x", "z"], refs)
    assert first[0] == {"exact_match": 100.0, "rougeL": 100.0}
    mean = mean_over_generations([first, second])
    assert mean[1]["exact_match"] == 50.0
    assert mean[0]["rougeL"] == pytest.approx((100.0 + second[0]["rougeL"]) / 2)
    with pytest.raises(ValueError):
        mean_over_generations([first, second[:1]])


def test_metric_metadata():
    assert all(meta["higher_is_better"] for meta in METRICS.values())
