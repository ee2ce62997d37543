"""leaderboard.md: the leaderboard, gap-closed, ablation, fidelity, published-baseline and
per-family tables in GitHub Markdown."""

from __future__ import annotations

import pandas as pd

from dpkd_bench.report.curves import report_sections
from dpkd_bench.report.lm_eval import LM_EVAL_LEGEND, lm_eval_rows
from dpkd_bench.report.protocol import (
    Section,
    below_start,
    below_start_note,
    flag_rows,
    protocol_line,
)
from dpkd_bench.report.published import Comparison, published_comparison
from dpkd_bench.report.samples import family_scores
from dpkd_bench.report.tables import (
    GAP_LEGEND,
    GAP_TITLE,
    LEGEND,
    MARKER,
    NO_VALUE,
    Cell,
    Row,
    ablation_tables,
    board_eval_sets,
    gap_note,
    gap_rows,
    interval_legend,
    provenance,
    rank_header,
    rank_legend,
    rank_rows,
    settings_of,
    significance_legend,
    smoke_banner,
    table_header,
    table_rows,
)
from dpkd_bench.report.teacher_fidelity import FIDELITY_LEGEND, fidelity_scores, fidelity_table
from dpkd_bench.report.view import RunView, not_scored_lines


def md_text(text: object) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def md_cell(cell: Cell, reference: bool) -> str:
    text = md_text(cell.text)
    marker = MARKER if cell.marker else ""
    if cell.best:
        return f"**{text}**{marker}"
    return f"*{text}*{marker}" if reference and cell.text != NO_VALUE else f"{text}{marker}"


def markdown_table(header: list[str], rows: list[Row]) -> list[str]:
    lines = [
        "| " + " | ".join(md_text(h) for h in header) + " |",
        "| --- | ---: |" + " ---: |" * (len(header) - 2),
    ]
    for row in rows:
        name = f"*{md_text(row.method)}*" if row.reference else md_text(row.method)
        cells = [md_cell(c, row.reference) for c in row.cells]
        lines.append("| " + " | ".join([name, row.seeds, *cells]) + " |")
    return lines


def markdown_grid(header: list[str], rows: list[list[str]], left: int = 1) -> list[str]:
    """A plain Markdown table: the first ``left`` columns left-aligned, the rest right-aligned."""
    lines = [
        "| " + " | ".join(md_text(h) for h in header) + " |",
        "|" + " --- |" * left + " ---: |" * (len(header) - left),
    ]
    return lines + ["| " + " | ".join(md_text(c) for c in row) + " |" for row in rows]


def markdown_ranks(view: RunView, board: pd.DataFrame, eval_sets: list[str]) -> list[str]:
    rows = rank_rows(board, eval_sets)
    if not rows:
        return []
    legend = rank_legend(view, board)
    return ["", "## Ranks and tiers", "", legend, "", *markdown_grid(rank_header(eval_sets), rows)]


def markdown_gap(board: pd.DataFrame) -> list[str]:
    if board.empty:
        return []
    note = gap_note(board)
    if note:
        return ["", note]
    eval_sets = board_eval_sets(board)
    header = ["method", "seeds", *eval_sets]
    table = markdown_table(header, gap_rows(board, eval_sets, inline=True))
    return ["", f"## {GAP_TITLE}", "", GAP_LEGEND, "", *table]


def markdown_ablations(tables: dict[str, pd.DataFrame]) -> list[str]:
    lines = []
    for base, table in tables.items():
        lines += ["", f"## Ablation: {md_text(base)}", ""]
        header = [md_text(c) for c in table.columns]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + " --- |" * len(header))
        for row in table.itertuples(index=False):
            lines.append("| " + " | ".join(md_text(v) for v in row) + " |")
    return lines


def markdown_fidelity(view: RunView) -> list[str]:
    table = fidelity_table(fidelity_scores(view))
    if table.empty:
        return []
    lines = ["", "## Teacher fidelity", "", FIDELITY_LEGEND, ""]
    return lines + markdown_grid(list(table.columns), table.values.tolist(), left=2)


def markdown_lm_eval(view: RunView) -> list[str]:
    header, rows = lm_eval_rows(view)
    if not rows:
        return []
    return ["", "## lm-evaluation-harness", "", LM_EVAL_LEGEND, "", *markdown_grid(header, rows)]


def markdown_baselines(comparison: Comparison | None) -> list[str]:
    if comparison is None:
        return []
    lines = ["", f"## {md_text(comparison.title)}", "", md_text(comparison.caption)]
    if comparison.rows:
        lines += [""] + markdown_grid(comparison.header, comparison.rows)
    return lines


def markdown_families(families: pd.DataFrame) -> list[str]:
    """One table per eval set: rows methods, columns families, cells exact match (%)."""
    lines = []
    for eval_set, group in families.groupby("eval_set", sort=False):
        wide = group.pivot(index="method", columns="family", values="exact_match")
        wide = wide.reindex(list(dict.fromkeys(group["method"])))
        lines += ["", f"## Exact match per family: {md_text(eval_set)}", ""]
        lines.append("| method | " + " | ".join(md_text(c) for c in wide.columns) + " |")
        lines.append("| --- |" + " ---: |" * len(wide.columns))
        for method, row in wide.iterrows():
            lines.append(f"| {md_text(method)} | " + " | ".join(f"{v:.1f}" for v in row) + " |")
    return lines


def markdown_sections(sections: list[Section]) -> list[str]:
    lines = []
    for section in sections:
        lines += ["", f"## {section.title}", ""]
        if section.rows:
            lines += markdown_grid(section.header, section.rows) + [""]
        lines += [line for note in section.notes for line in (md_text(note), "")][:-1]
    return lines


def render_markdown(view: RunView, board: pd.DataFrame) -> str:
    eval_sets = board_eval_sets(board)
    lines = [f"# dpkd-bench leaderboard: {md_text(view.recipe_name)}", ""]
    banner = smoke_banner(view)
    lines += [f"> **{md_text(banner)}**", ""] if banner else []
    lines += [provenance(view), "", protocol_line(view), "", LEGEND, ""]
    if board.empty:
        lines.append("No finished units yet.")
    else:
        rows = table_rows(board, eval_sets, settings_of(view).alpha)
        lines += markdown_table(table_header(eval_sets), flag_rows(rows, below_start(view)))
        lines += ["", significance_legend(view, board), "", interval_legend(view)]
        flagged = below_start_note(view)
        lines += ["", flagged] if flagged else []
        lines += markdown_ranks(view, board, eval_sets)
    lines += markdown_sections(report_sections(view))
    lines += markdown_gap(board)
    lines += markdown_ablations(ablation_tables(board)) if not board.empty else []
    lines += markdown_fidelity(view)
    lines += markdown_lm_eval(view)
    lines += markdown_baselines(published_comparison(view, board))
    lines += markdown_families(family_scores(view))
    left_out = not_scored_lines(view)
    if left_out:
        lines += ["", "Units not in the table:", ""] + [f"- {md_text(line)}" for line in left_out]
    return "\n".join(lines) + "\n"
