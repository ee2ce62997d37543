"""The vLLM evaluation backend (``eval.backend: vllm``), against a fake ``vllm`` module.

vLLM itself needs a CUDA machine; here a small stand-in module takes its place in
``sys.modules``. Its engine records what it is given and answers a fixed function of each
prompt and its sampling parameters, so the tests can check the settings mapping, input order,
EOS cutting, engine reuse and release, and that a run's metrics are the scores of those answers.
Without vllm, a recipe asking for it stops in the preflight (exit status 2, one ``error:`` line).
"""

from __future__ import annotations

import builtins
import json
import sys
import types
import weakref
from pathlib import Path

import pytest

from dpkd_bench.cli import main
from dpkd_bench.errors import UserError
from dpkd_bench.generate import DecodeSettings
from dpkd_bench.metrics import mean_over_generations, score_examples
from dpkd_bench.models import load_tokenizer
from dpkd_bench.preflight import check_eval_backend
from dpkd_bench.recipe import load_recipe
from dpkd_bench.vllm_backend import VllmDecoder, check_processes, import_vllm, request_seed
from tests.test_bad_input import error_line, tiny_recipe


# ---- a fake vllm -----------------------------------------------------------------------------
def fake_response(prompt: list[int], params) -> list[int]:
    """The fake engine's answer: two tokens of the prompt, EOS, then one more (cut away)."""
    pick = 0 if params.temperature == 0 else params.seed % len(prompt)
    return [prompt[-1], prompt[pick], params.stop_token_ids[0], prompt[0]]


def make_fake_vllm(check_dirs: bool = False) -> types.ModuleType:
    """A module with vLLM's ``LLM`` / ``SamplingParams`` surface; it answers with
    ``fake.respond`` and records its engines (``fake.engines``: constructor arguments, calls,
    engines alive when it was built)."""
    fake = types.ModuleType("vllm")
    fake.engines = []
    fake.respond = fake_response
    alive = []  # weak references to every engine built

    class SamplingParams:
        def __init__(self, **kwargs):
            self.__dict__.update(kwargs)

    class LLM:
        def __init__(self, model, **kwargs):
            if check_dirs:  # the evaluated model must be saved where the engine is pointed
                assert (Path(model) / "config.json").is_file(), model
            self.record = {
                "model": model,
                "kwargs": kwargs,
                "calls": [],
                "alive_before": sum(ref() is not None for ref in alive),
            }
            fake.engines.append(self.record)
            alive.append(weakref.ref(self))

        def generate(self, prompts, sampling_params=None, use_tqdm=True):
            assert len(prompts) == len(sampling_params)
            self.record["calls"].append((prompts, sampling_params))
            outputs = []
            for prompt, params in zip(prompts, sampling_params, strict=True):
                ids = fake.respond(prompt["prompt_token_ids"], params)
                completion = types.SimpleNamespace(token_ids=ids, text="")
                outputs.append(types.SimpleNamespace(outputs=[completion]))
            return outputs

    fake.LLM, fake.SamplingParams = LLM, SamplingParams
    return fake


@pytest.fixture
def fake_vllm(monkeypatch):
    fake = make_fake_vllm(check_dirs=True)
    monkeypatch.setitem(sys.modules, "vllm", fake)
    return fake


@pytest.fixture
def no_vllm(monkeypatch):
    """vllm not importable, whether or not it is installed."""
    monkeypatch.setitem(sys.modules, "vllm", None)


def expected_texts(tokenizer, prompts, params) -> list[str]:
    eos = tokenizer.eos_token_id
    texts = []
    for prompt, p in zip(prompts, params, strict=True):
        ids = fake_response(list(prompt), p)
        ids = ids[: ids.index(eos)]
        texts.append(tokenizer.decode(ids, skip_special_tokens=True).strip())
    return texts


# ---- the decoder ------------------------------------------------------------------------------
PROMPT_TEXTS = ["repeat the word red", "a much longer prompt about the green river", "moon"]


def encode(tokenizer, texts):
    return [tokenizer(t)["input_ids"] for t in texts]


