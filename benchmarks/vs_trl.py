"""Our ``kd`` training step against TRL's GKDTrainer (beta 0, lmbda 0: forward KL, off-policy).

    .venv/bin/pip install -e '.[bench]'     # TRL, for this comparison only
    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/vs_trl.py

Both run their whole training loop (data collation, forward, loss, backward, clipping, AdamW,
schedule) on the same tiny GPT-2 pair (student 2x96, teacher 4x192), the same items, batch size
and sequence length, on the CPU. A step is the interval between two consecutive step ends
(our loop's ``train_log.jsonl`` at ``log_every=1``; a ``TrainerCallback`` for TRL); the rounds
alternate (ours, TRL, ours, TRL, ...) and the figures are ratios of the fastest steps after
each round's warm-up (noise from other processes only adds time; medians are printed too).
TRL's GKD loss has no CE term; ``kd`` adds 0.5 CE (a log-softmax that ``kd`` shares), and
``gkd`` with beta 0 and lmbda 0 is timed too as the like-for-like loss.
``kd_cached_k64`` is ``kd`` reading the teacher from the teacher-logit cache (top 64; an
approximation, see ``dpkd_bench.teacher_cache``), built once before the rounds (its build time
is printed as ``cache_build_s``). Both in float32, the toolkit's CPU precision; TRL's config
defaults to bf16 autocast, timed too as ``trl_bf16`` against our float32 step. Prints
``speedup_vs_trl <x>`` (TRL step / our exact kd step, both float32; goal >= 1.5).
"""

from __future__ import annotations

import benchkit  # noqa: F401  (first: sets OMP_WAIT_POLICY before torch loads)

# isort: split
import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from benchkit import EOS_ID, PAD_ID, gpt2, print_machine, random_items, train_context

from dpkd_bench.data.collate import collate_pairs
from dpkd_bench.methods import get_method
from dpkd_bench.recipe import TrainConfig
from dpkd_bench.teacher_cache import build_cache
from dpkd_bench.train import BatchStream, train


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--vocab", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=12, help="steps per round")
    parser.add_argument("--warmup", type=int, default=3, help="steps dropped per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    return parser.parse_args()


def trl_classes():
    """(GKDConfig, GKDTrainer, TrainerCallback) or the reason TRL cannot run here."""
    try:
        from transformers import TrainerCallback

        try:  # TRL >= 1.0
            from trl.experimental.gkd import GKDConfig, GKDTrainer
        except ImportError:  # TRL 0.x
            from trl import GKDConfig, GKDTrainer
    except Exception as err:  # any import failure means: no comparison on this machine
        return None, f"{type(err).__name__}: {err}"
    return (GKDConfig, GKDTrainer, TrainerCallback), ""


def models(vocab: int):
    student = gpt2(2, 96, 4, vocab, seed=1)
    teacher = gpt2(4, 192, 6, vocab, seed=2).eval().requires_grad_(False)
    return student, teacher


def our_steps(name: str, overrides: dict, items, args, cache=None) -> list[float]:
    """Step intervals of one run of our training loop (after the warm-up)."""
    student, teacher = models(args.vocab)
    ctx = train_context(student, teacher)
    cfg = TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=1e-4, log_every=1)
    from accelerate import Accelerator

    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "train_log.jsonl"
        stream = BatchStream(items, args.batch_size, seed=0)
        method = get_method(name, **overrides)
        if cache is not None:
            method.use_teacher_cache(cache)
        train(method, student, cfg, stream, ctx, Accelerator(cpu=True), log)
        ends = [json.loads(line)["elapsed_s"] for line in log.read_text().splitlines()]
    return [b - a for a, b in zip(ends, ends[1:], strict=False)][args.warmup :]


def tokenizer():
    """A real (tiny) tokenizer for TRL's type checks, with the ids the items use."""
    from dpkd_bench.data.tokenizer import train_bpe_tokenizer

    made = train_bpe_tokenizer(["distillation benchmark"] * 4, vocab_size=300)
    assert (made.pad_token_id, made.eos_token_id) == (PAD_ID, EOS_ID)
    return made


