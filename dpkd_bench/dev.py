"""Validation during training: the dev curve of a unit and its best-on-dev weights.

Every ``train.eval_every`` optimiser steps, before the first and after the last, the student
decodes the dev split greedily and is scored with ``train.dev_metric`` (:class:`DevSet`). The
points form the unit's dev curve, each with the cost spent to reach it (steps, teacher
forwards, tokens, training wall time without the validations themselves). With
``train.select: best_dev`` the weights of the best point after the start are kept on the host
and put back into the student at the end, as the official MiniLLM, DistiLLM and DPKD trainers
keep the checkpoint of the best validation ROUGE-L. :class:`DevTracker` is a part of the
unit's checkpoint, so that a resumed unit keeps its curve and its best weights.

Scoring never draws from the training's random streams: a unit trains to the same weights with
validation on or off.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from accelerate.utils import gather_object

from dpkd_bench.generate import DecodeSettings, generate_texts, shard_slice
from dpkd_bench.metrics import mean_metrics, score_examples
from dpkd_bench.recipe import TrainConfig

DEV_SEED = 0  # greedy decoding draws nothing; the seed only fixes the generator's start


@dataclass
class DevSet:
    """The dev split as scored during training: prompts (token ids) and their references."""

    prompt_ids: Sequence[Sequence[int]]
    references: Sequence[Sequence[str]]
    tokenizer: Any
    max_new_tokens: int
    batch_size: int = 64

    def __post_init__(self):
        if len(self.prompt_ids) != len(self.references):
            raise ValueError(
                f"{len(self.prompt_ids)} dev prompts but {len(self.references)} reference lists"
            )

    def head(self, count: int) -> DevSet:
        """The first ``count`` examples (all for 0)."""
        if not count:
            return self
        return DevSet(
            self.prompt_ids[:count],
            self.references[:count],
            self.tokenizer,
            self.max_new_tokens,
            self.batch_size,
        )

    def scores(self, model, accelerator=None) -> dict[str, float]:
        """Greedy decodes of every dev prompt, scored: ``{"exact_match": %, "rougeL": %}``.

        With several processes (``accelerator``), each decodes its share of the prompts and
        every process scores all the decodes: the same figures, and so the same choice of the
        best weights, on every process."""
        settings = DecodeSettings(True, 1.0, 0, 1.0, self.max_new_tokens)
        count = accelerator.num_processes if accelerator is not None else 1
        prompts = self.prompt_ids
        if count > 1:
            prompts = prompts[shard_slice(len(prompts), accelerator.process_index, count)]
        with torch.random.fork_rng(devices=[]):
            texts = generate_texts(
                model, self.tokenizer, prompts, settings, seed=DEV_SEED, batch_size=self.batch_size
            )
        if count > 1:
            texts = gather_object(texts)  # every share, in process order
        return mean_metrics(score_examples(texts, [list(r) for r in self.references]))


class DevTracker:
    """A unit's dev curve and, with ``select: best_dev``, the weights of its best point."""

    def __init__(self, dev: DevSet, cfg: TrainConfig):
        self.dev = dev.head(cfg.dev_examples)
        self.every, self.steps, self.metric = cfg.eval_every, cfg.steps, cfg.dev_metric
        self.keep_best = cfg.select == "best_dev"
        self.curve: list[dict[str, Any]] = []
        self.best_step: int | None = None
        self.best_score: float | None = None
        self.best_weights: dict[str, torch.Tensor] | None = None
        self.spent_s = 0.0  # wall time of the validations, kept out of the training time

    def due(self, step: int) -> bool:
        """Whether step ``step`` (0: before training) is scored."""
        if step == 0:
            return not self.curve
        return step % self.every == 0 or step == self.steps

    def observe(self, model, point: dict[str, Any], accelerator=None) -> float:
        """Score ``model`` at ``point`` (step and costs), add it to the curve; its score.
        ``accelerator``: with several processes, they share the decoding (DevSet.scores)."""
        started = time.time()
        scores = self.dev.scores(model, accelerator)
        score = scores[self.metric]
        self.curve.append({**point, "score": score, **{f"dev_{k}": v for k, v in scores.items()}})
        step = point["step"]
        if step > 0 and (self.best_score is None or score > self.best_score):
            self.best_step, self.best_score = step, score
            if self.keep_best:
                self.best_weights = {
                    k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()
                }
        self.spent_s += time.time() - started
        return score

    def restore_best(self, model) -> None:
        """With ``select: best_dev``, put the best point's weights back into ``model``."""
        if self.keep_best and self.best_weights is not None:
            model.load_state_dict(self.best_weights)

    def summary(self) -> dict[str, Any]:
        """What metrics.json keeps: the curve, the start, and the point the unit kept."""
        last = self.curve[-1] if self.curve else None
        chosen = self.best_step if self.keep_best else (last["step"] if last else None)
        score = self.best_score if self.keep_best else (last["score"] if last else None)
        start = self.curve[0]["score"] if self.curve and self.curve[0]["step"] == 0 else None
        return {
            "metric": self.metric,
            "examples": len(self.dev.prompt_ids),
            "select": "best_dev" if self.keep_best else "last",
            "init_score": start,
            "selected_step": chosen,
            "selected_score": score,
            "best_step": self.best_step,
            "best_score": self.best_score,
            "curve": self.curve,
        }

    def state_dict(self) -> dict[str, Any]:
        return {
            "curve": list(self.curve),
            "best_step": self.best_step,
            "best_score": self.best_score,
            "best_weights": self.best_weights,
            "spent_s": self.spent_s,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.curve = list(state["curve"])
        self.best_step, self.best_score = state["best_step"], state["best_score"]
        self.best_weights, self.spent_s = state["best_weights"], state["spent_s"]
