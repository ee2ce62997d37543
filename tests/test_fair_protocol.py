"""Per-method training settings, validation on the dev split, best-on-dev selection, tuning."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch
from accelerate import Accelerator

from dpkd_bench.cli import main
from dpkd_bench.data import synthetic
from dpkd_bench.dev import DevSet, DevTracker
from dpkd_bench.errors import RecipeError
from dpkd_bench.methods import expand_sweeps
from dpkd_bench.methods.sft import SFT
from dpkd_bench.recipe import Recipe, TrainConfig, load_recipe
from dpkd_bench.train import BatchStream, make_optimizer, train
from dpkd_bench.tune import TuneConfig, first_stage, lr_grid, second_stage
from dpkd_bench.variants import parse_variant

from .conftest import context, items
from .test_bad_input import expect, write_recipe

REPO = Path(__file__).resolve().parents[1]


# ---- per-method settings and their precedence ------------------------------------------------
def test_a_method_block_overrides_the_recipe_train_and_the_command_line_overrides_both(tmp_path):
    path = write_recipe(
        tmp_path,
        "base: synthetic-quick\nmethods: [sft, kd, minillm]\ntrain: {lr: 0.002, steps: 7}\n"
        "method_args:\n  minillm: {mix_alpha: 0.3, train: {lr: 5.0e-6, schedule: constant}}\n"
        "  kd: {train: {lr: 1.0e-4}}\n",
    )
    recipe = load_recipe(str(path), ["kd.train.lr=3e-4", "train.steps=9"])
    sft, kd, minillm = (recipe.unit_train(m) for m in recipe.methods)
    assert (sft.lr, sft.steps, sft.schedule) == (0.002, 9, "cosine")  # recipe train (CLI wins)
    assert (kd.lr, kd.steps) == (3e-4, 9)  # the CLI's kd.train.lr over the kd block
    assert (minillm.lr, minillm.schedule, minillm.steps) == (5e-6, "constant", 9)
    assert recipe.method_args["minillm"]["mix_alpha"] == 0.3  # the method's own key is untouched
    variant = recipe.unit_train("minillm[train.lr=1e-3]")  # a variant's value wins over all
    assert (variant.lr, variant.schedule) == (1e-3, "constant")
    defaults = load_recipe("synthetic-quick", ["methods=[sft]"]).unit_train("sft")
    assert defaults.warmup_ratio == TrainConfig().warmup_ratio  # untouched keys: the defaults


def test_a_command_line_train_key_shadowed_by_a_method_block_is_warned_about(tmp_path, capsys):
    path = write_recipe(
        tmp_path, "base: synthetic-quick\nmethods: [sft, kd]\nmethod_args: {kd: {train: {lr: 1}}}\n"
    )
    load_recipe(str(path), ["train.lr=0.5"])
    err = capsys.readouterr().err
    assert "train.lr=0.5 does not reach kd" in err and "kd.train.lr=" in err


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("kd.train.lrr=1", "unknown recipe key 'method_args.kd.train.lrr' (did you mean"),
        ("kd.train.schedule=step", "method_args.kd.train.schedule' must be one of constant"),
        ("kd.train.select=best_dev", "best_dev needs validation during training"),
    ],
)
def test_bad_method_training_settings_are_one_line_errors(capsys, override, fragment):
    expect(capsys, ["validate", "synthetic-quick", "methods=[kd]", override], fragment)


def test_sweeps_over_a_training_setting_give_one_variant_per_value_with_its_own_rate():
    names = expand_sweeps(["sft", "minillm"], ["minillm.train.lr=1e-5,1e-4"])
    assert names == ["sft", "minillm[train.lr=1e-5]", "minillm[train.lr=1e-4]"]
    recipe = load_recipe("synthetic-quick", ["methods=" + json.dumps(names)])
    assert [recipe.unit_train(n).lr for n in names] == [recipe.train.lr, 1e-5, 1e-4]


def test_dry_run_and_validate_print_each_methods_settings(capsys):
    argv = ["--recipe", "synthetic-quick", "--methods", "sft,kd", "kd.train.lr=3e-4"]
    assert main(["run", "--dry-run", *argv]) == 0
    out = capsys.readouterr().out
    assert "kd: lr 0.0003 cosine" in out and "sft: lr 0.001 cosine" in out
    assert main(["validate", "synthetic-quick", "methods=[kd]", "kd.train.schedule=linear"]) == 0
    assert "kd: lr 0.001 linear" in capsys.readouterr().out


@pytest.mark.parametrize("schedule", ["constant", "linear", "cosine"])
def test_schedules_warm_up_then_hold_or_decay(make_model, schedule):
    cfg = TrainConfig(steps=10, warmup_ratio=0.2, lr=1.0, schedule=schedule)
    optimizer, scheduler = make_optimizer(make_model(), cfg)
    rates = []
    for _ in range(10):
        rates.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    assert rates[0] == 0.0 and rates[1] == pytest.approx(0.5) and rates[2] == pytest.approx(1.0)
    end = scheduler.get_last_lr()[0]
    assert end == (pytest.approx(1.0) if schedule == "constant" else pytest.approx(0.0, abs=1e-9))
    if schedule == "linear":
        assert rates[6] == pytest.approx(0.5)
    if schedule == "cosine":
        assert rates[6] == pytest.approx(0.5)  # halfway through the decay: cos(pi/2)


def test_epochs_and_once_per_epoch_validation_resolve_from_the_data_size():
    cfg = TrainConfig(epochs=2.5, batch_size=4, grad_accum=2, eval_every=-1, select="best_dev")
    resolved = cfg.for_items(100)  # 13 steps per epoch (ceil 100 / 8)
    assert (resolved.steps, resolved.eval_every) == (32, 13)
    assert TrainConfig(steps=7).for_items(100).steps == 7


# ---- the dev split ----------------------------------------------------------------------------
def test_the_synthetic_dev_split_is_disjoint_from_training_and_every_eval_set():
    suite = synthetic.generate_suite(seed=0, n_train=600, n_eval=50)
    key = lambda r: (r["instruction"], r["input"])  # noqa: E731
    dev = {key(r) for r in suite[synthetic.DEV_SPLIT]}
    assert len(dev) == synthetic.N_DEV
    for split in ("train", *synthetic.EVAL_SETS):
        assert not dev & {key(r) for r in suite[split]}, split


def test_instruction_data_keeps_its_first_dev_num_records_for_validation(tmp_path):
    from dpkd_bench.data.loaders import load_instruction_data

    path = tmp_path / "raw.jsonl"
    records = [{"instruction": f"say {i}", "input": "", "output": f"{i}"} for i in range(12)]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    train_set, dev = load_instruction_data(str(path), dev_num=3)
    assert [e.response for e in dev] == ["0", "1", "2"]
    assert not {e.prompt for e in dev} & {e.prompt for e in train_set} and len(train_set) == 9


# ---- validation during training and best-on-dev selection ---------------------------------------
class ScriptedDev(DevSet):
    """A dev set whose scores follow a script; it remembers the weights it was shown."""

    def __init__(self, tokenizer, script):
        super().__init__([(1,)], [["x"]], tokenizer, 4)
        self.script, self.seen = list(script), []

    def scores(self, model, accelerator=None):
        self.seen.append({k: v.clone() for k, v in model.state_dict().items()})
        score = self.script.pop(0)
        return {"rougeL": score, "exact_match": score}


def train_with(tokenizer, make_model, cfg, dev=None, checkpoint_dir=None):
    student = make_model(seed=2)
    ctx = context(tokenizer, student)
    tracker = DevTracker(dev, cfg) if dev is not None else None
    stream = BatchStream(items(tokenizer, 10), cfg.batch_size, seed=3)
    result = train(
        SFT(), student, cfg, stream, ctx, Accelerator(cpu=True), None, "t", checkpoint_dir,
        None, tracker,
    )  # fmt: skip
    return student, result


def same_weights(a: dict, b: dict) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)


def test_best_dev_keeps_the_weights_of_the_best_point_and_never_the_untrained_start(
    tokenizer, make_model
):
    cfg = TrainConfig(steps=6, batch_size=4, lr=1e-2, eval_every=2, select="best_dev")
    dev = ScriptedDev(tokenizer, [99.0, 10.0, 30.0, 20.0])  # steps 0, 2, 4, 6
    student, result = train_with(tokenizer, make_model, cfg, dev)
    assert [p["step"] for p in result.dev["curve"]] == [0, 2, 4, 6]
    assert (result.dev["selected_step"], result.dev["selected_score"]) == (4, 30.0)
    assert result.dev["init_score"] == 99.0  # the start scores best, and is not selected
    assert same_weights(student.state_dict(), dev.seen[2])  # the weights seen at step 4
    assert not same_weights(student.state_dict(), dev.seen[3])


def test_validation_does_not_change_what_training_computes(tokenizer, make_model):
    plain, _ = train_with(tokenizer, make_model, TrainConfig(steps=4, batch_size=4, lr=1e-2))
    cfg = TrainConfig(steps=4, batch_size=4, lr=1e-2, eval_every=1)  # select: last
    dev = DevSet([(5, 6), (7,)], [["a"], ["b"]], tokenizer, 4)
    validated, result = train_with(tokenizer, make_model, cfg, dev)
    assert len(result.dev["curve"]) == 5 and result.dev["selected_step"] == 4
    assert same_weights(plain.state_dict(), validated.state_dict())


class Shares:
    """What an accelerator tells DevSet.scores: process ``index`` of two."""

    num_processes = 2

    def __init__(self, index: int):
        self.process_index = index


def test_processes_share_the_dev_decoding_and_score_each_answer_against_its_own_references(
    monkeypatch, tokenizer
):
    prompts = [(5,) * n for n in range(1, 8)]  # seven: shares of three and four
    references = [[str(n)] if n % 2 else ["other"] for n in range(1, 8)]
    answer = lambda model, tok, prompts, settings, **kw: [str(len(p)) for p in prompts]  # noqa: E731
    monkeypatch.setattr("dpkd_bench.dev.generate_texts", answer)
    dev = DevSet(prompts, references, tokenizer, 4)
    alone = dev.scores(None)
    assert alone["exact_match"] == pytest.approx(100 * 4 / 7)
    decoded = []
    monkeypatch.setattr("dpkd_bench.dev.gather_object", lambda texts: decoded.append(texts) or [])
    with pytest.raises(ValueError):  # each process decodes its own contiguous share only
        dev.scores(None, Shares(0))
    with pytest.raises(ValueError):
        dev.scores(None, Shares(1))
    assert decoded == [["1", "2", "3"], ["4", "5", "6", "7"]]
    everyone = decoded[0] + decoded[1]  # what the gather gives every process
    monkeypatch.setattr("dpkd_bench.dev.gather_object", lambda texts: list(everyone))
    assert dev.scores(None, Shares(0)) == dev.scores(None, Shares(1)) == alone


def test_a_resumed_unit_keeps_its_dev_curve_and_its_best_weights(tokenizer, make_model, tmp_path):
    cfg = TrainConfig(
        steps=6, batch_size=4, lr=1e-2, eval_every=2, select="best_dev", checkpoint_every=2
    )
    script = [5.0, 40.0, 10.0, 20.0]  # the best point (step 2) precedes the interruption
    whole, whole_result = train_with(tokenizer, make_model, cfg, ScriptedDev(tokenizer, script))
    first = ScriptedDev(tokenizer, script[:2])  # step 0 and 2 scored, then the unit "dies"
    with pytest.raises(IndexError):
        train_with(tokenizer, make_model, cfg, first, tmp_path / "ckpt")
    resumed_dev = ScriptedDev(tokenizer, script[2:])
    resumed, result = train_with(tokenizer, make_model, cfg, resumed_dev, tmp_path / "ckpt")
    assert [p["score"] for p in result.dev["curve"]] == script
    assert result.dev["selected_step"] == whole_result.dev["selected_step"] == 2
    assert same_weights(resumed.state_dict(), whole.state_dict())


# ---- tuning -------------------------------------------------------------------------------------
def test_every_method_gets_the_same_number_of_trials_at_the_same_rates():
    cfg = TuneConfig(trials=6, lr_points=4, lr_min=5e-6, lr_max=3e-3)
    grid = lr_grid(cfg)
    assert grid[0] == 5e-6 and grid[-1] == 3e-3 and len(grid) == 4
    assert all(
        b / a == pytest.approx(grid[1] / grid[0], rel=0.05)
        for a, b in zip(grid, grid[1:], strict=False)
    )
    scores = dict(zip(grid, [1.0, 5.0, 4.0, 2.0], strict=True))
    recipe = Recipe(tune=cfg)
    for method in ("sft", "kd", "minillm", "gkd", "dpkd", "skew_rkl"):
        first, second = first_stage(method, cfg), second_stage(method, recipe, scores)
        assert len(first) + len(second) == 6, method
        assert first == [f"{method}[train.lr={lr}]" for lr in grid]
        if method != "sft":  # a knob of its own, tried at the best grid rate
            assert second[0].startswith(f"{method}[train.lr={grid[1]},"), second
    # sft has no knob of its own: its second stage refines the rate towards the better neighbour
    assert second_stage("sft", recipe, scores) == [
        f"sft[train.lr={float(f'{grid[1] * (grid[2] / grid[1]) ** 0.5:.2g}')}]",
        f"sft[train.lr={float(f'{grid[1] * (grid[0] / grid[1]) ** 0.5:.2g}')}]",
    ]
    assert second_stage("minillm", recipe, scores) == [
        f"minillm[train.lr={grid[1]},mix_alpha=0.1]",
        f"minillm[train.lr={grid[1]},mix_alpha=0.4]",
    ]
    # the knob's value in the recipe is the default stage 1 trained with: stage 2 tries the other
    own = Recipe(tune=cfg, method_args={"kd": {"kd_ratio": 1.0}})
    assert second_stage("kd", own, scores)[0] == f"kd[train.lr={grid[1]},kd_ratio=0.5]"


def tune_argv(out: Path, *extra: str) -> list[str]:
    """``extra``: flags and overrides, before the recipe's own overrides."""
    return [
        "tune", "--recipe", "synthetic-quick", "--methods", "sft,kd", "--out", str(out),
        "--quiet", *extra, "tune.trials=2", "tune.lr_points=1", "train.eval_every=3",
        "train.select=best_dev", "train.dev_examples=40",
    ]  # fmt: skip


