"""The ``slurm`` launcher: one SLURM job per unit, through submitit (``pip install -e ".[slurm]"``).

Each job asks for ``launcher.cpus_per_unit`` CPUs, ``launcher.gpus_per_unit`` GPUs and
``launcher.time`` on ``launcher.partition``, with ``launcher.extra`` as further sbatch options;
submitit keeps its scripts and the jobs' logs in ``DIR/.submitit``. A job that SLURM preempts
or times out is requeued by submitit (the job is checkpointable) and continues the unit from its
last checkpoint: SIGTERM makes the training loop write one first. ``launcher.cluster: local``
runs the same jobs as subprocesses of this machine through submitit's local executor, without
SLURM (tests, and a workstation).
"""

from __future__ import annotations

from pathlib import Path

from dpkd_bench.launchers.job import UnitJob, UnitLost
from dpkd_bench.preflight import check_launcher
from dpkd_bench.recipe import LauncherConfig, slurm_minutes

try:  # an optional extra: without it, the launcher's constructor says how to install it
    import submitit
    from submitit.helpers import Checkpointable
except ImportError:
    submitit, Checkpointable = None, object


class SlurmLauncher:
    """Units as submitit jobs: SLURM jobs, or local subprocesses (``cluster: local``)."""

    def __init__(self, cfg: LauncherConfig, root: Path, cache: Path):
        check_launcher(cfg, root, cache)
        utils = submitit.core.utils
        self.failures = (utils.FailedJobError, utils.UncompletedJobError)
        self.executor = submitit.AutoExecutor(folder=Path(root) / ".submitit", cluster=cfg.cluster)
        self.executor.update_parameters(
            name="dpkd-bench",
            timeout_min=slurm_minutes(cfg.time),
            cpus_per_task=cfg.cpus_per_unit or 1,
            gpus_per_node=cfg.gpus_per_unit,
            tasks_per_node=1,  # a unit of several GPUs starts its processes with torchrun
            slurm_partition=cfg.partition,
            slurm_additional_parameters=dict(cfg.extra) or None,
        )

    def submit(self, job: UnitJob):
        return self.executor.submit(RequeuedUnitJob(job))

    def poll(self, handle):
        if not handle.done():
            return None
        try:
            return handle.result()
        except self.failures as err:
            detail = (str(err).strip().splitlines() or [""])[-1][:200]
            raise UnitLost(f"job {handle.job_id}: {detail}") from None

    def close(self) -> None:
        pass


class RequeuedUnitJob(Checkpointable):
    """A unit job that SLURM's preemption or time limit requeues: submitit's
    ``Checkpointable`` submits the same job again, and it continues from the unit's
    checkpoint."""

    def __init__(self, job: UnitJob):
        self.job = job

    def __call__(self) -> dict:
        return self.job()
