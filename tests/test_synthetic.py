"""The embedded synthetic suite: determinism, schema, balance, splits, and no trivial answers."""

from __future__ import annotations

import random
import re
import string
from collections import Counter, defaultdict
from statistics import mean

import pytest

from dpkd_bench.data.synthetic import (
    EVAL_SETS,
    FAMILIES,
    N_SEEN_TEMPLATES,
    generate_example,
    generate_suite,
    suite_fingerprint,
)
from dpkd_bench.data.template import build_prompt
from dpkd_bench.errors import DataError

N_TRAIN, N_EVAL = 6000, 500
SPLITS = ("train", "dev", *EVAL_SETS)
RECORD_KEYS = {"instruction", "input", "output", "family", "id"}


@pytest.fixture(scope="module")
def suite():
    return generate_suite(0, N_TRAIN, N_EVAL)


def normalise(text: str) -> str:
    """Exact-match normalisation of the reference metric: lowercase, no punctuation, spaces."""
    text = text.lower().translate(str.maketrans("", "", string.punctuation))
    return " ".join(text.split())


def exact_match(prediction: str, references: list[str]) -> float:
    return float(any(normalise(prediction) == normalise(ref) for ref in references))


def by_family(records: list[dict]) -> dict[str, list[dict]]:
    groups = defaultdict(list)
    for record in records:
        groups[record["family"]].append(record)
    return groups


def keys(records: list[dict]) -> set[tuple[str, str]]:
    return {(r["instruction"], r["input"]) for r in records}


def test_same_seed_same_suite_and_other_seed_differs():
    first = generate_suite(3, 400, 40)
    assert first == generate_suite(3, 400, 40)
    other = generate_suite(4, 400, 40)
    for split in SPLITS:
        assert first[split] != other[split]


def test_eval_sets_do_not_depend_on_n_train():
    small, large = generate_suite(1, 200, 40), generate_suite(1, 800, 40)
    for name in EVAL_SETS:
        assert small[name] == large[name]


def test_sizes(suite):
    assert set(suite) == set(SPLITS)
    assert len(suite["train"]) == N_TRAIN
    for name in EVAL_SETS:
        assert len(suite[name]) == N_EVAL


def test_schema(suite):
    for split, records in suite.items():
        for r in records:
            expected = RECORD_KEYS | ({"response"} if split in ("train", "dev") else set())
            assert set(r) == expected, r
            assert r["family"] in FAMILIES
            assert isinstance(r["instruction"], str) and r["instruction"]
            assert isinstance(r["input"], str)
            assert isinstance(r["output"], list) and r["output"]
            assert all(isinstance(o, str) and o for o in r["output"])
            # phrasings differ by words, not only by punctuation or case
            assert len({normalise(o) for o in r["output"]}) == len(r["output"]), r
            assert len(r["output"]) == FAMILIES[r["family"]].phrasings
        assert len({r["id"] for r in records}) == len(records), f"duplicate ids in {split}"


def test_text_is_small_plain_lowercase_ascii(suite):
    allowed = re.compile(r"^[a-z0-9 ,.:?+=\n]*$")
    words = set()
    for records in suite.values():
        for r in records:
            for text in (r["instruction"], r["input"], *r["output"]):
                assert allowed.match(text), repr(text)
                words.update(re.findall(r"[a-z]+", text))
            assert all(len(o.split()) <= 40 for o in r["output"])
    assert len(words) < 500, f"{len(words)} distinct words: too many for a tiny BPE"


def test_prompts_stay_short(suite):
    for records in suite.values():
        longest = max(len(build_prompt(r["instruction"], r["input"]).split()) for r in records)
        assert longest < 90  # words; the Alpaca template alone is about 30


def test_at_least_seven_families_mixing_answer_lengths():
    assert len(FAMILIES) >= 7
    assert {f.answer for f in FAMILIES.values()} == {"short", "long"}
    for family in FAMILIES.values():
        assert len(set(family.templates)) == 5


def test_families_balanced_in_every_split(suite):
    for split, records in suite.items():
        counts = Counter(r["family"] for r in records)
        assert set(counts) == set(FAMILIES), split
        assert max(counts.values()) - min(counts.values()) <= 1, (split, counts)