def test_tune_writes_a_tuned_recipe_that_runs_and_a_resumed_tuning_trains_only_the_rest(
    tmp_path, capsys
):
    out = tmp_path / "tune"
    assert main(tune_argv(out)) == 0
    plan = json.loads((out / "tuning.json").read_text())
    assert plan["planned"] and plan["wall_s"]["stage1"] > 0
    table = (out / "trials.csv").read_text().splitlines()
    assert len(table) == 1 + 2 * 2  # header, 2 trials per method
    tuned = load_recipe(str(out / "tuned.yaml"))
    assert tuned.tuned is not None and tuned.tuned.trials == 2 and not tuned.tuning_run
    grid = tuned.tuned.lr_grid  # one rate (the grid's middle), then a finer one or kd's knob
    sft = plan["methods"]["sft"]
    tried = {float(parse_variant(n)[1]["train.lr"]) for n in [*sft["stage1"], *sft["stage2"]]}
    assert len(tried) == 2 and tuned.unit_train("sft").lr in tried and grid[0] in tried
    assert {plan["methods"]["kd"]["stage2"][0]} == {f"kd[train.lr={grid[0]},kd_ratio=1.0]"}
    assert "tuned: 2 trials per method on the dev split" in (out / "tuning.md").read_text()
    # no eval set was decoded for a trial: selection saw the dev split only
    assert not list(out.glob("runs/*/seed-1/generations"))
    assert not (out / "runs" / "teacher").exists()

    # a tuning that stopped after stage 1: resuming trains stage 2 only
    manifest = json.loads((out / "manifest.json").read_text())
    plan = json.loads((out / "tuning.json").read_text())
    stage1 = [n for m in plan["methods"].values() for n in m["stage1"]]
    stage2 = [n for m in plan["methods"].values() for n in m["stage2"]]
    for name in stage2:
        (out / "runs" / name / "seed-1" / "metrics.json").unlink()
        manifest["units"][f"{name}/seed-1"]["state"] = "running"
    (out / "manifest.json").write_text(json.dumps(manifest))
    before = {n: (out / "runs" / n / "seed-1" / "metrics.json").stat().st_mtime_ns for n in stage1}
    (out / "tuned.yaml").unlink()
    assert main(tune_argv(out, "--resume")) == 0
    after = {n: (out / "runs" / n / "seed-1" / "metrics.json").stat().st_mtime_ns for n in stage1}
    assert before == after  # finished trials are not trained again
    assert all((out / "runs" / n / "seed-1" / "metrics.json").is_file() for n in stage2)
    assert (out / "tuned.yaml").is_file()
    capsys.readouterr()  # resuming with another recipe is refused, before anything trains
    expect(capsys, tune_argv(out, "--resume", "train.steps=3"), "cannot resume the tuning")


