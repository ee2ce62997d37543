"""The pre-training corpus behind the language-modelling term of MiniLLM, DistiLLM and DPKD.

Besides their distillation loss on instruction data, the MiniLLM, DistiLLM and DPKD training
scripts can add a plain next-token loss on a pre-training corpus (OpenWebText in their
scripts), which keeps the student a general language model while it is pulled towards the
teacher on instructions. Their data scripts turn that corpus into fixed-length pieces: every
document tokenised, an EOS after each, all of them joined and cut into chunks of
``max_length`` tokens, the last partial chunk dropped. :func:`pretrain_chunks` does the same
for any of these sources (``data.pretrain_source``):

* ``"synthetic"``: plain prose of the synthetic suite's facts (``synthetic_prose.pretrain_texts``);
* a local ``.txt`` file (documents separated by blank lines), a ``.jsonl`` file (the text in
  ``data.pretrain_text_field`` of every record) or a directory of them, read in sorted order;
* a Hub dataset name (``owner/name``, e.g. ``Skylion007/openwebtext``), streamed with
  ``datasets`` so that reading stops, download included, once enough chunks exist.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from tqdm.auto import tqdm

from dpkd_bench import console
from dpkd_bench.data import synthetic_prose
from dpkd_bench.data.loaders import looks_like_hub_name, parse_jsonl_line
from dpkd_bench.errors import DataError, UserError, hub_error

SYNTHETIC = "synthetic"
SYNTHETIC_DOCS = 20_000  # documents in the synthetic corpus (~1M tokens with a suite BPE)
TEXT_SUFFIXES = (".txt", ".jsonl")


# ---- local files --------------------------------------------------------------------------
def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, line) of a UTF-8 text file; an unreadable file is a :class:`DataError`."""
    try:
        with open(path, encoding="utf-8") as handle:
            yield from enumerate(handle, start=1)
    except UnicodeDecodeError:
        raise DataError(f"{path} is not UTF-8 text; save it as UTF-8") from None
    except OSError as err:
        raise DataError(f"cannot read {path} ({err.strerror or err}); check the path") from None


def _txt_documents(path: Path) -> Iterator[str]:
    """The blank-line separated documents of a text file."""
    lines: list[str] = []
    for _, line in _lines(path):
        if line.strip():
            lines.append(line)
        elif lines:
            yield "".join(lines).strip()
            lines = []
    if lines:
        yield "".join(lines).strip()


def _record_text(record: object, text_field: str, where: str) -> str:
    if not isinstance(record, dict):
        raise DataError(
            f"{where} holds a JSON {type(record).__name__}, not an object; each record must "
            f"be an object with its text in '{text_field}'"
        )
    text = record.get(text_field)
    if not isinstance(text, str):
        found = f"a {type(text).__name__}" if text_field in record else "missing"
        raise DataError(
            f"{where}: text field '{text_field}' is {found} (the record has fields "
            f"{sorted(record)}); set data.pretrain_text_field to the field holding the text"
        )
    return text


def _jsonl_documents(path: Path, text_field: str) -> Iterator[str]:
    for number, line in _lines(path):
        if not line.strip():
            continue
        record = parse_jsonl_line(path, number, line)
        yield _record_text(record, text_field, f"{path} line {number}")


def _file_documents(path: Path, text_field: str) -> Iterator[str]:
    if path.suffix.lower() == ".jsonl":
        return _jsonl_documents(path, text_field)
    return _txt_documents(path)


def _local_files(path: Path) -> list[Path]:
    """The file itself, or every .txt and .jsonl file under a directory, sorted."""
    if path.is_dir():
        files = sorted(
            p for p in path.rglob("*") if p.suffix.lower() in TEXT_SUFFIXES and p.is_file()
        )
        if not files:
            raise DataError(
                f"directory {path} holds no .txt or .jsonl file; put the corpus there or point "
                "data.pretrain_source at a file"
            )
        return files
    if path.suffix.lower() not in TEXT_SUFFIXES:
        raise DataError(
            f"pre-training corpus {path} is neither a .txt nor a .jsonl file; convert it to "
            "plain text (documents separated by blank lines) or JSON lines"
        )
    return [path]