def test_sampling_settings_map_to_vllm(tokenizer, monkeypatch, tmp_path):
    fake = make_fake_vllm()
    monkeypatch.setitem(sys.modules, "vllm", fake)
    prompts = encode(tokenizer, PROMPT_TEXTS)
    settings = DecodeSettings(greedy=False, temperature=0.7, top_k=0, top_p=0.9, max_new_tokens=5)
    with VllmDecoder(tmp_path, gpu_memory_utilization=0.3) as decoder:
        texts = decoder.generate_texts(tokenizer, prompts, settings, seed=7)
    (engine,) = fake.engines
    assert engine["model"] == str(tmp_path)
    assert engine["kwargs"] == {
        "trust_remote_code": False,
        "gpu_memory_utilization": 0.3,
        "skip_tokenizer_init": True,
    }
    ((requests, params),) = engine["calls"]
    assert requests == [{"prompt_token_ids": p} for p in prompts]  # token ids, input order
    for i, p in enumerate(params):
        assert (p.n, p.temperature, p.top_k, p.top_p, p.max_tokens) == (1, 0.7, -1, 0.9, 5)
        assert p.stop_token_ids == [tokenizer.eos_token_id]
        assert p.skip_special_tokens is True and p.detokenize is False
        assert p.seed == request_seed(7, i)
    assert len({p.seed for p in params}) == len(params)  # one stream per prompt
    assert texts == expected_texts(tokenizer, prompts, params)  # in order, cut at EOS
    assert all(texts) and texts[0] != texts[1]


def test_greedy_and_top_k(tokenizer, monkeypatch, tmp_path):
    fake = make_fake_vllm()
    monkeypatch.setitem(sys.modules, "vllm", fake)
    prompts = encode(tokenizer, PROMPT_TEXTS)
    with VllmDecoder(tmp_path, trust_remote_code=True) as decoder:
        greedy = decoder.generate_texts(tokenizer, prompts, DecodeSettings(greedy=True), seed=1)
        again = decoder.generate_texts(tokenizer, prompts, DecodeSettings(greedy=True), seed=2)
        decoder.generate_ids(prompts, DecodeSettings(top_k=5), eos_id=0, seed=1)
    (engine,) = fake.engines  # one engine for every call
    assert engine["kwargs"]["trust_remote_code"] is True
    (_, first), _, (_, top_k) = engine["calls"]
    assert {p.temperature for p in first} == {0.0}
    assert {p.top_k for p in top_k} == {5}
    assert greedy == again  # greedy answers do not depend on the seed


def test_response_cut_at_its_first_eos_or_kept_whole(tokenizer, monkeypatch, tmp_path):
    fake = make_fake_vllm()
    fake.respond = lambda prompt, params: [prompt[0]] * 3 if len(prompt) > 1 else [9, 9]
    monkeypatch.setitem(sys.modules, "vllm", fake)
    prompts = [[5, 6], [7]]
    with VllmDecoder(tmp_path) as decoder:
        ids = decoder.generate_ids(prompts, DecodeSettings(), eos_id=9, seed=0)
    assert ids == [[5, 5, 5], []]  # no EOS: all of it; EOS first: nothing


def test_closed_decoder_refuses_to_generate(tokenizer, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "vllm", make_fake_vllm())
    decoder = VllmDecoder(tmp_path)
    decoder.close()
    with pytest.raises(RuntimeError, match="closed"):
        decoder.generate_ids([[1, 2]], DecodeSettings(), eos_id=0, seed=0)


# ---- without vllm, and with several processes -------------------------------------------------
def test_missing_vllm_is_a_one_line_user_error(no_vllm):
    with pytest.raises(UserError) as err:
        import_vllm()
    message = str(err.value)
    assert "needs the vllm package" in message and "pip install vllm" in message
    assert "eval.backend=hf" in message and "\n" not in message


def test_broken_vllm_install_is_named(monkeypatch):
    real_import = builtins.__import__

    def failing_import(name, *args, **kwargs):
        if name == "vllm":
            raise ModuleNotFoundError("No module named 'xformers'", name="xformers")
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "vllm", raising=False)
    monkeypatch.setattr(builtins, "__import__", failing_import)
    with pytest.raises(UserError, match="installed but fails to import .*'xformers'"):
        import_vllm()


