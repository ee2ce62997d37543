"""Error types that separate a user's mistake (exit 2) from an internal fault (exit 1)."""

from __future__ import annotations

import errno
import os
from pathlib import Path

OFFLINE_FLAGS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


class UserError(Exception):
    """Bad input from the user: reported as one ``error:`` line, exit status 2.

    The message says what is wrong, why it matters and how to fix it, on one line.
    """


class RecipeError(UserError):
    """A recipe (YAML or override) that does not fit the schema."""


class DataError(UserError):
    """A data file or dataset that cannot be used."""


def hub_offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) forbids Hub downloads."""
    return any(
        os.environ.get(flag, "").strip().lower() in ("1", "true", "yes", "on")
        for flag in OFFLINE_FLAGS
    )


def hub_error(what: str, name: str, err: Exception, fix: str, dataset: bool = False) -> UserError:
    """The one-line error for a Hub download that failed, offline mode spelled out."""
    kind = " --repo-type dataset" if dataset else ""
    error = DataError if dataset else UserError
    if hub_offline():
        return error(
            f"{what} '{name}' is not in the local Hugging Face cache and HF_HUB_OFFLINE=1 "
            f"forbids downloading it; download it once with network access "
            f"(`hf download {name}{kind}`), unset HF_HUB_OFFLINE, or {fix}"
        )
    detail = str(err).strip().splitlines()[0][:160] if str(err).strip() else ""
    return error(
        f"cannot get {what} '{name}' from the Hugging Face Hub ({type(err).__name__}"
        f"{': ' + detail if detail else ''}); check the name and your network, or {fix}"
    )


def is_hub_name(name: str) -> bool:
    """``owner/name`` or ``name`` that is no local path: the Hub is asked for it."""
    return (
        not Path(name).expanduser().exists()
        and name.count("/") <= 1
        and not name.startswith((".", "/", "~"))
        and not name.lower().endswith((".jsonl", ".json"))
    )


def load_error(what: str, name: str, err: Exception, key: str) -> UserError:
    """A failed ``from_pretrained``: a Hub name (offline mode spelled out) or a local path."""
    if is_hub_name(name):
        return hub_error(what, name, err, f"set {key} to a local directory")
    detail = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
    return UserError(f"cannot load {what} '{name}' ({detail}); check {key}")


class Terminated(KeyboardInterrupt):
    """SIGTERM reached the loop (a scheduler preempting or timing out the job); the unit's
    checkpoint was written at ``step`` first."""

    def __init__(self, step: int):
        super().__init__(f"terminated (SIGTERM) after step {step}, its checkpoint written")
        self.step = step


DISK_FULL_TEXTS = ("no space left on device", "os error 28", "storagefull", "file write failed")


def _chain(err: BaseException):
    """``err`` and the exceptions it was raised from or during, innermost last."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        yield err
        err = err.__cause__ or err.__context__


def is_disk_full(err: BaseException) -> bool:
    """Whether ``err`` (an OSError, or a library's wrapper of one: safetensors'
    SafetensorError, torch.save's "file write failed"), or an exception it came from, says
    the disk is full or over quota."""
    for link in _chain(err):
        if isinstance(link, OSError) and link.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if any(marker in str(link).lower() for marker in DISK_FULL_TEXTS):
            return True
    return False


def describe_error(err: BaseException) -> str:
    """One line naming an error's real cause: ``"no space left on device"`` (or ``"disk
    quota exceeded"``) for a full disk, whichever library reported it, else ``"<Type>: <first
    line of the message>"``."""
    if is_disk_full(err):
        quota = any(isinstance(e, OSError) and e.errno == errno.EDQUOT for e in _chain(err))
        where = next((e.filename for e in _chain(err) if getattr(e, "filename", None)), None)
        cause = "disk quota exceeded" if quota else "no space left on device"
        return cause + (f" (writing {where})" if where else "")
    first = (str(err).splitlines() or [""])[0][:300]
    return f"{type(err).__name__}: {first}" if first else type(err).__name__
