"""The results store: one run directory on disk, written atomically, read by ``report``.

Layout (see DESIGN.md, "Run directory")::

    DIR/manifest.json
    DIR/runs/<method>/seed-<k>/{config.yaml, train_log.jsonl, metrics.json, generations/,
                                scores.csv.gz}
    DIR/leaderboard.csv, DIR/leaderboard.md, DIR/report.html, DIR/plots/*.png

Every whole-file write goes through a temporary file in the same directory and ``os.replace``,
so a crash never leaves a half-written JSON file behind. This module imports no ML libraries.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import hashlib
import io
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from dpkd_bench.errors import UserError
from dpkd_bench.lock import held

MANIFEST = "manifest.json"
METRICS = "metrics.json"
TRAIN_LOG = "train_log.jsonl"
GENERATIONS = "generations"
# Per-example scores of a unit (every eval set; each example's scores averaged over the
# generation seeds): what the statistics need, small enough to check in with a report.
EXAMPLE_SCORES = "scores.csv.gz"
EXAMPLE_SCORE_FIELDS = ("eval_set", "id", "family", "rougeL", "exact_match")
SEED_PREFIX = "seed-"
REFERENCE_ROWS = ("teacher", "student_init")  # evaluated once, shown as references


def cache_root() -> Path:
    """The cache directory (``$DPKD_BENCH_CACHE``, default ``~/.cache/dpkd-bench``), created."""
    root = os.environ.get("DPKD_BENCH_CACHE") or Path.home() / ".cache" / "dpkd-bench"
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


# ---- atomic files -------------------------------------------------------------------------
def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same directory and os.replace."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically; parent directories are created."""
    atomic_write_bytes(path, text.encode("utf-8"))


def _dumps(obj: Any, indent: int | None = None) -> str:
    return json.dumps(obj, indent=indent, ensure_ascii=False)


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(Path(path), _dumps(obj, indent=2) + "\n")


def read_json(path: str | Path) -> Any:
    """Parse a JSON file; malformed content is a UserError naming the file and line."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise UserError(
            f"{path} is not valid JSON (line {err.lineno}: {err.msg}); "
            "repair or delete the file and rerun"
        ) from None


def write_jsonl(path: str | Path, records: Iterable[Any]) -> None:
    """Write one JSON value per line, atomically."""
    atomic_write_text(Path(path), "".join(_dumps(r) + "\n" for r in records))


def append_jsonl(path: str | Path, record: dict) -> None:
    """Append one record and flush (train logs: readable while a run is in progress)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(_dumps(record) + "\n")
        handle.flush()


def unit_training(run: RunDir, method: str, seed: int) -> dict:
    """A unit's metrics.json "train" record (steps, costs, settings, dev curve); {} for a unit
    without metrics yet, or one trained before the record existed."""
    path = run.unit_dir(method, seed) / METRICS
    metrics = read_json(path) if path.is_file() else None
    train = metrics.get("train") if isinstance(metrics, dict) else None
    return train if isinstance(train, dict) else {}


def read_jsonl(path: str | Path) -> list[dict]:
    """Parse a JSON-lines file (blank lines skipped); a bad line is a UserError with its number."""
    path = Path(path)
    records = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise UserError(
                    f"{path} line {number} is not valid JSON ({err.msg}); "
                    "repair or delete that line and rerun"
                ) from None
    return records


def write_example_scores(path: str | Path, rows: Iterable[dict]) -> None:
    """Write per-example scores (EXAMPLE_SCORE_FIELDS) as gzip-compressed CSV, atomically.

    Floats are written with ``repr`` (read back to the same value) and the gzip header holds
    no time stamp, so the same scores always give the same bytes.
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(EXAMPLE_SCORE_FIELDS)
    for row in rows:
        writer.writerow(
            [row["eval_set"], row["id"], row.get("family") or ""]
            + [repr(float(row[key])) for key in EXAMPLE_SCORE_FIELDS[3:]]
        )
    atomic_write_bytes(Path(path), gzip.compress(buffer.getvalue().encode("utf-8"), mtime=0))


def read_example_scores(path: str | Path) -> list[dict]:
    """The rows :func:`write_example_scores` wrote (scores as floats); a damaged file is a
    UserError naming it."""
    path = Path(path)
    try:
        text = gzip.decompress(path.read_bytes()).decode("utf-8")
        rows = list(csv.DictReader(io.StringIO(text)))
        for row in rows:
            for key in EXAMPLE_SCORE_FIELDS[3:]:
                row[key] = float(row[key])
    except (OSError, EOFError, UnicodeDecodeError, KeyError, TypeError, ValueError) as err:
        raise UserError(
            f"{path} is not a readable per-example score file ({type(err).__name__}: {err}); "
            "restore it from the run directory, or delete it to fall back to the generation files"
        ) from None
    return rows


def same_identity(a: object, b: object) -> bool:
    """Whether two recorded identities agree: equal, or per-seed mappings that agree on the
    seeds both hold."""
    if isinstance(a, dict) and isinstance(b, dict):
        return all(a[k] == b[k] for k in set(a) & set(b))
    return a == b


# Keys added to the recipe since runs were first recorded whose default is not what runs made
# before them did: a manifest whose recipe lacks one was made with the value here.
LEGACY_VALUES = {"student": {"init_per_seed": False}}


def with_legacy_values(recipe: dict) -> dict:
    """A manifest's recipe with LEGACY_VALUES filled in where it lacks them (a copy)."""
    filled = json.loads(json.dumps(recipe))
    for section, values in LEGACY_VALUES.items():
        if isinstance(filled.get(section), dict):
            for key, value in values.items():
                filled[section].setdefault(key, value)
    return filled