# ---- the Hub ------------------------------------------------------------------------------
def _is_hub_source(source: str) -> bool:
    """``owner/name`` that names no local path and no .txt/.jsonl file."""
    return looks_like_hub_name(source) and Path(source).suffix.lower() not in TEXT_SUFFIXES


def _hub_records(source: str) -> Iterator[object]:
    from datasets import load_dataset

    try:
        yield from load_dataset(source, split="train", streaming=True)
    except Exception as err:  # network, offline mode, missing repo or split: all the user's
        raise hub_error(
            "pre-training dataset",
            source,
            err,
            "point data.pretrain_source at a local .txt or .jsonl copy",
            dataset=True,
        ) from None


def _hub_documents(source: str, text_field: str) -> Iterator[str]:
    for number, record in enumerate(_hub_records(source), start=1):
        yield _record_text(record, text_field, f"Hub dataset '{source}' record {number}")


# ---- documents and chunks -----------------------------------------------------------------
def _documents(source: str, text_field: str, seed: int, n_docs: int) -> Iterator[str]:
    if source == SYNTHETIC:
        return iter(synthetic_prose.pretrain_texts(seed, n_docs))
    path = Path(source).expanduser()
    if path.exists():
        files = _local_files(path)
        return (doc for file in files for doc in _file_documents(file, text_field))
    if _is_hub_source(source):
        return _hub_documents(source, text_field)
    raise DataError(
        f"pre-training corpus '{source}' does not exist: it is not '{SYNTHETIC}', a local .txt "
        "or .jsonl file or directory, nor a Hub dataset name (owner/name); check "
        "data.pretrain_source"
    )


def pretrain_documents(
    source: str, *, text_field: str = "text", seed: int = 0, n_docs: int = SYNTHETIC_DOCS
) -> Iterator[str]:
    """The non-blank documents of a pre-training corpus, in order, read lazily.

    ``seed`` and ``n_docs`` shape the synthetic corpus only. A source that does not exist is a
    :class:`DataError` at once; a bad record is one when it is reached, naming file and line.
    """
    documents = _documents(source, text_field, seed, n_docs)
    return (doc for doc in documents if doc.strip())


def _eos_id(tokenizer) -> int:
    if tokenizer.eos_token_id is None:
        raise UserError(
            f"tokenizer {type(tokenizer).__name__} has no EOS token, which separates the "
            "documents of the pre-training corpus; use a tokenizer with one (GPT-2's has)"
        )
    return tokenizer.eos_token_id


def pretrain_chunks(
    source: str,
    tokenizer,
    *,
    max_length: int,
    max_chunks: int,
    text_field: str = "text",
    seed: int = 0,
) -> list[list[int]]:
    """Up to ``max_chunks`` chunks of exactly ``max_length`` token ids from a corpus.

    Documents are tokenised without special tokens, each followed by EOS, joined and cut; the
    last partial chunk is dropped and reading stops once ``max_chunks`` chunks exist. A
    corpus too short for one chunk is a :class:`DataError`.
    """
    eos = _eos_id(tokenizer)
    # every document has a token, so this many synthetic ones are enough (a prefix of the rest)
    n_docs = min(SYNTHETIC_DOCS, max_chunks * max_length)
    documents = pretrain_documents(source, text_field=text_field, seed=seed, n_docs=n_docs)
    chunks: list[list[int]] = []
    tokens: list[int] = []
    with tqdm(
        total=max_chunks,
        desc=f"reading {source}",
        unit="chunk",
        leave=False,
        disable=not _is_hub_source(source) or not console.bars(),
    ) as bar:
        for document in documents:
            tokens += tokenizer.encode(document, add_special_tokens=False) + [eos]
            while len(tokens) >= max_length and len(chunks) < max_chunks:
                chunks.append(tokens[:max_length])
                tokens = tokens[max_length:]
                bar.update()
            if len(chunks) == max_chunks:
                break
    if not chunks:
        raise DataError(
            f"pre-training corpus '{source}' gives no chunk of {max_length} tokens (it holds "
            f"{len(tokens)} tokens); give a larger corpus or lower data.max_length"
        )
    return chunks