# ---- a student worse than its start ----------------------------------------------------------
def test_a_student_that_ends_below_its_start_on_dev_is_flagged(tmp_path):
    out = tmp_path / "run"
    argv = ["run", "--recipe", "synthetic-quick", "--methods", "sft,kd", "--out", str(out)]
    cheap = ["eval.fidelity=false", "eval.decoding=greedy", "data.max_eval_examples=8"]
    assert main([*argv, "--quiet", "train.eval_every=3", "train.dev_examples=40", *cheap]) == 0
    metrics_path = out / "runs" / "kd" / "seed-1" / "metrics.json"
    metrics = json.loads(metrics_path.read_text())
    dev = metrics["train"]["dev"]
    dev["init_score"], dev["selected_score"] = 50.0, 40.0
    metrics_path.write_text(json.dumps(metrics))
    assert main(["report", str(out)]) == 0
    board = (out / "leaderboard.md").read_text()
    assert "| kd ▽ |" in board and "below its own starting point" in board
    assert "kd (seed 1)" in board and "| sft |" in board
    import pandas as pd

    frame = pd.read_csv(out / "leaderboard.csv", keep_default_na=False)
    flags = dict(zip(frame["method"], frame["dev_below_start_seeds"].astype(str), strict=False))
    assert flags["kd"] == "1" and flags["sft"] == ""
    curves = pd.read_csv(out / "dev_curves.csv")
    assert set(curves["method"]) == {"sft", "kd"} and (curves["step"] == 0).any()
    assert not math.isnan(curves["student_flops"].iloc[-1])
    assert "Training settings" in board and "Dev score at matched budgets" in board
    assert (out / "plots" / "dev_curves.png").is_file()


