"""Instruction-set loaders: local JSONL files or directories, or Hub dataset repositories.

Record schemas accepted (facts from the MiniLLM/DPKD data code):

* training data, MiniLLM style (``raw.jsonl``): ``instruction``, ``input`` (may be empty),
  ``output``;
* training data, databricks-dolly-15k style: ``instruction``, ``context``, ``response``
  (``category`` becomes the example's family);
* eval sets (``valid.jsonl``): ``prompt`` (newlines written as the literal ``<n>``) and
  ``output``, a string or a list of reference strings; the Alpaca template is applied unless
  the prompt already has it.

``output`` may be a list of references in every schema; the first one is the training target.
Every error names the file and the line of the record at fault.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from dpkd_bench.data.example import Example
from dpkd_bench.data.template import build_prompt, ensure_template
from dpkd_bench.errors import DataError, hub_error, hub_offline

TRAIN_FILE = "raw.jsonl"
EVAL_FILE = "valid.jsonl"
HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
LOCAL_SUFFIXES = (".jsonl", ".json")


@dataclass(frozen=True)
class EvalSource:
    """Where a registered eval set lives: a Hub dataset repository and the file inside it.

    A local copy of the repository (``hf download REPO --repo-type dataset --local-dir DIR``)
    has the same layout, so ``DIR`` works in place of the Hub name.
    """

    hub: str
    file: str = EVAL_FILE
    limit: int = 0  # keep the first N records, as MiniLLM's eval scripts do (0 = all)
    about: str = ""


# MiniLLM's S-NI and UnNI repositories split their records by response length into
# sub-folders (0_2, 3_6/3_5, 6_10, 11_); the papers evaluate on 11_ (11 or more tokens), and
# MiniLLM's scripts cap UnNI at 10,000 examples.
EVAL_SOURCES: dict[str, EvalSource] = {
    "dolly": EvalSource("MiniLLM/dolly", about="Dolly held-out instructions"),
    "self-inst": EvalSource("MiniLLM/self-inst", about="SelfInst user-oriented instructions"),
    "vicuna": EvalSource("MiniLLM/Vicuna", about="Vicuna evaluation questions"),
    "sinst": EvalSource("MiniLLM/sinst", "11_/valid.jsonl", about="S-NI, responses of 11+ tokens"),
    "uinst": EvalSource(
        "MiniLLM/uinst",
        "11_/valid.jsonl",
        limit=10_000,
        about="UnNI, responses of 11+ tokens, first 10,000",
    ),
}
HUB_EVAL_SETS = {name: source.hub for name, source in EVAL_SOURCES.items()}

# Training schemas: (name, required fields, optional context field, response field).
SCHEMAS = (
    ("MiniLLM", ("instruction", "output"), "input", "output"),
    ("databricks-dolly-15k", ("instruction", "response"), "context", "response"),
    ("eval set", ("prompt", "output"), None, "output"),
)
SCHEMA_HELP = (
    "each record needs instruction/input/output (MiniLLM), instruction/context/response "
    "(databricks-dolly-15k) or prompt/output (eval sets)"
)


# ---- reading ------------------------------------------------------------------------------
def parse_jsonl_line(path: Path, number: int, line: str) -> dict:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        raise DataError(
            f"{path} line {number} is not valid JSON ({err.msg} at column {err.colno}); "
            "each line must hold one JSON object: fix or delete that line"
        ) from None
    if not isinstance(record, dict):
        raise DataError(
            f"{path} line {number} holds a JSON {type(record).__name__}, not an object; "
            f"{SCHEMA_HELP}"
        )
    return record


def read_records(path: Path) -> list[tuple[int, dict]]:
    """(line number, record) of every non-blank line of a JSONL file.

    A malformed line is a :class:`DataError` naming the file and the line; so is a file with
    no records at all.
    """
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as handle:
            records = [
                (number, parse_jsonl_line(path, number, line))
                for number, line in enumerate(handle, start=1)
                if line.strip()
            ]
    except UnicodeDecodeError:
        raise DataError(f"{path} is not UTF-8 text; save it as UTF-8 JSON lines") from None
    except OSError as err:
        raise DataError(f"cannot read {path} ({err.strerror or err}); check the path") from None
    if not records:
        raise DataError(f"{path} holds no records; point the recipe at a non-empty JSONL file")
    return records


# ---- records -> examples ------------------------------------------------------------------
def _schema_for(record: dict) -> tuple:
    """The schema a record means: the one with the fewest missing required fields."""
    if "prompt" in record:
        return SCHEMAS[2]
    return min(SCHEMAS, key=lambda s: sum(f not in record for f in s[1]))


def _missing_fields(record: dict, where: str) -> DataError:
    name, required, _, _ = _schema_for(record)
    missing = [f for f in required if f not in record]
    return DataError(
        f"{where}: record is missing {', '.join(repr(f) for f in missing)} "
        f"(it has {sorted(record) or 'no fields'}); {SCHEMA_HELP}; closest: {name}"
    )


def _text(record: dict, key: str, where: str, optional: bool = False) -> str:
    value = record.get(key)
    if optional and value is None:
        return ""
    if not isinstance(value, str):
        raise DataError(
            f"{where}: field '{key}' must be a string, got {type(value).__name__} "
            f"{str(value)[:40]!r}; fix that record"
        )
    if not optional and not value.strip():
        raise DataError(f"{where}: field '{key}' is empty; give it text or drop that record")
    return value


def _references(value, key: str, where: str) -> tuple[str, ...]:
    refs = [value] if isinstance(value, str) else value
    if not isinstance(refs, list) or not refs or not all(isinstance(r, str) for r in refs):
        raise DataError(
            f"{where}: field '{key}' must be a string or a non-empty list of strings, "
            f"got {type(value).__name__} {str(value)[:40]!r}; fix that record"
        )
    return tuple(refs)


def record_to_example(record: dict, where: str) -> Example:
    """Turn one record of any accepted schema into an :class:`Example`."""
    _, required, context_key, response_key = _schema_for(record)
    if any(f not in record for f in required):
        raise _missing_fields(record, where)
    if "prompt" in record:
        prompt = ensure_template(_text(record, "prompt", where).replace("<n>", "\n"))
    else:
        context = _text(record, context_key, where, optional=True)
        prompt = build_prompt(_text(record, "instruction", where), context)
    refs = _references(record[response_key], response_key, where)
    response = refs[0]
    if response_key == "output" and "response" in record:
        response = _text(record, "response", where, optional=True) or refs[0]
    rid = str(record.get("id", where))
    family = str(record.get("family") or record.get("category") or "")
    return Example(rid, prompt, response, refs, family)


def examples_from_records(records: Iterable[tuple[int, dict]], origin: str) -> list[Example]:
    return [record_to_example(r, f"{origin} line {number}") for number, r in records]


def read_examples(path: Path) -> list[Example]:
    return examples_from_records(read_records(path), str(path))


# ---- where the data is --------------------------------------------------------------------
def looks_like_hub_name(source: str) -> bool:
    """``owner/name`` that is not an existing local path and not a ``.jsonl`` file name."""
    return (
        bool(HUB_NAME.match(source))
        and not source.startswith(".")
        and not source.lower().endswith(LOCAL_SUFFIXES)
        and not Path(source).expanduser().exists()
    )


def check_source(source: str, what: str) -> None:
    """A data location must be an existing file or directory, or look like a Hub name."""
    if looks_like_hub_name(source) or Path(source).expanduser().exists():
        return
    raise DataError(
        f"{what} '{source}' does not exist: it is not a local file or directory, nor a Hub "
        "dataset name (owner/name); check the path"
    )


def _hub_file(repo_id: str, filename: str) -> Path:
    """Download one file of a Hub dataset repository (or take it from the local cache)."""
    from huggingface_hub import hf_hub_download

    try:
        return Path(
            hf_hub_download(repo_id, filename, repo_type="dataset", local_files_only=hub_offline())
        )
    except Exception as err:  # network, offline mode, missing repo or file: all the user's
        raise hub_error(
            f"file '{filename}' of Hub dataset",
            repo_id,
            err,
            "download it to a local directory and point the recipe there (data.source, or "
            "data.eval_paths.NAME for an eval set)",
            dataset=True,
        ) from None


def resolve_file(source: str, filenames: tuple[str, ...]) -> Path:
    """A local file, a local directory holding one of ``filenames``, or a Hub dataset name."""
    path = Path(source).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        for name in filenames:
            if (path / name).is_file():
                return path / name
        raise DataError(
            f"directory {path} has no {' or '.join(filenames)}; add it or give the JSONL file "
            "itself"
        )
    check_source(source, "data source")
    return _hub_file(source, filenames[0])


def load_instruction_data(source: str, dev_num: int) -> tuple[list[Example], list[Example]]:
    """Training data: the first ``dev_num`` records are validation, the rest train."""
    path = resolve_file(source, (TRAIN_FILE,))
    examples = read_examples(path)
    if len(examples) <= dev_num:
        raise DataError(
            f"{path} has {len(examples)} records, not more than data.dev_num={dev_num} (the "
            "first dev_num records are validation); lower data.dev_num so that some are left "
            "for training"
        )
    return examples[dev_num:], examples[:dev_num]


def unknown_eval_set(name: str, known: Iterable[str]) -> DataError:
    known = list(known)
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return DataError(
        f"unknown eval set '{name}'{hint}; known: {', '.join(known)}; or map a name to a local "
        f"directory, JSONL file or Hub dataset with data.eval_paths.{name}=PATH"
    )


def load_eval_set(name: str, location: str | None = None) -> list[Example]:
    """A registered eval set (dolly, self-inst, ...) or a named one at ``location``.

    ``location`` (a local directory, a JSONL file or a Hub dataset name) overrides where a
    registered set is read from; a registered set keeps its record limit either way.
    """
    entry = EVAL_SOURCES.get(name)
    if entry is None and location is None:
        raise unknown_eval_set(name, EVAL_SOURCES)
    entry = entry or EvalSource(hub=str(location))
    files = tuple(dict.fromkeys((entry.file, EVAL_FILE)))
    examples = read_examples(resolve_file(location or entry.hub, files))
    return examples[: entry.limit] if entry.limit else examples
