"""Experiment trackers (``train.report_to``): TensorBoard, Weights & Biases and MLflow, through
accelerate's tracker classes.

Every unit is one tracker run named ``<method>/seed-<k>``, configured with the resolved recipe
(flattened keys, plus the unit's method settings). It gets every record of the unit's training
log as it is written (the loss, each loss term, the learning rate, tokens per second; the
step is the optimizer step), then the unit's final scores (``eval/<set>/<metric>``). Where they
write, in the run directory unless told otherwise:

* TensorBoard: ``DIR/tensorboard/<method>/seed-<k>/`` (event files);
* MLflow: the file store ``DIR/mlruns`` (experiment: the recipe's name), unless
  ``MLFLOW_TRACKING_URI`` names a server or another store;
* Weights & Biases: ``DIR/wandb``, project ``dpkd-bench`` (``WANDB_PROJECT`` to change it),
  offline when there is no login (no ``WANDB_API_KEY`` and no netrc entry); ``wandb sync``
  uploads it later.

A tracker named but not installed is a one-line error before the run starts
(:func:`check_trackers`).
"""

from __future__ import annotations

import importlib.util
import netrc
import os
from pathlib import Path
from typing import Any

from dpkd_bench.errors import UserError

TRACKERS = ("tensorboard", "wandb", "mlflow")
PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}
NOT_METRICS = ("step",)  # record fields that are not curves


def check_trackers(names) -> None:
    """A UserError for a named tracker whose package is not installed."""
    for name in names:
        package = PACKAGES[name]
        if importlib.util.find_spec(package) is None:
            raise UserError(
                f"train.report_to names {name}, but {package} is not installed; install it with "
                f'`pip install -e ".[trackers]"` (or `pip install {package}`), or remove it '
                "from train.report_to"
            )


def flatten(values: dict, prefix: str = "") -> dict[str, Any]:
    """Nested mappings as ``a.b.c`` keys; lists and None as text (trackers take scalars)."""
    flat = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        elif isinstance(value, bool | int | float | str):
            flat[f"{prefix}{key}"] = value
        else:
            flat[f"{prefix}{key}"] = str(value)
    return flat


def wandb_logged_in() -> bool:
    """Whether W&B has credentials here (an API key, or a netrc entry for its host)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        hosts = netrc.netrc().hosts
    except (OSError, netrc.NetrcParseError):
        return False
    return any("wandb" in host for host in hosts)


def _start(name: str, root: Path, key: str, experiment: str):
    from accelerate import tracking

    if name == "tensorboard":
        tracker = tracking.TensorBoardTracker(key, root / "tensorboard")
    elif name == "mlflow":
        import mlflow

        if not os.environ.get("MLFLOW_TRACKING_URI"):
            # MLflow 3 keeps its file store in maintenance mode behind this opt-in; it needs no
            # server or database, which is what a run directory wants
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            mlflow.set_tracking_uri((root / "mlruns").resolve().as_uri())
        tracker = tracking.MLflowTracker(experiment_name=experiment, run_name=key)
    else:
        project = os.environ.get("WANDB_PROJECT", "dpkd-bench")
        mode = None if wandb_logged_in() else "offline"
        (root / "wandb").mkdir(parents=True, exist_ok=True)
        # accelerate's first argument is W&B's project; the run's own name is `name`
        tracker = tracking.WandBTracker(
            project, name=key, dir=str(root / "wandb"), mode=mode, group=experiment
        )
    tracker.start()
    return tracker


class UnitTrackers:
    """The tracker runs of one unit: started with its configuration, fed its training records
    and final scores, finished."""

    def __init__(self, names, root: Path, key: str, experiment: str, config: dict):
        self.trackers = [_start(name, Path(root), key, experiment) for name in names]
        for tracker in self.trackers:
            tracker.store_init_configuration(flatten(config))

    def log(self, record: dict) -> None:
        """One record of the training log."""
        values = {
            f"train/{k}": v
            for k, v in record.items()
            if k not in NOT_METRICS and isinstance(v, int | float)
        }
        for tracker in self.trackers:
            tracker.log(values, step=record["step"])

    def scores(self, scores: dict, step: int) -> None:
        """The unit's final scores, ``{eval_set: {metric: value}}``."""
        values = {
            f"eval/{name}/{metric}": value
            for name, metrics in scores.items()
            for metric, value in metrics.items()
            if isinstance(value, int | float)
        }
        for tracker in self.trackers:
            tracker.log(values, step=step)

    def finish(self) -> None:
        for tracker in self.trackers:
            tracker.finish()
