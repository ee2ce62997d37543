"""One leaderboard from several runs: ``dpkd-bench report DIR1 DIR2 ... --out DIR``.

Runs can share a leaderboard when they scored the same models on the same data: the same data
hashes (training data, tokenizer, every eval set), the same teacher and the same
``student_init`` weights, as their manifests record. A run that differs in any of these is
refused with what differs. The merged directory holds the first run's manifest with every run's
methods, seeds and units (``merged_from`` names the runs), the reference rows (teacher,
``student_init``) of the first run, and a copy of every unit's results (metrics, generations,
logs; not the saved weights or checkpoints); it is then rendered as any run directory. A
unit that two runs both hold is refused: merge runs of different methods or seeds.
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

from dpkd_bench.errors import UserError
from dpkd_bench.results import (
    REFERENCE_ROWS,
    RunDir,
    same_identity,
    unit_key,
    with_legacy_values,
)

IDENTITY = ("data_hashes", "teacher", "student_init_sha256")
NOT_COPIED = ("student", "checkpoint*", ".checkpoint*", ".lock", "*.tmp-*")


def identity_difference(a: dict, b: dict) -> str | None:
    """What differs between two manifests' data, teacher and student_init; None if nothing."""
    for key in IDENTITY:
        if key not in a or key not in b:
            return f"{key} is not recorded in both manifests (a run made before it was recorded)"
        if not same_identity(a[key], b[key]):
            if key == "data_hashes":
                changed = sorted(
                    k for k in set(a[key]) | set(b[key]) if a[key].get(k) != b[key].get(k)
                )
                return f"data ({', '.join(changed)})"
            return f"{key} ({a[key]} vs {b[key]})"
    students = [with_legacy_values(m.get("recipe") or {}).get("student") for m in (a, b)]
    if students[0] != students[1]:  # per-seed inits of other seeds: compare how they are made
        return "the student and its student_init recipe (recipe.student)"
    return None


def merge_runs(dirs: list[str | Path], out: str | Path) -> Path:
    """Merge the runs ``dirs`` into the new directory ``out``; ``out``."""
    runs = [RunDir(d) for d in dirs]
    manifests = [run.load_manifest() for run in runs]
    first = manifests[0]
    for run, manifest in zip(runs[1:], manifests[1:], strict=True):
        differs = identity_difference(first, manifest)
        if differs:
            raise UserError(
                f"cannot merge {runs[0].root} and {run.root}: {differs} differs; runs share a "
                "leaderboard only when their data, teacher and student_init are the same "
                "(grow one run with `dpkd-bench run --extend DIR` instead)"
            )
    target = RunDir(out)
    if target.root.exists() and any(target.root.iterdir()):
        raise UserError(f"--out {target.root} is not empty; choose a new directory for the merge")
    merged = copy.deepcopy(first)
    merged["units"], merged["merged_from"] = {}, [str(run.root.resolve()) for run in runs]
    owner: dict[str, Path] = {}
    for run, manifest in zip(runs, manifests, strict=True):
        for method, seed in run.completed_units():
            key = unit_key(method, seed)
            if method in REFERENCE_ROWS and run is not runs[0]:
                continue  # the same models, scored once: the first run's rows
            if key in owner:
                raise UserError(
                    f"both {owner[key]} and {run.root} hold {key}; merge runs of different "
                    "methods or seeds"
                )
            owner[key] = run.root
            merged["units"][key] = manifest.get("units", {}).get(key, {"state": "done"})
        for name in ("methods", "seeds"):
            values = merged[name]
            merged[name] = [*values, *(v for v in manifest.get(name, []) if v not in values)]
            merged["recipe"][name] = merged[name]
    for key, source in owner.items():
        method, seed = key.split("/seed-")
        shutil.copytree(
            RunDir(source).unit_dir(method, int(seed)),
            target.unit_dir(method, int(seed)),
            ignore=shutil.ignore_patterns(*NOT_COPIED),
        )
    target.root.mkdir(parents=True, exist_ok=True)
    target.save_manifest(merged)
    return target.root
