"""Instruction-set loaders on local fixtures in the exact Hub layouts, offline.

The fixtures are written here, record by record, in the shapes of MiniLLM's Hub datasets
(``hf download MiniLLM/<set> --repo-type dataset --local-dir DIR``): ``raw.jsonl`` training
records with instruction/input/output, ``valid.jsonl`` eval records with prompt (newlines as
``<n>``) and output, S-NI and UnNI split into response-length folders, and the original
databricks-dolly-15k schema (instruction/context/response/category). Their texts are made up.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from dpkd_bench.cli import main
from dpkd_bench.data import loaders
from dpkd_bench.data.loaders import (
    EVAL_SOURCES,
    HUB_EVAL_SETS,
    load_eval_set,
    load_instruction_data,
    read_records,
)
from dpkd_bench.data.prepare import prepare_data
from dpkd_bench.data.template import PROMPT_NO_INPUT, RESPONSE_MARKER, build_prompt
from dpkd_bench.errors import DataError
from dpkd_bench.recipe import load_recipe

SETS = ("dolly", "self-inst", "vicuna", "sinst", "uinst")
BUCKETS = {"sinst": ("0_2", "3_6", "6_10", "11_"), "uinst": ("0_2", "3_5", "6_10", "11_")}


def write_jsonl(path: Path, records) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def eval_records(name: str, bucket: str = "11_") -> list[dict]:
    """Eval records as the Hub stores them: prompt with ``<n>`` newlines, output str or list."""
    return [
        {"prompt": f"Describe item {i} of {name}.<n>Use one sentence.", "output": f"{name} {i}"}
        for i in range(3)
    ] + [
        {"prompt": f"List two colours ({name}, {bucket}).", "output": ["red and blue", "red, blue"]}
    ]


def hub_copy(root: Path, name: str) -> Path:
    """A local copy of MiniLLM/<name> in the Hub layout (the length folders for S-NI/UnNI)."""
    folder = root / name
    if name in BUCKETS:
        for bucket in BUCKETS[name]:
            write_jsonl(folder / bucket / "valid.jsonl", eval_records(name, bucket))
    else:
        write_jsonl(folder / "valid.jsonl", eval_records(name))
    if name == "dolly":
        write_jsonl(folder / "raw.jsonl", raw_records(8))
    return folder


def raw_records(n: int) -> list[dict]:
    """MiniLLM's raw.jsonl: instruction, input (often empty) and output."""
    return [
        {
            "instruction": f"Add one to {i}.",
            "input": "" if i % 2 else f"The number is {i}.",
            "output": str(i + 1),
        }
        for i in range(n)
    ]


# ---- eval sets: each of the five Hub formats ----------------------------------------------
@pytest.mark.parametrize("name", SETS)
def test_each_hub_eval_set_loads_from_a_local_copy(tmp_path, name):
    examples = load_eval_set(name, str(hub_copy(tmp_path, name)))
    assert len(examples) == 4
    first = examples[0]
    assert first.prompt == build_prompt(f"Describe item 0 of {name}.\nUse one sentence.")
    assert first.prompt.endswith(RESPONSE_MARKER) and "<n>" not in first.prompt
    assert first.references == (f"{name} 0",) and first.response == f"{name} 0"
    last = examples[-1]
    assert last.references == ("red and blue", "red, blue") and last.response == "red and blue"
    if name in BUCKETS:  # the papers' split: responses of 11 or more tokens
        assert "11_" in last.prompt


@pytest.mark.parametrize("name", ["sinst", "uinst"])
def test_length_folder_itself_is_a_local_copy_too(tmp_path, name):
    folder = hub_copy(tmp_path, name) / "11_"
    assert len(load_eval_set(name, str(folder))) == 4
    assert len(load_eval_set(name, str(folder / "valid.jsonl"))) == 4


def test_registry_names_every_hub_set():
    assert HUB_EVAL_SETS == {
        "dolly": "MiniLLM/dolly",
        "self-inst": "MiniLLM/self-inst",
        "vicuna": "MiniLLM/Vicuna",
        "sinst": "MiniLLM/sinst",
        "uinst": "MiniLLM/uinst",
    }
    assert EVAL_SOURCES["sinst"].file == EVAL_SOURCES["uinst"].file == "11_/valid.jsonl"
    assert EVAL_SOURCES["uinst"].limit == 10_000


def test_registered_limit_keeps_the_first_records(tmp_path, monkeypatch):
    monkeypatch.setitem(EVAL_SOURCES, "uinst", replace(EVAL_SOURCES["uinst"], limit=2))
    examples = load_eval_set("uinst", str(hub_copy(tmp_path, "uinst")))
    assert [e.references[0] for e in examples] == ["uinst 0", "uinst 1"]


