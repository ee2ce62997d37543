"""leaderboard.tex: the leaderboard and the gap-closed table as booktabs tables."""

from __future__ import annotations

import pandas as pd

from dpkd_bench.report.scores import SCORES
from dpkd_bench.report.tables import (
    GAP_LEGEND,
    GAP_TITLE,
    LEGEND,
    MARKER,
    NO_VALUE,
    Cell,
    Row,
    board_eval_sets,
    gap_note,
    gap_rows,
    settings_of,
    significance_legend,
    smoke_banner,
    table_rows,
)
from dpkd_bench.report.view import RunView

LATEX_ESCAPES = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "[": "{[}",  # a row that starts with "[" would be read as \\[<length>]
    "]": "{]}",
    "<": r"$<$",
    ">": r"$>$",
    NO_VALUE: "---",
    MARKER: r"$^{\dagger}$",
    "±": r"$\pm$",
    "−": r"$-$",
    "‖": r"$\|$",
}


def latex_text(text: object) -> str:
    """Plain text -> LaTeX: special characters escaped, whitespace collapsed."""
    return "".join(LATEX_ESCAPES.get(ch, ch) for ch in " ".join(str(text).split()))


def latex_cell(cell: Cell, reference: bool) -> str:
    text = latex_text(cell.text)
    if cell.best:
        text = rf"\textbf{{{text}}}"
    elif reference and cell.text != NO_VALUE:
        text = rf"\textit{{{text}}}"
    return text + (latex_text(MARKER) if cell.marker else "")


def latex_table(board: pd.DataFrame, eval_sets: list[str], alpha: float) -> list[str]:
    width = len(SCORES)
    groups = " & ".join(rf"\multicolumn{{{width}}}{{c}}{{{latex_text(e)}}}" for e in eval_sets)
    rules = " ".join(
        rf"\cmidrule(lr){{{3 + i * width}-{2 + (i + 1) * width}}}" for i in range(len(eval_sets))
    )
    labels = " & ".join(latex_text(label) for _ in eval_sets for _, label in SCORES)
    lines = [
        r"\begin{tabular}{lr" + "r" * (width * len(eval_sets)) + "}",
        r"\toprule",
        rf" & & {groups} \\",
        rules,
        rf"Method & Seeds & {labels} \\",
        r"\midrule",
    ]
    return lines + latex_rows(table_rows(board, eval_sets, alpha))


def latex_rows(rows: list[Row]) -> list[str]:
    """The body rows and the closing rules of a tabular of Method, Seeds and ``Cell`` columns."""
    lines = []
    for row in rows:
        name = latex_text(row.method)
        name = rf"\textit{{{name}}}" if row.reference else name
        cells = " & ".join(latex_cell(c, row.reference) for c in row.cells)
        lines.append(rf"{name} & {row.seeds} & {cells} \\")
    return lines + [r"\bottomrule", r"\end{tabular}"]


def latex_gap(board: pd.DataFrame) -> list[str]:
    """A second table: the gap closed per eval set (none without the scores that bound it)."""
    if board.empty or gap_note(board):
        return []
    eval_sets = board_eval_sets(board)
    labels = " & ".join(latex_text(e) for e in eval_sets)
    return [
        r"\begin{table}[t]",
        r"\centering",
        r"\small",
        r"\begin{tabular}{lr" + "r" * len(eval_sets) + "}",
        r"\toprule",
        rf"Method & Seeds & {labels} \\",
        r"\midrule",
        *latex_rows(gap_rows(board, eval_sets, inline=True)),
        rf"\caption{{{latex_text(GAP_TITLE + '. ' + GAP_LEGEND)}}}",
        r"\end{table}",
    ]


def render_latex(view: RunView, board: pd.DataFrame) -> str:
    """A booktabs table of the leaderboard (needs \\usepackage{booktabs})."""
    caption = f"{view.recipe_name}: {LEGEND}"
    if not board.empty:
        caption += " " + significance_legend(view, board)
    if view.smoke:
        caption = f"{smoke_banner(view)} {caption}"
    lines = [
        f"% dpkd-bench leaderboard: {' '.join(view.recipe_name.split())}",
        r"% needs \usepackage{booktabs} in the preamble",
        r"\begin{table}[t]",
        r"\centering",
        r"\small",
    ]
    if board.empty:
        lines.append(r"No finished units yet.")
    else:
        lines += latex_table(board, board_eval_sets(board), settings_of(view).alpha)
    lines += [rf"\caption{{{latex_text(caption)}}}", r"\end{table}", *latex_gap(board)]
    return "\n".join(lines) + "\n"
