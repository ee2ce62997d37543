"""Every checked-in report that keeps its per-example scores re-renders to the same tables from
what is checked in; the others are listed as made before per-example scores were kept."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from dpkd_bench.report import render
from dpkd_bench.report.archive import differing_tables, tables_of

REPORTS = Path(__file__).resolve().parent.parent / "reports"
ARCHIVED = sorted(p for p in REPORTS.iterdir() if (p / "runs").is_dir())
OLDER = sorted(
    p for p in REPORTS.iterdir() if (p / "manifest.json").is_file() and p not in ARCHIVED
)
BEFORE = "made before per-example scores were kept"


def test_there_are_archived_reports():
    assert ARCHIVED, "no checked-in report keeps its per-example scores"


@pytest.mark.parametrize("report", ARCHIVED, ids=lambda p: p.name)
def test_an_archived_report_re_renders_to_the_same_tables(report, tmp_path):
    copy = tmp_path / report.name
    shutil.copytree(report, copy)
    for name in tables_of(copy):
        (copy / name).unlink()
    render(copy, tables_only=True)
    assert differing_tables(report, copy) == []


@pytest.mark.parametrize("report", ARCHIVED, ids=lambda p: p.name)
def test_an_archived_report_was_made_from_a_clean_committed_tree(report):
    manifest = json.loads((report / "manifest.json").read_text(encoding="utf-8"))
    commit = manifest.get("git_commit") or ""
    assert len(commit) == 40, f"{report.name}: commit {commit!r} (modified tree or none)"
    assert manifest.get("finished") and manifest.get("threads")


def test_older_reports_are_marked_in_the_readme():
    readme = (REPORTS / "README.md").read_text(encoding="utf-8")
    for report in OLDER:
        line = next((line for line in readme.splitlines() if f"`{report.name}/`" in line), "")
        assert BEFORE in line, f"reports/README.md does not mark {report.name} as {BEFORE!r}"
