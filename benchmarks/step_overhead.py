"""Step time of every token-level teacher-forced method over the plain-torch floor.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/step_overhead.py

One optimiser step through the toolkit's real path (``Method.prepare`` on the raw batch,
``train.accumulate``, AdamW step) against the floor measured in the same process on the same
batch with plain torch: the student's forward, a token cross-entropy and its backward, the
teacher's forward under ``no_grad`` (``sft``: no teacher) and the same AdamW step. After a
warm-up, every round runs each case once in a shuffled order. Prints, per method,
``overhead_ratio <method> <x>``: the fastest step over the fastest floor step (noise from other
processes only ever adds time, so the minimum is the steadiest figure on a shared machine;
goal: <= 1.05), and ``overhead_ratio_median``: the median over rounds of (method / floor) in
the same round. The toolkit projects only the response positions onto the vocabulary
(``dpkd_bench.methods.base.response_logits``), which the floor of the full logits does not, so
``overhead_ratio_rows`` also divides by the floor with both projections restricted the same way
(``floor_rows``): the overhead of the loop itself.
"""

from __future__ import annotations

import benchkit  # noqa: F401  (first: sets OMP_WAIT_POLICY before torch loads)

# isort: split
import argparse

import torch
import torch.nn.functional as F
from benchkit import (
    fake_tokenizer,
    gpt2,
    interleaved_samples,
    median,
    paired_ratio,
    print_machine,
    random_items,
    train_context,
)
from benchkit import stack_batch as stack

from dpkd_bench.data.collate import IGNORE, collate_pairs
from dpkd_bench.methods import REFERENCE_METHOD, TEACHER_FORCED, get_method
from dpkd_bench.train import accumulate

METHODS = {REFERENCE_METHOD: {}, **TEACHER_FORCED}  # the floor without a teacher, then the rest


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--vocab", type=int, default=1024)
    parser.add_argument("--prompt-len", type=int, nargs=2, default=(60, 72))
    parser.add_argument("--response-len", type=int, nargs=2, default=(12, 23))
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=25)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--threads", type=int, default=None)
    return parser.parse_args()


def method_step(method, student, optimizer, ctx, batch):
    """One optimiser step as ``train.train`` runs it (prepare, accumulate, AdamW)."""

    def step():
        with torch.no_grad():
            micro = [method.prepare(batch, ctx)]
        accumulate(method, student, micro, ctx, lambda loss: loss.backward())
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def floor_step(student, teacher, optimizer, pairs, rows_only: bool = False):
    """The unavoidable work: student forward + CE backward, teacher forward, AdamW step.

    ``rows_only``: both output projections on the response positions only (transformers'
    boolean ``logits_to_keep``), the least a response-token loss needs."""
    labels = pairs["labels"][:, 1:]
    mask = labels != IGNORE
    inputs = {"input_ids": pairs["input_ids"], "attention_mask": pairs["attention_mask"]}
    if rows_only:
        inputs["logits_to_keep"] = torch.cat([mask, torch.zeros_like(mask[:, :1])], dim=1)
        labels = labels[mask]

    def step():
        logits = student(**inputs).logits
        logits = logits if rows_only else logits[:, :-1].flatten(0, 1)
        loss = F.cross_entropy(logits, labels.flatten(), ignore_index=IGNORE)
        loss.backward()
        if teacher is not None:
            with torch.no_grad():
                teacher(**inputs)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def main() -> None:
    args = parse_args()
    print_machine(args.threads)
    names = [n for n in args.methods.split(",") if n]
    items = random_items(args.batch_size, args.vocab, args.prompt_len, args.response_len, 0)
    batch = stack(items)
    pairs = collate_pairs(batch["prompts"], batch["responses"], fake_tokenizer().pad_token_id)
    student = gpt2(2, 96, 4, args.vocab, seed=1).train()
    teacher = gpt2(4, 192, 6, args.vocab, seed=2).eval().requires_grad_(False)
    optimizer = torch.optim.AdamW(student.parameters(), lr=1e-4, betas=(0.9, 0.95))
    ctx = train_context(student, teacher)
    cases = {
        "floor": floor_step(student, teacher, optimizer, pairs),
        "floor_no_teacher": floor_step(student, None, optimizer, pairs),
        "floor_rows": floor_step(student, teacher, optimizer, pairs, rows_only=True),
        "floor_rows_no_teacher": floor_step(student, None, optimizer, pairs, rows_only=True),
    }
    for name in names:
        method = get_method(name, **METHODS.get(name, {}))
        cases[name] = method_step(method, student, optimizer, ctx, batch)
    print(
        f"setup student=2x96 teacher=4x192 vocab={args.vocab} batch={args.batch_size} "
        f"seq_len={pairs['input_ids'].shape[1]} "
        f"response_tokens={int((pairs['labels'] != IGNORE).sum())} "
        f"warmup={args.warmup} repeats={args.repeats}",
        flush=True,
    )
    samples = interleaved_samples(cases, args.warmup, args.repeats)
    for case, values in samples.items():
        print(f"step_ms {case} median={median(values) * 1e3:.1f} min={min(values) * 1e3:.1f}")
    for name in names:
        suffix = "" if get_method(name).uses_teacher else "_no_teacher"
        floor, rows = samples[f"floor{suffix}"], samples[f"floor_rows{suffix}"]
        ours = samples[name]
        print(f"overhead_ratio_median {name} {paired_ratio(ours, floor):.3f}")
        print(f"overhead_ratio_rows {name} {min(ours) / min(rows):.3f}")
        print(f"overhead_ratio {name} {min(ours) / min(floor):.3f}", flush=True)


if __name__ == "__main__":
    main()
