"""``dpkd-bench tune``: the same tuning budget for every method, selected on the dev split.

Protocol (the recipe's ``tune`` section, :class:`TuneConfig`), ``trials`` trials per method
in two stages, a coordinate search with the learning rate first:

1. ``lr_points`` trials at the learning rates of one log-spaced grid from ``lr_min`` to
   ``lr_max`` (the same rates for every method), the method's own knobs at their defaults.
2. The other ``trials - lr_points`` trials at the best of those rates: first each listed value of
   the method's own knobs (its class's ``search_space``, at most two knobs) other than the
   default, then, for a method with fewer such values, learning rates between the best grid
   rate and its better neighbour (half a grid step, then a quarter, ... towards it, then away).

A trial is an ordinary unit (the variant ``method[train.lr=...,knob=...]``, seed ``tune.seed``)
of a run whose recipe is marked ``tuning_run``: it trains with validation on and is scored on
the dev split only (no eval set is decoded, so nothing is selected on one). Launchers run the
trials of a stage in parallel, ``--resume`` continues them. A trial's score is the dev score of
the weights it keeps (``train.select``); a method's best trial (ties: the earlier trial) gives
its settings in the tuned recipe, which records how it was tuned (:class:`TunedRecord`) so that
its leaderboard says so.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from dpkd_bench.config import require

# The tuning run's plan: {"recipe": the recipe tuned, "methods": {method: {"stage1": [trials],
# "stage2": [trials]}}, "planned": both stages known, "wall_s": {stage: seconds}} (written by
# dpkd_bench.tune_run)
PLAN = "tuning.json"
TUNED = "tuned.yaml"  # the tuned recipe, in the tuning run's directory
MAX_KNOBS = 2  # a method's own knobs in its search space, beside the learning rate
MAX_SECOND_STAGE = 6  # trials after the grid: knob values, then finer rates (all distinct)


@dataclass
class TuneConfig:
    """The recipe's ``tune`` section: trials per method, the learning-rate grid, the seed."""

    trials: int = 6  # per method, both stages
    lr_points: int = 4  # stage 1: learning rates of the grid
    lr_min: float = 5e-6
    lr_max: float = 3e-3
    seed: int = 1  # the training seed of every trial

    def __post_init__(self):
        require(self.trials >= 1, "trials", f"must be >= 1 (got {self.trials})")
        require(
            1 <= self.lr_points <= self.trials,
            "lr_points",
            f"must be in [1, trials={self.trials}] (got {self.lr_points})",
        )
        require(
            self.trials - self.lr_points <= MAX_SECOND_STAGE,
            "trials",
            f"may exceed lr_points by at most {MAX_SECOND_STAGE} (the second stage's trials)",
        )
        require(self.lr_min > 0, "lr_min", "must be > 0")
        require(self.lr_max >= self.lr_min, "lr_max", "must be >= lr_min")


@dataclass
class TunedRecord:
    """How a tuned recipe's per-method settings were chosen (written by ``dpkd-bench tune``;
    the report states it above the leaderboard)."""

    trials: int  # per method
    lr_grid: list[float]
    space: dict[str, dict[str, list[Any]]]  # method -> its own knobs and their values
    metric: str  # the dev metric
    select: str  # last | best_dev: which weights of a trial were scored
    split: str = "dev"
    seed: int = 1
    dev_examples: int = 0
    finished: str = ""  # when the tuning run finished
    wall_s: float = 0.0  # the tuning run's wall time
    run: str = ""  # the tuning run's directory
    commit: str | None = None
    chosen: dict[str, dict[str, Any]] = field(default_factory=dict)  # method -> its settings
    # Tuning runs of the same protocol that tuned more methods into this recipe later (a tuned
    # recipe tuned again for other methods): [{"methods", "run", "commit", "finished", "wall_s"}]
    later: list[dict[str, Any]] = field(default_factory=list)

    def describe(self) -> str:
        """One line for a report: the protocol in words."""
        return (
            f"tuned: {self.trials} trials per method on the {self.split} split "
            f"({self.metric}, greedy; weights kept: {self.select}), learning rates "
            f"{', '.join(f'{lr:g}' for lr in self.lr_grid)} plus each method's own knobs"
        )

    def same_protocol(self, other: TunedRecord) -> bool:
        """Whether ``other`` tuned with this record's protocol (its trials could sit beside
        this record's)."""
        keys = ("trials", "lr_grid", "metric", "select", "split", "seed", "dev_examples")
        return all(getattr(self, k) == getattr(other, k) for k in keys)

    def joined(self, later: TunedRecord) -> TunedRecord:
        """This record with the methods of ``later`` (a tuning run of the same protocol, made
        after it) added or re-tuned; ``later``'s run is listed in :attr:`later`."""
        if not self.same_protocol(later):
            raise ValueError("the tuning runs' protocols differ; they cannot share one record")
        run = {k: getattr(later, k) for k in ("run", "commit", "finished", "wall_s")}
        return dataclasses.replace(
            self,
            space={**self.space, **later.space},
            chosen={**self.chosen, **later.chosen},
            later=[*self.later, *later.later, {"methods": list(later.space), **run}],
        )


