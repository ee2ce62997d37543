"""report.html: one self-contained page from ``templates/page.html`` and ``templates/style.css``.

The page runs no scripts and makes no requests (its Content-Security-Policy says so); images
are data: URIs.
"""

from __future__ import annotations

import base64
import json
from html import escape
from importlib import resources
from string import Template

import pandas as pd

from dpkd_bench.report.curves import report_sections
from dpkd_bench.report.lm_eval import LM_EVAL_LEGEND, lm_eval_rows
from dpkd_bench.report.plots import Plot
from dpkd_bench.report.protocol import (
    Section,
    below_start,
    below_start_note,
    flag_rows,
    protocol_line,
)
from dpkd_bench.report.published import Comparison, published_comparison
from dpkd_bench.report.samples import SAMPLES_PER_SET, Sample, eval_samples
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

TEMPLATES = resources.files("dpkd_bench.report") / "templates"
PAGE = Template((TEMPLATES / "page.html").read_text(encoding="utf-8"))  # $title $style $body
STYLE = (TEMPLATES / "style.css").read_text(encoding="utf-8")


def esc(text: object) -> str:
    return escape(str(text), quote=True)


def html_score_cell(cell: Cell) -> str:
    classes = "num best" if cell.best else "num"
    marker = f'<span class="sig">{MARKER}</span>' if cell.marker else ""
    interval = f'<br><span class="ci">{esc(cell.interval)}</span>' if cell.interval else ""
    return f'<td class="{classes}">{esc(cell.text)}{marker}{interval}</td>'


def html_table(header: list[str], rows: list[Row], css_class: str = "leaderboard") -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = []
    for row in rows:
        cells = "".join(html_score_cell(c) for c in row.cells)
        attr = ' class="ref"' if row.reference else ""
        body.append(
            f'<tr{attr}><td>{esc(row.method)}</td><td class="num">{esc(row.seeds)}</td>{cells}</tr>'
        )
    return (
        f'<table class="{esc(css_class)}"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table>"
    )


def html_grid(header: list[str], rows: list[list[str]], css_class: str = "") -> str:
    """A plain HTML table of text cells (escaped)."""
    attr = f' class="{esc(css_class)}"' if css_class else ""
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{esc(cell)}</td>" for cell in row) + "</tr>" for row in rows
    )
    return f"<table{attr}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def html_leaderboard(view: RunView, board: pd.DataFrame) -> str:
    eval_sets = board_eval_sets(board)
    parts = ["<h2>Leaderboard</h2>", f"<p>{esc(LEGEND)}</p>"]
    if board.empty:
        parts.append("<p>No finished units yet.</p>")
    else:
        rows = table_rows(board, eval_sets, settings_of(view).alpha)
        parts.append(html_table(table_header(eval_sets), flag_rows(rows, below_start(view))))
        legends = f"{significance_legend(view, board)} {interval_legend(view)}"
        legends += f" {below_start_note(view)}" if below_start(view) else ""
        parts.append(f"<p>{esc(legends)}</p>")
        ranks = rank_rows(board, eval_sets)
        if ranks:
            parts += ["<h2>Ranks and tiers</h2>", f"<p>{esc(rank_legend(view, board))}</p>"]
            parts.append(html_grid(rank_header(eval_sets), ranks))
    left_out = not_scored_lines(view)
    if left_out:
        items = "".join(f"<li>{esc(line)}</li>" for line in left_out)
        parts.append(f"<p>Units not in the table:</p><ul>{items}</ul>")
    return "\n".join(parts)


def html_sections(sections: list[Section]) -> str:
    parts = []
    for section in sections:
        parts.append(f"<h2>{esc(section.title)}</h2>")
        if section.rows:
            parts.append(html_grid(section.header, section.rows))
        parts += [f"<p>{esc(note)}</p>" for note in section.notes]
    return "\n".join(parts)


def html_gap(board: pd.DataFrame) -> str:
    if board.empty:
        return ""
    note = gap_note(board)
    if note:
        return f"<p>{esc(note)}</p>"
    eval_sets = board_eval_sets(board)
    table = html_table(["method", "seeds", *eval_sets], gap_rows(board, eval_sets, False), "gap")
    return f"<h2>{esc(GAP_TITLE)}</h2>\n<p>{esc(GAP_LEGEND)}</p>\n{table}"


