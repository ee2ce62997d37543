"""Resumable training checkpoints, and directories published atomically.

A unit's checkpoint (``runs/<method>/seed-<k>/checkpoint/``) holds everything its training needs
to continue exactly where it stopped::

    model.safetensors   the student's weights
    state.pt            optimiser, LR schedule, RNG states (torch CPU and CUDA, python ``random``,
                        numpy, the on-policy sampling generator), data position, method state
                        and the loop's counters; read back with ``torch.load(weights_only=True)``
    meta.json           {"format": 1, "step": k} (and "processes": N when N > 1)
    rank-<k>.pt         several processes only: process k's (k >= 1) own RNG states and method
                        state (its on-policy generator, its replay buffer); state.pt holds
                        process 0's. Weights, optimiser, schedule and data position are the
                        same on every process and are saved once, by the main process.

A checkpoint is resumed by the same number of processes that wrote it (else a ``DataError``).
Writing one keeps the one it replaces as ``.checkpoint.previous``: a checkpoint whose files
cannot be read (truncated, corrupted) is named in a one-line warning and skipped, and the unit
continues from the previous one, or from its start when none is readable.

Every directory here (checkpoints, ``student/``, ``student_init/``, cached teachers) is
published atomically: written under a temporary name in the same parent, then renamed into
place; the directory it replaces is first renamed to ``.<name>.old`` and deleted afterwards. A
kill at any moment leaves the new directory or the previous one readable (``readable_dir``).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, load_model, save_model

from dpkd_bench.errors import DataError
from dpkd_bench.results import atomic_write_text, write_json

FORMAT = 1
CHECKPOINT = "checkpoint"
WEIGHTS = "model.safetensors"
STATE = "state.pt"
META = "meta.json"


# ---- atomic directories -------------------------------------------------------------------
def _previous(path: Path) -> Path:
    return path.with_name(f".{path.name}.old")


def _fsync_tree(root: Path) -> None:
    for file in root.rglob("*"):
        if file.is_file():
            with open(file, "rb") as handle:
                os.fsync(handle.fileno())


def kept_dir(path: Path) -> Path:
    """Where ``publish_dir(path, ..., keep=True)`` keeps the directory it replaced."""
    return path.with_name(f".{path.name}.previous")


def publish_dir(path: Path, write: Callable[[Path], None], keep: bool = False) -> Path:
    """Create directory ``path`` atomically: ``write(tmp)`` fills a temporary sibling first.
    With ``keep``, the directory it replaces is kept as ``kept_dir(path)``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.tmp-"))
    try:
        os.chmod(tmp, 0o755)
        write(tmp)
        _fsync_tree(tmp)
        previous = _previous(path)
        if path.exists():
            shutil.rmtree(previous, ignore_errors=True)
            os.replace(path, previous)
        os.replace(tmp, path)
        if keep and previous.exists():
            shutil.rmtree(kept_dir(path), ignore_errors=True)
            os.replace(previous, kept_dir(path))
        shutil.rmtree(previous, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def readable_dir(path: Path, marker: str) -> Path | None:
    """``path``, or the copy it was replacing when a kill interrupted ``publish_dir``, if it
    holds ``marker``; None when neither does."""
    path = Path(path)
    for candidate in (path, _previous(path)):
        if (candidate / marker).is_file():
            return candidate
    return None


def remove_unfinished(parent: Path) -> None:
    """Delete the temporary directories that a killed ``publish_dir`` left in ``parent``."""
    for tmp in Path(parent).glob(".*.tmp-*"):
        shutil.rmtree(tmp, ignore_errors=True)


def remove_dir(path: Path) -> None:
    """Delete a published directory and the previous copies it may have left."""
    for candidate in (Path(path), _previous(Path(path)), kept_dir(Path(path))):
        shutil.rmtree(candidate, ignore_errors=True)


# ---- random number generators -------------------------------------------------------------
def rng_states(generator: torch.Generator) -> dict[str, Any]:
    """Every RNG the training loop may draw from, as plain data and tensors."""
    name, keys, pos, has_gauss, gauss = np.random.get_state(legacy=True)
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": random.getstate(),
        "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(gauss)],
        "generator": generator.get_state(),
    }


