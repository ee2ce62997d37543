"""Growing a run: ``dpkd-bench run --extend DIR --methods NEW [--seeds ...]``.

The run in ``DIR`` must be finished. Its recipe (from its manifest) gets the new methods,
variants and seeds added, so the grid becomes (its methods + the new ones) x (its seeds + the new
ones); nothing else may change: an override of anything but the launcher is refused with what
differs. The runner then continues ``DIR`` as a resume does: the data must hash as the run's
data, the teacher and ``student_init`` are the run's own (their identity and weights' hash are
checked against the manifest), the finished units are left untouched, only the new ones train,
and the report is rendered again. To put runs made separately on one leaderboard, see
``dpkd-bench report DIR1 DIR2 --out DIR`` (:mod:`dpkd_bench.report.merge`).
"""

from __future__ import annotations

from pathlib import Path

from dpkd_bench.errors import UserError
from dpkd_bench.manifest import recipe_changes
from dpkd_bench.recipe import Recipe, resolve_recipe
from dpkd_bench.results import RunDir, with_legacy_values

GROWS = ("methods", "seeds", "launcher")  # what --extend may change


def extended_recipe(
    root: str | Path,
    methods: list[str],
    seeds: list[int],
    overrides: list[str] = (),
    plugins: list[str] = (),
) -> Recipe:
    """The recipe of the finished run in ``root`` with ``methods`` and ``seeds`` added."""
    run_dir = RunDir(root)
    manifest = run_dir.load_manifest()
    if not manifest.get("finished"):
        raise UserError(
            f"cannot extend {root}: the run is not finished; finish it first with `dpkd-bench "
            f"run --resume --out {root}`, then extend it"
        )
    if not methods and not seeds:
        raise UserError(
            "--extend adds methods or seeds to a run; name them with --methods and/or --seeds"
        )
    then = manifest.get("recipe")
    if not isinstance(then, dict):
        raise UserError(f"{run_dir.manifest_path} holds no recipe; it cannot be extended")
    data = with_legacy_values(then)
    data["methods"] = [*then["methods"], *(m for m in methods if m not in then["methods"])]
    data["seeds"] = [*then["seeds"], *(s for s in seeds if s not in then["seeds"])]
    recipe = resolve_recipe(data, overrides, plugins)
    changes = recipe_changes(manifest, recipe, ignoring=GROWS)
    if changes:
        what = "; ".join(changes[:3])
        raise UserError(
            f"cannot extend {root}: the recipe would differ from the run's ({what}); --extend "
            "adds methods and seeds only (the teacher, data and student_init stay the run's): "
            "drop those overrides, or start a new run"
        )
    return recipe
