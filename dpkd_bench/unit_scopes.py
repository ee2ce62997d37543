"""What the training loop holds open around a unit: gradient checkpointing, the student's
dropout, the count of the teacher's forwards, and the SIGTERM request."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def checkpointed_activations(model, enabled: bool):
    """Activation (gradient) checkpointing on ``model`` for the block, when ``enabled``."""
    if not enabled:
        yield
        return
    non_reentrant = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.2x
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=non_reentrant)
        disable = model.activation_checkpointing_disable
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=non_reentrant)
        disable = model.gradient_checkpointing_disable
    try:
        yield
    finally:
        disable()


@contextlib.contextmanager
def dropout_off(model, enabled: bool):
    """Every ``nn.Dropout`` of ``model`` at p = 0 for the block (as TRL's ``disable_dropout``
    and MiniLLM's trainer), restored afterwards, when ``enabled``. Attention dropout of the
    transformers models reads its module's ``p``, so it is off too."""
    modules = [m for m in model.modules() if isinstance(m, torch.nn.Dropout)] if enabled else []
    rates = [m.p for m in modules]
    for module in modules:
        module.p = 0.0
    try:
        yield
    finally:
        for module, rate in zip(modules, rates, strict=True):
            module.p = rate


@contextlib.contextmanager
def sigterm_requested(enabled: bool) -> Iterator[list[bool]]:
    """While open, SIGTERM sets ``flag[0]`` instead of ending the process, so the loop can
    checkpoint first. Only in the main thread of a single process (with several, each would
    stop at another step); elsewhere the flag stays False and SIGTERM acts as usual."""
    flag = [False]
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def request(_signum, _frame):
        flag[0] = True

    previous = signal.signal(signal.SIGTERM, request)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def counted_forwards(model) -> Iterator[list[int]]:
    """While open, ``counter[0]`` counts the sequences through ``model``'s forward: the rows of
    every call's ``input_ids``, once per sequence for a decode (the steps that extend a KV cache
    are not counted). ``model`` None counts nothing."""
    counter = [0]
    if model is None:
        yield counter
        return

    def count(_module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        extends_cache = any(kwargs.get(k) is not None for k in ("past_key_values", "cache"))
        if ids is not None and not extends_cache:
            counter[0] += int(ids.shape[0])

    handle = model.register_forward_pre_hook(count, with_kwargs=True)
    try:
        yield counter
    finally:
        handle.remove()
