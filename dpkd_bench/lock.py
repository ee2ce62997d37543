"""One writer per run directory: a lock file that works on shared file systems.

``DIR/.lock`` is created exclusively (``O_CREAT | O_EXCL``) by the run that writes ``DIR`` and
names its holder: host, process id, start time. While the run lives, a thread touches it every
``HEARTBEAT_S`` seconds. A second writer gets a one-line error naming the holder. A lock whose
holder is gone is taken over: on the holder's host when its process no longer exists, from any
host when its heartbeat is older than ``STALE_S`` seconds (a killed job on another machine).
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
HEARTBEAT_S = 30.0
STALE_S = 120.0


def _holder() -> dict:
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


def _read(path: Path) -> dict:
    try:
        holder = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


def _create(path: Path, holder: dict) -> bool:
    try:
        handle = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(handle, "w", encoding="utf-8") as out:
        json.dump(holder, out)
    return True


def acquire(root: Path) -> dict:
    """Take the lock of run directory ``root`` (created if needed); a UserError naming the
    holder when another live writer has it."""
    root.mkdir(parents=True, exist_ok=True)
    path, mine = root / LOCK, _holder()
    for _ in range(3):  # a stale lock taken over by someone else between two looks: look again
        if _create(path, mine):
            return mine
        holder = _read(path)
        if not _stale(path, holder):
            age = time.time() - path.stat().st_mtime
            raise UserError(
                f"{root} is being written by another run (host {holder.get('host', '?')}, pid "
                f"{holder.get('pid', '?')}, alive {age:.0f}s ago); wait for it to finish, or "
                "choose another --out"
            )
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    raise UserError(f"cannot take the lock {path}: other runs keep taking it; retry")


def release(root: Path, mine: dict) -> None:
    """Remove the lock if it is still this holder's."""
    path = root / LOCK
    if _read(path) == mine:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


@contextlib.contextmanager
def run_lock(root: Path, enabled: bool = True) -> Iterator[None]:
    """Hold the lock of ``root`` while the block runs, with its heartbeat."""
    if not enabled:
        yield
        return
    root = Path(root)
    mine = acquire(root)
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
