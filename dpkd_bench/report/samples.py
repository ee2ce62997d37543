"""From the generation files: sample generations beside their references, and exact match
per task family."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from dpkd_bench.report.view import (
    RunView,
    first_seed_units,
    read_generations,
    unit_example_scores,
)

SAMPLES_PER_SET = 5
FAMILY_COLUMNS = ["method", "eval_set", "family", "n", "exact_match", "rougeL"]


@dataclass(frozen=True)
class Sample:
    id: str
    prompt: str
    references: list[str]
    predictions: dict[str, str | None]  # method -> first prediction (None: not found)


def family_scores(view: RunView) -> pd.DataFrame:
    """Exact match per task family (records with a ``family``), mean over every finished seed.

    Columns: method, eval_set, family, n, exact_match, rougeL. Empty when no record has one.
    """
    rows = []
    for method, seed in view.units:
        for record in unit_example_scores(view.run.unit_dir(method, seed), view.eval_sets):
            if record.get("family"):
                rows.append(
                    {
                        "method": method,
                        "eval_set": record["eval_set"],
                        "family": record["family"],
                        "exact_match": float(record.get("exact_match", 0.0)),
                        "rougeL": float(record.get("rougeL", 0.0)),
                    }
                )
    if not rows:
        return pd.DataFrame(columns=FAMILY_COLUMNS)
    frame = pd.DataFrame(rows)
    grouped = frame.groupby(["method", "eval_set", "family"], sort=False)
    table = grouped.agg(
        n=("exact_match", "size"), exact_match=("exact_match", "mean"), rougeL=("rougeL", "mean")
    )
    return table.reset_index().round(2)


def first_prediction(record: dict | None) -> str | None:
    predictions = (record or {}).get("predictions") or []
    return str(predictions[0]) if predictions else None


def eval_samples(view: RunView, eval_set: str, k: int = SAMPLES_PER_SET) -> list[Sample]:
    """The first ``k`` examples of ``eval_set`` and every method's first prediction on them."""
    by_method = {
        method: {str(r.get("id")): r for r in read_generations(unit, eval_set)}
        for method, unit in first_seed_units(view).items()
    }
    source = next((records for records in by_method.values() if records), {})
    return [
        Sample(
            id=example_id,
            prompt=str(record.get("prompt", "")),
            references=[str(r) for r in record.get("references") or []],
            predictions={m: first_prediction(rs.get(example_id)) for m, rs in by_method.items()},
        )
        for example_id, record in list(source.items())[:k]
    ]
