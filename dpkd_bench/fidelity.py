"""Teacher-fidelity figures: how close a student stays to its teacher on the eval sets.

Each eval prompt is teacher-forced with its **first** reference response (tokenised as for
training by :func:`dpkd_bench.data.collate.encode_pair`: prompt and response separately, EOS
appended, cut to the models' context length), and both models score the same positions:

* ``kl_teacher_student``: KL(p ‖ q), p the teacher's and q the student's next-token
  distribution (:func:`dpkd_bench.losses.token_forward_kl`), in nats;
* ``kl_student_teacher``: KL(q ‖ p) (:func:`dpkd_bench.losses.token_reverse_kl`);
* ``top1_agreement``: the fraction of positions where argmax p == argmax q.

All three are means over every response token of the eval set (EOS included; token-weighted,
so long responses weigh more than short ones). A fourth figure comes from the generation files
the run already wrote, not from a model:

* ``length_ratio``: mean generated length of the unit / mean generated length of the
  ``teacher`` unit, in whitespace-separated **words**, over every prediction of every
  generation seed in ``generations/<eval_set>.jsonl``; null when either file is missing or the
  teacher's mean length is 0.

:func:`write_fidelity` writes ``<unit>/fidelity.json``::

    {"response": "first reference, teacher-forced", "length_unit": "words",
     "eval": {"<eval_set>": {"kl_teacher_student": ..., "kl_student_teacher": ...,
                             "top1_agreement": ..., "length_ratio": ... | null,
                             "n_tokens": ..., "n_examples": ...}}}

which ``dpkd-bench report`` renders as a table when present.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch

from dpkd_bench import losses
from dpkd_bench.data.collate import collate_pairs, encode_pair
from dpkd_bench.methods.base import response_logits, shifted_labels, to_device
from dpkd_bench.results import GENERATIONS, read_jsonl, write_json

FIDELITY_FILE = "fidelity.json"
LENGTH_UNIT = "words"
DEFAULT_MAX_LENGTH = 1024  # when neither model's config states its context length


# ---- teacher-forced figures ----------------------------------------------------------------
def context_length(*models) -> int:
    """The shortest context (``n_positions`` or ``max_position_embeddings``) of ``models``."""
    lengths = []
    for model in models:
        config = getattr(model, "config", None)
        value = getattr(config, "n_positions", None) or getattr(
            config, "max_position_embeddings", None
        )
        if value:
            lengths.append(int(value))
    return min(lengths) if lengths else DEFAULT_MAX_LENGTH


def forced_pairs(eval_set, tokenizer, max_length: int) -> list[tuple[tuple, tuple]]:
    """(prompt ids, first-reference ids + EOS) for every example of ``eval_set``."""
    pairs = []
    for example in eval_set.examples:
        response = example.references[0] if example.references else example.response
        encoded = encode_pair(tokenizer, example.prompt, response, max_length)
        pairs.append((encoded.prompt_ids, encoded.response_ids))
    return pairs


@contextmanager
def evaluating(*models) -> Iterator[None]:
    """Put ``models`` in eval mode (no dropout) and restore their modes afterwards."""
    modes = [model.training for model in models]
    for model in models:
        model.eval()
    try:
        yield
    finally:
        for model, mode in zip(models, modes, strict=True):
            model.train(mode)


def batch_sums(student_logits: torch.Tensor, teacher_logits: torch.Tensor, mask: torch.Tensor):
    """Sums over the masked positions of one batch: (KL(p‖q), KL(q‖p), argmax agreements).

    [B, T, V], [B, T, V], [B, T] -> three scalars
    """
    forward = losses.masked_sum(losses.token_forward_kl(student_logits, teacher_logits), mask)
    reverse = losses.masked_sum(losses.token_reverse_kl(student_logits, teacher_logits), mask)
    agree = student_logits.argmax(-1) == teacher_logits.argmax(-1)
    return forward, reverse, losses.masked_sum(agree.float(), mask)


TEACHER_ROWS_BUDGET = 512 * 2**20  # bytes of teacher logits a TeacherRows may keep


class TeacherRows:
    """The teacher's logits at the response positions of each eval batch, kept across units.

    Every student of a run is scored against the same teacher on the same batches, so the
    teacher forward is done once per batch while the kept rows fit in ``budget`` bytes (past
    it, batches are recomputed).
    """

    def __init__(self, budget: int = TEACHER_ROWS_BUDGET):
        self.budget, self.used, self.rows = budget, 0, {}

    def get(self, key, compute) -> torch.Tensor:
        if key in self.rows:
            return self.rows[key]
        rows = compute()
        size = rows.numel() * rows.element_size()
        if self.used + size <= self.budget:
            self.rows[key], self.used = rows, self.used + size
        return rows


@torch.no_grad()
def teacher_fidelity(
    student,
    teacher,
    eval_set,
    tokenizer,
    device,
    batch_size: int = 16,
    max_length: int = 0,
    teacher_rows: TeacherRows | None = None,
) -> dict:
    """KL both ways and top-1 agreement, per response token, on ``eval_set`` (an EvalSet).

    ``max_length`` caps prompt + response tokens (0: the models' shorter context length).
    ``teacher_rows`` keeps the teacher's logits for the next student of the same teacher.
    Returns {"kl_teacher_student", "kl_student_teacher", "top1_agreement", "n_tokens",
    "n_examples"}. An eval set with no response token raises ``ValueError``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    student, teacher = student.to(device), teacher.to(device)
    pairs = forced_pairs(eval_set, tokenizer, max_length or context_length(student, teacher))
    totals = torch.zeros(3, dtype=torch.float64)
    tokens = 0
    kept = teacher_rows if teacher_rows is not None else TeacherRows(budget=0)
    with evaluating(student, teacher):
        for start in range(0, len(pairs), batch_size):
            prompts, responses = zip(*pairs[start : start + batch_size], strict=True)
            batch = to_device(collate_pairs(prompts, responses, tokenizer.pad_token_id), device)
            _, mask = shifted_labels(batch)
            t_rows = kept.get(
                (eval_set.name, batch_size, max_length, start),
                lambda batch=batch, mask=mask: response_logits(teacher, batch, mask),
            )
            s_rows = response_logits(student, batch, mask)
            ones = torch.ones(1, s_rows.shape[0], dtype=torch.bool, device=s_rows.device)
            sums = batch_sums(s_rows[None], t_rows[None], ones)
            totals += torch.stack([s.detach().double().cpu() for s in sums])
            tokens += int(mask.sum())
    if tokens == 0:
        raise ValueError(
            f"eval set '{eval_set.name}' has no response token to score; check its references"
        )
    forward, reverse, agree = (float(v) / tokens for v in totals)
    return {
        "kl_teacher_student": forward,
        "kl_student_teacher": reverse,
        "top1_agreement": agree,
        "n_tokens": tokens,
        "n_examples": len(pairs),
    }


# ---- generated length ----------------------------------------------------------------------
def mean_words(records: Sequence[dict]) -> float | None:
    """Mean number of words over every prediction of every record (None: no prediction)."""
    lengths = [
        len(str(prediction).split())
        for record in records
        for prediction in record.get("predictions") or []
    ]
    return sum(lengths) / len(lengths) if lengths else None


def length_ratio(records: Sequence[dict], teacher_records: Sequence[dict]) -> float | None:
    """Mean generated words of ``records`` / of ``teacher_records``; None when undefined."""
    own, reference = mean_words(records), mean_words(teacher_records)
    if own is None or not reference:
        return None
    return own / reference


def generation_records(unit_dir: Path | None, eval_set: str) -> list[dict]:
    """The records of ``<unit_dir>/generations/<eval_set>.jsonl`` ([] when missing)."""
    if unit_dir is None:
        return []
    path = Path(unit_dir) / GENERATIONS / f"{eval_set}.jsonl"
    return [r for r in read_jsonl(path) if isinstance(r, dict)] if path.is_file() else []


# ---- one unit ------------------------------------------------------------------------------
def write_fidelity(
    unit_dir: Path,
    student,
    teacher,
    eval_sets: Mapping[str, object],
    tokenizer,
    device,
    batch_size: int = 16,
    teacher_unit_dir: Path | None = None,
    teacher_rows: TeacherRows | None = None,
) -> dict:
    """Compute the figures of every eval set and write ``<unit_dir>/fidelity.json``.

    Call it after the unit's generations are written (the length ratio reads them);
    ``teacher_unit_dir`` is the ``teacher`` unit of the same run. Returns what it wrote.
    """
    figures = {}
    for name, eval_set in eval_sets.items():
        result = teacher_fidelity(
            student, teacher, eval_set, tokenizer, device, batch_size, teacher_rows=teacher_rows
        )
        ratio = length_ratio(
            generation_records(unit_dir, name), generation_records(teacher_unit_dir, name)
        )
        figures[name] = {**result, "length_ratio": ratio}
    data = {
        "response": "first reference, teacher-forced",
        "length_unit": LENGTH_UNIT,
        "eval": figures,
    }
    write_json(Path(unit_dir) / FIDELITY_FILE, data)
    return data