def test_a_run_without_a_dev_split_refuses_validation(tmp_path):
    from .test_bad_input import tiny_recipe

    path = tiny_recipe(tmp_path)
    recipe = load_recipe(str(path), ["data.dev_num=0", "train.eval_every=2"])
    from dpkd_bench.processes import Processes, Training, fit

    job = Training(SFT(), torch.nn.Linear(1, 1), recipe.train, [], 1, desc="sft seed 1")
    with pytest.raises(RecipeError, match="has none; set data.dev_num > 0"):
        fit(Processes(), job, None, recipe.sampling)


# ---- paper recipes ----------------------------------------------------------------------------
# The official values (microsoft/LMOps at 4f2a9deb) the 120M recipe cites, per method:
# (lr, schedule, warm-up share, sequences per step, epochs or steps, start, weight decay).
OFFICIAL_GPT2_120M = {
    "sft": (5e-4, "cosine", 0.0, 32, ("epochs", 20), "gpt2", 0.01),  # sft_base.sh
    "kd": (5e-4, "cosine", 0.0, 32, ("epochs", 20), "gpt2", 0.01),  # kd_base.sh
    "seqkd": (5e-4, "cosine", 0.0, 32, ("epochs", 20), "gpt2", 0.01),  # seqkd_base.sh
    "minillm": (5e-6, "constant", 100 / 5000, 256, ("steps", 5000), None, 1e-6),  # train_base_xl
    "dpkd_token": (5e-4, "cosine", 0.0, 8, ("epochs", 30), "MiniLLM/SFT-gpt2-120M", 0.01),
    "dpkd": (5e-4, "cosine", 0.0, 8, ("epochs", 30), "MiniLLM/SFT-gpt2-120M", 0.01),
    # ghwang-s/abkd@df813185 distillation_llm/scripts/gpt2/ab/train_0.1B_1.5B.sh
    "abkd": (5e-4, "cosine", 0.0, 32, ("epochs", 20), None, 0.01),
}


