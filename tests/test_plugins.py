"""Methods from outside the package: --plugin files and modules, recipes' plugins:, entry points."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from dpkd_bench.cli import main
from dpkd_bench.methods import METHODS, PLUGIN_SOURCES

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_plugin() -> str:
    """The plugin example of the README's 'Add your own method' section."""
    section = README.read_text().split("## Add your own method", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.fixture
def forget_plugins():
    """Registered plugins stay registered for the process; drop the ones a test adds."""
    before = dict(METHODS)
    yield
    for name in set(METHODS) - set(before):
        del METHODS[name]
        PLUGIN_SOURCES.pop(name, None)


def test_readme_example_is_about_thirty_lines():
    assert 20 <= len(readme_plugin().strip().splitlines()) <= 40


def test_readme_plugin_runs_beside_sft_and_is_listed_and_recorded(tmp_path, capsys, forget_plugins):
    plugin = tmp_path / "jsd_kd.py"
    plugin.write_text(readme_plugin())
    assert main(["ls", "--plugin", str(plugin)]) == 0
    listed = capsys.readouterr().out
    assert re.search(r"^  jsd_kd +token-level Jensen-Shannon KD", listed, re.M)
    assert "ce_weight=0.5" in listed and f"[plugin: {plugin}]" in listed

    out = tmp_path / "run"
    args = ["run", "--recipe", "synthetic-quick", "--methods", "sft,jsd_kd"]
    assert main([*args, "--plugin", str(plugin), "--out", str(out)]) == 0
    board = pd.read_csv(out / "leaderboard.csv")
    assert {"sft", "jsd_kd"} <= set(board["method"])
    assert board.loc[board["method"] == "jsd_kd", "rougeL_mean"].notna().all()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["recipe"]["plugins"] == [str(plugin)]
    assert manifest["plugins"]["jsd_kd"]["source"] == str(plugin.resolve())
    assert len(manifest["plugins"]["jsd_kd"]["sha256"]) == 16
    assert "jsd_kd" in (out / "leaderboard.md").read_text()
    metrics = json.loads((out / "runs" / "jsd_kd" / "seed-1" / "metrics.json").read_text())
    assert metrics["train"]["teacher_forwards"] > 0  # counted by the loop, as for built-ins

    # resume finds every unit done and changes nothing
    before = (out / "runs" / "jsd_kd" / "seed-1" / "metrics.json").read_bytes()
    assert main([*args, "--plugin", str(plugin), "--out", str(out), "--resume"]) == 0
    assert (out / "runs" / "jsd_kd" / "seed-1" / "metrics.json").read_bytes() == before


def test_a_plugin_sweeps_into_variants_the_planner_counts(tmp_path, capsys, forget_plugins):
    plugin = tmp_path / "jsd_kd.py"
    plugin.write_text(readme_plugin())
    args = ["run", "--recipe", "synthetic-quick", "--methods", "sft,jsd_kd", "--dry-run"]
    assert main([*args, "--sweep", "jsd_kd.ce_weight=0.2,0.8", "--plugin", str(plugin)]) == 0
    plan = capsys.readouterr().out
    assert "jsd_kd[ce_weight=0.2]" in plan and "jsd_kd[ce_weight=0.8]" in plan


def test_a_recipe_lists_its_plugins_beside_it(tmp_path, capsys, forget_plugins):
    (tmp_path / "jsd_kd.py").write_text(readme_plugin())
    recipe = tmp_path / "jsd.yaml"
    recipe.write_text(
        "base: synthetic-quick\nplugins: [jsd_kd.py]\nmethods: [sft, 'jsd_kd[ce_weight=0.2]']\n"
    )
    assert main(["validate", str(recipe)]) == 0
    assert "jsd_kd[ce_weight=0.2]" in capsys.readouterr().out


def cli(*args: str, cwd: Path, env_path: Path | None = None) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": str(env_path)} if env_path else {}
    return subprocess.run(
        [sys.executable, "-m", "dpkd_bench.cli", *args],
        cwd=cwd,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.slow
def test_an_installed_entry_point_registers_its_method(tmp_path):
    package = tmp_path / "site" / "jsd_plugin"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(readme_plugin().replace('"jsd_kd"', '"jsd_ep"'))
    info = tmp_path / "site" / "jsd_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: jsd-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[dpkd_bench.methods]\njsd_ep = jsd_plugin:JSD\n")
    listed = cli("ls", cwd=tmp_path, env_path=tmp_path / "site")
    assert listed.returncode == 0, listed.stderr
    assert re.search(r"^  jsd_ep ", listed.stdout, re.M)
    assert "[plugin: entry point jsd_ep = jsd_plugin:JSD]" in listed.stdout
    checked = cli(
        "validate",
        "synthetic-quick",
        "methods=[sft,jsd_ep]",
        cwd=tmp_path,
        env_path=tmp_path / "site",
    )
    assert checked.returncode == 0, checked.stderr


BAD_PLUGINS = {
    "clash.py": (
        "from dpkd_bench.methods.kd import KD\n\nclass Mine(KD):\n    name = 'kd'\n",
        "method name 'kd' is taken by a built-in method",
    ),
    "empty.py": ("x = 1\n", "defines no Method subclass"),
    "broken.py": ("import not_a_module_anywhere\n", "failed to import (ModuleNotFoundError"),
}


@pytest.mark.parametrize("file", sorted(BAD_PLUGINS))
def test_a_bad_plugin_is_a_one_line_error(file, tmp_path):
    source, message = BAD_PLUGINS[file]
    (tmp_path / file).write_text(source)
    done = cli("ls", "--plugin", file, cwd=tmp_path)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: plugin ") and message in lines[0]


def test_a_missing_plugin_module_is_a_one_line_error(tmp_path):
    done = cli("ls", "--plugin", "no_such_plugin_module", cwd=tmp_path)
    assert done.returncode == 2 and "failed to import" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
