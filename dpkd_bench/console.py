"""What a run prints on stderr, and how.

Progress lines (``[dpkd-bench] ...``, :func:`log`) go to stderr from the main process. On a
terminal, long work shows tqdm bars; when stderr is a file or a pipe (a cluster job's log, CI),
the bars are off (:func:`bars`, asked by every bar of the package; :func:`library_bars` for
those of transformers, huggingface_hub and datasets) and the training loop prints one line per
logged step instead (step, loss, it/s, time left): a file then holds what a reader wants, not
carriage returns. ``--quiet`` (:func:`set_quiet`) leaves only warnings and errors.
"""

from __future__ import annotations

import os
import sys

_quiet = False


def set_quiet(quiet: bool) -> None:
    """Silence progress lines and bars (``--quiet``); warnings and errors still print."""
    global _quiet
    _quiet = quiet


def bars() -> bool:
    """Whether progress shows as tqdm bars: stderr is a terminal, the run is not quiet and
    ``TQDM_DISABLE`` is not set."""
    return not _quiet and sys.stderr.isatty() and not os.environ.get("TQDM_DISABLE")


def lines() -> bool:
    """Whether the training loop prints a progress line per logged step (no bars, not quiet)."""
    return not _quiet and not bars()


def library_bars() -> None:
    """Turn the progress bars of transformers, huggingface_hub and datasets (downloads, model
    shards) off when this run shows none."""
    if bars():
        return
    import datasets
    import huggingface_hub.utils
    import transformers

    transformers.utils.logging.disable_progress_bar()
    huggingface_hub.utils.disable_progress_bars()
    datasets.disable_progress_bars()


def log(message: str) -> None:
    """One progress line on stderr (from the main process only, when there are several)."""
    if _quiet:
        return
    dist = sys.modules.get("torch.distributed")  # loaded by a run; `ls` needs no torch
    if dist is not None and dist.is_initialized() and dist.get_rank() != 0:
        return
    print(f"[dpkd-bench] {message}", file=sys.stderr, flush=True)


def warn(message: str) -> None:
    """One ``warning:`` line on stderr, printed even with ``--quiet``."""
    print(f"warning: {message}", file=sys.stderr, flush=True)


def clock(seconds: float) -> str:
    """``4m05s``, or ``1h02m`` from an hour."""
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes // 60}h{minutes % 60:02d}m" if minutes >= 60 else f"{minutes}m{secs:02d}s"
