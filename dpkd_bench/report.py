"""Tables, plots and one HTML page from a run directory alone (never loads a model).

``render(DIR)`` (re)writes DIR/leaderboard.csv, DIR/leaderboard.md, DIR/report.html and
DIR/plots/*.png. Only units whose metrics.json exists and whose manifest state is "done" (or
absent) are scored; failed, running and pending units are listed under the table instead.
The per-seed score table (``seed_scores``) is the single source for the leaderboard, the
Markdown/HTML tables and the score plots.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from dpkd_bench.errors import UserError
from dpkd_bench.results import (
    GENERATIONS,
    METRICS,
    REFERENCE_ROWS,
    TRAIN_LOG,
    RunDir,
    atomic_write_bytes,
    atomic_write_text,
    is_safe_name,
    read_json,
    read_jsonl,
    unit_key,
)
from dpkd_bench.variants import parse_variant

SCORES = (("rougeL", "ROUGE-L"), ("exact_match", "EM"))  # both higher-is-better, 0-100
LEADERBOARD_COLUMNS = [
    "method",
    "eval_set",
    "n_seeds",
    "rougeL_mean",
    "rougeL_std",
    "exact_match_mean",
    "exact_match_std",
]
SEED_COLUMNS = ["method", "seed", "eval_set", "rougeL", "exact_match", "n"]
NOT_LOSS_TERMS = {"method", "seed", "step", "lr", "tokens_per_s", "elapsed_s"}
SAMPLES_PER_SET = 3
TRAINING_PLOT = "training_curves.png"
NO_VALUE = "—"


# ---- what is in the run directory ---------------------------------------------------------
@dataclass(frozen=True)
class RunView:
    """A run directory's manifest and its finished units, in display order."""

    run: RunDir
    manifest: dict
    units: list[tuple[str, int]]

    @property
    def recipe_name(self) -> str:
        return str(self.manifest.get("recipe_name") or self.run.root.name)

    @property
    def methods(self) -> list[str]:
        return list(dict.fromkeys(method for method, _ in self.units))

    @property
    def eval_sets(self) -> list[str]:
        return [str(name) for name in self.manifest.get("eval_sets", [])]

    def not_scored(self) -> dict[str, dict]:
        """Manifest units that are not "done" (failed, running, pending)."""
        units = self.manifest.get("units") or {}
        return {k: v for k, v in units.items() if _state(v) != "done"}


def _state(entry: object) -> str:
    return entry.get("state", "done") if isinstance(entry, dict) else "done"


def display_order(found, preferred) -> list[str]:
    """``preferred`` names that were found, in that order, then the other found names sorted."""
    found = set(found)
    first = [name for name in dict.fromkeys(preferred) if name in found]
    return first + sorted(found - set(first))


def load_run(run: RunDir) -> RunView:
    manifest = run.load_manifest()
    states = manifest.get("units") or {}
    done = [u for u in run.completed_units() if _state(states.get(unit_key(*u))) == "done"]
    order = display_order({m for m, _ in done}, [*REFERENCE_ROWS, *manifest.get("methods", [])])
    rank = {method: i for i, method in enumerate(order)}
    return RunView(run, manifest, sorted(done, key=lambda u: (rank[u[0]], u[1])))


# ---- scores -------------------------------------------------------------------------------
def _unit_scores(run: RunDir, method: str, seed: int) -> list[dict]:
    path = run.unit_dir(method, seed) / METRICS
    metrics = read_json(path)
    try:
        return [
            {
                "method": method,
                "seed": seed,
                "eval_set": str(name),
                **{key: float(scores[key]) for key, _ in SCORES},
                "n": int(scores.get("n", 0)),
            }
            for name, scores in metrics["eval"].items()
        ]
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise UserError(
            f"{path} does not follow the metrics schema ({type(err).__name__}: {err}); expected "
            '{"eval": {"<eval_set>": {"exact_match": ..., "rougeL": ..., "n": ...}}}'
        ) from None


