"""One writer per run directory, and per unit: lock files that work on shared file systems.

``DIR/.lock`` is created exclusively (``O_CREAT | O_EXCL``) by the run that writes ``DIR`` and
names its holder: host, process id, start time. While the run lives, a thread touches it every
``HEARTBEAT_S`` seconds. A second writer gets a one-line error naming the holder. A lock whose
holder is gone is taken over: on the holder's host when its process no longer exists, from any
host when its heartbeat is older than ``STALE_S`` seconds (a killed job on another machine).

A launcher's worker holds its unit directory's ``.lock`` the same way (:func:`run_lock` with
``wait_s``: a retried unit waits for the lock of its dead first attempt to go stale), and every
change to the manifest is made under ``DIR/.manifest.lock`` (:func:`held`), since the driver and
the workers all write it.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from dpkd_bench.errors import UserError

LOCK = ".lock"
MANIFEST_LOCK = ".manifest.lock"
HEARTBEAT_S = 30.0
STALE_S = 120.0
POLL_S = 0.05


def _me() -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid(), "started": time.time()}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _stale(path: Path, holder: dict) -> bool:
    """Whether the lock at ``path`` (held by ``holder``) belongs to a holder that is gone."""
    if holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int):
        return not _alive(holder["pid"])
    try:
        return time.time() - path.stat().st_mtime > STALE_S
    except FileNotFoundError:
        return True


def holder(path: Path) -> dict:
    """Who holds the lock file ``path`` (host, pid, started); {} when nobody does."""
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def _create(path: Path, holder: dict) -> bool:
    try:
        handle = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(handle, "w", encoding="utf-8") as out:
        json.dump(holder, out)
    return True


def acquire(root: Path, name: str = LOCK, wait_s: float = 0.0) -> dict:
    """Take the lock ``name`` of directory ``root`` (created if needed), waiting up to
    ``wait_s`` seconds for a live holder to let go; then a UserError naming the holder."""
    root.mkdir(parents=True, exist_ok=True)
    path, mine, deadline = root / name, _me(), time.time() + wait_s
    while True:
        for _ in range(3):  # a stale lock taken over by someone else between two looks
            if _create(path, mine):
                return mine
            current = holder(path)
            if not _stale(path, current):
                break
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        else:
            raise UserError(f"cannot take the lock {path}: other runs keep taking it; retry")
        if time.time() >= deadline:
            try:
                age = time.time() - path.stat().st_mtime
            except FileNotFoundError:
                continue  # let go just now
            raise UserError(
                f"{root} is being written by another run (host {current.get('host', '?')}, pid "
                f"{current.get('pid', '?')}, alive {age:.0f}s ago); wait for it to finish, or "
                "choose another --out"
            )
        time.sleep(POLL_S)


def release(root: Path, mine: dict, name: str = LOCK) -> None:
    """Remove the lock if it is still this holder's."""
    path = root / name
    if holder(path) == mine:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


@contextlib.contextmanager
def run_lock(root: Path, enabled: bool = True, wait_s: float = 0.0) -> Iterator[None]:
    """Hold the lock of ``root`` while the block runs, with its heartbeat."""
    if not enabled:
        yield
        return
    root = Path(root)
    mine = acquire(root, wait_s=wait_s)
    done = threading.Event()

    def beat() -> None:
        while not done.wait(HEARTBEAT_S):
            with contextlib.suppress(OSError):
                os.utime(root / LOCK)

    thread = threading.Thread(target=beat, name="dpkd-bench-lock", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
        release(root, mine)


@contextlib.contextmanager
def held(root: Path, name: str = MANIFEST_LOCK, wait_s: float = STALE_S + HEARTBEAT_S):
    """Hold the short-lived lock ``name`` of ``root`` (no heartbeat) while the block runs."""
    root = Path(root)
    mine = acquire(root, name, wait_s)
    try:
        yield
    finally:
        release(root, mine, name)
