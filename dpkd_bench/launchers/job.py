"""One unit (method x seed) as a launcher's job: what a worker is sent, and what it does.

A :class:`UnitJob` is plain data (the recipe, the run and cache directories, the unit, its
threads, processes and attempt) that Ray and submitit pickle to a worker (and that is written
as JSON for the processes of a torchrun unit, :meth:`UnitJob.to_plain`). There
:func:`run_job` holds the unit's lock (``runs/<method>/seed-<k>/.lock``), loads what the
driver's setup made (:meth:`Runner.unit_inputs`), trains and evaluates the unit exactly as the
local launcher does (:meth:`Runner.run_unit`, from its checkpoint when one is there), writes
the unit's entry in the manifest and returns an outcome. The worker's log goes to the unit's
``worker.log`` (a file: progress as lines, no bars). A unit of several processes
(``launcher.gpus_per_unit`` > 1) runs under ``torchrun`` inside its job, one process per GPU
(:mod:`dpkd_bench.launchers.torchrun_unit`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from dpkd_bench.config import build
from dpkd_bench.errors import UserError, describe_error
from dpkd_bench.lock import HEARTBEAT_S, STALE_S, run_lock
from dpkd_bench.recipe import Recipe
from dpkd_bench.results import RunDir, read_json, unit_key, write_json

WORKER_LOG = "worker.log"


class UnitLost(Exception):
    """A unit's worker or job died before it gave an outcome."""


@dataclass(frozen=True)
class UnitJob:
    """A unit for a worker; calling it runs the unit and gives its outcome (a dict: ``ok``,
    ``error``, ``wall_s``, ``host``)."""

    recipe: Recipe
    out: str
    cache: str
    method: str
    seed: int
    threads: int | None = None  # intra-op threads; None: torch's default
    procs: int = 1  # processes of the unit (one per GPU); above 1 under torchrun
    plugins: tuple[str, ...] = ()  # plugin files the worker loads before the method is built
    attempt: int = 1

    @property
    def key(self) -> str:
        return unit_key(self.method, self.seed)

    @property
    def unit_dir(self) -> Path:
        return RunDir(self.out).unit_dir(self.method, self.seed)

    def again(self) -> UnitJob:
        """The next attempt (it continues from the unit's checkpoint)."""
        return dataclasses.replace(self, attempt=self.attempt + 1)

    def to_plain(self) -> dict:
        """The job as JSON types (for the processes torchrun starts)."""
        return {**dataclasses.asdict(self), "recipe": self.recipe.to_dict()}

    @classmethod
    def from_plain(cls, data: dict) -> UnitJob:
        """The job :meth:`to_plain` wrote; the recipe is checked again as it is built."""
        recipe = build(Recipe, data["recipe"])
        return cls(**{**data, "recipe": recipe, "plugins": tuple(data["plugins"])})

    def __call__(self) -> dict:
        if self.procs > 1:
            return _torchrun(self)
        return run_job(self)


def run_job(job: UnitJob) -> dict:
    """Train and evaluate ``job``'s unit in this process (one of its processes, under
    torchrun); its outcome."""
    import torch

    from dpkd_bench.methods import load_plugins
    from dpkd_bench.runner import Runner

    start = time.time()
    job.unit_dir.mkdir(parents=True, exist_ok=True)
    previous_threads = torch.get_num_threads()
    log_file = open(job.unit_dir / WORKER_LOG, "a", encoding="utf-8")  # noqa: SIM115
    with log_file, contextlib.redirect_stderr(log_file):
        try:
            if job.threads:
                torch.set_num_threads(job.threads)
            load_plugins(job.plugins)
            recipe = dataclasses.replace(job.recipe, methods=[job.method])
            runner = Runner(recipe, Path(job.out), Path(job.cache), resume=True, worker=True)
            runner.unit_fields.update(attempts=job.attempt)
            wait = STALE_S + HEARTBEAT_S  # a lost earlier attempt's lock goes stale
            with run_lock(job.unit_dir, enabled=runner.procs.main, wait_s=wait):
                inputs = runner.unit_inputs([job.seed])
                method = runner.methods[job.method]
                ok = runner.run_unit(job.method, method, job.seed, inputs)
            error = None if ok else _recorded_error(job)
        except Exception as err:  # recorded by the driver, which retries or reports it
            ok, error = False, describe_error(err)
            print(f"[dpkd-bench] {job.key}: FAILED ({error})", file=sys.stderr, flush=True)
        finally:
            torch.set_num_threads(previous_threads)
    return {
        "ok": ok,
        "error": error,
        "wall_s": round(time.time() - start, 2),
        "host": socket.gethostname(),
    }


def _recorded_error(job: UnitJob) -> str | None:
    """The error the unit recorded in the manifest when it failed."""
    units = RunDir(job.out).load_manifest().get("units", {})
    return units.get(job.key, {}).get("error")


def _torchrun(job: UnitJob) -> dict:
    """Run ``job`` under torchrun, one process per GPU; the outcome of its main process."""
    job.unit_dir.mkdir(parents=True, exist_ok=True)
    spec = job.unit_dir / f".job-{job.attempt}.json"
    write_json(spec, dataclasses.replace(job, procs=1).to_plain())
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={job.procs}",
        "-m",
        "dpkd_bench.launchers.torchrun_unit",
        str(spec),
    ]
    with open(job.unit_dir / WORKER_LOG, "a", encoding="utf-8") as log_file:
        done = subprocess.run(command, stdout=log_file, stderr=subprocess.STDOUT, env=os.environ)
    outcome = outcome_path(spec)
    if done.returncode != 0 or not outcome.is_file():
        return {
            "ok": False,
            "error": f"torchrun exited with status {done.returncode}; see {WORKER_LOG}",
            "wall_s": None,
            "host": socket.gethostname(),
        }
    return read_json(outcome)


def outcome_path(spec: Path) -> Path:
    """Where the main process of a torchrun unit writes its outcome, beside the job file."""
    return spec.with_name(f"{spec.stem}.outcome.json")


def main(spec: str) -> int:
    """One process of a torchrun unit: run the job written as JSON at ``spec``; the main
    process writes the outcome beside it."""
    data = read_json(spec)
    if not isinstance(data, dict) or "recipe" not in data:
        raise UserError(f"{spec} does not hold a dpkd-bench unit job")
    outcome = run_job(UnitJob.from_plain(data))
    if int(os.environ.get("RANK", "0")) == 0:
        write_json(outcome_path(Path(spec)), outcome)
    return 0 if outcome["ok"] else 1