def set_rng_states(states: dict[str, Any], generator: torch.Generator) -> None:
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    version, internal, gauss_next = states["python"]
    random.setstate((version, tuple(internal), gauss_next))
    name, keys, pos, has_gauss, gauss = states["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    generator.set_state(states["generator"])


# ---- checkpoints --------------------------------------------------------------------------
@dataclass
class Trainables:
    """What a checkpoint restores: each part but the model and the generator has
    ``state_dict()`` / ``load_state_dict()``; ``model`` is the unwrapped student."""

    model: torch.nn.Module
    optimizer: Any
    scheduler: Any
    stream: Any
    method: Any
    generator: torch.Generator
    pretrain: Any = None  # the pre-training corpus's batch stream, when the unit has one
    dev: Any = None  # the dev curve and best weights (dpkd_bench.dev.DevTracker), when validating


def rank_state(parts: Trainables) -> dict[str, Any]:
    """What differs between processes: the RNG states and the method's own state."""
    return {"rng": rng_states(parts.generator), "method": parts.method.state_dict()}


def _rank_file(rank: int) -> str:
    return f"rank-{rank}.pt"


def save_checkpoint(
    path: Path,
    parts: Trainables,
    progress: dict[str, Any],
    other_ranks: list[dict[str, Any]] | None = None,
) -> None:
    """Write the checkpoint of ``parts`` at ``progress["step"]``, replacing the previous one.

    ``other_ranks``: with several processes, the :func:`rank_state` of processes 1..N-1, in
    order (this one, the main process, is process 0).
    """
    others = other_ranks or []
    meta = {"format": FORMAT, "step": progress["step"]}
    if others:
        meta["processes"] = len(others) + 1
    state = {
        "progress": progress,
        "optimizer": parts.optimizer.state_dict(),
        "scheduler": parts.scheduler.state_dict(),
        "stream": parts.stream.state_dict(),
        **({"pretrain": parts.pretrain.state_dict()} if parts.pretrain is not None else {}),
        **({"dev": parts.dev.state_dict()} if parts.dev is not None else {}),
        "method": parts.method.state_dict(),
        "rng": rng_states(parts.generator),
    }

    def write(tmp: Path) -> None:
        save_model(parts.model, str(tmp / WEIGHTS))
        torch.save(state, tmp / STATE)
        for rank, other in enumerate(others, start=1):
            torch.save(other, tmp / _rank_file(rank))
        write_json(tmp / META, meta)

    publish_dir(path, write, keep=True)


_WARNED: set[Path] = set()


def _read(found: Path, rank: int) -> tuple[dict, dict, dict]:
    """meta.json, state.pt and this process's own state of the checkpoint in ``found``; the
    weights are parsed too. Raises whatever a damaged file raises."""
    meta = json.loads((found / META).read_text(encoding="utf-8"))
    int(meta["step"])
    load_file(found / WEIGHTS)  # every tensor, so that a truncated file fails here
    state = torch.load(found / STATE, map_location="cpu", weights_only=True)
    own = state
    if rank > 0:
        own = torch.load(found / _rank_file(rank), map_location="cpu", weights_only=True)
    return meta, state, own


def usable_checkpoint(path: Path, rank: int = 0) -> tuple[Path, dict, dict, dict] | None:
    """The newest readable checkpoint of ``path`` (the one there, the one an interrupted write
    was replacing, the previous one kept), with its meta, state and this process's state; a
    damaged one is named in a one-line warning (once) and skipped. None: none is readable."""
    path = Path(path)
    for candidate in (path, _previous(path), kept_dir(path)):
        if not (candidate / META).is_file():
            continue
        try:
            return (candidate, *_read(candidate, rank))
        except Exception as err:  # a damaged file raises anything: decode, unpickle, I/O
            if candidate not in _WARNED:
                _WARNED.add(candidate)
                reason = " ".join(str(err).split())[:160]
                print(
                    f"warning: checkpoint {candidate} cannot be read ({type(err).__name__}: "
                    f"{reason}); skipping it",
                    file=sys.stderr,
                )
    return None


def checkpoint_step(path: Path) -> int | None:
    """The step of the newest readable checkpoint at ``path``, or None when there is none."""
    found = usable_checkpoint(path)
    return None if found is None else int(found[1]["step"])


def load_checkpoint(
    path: Path, parts: Trainables, rank: int = 0, processes: int = 1
) -> dict[str, Any] | None:
    """Restore ``parts`` from the newest readable checkpoint at ``path``; return its progress
    (None: none).

    ``rank`` of ``processes``: which process this is; process k >= 1 takes its RNG and method
    state from its own ``rank-<k>.pt``.
    """
    usable = usable_checkpoint(path, rank)
    if usable is None:
        return None
    found, meta, state, own = usable
    if meta.get("format") != FORMAT:
        raise DataError(
            f"checkpoint {found} has format {meta.get('format')}, this version reads {FORMAT}; "
            f"delete {found} to restart that unit from its beginning"
        )
    written_by = int(meta.get("processes", 1))
    if written_by != processes:
        raise DataError(
            f"checkpoint {found} was written by {written_by} process(es), this run has "
            f"{processes}; resume with {written_by}, or delete {found} to restart that unit"
        )
    device = next(parts.model.parameters()).device
    load_model(parts.model, found / WEIGHTS, device=str(device))
    parts.optimizer.load_state_dict(state["optimizer"])
    parts.scheduler.load_state_dict(state["scheduler"])
    parts.stream.load_state_dict(state["stream"])
    if parts.pretrain is not None and "pretrain" in state:
        parts.pretrain.load_state_dict(state["pretrain"])
    if parts.dev is not None and "dev" in state:
        parts.dev.load_state_dict(state["dev"])
    parts.method.load_state_dict(own["method"])
    set_rng_states(own["rng"], parts.generator)
    return state["progress"]


def trim_log(path: Path, step: int) -> None:
    """Keep a train log's records up to ``step`` (and drop a line cut short by a kill)."""
    path = Path(path)
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and record.get("step", 0) <= step:
            kept.append(line + "\n")
    atomic_write_text(path, "".join(kept))
