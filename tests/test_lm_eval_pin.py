"""The shipped lm-eval generation task and the project's evaluator score the same outputs the
same way: a multi-line answer passes the task's filter whole, and on the shipped items the
shipped teacher gets the same per-item exact match under both scorers."""

from __future__ import annotations

import json
import os

import pytest

pytest.importorskip("lm_eval", reason="lm-eval is an optional extra (.ci/run installs it)")

from lm_eval.api.metrics import exact_match_hf_evaluate  # noqa: E402
from lm_eval.filters.extraction import RegexFilter  # noqa: E402

from dpkd_bench.data.lm_eval_task import DATA_FILE, SHIPPED, task_configs  # noqa: E402

GEN = "dpkd_synthetic_gen"
# The first 48 shipped items hold 12 multi-line answers; LM_EVAL_PIN_ITEMS=200 checks them all.
N_ITEMS = int(os.environ.get("LM_EVAL_PIN_ITEMS", "48"))


def gen_config() -> dict:
    return task_configs(SHIPPED / DATA_FILE)[GEN]


def task_score(raw: str, answers: list[str]) -> float:
    """The task's filter, then its metric with the task's options, on one raw output."""
    step = gen_config()["filter_list"][0]["filter"][0]
    (filtered,) = RegexFilter(regex_pattern=step["regex_pattern"]).apply([[raw]], [{}])
    options = {k: v for k, v in gen_config()["metric_list"][0].items() if k.startswith("ignore")}
    scores = [
        exact_match_hf_evaluate(predictions=[filtered[0]], references=[answer], **options)
        for answer in answers
    ]
    return max(s["exact_match"] for s in scores)


def test_a_multi_line_answer_passes_the_filter_whole_and_is_right():
    answer = "lamp\nbag\npen"
    assert task_score(answer, [answer]) == 1.0
    assert task_score("  lamp\nbag\npen \n", [answer]) == 1.0  # surrounding whitespace
    assert task_score("lamp\nbag", [answer]) == 0.0
    assert task_score("Paris.", ["paris"]) == 1.0  # case and punctuation ignored


@pytest.fixture(scope="module")
def both_scorers(tmp_path_factory):
    """Per item of the first N_ITEMS shipped items: the shipped teacher's exact match under
    the project's decoder and metric, and under lm-eval's generation task."""
    import lm_eval
    from lm_eval.models.huggingface import HFLM

    from dpkd_bench.data.collate import encode_prompt
    from dpkd_bench.data.lm_eval_task import task_dir
    from dpkd_bench.generate import DecodeSettings, generate_texts
    from dpkd_bench.lm_eval_scores import task_manager
    from dpkd_bench.metrics import score_examples
    from dpkd_bench.models import load_pretrained, load_tokenizer
    from dpkd_bench.teacher import SHIPPED_TEACHER

    items = [json.loads(line) for line in (SHIPPED / DATA_FILE).open(encoding="utf-8")]
    items = items[:N_ITEMS]
    tokenizer = load_tokenizer(str(SHIPPED_TEACHER))
    model = load_pretrained(SHIPPED_TEACHER).eval()
    prompts = [encode_prompt(tokenizer, item["prompt"]) for item in items]
    greedy = DecodeSettings(greedy=True)
    texts = generate_texts(model, tokenizer, prompts, greedy, seed=10, batch_size=16)
    ours = [s["exact_match"] / 100 for s in score_examples(texts, [i["answers"] for i in items])]
    folders = (str(task_dir(tmp_path_factory.mktemp("lm-eval"))),)
    out = lm_eval.simple_evaluate(
        model=HFLM(pretrained=model, tokenizer=tokenizer, batch_size=16, device="cpu"),
        tasks=[GEN],
        limit=N_ITEMS,
        task_manager=task_manager(folders),
        bootstrap_iters=0,
        log_samples=True,
        verbosity="WARNING",
    )
    samples = sorted(out["samples"][GEN], key=lambda s: s["doc_id"])
    theirs = [float(s["exact_match"]) for s in samples]
    filtered = [s["filtered_resps"][0] for s in samples]
    return items, texts, ours, theirs, filtered


def test_the_two_scorers_agree_item_by_item(both_scorers):
    items, texts, ours, theirs, filtered = both_scorers
    assert len(theirs) == len(ours) == N_ITEMS
    disagreements = [
        f"item {i} ({item['family']}): project {ours[i]:.0f} on {texts[i]!r}, lm-eval "
        f"{theirs[i]:.0f} on {filtered[i]!r}, answers {item['answers']!r}"
        for i, item in enumerate(items)
        if ours[i] != theirs[i]
    ]
    assert not disagreements, "\n".join(disagreements)
    multi_line = [i for i, item in enumerate(items) if "\n" in item["answer"]]
    assert len(multi_line) >= 10 and any(theirs[i] == 1.0 for i in multi_line)
    assert 0 < sum(ours) < N_ITEMS  # neither all right nor all wrong: the check can fail


def test_lm_eval_keeps_the_project_decoders_text(both_scorers):
    _, texts, _, _, filtered = both_scorers
    assert filtered == texts