# ---- run directory ------------------------------------------------------------------------
def is_safe_name(name: object) -> bool:
    """True when ``name`` stays one directory level down: non-empty, no leading '.', and no
    '/', '\\', '..' or NUL (sweep names like ``dpkd[beta=0.05,rkl_weight=0]`` are fine)."""
    return (
        isinstance(name, str)
        and bool(name)
        and not name.startswith(".")
        and not any(s in name for s in ("/", "\\", "..", "\0"))
    )


def check_method_name(method: str) -> str:
    """Return ``method`` if it can name a directory under runs/, else raise UserError."""
    if not is_safe_name(method):
        raise UserError(
            f"method name {method!r} cannot be used as a run directory name; it must be "
            "non-empty, not start with '.', and contain no '/', '\\' or '..'"
        )
    return method


def unit_key(method: str, seed: int) -> str:
    """The manifest key of one (method, seed) unit: ``<method>/seed-<k>``."""
    return f"{method}/{SEED_PREFIX}{seed}"


def parse_seed_dir(name: str) -> int | None:
    """``seed-3`` -> 3; anything else -> None."""
    if not name.startswith(SEED_PREFIX):
        return None
    try:
        return int(name[len(SEED_PREFIX) :])
    except ValueError:
        return None


class RunDir:
    """Paths and manifest of one run directory (the ``--out`` of ``dpkd-bench run``)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.manifest_path = self.root / MANIFEST
        self.runs_dir = self.root / "runs"
        self.plots_dir = self.root / "plots"

    def unit_dir(self, method: str, seed: int) -> Path:
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise UserError(f"seed {seed!r} is not an integer; seeds are integers, e.g. 1")
        return self.runs_dir / check_method_name(method) / f"{SEED_PREFIX}{seed}"

    def is_run(self) -> bool:
        return self.manifest_path.is_file()

    def load_manifest(self) -> dict:
        if not self.root.exists():
            raise UserError(
                f"{self.root} does not exist; pass the --out directory of a `dpkd-bench run`"
            )
        if not self.is_run():
            raise UserError(
                f"{self.root} is not a dpkd-bench run directory (no {MANIFEST}); "
                "pass the --out directory of a `dpkd-bench run`"
            )
        manifest = read_json(self.manifest_path)
        if not isinstance(manifest, dict):
            raise UserError(
                f"{self.manifest_path} does not hold a JSON object; it is not a dpkd-bench "
                "manifest (rerun `dpkd-bench run` into a fresh --out directory)"
            )
        return manifest

    def save_manifest(self, manifest: dict) -> None:
        write_json(self.manifest_path, manifest)

    @contextlib.contextmanager
    def editing_manifest(self) -> Iterator[dict]:
        """The manifest to change in place, saved when the block ends; one writer at a time
        (a launcher's driver and workers all write it)."""
        with held(self.root):
            manifest = self.load_manifest()
            yield manifest
            self.save_manifest(manifest)

    def update_unit(self, method: str, seed: int, **fields) -> None:
        """Merge ``fields`` into ``manifest["units"]["<method>/seed-<k>"]``."""
        self.unit_dir(method, seed)  # validates the name and seed
        with self.editing_manifest() as manifest:
            units = manifest.setdefault("units", {})
            key = unit_key(method, seed)
            units[key] = {**units.get(key, {}), **fields}

    def completed_units(self) -> list[tuple[str, int]]:
        """(method, seed) of every unit directory holding metrics.json, sorted."""
        if not self.runs_dir.is_dir():
            return []
        found = []
        for metrics in self.runs_dir.glob(f"*/{SEED_PREFIX}*/{METRICS}"):
            method, seed = metrics.parent.parent.name, parse_seed_dir(metrics.parent.name)
            if seed is not None and is_safe_name(method) and metrics.is_file():
                found.append((method, seed))
        return sorted(found)
