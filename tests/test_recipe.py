"""Recipe strictness: unknown keys, wrong types, out-of-range values, overrides, built-ins."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from dpkd_bench.errors import RecipeError, UserError
from dpkd_bench.methods import METHODS
from dpkd_bench.recipe import BUILTIN_RECIPES, Recipe, apply_override, load_recipe
from tests.test_bad_input import expect, write_recipe

REPO = Path(__file__).resolve().parents[1]
PAPER_RECIPES = sorted(str(p) for p in (REPO / "recipes" / "paper").glob("*.yaml"))
DPKD_2024 = yaml.safe_load((REPO / "baselines" / "dpkd-2024.yaml").read_text(encoding="utf-8"))


def write(tmp_path, text: str) -> str:
    path = tmp_path / "r.yaml"
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("name", BUILTIN_RECIPES)
def test_builtin_recipes_load(name):
    recipe = load_recipe(name)
    assert isinstance(recipe, Recipe)
    assert recipe.name == name


@pytest.mark.parametrize("path", sorted(str(p) for p in (REPO / "recipes").rglob("*.yaml")))
def test_every_repo_recipe_validates(path):
    recipe = load_recipe(path)
    first = Path(path).read_text().splitlines()[0]
    assert first.startswith("# dpkd-bench run"), "a recipe is headed by the command that runs it"
    assert recipe.methods


def test_default_is_synthetic():
    assert load_recipe(None).name == "synthetic"


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("trian: {steps: 3}", "unknown recipe key 'trian' (did you mean 'train'?)"),
        ("train: {stepz: 3}", "unknown recipe key 'train.stepz' (did you mean 'train.steps'"),
        ("train: {steps: three}", "recipe key 'train.steps' must be of type int"),
        ("train: {steps: -1}", "recipe key 'train.steps' must be >= 0"),
        ("train: {lr: 0}", "recipe key 'train.lr' must be > 0"),
        ("eval: {decoding: beam}", "recipe key 'eval.decoding' must be 'sample' or 'greedy'"),
        ("seeds: 3", "recipe key 'seeds' must be a list"),
        ("teacher: {model: {trust_remote_code: yes please}}", "must be true or false"),
        ("method_args: {dpkd: {beta: -1}}", "method_args.dpkd.beta"),
        ("method_args: {dpkd: {betta: 1}}", "did you mean 'method_args.dpkd.beta'"),
        ("method_args: {dpkdd: {beta: 1}}", "unknown method 'dpkdd' (did you mean 'dpkd'?)"),
        ("train: [1, 2]", "must be a mapping"),
        ("train: {steps: 3", "is not valid YAML"),
    ],
)
def test_strictness(tmp_path, text, fragment):
    with pytest.raises(UserError) as err:
        load_recipe(write(tmp_path, text))
    assert fragment in str(err.value)
    assert "\n" not in str(err.value)


def test_int_accepted_for_float_and_bool_rejected_for_int(tmp_path):
    assert load_recipe(write(tmp_path, "train: {lr: 1}")).train.lr == 1.0
    with pytest.raises(RecipeError):
        load_recipe(write(tmp_path, "train: {steps: true}"))


def test_exponent_floats_without_a_dot_are_floats():
    recipe = load_recipe("synthetic", ["train.lr=3e-3", "dpkd.beta=1e-2"])
    assert recipe.train.lr == 0.003
    from dpkd_bench.methods import get_method

    assert get_method("dpkd", **recipe.method_args["dpkd"]).config.beta == 0.01
    with pytest.raises(RecipeError, match="train.lr"):
        load_recipe("synthetic", ["train.lr=fast"])


def test_overrides_win_and_route_method_args():
    recipe = load_recipe("synthetic", ["train.steps=7", "dpkd.beta=0.5", "eval.gen_seeds=[1,2]"])
    assert recipe.train.steps == 7
    assert recipe.method_args["dpkd"]["beta"] == 0.5
    assert (
        recipe.method_args["dpkd"]["train"] == load_recipe("synthetic").method_args["dpkd"]["train"]
    )
    assert recipe.eval.gen_seeds == [1, 2]


@pytest.mark.parametrize("bad", ["train.steps", "=3", "train..steps=3", "name.x=1"])
def test_bad_override_syntax(bad):
    with pytest.raises(RecipeError):
        load_recipe("synthetic", [bad])


def test_missing_recipe_file_suggests_builtin():
    with pytest.raises(RecipeError, match="did you mean 'synthetic'"):
        load_recipe("synthetik")


def test_apply_override_creates_sections():
    data: dict = {}
    apply_override(data, "teacher.model.n_layer=3")
    assert data == {"teacher": {"model": {"n_layer": 3}}}


def test_yaml_aliases_are_copies_so_an_override_changes_one_section(tmp_path):
    text = "teacher: {model: &m {n_layer: 2}}\nstudent: {model: *m}\n"
    recipe = load_recipe(write(tmp_path, text), ["student.model.n_layer=1"])
    assert (recipe.teacher.model.n_layer, recipe.student.model.n_layer) == (2, 1)


def test_eval_paths_name_a_local_copy_or_a_set_of_ones_own(tmp_path):
    (tmp_path / "mine").mkdir()
    overrides = ["data.eval_sets=[dolly,mine]", f"data.eval_paths.mine={tmp_path / 'mine'}"]
    recipe = load_recipe("synthetic-quick", overrides)
    assert recipe.data.eval_paths == {"mine": str(tmp_path / "mine")}


def test_recipes_load_with_safe_yaml_only():
    source = (REPO / "dpkd_bench" / "recipe.py").read_text()
    assert "yaml.load(" not in source and "yaml.safe_load(" in source


@pytest.mark.parametrize("path", PAPER_RECIPES)
def test_paper_recipes_replicate_a_published_setting(path):
    recipe = load_recipe(path)
    stem, _, setting = (recipe.replicates or "").partition("/")
    assert stem == "dpkd-2024", f"{path}: replicates must be dpkd-2024/<setting>"
    assert setting in DPKD_2024["settings"], f"{path}: unknown setting {setting!r}"
    # the report can put a measured number beside every published column and method
    assert set(DPKD_2024["columns"].values()) <= set(recipe.data.eval_sets)
    published = set(DPKD_2024["settings"][setting]["scores"]) & set(METHODS)
    assert published <= set(recipe.methods), sorted(published - set(recipe.methods))


def test_every_table_1_setting_has_a_paper_recipe():
    replicated = {load_recipe(path).replicates for path in PAPER_RECIPES}
    assert {f"dpkd-2024/{s}" for s in DPKD_2024["settings"]} <= replicated
    assert {"gpt2-1.5b-to-120m", "gpt2-1.5b-to-340m", "opt-13b-to-1.3b"} <= set(
        DPKD_2024["settings"]
    )


@pytest.mark.parametrize(
    "text", ["", "\n  \n", "# a recipe still to write\n# methods: [sft]\n"], ids=repr
)
def test_an_empty_recipe_is_an_error_not_an_all_defaults_run(capsys, tmp_path, text):
    path = write_recipe(tmp_path, text)
    expect(capsys, ["validate", path], "is empty", "base: synthetic")
    out = tmp_path / "out"
    expect(capsys, ["run", "--recipe", path, "--out", out], "is empty")
    assert not out.exists()


def test_a_recipe_of_only_a_base_still_loads(tmp_path):
    write_recipe(tmp_path, "name: mine\nbase: synthetic-quick\n", "base.yaml")
    recipe = load_recipe(str(write_recipe(tmp_path, "base: base.yaml\n", "child.yaml")))
    assert recipe.name == "mine"
    assert recipe.train == load_recipe("synthetic-quick").train
