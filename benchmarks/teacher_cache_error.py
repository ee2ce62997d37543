"""Relative error of every cached (top-k) teacher loss against the exact loss.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/teacher_cache_error.py
    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/teacher_cache_error.py --teacher-steps 300

On the default benchmark's data (``prepare_data`` of ``load_recipe("synthetic")``, the tokenizer
cached in ``$DPKD_BENCH_CACHE``), with the recipe's teacher when a trained one is cached for this
data (``teacher-<key>`` in the cache, or the shipped one), else a 4x192 GPT-2 with random weights
(said so in the output), optionally trained here by ``sft`` for ``--teacher-steps``. The student
is the recipe's ``student_init`` (its shape, seed and short ``sft``). For each method, the
distillation term of ``loss_terms`` summed over ``--items`` training items, cached (through the
method's real path; ``--approx bucket`` for the comparison completion) vs exact:

    cache_rel_error <method> <|cached - exact| / |exact|>        (goal: <= 0.01)
    cache_rel_error_loss <method> <x>   the method's whole weighted loss (CE included)
    cache_rel_error_batch_max <method> <x>  the largest error of one batch's term
    cache_grad_cosine <method> <x>      cosine of the two gradients on the first batch
"""

from __future__ import annotations

import benchkit  # noqa: F401  (first: sets OMP_WAIT_POLICY before torch loads)

# isort: split
import argparse
import tempfile
from dataclasses import replace
from pathlib import Path

import torch
from accelerate import Accelerator
from benchkit import print_machine, train_context

from dpkd_bench.data.prepare import prepare_data
from dpkd_bench.methods import TEACHER_FORCED, get_method
from dpkd_bench.models import build_model, freeze, load_pretrained
from dpkd_bench.recipe import load_recipe
from dpkd_bench.teacher import cache_root, shipped_teacher, teacher_key
from dpkd_bench.teacher_cache import DEFAULT_K, bucketed, build_cache
from dpkd_bench.train import BatchStream, train

METHODS = TEACHER_FORCED


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", default="synthetic")
    parser.add_argument("--k", type=int, default=DEFAULT_K)
    parser.add_argument("--items", type=int, default=256, help="training items measured")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--teacher-steps", type=int, default=0, help="sft a random teacher")
    parser.add_argument("--student-steps", type=int, default=None, help="default: the recipe's")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument(
        "--approx", choices=("spread", "bucket"), default="spread", help="the rest's completion"
    )
    parser.add_argument("--threads", type=int, default=None)
    return parser.parse_args()


def sft(model, items, tokenizer, cfg, seed: int) -> None:
    """The toolkit's ``sft`` through its training loop, as the runner trains references."""
    ctx = train_context(model, None, tokenizer)
    stream = BatchStream(items, cfg.batch_size, seed)
    train(get_method("sft"), model, cfg, stream, ctx, Accelerator(cpu=True))


def recipe_teacher(recipe, data, steps: int):
    """(teacher, description): the cached/shipped trained teacher, or a random one (+ sft)."""
    key = teacher_key(recipe, data)
    for path in (cache_root() / f"teacher-{key}", shipped_teacher(key)):
        if path is not None and (Path(path) / "model.safetensors").is_file():
            return freeze(load_pretrained(path).float()), f"trained teacher {path}"
    model = build_model(recipe.teacher.model, data.tokenizer, seed=recipe.data.seed)
    note = f"no trained teacher for this data (key {key}): random-init 4x192"
    if steps:
        sft(model, data.train_items, data.tokenizer, replace(recipe.teacher.train, steps=steps), 0)
        note += f", then sft for {steps} steps here"
    return freeze(model), note


def recipe_student(recipe, data, steps: int | None):
    model = build_model(recipe.student.model, data.tokenizer, seed=recipe.data.seed + 1)
    cfg = recipe.student.init_train
    cfg = cfg if steps is None else replace(cfg, steps=steps)
    if cfg.steps:
        sft(model, data.train_items, data.tokenizer, cfg, recipe.data.seed + 1)
    return model, cfg.steps