def test_several_processes_are_refused(fake_vllm):
    check_processes(1)
    with pytest.raises(UserError, match="this run has 2 processes.*eval.backend=hf"):
        check_processes(2)
    recipe = load_recipe("synthetic-quick", ["eval.backend=vllm"])
    with pytest.raises(UserError, match="2 processes"):
        check_eval_backend(recipe, processes=2)
    check_eval_backend(load_recipe("synthetic-quick"), processes=2)  # hf: any process count


def test_run_without_vllm_stops_before_training(capsys, tmp_path, no_vllm):
    out = tmp_path / "out"
    argv = ["run", "--recipe", "synthetic-quick", "--out", out, "eval.backend=vllm"]
    line = error_line(capsys, *argv)
    assert "eval.backend=vllm needs the vllm package" in line and "pip install vllm" in line
    assert not out.exists()


def test_validate_does_not_need_vllm(capsys, no_vllm):
    assert main(["validate", "synthetic-quick", "eval.backend=vllm"]) == 0


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("eval.backend=vlm", "recipe key 'eval.backend' must be one of hf, vllm (got 'vlm')"),
        ("eval.vllm_gpu_memory_utilization=1.5", "must be in (0, 1]"),
    ],
)
def test_bad_backend_settings(override, fragment):
    with pytest.raises(UserError) as err:
        load_recipe("synthetic-quick", [override])
    assert fragment in str(err.value)


def test_default_backend_is_the_built_in_decoder():
    recipe = load_recipe("synthetic")
    assert recipe.eval.backend == "hf" and recipe.eval.vllm_gpu_memory_utilization == 0.5


# ---- a whole run ------------------------------------------------------------------------------
def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture
def vllm_run(tmp_path, fake_vllm):
    """A tiny run (two eval sets, two generation seeds) evaluated by the fake engine."""
    eval_dir = str(tmp_path / "evalset")
    recipe = tiny_recipe(
        tmp_path, eval_sets=["mine", "also"], eval_paths={"mine": eval_dir, "also": eval_dir}
    )
    out = tmp_path / "out"
    argv = ["run", "--recipe", recipe, "--out", out]
    overrides = ["eval.backend=vllm", "eval.decoding=sample", "eval.gen_seeds=[3,4]"]
    assert main([str(a) for a in [*argv, *overrides]]) == 0
    return out, fake_vllm


def test_run_builds_one_engine_per_model_on_its_saved_directory(vllm_run):
    out, fake = vllm_run
    models = [Path(e["model"]) for e in fake.engines]
    assert [m.name for m in models[1:]] == ["student_init", "student"]
    assert models[0].name.startswith("teacher-")  # the cached teacher
    assert models[1] == out / "student_init"
    assert models[2] == out / "runs" / "sft" / "seed-1" / "student"
    for engine in fake.engines:
        assert len(engine["calls"]) == 4  # reused for 2 eval sets x 2 generation seeds
        assert engine["alive_before"] == 0  # the previous model's engine was released


def test_run_scores_are_those_of_the_engine_answers(vllm_run):
    out, fake = vllm_run
    tokenizer = load_tokenizer(out / "student_init")
    unit = out / "runs" / "sft" / "seed-1"
    metrics = json.loads((unit / "metrics.json").read_text(encoding="utf-8"))
    calls = fake.engines[2]["calls"]  # mine seed 3, mine seed 4, also seed 3, also seed 4
    for set_name, set_calls in (("mine", calls[:2]), ("also", calls[2:])):
        records = read_jsonl(unit / "generations" / f"{set_name}.jsonl")
        references = [r["references"] for r in records]
        predictions = [
            expected_texts(tokenizer, [r["prompt_token_ids"] for r in requests], params)
            for requests, params in set_calls
        ]
        assert [r["predictions"] for r in records] == [
            list(p) for p in zip(*predictions, strict=True)
        ]
        per_example = mean_over_generations([score_examples(p, references) for p in predictions])
        scores = metrics["eval"][set_name]
        assert scores["n"] == len(records)
        for key in ("exact_match", "rougeL"):
            assert scores[key] == pytest.approx(sum(e[key] for e in per_example) / len(records))