def test_the_gpt2_120m_paper_recipe_trains_each_method_with_its_official_settings():
    recipe = load_recipe(str(REPO / "recipes" / "paper" / "gpt2-1.5b-to-120m-dolly.yaml"))
    for method, (
        lr,
        schedule,
        warmup,
        sequences,
        budget,
        start,
        decay,
    ) in OFFICIAL_GPT2_120M.items():
        cfg = recipe.unit_train(method)
        kind, value = budget
        assert (cfg.lr, cfg.schedule, cfg.warmup_ratio) == (lr, schedule, warmup), method
        assert cfg.batch_size * cfg.grad_accum == sequences, method
        assert getattr(cfg, kind) == value and (cfg.init_from, cfg.weight_decay) == (start, decay)
        assert cfg.select == "best_dev", method


@pytest.mark.parametrize("path", sorted((REPO / "recipes" / "paper").glob("*.yaml")))
def test_every_paper_recipe_gives_each_method_its_own_cited_settings(path):
    recipe = load_recipe(str(path))
    text = path.read_text()
    for method in recipe.methods:
        assert recipe.method_train_keys(method) >= {"lr", "schedule"}, method
    assert "Deviations that remain" in text and "4f2a9deb" in text


def test_the_protocol_line_names_the_methods_a_tuned_recipe_did_not_tune():
    from types import SimpleNamespace

    from dpkd_bench.recipe import load_recipe as load
    from dpkd_bench.report.protocol import protocol_line

    recipe = load("synthetic").to_dict()  # its tuned record covers the package's methods
    units = [
        ("teacher", 1),
        ("student_init", 1),
        ("kd", 1),
        ("my_plugin", 1),  # e.g. a plugin's method, which the recipe's tuning never saw
        ("my_plugin[temperature=0.7]", 1),
    ]
    view = SimpleNamespace(manifest={"recipe": recipe}, methods=[m for m, _ in units])
    line = protocol_line(view)
    assert line.startswith("Protocol: tuned: 6 trials per method")
    assert line.endswith(
        "gives them: my_plugin, my_plugin[temperature=0.7]. Evaluation: greedy decoding (one "
        "decode per prompt)."
    )
    view.methods = ["teacher", "kd", "dpkd[beta=0.05]"]
    assert "not in that tuning" not in protocol_line(view)


