"""Shared pieces of the benchmark scripts: machine info, tiny GPT-2 models, batches, timing.

Import this module before torch in every script: it sets ``OMP_WAIT_POLICY=PASSIVE`` (spinning
OpenMP threads make small CPU models many times slower when another process shares the cores).
Timings on a shared machine are noisy; every script reports medians over interleaved repeats.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("TQDM_DISABLE", "1")  # progress bars would drown the figures
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

import platform  # noqa: E402
import random  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from types import SimpleNamespace  # noqa: E402

import torch  # noqa: E402
from transformers import GPT2Config, GPT2LMHeadModel  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PAD_ID, EOS_ID = 1, 0  # as the toolkit's BPE tokenizer (EOS 0, PAD 1)


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux, else platform's guess)."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine_lines() -> list[str]:
    """Lines that say where a figure was measured."""
    import transformers

    lines = [
        f"machine cpu={cpu_model()!r} cores={os.cpu_count()} threads={torch.get_num_threads()}",
        f"machine torch={torch.__version__} transformers={transformers.__version__} "
        f"python={platform.python_version()} omp_wait_policy={os.environ.get('OMP_WAIT_POLICY')}",
    ]
    if torch.cuda.is_available():
        lines.append(f"machine cuda_device={torch.cuda.get_device_name(0)!r}")
    return lines


def print_machine(threads: int | None = None) -> None:
    """Fix the thread count (default: every core, at most 2 here) and print the machine."""
    torch.set_num_threads(threads or min(2, os.cpu_count() or 1))
    for line in machine_lines():
        print(line, flush=True)


def gpt2(n_layer: int, n_embd: int, n_head: int, vocab: int, seed: int, positions: int = 256):
    """A randomly initialised GPT-2 of the given shape, no dropout (as the toolkit builds them)."""
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=vocab,
        n_positions=positions,
        n_embd=n_embd,
        n_layer=n_layer,
        n_head=n_head,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=EOS_ID,
        eos_token_id=EOS_ID,
        pad_token_id=PAD_ID,
    )
    return GPT2LMHeadModel(config)


def random_items(
    n: int, vocab: int, prompt_len: tuple[int, int], response_len: tuple[int, int], seed: int
) -> list[dict]:
    """Training items {"prompts", "responses"} of random token ids (no PAD/EOS inside; EOS last)."""
    generator = torch.Generator().manual_seed(seed)

    def draw(low: int, high: int) -> list[int]:
        length = int(torch.randint(low, high + 1, (1,), generator=generator))
        return torch.randint(2, vocab, (length,), generator=generator).tolist()

    return [
        {"prompts": tuple(draw(*prompt_len)), "responses": (*draw(*response_len), EOS_ID)}
        for _ in range(n)
    ]


def stack_batch(items: list[dict]) -> dict[str, list]:
    """Items as the training loop's ``BatchStream.next_batch`` hands them to a method."""
    return {key: [item[key] for item in items] for key in items[0]}


def fake_tokenizer() -> SimpleNamespace:
    """What the training path reads from a tokenizer: the pad and EOS ids."""
    return SimpleNamespace(pad_token_id=PAD_ID, eos_token_id=EOS_ID)


def train_context(student, teacher, tokenizer=None):
    """A CPU ``TrainContext`` for the benchmarks (8-token on-policy samples, seed 0)."""
    from dpkd_bench.generate import DecodeSettings
    from dpkd_bench.methods.base import TrainContext

    return TrainContext(
        student=student,
        teacher=teacher,
        tokenizer=tokenizer if tokenizer is not None else fake_tokenizer(),
        sampling=DecodeSettings(max_new_tokens=8),
        generator=torch.Generator().manual_seed(0),
        device=torch.device("cpu"),
    )


def timed(fn: Callable[[], object]) -> float:
    """Wall seconds of one call (CUDA work included: synchronised before and after)."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def interleaved_samples(
    cases: dict[str, Callable[[], object]], warmup: int, repeats: int, seed: int = 0
) -> dict[str, list[float]]:
    """Seconds per call of every case, ``repeats`` rounds after ``warmup`` rounds.

    Each round runs every case once, in a freshly shuffled order, so that slow phases of a
    shared machine hit all cases alike; round i of every case can be compared pairwise.
    """
    order = list(cases)
    rng = random.Random(seed)
    for _ in range(warmup):
        for fn in cases.values():
            fn()
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeats):
        rng.shuffle(order)
        for name in order:
            samples[name].append(timed(cases[name]))
    return samples


def median(values: list[float]) -> float:
    return statistics.median(values)


def paired_ratio(numerator: list[float], denominator: list[float]) -> float:
    """Median over rounds of the per-round ratio (robust to load that drifts between rounds)."""
    return statistics.median(a / b for a, b in zip(numerator, denominator, strict=True))


def saved_models(run, manifest: dict, recipe) -> list[tuple[str, int, Path]]:
    """(name, seed, saved directory) of every model a finished run saved: the teacher (from the
    cache, by the identity the manifest records, or its Hub name), each reference seed's
    ``student_init``, then every method's student of every seed that finished."""
    from dpkd_bench.results import METRICS, cache_root
    from dpkd_bench.shared_stage import INIT_DIR, reference_seeds, student_init_dir

    teacher = recipe.teacher.model.name_or_path or cache_root() / f"teacher-{manifest['teacher']}"
    found = [("teacher", recipe.seeds[0], Path(teacher))]
    found += [
        (INIT_DIR, seed, student_init_dir(run.root, recipe, seed))
        for seed in reference_seeds(recipe, INIT_DIR)
    ]
    for method in manifest.get("methods", []):
        for seed in manifest.get("seeds", []):
            unit = run.unit_dir(method, seed)
            if (unit / METRICS).is_file() and (unit / "student").is_dir():
                found.append((method, seed, unit / "student"))
    return found
