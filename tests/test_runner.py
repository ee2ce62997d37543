"""The runner's parts on their own: the teacher without a runner, evaluation, the manifest."""

from __future__ import annotations

import json
import re

import pytest
import torch

from dpkd_bench.data.prepare import prepare_data
from dpkd_bench.evaluation import Evaluator
from dpkd_bench.manifest import Manifest
from dpkd_bench.methods import get_method
from dpkd_bench.metrics import compute_metrics
from dpkd_bench.processes import Processes
from dpkd_bench.recipe import load_recipe
from dpkd_bench.results import RunDir
from dpkd_bench.teacher import TeacherSource, teacher_key, unit_items

# synthetic-quick, smaller still: a few training prompts, short samples, one generation seed.
SMALL = [
    "data.n_train=48",
    "data.n_eval=6",
    "data.eval_sets=[synthetic-id]",
    "teacher.train.steps=2",
    "sampling.max_new_tokens=4",
    "eval.max_new_tokens=4",
    "eval.gen_seeds=[10]",
]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """(recipe, data, cache, procs, teacher source) of a small synthetic-quick recipe."""
    cache = tmp_path_factory.mktemp("cache")
    recipe = load_recipe("synthetic-quick", SMALL)
    data = prepare_data(recipe, cache)
    procs = Processes()
    return recipe, data, cache, procs, TeacherSource(recipe, data, procs, cache)


def test_teacher_is_trained_once_then_loaded_from_the_cache(setup, capsys):
    recipe, data, cache, procs, source = setup
    assert source.dir == cache / f"teacher-{teacher_key(recipe, data)}"
    trained = source.load()
    assert "teacher: training" in capsys.readouterr().err
    assert (source.dir / "model.safetensors").is_file()
    assert not any(p.requires_grad for p in trained.parameters())  # frozen
    loaded = TeacherSource(recipe, data, procs, cache).load()
    assert "teacher: cached at" in capsys.readouterr().err
    for a, b in zip(trained.state_dict().values(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_teacher_samples_are_drawn_once_and_cached(setup, capsys):
    _, data, cache, _, source = setup
    teacher = source.load()
    samples = source.samples(teacher)
    assert len(samples) == len(data.train_items)
    assert all(isinstance(s, tuple) and len(s) <= 4 for s in samples)
    assert (cache / source.samples_name).is_file()
    capsys.readouterr()
    assert source.samples(teacher) == samples
    assert "teacher samples: cached at" in capsys.readouterr().err


def test_unit_items_follow_what_the_method_trains_on(setup):
    _, data, _, _, source = setup
    samples = source.samples(source.load())
    items = data.train_items
    assert unit_items(get_method("kd"), items, samples) is items
    seqkd = unit_items(get_method("seqkd"), items, samples)
    assert [i["responses"] for i in seqkd] == list(samples)
    dpkd = unit_items(get_method("dpkd"), items, samples)
    assert [i["teacher_responses"] for i in dpkd] == list(samples)
    assert [i["responses"] for i in dpkd] == [i["responses"] for i in items]


def test_evaluation_writes_generations_and_the_metrics_of_compute_metrics(setup, tmp_path):
    recipe, data, _, procs, source = setup
    run_dir = RunDir(tmp_path / "run")
    metrics = Evaluator(recipe, procs, run_dir).evaluate(
        source.load(), data, "teacher", 1, source.model_dir
    )
    unit = run_dir.unit_dir("teacher", 1)
    assert json.loads((unit / "metrics.json").read_text()) == metrics
    assert "train" not in metrics and not (unit / "fidelity.json").exists()
    lines = (unit / "generations" / "synthetic-id.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    figures = metrics["eval"]["synthetic-id"]
    assert figures["n"] == len(records) == len(data.eval_sets["synthetic-id"].examples)
    # one generation seed: the set's figures are compute_metrics's, before its rounding
    predictions = [r["predictions"][0] for r in records]
    expected = compute_metrics(predictions, [r["references"] for r in records])
    assert {k: round(figures[k], 4) for k in expected} == expected


def test_manifest_records_stages_units_and_finish(setup, tmp_path):
    recipe, data, *_ = setup
    manifest = Manifest(RunDir(tmp_path / "run"))
    manifest.open(recipe, data, None)
    assert manifest.timed("data", lambda x: x + 1, 1) == 2
    manifest.record_unit("kd", 1, {"state": "done", "error": None})
    assert not manifest.unit_done("kd", 1)  # no metrics.json yet
    manifest.finish(3.0)
    saved = manifest.run_dir.load_manifest()
    assert saved["finished"] and saved["stage_times"]["total"] == 3.0
    assert set(saved["stage_times"]) == {"data", "total"}
    assert saved["units"]["kd/seed-1"]["state"] == "done"
    assert saved["data_hashes"] == data.hashes
    summary = manifest.failure_summary(["kd/seed-1"], 2, None)
    assert summary.startswith("error: 1 of 2 units failed: kd/seed-1 (?)")


def test_the_manifest_names_the_commit_and_whether_the_package_was_edited():
    from dpkd_bench.manifest import git_commit

    commit = git_commit()
    assert commit is None or re.fullmatch(r"[0-9a-f]{40}(\+dirty)?", commit)