def test_hub_name_read_from_the_local_cache_offline(tmp_path, monkeypatch):
    """``vicuna`` by its Hub name, from a Hugging Face cache, with downloads forbidden."""
    import huggingface_hub.constants as hub_constants

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "datasets--MiniLLM--Vicuna"
    write_jsonl(repo / "snapshots" / commit / "valid.jsonl", eval_records("vicuna"))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert [e.references[0] for e in load_eval_set("vicuna")][:2] == ["vicuna 0", "vicuna 1"]
    with pytest.raises(DataError, match="HF_HUB_OFFLINE=1 forbids downloading it"):
        load_eval_set("self-inst")


def test_templated_prompt_is_left_alone(tmp_path):
    templated = PROMPT_NO_INPUT.format(instruction="Say hi.").replace("\n", "<n>")
    path = write_jsonl(tmp_path / "valid.jsonl", [{"prompt": templated, "output": "hi"}])
    (example,) = load_eval_set("mine", str(path))
    assert example.prompt == PROMPT_NO_INPUT.format(instruction="Say hi.")


def test_a_set_of_ones_own_needs_a_location():
    with pytest.raises(DataError, match=r"unknown eval set 'dolyl' \(did you mean 'dolly'\?\)"):
        load_eval_set("dolyl")


# ---- training data: MiniLLM raw.jsonl and databricks-dolly-15k ----------------------------
def test_minillm_raw_jsonl_first_dev_num_records_are_validation(tmp_path):
    train, dev = load_instruction_data(str(hub_copy(tmp_path, "dolly")), dev_num=3)
    assert [e.response for e in dev] == ["1", "2", "3"]
    assert [e.response for e in train] == ["4", "5", "6", "7", "8"]
    assert dev[0].prompt == build_prompt("Add one to 0.", "The number is 0.")
    assert "### Input:" in dev[0].prompt and "### Input:" not in dev[1].prompt


def test_databricks_dolly_15k_schema(tmp_path):
    records = [
        {
            "instruction": f"Summarise note {i}.",
            "context": "" if i % 2 else f"Note {i} says hello.",
            "response": f"Summary {i}.",
            "category": "summarization" if i % 2 else "closed_qa",
        }
        for i in range(4)
    ]
    path = write_jsonl(tmp_path / "databricks-dolly-15k.jsonl", records)
    train, dev = load_instruction_data(str(path), dev_num=1)
    assert dev[0].prompt == build_prompt("Summarise note 0.", "Note 0 says hello.")
    assert dev[0].family == "closed_qa" and train[0].family == "summarization"
    assert [e.response for e in train] == ["Summary 1.", "Summary 2.", "Summary 3."]


def test_records_keep_their_line_numbers(tmp_path):
    path = tmp_path / "raw.jsonl"
    path.write_text('\n{"a": 1}\n\n{"b": 2}\n', encoding="utf-8")
    assert [n for n, _ in read_records(path)] == [2, 4]


def test_local_paths_are_never_taken_for_hub_names(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert loaders.looks_like_hub_name("MiniLLM/dolly")
    assert not loaders.looks_like_hub_name("data/raw.jsonl")
    (tmp_path / "data" / "dolly").mkdir(parents=True)
    assert not loaders.looks_like_hub_name("data/dolly")


# ---- the pipeline: every format through prepare_data, and `ls` ----------------------------
def test_prepare_data_reads_every_format_and_counts_dropped_prompts(tmp_path):
    copies = {name: hub_copy(tmp_path / "hub", name) for name in SETS}
    long_prompt = " ".join(f"w{i}" for i in range(400))
    write_jsonl(
        copies["vicuna"] / "valid.jsonl",
        [*eval_records("vicuna"), {"prompt": long_prompt, "output": "too long"}],
    )
    overrides = [
        f"data.source={copies['dolly']}",
        "data.dev_num=2",
        f"data.eval_sets=[{','.join(SETS)}]",
        *(f"data.eval_paths.{name}={path}" for name, path in copies.items()),
        "tokenizer.vocab_size=300",
    ]
    data = prepare_data(load_recipe("synthetic-quick", overrides), tmp_path / "cache")
    assert list(data.eval_sets) == list(SETS)
    assert len(data.train) == 6 and len(data.dev_items) == 2
    assert data.eval_sets["vicuna"].dropped == 1 and len(data.eval_sets["vicuna"].examples) == 4
    assert all(data.eval_sets[n].dropped == 0 for n in SETS if n != "vicuna")
    assert all(f"eval:{n}" in data.hashes for n in SETS)


def test_ls_lists_every_eval_set(capsys):
    assert main(["ls"]) == 0
    out = capsys.readouterr().out.split("eval sets:")[1].split("recipes:")[0]
    for name in ("synthetic-id", "synthetic-long", "synthetic-para", *SETS):
        assert f"  {name} " in out
    for hub in HUB_EVAL_SETS.values():
        assert hub in out
