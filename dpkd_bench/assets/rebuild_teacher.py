"""Rebuild the teacher shipped for the default ``synthetic`` recipe.

    python -m dpkd_bench.assets.rebuild_teacher [--recipe synthetic]

Trains the teacher exactly as ``dpkd-bench run`` would (the toolkit's ``sft`` on the synthetic
suite), then stores it in float16 safetensors (4 MB; a run loads it back in float32, so its
weights are the trained ones rounded to float16) under ``dpkd_bench/assets/default-teacher/``
with the content hash it was trained for in ``key``, beside its cached samples of every training
prompt (``teacher-samples-<hash>.jsonl``, used by SeqKD and DPKD). A run uses the shipped teacher
only when its own hash (data, tokenizer, teacher config) equals that key; otherwise it trains
its own.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def main() -> None:
    from dpkd_bench.data.prepare import prepare_data
    from dpkd_bench.processes import Processes
    from dpkd_bench.recipe import load_recipe
    from dpkd_bench.teacher import SHIPPED_TEACHER, TeacherSource, cache_root, teacher_key

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="synthetic")
    parser.add_argument(
        "--fresh", action="store_true", help="train anew even if the user cache holds it"
    )
    args = parser.parse_args()
    recipe = load_recipe(args.recipe)
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "cache" if args.fresh else cache_root()
        cache.mkdir(parents=True, exist_ok=True)
        data = prepare_data(recipe, cache)
        key = teacher_key(recipe, data)
        cached = cache / f"teacher-{key}"
        if SHIPPED_TEACHER.exists():
            shutil.rmtree(SHIPPED_TEACHER)
        source = TeacherSource(recipe, data, Processes(), cache)
        teacher = source.load()
        source.samples(teacher)
        samples = source.samples_name
        teacher.half().save_pretrained(SHIPPED_TEACHER, safe_serialization=True)
        data.tokenizer.save_pretrained(SHIPPED_TEACHER)
        (SHIPPED_TEACHER / "key").write_text(key + "\n", encoding="utf-8")
        shutil.copyfile(cache / samples, SHIPPED_TEACHER / samples)
        print(f"shipped teacher {key} -> {SHIPPED_TEACHER} (from {cached})")


if __name__ == "__main__":
    main()
