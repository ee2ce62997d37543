"""What is in a run directory: its manifest and its finished units, in display order."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dpkd_bench.results import (
    EXAMPLE_SCORES,
    GENERATIONS,
    REFERENCE_ROWS,
    RunDir,
    is_safe_name,
    read_example_scores,
    read_jsonl,
    unit_key,
)

SMOKE_RECIPES = ("synthetic-quick",)  # flagged even when their manifest predates `smoke`


@dataclass(frozen=True)
class RunView:
    """A run directory's manifest and its finished units, in display order."""

    run: RunDir
    manifest: dict
    units: list[tuple[str, int]]

    @property
    def recipe_name(self) -> str:
        return str(self.manifest.get("recipe_name") or self.run.root.name)

    @property
    def smoke(self) -> bool:
        """A smoke-test recipe: its resolved recipe says ``smoke: true``, or it is named
        as one of SMOKE_RECIPES."""
        recipe = self.manifest.get("recipe")
        recipe = recipe if isinstance(recipe, dict) else {}
        names = {self.recipe_name, str(recipe.get("name"))}
        return recipe.get("smoke") is True or any(name in names for name in SMOKE_RECIPES)

    @property
    def methods(self) -> list[str]:
        return list(dict.fromkeys(method for method, _ in self.units))

    @property
    def eval_sets(self) -> list[str]:
        return [str(name) for name in self.manifest.get("eval_sets", [])]

    def not_scored(self) -> dict[str, dict]:
        """Manifest units that are not "done" (failed, running, pending)."""
        units = self.manifest.get("units") or {}
        return {k: v for k, v in units.items() if _state(v) != "done"}


def _state(entry: object) -> str:
    return entry.get("state", "done") if isinstance(entry, dict) else "done"


def display_order(found, preferred) -> list[str]:
    """``preferred`` names that were found, in that order, then the other found names sorted."""
    found = set(found)
    first = [name for name in dict.fromkeys(preferred) if name in found]
    return first + sorted(found - set(first))


def load_run(run: RunDir) -> RunView:
    manifest = run.load_manifest()
    states = manifest.get("units") or {}
    done = [u for u in run.completed_units() if _state(states.get(unit_key(*u))) == "done"]
    order = display_order({m for m, _ in done}, [*REFERENCE_ROWS, *manifest.get("methods", [])])
    rank = {method: i for i, method in enumerate(order)}
    return RunView(run, manifest, sorted(done, key=lambda u: (rank[u[0]], u[1])))


def not_scored_lines(view: RunView) -> list[str]:
    """One line per unit left out of the table: key, state and error."""
    lines = []
    for key, entry in view.not_scored().items():
        error = entry.get("error") if isinstance(entry, dict) else None
        detail = f" ({' '.join(str(error).split())})" if error else ""
        lines.append(f"{key}: {_state(entry)}{detail}")
    return lines


def read_generations(unit: Path, eval_set: str) -> list[dict]:
    path = unit / GENERATIONS / f"{eval_set}.jsonl"
    if not is_safe_name(eval_set) or not path.is_file():
        return []
    return [r for r in read_jsonl(path) if isinstance(r, dict)]


def unit_example_scores(unit: Path, eval_sets: list[str]) -> list[dict]:
    """A unit's per-example scores: eval_set, id, family and the scores, in file order.

    From ``scores.csv.gz`` when the unit has one (runs since it was written, and checked-in
    reports, which keep it instead of the generations), else from the generation files.
    """
    path = unit / EXAMPLE_SCORES
    if path.is_file():
        wanted = set(eval_sets)
        return [row for row in read_example_scores(path) if row["eval_set"] in wanted]
    return [
        {"eval_set": eval_set, **record}
        for eval_set in eval_sets
        for record in read_generations(unit, eval_set)
    ]


def first_seed_units(view: RunView) -> dict[str, Path]:
    """Each method's unit directory with the lowest finished seed."""
    dirs: dict[str, Path] = {}
    for method, seed in view.units:
        dirs.setdefault(method, view.run.unit_dir(method, seed))
    return dirs
