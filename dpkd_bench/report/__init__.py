"""Tables, plots and one HTML page from a run directory alone (never loads a model).

``render(DIR)`` (re)writes DIR/leaderboard.csv, DIR/leaderboard.md, DIR/leaderboard.tex,
DIR/families.csv, DIR/report.html and DIR/plots/*.png. Only units whose metrics.json exists and
whose manifest state is "done" (or absent) are scored; failed, running and pending units are
listed under the table instead. The per-seed score table (``seed_scores``) is the single source
for the leaderboard, the Markdown/HTML/LaTeX tables and the score plots; the per-example scores
of the generation files give the bootstrap intervals and the paired tests against the reference
method (``dpkd_bench.methods.REFERENCE_METHOD``; ``dpkd_bench.stats``), and the share of the
gap between the teacher and the reference method each method closes ("gap recovered", with its
own bootstrap interval). Teacher-fidelity figures come from each unit's fidelity.json (written
by ``dpkd_bench.fidelity``) and published numbers from ``baselines/*.yaml`` (installed as
``dpkd_bench.baselines``) when the run's recipe names the setting it replicates. A run of a
smoke-test recipe (named ``synthetic-quick``, or whose resolved recipe says ``smoke: true``)
is flagged at the top of leaderboard.md, report.html and the LaTeX caption.

The modules, in the order data flows through them:

* ``view``: the run directory's manifest and finished units (``RunView``);
* ``scores``: per-seed and per-example scores, the leaderboard, statistics, gap recovered;
* ``tables``: one table model (``Cell``, ``Row``) and the legends, shared by every format;
* ``samples``, ``teacher_fidelity``, ``lm_eval``, ``published``, ``cost``: the other sections'
  data;
* ``merge``: several runs of the same data, teacher and student_init as one run directory;
* ``plots``: the PNG plots; ``markdown``, ``latex``, ``html``: the three text formats
  (``html`` fills ``templates/page.html`` and ``templates/style.css``).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from dpkd_bench.report.cost import cost_plots, training_costs
from dpkd_bench.report.curves import CURVES_CAPTION, CURVES_PLOT, curves_plot, dev_curves
from dpkd_bench.report.html import render_html
from dpkd_bench.report.latex import latex_text, render_latex
from dpkd_bench.report.lm_eval import with_lm_eval
from dpkd_bench.report.markdown import render_markdown
from dpkd_bench.report.plots import Plot, ablation_plots, score_plots, training_plots, write_plots
from dpkd_bench.report.protocol import DEV_COLUMNS, below_start
from dpkd_bench.report.published import BASELINES_DIR, published_comparison
from dpkd_bench.report.samples import family_scores
from dpkd_bench.report.scores import (
    GAP_COLUMNS,
    LEADERBOARD_COLUMNS,
    REFERENCE_METHOD,
    SCORE_KEYS,
    SCORES,
    STATISTICS_COLUMNS,
    TEACHER,
    aggregate,
    example_scores,
    leaderboard,
    seed_scores,
    with_gap_recovered,
    with_statistics,
)
from dpkd_bench.report.tables import MARKER, NO_VALUE, ablation_tables, settings_of
from dpkd_bench.report.teacher_fidelity import FIDELITY, fidelity_scores
from dpkd_bench.report.tuning import is_tuning_run, render_tuning
from dpkd_bench.report.view import RunView, load_run
from dpkd_bench.results import RunDir, atomic_write_text
from dpkd_bench.stats import StatsSettings

__all__ = [
    "BASELINES_DIR",
    "DEV_COLUMNS",
    "FIDELITY",
    "GAP_COLUMNS",
    "LEADERBOARD_COLUMNS",
    "MARKER",
    "NO_VALUE",
    "REFERENCE_METHOD",
    "SCORES",
    "SCORE_KEYS",
    "STATISTICS_COLUMNS",
    "TEACHER",
    "Plot",
    "RunView",
    "ablation_tables",
    "aggregate",
    "all_plots",
    "example_scores",
    "family_scores",
    "fidelity_scores",
    "latex_text",
    "leaderboard",
    "load_run",
    "published_comparison",
    "render",
    "render_html",
    "render_latex",
    "render_markdown",
    "seed_scores",
    "training_costs",
    "with_gap_recovered",
    "with_statistics",
]


def all_plots(view: RunView, board: pd.DataFrame) -> dict[str, Plot]:
    plots = {**score_plots(view, board), **training_plots(view), **cost_plots(view, board)}
    curves = dev_curves(view)
    if not curves.empty:
        plots[CURVES_PLOT] = Plot(curves_plot(curves), CURVES_CAPTION)
    if not board.empty:
        plots.update(ablation_plots(ablation_tables(board)))
    return plots


def with_dev_flags(board: pd.DataFrame, view: RunView) -> pd.DataFrame:
    """The board with ``dev_below_start_seeds``: the seeds whose kept student scores below its
    own start on the dev split ("" for none)."""
    flagged = below_start(view)
    board = board.copy()
    (column,) = DEV_COLUMNS
    board[column] = [",".join(map(str, flagged.get(method, []))) for method in board["method"]]
    return board


def render(
    run_dir: str | Path, settings: StatsSettings | None = None, tables_only: bool = False
) -> list[Path]:
    """(Re)write leaderboard.csv/.md/.tex, families.csv, report.html and plots/*.png.

    ``settings``: the statistics' settings; by default the run's own (its recipe's ``stats``).
    ``tables_only``: the tables and CSVs without the plots and report.html (a check that an
    archive re-renders to the same tables needs no pictures).
    """
    run = RunDir(run_dir)
    if is_tuning_run(run):  # trials scored on the dev split: their own report
        return render_tuning(run.root)
    view = load_run(run)
    settings = settings or settings_of(view)
    examples = example_scores(view)
    board = with_statistics(leaderboard(view), examples, settings)
    board = with_dev_flags(board, view)
    board = with_gap_recovered(board, examples, settings.n_resamples)
    texts = {
        "leaderboard.csv": with_lm_eval(board, view).to_csv(index=False, lineterminator="\n"),
        "leaderboard.md": render_markdown(view, board),
        "leaderboard.tex": render_latex(view, board),
        "families.csv": family_scores(view).to_csv(index=False, lineterminator="\n"),
    }
    curves = dev_curves(view)
    if not curves.empty:  # pandas: pd.read_csv(DIR / "dev_curves.csv")
        texts["dev_curves.csv"] = curves.to_csv(index=False, lineterminator="\n")
    paths = []
    for name, text in texts.items():
        atomic_write_text(run.root / name, text)
        paths.append(run.root / name)
    if tables_only:
        return paths
    plots = all_plots(view, board)
    plot_paths = write_plots(run, plots)
    atomic_write_text(run.root / "report.html", render_html(view, board, plots))
    return [*paths, run.root / "report.html", *plot_paths]
