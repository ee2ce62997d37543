"""Metrics pinned to the reference protocol (LMOps minillm/rouge_metric.py), checked against
rouge_score directly."""

from __future__ import annotations

import pytest
from rouge_score import rouge_scorer

from dpkd_bench import metrics
from dpkd_bench.metrics import (
    METRICS,
    compute_metrics,
    exact_match,
    mean_metrics,
    mean_over_generations,
    normalize_answer,
    rouge_l,
    score_examples,
)

SCORER = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def reference_rouge(prediction: str, references: list[str]) -> float:
    """What the reference file computes: raw strings, max F-measure over references."""
    return max(
        SCORER.score(target=ref, prediction=prediction)["rougeL"].fmeasure for ref in references
    )


TRICKY = [
    ("The cat sat on the mat.", "the cat sat on a mat"),  # punctuation, case
    ("THE CAT", "the cat"),
    ("Running runs ran", "run running"),  # stemming
    ("she is running fast", "she runs fast"),
    ("", "something"),  # empty prediction
    ("something", ""),  # empty reference
    ("", ""),
    ("...", "!"),  # punctuation only: no tokens
    ("12 + 7 = 19", "19"),  # numbers
    ("3.14 is pi", "pi is 3 14"),
    ("Hello,\n\nworld!!  ", "hello world"),  # whitespace/newlines
    ("\tline one\r\nline two ", "line one line two"),
    ("café naïve", "cafe naive"),  # unicode: non-ASCII letters dropped by the tokeniser
    ("日本語のテキスト", "日本語のテキスト"),  # no ASCII tokens at all
    ("don’t stop — go", "dont stop go"),
    ("a b c d e f", "f e d c b a"),  # order matters for LCS
    ("the the the", "the"),
]


@pytest.mark.parametrize("prediction, reference", TRICKY)
def test_rouge_l_equals_rouge_score(prediction, reference):
    got = rouge_l(prediction, [reference])
    assert got == SCORER.score(reference, prediction)["rougeL"].fmeasure
    assert isinstance(got, float)
    assert 0.0 <= got <= 1.0


def test_rouge_l_gets_raw_strings_not_normalised():
    # "3.14" tokenises to "3 14" under rouge_score but to "314" under exact-match normalisation
    assert rouge_l("3.14", ["3 14"]) == 1.0
    assert exact_match("3.14", ["3 14"]) == 0.0


def test_rouge_l_unicode_and_empty_score_zero():
    assert rouge_l("日本語", ["日本語"]) == 0.0
    assert rouge_l("", ["anything"]) == 0.0
    assert rouge_l("anything", [""]) == 0.0


def test_rouge_l_stemming():
    assert rouge_l("running", ["runs"]) == 1.0


@pytest.mark.parametrize(
    "prediction, references",
    [
        ("the cat sat", ["totally different words", "the cat sat"]),
        ("the cat sat on the mat", ["a cat", "the cat sat", "mat"]),
        ("", ["x", ""]),
        ("dogs run", ["dog running", "dogs ran away", "cats"]),
    ],
)
def test_rouge_l_max_over_references(prediction, references):
    assert rouge_l(prediction, references) == reference_rouge(prediction, references)
    assert rouge_l(prediction, references) == max(rouge_l(prediction, [r]) for r in references)
    assert rouge_l(prediction, list(reversed(references))) == rouge_l(prediction, references)


def test_rouge_l_str_reference_is_one_reference():
    assert rouge_l("the cat sat", "the cat sat") == 1.0
    assert rouge_l("a dog", "the cat") == rouge_l("a dog", ["the cat"])


def test_rouge_scorer_built_once():
    rouge_l("a", ["a"])
    first = metrics._rouge_scorer()
    rouge_l("b", ["c"])
    assert metrics._rouge_scorer() is first


@pytest.mark.parametrize(
    "text, expected",
    [
        ("The Cat.", "the cat"),
        ("  a\tb\n\nc  ", "a b c"),
        ("Hello, World!!", "hello world"),
        ("don’t", "don’t"),  # only ASCII string.punctuation is removed
        ("the an a", "the an a"),  # articles kept
        ("", ""),
    ],
)
def test_normalize_answer(text, expected):
    assert normalize_answer(text) == expected


@pytest.mark.parametrize(
    "prediction, references, expected",
    [
        ("The Cat.", ["the cat"], 1.0),
        ("  the   cat \n", ["the cat"], 1.0),
        ("THE CAT!", ["the, cat"], 1.0),
        ("the cat", ["cat"], 0.0),  # articles are kept
        ("a cat", ["the cat"], 0.0),
        ("it is y.", ["y is the capital", "it is y"], 1.0),  # max over references
        ("it is z", ["y is the capital", "it is y"], 0.0),
        ("19", "19", 1.0),  # a str reference is one reference
        ("19", "1", 0.0),  # ... not a list of characters
        ("19", ["1 9"], 0.0),
        ("3.14", ["314"], 1.0),
        ("", [""], 1.0),  # no special case for empty strings, as in the reference
        ("...", ["!"], 1.0),
        ("", ["x"], 0.0),
        ("running", ["runs"], 0.0),  # no stemming in exact match
    ],
)
def test_exact_match(prediction, references, expected):
    got = exact_match(prediction, references)
    assert got == expected
    assert isinstance(got, float)


def test_empty_reference_list_raises():
    with pytest.raises(ValueError, match="empty reference list"):
        exact_match("a", [])
    with pytest.raises(ValueError, match="empty reference list"):
        rouge_l("a", [])


def test_non_string_inputs_raise():
    with pytest.raises(TypeError, match="prediction must be a str"):
        rouge_l(None, ["a"])
    with pytest.raises(TypeError, match="reference must be a str"):
        exact_match("a", [["a"]])
    with pytest.raises(TypeError, match="must be lists"):
        compute_metrics(["a"], "a")


