"""Instruction-set loaders: local JSONL files or directories, or Hub dataset repositories.

Record schemas accepted (facts from the MiniLLM/DPKD data code):

* training data, MiniLLM style: ``instruction``, ``input`` (may be empty), ``output``;
* training data, databricks-dolly-15k style: ``instruction``, ``context``, ``response``;
* eval sets: ``prompt`` (newlines written as the literal ``<n>``) and ``output``, a string or a
  list of reference strings; the Alpaca template is applied unless the prompt already has it.

``output`` may be a list of references in every schema; the first one is the training target.
"""

from __future__ import annotations

import json
from pathlib import Path

from dpkd_bench.data.example import Example
from dpkd_bench.data.template import build_prompt, ensure_template
from dpkd_bench.errors import DataError

HUB_EVAL_SETS = {
    "dolly": "MiniLLM/dolly",
    "self-inst": "MiniLLM/self-inst",
    "vicuna": "MiniLLM/Vicuna",
    "sinst": "MiniLLM/sinst",
    "uinst": "MiniLLM/uinst",
}
TRAIN_FILE = "raw.jsonl"
EVAL_FILE = "valid.jsonl"


def read_records(path: Path) -> list[dict]:
    """Read a JSONL file; a malformed line is a DataError naming the file and line."""
    records = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(
                    f"{path} line {number} is not valid JSON ({err.msg}); "
                    "each line must hold one JSON object"
                ) from None
            if not isinstance(record, dict):
                raise DataError(f"{path} line {number} is not a JSON object; fix that record")
            records.append(record)
    if not records:
        raise DataError(f"{path} holds no records; point the recipe at a non-empty JSONL file")
    return records


def _references(value, where: str) -> tuple[str, ...]:
    refs = [value] if isinstance(value, str) else value
    if not isinstance(refs, list) or not refs or not all(isinstance(r, str) for r in refs):
        raise DataError(f"{where}: 'output' must be a string or a non-empty list of strings")
    return tuple(refs)


def record_to_example(record: dict, where: str) -> Example:
    """Turn one record of any accepted schema into an :class:`Example`."""
    rid = str(record.get("id", where))
    family = str(record.get("family") or record.get("category") or "")
    if "prompt" in record and "output" in record:
        prompt = ensure_template(str(record["prompt"]).replace("<n>", "\n"))
        refs = _references(record["output"], where)
    elif "instruction" in record and ("output" in record or "response" in record):
        context = record.get("input", record.get("context", "")) or ""
        prompt = build_prompt(str(record["instruction"]), str(context))
        refs = _references(record.get("output", record.get("response")), where)
    else:
        raise DataError(
            f"{where}: record has keys {sorted(record)} but needs instruction/input/output, "
            "instruction/context/response or prompt/output"
        )
    response = str(record.get("response", refs[0])) if "output" in record else refs[0]
    return Example(rid, prompt, response, refs, family)


def examples_from_records(records: list[dict], origin: str) -> list[Example]:
    return [record_to_example(r, f"{origin} record {i + 1}") for i, r in enumerate(records)]


def _hub_file(repo_id: str, filename: str) -> Path:
    """Download one file of a Hub dataset repository (or take it from the local cache)."""
    try:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(repo_id, filename, repo_type="dataset"))
    except Exception as err:  # network, offline mode, missing repo: all the user's to fix
        raise DataError(
            f"cannot get '{filename}' of Hub dataset '{repo_id}' ({type(err).__name__}); "
            "check the name, your network or HF_HUB_OFFLINE, or pass a local directory"
        ) from None


def resolve_file(source: str, filename: str) -> Path:
    """A local file, a local directory holding ``filename``, or a Hub dataset name."""
    path = Path(source).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        candidate = path / filename
        if not candidate.is_file():
            raise DataError(f"directory {path} has no {filename}; add it or pass the file itself")
        return candidate
    if source.count("/") == 1 and not source.startswith((".", "/", "~")):
        return _hub_file(source, filename)
    raise DataError(f"data source '{source}' is not a file, a directory or a Hub dataset name")


def load_instruction_data(source: str, dev_num: int) -> tuple[list[Example], list[Example]]:
    """Training data: the first ``dev_num`` records are validation, the rest train."""
    path = resolve_file(source, TRAIN_FILE)
    examples = examples_from_records(read_records(path), str(path))
    if len(examples) <= dev_num:
        raise DataError(
            f"{path} has {len(examples)} records, not more than dev_num={dev_num}; "
            "lower data.dev_num so that some records are left for training"
        )
    return examples[dev_num:], examples[:dev_num]


def load_eval_set(name_or_source: str) -> list[Example]:
    """An eval set by registry name (dolly, self-inst, ...), local path or Hub name."""
    source = HUB_EVAL_SETS.get(name_or_source, name_or_source)
    path = resolve_file(source, EVAL_FILE)
    return examples_from_records(read_records(path), str(path))
