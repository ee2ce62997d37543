"""The run's manifest (``manifest.json``): started, resumed, stages and units recorded, closed.

It holds the resolved recipe, package versions, git commit, data hashes, start and finish
times, the thread settings (:func:`thread_settings`: results depend on them, because float
reductions do), every stage's wall time and every unit's state. Resume (the CLI's
``--resume``) goes on only when the manifest's recipe and data are this run's
(:func:`check_same_recipe`, :func:`check_same_data`); a refused resume is a user error
saying what differs.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from dpkd_bench import __version__
from dpkd_bench.console import log
from dpkd_bench.data.prepare import PreparedData
from dpkd_bench.errors import DataError, RecipeError, UserError
from dpkd_bench.methods import plugin_sources
from dpkd_bench.recipe import Recipe
from dpkd_bench.results import METRICS, RunDir, same_identity, unit_key, with_legacy_values


def package_versions() -> dict[str, str]:
    import accelerate
    import datasets
    import transformers

    return {
        "dpkd_bench": __version__,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "accelerate": accelerate.__version__,
        "datasets": datasets.__version__,
    }


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_commit() -> str | None:
    """The package's commit, ``+dirty`` when its tracked files differ from it; None outside a
    git checkout."""
    commit = _git("rev-parse", "HEAD")
    if not commit:
        return None
    changed = _git("status", "--porcelain", "--untracked-files=no", "--", ".")
    return f"{commit}+dirty" if changed else commit


def machine_info() -> dict:
    """The processor results were computed on: float kernels differ between CPU vendors and
    instruction sets (AVX2, AVX-512), and so do the last digits of a CPU run; the GPU's name
    when there is one."""
    cpu = None
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            cpu = next(
                (ln.split(":", 1)[1].strip() for ln in handle if ln.startswith("model name")), None
            )
    except OSError:
        pass
    info = {
        "cpu": cpu or platform.processor() or platform.machine(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cores": os.cpu_count(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def thread_settings() -> dict:
    """The intra-op thread count torch uses now and the environment variables that set it
    (None when unset): CPU results differ with the thread count."""
    return {
        "torch": torch.get_num_threads(),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "MKL_NUM_THREADS": os.environ.get("MKL_NUM_THREADS"),
    }


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def differences(old: dict, new: dict, prefix: str = "", defaults: dict | None = None) -> list[str]:
    """'key: a in the run, b now' for every leaf where two nested mappings differ.

    A key missing from ``old`` whose value in ``new`` is its value in ``defaults`` (a key added
    to the recipe since the run was made, left at its default) is no difference.
    """
    defaults = defaults if isinstance(defaults, dict) else {}
    found = []
    for key in sorted(set(old) | set(new), key=str):
        then, now = old.get(key, "<unset>"), new.get(key, "<unset>")
        if isinstance(then, dict) and isinstance(now, dict):
            found += differences(then, now, f"{prefix}{key}.", defaults.get(key))
        elif then != now and not (key not in old and key in defaults and now == defaults[key]):
            found.append(f"{prefix}{key}: {then!r} in the run, {now!r} now")
    return found


def plain_recipe(recipe: Recipe) -> dict:
    """The recipe as the manifest stores it (JSON types)."""
    return json.loads(json.dumps(recipe.to_dict()))


def recipe_changes(manifest: dict, recipe: Recipe, ignoring: tuple[str, ...]) -> list[str]:
    """Where ``recipe`` differs from the recipe in ``manifest``, top-level sections
    ``ignoring`` left out (:func:`differences`)."""
    then = manifest.get("recipe") if isinstance(manifest.get("recipe"), dict) else {}
    trees = [with_legacy_values(then), plain_recipe(recipe), plain_recipe(Recipe())]
    then, now, defaults = ({k: v for k, v in t.items() if k not in ignoring} for t in trees)
    return differences(then, now, defaults=defaults)


def check_same_recipe(manifest: dict, recipe: Recipe, root: Path) -> None:
    """Raise a user error unless the run in ``root`` was made with ``recipe``; the launcher
    may differ (where units run does not change what they compute)."""
    changes = recipe_changes(manifest, recipe, ignoring=("launcher",))
    if changes:
        more = f"; and {len(changes) - 3} more" if len(changes) > 3 else ""
        raise RecipeError(
            f"cannot resume {root}: the recipe differs from the run's ({'; '.join(changes[:3])}"
            f"{more}); resume with the run's recipe, methods, seeds and overrides, or choose "
            "another --out"
        )


def check_same_data(manifest: dict, data_hashes: dict, root: Path) -> None:
    """Raise a user error unless the run in ``root`` was made on data of these hashes."""
    old = manifest.get("data_hashes") or {}
    changed = sorted(k for k in set(old) | set(data_hashes) if old.get(k) != data_hashes.get(k))
    if changed:
        raise DataError(
            f"cannot resume {root}: the data ({', '.join(changed)}) differs from the run's (the "
            "data files or the generator changed since); start a new run with another --out"
        )


class Manifest:
    """A run directory's manifest as the run keeps it: stage wall times and unit states.

    ``main``: whether this is the main process, the only one that writes the file.
    """

    def __init__(self, run_dir: RunDir, main: bool = True, command: str | None = None):
        self.run_dir = run_dir
        self.main = main
        self.command = command  # the command line that started the run (model cards show it)
        self.stage_times: dict[str, float] = {}

    def to_resume(self, recipe: Recipe, resume: bool, extend: bool = False) -> dict | None:
        """With ``resume``, the run's manifest once its recipe is ``recipe`` (with ``extend``,
        its methods and seeds may be more, as :func:`dpkd_bench.extend.extended_recipe`
        checked); None otherwise."""
        root = self.run_dir.root
        if not resume:
            return None
        if not self.run_dir.is_run():
            if root.is_dir() and any(root.iterdir()):
                raise UserError(
                    f"cannot resume {root}: it is not a dpkd-bench run directory (no "
                    "manifest.json); pass the --out of an earlier `dpkd-bench run`, or drop "
                    "--resume and choose an empty --out"
                )
            log(f"nothing to resume in {root} (no run there yet): starting the run")
            return None
        manifest = self.run_dir.load_manifest()
        if not extend:
            check_same_recipe(manifest, recipe, root)
        self.stage_times.update(manifest.get("stage_times") or {})
        self.stage_times.pop("total", None)
        return manifest

    def open(self, recipe: Recipe, data: PreparedData, resumed: dict | None) -> None:
        """Start a manifest, or continue the resumed run's once its data is this data."""
        if resumed is None:
            self._start(recipe, data)
            return
        check_same_data(resumed, data.hashes, self.run_dir.root)
        resumed["resumed"] = [*resumed.get("resumed", []), now_iso()]
        if resumed.get("threads") != thread_settings():  # this attempt's differ from the start's
            change = {"at": now_iso(), **thread_settings()}
            resumed["threads_resumed"] = [*resumed.get("threads_resumed", []), change]
        if list(recipe.methods) != resumed.get("methods") or list(recipe.seeds) != resumed.get(
            "seeds"
        ):  # extended: more methods or seeds (and, from --recipe, the settings of those added)
            resumed["extended"] = [*resumed.get("extended", []), now_iso()]
            resumed["methods"], resumed["seeds"] = list(recipe.methods), list(recipe.seeds)
            resumed["recipe"] = plain_recipe(recipe)
        else:
            resumed["recipe"]["launcher"] = plain_recipe(recipe)["launcher"]
        resumed["launcher"] = recipe.launcher.name
        resumed["finished"] = None
        resumed["stage_times"] = self.stage_times
        self.run_dir.save_manifest(resumed)
        log(f"resuming {self.run_dir.root}")

    def _start(self, recipe: Recipe, data: PreparedData) -> None:
        manifest = {
            "recipe_name": recipe.name,
            "recipe": recipe.to_dict(),
            "methods": list(recipe.methods),
            "seeds": list(recipe.seeds),
            "eval_sets": list(data.eval_sets),
            "eval_dropped": {n: s.dropped for n, s in data.eval_sets.items()},
            "versions": package_versions(),
            "git_commit": git_commit(),
            "threads": thread_settings(),
            "machine": machine_info(),
            "data_hashes": data.hashes,
            "launcher": recipe.launcher.name,  # its settings are in recipe.launcher
            "command": self.command,
            "started": now_iso(),
            "finished": None,
            "stage_times": self.stage_times,
            "units": {},
        }
        plugins = plugin_sources(recipe.methods)
        if plugins:  # methods from outside the package: source file and its hash
            manifest["plugins"] = plugins
        self.run_dir.save_manifest(manifest)

    def record_models(self, teacher: str, student_init_sha256: str | dict[str, str]) -> None:
        """The teacher's identity (Hub name, path or content hash) and the hash of
        ``student_init``'s weights (per training seed, ``{"<k>": sha}``, when they vary by
        seed): with the data hashes, what decides whether another run may extend this one or
        share its leaderboard. A resumed run must match them; an extended one adds seeds."""
        found = {"teacher": teacher, "student_init_sha256": student_init_sha256}
        with self.run_dir.editing_manifest() as manifest:
            for key, value in found.items():
                then = manifest.get(key)
                if then is not None and not same_identity(then, value):
                    raise DataError(
                        f"cannot continue {self.run_dir.root}: its {key} is {then}, this run's "
                        f"is {value} (a run made with another student.init_per_seed, teacher "
                        "or init recipe); start a new run with another --out"
                    )
                if isinstance(then, dict) and isinstance(value, dict):
                    value = {**then, **value}
                manifest[key] = value

    def record_stage(self, stage: str, seconds: float) -> None:
        self.stage_times[stage] = round(seconds, 2)
        if self.main and self.run_dir.is_run():
            with self.run_dir.editing_manifest() as manifest:
                manifest["stage_times"] = self.stage_times
        log(f"{stage}: {seconds:.1f}s")

    def timed(self, stage: str, fn, *args):
        """``fn(*args)``, its wall time recorded as ``stage``."""
        start = time.time()
        result = fn(*args)
        self.record_stage(stage, time.time() - start)
        return result

    def record_unit(self, name: str, seed: int, fields: dict) -> None:
        """Set a unit's fields in the manifest."""
        self.run_dir.update_unit(name, seed, **fields)

    def unit_done(self, name: str, seed: int) -> bool:
        """Whether the manifest says done and the unit's metrics.json exists."""
        units = self.run_dir.load_manifest().get("units", {})
        done = units.get(unit_key(name, seed), {}).get("state") == "done"
        return done and (self.run_dir.unit_dir(name, seed) / METRICS).is_file()

    def finish(self, total: float) -> None:
        """Close the manifest: the finish time and the run's total wall time."""
        self.stage_times["total"] = round(total, 2)
        with self.run_dir.editing_manifest() as manifest:
            manifest["finished"] = now_iso()
            manifest["stage_times"] = self.stage_times

    def failure_summary(self, failed: list[str], units: int, report_error: str | None) -> str:
        """One line: the failed units (of ``units``), where their errors are, and how to redo
        what failed."""
        root = self.run_dir.root
        parts = []
        if failed:
            recorded = self.run_dir.load_manifest().get("units", {})
            errors = [recorded.get(key, {}).get("error") or "?" for key in failed]
            kinds = [error.split(":")[0].split(" (")[0] for error in errors]
            named = [f"{key} ({kind})" for key, kind in zip(failed, kinds, strict=True)]
            parts.append(
                f"{len(failed)} of {units} units failed: {', '.join(named)}; their errors are in "
                f"{self.run_dir.manifest_path}; fix the cause and rerun them with --resume "
                f"--out {root}"
            )
        if report_error:
            parts.append(
                f"the report failed ({report_error}); redo it with `dpkd-bench report {root}`"
            )
        return "error: " + "; ".join(parts)
