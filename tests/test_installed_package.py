"""A non-editable install carries its package data: from a fresh venv, outside the repository,
the report finds the published baselines (``dpkd_bench.baselines``) and its page template and
CSS, and every module of the source tree was installed (pyproject.toml lists its packages).

Offline: pip builds from a copy of the sources with the running interpreter's setuptools
(``--no-build-isolation --no-index``) and installs no dependencies; the venv sees this
interpreter's packages through a .pth file (its own ``--system-site-packages`` are the base
interpreter's, which need not hold them).
"""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_results_report import PAPER_SCORES, make_run

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ("pyproject.toml", "README.md", "baselines", "dpkd_bench")  # what the build reads
SETTING = "dpkd-2024/gpt2-1.5b-to-120m"
TIMEOUT_S = 300


def run_checked(command: list[str], cwd: Path, env: dict) -> str:
    done = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT_S
    )
    assert done.returncode == 0, f"{command} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def copy_sources(target: Path) -> Path:
    """The files the build reads, copied so that building writes nothing into the checkout."""
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build", "dist")
    target.mkdir(parents=True)
    for name in SOURCES:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, target / name, ignore=ignore)
        else:
            shutil.copy2(source, target / name)
    return target


def make_venv(target: Path) -> Path:
    """A fresh venv whose python also sees this interpreter's site-packages (pip, setuptools
    and the dependencies), after its own."""
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", "--system-site-packages", str(target)],
        check=True,
        timeout=TIMEOUT_S,
    )
    python = target / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    (Path(purelib) / "outer_site_packages.pth").write_text(
        "".join(f"{path}\n" for path in site.getsitepackages()), encoding="utf-8"
    )
    return python


@pytest.mark.slow
def test_a_non_editable_install_renders_published_baselines(tmp_path: Path):
    sources = copy_sources(tmp_path / "src")
    python = make_venv(tmp_path / "venv")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1")
    pip = [str(python), "-m", "pip", "install", "--no-deps", "--no-build-isolation"]
    run_checked([*pip, "--no-index", "--ignore-installed", str(sources)], tmp_path, env)

    where = "import dpkd_bench.report as r; print(r.__file__); print(r.BASELINES_DIR)"
    module, baselines = run_checked([str(python), "-c", where], tmp_path, env).split()
    installed = Path(module).parent.parent
    assert installed.is_relative_to(tmp_path / "venv"), module
    assert Path(baselines) == installed / "baselines"
    package, baselines_dir = sources / "dpkd_bench", sources / "baselines"
    copies = {path: installed / path.relative_to(package) for path in package.rglob("*.py")}
    copies.update({path: installed / "baselines" / path.name for path in baselines_dir.iterdir()})
    missing = sorted(
        str(p.relative_to(sources)) for p, copy in copies.items() if not copy.is_file()
    )
    assert not missing, f"not installed (list their packages in pyproject.toml): {missing}"

    run = make_run(tmp_path / "run", PAPER_SCORES, replicates=SETTING)
    run_checked([str(python.parent / "dpkd-bench"), "report", str(run.root)], tmp_path, env)
    md = (run.root / "leaderboard.md").read_text(encoding="utf-8")
    section = md.split(f"## Published results: {SETTING}")[1]
    assert "arXiv:2406.19774v2; Table 1" in section
    assert "| dpkd | 24.6 | 24.0 ± 1.4 | 13.8 | 12.0 ± 0.0 | 25.4 | 21.0 ± 1.4 |" in section
    page = (run.root / "report.html").read_text(encoding="utf-8")
    assert '<table class="baselines">' in page and "<td>24.0 ± 1.4</td>" in page
    assert page.startswith("<!DOCTYPE html>") and "td.num { text-align: right;" in page
