"""Checksums of cache entries: a damaged entry is found on load and rebuilt, never used.

Every entry the toolkit writes under the cache (``$DPKD_BENCH_CACHE``: the teacher trained or
shipped here, the tokenizer trained here, the teacher samples, the teacher-logit cache) is
*sealed* once written: :func:`seal` records the SHA-256 of each of its files (a directory's
in ``.sha256sums.json`` inside it, a file's in ``<file>.sha256`` beside it). :func:`intact`
checks them before the entry is read. A damaged entry (a file truncated, changed or missing)
is named in one warning line and removed, and the caller builds it again; when it cannot be
removed, one ``error:`` line names the path to delete. An entry written before checksums
existed (no seal) is read as it is, and the caller treats a failure to read it as damage.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from dpkd_bench.console import warn
from dpkd_bench.errors import UserError
from dpkd_bench.results import atomic_write_text, file_sha256

DIR_SEAL = ".sha256sums.json"
FILE_SEAL_SUFFIX = ".sha256"
NOT_SEALED = ("README.md",)  # a model card, rewritten by every run that uses the entry


def _file_seal(path: Path) -> Path:
    return path.with_name(path.name + FILE_SEAL_SUFFIX)


def _files(root: Path) -> list[Path]:
    """The files a seal covers: every file but the seal, model cards and dotfiles (temporary
    files of a write in progress)."""
    return sorted(
        p
        for p in root.rglob("*")
        if p.is_file() and p.name not in NOT_SEALED and not p.name.startswith(".")
    )


def seal(path: str | Path) -> None:
    """Record the SHA-256 of the entry ``path`` (a file or a directory)."""
    path = Path(path)
    if path.is_dir():
        sums = {str(p.relative_to(path)): file_sha256(p) for p in _files(path)}
        atomic_write_text(path / DIR_SEAL, json.dumps(sums, indent=1, sort_keys=True) + "\n")
    else:
        atomic_write_text(_file_seal(path), file_sha256(path) + "\n")


def is_sealed(path: str | Path) -> bool:
    path = Path(path)
    return (path / DIR_SEAL).is_file() if path.is_dir() else _file_seal(path).is_file()


def damage(path: str | Path) -> str | None:
    """What is wrong with the sealed entry ``path`` (None: intact, or not sealed)."""
    path = Path(path)
    if path.is_dir():
        if not (path / DIR_SEAL).is_file():
            return None
        try:
            sums = json.loads((path / DIR_SEAL).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return f"its checksum file {DIR_SEAL} is unreadable"
        for name, expected in sums.items():
            file = path / name
            if not file.is_file():
                return f"{name} is missing"
            if file_sha256(file) != expected:
                return f"{name} does not match its checksum"
        return None
    seal_file = _file_seal(path)
    if not seal_file.is_file():
        return None
    if not path.is_file():
        return "the file is missing"
    expected = seal_file.read_text(encoding="utf-8").strip()
    return None if file_sha256(path) == expected else "it does not match its checksum"


def discard(path: str | Path, what: str, problem: str) -> None:
    """Warn that the entry ``path`` is damaged and remove it (and its seal) so that it is
    rebuilt; a UserError naming the path when it cannot be removed."""
    path = Path(path)
    warn(f"{what} in the cache at {path} is damaged ({problem}); rebuilding it")
    try:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
            _file_seal(path).unlink(missing_ok=True)
    except OSError as err:
        raise UserError(
            f"{what} in the cache at {path} is damaged ({problem}) and cannot be removed "
            f"({err.strerror or err}); delete {path} and rerun"
        ) from None


def intact(path: str | Path, what: str) -> bool:
    """Whether the entry ``path`` exists and is intact. A damaged one is discarded (warning
    line) and reported as absent, for the caller to rebuild."""
    path = Path(path)
    if not path.exists():
        return False
    problem = damage(path)
    if problem is None:
        return True
    discard(path, what, problem)
    return False
