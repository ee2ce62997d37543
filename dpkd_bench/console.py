"""What a run prints on stderr, and how.

Progress lines (``[dpkd-bench] ...``, :func:`log`) go to stderr from the main process. On a
terminal, long work shows tqdm bars; when stderr is a file or a pipe (a cluster job's log, CI),
the bars are off and the training loop prints one line per logged step instead (step, loss,
it/s, time left): a file then holds what a reader wants, not carriage returns. ``--quiet``
(:func:`set_quiet`) leaves only warnings and errors.
"""

from __future__ import annotations

import os
import sys

_quiet = False
_set_tqdm = False  # whether TQDM_DISABLE is this module's doing


def set_quiet(quiet: bool) -> None:
    """Silence progress lines and bars (``--quiet``); warnings and errors still print."""
    global _quiet, _set_tqdm
    _quiet = quiet
    if quiet and not os.environ.get("TQDM_DISABLE"):
        os.environ["TQDM_DISABLE"], _set_tqdm = "1", True
    elif not quiet and _set_tqdm:
        del os.environ["TQDM_DISABLE"]
        _set_tqdm = False


def no_bars_off_terminal() -> None:
    """Turn tqdm's bars off (``TQDM_DISABLE``) when stderr is no terminal: a file would hold
    their carriage returns."""
    if not sys.stderr.isatty():
        os.environ.setdefault("TQDM_DISABLE", "1")


def bars() -> bool:
    """Whether progress shows as tqdm bars: stderr is a terminal and the run is not quiet."""
    return not _quiet and sys.stderr.isatty() and not os.environ.get("TQDM_DISABLE")


def lines() -> bool:
    """Whether the training loop prints a progress line per logged step (no bars, not quiet)."""
    return not _quiet and not bars()


def log(message: str) -> None:
    """One progress line on stderr (from the main process only, when there are several)."""
    if _quiet:
        return
    dist = sys.modules.get("torch.distributed")  # loaded by a run; `ls` needs no torch
    if dist is not None and dist.is_initialized() and dist.get_rank() != 0:
        return
    print(f"[dpkd-bench] {message}", file=sys.stderr, flush=True)


def clock(seconds: float) -> str:
    """``4m05s``, or ``1h02m`` from an hour."""
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes // 60}h{minutes % 60:02d}m" if minutes >= 60 else f"{minutes}m{secs:02d}s"