def seed_scores(view: RunView) -> pd.DataFrame:
    """One row per (finished unit, eval set): method, seed, eval_set, rougeL, exact_match, n;
    sorted by method (display order), eval set (manifest order), seed."""
    rows = [row for unit in view.units for row in _unit_scores(view.run, *unit)]
    table = pd.DataFrame(rows, columns=SEED_COLUMNS)
    eval_order = display_order(table["eval_set"], view.manifest.get("eval_sets", []))
    method_rank = {m: i for i, m in enumerate(view.methods)}
    eval_rank = {e: i for i, e in enumerate(eval_order)}
    keys = pd.DataFrame(
        {"m": table["method"].map(method_rank), "e": table["eval_set"].map(eval_rank)}
    )
    order = keys.assign(s=table["seed"]).sort_values(["m", "e", "s"], kind="stable").index
    return table.loc[order].reset_index(drop=True)


def aggregate(scores: pd.DataFrame) -> pd.DataFrame:
    """Leaderboard rows from per-seed scores; std is the sample std (NaN for one seed)."""
    spec = {"n_seeds": ("seed", "count")}
    for key, _ in SCORES:
        spec[f"{key}_mean"] = (key, "mean")
        spec[f"{key}_std"] = (key, lambda s: s.std(ddof=1))
    board = scores.groupby(["method", "eval_set"], sort=False).agg(**spec).reset_index()
    board = board.astype({"n_seeds": int})
    for column in LEADERBOARD_COLUMNS[3:]:
        board[column] = board[column].astype(float)
    return board[LEADERBOARD_COLUMNS]


def leaderboard(run: RunDir) -> pd.DataFrame:
    """One row per (method, eval_set): reference rows first, then the manifest's methods."""
    return aggregate(seed_scores(load_run(run)))


# ---- one table model for Markdown and HTML ------------------------------------------------
@dataclass(frozen=True)
class Cell:
    text: str
    best: bool = False


@dataclass(frozen=True)
class Row:
    method: str
    reference: bool
    seeds: str
    cells: list[Cell]


def format_score(mean: float, std: float) -> str:
    spread = "n/a" if math.isnan(std) else f"{std:.2f}"
    return f"{mean:.2f} ± {spread}"


def best_means(board: pd.DataFrame) -> dict[tuple[str, str], float]:
    """Best student mean (rounded as shown) per (eval_set, score); references excluded."""
    students = board[~board["method"].isin(REFERENCE_ROWS)]
    best = {}
    for key, _ in SCORES:
        for eval_set, values in students.groupby("eval_set", sort=False)[f"{key}_mean"]:
            best[(eval_set, key)] = round(values.max(), 2)
    return best


def table_header(eval_sets: list[str]) -> list[str]:
    return ["method", "seeds"] + [f"{e} {label}" for e in eval_sets for _, label in SCORES]


def table_rows(board: pd.DataFrame, eval_sets: list[str]) -> list[Row]:
    best = best_means(board)
    rows = []
    for method, group in board.groupby("method", sort=False):
        by_set = group.set_index("eval_set")
        reference = method in REFERENCE_ROWS
        cells = []
        for eval_set in eval_sets:
            for key, _ in SCORES:
                if eval_set not in by_set.index:
                    cells.append(Cell(NO_VALUE))
                    continue
                mean = by_set.at[eval_set, f"{key}_mean"]
                is_best = not reference and round(mean, 2) == best.get((eval_set, key))
                cells.append(Cell(format_score(mean, by_set.at[eval_set, f"{key}_std"]), is_best))
        seeds = "/".join(str(n) for n in sorted(set(group["n_seeds"])))
        rows.append(Row(method, reference, seeds, cells))
    return rows


def board_eval_sets(board: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(board["eval_set"]))


LEGEND = (
    "Mean ± sample std over training seeds (n/a: one seed). Higher is better. Best student "
    "per column in bold; teacher and student_init are references (italic, not ranked)."
)