def _round(value: float) -> float:
    return float(f"{value:.2g}")


def lr_grid(cfg: TuneConfig) -> list[float]:
    """Stage 1's ``lr_points`` log-spaced learning rates, ``lr_min`` to ``lr_max``, 2 digits."""
    if cfg.lr_points == 1:
        return [_round(math.sqrt(cfg.lr_min * cfg.lr_max))]
    low, high = math.log10(cfg.lr_min), math.log10(cfg.lr_max)
    step = (high - low) / (cfg.lr_points - 1)
    return [_round(10 ** (low + i * step)) for i in range(cfg.lr_points)]


def search_space(name: str) -> dict[str, list[Any]]:
    """Method ``name``'s own knobs and their values, as its class declares them."""
    from dpkd_bench.methods import method_class

    space = {key: list(values) for key, values in method_class(name).search_space.items()}
    if len(space) > MAX_KNOBS:
        raise ValueError(f"method '{name}' declares {len(space)} knobs; at most {MAX_KNOBS}")
    return space


def first_stage(spec: str, cfg: TuneConfig) -> list[str]:
    """Stage 1's trials of method ``spec`` (a name or a variant): the grid's rates."""
    from dpkd_bench.variants import parse_variant, variant_name

    base, fixed = parse_variant(spec)
    return [variant_name(base, {**fixed, "train.lr": lr}) for lr in lr_grid(cfg)]


def second_stage(spec: str, recipe, scores: dict[float, float]) -> list[str]:
    """Stage 2's trials of ``spec`` in ``recipe`` (its ``tune`` section; its method settings
    are the knobs' defaults) given stage 1's dev ``scores`` (learning rate -> score)."""
    from dpkd_bench.methods import get_method
    from dpkd_bench.variants import parse_variant, variant_name

    cfg = recipe.tune
    count = cfg.trials - cfg.lr_points
    if count == 0:
        return []
    base, fixed = parse_variant(spec)
    grid = lr_grid(cfg)
    best = max(grid, key=lambda lr: (scores[lr], -grid.index(lr)))
    defaults = get_method(spec, **recipe.method_args.get(base, {})).config
    candidates = [
        {key: value}
        for key, values in search_space(base).items()
        for value in values
        if value != getattr(defaults, key)
    ]
    candidates += [{"train.lr": lr} for lr in _refinements(grid, best, scores, count)]
    return [
        variant_name(base, {**fixed, "train.lr": best, **change}) for change in candidates[:count]
    ]


def _refinements(grid: list[float], best: float, scores: dict, count: int) -> list[float]:
    """Up to ``count`` rates around ``best``: halfway (in log) towards its better grid neighbour,
    then away from it, then a quarter of a step each way, ..."""
    index = grid.index(best)
    ratio = (grid[-1] / grid[0]) ** (1 / max(len(grid) - 1, 1)) if len(grid) > 1 else 10.0
    lower = scores.get(grid[index - 1], -math.inf) if index > 0 else -math.inf
    upper = scores.get(grid[index + 1], -math.inf) if index + 1 < len(grid) else -math.inf
    toward = 1 if upper >= lower else -1
    found: list[float] = []
    fraction = 0.5
    while len(found) < count and fraction > 1e-3:
        for sign in (toward, -toward):
            lr = _round(best * ratio ** (sign * fraction))
            if lr not in found and lr != best:
                found.append(lr)
        fraction /= 2
    return found[:count]
