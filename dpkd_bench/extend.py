"""Growing a run: ``dpkd-bench run --extend DIR --methods NEW [--seeds ...]``.

The run in ``DIR`` must be finished. Its recipe (from its manifest) gets the new methods,
variants and seeds added, so the grid becomes (its methods + the new ones) x (its seeds + the new
ones); nothing else may change: an override of anything but the launcher is refused with what
differs. With ``--recipe R`` the settings of the methods added come from ``R`` (a newer version of
the run's recipe, e.g. the same recipe tuned for them: their ``method_args`` and their entries in
the ``tuned`` record); everything else in ``R`` must equal the run's recipe. The runner then
continues ``DIR`` as a resume does: the data must hash as the run's
data, the teacher and ``student_init`` are the run's own (their identity and weights' hash are
checked against the manifest), the finished units are left untouched, only the new ones train,
and the report is rendered again. To put runs made separately on one leaderboard, see
``dpkd-bench report DIR1 DIR2 --out DIR`` (:mod:`dpkd_bench.report.merge`).
"""

from __future__ import annotations

from pathlib import Path

from dpkd_bench.errors import UserError
from dpkd_bench.manifest import plain_recipe, recipe_changes
from dpkd_bench.recipe import Recipe, load_recipe, resolve_recipe
from dpkd_bench.results import RunDir, with_legacy_values
from dpkd_bench.variants import parse_variant

GROWS = ("methods", "seeds", "launcher")  # what --extend may change


def added_settings(change: str, added: set[str]) -> bool:
    """Whether a recipe difference (:func:`recipe_changes`) is a setting of an added method only:
    its ``method_args``, or its place in the ``tuned`` record (and that record's later runs)."""
    key = change.split(":", 1)[0]
    owned = ["tuned.later"]
    owned += [
        f"{where}.{m}" for m in added for where in ("method_args", "tuned.space", "tuned.chosen")
    ]
    return any(key == p or key.startswith(f"{p}.") for p in owned)


def extended_recipe(
    root: str | Path,
    methods: list[str],
    seeds: list[int],
    overrides: list[str] = (),
    plugins: list[str] = (),
    source: str | None = None,
) -> Recipe:
    """The recipe of the finished run in ``root`` with ``methods`` and ``seeds`` added; with
    ``source`` (a recipe file or name), the added methods' settings are ``source``'s."""
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
    data = (
        with_legacy_values(then)
        if source is None
        else plain_recipe(load_recipe(source, plugins=plugins))
    )
    data["methods"] = [*then["methods"], *(m for m in methods if m not in then["methods"])]
    data["seeds"] = [*then["seeds"], *(s for s in seeds if s not in then["seeds"])]
    recipe = resolve_recipe(data, overrides, plugins)
    added = {parse_variant(m)[0] for m in methods} - {parse_variant(m)[0] for m in then["methods"]}
    changes = [
        c
        for c in recipe_changes(manifest, recipe, ignoring=GROWS)
        if source is None or not added_settings(c, added)
    ]
    if changes:
        what = "; ".join(changes[:3])
        raise UserError(
            f"cannot extend {root}: the recipe would differ from the run's ({what}); --extend "
            "adds methods and seeds only (the teacher, data and student_init stay the run's; "
            "with --recipe, only the added methods' settings may differ): drop those overrides, "
            "or start a new run"
        )
    return recipe