def batches(items: list[dict], size: int):
    for start in range(0, len(items), size):
        chunk = items[start : start + size]
        yield {key: [item[key] for item in chunk] for key in chunk[0]}


def weighted(terms: dict, weights: dict) -> torch.Tensor:
    return sum(w * terms[t] for t, w in weights.items() if w)


def gradient(method, student, prepared, ctx) -> torch.Tensor:
    student.zero_grad(set_to_none=True)
    weighted(method.loss_terms(student, prepared, ctx), method.weights()).backward()
    return torch.cat([p.grad.flatten() for p in student.parameters() if p.grad is not None])


def cached_method(name: str, cache, k: int, approx: str):
    method = get_method(name, teacher_cache_k=k, **METHODS.get(name, {}))
    method.use_teacher_cache(cache)
    if approx == "bucket":  # the comparison completion (see dpkd_bench.teacher_cache)
        method.cached_divergence = lambda s, c: bucketed(method.divergence, s, c)
    return method


def relative(a: float, b: float) -> float:
    return abs(a - b) / abs(b)


def compare(name: str, cache, student, ctx, items: list[dict], args) -> dict[str, float]:
    exact = get_method(name, **METHODS.get(name, {}))
    cached = cached_method(name, cache, args.k, args.approx)
    sums = {"exact": 0.0, "cached": 0.0, "exact_loss": 0.0, "cached_loss": 0.0}
    worst, cosine = 0.0, None
    for batch in batches(items, args.batch_size):
        prepared = exact.prepare(batch, ctx)
        if cosine is None:
            a, b = gradient(exact, student, prepared, ctx), gradient(cached, student, prepared, ctx)
            cosine = float(torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=0))
        with torch.no_grad():
            terms = {
                label: m.loss_terms(student, prepared, ctx)
                for label, m in (("exact", exact), ("cached", cached))
            }
        for label, method in (("exact", exact), ("cached", cached)):
            sums[label] += float(terms[label]["distill"])
            sums[f"{label}_loss"] += float(weighted(terms[label], method.weights()))
        worst = max(worst, relative(terms["cached"]["distill"], terms["exact"]["distill"]))
    return {
        "distill": relative(sums["cached"], sums["exact"]),
        "loss": relative(sums["cached_loss"], sums["exact_loss"]),
        "batch_max": float(worst),
        "cosine": cosine,
    }


def main() -> None:
    args = parse_args()
    print_machine(args.threads)
    recipe = load_recipe(args.recipe)
    data = prepare_data(recipe, cache_root())
    teacher, note = recipe_teacher(recipe, data, args.teacher_steps)
    student, student_steps = recipe_student(recipe, data, args.student_steps)
    items = data.train_items[: args.items]
    print(f"setup recipe={recipe.name} teacher: {note}", flush=True)
    print(
        f"setup student_init sft steps={student_steps} items={len(items)} k={args.k} "
        f"approx={args.approx}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        cache = build_cache(
            teacher, items, args.k, tmp, args.batch_size, pad_id=data.tokenizer.pad_token_id
        )
        rest = torch.cat([cache.rows([i])[2] for i in range(len(items))]).exp()
        print(f"teacher_rest_mass mean={float(rest.mean()):.4g} max={float(rest.max()):.4g}")
        ctx = train_context(student, teacher, data.tokenizer)
        for name in (n for n in args.methods.split(",") if n):
            result = compare(name, cache, student, ctx, items, args)
            print(f"cache_rel_error {name} {result['distill']:.5f}")
            print(f"cache_rel_error_loss {name} {result['loss']:.5f}")
            print(f"cache_rel_error_batch_max {name} {result['batch_max']:.5f}")
            print(f"cache_grad_cosine {name} {result['cosine']:.5f}", flush=True)


if __name__ == "__main__":
    main()
