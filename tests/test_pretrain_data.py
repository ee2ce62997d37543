"""The pre-training corpus: synthetic prose, local and streamed sources, EOS-joined chunks."""

from __future__ import annotations

import json

import datasets
import pytest

from dpkd_bench.data.pretrain import pretrain_chunks, pretrain_documents
from dpkd_bench.data.synthetic_prose import pretrain_texts
from dpkd_bench.data.template import RESPONSE_MARKER
from dpkd_bench.errors import DataError

DOCS = ["the cat sat on the mat.", "tom has a red dog.\nit runs fast.", "a third one here."]


def stream(tokenizer, documents: list[str]) -> list[int]:
    """The token stream the chunks are cut from: every document followed by EOS."""
    ids: list[int] = []
    for doc in documents:
        ids += tokenizer.encode(doc, add_special_tokens=False) + [tokenizer.eos_token_id]
    return ids


def write_jsonl(path, records) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")


@pytest.fixture
def fake_hub(monkeypatch):
    """``datasets.load_dataset`` offline: records served lazily, the number read counted."""
    calls = {"read": 0}

    def load_dataset(name, **kwargs):
        calls.update(name=name, kwargs=kwargs)

        def records():
            for i in range(10_000):
                calls["read"] += 1
                yield {"text": f"document {i} is about the {i % 7} cat.", "id": i}

        return records()

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    return calls


def test_synthetic_texts_deterministic_per_seed_and_plain_prose():
    texts = pretrain_texts(0, 200)
    assert texts == pretrain_texts(0, 200)
    assert texts != pretrain_texts(1, 200)
    assert pretrain_texts(0, 50) == texts[:50]  # a smaller corpus is a prefix of a larger one
    assert all(text.count(".") >= 3 and RESPONSE_MARKER not in text for text in texts)
    assert any("the capital of" in t for t in texts) and any("opposite" in t for t in texts)


def test_chunks_have_exact_length_and_eos_after_every_document(tmp_path, tokenizer):
    path = tmp_path / "corpus.txt"
    path.write_text("\n\n".join(DOCS) + "\n", encoding="utf-8")
    expected = stream(tokenizer, DOCS)
    chunks = pretrain_chunks(str(path), tokenizer, max_length=8, max_chunks=100)
    assert len(chunks) == len(expected) // 8  # the last partial chunk is dropped
    assert all(len(chunk) == 8 for chunk in chunks)
    assert sum(chunks, []) == expected[: 8 * len(chunks)]
    assert sum(chunks, []).count(tokenizer.eos_token_id) >= 2


def test_synthetic_chunks_stop_at_max_chunks_and_follow_the_seed(tokenizer):
    chunks = pretrain_chunks("synthetic", tokenizer, max_length=16, max_chunks=5)
    assert len(chunks) == 5 and all(len(chunk) == 16 for chunk in chunks)
    assert chunks == pretrain_chunks("synthetic", tokenizer, max_length=16, max_chunks=5)
    assert chunks != pretrain_chunks("synthetic", tokenizer, max_length=16, max_chunks=5, seed=1)


def test_txt_file_documents_are_separated_by_blank_lines(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("\n\n\n".join(DOCS) + "\n\n", encoding="utf-8")
    assert list(pretrain_documents(str(path))) == DOCS


def test_jsonl_file_reads_the_text_field_and_skips_blank_text(tmp_path):
    path = tmp_path / "corpus.jsonl"
    write_jsonl(path, [{"body": DOCS[0]}, {"body": "  "}, {"body": DOCS[1], "id": 2}])
    assert list(pretrain_documents(str(path), text_field="body")) == DOCS[:2]


def test_directory_reads_every_txt_and_jsonl_file_sorted(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.txt").write_text(DOCS[1], encoding="utf-8")
    write_jsonl(tmp_path / "a.jsonl", [{"text": DOCS[0]}])
    (tmp_path / "c.csv").write_text("not,read\n", encoding="utf-8")
    (tmp_path / "z.txt").write_text(DOCS[2], encoding="utf-8")
    assert list(pretrain_documents(str(tmp_path))) == DOCS


def test_hub_name_is_streamed_and_reading_stops_at_max_chunks(fake_hub, tokenizer):
    chunks = pretrain_chunks("owner/corpus", tokenizer, max_length=16, max_chunks=3)
    assert len(chunks) == 3 and all(len(chunk) == 16 for chunk in chunks)
    assert fake_hub["name"] == "owner/corpus"
    assert fake_hub["kwargs"] == {"split": "train", "streaming": True}
    assert fake_hub["read"] <= 16 * 3  # every document has a token: never read past that


def test_hub_record_without_the_text_field_names_the_record(fake_hub, tokenizer):
    with pytest.raises(DataError, match="'owner/corpus' record 1: text field 'body'"):
        pretrain_chunks("owner/corpus", tokenizer, max_length=8, max_chunks=1, text_field="body")


def test_hub_failure_is_a_one_line_data_error(monkeypatch, tokenizer):
    def unreachable(name, **kwargs):
        raise ConnectionError("no route to host\nmore detail")

    monkeypatch.setattr(datasets, "load_dataset", unreachable)
    with pytest.raises(DataError, match="'owner/corpus'") as info:
        pretrain_chunks("owner/corpus", tokenizer, max_length=8, max_chunks=1)
    assert "\n" not in str(info.value) and "data.pretrain_source" in str(info.value)


def bad_source(tmp_path, case: str) -> tuple[str, str]:
    """A source that cannot be used, and what its error must say."""
    if case == "missing file":
        return str(tmp_path / "missing.txt"), "does not exist"
    if case == "relative missing file":
        return "data/missing.txt", "does not exist"  # looks like owner/name, but a file name
    if case == "neither":
        return "not a corpus!", "nor a Hub dataset name"
    if case == "empty directory":
        return str(tmp_path), "holds no .txt or .jsonl file"
    if case == "too short":
        (tmp_path / "short.txt").write_text("hi", encoding="utf-8")
        return str(tmp_path / "short.txt"), "gives no chunk of 64 tokens"
    path = tmp_path / "corpus.jsonl"
    if case == "missing field":
        write_jsonl(path, [{"text": "fine"}, {"body": "no text field"}])
        return str(path), "corpus.jsonl line 2: text field 'text' is missing"
    path.write_text('{"text": "fine"}\n{"text": \n', encoding="utf-8")
    return str(path), "corpus.jsonl line 2 is not valid JSON"


@pytest.mark.parametrize(
    "case",
    [
        "missing file",
        "relative missing file",
        "neither",
        "empty directory",
        "too short",
        "missing field",
        "bad json",
    ],
)
def test_bad_sources_are_one_line_data_errors(case, tmp_path, monkeypatch, tokenizer):
    monkeypatch.chdir(tmp_path)
    source, message = bad_source(tmp_path, case)
    with pytest.raises(DataError, match=message) as info:
        pretrain_chunks(source, tokenizer, max_length=64, max_chunks=4)
    assert "\n" not in str(info.value)
