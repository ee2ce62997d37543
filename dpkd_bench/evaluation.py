"""Decode every eval set with a model, score it, write its generations, fidelity and metrics.

Each eval set is decoded once per generation seed (``eval.gen_seeds``; the first alone when
``eval.decoding`` is greedy), with the prompts shared out over the processes. Each example's
scores (:func:`dpkd_bench.metrics.score_examples`) are averaged over the seeds
(:func:`~dpkd_bench.metrics.mean_over_generations`) and the set's figures are their means
(:func:`~dpkd_bench.metrics.mean_metrics`, the aggregation of ``compute_metrics``, unrounded).
The main process writes ``generations/<eval_set>.jsonl`` (every prediction and the example's
scores), ``scores.csv.gz`` (the per-example scores of every set, which the report's statistics
read), the teacher-fidelity figures (``eval.fidelity``) and, last, ``metrics.json``, which
marks the unit evaluated.

Decoding uses the built-in decoder, or, with ``eval.backend: vllm``, one vLLM engine per
evaluated model, built on the directory where that model is saved (the unit's ``student/``,
``student_init/``, the cached or pretrained teacher) and released after its last eval set; a
run with that backend must be a single process (:mod:`dpkd_bench.vllm_backend`).
"""

from __future__ import annotations

from contextlib import nullcontext
from functools import partial
from pathlib import Path

from dpkd_bench.console import log
from dpkd_bench.data.prepare import EvalSet, PreparedData
from dpkd_bench.fidelity import TeacherRows, write_fidelity
from dpkd_bench.generate import generate_texts
from dpkd_bench.metrics import mean_metrics, mean_over_generations, score_examples
from dpkd_bench.processes import Processes, decode_settings
from dpkd_bench.recipe import Recipe
from dpkd_bench.results import (
    EXAMPLE_SCORES,
    METRICS,
    RunDir,
    write_example_scores,
    write_json,
    write_jsonl,
)
from dpkd_bench.vllm_backend import VllmDecoder


def generation_records(eval_set: EvalSet, predictions: list[list[str]], scores) -> list[dict]:
    """One record per example: its prompt and references, its prediction under every seed
    (``predictions[seed][example]``) and its ``scores`` (averaged over the seeds)."""
    return [
        {
            "id": example.id,
            "family": example.family,
            "prompt": example.prompt,
            "references": list(example.references),
            "predictions": [p[i] for p in predictions],
            **example_scores,
        }
        for i, (example, example_scores) in enumerate(zip(eval_set.examples, scores, strict=True))
    ]