# ---- ablations: variants of one method side by side ------------------------------------------
def ablation_tables(board: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Per base method with named variants: rows variants, columns the varied keys + scores."""
    tables = {}
    methods = [m for m in dict.fromkeys(board["method"]) if m not in REFERENCE_ROWS]
    parsed = {m: parse_variant(m) for m in methods}
    for base in dict.fromkeys(b for b, o in parsed.values() if o):
        members = [m for m, (b, _) in parsed.items() if b == base]
        keys = list(dict.fromkeys(k for m in members for k in parsed[m][1]))
        rows = []
        for method in members:
            overrides = parsed[method][1]
            row = {"variant": method, **{k: overrides.get(k, "default") for k in keys}}
            for record in board[board["method"] == method].itertuples():
                for key, label in SCORES:
                    row[f"{record.eval_set} {label}"] = round(getattr(record, f"{key}_mean"), 2)
            rows.append(row)
        tables[base] = pd.DataFrame(rows)
    return tables


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


def ablation_plot(base: str, table: pd.DataFrame) -> bytes:
    """Grouped bars: one group per eval-set score, one bar per variant."""
    columns = [c for c in table.columns if c.endswith(tuple(f" {label}" for _, label in SCORES))]
    fig = Figure(figsize=(max(6, 1.2 * len(columns) + 2), 4))
    ax = fig.add_subplot(1, 1, 1)
    width = 0.8 / max(len(table), 1)
    for i, row in enumerate(table.itertuples(index=False)):
        values = [table.iloc[i][c] for c in columns]
        ax.bar([x + i * width for x in range(len(columns))], values, width, label=str(row[0]))
    ax.set_xticks(
        [x + 0.4 - width / 2 for x in range(len(columns))], columns, rotation=20, ha="right"
    )
    ax.set_ylabel("score (%)")
    ax.set_title(f"Ablation: {base}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return png_bytes(fig)


# ---- Markdown ------------------------------------------------------------------------------
def md_text(text: object) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def md_cell(cell: Cell, reference: bool) -> str:
    text = md_text(cell.text)
    if cell.best:
        return f"**{text}**"
    return f"*{text}*" if reference and cell.text != NO_VALUE else text


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


def not_scored_lines(view: RunView) -> list[str]:
    """One line per unit left out of the table: key, state and error."""
    lines = []
    for key, entry in view.not_scored().items():
        error = entry.get("error") if isinstance(entry, dict) else None
        detail = f" ({' '.join(str(error).split())})" if error else ""
        lines.append(f"{key}: {_state(entry)}{detail}")
    return lines


def render_markdown(view: RunView, board: pd.DataFrame) -> str:
    eval_sets = board_eval_sets(board)
    lines = [f"# dpkd-bench leaderboard: {md_text(view.recipe_name)}", "", LEGEND, ""]
    if board.empty:
        lines.append("No finished units yet.")
    else:
        lines += markdown_table(table_header(eval_sets), table_rows(board, eval_sets))
    lines += markdown_ablations(ablation_tables(board)) if not board.empty else []
    lines += markdown_families(family_scores(view))
    left_out = not_scored_lines(view)
    if left_out:
        lines += ["", "Units not in the table:", ""] + [f"- {md_text(line)}" for line in left_out]
    return "\n".join(lines) + "\n"


# ---- plots ---------------------------------------------------------------------------------
def png_bytes(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    FigureCanvasAgg(fig).print_png(buffer, metadata={"Software": None})
    return buffer.getvalue()


def file_slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "eval"


def score_plot(rows: pd.DataFrame, title: str) -> bytes:
    """Grouped bars, one group per method; error bars = std over seeds (none for one seed)."""
    methods = list(rows["method"])
    fig = Figure(figsize=(max(5.0, 1.1 * len(methods) + 2), 4.2), layout="constrained")
    ax = fig.add_subplot()
    width = 0.38
    handles = []
    for i, (key, label) in enumerate(SCORES):
        x = [j + (i - 0.5) * width for j in range(len(methods))]
        means, stds = rows[f"{key}_mean"], rows[f"{key}_std"]
        bars = ax.bar(x, means, width, color=f"C{i}", yerr=stds, capsize=3)
        for bar, method in zip(bars, methods, strict=True):
            if method in REFERENCE_ROWS:
                bar.set_hatch("//")
                bar.set_alpha(0.6)
        handles.append(Patch(color=f"C{i}", label=label))
    if any(m in REFERENCE_ROWS for m in methods):
        handles.append(Patch(facecolor="white", edgecolor="black", hatch="//", label="reference"))
    ax.set_xticks(range(len(methods)), methods, rotation=30, ha="right")
    ax.set_ylabel("score (0-100)")
    ax.set_ylim(bottom=0)
    ax.set_title(title)
    ax.legend(handles=handles, fontsize="small")
    return png_bytes(fig)


def score_plots(view: RunView, board: pd.DataFrame) -> dict[str, bytes]:
    return {
        f"scores_{file_slug(eval_set)}.png": score_plot(rows, f"{view.recipe_name}: {eval_set}")
        for eval_set, rows in board.groupby("eval_set", sort=False)
    }


def train_logs(view: RunView) -> pd.DataFrame:
    """Every finished unit's train log, with method and seed columns (empty if none)."""
    frames = []
    for method, seed in view.units:
        path = view.run.unit_dir(method, seed) / TRAIN_LOG
        records = read_jsonl(path) if path.is_file() else []
        if records:
            frames.append(pd.DataFrame(records).assign(method=method, seed=seed))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def loss_terms(logs: pd.DataFrame) -> list[str]:
    """Numeric logged columns other than bookkeeping; "loss" (the weighted total) first."""
    numeric = logs.select_dtypes("number").columns
    terms = [c for c in logs.columns if c in numeric and c not in NOT_LOSS_TERMS]
    return sorted(terms, key=lambda t: t != "loss")


def training_plot(logs: pd.DataFrame, methods: list[str], terms: list[str]) -> bytes:
    """One panel per loss term: value vs step, one line per method (mean over seeds)."""
    ncols = min(3, len(terms))
    nrows = math.ceil(len(terms) / ncols)
    fig = Figure(figsize=(4.2 * ncols, 3.2 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, term in zip(axes, terms, strict=False):
        for i, method in enumerate(methods):  # one colour per method across panels
            curve = logs[logs["method"] == method].groupby("step")[term].mean().dropna()
            if not curve.empty:
                ax.plot(curve.index, curve.values, color=f"C{i % 10}", label=method, marker=".")
        ax.set_title(term)
        ax.set_xlabel("step")
    for ax in axes[len(terms) :]:
        ax.set_visible(False)
    handles = [Line2D([], [], color=f"C{i % 10}", label=m) for i, m in enumerate(methods)]
    fig.legend(handles=handles, loc="outside lower center", ncols=min(4, len(methods) or 1))
    return png_bytes(fig)


def training_plots(view: RunView) -> dict[str, bytes]:
    logs = train_logs(view)
    terms = loss_terms(logs) if "step" in logs else []
    if not terms:
        return {}
    methods = [m for m in view.methods if m in set(logs["method"])]
    return {TRAINING_PLOT: training_plot(logs, methods, terms)}


def write_plots(run: RunDir, plots: dict[str, bytes]) -> list[Path]:
    """Write the plots and remove report plots of an earlier render that are now stale."""
    stale = [
        *run.plots_dir.glob("scores_*.png"),
        *run.plots_dir.glob("ablation_*.png"),
        run.plots_dir / TRAINING_PLOT,
    ]
    for path in stale:
        if path.name not in plots:
            path.unlink(missing_ok=True)
    paths = []
    for name, data in plots.items():
        atomic_write_bytes(run.plots_dir / name, data)
        paths.append(run.plots_dir / name)
    return paths


# ---- sample generations --------------------------------------------------------------------
@dataclass(frozen=True)
class Sample:
    id: str
    prompt: str
    references: list[str]
    predictions: dict[str, str | None]  # method -> first prediction (None: not found)


def first_seed_units(view: RunView) -> dict[str, Path]:
    """Each method's unit directory with the lowest finished seed."""
    dirs: dict[str, Path] = {}
    for method, seed in view.units:
        dirs.setdefault(method, view.run.unit_dir(method, seed))
    return dirs


def read_generations(unit: Path, eval_set: str) -> list[dict]:
    path = unit / GENERATIONS / f"{eval_set}.jsonl"
    if not is_safe_name(eval_set) or not path.is_file():
        return []
    return [r for r in read_jsonl(path) if isinstance(r, dict)]


def family_scores(view: RunView) -> pd.DataFrame:
    """Exact match per task family (records with a ``family``), mean over every finished seed.

    Columns: method, eval_set, family, n, exact_match, rougeL. Empty when no record has one.
    """
    rows = []
    for method, seed in view.units:
        unit = view.run.unit_dir(method, seed)
        for eval_set in view.eval_sets:
            for record in read_generations(unit, eval_set):
                if record.get("family"):
                    rows.append(
                        {
                            "method": method,
                            "eval_set": eval_set,
                            "family": record["family"],
                            "exact_match": float(record.get("exact_match", 0.0)),
                            "rougeL": float(record.get("rougeL", 0.0)),
                        }
                    )
    if not rows:
        return pd.DataFrame(columns=["method", "eval_set", "family", "n", "exact_match", "rougeL"])
    frame = pd.DataFrame(rows)
    grouped = frame.groupby(["method", "eval_set", "family"], sort=False)
    table = grouped.agg(
        n=("exact_match", "size"), exact_match=("exact_match", "mean"), rougeL=("rougeL", "mean")
    )
    return table.reset_index().round(2)


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


def first_prediction(record: dict | None) -> str | None:
    predictions = (record or {}).get("predictions") or []
    return str(predictions[0]) if predictions else None


def eval_samples(view: RunView, eval_set: str, k: int = SAMPLES_PER_SET) -> list[Sample]:
    """The first ``k`` examples of ``eval_set`` and every method's first prediction on them."""
    by_method = {
        method: {str(r.get("id")): r for r in read_generations(unit, eval_set)}
        for method, unit in first_seed_units(view).items()
    }
    source = next((records for records in by_method.values() if records), {})
    return [
        Sample(
            id=example_id,
            prompt=str(record.get("prompt", "")),
            references=[str(r) for r in record.get("references") or []],
            predictions={m: first_prediction(rs.get(example_id)) for m, rs in by_method.items()},
        )
        for example_id, record in list(source.items())[:k]
    ]


# ---- HTML ----------------------------------------------------------------------------------
def esc(text: object) -> str:
    return html.escape(str(text), quote=True)


CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222;
       padding: 0 1em; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 4px 8px; vertical-align: top; }
td.num { text-align: right; white-space: nowrap; }
tr.ref td { font-style: italic; color: #555; background: #f6f6f6; }
td.best { font-weight: bold; }
pre, td.text { white-space: pre-wrap; word-break: break-word; font-family: ui-monospace,
       monospace; font-size: 0.9em; }
pre { background: #f6f6f6; padding: 8px; }
figure { margin: 1em 0; }
img { max-width: 100%; }
.sample { border-left: 3px solid #ccc; padding-left: 1em; margin: 1.5em 0; }
"""


def html_table(header: list[str], rows: list[Row]) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = []
    for row in rows:
        cells = "".join(
            f'<td class="num{" best" if c.best else ""}">{esc(c.text)}</td>' for c in row.cells
        )
        attr = ' class="ref"' if row.reference else ""
        body.append(
            f'<tr{attr}><td>{esc(row.method)}</td><td class="num">{esc(row.seeds)}</td>{cells}</tr>'
        )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def html_leaderboard(view: RunView, board: pd.DataFrame) -> str:
    eval_sets = board_eval_sets(board)
    parts = ["<h2>Leaderboard</h2>", f"<p>{esc(LEGEND)}</p>"]
    if board.empty:
        parts.append("<p>No finished units yet.</p>")
    else:
        parts.append(html_table(table_header(eval_sets), table_rows(board, eval_sets)))
    left_out = not_scored_lines(view)
    if left_out:
        items = "".join(f"<li>{esc(line)}</li>" for line in left_out)
        parts.append(f"<p>Units not in the table:</p><ul>{items}</ul>")
    return "\n".join(parts)


def html_plots(plots: dict[str, bytes]) -> str:
    if not plots:
        return ""
    figures = [
        f'<figure><img alt="{esc(name)}" src="data:image/png;base64,'
        f'{base64.b64encode(data).decode("ascii")}"><figcaption>{esc(name)}</figcaption></figure>'
        for name, data in plots.items()
    ]
    return "<h2>Plots</h2>\n" + "\n".join(figures)


def html_sample(sample: Sample) -> str:
    references = "".join(f"<li><pre>{esc(r)}</pre></li>" for r in sample.references)
    rows = "".join(
        f'<tr><td>{esc(m)}</td><td class="text">{esc(NO_VALUE if p is None else p)}</td></tr>'
        for m, p in sample.predictions.items()
    )
    return (
        f'<div class="sample"><h4>example {esc(sample.id)}</h4>'
        f"<p>Prompt</p><pre>{esc(sample.prompt)}</pre>"
        f"<p>References</p><ul>{references}</ul>"
        f"<table><thead><tr><th>method</th><th>first prediction</th></tr></thead>"
        f"<tbody>{rows}</tbody></table></div>"
    )


def html_samples(view: RunView, eval_sets: list[str]) -> str:
    parts = [
        "<h2>Sample generations</h2>",
        "<p>First prediction (first generation seed) of each method's lowest training seed.</p>",
    ]
    for eval_set in eval_sets:
        samples = eval_samples(view, eval_set)
        if samples:
            parts.append(f"<h3>{esc(eval_set)}</h3>")
            parts += [html_sample(s) for s in samples]
    return "\n".join(parts)


def render_html(view: RunView, board: pd.DataFrame, plots: dict[str, bytes]) -> str:
    title = f"dpkd-bench report: {view.recipe_name}"
    manifest = json.dumps(view.manifest, indent=2, ensure_ascii=False, sort_keys=False)
    body = [
        f"<h1>{esc(title)}</h1>",
        f"<p>Recipe: <b>{esc(view.recipe_name)}</b></p>",
        html_leaderboard(view, board),
        html_ablations(ablation_tables(board)) if not board.empty else "",
        html_plots(plots),
        html_samples(view, board_eval_sets(board)),
        f"<h2>Manifest</h2>\n<pre>{esc(manifest)}</pre>",
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{esc(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
        + "\n".join(part for part in body if part)
        + "\n</body>\n</html>\n"
    )


# ---- entry point ---------------------------------------------------------------------------
def render(run_dir: str | Path) -> list[Path]:
    """(Re)write leaderboard.csv, leaderboard.md, report.html and plots/*.png; return them."""
    run = RunDir(run_dir)
    view = load_run(run)
    board = aggregate(seed_scores(view))
    plots = {**score_plots(view, board), **training_plots(view)}
    if not board.empty:
        for base, table in ablation_tables(board).items():
            plots[f"ablation_{file_slug(base)}.png"] = ablation_plot(base, table)
    csv_path, md_path, html_path = (
        run.root / "leaderboard.csv",
        run.root / "leaderboard.md",
        run.root / "report.html",
    )
    atomic_write_text(csv_path, board.to_csv(index=False, lineterminator="\n"))
    atomic_write_text(md_path, render_markdown(view, board))
    families_path = run.root / "families.csv"
    atomic_write_text(families_path, family_scores(view).to_csv(index=False, lineterminator="\n"))
    plot_paths = write_plots(run, plots)
    atomic_write_text(html_path, render_html(view, board, plots))
    return [csv_path, md_path, families_path, html_path, *plot_paths]
