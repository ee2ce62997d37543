"""Model cards: the ``README.md`` the Hugging Face Hub shows, for every model a run saves.

Each saved student (``runs/<method>/seed-<k>/student``, ``student_init``) and a teacher trained
here gets one once it has been evaluated: YAML front matter (library, pipeline, base model and
datasets when they are Hub names, tags, the method and its settings, and a ``model-index`` with
ROUGE-L and exact match per eval set), then a short text with the scores and the command that
made the model. The directory then loads with ``from_pretrained`` and uploads as it is
(``hf upload OWNER/NAME DIR``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from dpkd_bench import __version__
from dpkd_bench.errors import is_hub_name
from dpkd_bench.methods import REFERENCE_METHOD
from dpkd_bench.results import atomic_write_text

CARD = "README.md"
METRICS = (("rougeL", "rouge", "ROUGE-L"), ("exact_match", "exact_match", "Exact match"))


def _hub_name(name: str | None) -> str | None:
    return name if name and is_hub_name(name) and "/" in name else None


def card_metadata(name: str, scores: dict, info: dict) -> dict[str, Any]:
    """The front matter: ``info`` holds ``method``, ``settings``, ``base_model``, ``dataset``
    (Hub names or local paths) and ``run``."""
    meta: dict[str, Any] = {"library_name": "transformers", "pipeline_tag": "text-generation"}
    base, dataset = _hub_name(info.get("base_model")), _hub_name(info.get("dataset"))
    if base:
        meta["base_model"] = base
    if dataset:
        meta["datasets"] = [dataset]
    meta["tags"] = ["dpkd-bench", "knowledge-distillation", info["method"]]
    meta["dpkd_bench"] = {
        "version": __version__,
        "method": info["method"],
        "settings": info.get("settings") or {},
        "run": info.get("run"),
    }
    results = []
    for set_name, figures in scores.items():
        metrics = [
            {"type": kind, "name": label, "value": round(float(figures[key]), 4)}
            for key, kind, label in METRICS
            if isinstance(figures.get(key), int | float)
        ]
        results.append(
            {
                "task": {"type": "text-generation", "name": "Instruction following"},
                "dataset": {"name": set_name, "type": set_name},
                "metrics": metrics,
            }
        )
    meta["model-index"] = [{"name": name, "results": results}]
    return meta


def card_text(name: str, scores: dict, info: dict) -> str:
    """The whole card: front matter, then the text."""
    meta = card_metadata(name, scores, info)
    front = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True)
    rows = [
        f"| {set_name} | {figures.get('rougeL', float('nan')):.2f} | "
        f"{figures.get('exact_match', float('nan')):.2f} |"
        for set_name, figures in scores.items()
    ]
    settings = yaml.safe_dump(info.get("settings") or {}, sort_keys=True).strip()
    lines = [
        "---",
        front.rstrip(),
        "---",
        "",
        f"# {name}",
        "",
        f"{info['about']} Made with dpkd-bench {__version__}.",
        "",
        f"- Teacher: {info.get('teacher') or '-'}",
        f"- Student initialised from: {info.get('base_model') or '-'}",
        f"- Training data: {info.get('dataset') or '-'}",
        "",
        "## Scores",
        "",
        "Sampled generations scored against the references, averaged over the generation seeds "
        "(0-100).",
        "",
        "| eval set | ROUGE-L | exact match |",
        "|---|---|---|",
        *rows,
        "",
        "## Method settings",
        "",
        "```yaml",
        settings or "{}",
        "```",
        "",
        "## How it was made",
        "",
        "```bash",
        info.get("command") or "dpkd-bench run",
        "```",
        "",
        "Load it with `AutoModelForCausalLM.from_pretrained` on this directory (or its Hub name "
        "once uploaded).",
        "",
    ]
    return "\n".join(lines)


def write_card(model_dir: str | Path, name: str, scores: dict, info: dict) -> Path:
    """Write the card into ``model_dir`` (atomically); its path."""
    path = Path(model_dir) / CARD
    atomic_write_text(path, card_text(name, scores, info))
    return path


def read_card(model_dir: str | Path) -> tuple[dict, str]:
    """(front matter, text) of the card in ``model_dir``."""
    text = (Path(model_dir) / CARD).read_text(encoding="utf-8")
    _, front, body = text.split("---\n", 2)
    return yaml.safe_load(front), body


def model_info(
    recipe, run_root: Path, role: str, settings: dict, teacher: str, seed: int = 1
) -> dict:
    """What a card says about the model of ``role`` (a method, ``student_init`` or
    ``teacher``) of training seed ``seed`` in the run at ``run_root`` made with ``recipe``;
    ``teacher``: where the teacher is saved, or its Hub name."""
    from dpkd_bench.results import RunDir

    manifest = RunDir(run_root).load_manifest() if RunDir(run_root).is_run() else {}
    student_base = recipe.student.model.name_or_path
    if role == "teacher":
        base, about = recipe.teacher.model.name_or_path, "The teacher of a dpkd-bench run."
    elif role == "student_init":
        base = student_base
        about = "The student every method of a dpkd-bench run starts from (supervised fine-tuning)."
    else:
        base = str(Path(run_root) / recipe.student.init_dir_name(recipe.data.seed, seed))
        about = f"A student distilled with the `{role}` method."
    return {
        "method": REFERENCE_METHOD if role in ("teacher", "student_init") else role,
        "settings": settings,
        "base_model": base or student_base,
        "teacher": None if role == "teacher" else teacher,
        "dataset": recipe.data.source,
        "run": str(run_root),
        "command": manifest.get("command"),
        "about": about,
    }
