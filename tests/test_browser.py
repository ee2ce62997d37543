"""report.html in a real browser: headless Chromium draws it, its DOM holds the leaderboard
rows, and its console stays empty (the page runs no script and loads nothing).

Skipped, with the reason, when no Chromium is installed (Debian: ``apt-get install chromium``).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import pytest
from matplotlib.image import imread

from dpkd_bench.report import render
from tests.test_results_report import SWEEP, make_run

pytestmark = pytest.mark.browser

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
# Headless, as root, offline: no sandbox, no background network, a fresh profile per call.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--enable-logging=stderr",
    "--v=0",
)
CONSOLE = ":CONSOLE"  # how Chromium's stderr log shows a page's console message


@pytest.fixture(scope="module")
def browser() -> str:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    pytest.skip(
        f"no headless Chromium on PATH (tried {', '.join(BROWSERS)}); install Debian's "
        "`chromium` package (.ci/run does) to run the browser test"
    )


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    run = make_run(tmp_path_factory.mktemp("browser") / "run")
    render(run.root)
    return run.root / "report.html"


def open_page(browser: str, page: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    profile = tempfile.mkdtemp(prefix="profile-", dir=tmp_path)
    command = [browser, *FLAGS, f"--user-data-dir={profile}", *args, page.as_uri()]
    return subprocess.run(command, capture_output=True, text=True, timeout=90, cwd=tmp_path)


def console_messages(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if CONSOLE in line or "Uncaught" in line]


class LeaderboardRows(HTMLParser):
    """First-cell texts of the body rows of ``<table class="leaderboard">``."""

    def __init__(self):
        super().__init__()
        self.rows: list[str] = []
        self._in_table = self._in_body = self._in_first_cell = False
        self._cells = 0

    def handle_starttag(self, tag, attrs):
        if tag == "table" and ("class", "leaderboard") in attrs:
            self._in_table = True
        elif self._in_table and tag == "tbody":
            self._in_body = True
        elif self._in_body and tag == "tr":
            self._cells = 0
            self.rows.append("")
        elif self._in_body and tag == "td":
            self._cells += 1
            self._in_first_cell = self._cells == 1

    def handle_endtag(self, tag):
        if tag == "td":
            self._in_first_cell = False
        elif tag == "table":
            self._in_table = self._in_body = False

    def handle_data(self, data):
        if self._in_first_cell:
            self.rows[-1] += data


def test_report_draws_a_non_blank_page(browser, report, tmp_path):
    shot = tmp_path / "report.png"
    result = open_page(browser, report, tmp_path, f"--screenshot={shot}", "--window-size=1200,1600")
    assert shot.is_file(), result.stderr[-2000:]
    pixels = imread(shot)[..., :3]  # floats in [0, 1]
    assert pixels.shape[:2] == (1600, 1200)
    assert pixels.std() > 0.05  # text, tables and plots, not one flat colour
    assert (pixels.mean(axis=-1) < 0.5).mean() > 0.005  # some dark ink on the page


def test_report_dom_holds_every_leaderboard_row_and_a_clean_console(browser, report, tmp_path):
    result = open_page(browser, report, tmp_path, "--dump-dom")
    assert result.returncode == 0, result.stderr[-2000:]
    parser = LeaderboardRows()
    parser.feed(result.stdout)
    assert parser.rows == ["teacher", "student_init", "sft", "kd", SWEEP]
    assert "<script" not in result.stdout  # the escaped generation stayed text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in result.stdout
    assert console_messages(result.stderr) == []


def test_console_check_sees_script_errors(browser, tmp_path):
    """The console check is not vacuous: a page with a failing script is caught."""
    page = tmp_path / "broken.html"
    page.write_text(
        "<!DOCTYPE html><html><body><p>x</p>"
        "<script>console.error('boom'); undefined_function();</script></body></html>",
        encoding="utf-8",
    )
    messages = console_messages(open_page(browser, page, tmp_path, "--dump-dom").stderr)
    assert any("boom" in m for m in messages)
    assert any("Uncaught ReferenceError" in m for m in messages)