def html_ablations(tables: dict[str, pd.DataFrame]) -> str:
    parts = []
    for base, table in tables.items():
        head = "".join(f"<th>{esc(c)}</th>" for c in table.columns)
        body = "".join(
            "<tr>" + "".join(f"<td>{esc(v)}</td>" for v in row) + "</tr>"
            for row in table.itertuples(index=False)
        )
        parts.append(f"<h2>Ablation: {esc(base)}</h2>\n<table><tr>{head}</tr>{body}</table>")
    return "\n".join(parts)


def html_fidelity(view: RunView) -> str:
    table = fidelity_table(fidelity_scores(view))
    if table.empty:
        return ""
    grid = html_grid(list(table.columns), table.astype(str).values.tolist(), "fidelity")
    return f"<h2>Teacher fidelity</h2>\n<p>{esc(FIDELITY_LEGEND)}</p>\n{grid}"


def html_lm_eval(view: RunView) -> str:
    header, rows = lm_eval_rows(view)
    if not rows:
        return ""
    grid = html_grid(header, rows, "lm-eval")
    return f"<h2>lm-evaluation-harness</h2>\n<p>{esc(LM_EVAL_LEGEND)}</p>\n{grid}"


def html_baselines(comparison: Comparison | None) -> str:
    if comparison is None:
        return ""
    parts = [f"<h2>{esc(comparison.title)}</h2>", f"<p>{esc(comparison.caption)}</p>"]
    if comparison.rows:
        parts.append(html_grid(comparison.header, comparison.rows, "baselines"))
    return "\n".join(parts)


def html_plots(plots: dict[str, Plot]) -> str:
    if not plots:
        return ""
    figures = [
        f'<figure><img alt="{esc(name)}" src="data:image/png;base64,'
        f'{base64.b64encode(plot.png).decode("ascii")}">'
        f"<figcaption>{esc(plot.caption)} ({esc(name)})</figcaption></figure>"
        for name, plot in plots.items()
    ]
    return "<h2>Plots</h2>\n" + "\n".join(figures)


def html_sample(sample: Sample) -> str:
    """The prompt, then references and every method's first prediction in one column."""
    references = [
        (f"reference {i + 1}", r, ' class="ref"') for i, r in enumerate(sample.references)
    ]
    outputs = [(m, NO_VALUE if p is None else p, "") for m, p in sample.predictions.items()]
    rows = "".join(
        f'<tr{attr}><td>{esc(source)}</td><td class="text">{esc(text)}</td></tr>'
        for source, text, attr in [*references, *outputs]
    )
    return (
        f'<div class="sample"><h4>example {esc(sample.id)}</h4>'
        f"<p>Prompt</p><pre>{esc(sample.prompt)}</pre>"
        f'<table class="samples"><thead><tr><th>source</th><th>text</th></tr></thead>'
        f"<tbody>{rows}</tbody></table></div>"
    )


def html_samples(view: RunView, eval_sets: list[str]) -> str:
    parts = [
        "<h2>Sample generations</h2>",
        f"<p>The first {SAMPLES_PER_SET} examples of each eval set: the references, then the "
        "first prediction (first generation seed) of each method's lowest training seed.</p>",
    ]
    for eval_set in eval_sets:
        samples = eval_samples(view, eval_set)
        if samples:
            parts.append(f"<h3>{esc(eval_set)}</h3>")
            parts += [html_sample(s) for s in samples]
    return "\n".join(parts)


def render_html(view: RunView, board: pd.DataFrame, plots: dict[str, Plot]) -> str:
    title = f"dpkd-bench report: {view.recipe_name}"
    manifest = json.dumps(view.manifest, indent=2, ensure_ascii=False, sort_keys=False)
    body = [
        f"<h1>{esc(title)}</h1>",
        f'<p class="smoke">{esc(smoke_banner(view))}</p>' if view.smoke else "",
        f"<p>Recipe: <b>{esc(view.recipe_name)}</b>. {esc(provenance(view))}</p>",
        f"<p>{esc(protocol_line(view))}</p>",
        html_leaderboard(view, board),
        html_sections(report_sections(view)),
        html_gap(board),
        html_ablations(ablation_tables(board)) if not board.empty else "",
        html_fidelity(view),
        html_lm_eval(view),
        html_baselines(published_comparison(view, board)),
        html_plots(plots),
        html_samples(view, board_eval_sets(board)),
        f"<h2>Manifest</h2>\n<pre>{esc(manifest)}</pre>",
    ]
    return PAGE.substitute(
        title=esc(title), style=STYLE, body="\n".join(part for part in body if part)
    )
