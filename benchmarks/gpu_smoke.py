"""GPU smoke check: one short bf16 training run per method through the real training loop.

    benchmarks/gpu_smoke.sh                                   # on a CUDA machine, < 5 minutes
    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/gpu_smoke.py --cpu --tiny   # CPU check

GPT-2-small-shaped models with random weights, built from configs (no Hub): teacher 12x768,
student 6x768 (``--tiny``: 2x64 and 1x32, vocabulary 512), vocabulary 50257. For every
registered method: a fresh copy of the student, ``dpkd_bench.train.train`` for ``--steps``
optimiser steps of ``--batch-size`` sequences under ``Accelerator(mixed_precision="bf16")``
(the student in float32 with bf16 autocast, the frozen teacher in bf16 weights), on-policy
samples of ``--new-tokens`` tokens; methods that read teacher samples get the ground truth as a
stand-in. Prints one line per method::

    gpu_step <method> step_s=<seconds per step> peak_mem_gib=<peak allocated, CUDA only>

and exits with status 1 when any method fails (its error printed), 2 when no CUDA device is
visible (without ``--cpu``).
"""

from __future__ import annotations

import benchkit  # noqa: F401  (first: sets OMP_WAIT_POLICY before torch loads)

# isort: split
import argparse
import copy
import sys
import time
import traceback

import torch
from benchkit import EOS_ID, PAD_ID, fake_tokenizer, gpt2, print_machine, random_items

from dpkd_bench.generate import DecodeSettings
from dpkd_bench.methods import METHODS, get_method
from dpkd_bench.methods.base import TrainContext
from dpkd_bench.recipe import TrainConfig
from dpkd_bench.train import BatchStream, train

SHAPES = {  # (layers, width, heads)
    "full": {"teacher": (12, 768, 12), "student": (6, 768, 12), "vocab": 50257},
    "tiny": {"teacher": (2, 64, 2), "student": (1, 32, 2), "vocab": 512},
}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu", action="store_true", help="run on the CPU (a code-path check)")
    parser.add_argument("--tiny", action="store_true", help="tiny models (seconds on a CPU)")
    parser.add_argument("--methods", default="all", help="comma-separated, or 'all'")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--prompt-len", type=int, nargs=2, default=(64, 96))
    parser.add_argument("--response-len", type=int, nargs=2, default=(16, 48))
    return parser.parse_args(argv)


def device_or_exit(cpu: bool) -> torch.device:
    if cpu:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        print(
            "gpu_smoke: no CUDA device is visible to torch (torch.cuda.is_available() is False); "
            "run it on a GPU machine, or check the code path on the CPU with --cpu --tiny",
            file=sys.stderr,
        )
        raise SystemExit(2)
    return torch.device("cuda")


def build_models(shape: dict, device: torch.device):
    """(student in float32, frozen teacher in bf16), random weights, on ``device``."""
    teacher = gpt2(*shape["teacher"], shape["vocab"], seed=2, positions=512)
    teacher = teacher.to(device, torch.bfloat16).eval().requires_grad_(False)
    return gpt2(*shape["student"], shape["vocab"], seed=1, positions=512).to(device), teacher


def unit_data(method, items: list[dict]) -> list[dict]:
    """Items in the shape the runner gives ``method`` (ground truth stands in for samples)."""
    if method.train_data == "teacher_samples":
        return items
    if method.needs_teacher_samples:
        return [{**item, "teacher_responses": item["responses"]} for item in items]
    return items


def run_method(name: str, base_student, teacher, items, args, accelerator) -> str:
    """One short training run of ``name``; its result line."""
    method = get_method(name)
    student = copy.deepcopy(base_student)
    device = accelerator.device
    ctx = TrainContext(
        student=student,
        teacher=teacher if method.uses_teacher else None,
        tokenizer=fake_tokenizer(),
        sampling=DecodeSettings(max_new_tokens=args.new_tokens),
        generator=torch.Generator(device=device).manual_seed(0),
        device=device,
        dev_items=items[: args.batch_size],
        total_steps=args.steps,
    )
    cfg = TrainConfig(steps=args.steps, batch_size=args.batch_size, log_every=args.steps)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    train(
        method,
        student,
        cfg,
        BatchStream(unit_data(method, items), args.batch_size, 0),
        ctx,
        accelerator,
    )
    if device.type == "cuda":
        torch.cuda.synchronize()
    step_s = (time.perf_counter() - start) / args.steps
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    return f"gpu_step {name} step_s={step_s:.3f} peak_mem_gib={peak:.2f}"


def main(argv=None) -> int:
    args = parse_args(argv)
    device = device_or_exit(args.cpu)
    from accelerate import Accelerator

    print_machine()
    accelerator = Accelerator(cpu=device.type == "cpu", mixed_precision="bf16")
    shape = SHAPES["tiny" if args.tiny else "full"]
    student, teacher = build_models(shape, accelerator.device)
    items = random_items(
        args.batch_size * args.steps * 4, shape["vocab"], args.prompt_len, args.response_len, 0
    )
    assert fake_tokenizer().pad_token_id == PAD_ID and fake_tokenizer().eos_token_id == EOS_ID
    names = list(METHODS) if args.methods == "all" else args.methods.split(",")
    print(
        f"setup device={accelerator.device} shape={shape} steps={args.steps} "
        f"batch={args.batch_size} new_tokens={args.new_tokens} mixed_precision=bf16",
        flush=True,
    )
    failed = []
    for name in names:
        try:
            print(run_method(name, student, teacher, items, args, accelerator), flush=True)
        except Exception:  # report every method, then fail
            failed.append(name)
            print(f"gpu_step {name} FAILED", flush=True)
            traceback.print_exc()
    print(f"gpu_smoke {'FAILED: ' + ','.join(failed) if failed else 'ok'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
