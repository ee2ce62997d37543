"""Wall time of a whole run with and without the teacher-logit cache.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/end_to_end.py                 # default
    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/end_to_end.py --recipe synthetic-quick

Runs the recipe twice through ``dpkd_bench.runner.Runner`` into temporary run directories:
exact (every method as the recipe says), then with ``<method>.teacher_cache_k=<k>`` for every
method that has the option, so the runner builds the cache once and attaches it (earlier
``teacher-topk-*`` caches are removed first, so the build time counts). The teacher is trained
or loaded into the cache directory (``$DPKD_BENCH_CACHE``) before either timed run, so neither
pays for it. Prints ``end_to_end_s cache=<off|on> <s>``, ``end_to_end_ratio <off / on>`` and the
per-stage times of both runs.
"""

from __future__ import annotations

import benchkit  # noqa: F401  (first: sets OMP_WAIT_POLICY before torch loads)

# isort: split
import argparse
import json
import shutil
import tempfile
import time
from dataclasses import fields
from pathlib import Path

from benchkit import print_machine

from dpkd_bench.data.prepare import prepare_data
from dpkd_bench.methods import METHODS
from dpkd_bench.processes import Processes
from dpkd_bench.recipe import load_recipe
from dpkd_bench.runner import Runner
from dpkd_bench.teacher import TeacherSource, cache_root
from dpkd_bench.teacher_cache import DEFAULT_K
from dpkd_bench.variants import parse_variant


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", default="synthetic")
    parser.add_argument("--k", type=int, default=DEFAULT_K)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    return parser.parse_args()


def cache_overrides(methods: list[str], k: int) -> list[str]:
    """``<method>.teacher_cache_k=k`` for every listed method whose config has the option."""
    bases = dict.fromkeys(parse_variant(m)[0] for m in methods)
    return [
        f"{base}.teacher_cache_k={k}"
        for base in bases
        if "teacher_cache_k" in {f.name for f in fields(METHODS[base].Config)}
    ]


def drop_topk_caches(root: Path) -> None:
    """Remove earlier teacher-logit caches (derived data) so the timed run builds its own."""
    for old in root.glob("teacher-topk-*"):
        shutil.rmtree(old)


def timed_run(runner: Runner) -> tuple[float, dict]:
    start = time.perf_counter()
    status = runner.run()
    wall = time.perf_counter() - start
    if status != 0:
        raise SystemExit(f"the run in {runner.run_dir.root} failed (exit status {status})")
    manifest = json.loads((runner.run_dir.root / "manifest.json").read_text(encoding="utf-8"))
    return wall, manifest.get("stage_times", {})


def main() -> None:
    args = parse_args()
    print_machine(args.threads)
    exact = load_recipe(args.recipe, args.overrides)
    extra = cache_overrides(exact.methods, args.k)
    cached = load_recipe(args.recipe, [*args.overrides, *extra])
    print(f"setup recipe={exact.name} methods={','.join(exact.methods)} cache: {' '.join(extra)}")
    data = prepare_data(exact, cache_root())
    with tempfile.TemporaryDirectory() as tmp:
        TeacherSource(exact, data, Processes()).load()  # trained/loaded once, untimed
        off, off_stages = timed_run(Runner(exact, Path(tmp) / "off"))
        drop_topk_caches(cache_root())
        on, on_stages = timed_run(Runner(cached, Path(tmp) / "on"))
    for label, stages in (("off", off_stages), ("on", on_stages)):
        for stage, seconds in stages.items():
            print(f"stage_s cache={label} {stage} {seconds}")
    print(f"end_to_end_s cache=off {off:.1f}")
    print(f"end_to_end_s cache=on {on:.1f}")
    print(f"end_to_end_ratio {off / on:.3f}")


if __name__ == "__main__":
    main()