def test_a_later_tuning_of_the_same_protocol_joins_the_record_and_a_different_one_cannot():
    from types import SimpleNamespace

    from dpkd_bench.report.protocol import protocol_line
    from dpkd_bench.tune import TunedRecord

    protocol = dict(trials=6, lr_grid=[1e-4, 1e-3], metric="rougeL", select="best_dev")
    first = TunedRecord(
        **protocol, space={"sft": {}, "kd": {"kd_ratio": [0.5, 1.0]}}, run="t1", finished="day 1",
        chosen={"sft": {"train.lr": 1e-3}, "kd": {"train.lr": 1e-4}},
    )  # fmt: skip
    later = TunedRecord(
        **protocol, space={"kd": {"kd_ratio": [0.5, 1.0]}, "abkd": {"alpha": [0.2]}}, run="t2",
        finished="day 2", wall_s=12.0, chosen={"kd": {"train.lr": 1e-3}, "abkd": {"alpha": 0.2}},
    )  # fmt: skip
    joined = first.joined(later)
    assert joined.chosen == {
        "sft": {"train.lr": 1e-3},
        "kd": {"train.lr": 1e-3},
        "abkd": {"alpha": 0.2},
    }
    assert (joined.run, joined.finished) == ("t1", "day 1")  # the first tuning stays the record's
    assert joined.later == [
        dict(methods=["kd", "abkd"], run="t2", commit=None, finished="day 2", wall_s=12.0)
    ]
    view = SimpleNamespace(
        manifest={"recipe": Recipe(tuned=joined).to_dict()}, methods=["teacher", "sft", "abkd"]
    )
    line = protocol_line(view)
    assert "tuning finished day 1; abkd tuned the same way later (finished day 2)" in line
    assert "not in that tuning" not in line
    other = dataclasses.replace(later, lr_grid=[1e-5])
    assert not first.same_protocol(other)
    with pytest.raises(ValueError, match="protocols differ"):
        first.joined(other)


def test_a_budget_one_seed_cannot_reach_leaves_the_mean_undefined():
    """A mean over the seeds that reached a budget alone would compare other starting points:
    the cell is empty (NaN) unless every seed has a point within it."""
    from types import SimpleNamespace

    import pandas as pd

    from dpkd_bench.report.curves import CURVE_COLUMNS, budget_table

    def point(method, seed, step, score, wall):
        values = [method, seed, step, score, 0, step * 1e9, wall, "best_dev", "rougeL"]
        return dict(zip(CURVE_COLUMNS, values, strict=True))

    rows = [point("sft", s, k, 70 + k, 10.0 * k) for s in (1, 2) for k in (0, 1, 2)]
    # method m: seed 1's first point is cheap, seed 2's costs more than half of sft's run
    rows += [point("m", 1, 0, 90, 0.0), point("m", 1, 1, 95, 5.0), point("m", 1, 2, 96, 15.0)]
    rows += [point("m", 2, 0, 60, 0.0), point("m", 2, 1, 61, 15.0), point("m", 2, 2, 62, 20.0)]
    curves = pd.DataFrame(rows)
    view = SimpleNamespace(manifest={"recipe": {"train": {"select": "best_dev"}}, "units": {}})
    table = budget_table(view, curves).set_index("method")
    assert math.isnan(table.loc["m", "wall time half"])  # seed 2 has nothing within 10 s
    assert table.loc["m", "wall time full"] == pytest.approx((96 + 62) / 2)
