"""Launchers: where a run's units go once its shared stage is done.

``local`` (the default) runs them in the driver's process, one after another
(:meth:`dpkd_bench.runner.Runner.run_units`). ``ray`` (:mod:`.ray_launcher`) and ``slurm``
(:mod:`.slurm_launcher`) send every unit that is not done yet as a job of its own
(:class:`~dpkd_bench.launchers.job.UnitJob`) to a cluster and watch them here
(:func:`launch_units`, given to ``Runner.run``):
one line per unit as it starts, finishes or fails, and the overall count with the time left. A
unit that fails or whose worker is lost is sent again, up to ``launcher.max_retries`` times, and
continues from its checkpoint; after that it is a failed unit like any other. Each launcher
gives :func:`drive` three calls: ``submit(job) -> handle``, ``poll(handle)`` (None while the
job runs, its outcome when it ended, :class:`UnitLost` when its worker or job died) and
``close()``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from dpkd_bench.console import clock, log
from dpkd_bench.launchers.job import WORKER_LOG, UnitJob, UnitLost
from dpkd_bench.lock import LOCK, holder
from dpkd_bench.methods import plugin_files

if TYPE_CHECKING:
    from dpkd_bench.runner import Runner

POLL_S = 0.5


def make_launcher(runner: Runner):
    """The recipe's launcher, connected; a UserError when it cannot be used here."""
    cfg = runner.recipe.launcher
    if cfg.name == "ray":
        from dpkd_bench.launchers.ray_launcher import RayLauncher

        return RayLauncher(cfg, runner.run_dir.root, runner.cache)
    from dpkd_bench.launchers.slurm_launcher import SlurmLauncher

    return SlurmLauncher(cfg, runner.run_dir.root, runner.cache)


def unit_jobs(runner: Runner) -> tuple[list[UnitJob], int]:
    """The jobs of the units still to run, and how many units the run has."""
    recipe, cfg = runner.recipe, runner.recipe.launcher
    plugins = tuple(plugin_files(recipe.methods))
    jobs, total = [], 0
    for seed in recipe.seeds:
        for name in runner.methods:
            total += 1
            if runner.resume and runner.manifest.unit_done(name, seed):
                log(f"{name} seed {seed}: done already")
                continue
            jobs.append(
                UnitJob(
                    recipe,
                    str(Path(runner.run_dir.root).resolve()),
                    str(Path(runner.cache).resolve()),
                    name,
                    seed,
                    threads=cfg.cpus_per_unit or 1,
                    procs=max(cfg.gpus_per_unit, 1),
                    plugins=plugins,
                )
            )
    return jobs, total


class Progress:
    """The driver's lines: a unit started, finished, failed or retried, and the count."""

    def __init__(self, total: int, done: int):
        self.total, self.done, self.failed = total, done, 0
        self.start, self.finished_here = time.time(), 0

    def count(self) -> str:
        elapsed = time.time() - self.start
        ended = self.done + self.failed
        text = f"{ended}/{self.total} units ended ({self.failed} failed), {clock(elapsed)}"
        left = self.total - ended
        if self.finished_here and left:
            text += f", about {clock(elapsed / self.finished_here * left)} left"
        return text

    def started(self, job: UnitJob) -> None:
        log(f"{job.key}: started (attempt {job.attempt})")

    def ended(self, job: UnitJob, outcome: dict, final: bool) -> None:
        self.finished_here += 1 if final else 0
        if outcome["ok"]:
            self.done += 1
            log(f"{job.key}: done in {outcome['wall_s']:.1f}s on {outcome['host']}; {self.count()}")
            return
        where = job.unit_dir / WORKER_LOG
        if final:
            self.failed += 1
            log(f"{job.key}: FAILED ({outcome['error']}; log {where}); {self.count()}")
        else:
            log(f"{job.key}: failed ({outcome['error']}); sending it again from its checkpoint")


class Driver:
    """The jobs on a launcher, watched from here until each has ended for good."""

    def __init__(self, runner: Runner, launcher, progress: Progress):
        self.runner, self.launcher, self.progress = runner, launcher, progress
        self.running: dict = {}  # launcher handle -> job
        # (unit, attempt) not yet seen to start -> the unit lock's holder when it was sent
        self.before: dict[tuple[str, int], dict] = {}
        self.failed: list[str] = []

    def submit(self, job: UnitJob) -> None:
        # a lost attempt's lock may still be there: a start is a new holder
        self.before[job.key, job.attempt] = holder(job.unit_dir / LOCK)
        self.running[self.launcher.submit(job)] = job

    def look(self) -> None:
        """Announce the jobs that started (their unit's lock has a new holder), settle the ones
        that ended."""
        for handle, job in list(self.running.items()):
            sent = (job.key, job.attempt)
            if sent in self.before and holder(job.unit_dir / LOCK) not in ({}, self.before[sent]):
                del self.before[sent]
                self.progress.started(job)
            try:
                outcome = self.launcher.poll(handle)
            except UnitLost as lost:
                outcome = {"ok": False, "error": f"worker lost: {lost}", "lost": True}
            if outcome is not None:
                del self.running[handle]
                self.settle(job, outcome)

    def settle(self, job: UnitJob, outcome: dict) -> None:
        """Count an ended job; send a failed one again while it has retries left."""
        manifest = self.runner.manifest
        final = outcome["ok"] or job.attempt > self.runner.recipe.launcher.max_retries
        self.progress.ended(job, outcome, final)
        if outcome["ok"]:
            manifest.stage_times[f"unit:{job.key}"] = outcome["wall_s"]
        elif not final:
            self.submit(job.again())
        else:  # recorded here too: a lost worker or a failed torchrun could not record it
            self.failed.append(job.key)
            fields = {"state": "failed", "error": outcome["error"]}
            manifest.record_unit(job.method, job.seed, fields)


def launch_units(runner: Runner) -> list[str]:
    """Connect to the recipe's launcher, make the run's shared stage here, then run every unit
    not done yet as a job there; the failed units' keys. ``Runner.run(launch_units)``."""
    launcher = make_launcher(runner)  # before setup: a cluster that cannot be used fails fast
    try:
        runner.setup()
        return drive(runner, launcher)
    finally:
        launcher.close()


def drive(runner: Runner, launcher) -> list[str]:
    """Run every unit not done yet as a job on ``launcher`` (:func:`make_launcher`); the failed
    units' keys."""
    jobs, total = unit_jobs(runner)
    log(f"launcher {runner.recipe.launcher.name}: {len(jobs)} of {total} units to run")
    driver = Driver(runner, launcher, Progress(total, total - len(jobs)))
    for job in jobs:
        driver.submit(job)
    while driver.running:
        driver.look()
        time.sleep(POLL_S)
    return driver.failed