class Evaluator:
    """Scores models on the run's eval sets into their unit directories of ``run_dir``.

    ``teacher`` (set once the run has it) is the frozen teacher of the fidelity figures; its
    eval logits (``teacher_rows``) are computed once and shared by every unit's figures.
    """

    def __init__(self, recipe: Recipe, procs: Processes, run_dir: RunDir):
        self.recipe = recipe
        self.procs = procs
        self.run_dir = run_dir
        self.teacher = None
        self.teacher_rows = TeacherRows()
        self.example_rows: dict[str, list[dict]] = {}  # eval set -> its per-example scores

    def engine(self, name: str, model_dir):
        """A vLLM engine on the saved model (``eval.backend: vllm``), released on leaving it;
        for the built-in decoder, an empty context that gives None."""
        cfg = self.recipe.eval
        if cfg.backend != "vllm":
            return nullcontext()
        log(f"eval {name}: vLLM engine on {model_dir}")
        role = self.recipe.teacher if name == "teacher" else self.recipe.student
        return VllmDecoder(
            model_dir,
            trust_remote_code=role.model.trust_remote_code,
            gpu_memory_utilization=cfg.vllm_gpu_memory_utilization,
        )

    def evaluate(
        self, model, data: PreparedData, name: str, seed: int, model_dir, train_info=None
    ) -> dict:
        """Score ``model`` on every eval set into the unit (``name``, ``seed``); ``model_dir``
        (where it is saved) serves the vLLM backend, which builds one engine for all the sets
        and seeds. ``train_info`` goes into metrics.json beside the scores."""
        unit_dir = self.run_dir.unit_dir(name, seed)
        with self.engine(name, model_dir) as engine:
            scores = {
                set_name: self.evaluate_set(model, data.tokenizer, eval_set, unit_dir, name, engine)
                for set_name, eval_set in data.eval_sets.items()
            }
        metrics = {"method": name, "seed": seed, "eval": scores}
        if train_info is not None:
            metrics["train"] = train_info
        lm_eval_cfg = self.recipe.eval.lm_eval
        if lm_eval_cfg is not None and self.procs.main:
            from dpkd_bench.lm_eval_scores import lm_eval_scores

            metrics["lm_eval"], seconds = lm_eval_scores(
                model, data.tokenizer, lm_eval_cfg, self.run_dir.root, self.procs.device, name
            )
            metrics["lm_eval_wall_s"] = round(seconds, 2)
        if self.procs.main:
            rows = [row for set_name in scores for row in self.example_rows.pop(set_name)]
            write_example_scores(unit_dir / EXAMPLE_SCORES, rows)
            self._write(model, data, unit_dir, name, metrics)
        self.procs.wait()
        return metrics

    def record_trial(self, name: str, seed: int, train_info: dict) -> None:
        """A tuning trial's metrics.json: its training and dev curve, no eval-set scores."""
        metrics = {"method": name, "seed": seed, "eval": {}, "train": train_info}
        write_json(self.run_dir.unit_dir(name, seed) / METRICS, metrics)

    def _write(self, model, data: PreparedData, unit_dir: Path, name: str, metrics) -> None:
        """Fidelity figures (when on) and metrics.json, last: it marks the unit done."""
        if self.recipe.eval.fidelity and name != "teacher" and self.teacher is not None:
            write_fidelity(
                unit_dir,
                model,
                self.teacher,
                data.eval_sets,
                data.tokenizer,
                self.procs.device,
                self.recipe.eval.batch_size,
                self.run_dir.unit_dir("teacher", self.recipe.seeds[0]),
                self.teacher_rows,
            )
        write_json(unit_dir / METRICS, metrics)

    def evaluate_set(
        self,
        model,
        tokenizer,
        eval_set: EvalSet,
        unit_dir: Path,
        name: str,
        engine: VllmDecoder | None = None,
    ) -> dict:
        """Generate, score and write one eval set: with ``engine`` (vLLM) when given, else with
        the built-in decoder. The figures on the main process; {} on the others."""
        cfg = self.recipe.eval
        seeds = cfg.gen_seeds[:1] if cfg.decoding == "greedy" else cfg.gen_seeds
        references = [list(e.references) for e in eval_set.examples]
        if engine is None:
            decoder = partial(
                generate_texts, model.to(self.procs.device), tokenizer, batch_size=cfg.batch_size
            )
        else:
            decoder = partial(engine.generate_texts, tokenizer)
        predictions, per_seed = [], []
        for gen_seed in seeds:
            texts = self.procs.sharded(
                decoder,
                eval_set.prompt_ids,
                gen_seed,
                f"eval {name} {eval_set.name} seed {gen_seed}",
                settings=decode_settings(cfg),
            )
            if not self.procs.main:  # the main process scores and writes
                continue
            predictions.append(texts)
            per_seed.append(score_examples(texts, references))
        if not self.procs.main:
            return {}
        per_example = mean_over_generations(per_seed)
        records = generation_records(eval_set, predictions, per_example)
        write_jsonl(unit_dir / "generations" / f"{eval_set.name}.jsonl", records)
        self.example_rows[eval_set.name] = [{"eval_set": eval_set.name, **r} for r in records]
        return {**mean_metrics(per_example), "n": len(records)}
