"""The optimiser of a unit: AdamW with a warm-up and a schedule (``train.schedule``), and the
step itself (backward scaled for DDP and fp16, clipping, the scheduler)."""

from __future__ import annotations

import contextlib

import torch
from accelerate import Accelerator
from transformers import (
    get_constant_schedule_with_warmup,
    get_cosine_schedule_with_warmup,
    get_linear_schedule_with_warmup,
)

from dpkd_bench.train_config import TrainConfig


def make_optimizer(model, cfg: TrainConfig):
    decay = [p for n, p in model.named_parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.requires_grad and p.ndim < 2]
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95))
    warmup = int(cfg.warmup_ratio * cfg.steps)
    if cfg.schedule == "constant":
        return optimizer, get_constant_schedule_with_warmup(optimizer, warmup)
    make = SCHEDULES[cfg.schedule]
    return optimizer, make(optimizer, warmup, max(cfg.steps, 1))


# train.schedule -> its transformers schedule (linear warm-up first; decay to 0 at the last step)
SCHEDULES = {
    "linear": get_linear_schedule_with_warmup,
    "cosine": get_cosine_schedule_with_warmup,
}


AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class Optimisation:
    """Backward (scaled for DDP's mean and for fp16) and the optimiser step of one unit."""

    def __init__(self, model, optimizer, scheduler, cfg: TrainConfig, accelerator: Accelerator):
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        self.cfg, self.accelerator = cfg, accelerator
        device_type = accelerator.device.type
        fp16 = cfg.mixed_precision == "fp16"
        self.scaler = torch.amp.GradScaler(device_type) if fp16 else None
        self.dtype = AUTOCAST_DTYPES.get(cfg.mixed_precision)
        self.device_type = device_type

    def autocast(self):
        """The forward passes' precision: ``torch.autocast`` when mixed precision is on."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def no_sync(self):
        """Several processes: hold DDP's gradient all-reduce until the last micro-batch."""
        return self.accelerator.no_sync(self.model)

    def backward(self, loss: torch.Tensor) -> None:
        # DDP averages the gradients over processes; each loss is already a share of the
        # global normalised sum, so the mean is turned back into that sum.
        loss = loss * self.accelerator.num_processes
        self.accelerator.backward(self.scaler.scale(loss) if self.scaler else loss)

    def step(self) -> None:
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        self.accelerator.clip_grad_norm_(self.model.parameters(), self.cfg.max_grad_norm)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
