"""Dry-run planner: sizes from configs only, per-method workloads, no data or weights loaded."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from dpkd_bench import planner
from dpkd_bench.cli import main
from dpkd_bench.recipe import ModelConfig, load_recipe

PAPER = Path(__file__).parent.parent / "recipes" / "paper" / "gpt2-1.5b-to-120m-dolly.yaml"
PAPER_RECIPES = sorted(PAPER.parent.glob("*.yaml"))
# (teacher, student) parameters of each Table 1 setting, from the public architectures
PAPER_SIZES = {
    "dpkd-2024/gpt2-1.5b-to-120m": (1.56e9, 124e6),
    "dpkd-2024/gpt2-1.5b-to-340m": (1.56e9, 355e6),
    "dpkd-2024/opt-13b-to-1.3b": (12.9e9, 1.32e9),
}
ALL = "methods=[sft,kd,seqkd,rkl,minillm,skew_fkl,skew_rkl,gkd,tvd,dpkd,dpkd_token]"


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # sizes must come from configs or the table


@pytest.fixture(scope="module")
def paper():
    return planner.plan(load_recipe(str(PAPER), [ALL]))


def test_gpt2_xl_from_the_table_is_1_56_billion(paper):
    teacher = paper.sizes["teacher"]
    assert abs(teacher.params - 1.56e9) / 1.56e9 < 0.02
    assert "table" in teacher.source and "MiniLLM/teacher-gpt2-1.5B" in teacher.source
    assert abs(paper.sizes["student"].params - 124_439_808) < 1e3


def test_known_architectures_match_hub_names():
    assert planner.known_architecture("MiniLLM/init-gpt2-120M") == "gpt2"
    assert planner.known_architecture("MiniLLM/init-gpt2-340M") == "gpt2-medium"
    assert planner.known_architecture("MiniLLM/teacher-OPT-13B") == "facebook/opt-13b"
    assert planner.known_architecture("MiniLLM/init-OPT-1.3B") == "facebook/opt-1.3b"
    assert planner.known_architecture("gpt2-medium") == "gpt2-medium"
    assert planner.known_architecture("facebook/opt-13b") == "facebook/opt-13b"
    assert planner.known_architecture("facebook/opt-1.3b") == "facebook/opt-1.3b"
    assert planner.known_architecture("some/llama") is None


def test_opt_sizes_from_the_table():
    assert (
        abs(planner.size_of(planner.table_config("facebook/opt-1.3b"), "t").params - 1.3e9) < 0.05e9
    )
    assert (
        abs(planner.size_of(planner.table_config("facebook/opt-13b"), "t").params - 12.9e9) < 0.2e9
    )


def test_workloads(paper):
    """What each method does per sequence, all methods at the same training settings."""
    recipe = load_recipe(str(PAPER), [ALL])
    same = {m: {k: v for k, v in a.items() if k != "train"} for m, a in recipe.method_args.items()}
    paper = planner.plan(dataclasses.replace(recipe, method_args=same))
    assert paper.row("sft").teacher_forwards == 0
    assert paper.row("kd").teacher_forwards > 0
    for name in ("dpkd", "gkd", "minillm"):
        assert paper.row(name).generated_tokens > 0, name
    assert paper.row("kd").generated_tokens == 0
    assert paper.row("dpkd").flops > paper.row("kd").flops > paper.row("sft").flops
    assert paper.row("teacher").optimizer_steps == 0  # pretrained: not trained here
    assert all(r.peak_memory_bytes > 0 for r in paper.rows)


def test_synthetic_quick_counts_everything():
    recipe = load_recipe("synthetic-quick", [ALL])
    result = planner.plan(recipe)
    kd = result.row("kd")
    cfg = recipe.train
    assert kd.optimizer_steps == cfg.steps * len(recipe.seeds)
    assert kd.teacher_forwards == cfg.steps * cfg.batch_size * cfg.grad_accum
    assert kd.train_tokens == kd.teacher_forwards * recipe.data.max_length
    assert kd.eval_generated_tokens is not None and kd.eval_generated_tokens > 0
    teacher = result.row("teacher")
    assert teacher.optimizer_steps == recipe.teacher.train.steps
    assert teacher.generated_tokens > 0  # dpkd and seqkd need teacher samples
    text = planner.format_plan(result)
    assert "dpkd_token" in text and "FLOPs" in text
    assert len(result.to_frame()) == len(recipe.methods) + 2


def test_the_teacher_cache_moves_teacher_forwards_to_one_pass():
    exact = planner.plan(load_recipe("synthetic-quick", ["methods=[kd]"]))
    cached = planner.plan(load_recipe("synthetic-quick", ["methods=[kd]", "kd.teacher_cache_k=8"]))
    assert cached.row("kd").teacher_forwards == 0 < exact.row("kd").teacher_forwards
    assert cached.row("teacher").teacher_forwards == load_recipe("synthetic-quick").data.n_train


def test_plan_loads_no_data_and_no_weights(monkeypatch):
    import transformers

    def refuse(*args, **kwargs):
        raise AssertionError("the planner must not load data or weights")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", refuse)
    monkeypatch.setattr("dpkd_bench.data.prepare.prepare_data", refuse)
    monkeypatch.setattr("dpkd_bench.data.synthetic.generate_suite", refuse)
    monkeypatch.setattr(planner, "recipe_vocab", lambda recipe: 1024)
    result = planner.plan(load_recipe("synthetic"))
    assert result.sizes["student"].params == planner.model_size(ModelConfig(), 1024).params


def test_the_output_projection_counts_only_on_positions_with_logits():
    size = planner.ModelSize(params=1000, n_layer=1, d_model=4, n_head=1, vocab=50, source="test")
    assert planner.forward_flops(size, 10, 10) == 2 * 1000 * 10  # every position projected: 2 N
    assert planner.forward_flops(size, 10, 2) == 2 * (
        800 * 10 + 200 * 2
    )  # body everywhere, head on 2


@pytest.mark.parametrize("path", PAPER_RECIPES, ids=lambda p: p.stem)
def test_every_paper_recipe_plans_offline(capsys, path):
    recipe = load_recipe(str(path))
    result = planner.plan(recipe)
    teacher, student = PAPER_SIZES[recipe.replicates]
    assert abs(result.sizes["teacher"].params - teacher) / teacher < 0.02
    assert abs(result.sizes["student"].params - student) / student < 0.02
    assert [r.name for r in result.rows] == ["teacher", "student_init", *recipe.methods]
    assert all(r.peak_memory_bytes > 0 and r.flops >= 0 for r in result.rows)
    capsys.readouterr()
    assert main(["run", "--dry-run", "--recipe", str(path)]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in recipe.methods) and "peak mem" in out
