"""Batched decoding against one prompt at a time, with ``dpkd_bench.generate.generate_ids``.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/generation.py

The default benchmark's student shape (GPT-2 2x96, vocabulary 1024, random weights) samples
``--new-tokens`` tokens for each of ``--prompts`` prompts of 56-72 tokens, all in batches of
``--batch-size`` (left-padded, KV cache) and then with ``batch_size=1``. No token is treated as
EOS, so both modes generate exactly prompts x new-tokens tokens. The modes alternate for
``--repeats`` rounds; prints tokens/s of each (from its fastest round: noise from other
processes only adds time) and ``generation_speedup <x>`` (batched over one at a time; goal
>= 10).
"""

from __future__ import annotations

import benchkit  # noqa: F401  (first: sets OMP_WAIT_POLICY before torch loads)

# isort: split
import argparse

from benchkit import PAD_ID, gpt2, interleaved_samples, print_machine, random_items

from dpkd_bench.generate import DecodeSettings, generate_ids

NO_EOS = -1  # never sampled: every row runs to max_new_tokens


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=24)
    parser.add_argument("--vocab", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    print_machine(args.threads)
    model = gpt2(2, 96, 4, args.vocab, seed=1).eval()
    prompts = [i["prompts"] for i in random_items(args.prompts, args.vocab, (56, 72), (1, 1), 0)]
    settings = DecodeSettings(max_new_tokens=args.new_tokens)
    common = {"eos_id": NO_EOS, "pad_id": PAD_ID, "seed": 0}
    produced: dict[str, int] = {}

    def run(name: str, batch_size: int):
        def call():
            out = generate_ids(model, prompts, settings, batch_size=batch_size, **common)
            produced[name] = sum(len(r) for r in out)

        return call

    cases = {"batched": run("batched", args.batch_size), "one_at_a_time": run("single", 1)}
    print(
        f"setup model=2x96 vocab={args.vocab} prompts={args.prompts} "
        f"batch_size={args.batch_size} new_tokens={args.new_tokens} repeats={args.repeats}",
        flush=True,
    )
    samples = interleaved_samples(cases, warmup=1, repeats=args.repeats)
    assert produced["batched"] == produced["single"] == args.prompts * args.new_tokens
    rates = {name: produced["batched"] / min(times) for name, times in samples.items()}
    for name, rate in rates.items():
        print(f"tokens_per_s {name} {rate:.0f}")
    print(f"generation_speedup {rates['batched'] / rates['one_at_a_time']:.2f}")


if __name__ == "__main__":
    main()
