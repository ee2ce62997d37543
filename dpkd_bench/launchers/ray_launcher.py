"""The ``ray`` launcher: one Ray task per unit (``pip install -e ".[ray]"``).

``launcher.address``: ``auto`` joins the cluster this machine belongs to, ``ray://HOST:PORT`` a
remote one; unset, a local cluster of this machine's CPUs is started for the run and stopped
after it. Each task asks for ``launcher.cpus_per_unit`` CPUs (its intra-op threads) and
``launcher.gpus_per_unit`` GPUs. Ray does not retry the tasks itself: the driver does, so that a
failed unit and a lost worker are counted the same way (``launcher.max_retries``). Workers read
and write the run and cache directories, so on a cluster of several nodes both must be on
storage every node sees; before any unit is sent, a task on each node checks that it can read a
file the driver has just written into both.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from dpkd_bench.console import log
from dpkd_bench.errors import UserError
from dpkd_bench.launchers.job import UnitJob, UnitLost
from dpkd_bench.preflight import check_launcher
from dpkd_bench.recipe import LauncherConfig

PROBE = ".shared-probe"

try:  # an optional extra: without it, the launcher's constructor says how to install it
    import ray
except ImportError:
    ray = None


def _run_unit(job: UnitJob) -> dict:
    return job()


def _reads(path: str, token: str) -> bool:
    try:
        return Path(path).read_text(encoding="utf-8") == token
    except OSError:
        return False


class RayLauncher:
    """Units as Ray tasks on a cluster (joined, or started here for the run)."""

    def __init__(self, cfg: LauncherConfig, root: Path, cache: Path):
        check_launcher(cfg, root, cache)
        self.started_here = not ray.is_initialized()
        if self.started_here:
            try:
                if cfg.address:
                    ray.init(address=cfg.address, log_to_driver=False)
                else:
                    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
            except (ConnectionError, RuntimeError, ValueError) as err:
                detail = str(err).strip().splitlines()[0][:200] if str(err).strip() else ""
                raise UserError(
                    f"cannot connect to the Ray cluster at {cfg.address or 'a new local cluster'} "
                    f"({type(err).__name__}: {detail}); start it with `ray start --head`, or "
                    "unset launcher.address to start one on this machine"
                ) from None
        self.task = ray.remote(_run_unit).options(
            num_cpus=cfg.cpus_per_unit or 1, num_gpus=cfg.gpus_per_unit, max_retries=0
        )
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        log(f"ray: {len(nodes)} node(s), {ray.cluster_resources().get('CPU', 0):.0f} CPUs")
        if len(nodes) > 1:
            self.check_shared([Path(root), Path(cache)], nodes)

    def check_shared(self, dirs: list[Path], nodes: list[dict]) -> None:
        """A UserError unless a task on every node reads the probe files just written."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        token, probes = secrets.token_hex(8), [d / PROBE for d in dirs]
        for probe in probes:
            probe.write_text(token, encoding="utf-8")
        reader = ray.remote(_reads).options(num_cpus=0)
        try:
            for node in nodes:
                where = NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)
                for probe in probes:
                    seen = reader.options(scheduling_strategy=where).remote(str(probe), token)
                    if not ray.get(seen):
                        raise UserError(
                            f"{probe.parent} is not visible from Ray node "
                            f"{node.get('NodeManagerAddress', node['NodeID'])}; put the run "
                            "directory (--out) and the cache (DPKD_BENCH_CACHE) on storage "
                            "every node sees"
                        )
        finally:
            for probe in probes:
                probe.unlink(missing_ok=True)

    def submit(self, job: UnitJob):
        return self.task.remote(job)

    def poll(self, handle):
        ready, _ = ray.wait([handle], timeout=0)
        if not ready:
            return None
        try:
            return ray.get(handle)
        except ray.exceptions.RayError as err:  # the worker (or its node) died
            detail = (str(err).strip().splitlines() or [""])[0][:200]
            raise UnitLost(f"{type(err).__name__}: {detail}") from None

    def close(self) -> None:
        if self.started_here:
            ray.shutdown()