def trl_steps(classes, items, args, bf16: bool) -> list[float]:
    """Step intervals of one run of TRL's GKDTrainer (after the warm-up); ``bf16``: autocast."""
    import datasets

    config_cls, trainer_cls, callback_cls = classes
    ends: list[float] = []

    class StepEnds(callback_cls):
        def on_step_end(self, *_, **__):
            ends.append(time.perf_counter())

    def collate(features):
        return collate_pairs(
            [f["prompts"] for f in features], [f["responses"] for f in features], PAD_ID
        )

    student, teacher = models(args.vocab)
    data = datasets.Dataset.from_list([{k: list(v) for k, v in i.items()} for i in items])
    with tempfile.TemporaryDirectory() as tmp:
        config = config_cls(
            output_dir=tmp,
            per_device_train_batch_size=args.batch_size,
            max_steps=args.steps,
            learning_rate=1e-4,
            lmbda=0.0,
            beta=0.0,
            use_cpu=True,
            report_to="none",
            save_strategy="no",
            logging_steps=10_000,
            dataloader_num_workers=0,
            disable_tqdm=True,
            bf16=bf16,
        )
        trainer = trainer_cls(
            model=student,
            teacher_model=teacher,
            args=config,
            data_collator=collate,
            train_dataset=data,
            processing_class=tokenizer(),
            callbacks=[StepEnds()],
        )
        trainer.train()
    return [b - a for a, b in zip(ends, ends[1:], strict=False)][args.warmup :]


def timed_rounds(classes, items, args, cache) -> dict[str, list[float]]:
    """Alternating runs of every loop, ``args.rounds`` times; step intervals per loop."""
    runs = {
        "kd": lambda: our_steps("kd", {}, items, args),
        "trl": lambda: trl_steps(classes, items, args, bf16=False),
        "gkd": lambda: our_steps("gkd", {"beta": 0.0, "lmbda": 0.0}, items, args),
        "trl_bf16": lambda: trl_steps(classes, items, args, bf16=True),
        "kd_cached_k64": lambda: our_steps("kd", {"teacher_cache_k": 64}, items, args, cache),
    }
    steps: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.rounds):
        for name, run in runs.items():
            steps[name] += run()
    return steps


def main() -> None:
    args = parse_args()
    print_machine(args.threads)
    classes, reason = trl_classes()
    if classes is None:
        print(f"speedup_vs_trl unavailable: TRL's GKDTrainer cannot run here ({reason})")
        return
    import trl

    print(
        f"setup trl={trl.__version__} student=2x96 teacher=4x192 vocab={args.vocab} "
        f"batch={args.batch_size} steps/round={args.steps} warmup={args.warmup}"
    )
    items = random_items(args.batch_size * args.steps, args.vocab, (60, 72), (12, 23), seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        cache = build_cache(models(args.vocab)[1], items, 64, tmp, args.batch_size, pad_id=PAD_ID)
        print(f"cache_build_s k=64 items={len(items)} {time.perf_counter() - start:.2f}")
        steps = timed_rounds(classes, items, args, cache)
    best = {name: min(values) for name, values in steps.items()}
    for name, values in steps.items():
        print(
            f"step_ms {name} median={statistics.median(values) * 1e3:.1f} "
            f"min={best[name] * 1e3:.1f}"
        )
    print(f"speedup_vs_trl_gkd_beta0 {best['trl'] / best['gkd']:.3f}")
    print(f"speedup_vs_trl_default_bf16 {best['trl_bf16'] / best['kd']:.3f}")
    print(f"speedup_vs_trl_cached_k64 {best['trl'] / best['kd_cached_k64']:.3f}")
    print(f"speedup_vs_trl {best['trl'] / best['kd']:.3f}")


if __name__ == "__main__":
    main()
