"""Bad input: every kind exits with status 2 and exactly one ``error:`` line on stderr.

The line says what is wrong, why and how to fix it; no traceback. Most cases run the CLI
in-process (``dpkd_bench.cli.main``); two run it in a subprocess to show that nothing else
reaches the terminal. Data and model cases stop in the preflight or the data stage, before
anything trains.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from dpkd_bench.cli import main
from dpkd_bench.data.tokenizer import train_bpe_tokenizer
from dpkd_bench.models import build_model
from dpkd_bench.preflight import check_weights_format, tokenizer_difference
from dpkd_bench.recipe import ModelConfig

REPO = Path(__file__).resolve().parents[1]
TRAIN = [
    {"instruction": f"Name colour number {i}.", "input": "", "output": f"colour {i}"}
    for i in range(12)
]
EVAL = [{"prompt": f"What comes after {i}?", "output": str(i + 1)} for i in range(4)]


# ---- helpers ------------------------------------------------------------------------------
def error_line(capsys, *argv) -> str:
    """Run the CLI in-process; assert exit 2 and one ``error:`` line; return that line."""
    capsys.readouterr()  # drop what the test's own set-up printed
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def expect(capsys, argv, *fragments) -> None:
    line = error_line(capsys, *argv)
    for fragment in fragments:
        assert fragment in line, line


def write_jsonl(path: Path, records) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def write_recipe(tmp_path: Path, text: str, name: str = "r.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def tiny_recipe(tmp_path: Path, train_text: str | None = None, eval_records=EVAL, **data) -> Path:
    """A seconds-small recipe on local JSONL files (training raw.jsonl, eval valid.jsonl)."""
    train = tmp_path / "train" / "raw.jsonl"
    train.parent.mkdir(parents=True, exist_ok=True)
    train.write_text(
        train_text if train_text is not None else "".join(json.dumps(r) + "\n" for r in TRAIN)
    )
    write_jsonl(tmp_path / "evalset" / "valid.jsonl", eval_records)
    model = {"n_layer": 1, "n_embd": 16, "n_head": 2, "n_positions": 300}
    recipe = {
        "name": "tiny",
        "methods": ["sft"],
        "data": {
            "source": str(train),
            "dev_num": 2,
            "eval_sets": ["mine"],
            "eval_paths": {"mine": str(tmp_path / "evalset")},
            "max_prompt_len": 200,
            "max_length": 256,
            **data,
        },
        "tokenizer": {"vocab_size": 300},
        "teacher": {"model": model, "train": {"steps": 1, "batch_size": 2}},
        "student": {"model": model, "init_train": {"steps": 0}},
        "train": {"steps": 1, "batch_size": 2},
        "sampling": {"max_new_tokens": 4},
        "eval": {"decoding": "greedy", "gen_seeds": [1], "max_new_tokens": 4},
    }
    return write_recipe(tmp_path, yaml.safe_dump(recipe), "tiny.yaml")


def run_tiny(capsys, tmp_path: Path, recipe: Path, *extra) -> str:
    """``run`` the tiny recipe; it must stop before the run starts (no manifest written)."""
    line = error_line(capsys, "run", "--recipe", recipe, "--out", tmp_path / "out", *extra)
    assert not (tmp_path / "out" / "manifest.json").exists()
    return line


def save_tiny_model(path: Path, tokenizer, n_positions: int = 300, pickle: bool = False) -> Path:
    cfg = ModelConfig(n_layer=1, n_embd=16, n_head=2, n_positions=n_positions)
    model = build_model(cfg, tokenizer)
    if pickle:
        path.mkdir(parents=True, exist_ok=True)
        model.config.save_pretrained(path)
        torch.save(model.state_dict(), path / "pytorch_model.bin")
    else:
        model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


# ---- recipes ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text, fragments",
    [
        pytest.param(
            "name: x\ntrain: {steps: 3\nseeds: [1]\n",
            ["is not valid YAML at line", "fix the syntax"],
            id="malformed_yaml_with_line",
        ),
        pytest.param(
            "trian: {steps: 3}",
            ["unknown recipe key 'trian' (did you mean 'train'?)", "known keys here"],
            id="unknown_key_did_you_mean",
        ),
        pytest.param(
            "train: {steps: three}",
            ["recipe key 'train.steps' must be of type int"],
            id="wrong_type",
        ),
        pytest.param(
            "train: {lr: -1}",
            ["recipe key 'train.lr' must be > 0", "override it with train.lr=VALUE"],
            id="out_of_range",
        ),
        pytest.param(
            "greeting: !!python/object/apply:os.system ['echo unsafe']",
            ["is not valid YAML"],
            id="yaml_code_tag_refused_by_safe_load",
        ),
        pytest.param(
            "hello world", ["must be a YAML mapping", "is it a recipe?"], id="not_a_mapping"
        ),
        pytest.param(
            "methods: [sft, kd, rkl, tvd, dpkdd]",
            ["unknown method 'dpkdd' (did you mean 'dpkd'?)"],
            id="typo_in_fifth_method",
        ),
        pytest.param(
            "data: {eval_sets: [synthetic-id, dolyl]}",
            ["unknown eval set 'dolyl' (did you mean 'dolly'?)", "data.eval_paths.dolyl=PATH"],
            id="unknown_eval_set_did_you_mean",
        ),
        pytest.param(
            "data: {eval_sets: [synthetic-id], eval_paths: {dolly: /tmp}}",
            ["data.eval_paths.dolly is set but data.eval_sets does not list 'dolly'"],
            id="eval_path_for_unlisted_set",
        ),
        pytest.param(
            "data: {eval_sets: ['../x']}",
            ["eval set name '../x' cannot name a file or directory"],
            id="eval_set_name_traverses_paths",
        ),
        pytest.param(
            "data: {eval_sets: [mine], eval_paths: {'../mine': /tmp}}",
            ["eval set name '../mine' cannot name a file or directory"],
            id="eval_path_key_traverses_paths",
        ),
        pytest.param(
            "name: ../../evil", ["recipe name '../../evil' cannot name"], id="recipe_name_traverses"
        ),
        pytest.param(
            "data: {source: /no/such/dir/raw.jsonl}",
            ["data.source '/no/such/dir/raw.jsonl' does not exist"],
            id="missing_data_file",
        ),
        pytest.param(
            "base: synthetic-quick\ndata: {max_length: 400}",
            ["the teacher has 320 positions", "data.max_length=400"],
            id="max_length_beyond_positions",
        ),
        pytest.param(
            "base: synthetic-quick\neval: {max_new_tokens: 100}",
            ["data.max_prompt_len=256 + eval.max_new_tokens=100", "320 positions"],
            id="generation_beyond_positions",
        ),
    ],
)
def test_bad_recipe(capsys, tmp_path, text, fragments):
    expect(capsys, ["validate", write_recipe(tmp_path, text)], *fragments)


def test_validate_on_binary_file(capsys, tmp_path):
    path = tmp_path / "model.bin"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe\x00")
    expect(capsys, ["validate", path], "is not UTF-8 text, so it is not a recipe")


def test_validate_on_jsonl_file(capsys, tmp_path):
    path = write_jsonl(tmp_path / "data.jsonl", TRAIN[:2])
    expect(capsys, ["validate", path], "is not valid YAML at line 2")


def test_missing_recipe_file(capsys, tmp_path):
    expect(
        capsys,
        ["validate", tmp_path / "nope.yaml"],
        "is neither a file nor a built-in recipe",
        "built-ins: synthetic",
    )


# ---- command-line flags and overrides -----------------------------------------------------
@pytest.mark.parametrize(
    "argv, fragments",
    [
        pytest.param(["run", "--seeds", "1,x"], ["--seeds '1,x' is not"], id="seeds_not_integer"),
        pytest.param(["run", "--seeds", "1,2,1"], ["--seeds '1,2,1' repeats 1"], id="seeds_repeat"),
        pytest.param(["run", "--seeds", ","], ["--seeds is empty"], id="seeds_empty"),
        pytest.param(["run", "--seeds", "1,,2"], ["is not a comma-separated"], id="seeds_gap"),
        pytest.param(
            ["validate", "synthetic", "train.steps"],
            ["bad override 'train.steps': expected section.key=value"],
            id="override_without_equals",
        ),
        pytest.param(
            ["validate", "synthetic", "trian.steps=3"],
            ["unknown recipe key 'trian' (did you mean 'train'?)"],
            id="override_unknown_section",
        ),
        pytest.param(
            ["validate", "synthetic", "train.stepz=3"],
            ["unknown recipe key 'train.stepz' (did you mean 'train.steps'?)"],
            id="override_unknown_key",
        ),
        pytest.param(
            ["validate", "synthetic", "name.x=1"],
            ["'name' is a value, not a section"],
            id="override_into_a_value",
        ),
        pytest.param(
            ["validate", "synthetic", "train.st/eps=1"],
            ["key part 'st/eps' is not a name"],
            id="override_key_not_a_name",
        ),
        pytest.param(
            ["run", "--methods", "dpkd", "--sweep", "dpkd.beta"],
            ["bad --sweep 'dpkd.beta': expected method.key=v1,v2"],
            id="sweep_syntax",
        ),
        pytest.param(
            ["run", "--methods", "dpkd", "--sweep", "dpkd.beta=[0.1,0.2"],
            ["bad --sweep", "is not a number, word or YAML literal"],
            id="sweep_value_not_yaml",
        ),
        pytest.param(
            ["run", "--methods", "dpkd", "--sweep", "dpkdd.beta=0.1,0.2"],
            ["unknown method 'dpkdd' (did you mean 'dpkd'?)"],
            id="sweep_unknown_method",
        ),
        pytest.param(
            ["run", "--methods", "dpkd", "--sweep", "dpkd.betta=0.1,0.2"],
            ["unknown recipe key 'method_args.dpkd.betta' (did you mean 'method_args.dpkd.beta'"],
            id="sweep_unknown_key",
        ),
        pytest.param(
            ["run", "--methods", "sft,kd,rkl,tvd,dpkd_tokn"],
            ["unknown method 'dpkd_tokn' (did you mean 'dpkd_token'?)"],
            id="typo_in_fifth_method_flag",
        ),
        pytest.param(
            ["run", "--methods", "sft,../x"],
            ["method name '../x' cannot be used as a run directory name"],
            id="method_name_traverses_paths",
        ),
        pytest.param(
            ["run", "--methods", "skew_fkl[replay_ratio=../../x]"],
            ["cannot be used as a run directory name"],
            id="variant_name_traverses_paths",
        ),
        pytest.param(["frobnicate"], ["invalid choice: 'frobnicate'"], id="unknown_command"),
    ],
)
def test_bad_flags(capsys, tmp_path, monkeypatch, argv, fragments):
    monkeypatch.chdir(tmp_path)
    expect(capsys, argv, *fragments)


# ---- output and run directories -----------------------------------------------------------
def test_out_is_a_file(capsys, tmp_path):
    out = tmp_path / "file.txt"
    out.write_text("x")
    expect(capsys, ["run", "--recipe", "synthetic-quick", "--out", out], "is a file")


def test_out_under_a_file(capsys, tmp_path):
    (tmp_path / "file.txt").write_text("x")
    out = tmp_path / "file.txt" / "run"
    expect(capsys, ["run", "--recipe", "synthetic-quick", "--out", out], "cannot be created")


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_out_not_writable(capsys, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    expect(capsys, ["run", "--recipe", "synthetic-quick", "--out", locked / "run"], "not writable")


def test_out_not_empty_without_resume(capsys, tmp_path):
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "x").write_text("x")
    expect(capsys, ["run", "--recipe", "synthetic-quick", "--out", tmp_path / "old"], "--resume")


def test_report_on_a_directory_that_is_not_a_run(capsys, tmp_path):
    expect(capsys, ["report", tmp_path], "is not a dpkd-bench run directory (no manifest.json)")


def test_report_on_a_missing_directory(capsys, tmp_path):
    expect(capsys, ["report", tmp_path / "gone"], "does not exist")


def test_report_on_a_corrupt_manifest(capsys, tmp_path):
    (tmp_path / "manifest.json").write_text("{not json")
    expect(capsys, ["report", tmp_path], "manifest.json is not valid JSON (line 1")


# ---- data files ---------------------------------------------------------------------------
def test_malformed_jsonl_names_its_line(capsys, tmp_path):
    text = json.dumps(TRAIN[0]) + "\n\n" + '{"instruction": "x", "output": }\n'
    line = run_tiny(capsys, tmp_path, tiny_recipe(tmp_path, train_text=text))
    assert "raw.jsonl line 3 is not valid JSON" in line


def test_record_missing_fields_names_them_and_its_line(capsys, tmp_path):
    text = json.dumps(TRAIN[0]) + "\n" + json.dumps({"instruction": "Say hi.", "input": ""}) + "\n"
    line = run_tiny(capsys, tmp_path, tiny_recipe(tmp_path, train_text=text))
    assert "raw.jsonl line 2: record is missing 'output'" in line
    assert "instruction/input/output (MiniLLM)" in line


def test_record_with_wrong_typed_field(capsys, tmp_path):
    bad = {"instruction": "Count.", "input": "", "output": 3}
    text = "".join(json.dumps(r) + "\n" for r in [*TRAIN[:3], bad])
    line = run_tiny(capsys, tmp_path, tiny_recipe(tmp_path, train_text=text))
    assert "raw.jsonl line 4: field 'output' must be a string or a non-empty list" in line


def test_eval_record_with_wrong_typed_prompt(capsys, tmp_path):
    recipe = tiny_recipe(tmp_path, eval_records=[{"prompt": ["a"], "output": "b"}])
    line = run_tiny(capsys, tmp_path, recipe)
    assert "valid.jsonl line 1: field 'prompt' must be a string, got list" in line


def test_empty_dataset(capsys, tmp_path):
    line = run_tiny(capsys, tmp_path, tiny_recipe(tmp_path, train_text="\n\n"))
    assert "holds no records" in line


def test_dev_split_takes_every_record(capsys, tmp_path):
    line = run_tiny(capsys, tmp_path, tiny_recipe(tmp_path, dev_num=12))
    assert "has 12 records, not more than data.dev_num=12" in line


def test_data_directory_without_raw_jsonl(capsys, tmp_path):
    (tmp_path / "empty").mkdir()
    recipe = tiny_recipe(tmp_path, source=str(tmp_path / "empty"))
    assert "has no raw.jsonl" in run_tiny(capsys, tmp_path, recipe)


def test_eval_directory_without_valid_jsonl(capsys, tmp_path):
    (tmp_path / "empty").mkdir()
    recipe = tiny_recipe(tmp_path, eval_paths={"mine": str(tmp_path / "empty")})
    assert "has no valid.jsonl" in run_tiny(capsys, tmp_path, recipe)


def test_eval_set_empty_after_prompt_length_filter(capsys, tmp_path):
    long_prompt = " ".join(f"zq{i}x" for i in range(300))
    recipe = tiny_recipe(tmp_path, eval_records=[{"prompt": long_prompt, "output": "y"}])
    line = run_tiny(capsys, tmp_path, recipe)
    assert "eval set 'mine' is empty after dropping prompts over 200 tokens" in line
    assert "raise data.max_prompt_len" in line


def test_hub_dataset_not_cached_while_offline(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    recipe = tiny_recipe(tmp_path, eval_paths={"mine": "nobody-dpkd/not-cached-set"})
    line = run_tiny(capsys, tmp_path, recipe)
    assert "'nobody-dpkd/not-cached-set' is not in the local Hugging Face cache" in line
    assert "HF_HUB_OFFLINE=1 forbids downloading it" in line


# ---- models and tokenizers ----------------------------------------------------------------
def test_vocab_mismatch_between_teacher_and_student(capsys, tmp_path, tokenizer):
    other = train_bpe_tokenizer(["another corpus entirely, with other words"] * 4, 340)
    teacher = save_tiny_model(tmp_path / "teacher", tokenizer)
    student = save_tiny_model(tmp_path / "student", other)
    recipe = tiny_recipe(tmp_path)
    line = run_tiny(
        capsys,
        tmp_path,
        recipe,
        f"teacher.model.name_or_path={teacher}",
        f"student.model.name_or_path={student}",
    )
    assert (
        f"teacher vocabulary size {len(tokenizer)} != student vocabulary size {len(other)}" in line
    )


def test_tokenizers_of_one_size_but_different_tokens(tokenizer):
    words = [f"{a}{b}{c}" for a in "kqxz" for b in "aeiou" for c in "vwyj"]
    other = train_bpe_tokenizer([" ".join(words)] * 4, len(tokenizer))
    assert len(other) == len(tokenizer)
    assert "different tokens" in tokenizer_difference(tokenizer, other)
    assert tokenizer_difference(tokenizer, tokenizer) is None


def test_tokenizer_without_pad_or_eos(capsys, tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.WordLevel({"a": 0, "b": 1, "[UNK]": 2}, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=core).save_pretrained(tmp_path / "tok")
    recipe = tiny_recipe(tmp_path)
    line = run_tiny(capsys, tmp_path, recipe, f"tokenizer.name_or_path={tmp_path / 'tok'}")
    assert "has neither a pad nor an EOS token" in line


def test_max_length_beyond_pretrained_positions(capsys, tmp_path, tokenizer):
    teacher = save_tiny_model(tmp_path / "teacher", tokenizer, n_positions=64)
    line = run_tiny(
        capsys, tmp_path, tiny_recipe(tmp_path), f"teacher.model.name_or_path={teacher}"
    )
    assert "the teacher has 64 positions" in line and "data.max_length=256" in line


def test_pickle_checkpoint_refused(capsys, tmp_path, tokenizer):
    teacher = save_tiny_model(tmp_path / "teacher", tokenizer, pickle=True)
    line = run_tiny(
        capsys, tmp_path, tiny_recipe(tmp_path), f"teacher.model.name_or_path={teacher}"
    )
    assert "has only pickle weights (pytorch_model.bin)" in line
    assert "set teacher.model.allow_pickle: true" in line
    check_weights_format("teacher", ModelConfig(name_or_path=str(teacher), allow_pickle=True))


def test_pretrained_student_with_a_trained_tokenizer(capsys, tmp_path, tokenizer):
    student = save_tiny_model(tmp_path / "student", tokenizer)
    line = run_tiny(
        capsys, tmp_path, tiny_recipe(tmp_path), f"student.model.name_or_path={student}"
    )
    assert "set tokenizer.name_or_path to the student's tokenizer" in line


def test_hub_model_not_cached_while_offline(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    recipe = tiny_recipe(tmp_path)
    line = run_tiny(capsys, tmp_path, recipe, "teacher.model.name_or_path=nobody-dpkd/no-model")
    assert "'nobody-dpkd/no-model' is not in the local Hugging Face cache" in line
    assert "hf download nobody-dpkd/no-model" in line


# ---- through a real process: nothing but the one line -------------------------------------
@pytest.mark.parametrize(
    "argv, fragment",
    [
        pytest.param(["validate", "BAD"], "is not valid YAML at line 2", id="subprocess_yaml"),
        pytest.param(["run", "--seeds", "3,3"], "repeats 3", id="subprocess_seeds"),
    ],
)
def test_subprocess_prints_one_line_and_no_traceback(tmp_path, argv, fragment):
    bad = write_recipe(tmp_path, "name: x\n  methods: [sft]\n")
    argv = [str(bad) if a == "BAD" else a for a in argv]
    done = subprocess.run(
        [sys.executable, "-m", "dpkd_bench.cli", *argv],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0]
    assert "Traceback" not in done.stderr