def test_at_least_three_multimodal_families(suite):
    multimodal = {r["family"] for r in suite["synthetic-id"] if len(r["output"]) >= 2}
    assert len(multimodal) >= 3


def test_train_response_is_a_reference(suite):
    for r in suite["train"]:
        assert r["response"] in r["output"]


def test_train_responses_use_every_phrasing(suite):
    for name, records in by_family(suite["train"]).items():
        k = FAMILIES[name].phrasings
        used = Counter(r["output"].index(r["response"]) for r in records)
        assert set(used) == set(range(k)), name
        # drawn uniformly: every phrasing near 1/k of the family
        assert min(used.values()) >= len(records) / (2 * k), (name, used)


def test_no_item_shared_between_train_and_eval(suite):
    train = keys(suite["train"])
    assert len(train) == N_TRAIN  # no duplicate within train either
    for name in EVAL_SETS:
        assert len(keys(suite[name])) == N_EVAL
        assert not train & keys(suite[name]), name


def template_index(family: str, instruction: str) -> int:
    """Which of the family's templates produced ``instruction`` (slots match one word)."""
    for i, template in enumerate(FAMILIES[family].templates):
        pattern = re.sub(r"\\\{\w+\\\}", r"[a-z]+", re.escape(template))
        if re.fullmatch(pattern, instruction):
            return i
    raise AssertionError(f"no template of {family} gives {instruction!r}")


def test_para_instructions_never_seen_in_training(suite):
    train_instructions = {r["instruction"] for r in suite["train"]}
    for r in suite["synthetic-para"]:
        assert r["instruction"] not in train_instructions
    for split, records in suite.items():
        held_out = split == "synthetic-para"
        for r in records:
            assert (template_index(r["family"], r["instruction"]) >= N_SEEN_TEMPLATES) == held_out


def test_long_inputs_are_longer_for_every_family(suite):
    id_sets, long_sets = by_family(suite["synthetic-id"]), by_family(suite["synthetic-long"])
    for name in FAMILIES:
        id_len = mean(len(r["input"]) for r in id_sets[name])
        long_len = mean(len(r["input"]) for r in long_sets[name])
        assert long_len > id_len, (name, id_len, long_len)


@pytest.mark.parametrize("split", EVAL_SETS)
def test_no_constant_answer_solves_a_family(suite, split):
    for name, records in by_family(suite[split]).items():
        majority = Counter(r["output"][0] for r in records).most_common(1)[0][0]
        score = mean(exact_match(majority, r["output"]) for r in records)
        assert score <= 0.20, (split, name, majority, score)


def test_no_constant_answer_in_a_small_suite():
    small = generate_suite(7, 200, 24)
    for name, records in by_family(small["synthetic-id"]).items():
        answers = Counter(r["output"][0] for r in records)
        assert answers.most_common(1)[0][1] == 1, name  # 3 per family: all different


def test_generate_example_single_record():
    record = generate_example("add", random.Random(0), split="train")
    assert record["family"] == "add" and record["response"] in record["output"]
    para = generate_example("add", random.Random(0), split="synthetic-para")
    assert "response" not in para
    assert para["instruction"] in FAMILIES["add"].templates[N_SEEN_TEMPLATES:]


def test_unknown_names_and_bad_sizes_raise():
    with pytest.raises(ValueError, match="known"):
        generate_example("nope", random.Random(0), split="train")
    with pytest.raises(ValueError, match="known"):
        generate_example("add", random.Random(0), split="test")
    with pytest.raises(DataError, match="n_eval"):
        generate_suite(0, 10, 0)


def test_fingerprint_stable_and_sensitive():
    base = suite_fingerprint(0, N_TRAIN, N_EVAL)
    assert base == suite_fingerprint(0, N_TRAIN, N_EVAL)
    assert len(base) == 64 and int(base, 16) >= 0
    others = {
        suite_fingerprint(1, N_TRAIN, N_EVAL),
        suite_fingerprint(0, N_TRAIN + 1, N_EVAL),
        suite_fingerprint(0, N_TRAIN, N_EVAL + 1),
    }
    assert base not in others and len(others) == 3
