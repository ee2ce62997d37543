"""lm-evaluation-harness scores of a run's models (``eval.lm_eval``; ``pip install -e
".[lm-eval]"``).

The teacher, ``student_init`` and every student are scored right after their own evaluation,
on the model in memory (lm-eval's ``HFLM`` wraps it with the run's tokenizer; nothing is
reloaded), with ``lm_eval.simple_evaluate`` on ``eval.lm_eval.tasks``. The task folders given
to lm-eval are the synthetic suite's own tasks (:mod:`dpkd_bench.data.lm_eval_task`, written
into ``DIR/lm_eval_tasks``) and ``eval.lm_eval.include_path``; Hub tasks (``hellaswag``,
``arc_easy``, ...) work unchanged on a machine that can download their data. Each task's numeric
metrics (stderr left out; a filter other than ``none`` kept in the name) go into metrics.json
under ``lm_eval`` and from there into the leaderboard and the report
(:mod:`dpkd_bench.report.lm_eval`). Only the main process scores, the others wait.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import time
from pathlib import Path

from dpkd_bench import console
from dpkd_bench.console import log
from dpkd_bench.errors import UserError
from dpkd_bench.recipe import LmEvalConfig

NOT_METRICS = ("sample_len",)  # numeric fields of lm-eval's results that are no scores


def metric_name(key: str) -> str:
    """lm-eval's ``acc,none`` as ``acc``; another filter stays: ``exact_match,strip`` ->
    ``exact_match:strip``."""
    metric, _, kind = key.partition(",")
    return metric if kind in ("", "none") else f"{metric}:{kind}"


@functools.lru_cache(maxsize=4)
def task_manager(folders: tuple[str, ...]):
    """lm-eval's index of its own tasks and ``folders`` (built once: it reads every task YAML
    lm-eval ships, a few seconds)."""
    from lm_eval.tasks import TaskManager

    try:
        return TaskManager(include_path=list(folders))
    except Exception as err:  # a bad include_path
        raise UserError(f"eval.lm_eval.include_path: lm-eval cannot read it ({err})") from None


def lm_eval_scores(model, tokenizer, cfg: LmEvalConfig, run_root: Path, device, name: str):
    """``{task: {metric: value}}`` of ``model`` on ``cfg.tasks``, and the seconds it took."""
    import lm_eval
    from lm_eval.models.huggingface import HFLM

    from dpkd_bench.data.lm_eval_task import task_dir

    start = time.time()
    logging.getLogger("lm_eval").setLevel(logging.WARNING)
    folders = (str(task_dir(run_root)), *([cfg.include_path] if cfg.include_path else []))
    manager = task_manager(folders)
    unknown = [task for task in cfg.tasks if task not in manager.all_tasks]
    if unknown:
        raise UserError(
            f"eval.lm_eval.tasks names tasks lm-eval does not know: {', '.join(unknown)}; see "
            "`lm-eval ls tasks`, or add a folder of task YAMLs with eval.lm_eval.include_path"
        )
    was_training = model.training
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=cfg.batch_size, device=str(device))
    limit = int(cfg.limit) if cfg.limit is not None and cfg.limit >= 1 else cfg.limit
    # lm-eval's own progress bars: shown where this run shows bars, else kept out of the log
    bars = contextlib.nullcontext() if console.bars() else contextlib.redirect_stderr(io.StringIO())
    with bars:
        out = lm_eval.simple_evaluate(
            model=lm,
            tasks=list(cfg.tasks),
            num_fewshot=cfg.num_fewshot,
            limit=limit,
            task_manager=manager,
            bootstrap_iters=0,
            log_samples=False,
            verbosity="WARNING",
        )
    model.train(was_training)
    scores = {
        task: {
            metric_name(key): float(value)
            for key, value in figures.items()
            if isinstance(value, int | float) and "stderr" not in key and key not in NOT_METRICS
        }
        for task, figures in out["results"].items()
    }
    seconds = time.time() - start
    log(f"lm-eval {name}: {scores} ({seconds:.1f}s)")
    return scores, seconds