def test_compute_metrics_scales_and_averages():
    out = compute_metrics(["the cat", "a dog"], [["the cat"], ["a bird"]])
    assert out["exact_match"] == 50.0
    expected_rouge = 100 * (1.0 + reference_rouge("a dog", ["a bird"])) / 2
    assert out["rougeL"] == pytest.approx(expected_rouge, abs=1e-4)
    assert set(out) == set(METRICS) == {"exact_match", "rougeL"}


def test_compute_metrics_rounds_to_four_decimals_like_the_reference():
    preds, refs = ["a b c", "x"], [["a b d"], ["y"]]
    raw = 100 * (reference_rouge("a b c", ["a b d"]) + 0.0) / 2  # 33.333...
    assert compute_metrics(preds, refs)["rougeL"] == round(raw, 4)


def test_compute_metrics_perfect_and_zero():
    assert compute_metrics(["x y"], [["x y"]]) == {"exact_match": 100.0, "rougeL": 100.0}
    assert compute_metrics(["x"], [["y"]]) == {"exact_match": 0.0, "rougeL": 0.0}


def test_compute_metrics_list_of_lists_semantics():
    # each inner list is the set of references of one example: max within, mean across
    out = compute_metrics(["cat", "dog"], [["dog", "cat"], ["cat"]])
    assert out == {"exact_match": 50.0, "rougeL": 50.0}
    # a plain str entry is one reference, the same as a one-element list
    assert compute_metrics(["cat", "dog"], ["cat", ["dog"]]) == compute_metrics(
        ["cat", "dog"], [["cat"], ["dog"]]
    )


@pytest.mark.parametrize("n_pred, n_ref", [(3, 2), (2, 3), (0, 1), (1, 0)])
def test_length_mismatch_raises_and_never_truncates(n_pred, n_ref):
    preds = ["a", "b", "c"][:n_pred]
    refs = [["a"], ["b"], ["c"]][:n_ref]
    message = f"{n_pred} predictions but {n_ref} reference lists"
    with pytest.raises(ValueError, match=message):
        compute_metrics(preds, refs)
    with pytest.raises(ValueError, match=message):
        score_examples(preds, refs)


def test_compute_metrics_empty_raises():
    with pytest.raises(ValueError, match="no predictions"):
        compute_metrics([], [])


def test_score_examples_per_example_percent():
    scores = score_examples(["x y", "q", "dogs"], [["x y"], "z", ["a dog", "cats"]])
    assert scores[0] == {"exact_match": 100.0, "rougeL": 100.0}
    assert scores[1] == {"exact_match": 0.0, "rougeL": 0.0}
    assert scores[2]["exact_match"] == 0.0
    assert scores[2]["rougeL"] == pytest.approx(100 * reference_rouge("dogs", ["a dog", "cats"]))
    assert score_examples([], []) == []


def test_compute_metrics_is_the_mean_of_score_examples():
    preds = ["the cat sat", "a dog ran", "", "19"]
    refs = [["the cat sat down"], ["dogs run", "a dog ran"], ["x"], "19"]
    scores = score_examples(preds, refs)
    out = compute_metrics(preds, refs)
    for key in METRICS:
        assert out[key] == round(sum(s[key] for s in scores) / len(scores), 4)


def test_mean_metrics_is_compute_metrics_unrounded():
    preds = ["the cat sat", "a dog ran", "x"]
    refs = [["the cat sat down"], ["dogs run"], ["x"]]
    means = mean_metrics(score_examples(preds, refs))
    assert list(means) == list(METRICS)
    assert means["exact_match"] == 100 / 3  # not rounded
    assert {k: round(v, 4) for k, v in means.items()} == compute_metrics(preds, refs)
    with pytest.raises(ValueError, match="no predictions"):
        mean_metrics([])


def test_mean_over_generations():
    refs = [["x y"], ["z"]]
    first = score_examples(["x y", "q"], refs)
    second = score_examples(["x", "z"], refs)
    mean = mean_over_generations([first, second])
    assert len(mean) == 2
    assert mean[0]["exact_match"] == 50.0
    assert mean[0]["rougeL"] == pytest.approx((100.0 + second[0]["rougeL"]) / 2)
    assert mean[1] == {"exact_match": 50.0, "rougeL": 50.0}
    assert mean_over_generations([first]) == first


def test_mean_over_generations_matches_mean_of_per_seed_means():
    refs = [["a b c"], ["d e"], ["f"]]
    seeds = [["a b", "d", "g"], ["a b c", "e d", "f"], ["c", "", "f f"]]
    per_seed = [score_examples(p, refs) for p in seeds]
    mean = mean_over_generations(per_seed)
    for key in METRICS:
        per_seed_means = [compute_metrics(p, refs)[key] for p in seeds]
        assert sum(m[key] for m in mean) / len(mean) == pytest.approx(
            sum(per_seed_means) / len(per_seed_means), abs=1e-3
        )


def test_mean_over_generations_errors():
    one = [{"exact_match": 0.0, "rougeL": 10.0}]
    two = one * 2
    with pytest.raises(ValueError, match=r"different numbers of examples \(\[1, 2\]\)"):
        mean_over_generations([one, two])
    with pytest.raises(ValueError, match="no generation seeds"):
        mean_over_generations([])
    with pytest.raises(ValueError, match="different metric names"):
        mean_over_generations([one, [{"exact_match": 0.0}]])


def test_metric_metadata():
    assert set(METRICS) == {"exact_match", "rougeL"}
    for meta in METRICS.values():
        assert meta["higher_is_better"] is True
        assert meta["normalisation"]
    assert "articles kept" in METRICS["exact_match"]["normalisation"]
