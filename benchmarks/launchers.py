"""Wall time of the same 4-unit run with the units one after another and two at a time.

    .venv/bin/pip install -e ".[ray]"
    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/launchers.py

Three ``dpkd-bench run`` processes on the default recipe with ``--methods sft,kd --seeds 1,2``
(four units), into temporary run directories (``--keep DIR`` keeps them):

* ``local``: the units one after another in the driver, with two threads (serial);
* ``ray-serial``: ``--launcher ray`` on a local cluster of this machine's two CPUs with
  ``launcher.cpus_per_unit=2``: one unit at a time, two threads (the launcher's own cost: a
  worker process per unit that loads the shared stage from disk);
* ``ray-parallel``: the same with ``launcher.cpus_per_unit=1``: two units at a time, one
  thread each.

All make the same shared stage first (data, cached teacher, ``student_init``, whose steps
``--init-steps`` shortens). The figures that compare them are the unit phases (total minus the
shared stage, from each manifest's stage times); the whole runs are printed beside them. Prints
``launcher_units_s`` and ``launcher_total_s`` per case, every unit's wall time, and
``units_speedup`` of each case over ``local`` (local / case).
"""

from __future__ import annotations

import benchkit  # noqa: F401  (first: sets OMP_WAIT_POLICY before torch loads)

# isort: split
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchkit import print_machine

SHARED_STAGES = ("data", "teacher", "student_init", "eval:teacher", "eval:student_init")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="synthetic")
    parser.add_argument("--methods", default="sft,kd")
    parser.add_argument("--seeds", default="1,2")
    parser.add_argument("--init-steps", type=int, default=200, help="student.init_train.steps")
    parser.add_argument("--keep", type=Path, help="keep the run directories here")
    return parser.parse_args()


CASES = {
    "local": ("local", None),
    "ray-serial": ("ray", 2),
    "ray-parallel": ("ray", 1),
}


def run(args, out: Path, launcher: str, cpus: int | None) -> dict:
    """One ``dpkd-bench run``; its wall time, its unit phase and the manifest."""
    command = [
        sys.executable,
        "-m",
        "dpkd_bench.cli",
        "run",
        "--recipe",
        args.recipe,
        "--methods",
        args.methods,
        "--seeds",
        args.seeds,
        "--out",
        str(out),
        "--launcher",
        launcher,
        f"student.init_train.steps={args.init_steps}",
    ]
    if cpus:
        command.append(f"launcher.cpus_per_unit={cpus}")
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=os.environ)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"error: the {launcher} run failed:\n{done.stderr[-3000:]}")
    stages = json.loads((out / "manifest.json").read_text())["stage_times"]
    shared = sum(stages.get(name, 0.0) for name in SHARED_STAGES)
    return {"wall": wall, "units": stages["total"] - shared, "stages": stages}


def main() -> None:
    args = parse_args()
    print_machine()
    units = len(args.methods.split(",")) * len(args.seeds.split(","))
    print(f"run recipe={args.recipe} methods={args.methods} seeds={args.seeds} units={units}")
    with tempfile.TemporaryDirectory(prefix="dpkd-launchers-") as tmp:
        root = args.keep or Path(tmp)
        results = {
            case: run(args, root / case, launcher, cpus) for case, (launcher, cpus) in CASES.items()
        }
    for case, result in results.items():
        print(f"launcher_units_s case={case} {result['units']:.1f}")
        print(f"launcher_total_s case={case} {result['wall']:.1f}")
        unit_walls = {k: v for k, v in result["stages"].items() if k.startswith("unit:")}
        print(f"unit_walls case={case} {json.dumps(unit_walls)}")
    for case, result in results.items():
        if case != "local":
            print(f"units_speedup case={case} {results['local']['units'] / result['units']:.2f}")


if __name__ == "__main__":
    main()
