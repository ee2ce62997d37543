"""The synthetic suite's own lm-evaluation-harness tasks, so ``eval.lm_eval`` runs offline.

``lm_eval_tasks/synthetic_facts.jsonl`` (shipped with the package) holds the first ``N_ITEMS``
held-out items of the default suite's ``synthetic-id`` set (data seed 0; never in its training
split), each with its Alpaca prompt, its canonical answer, its valid phrasings and
``N_CHOICES`` - 1 distractors: the canonical answers of other items of the same family. Two
tasks read it:

* ``dpkd_synthetic_mc`` (multiple choice): the log-likelihood of each answer after the prompt;
  ``acc`` and ``acc_norm``;
* ``dpkd_synthetic_gen`` (generation): greedy decoding until the end of the answer;
  ``exact_match`` against any of the item's valid phrasings (several families have more than
  one), case and punctuation ignored, after stripping surrounding whitespace. The filter's
  pattern is compiled in DOTALL mode (``(?s)``): lm-eval compiles it without flags, and the
  answers of the ``reverse`` and ``pattern`` families span several lines, which a plain ``.``
  would not match (lm-eval then scores its fallback ``[invalid]``, whatever the model wrote).

lm-eval resolves a task's local data file from the working directory, so the task YAMLs are
written with the data file's absolute path into a folder of the run (:func:`task_dir`) that is
given to lm-eval's ``TaskManager`` as ``include_path``. Rebuild the data file with
``python -m dpkd_bench.data.lm_eval_task`` after a change to the generator.
"""

from __future__ import annotations

import random
from pathlib import Path

import yaml

from dpkd_bench.data.synthetic import generate_suite
from dpkd_bench.data.template import build_prompt
from dpkd_bench.results import atomic_write_text, write_jsonl

SHIPPED = Path(__file__).parent / "lm_eval_tasks"
DATA_FILE = "synthetic_facts.jsonl"
N_ITEMS, N_CHOICES, SEED = 200, 4, 0
TASKS = ("dpkd_synthetic_mc", "dpkd_synthetic_gen")


def build_records(n_items: int = N_ITEMS, seed: int = SEED) -> list[dict]:
    """The task's items: prompt, canonical answer, choices and the index of the right one."""
    items = generate_suite(seed=seed, n_train=1, n_eval=500)["synthetic-id"]
    by_family: dict[str, list[str]] = {}
    for item in items:
        by_family.setdefault(item["family"], []).append(item["output"][0])
    rng = random.Random(f"lm-eval-{seed}")
    records = []
    for item in items[:n_items]:
        valid = set(item["output"])
        others = sorted({a for a in by_family[item["family"]] if a not in valid})
        if len(others) < N_CHOICES - 1:
            continue
        choices = rng.sample(others, N_CHOICES - 1)
        label = rng.randrange(N_CHOICES)
        choices.insert(label, item["output"][0])
        records.append(
            {
                "id": item["id"],
                "family": item["family"],
                "prompt": build_prompt(item["instruction"], item["input"]),
                "answer": item["output"][0],
                "answers": list(item["output"]),  # every valid phrasing
                "choices": choices,
                "label": label,
            }
        )
    return records


def task_configs(data_file: Path) -> dict[str, dict]:
    """The two task configs (lm-eval YAML as mappings) on ``data_file``."""
    common = {
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(data_file)}},
        "test_split": "test",
        "doc_to_text": "{{prompt}}",
        "target_delimiter": "",  # the Alpaca prompt ends with a newline the answer follows
        "metadata": {"version": 1.0},
    }
    return {
        "dpkd_synthetic_mc": {
            "task": "dpkd_synthetic_mc",
            **common,
            "output_type": "multiple_choice",
            "doc_to_choice": "{{choices}}",
            "doc_to_target": "{{label}}",
            "metric_list": [
                {"metric": "acc", "aggregation": "mean", "higher_is_better": True},
                {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True},
            ],
        },
        "dpkd_synthetic_gen": {
            "task": "dpkd_synthetic_gen",
            **common,
            "output_type": "generate_until",
            "doc_to_target": "{{answers}}",  # right if it is any of them
            "generation_kwargs": {"until": ["\n\n", "###"], "max_gen_toks": 64, "do_sample": False},
            "filter_list": [
                {
                    "name": "strip",
                    "filter": [
                        {"function": "regex", "regex_pattern": r"(?s)^\s*(.*?)\s*$"},
                        {"function": "take_first"},
                    ],
                }
            ],
            "metric_list": [
                {
                    "metric": "exact_match",
                    "aggregation": "mean",
                    "higher_is_better": True,
                    "ignore_case": True,
                    "ignore_punctuation": True,
                }
            ],
        },
    }


def task_dir(root: Path) -> Path:
    """``root/lm_eval_tasks``, holding the tasks' YAMLs on the shipped data file; its path."""
    folder = Path(root) / "lm_eval_tasks"
    folder.mkdir(parents=True, exist_ok=True)
    for name, config in task_configs((SHIPPED / DATA_FILE).resolve()).items():
        atomic_write_text(folder / f"{name}.yaml", yaml.safe_dump(config, sort_keys=False))
    return folder


def main() -> None:
    records = build_records()
    write_jsonl(SHIPPED / DATA_FILE, records)
    print(f"{len(records)} items -> {SHIPPED / DATA_FILE}")


if __name__ == "__main__":
    main()
