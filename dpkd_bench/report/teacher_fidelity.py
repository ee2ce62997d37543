"""Teacher fidelity: each unit's fidelity.json (written by ``dpkd_bench.fidelity``) as one
table of means over training seeds."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from dpkd_bench.errors import UserError
from dpkd_bench.report.tables import NO_VALUE
from dpkd_bench.report.view import RunView
from dpkd_bench.results import read_json

FIDELITY = "fidelity.json"  # per unit; written by dpkd_bench.fidelity.write_fidelity
# fidelity.json key, column label, which way is closer to the teacher
FIDELITY_FIELDS = (
    ("kl_teacher_student", "KL(teacher‖student)", "lower"),
    ("kl_student_teacher", "KL(student‖teacher)", "lower"),
    ("top1_agreement", "top-1 agreement", "higher"),
    ("length_ratio", "length ratio", "1 is closest"),
)
FIDELITY_LEGEND = (
    "Teacher-forced on each eval prompt with its first reference: mean over response tokens of "
    "KL(teacher‖student) and KL(student‖teacher) in nats (lower is closer to the teacher) and "
    "the fraction of response positions where the two argmax tokens agree (higher is closer); "
    "length ratio = mean generated length of the method / of the teacher, in words, over every "
    "generation seed (1 is closest). Mean over training seeds."
)


def _fidelity_rows(path: Path, method: str, seed: int) -> list[dict]:
    data = read_json(path)
    evals = data.get("eval") if isinstance(data, dict) else None
    if not isinstance(evals, dict):
        raise UserError(
            f'{path} does not follow the fidelity schema; expected {{"eval": {{"<eval_set>": '
            '{"kl_teacher_student": ..., ...}}}}; delete it or rewrite it with '
            "dpkd_bench.fidelity.write_fidelity"
        )
    rows = []
    for eval_set, values in evals.items():
        values = values if isinstance(values, dict) else {}
        row = {"method": method, "seed": seed, "eval_set": str(eval_set)}
        for key, _, _ in FIDELITY_FIELDS:
            value = values.get(key)
            row[key] = float(value) if isinstance(value, (int, float)) else math.nan
        rows.append(row)
    return rows


def fidelity_scores(view: RunView) -> pd.DataFrame:
    """One row per (unit with a fidelity.json, eval set): method, seed, eval_set, figures."""
    rows = []
    for method, seed in view.units:
        path = view.run.unit_dir(method, seed) / FIDELITY
        if path.is_file():
            rows += _fidelity_rows(path, method, seed)
    columns = ["method", "seed", "eval_set", *(key for key, _, _ in FIDELITY_FIELDS)]
    return pd.DataFrame(rows, columns=columns)


def _fixed(value: float, digits: int = 3) -> str:
    return NO_VALUE if math.isnan(value) else f"{value:.{digits}f}"


def fidelity_table(scores: pd.DataFrame) -> pd.DataFrame:
    """Display table (text cells): method, eval set, seeds, then each figure's mean over seeds."""
    keys = [key for key, _, _ in FIDELITY_FIELDS]
    labels = [label for _, label, _ in FIDELITY_FIELDS]
    header = ["method", "eval set", "seeds", *labels]
    if scores.empty:
        return pd.DataFrame(columns=header)
    grouped = scores.groupby(["method", "eval_set"], sort=False)
    means = grouped[keys].mean()
    seeds = grouped["seed"].count()
    rows = [
        [method, eval_set, str(seeds.loc[(method, eval_set)])]
        + [_fixed(float(means.at[(method, eval_set), key])) for key in keys]
        for method, eval_set in means.index
    ]
    return pd.DataFrame(rows, columns=header)
