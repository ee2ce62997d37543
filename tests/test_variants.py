"""Sweeps expand into named variants that resolve like methods; recipes may extend a base."""

from __future__ import annotations

import pandas as pd
import pytest

from dpkd_bench.cli import _method_list
from dpkd_bench.errors import UserError
from dpkd_bench.methods import expand_sweeps, get_method
from dpkd_bench.recipe import load_recipe
from dpkd_bench.report import ablation_tables
from dpkd_bench.variants import parse_variant, variant_name


def test_sweep_grid_and_names():
    out = expand_sweeps(["sft", "dpkd"], ["dpkd.beta=0.05,0.1,0.5", "dpkd.rkl_weight=0,1"])
    assert out[0] == "sft"
    assert out[1:] == [
        f"dpkd[beta={b},rkl_weight={r}]" for b in ("0.05", "0.1", "0.5") for r in ("0", "1")
    ]
    config = get_method("dpkd[beta=0.05,rkl_weight=0]").config
    assert (config.beta, config.rkl_weight) == (0.05, 0)


def test_variant_round_trip_and_errors():
    name = variant_name("dpkd", {"length_normalize": False, "beta": 0.5})
    assert name == "dpkd[length_normalize=false,beta=0.5]"
    assert parse_variant(name) == ("dpkd", {"length_normalize": False, "beta": 0.5})
    with pytest.raises(UserError):
        parse_variant("dpkd[beta]")
    with pytest.raises(UserError, match="method_args.dpkd.beta"):
        get_method("dpkd[beta=-1]")
    with pytest.raises(UserError, match="bad --sweep"):
        expand_sweeps(["dpkd"], ["dpkd=1,2"])
    with pytest.raises(UserError, match="does not include"):
        expand_sweeps(["sft"], ["dpkd.beta=1,2"])


def test_method_list_splits_outside_brackets():
    assert _method_list("sft,dpkd[beta=1,rkl_weight=0],kd") == [
        "sft",
        "dpkd[beta=1,rkl_weight=0]",
        "kd",
    ]


def test_recipe_base_and_base_override():
    full = load_recipe("recipes/ablations/dpkd-reward-vs-kl.yaml")
    quick = load_recipe("recipes/ablations/dpkd-reward-vs-kl.yaml", ["base=synthetic-quick"])
    assert full.data.n_train == load_recipe("synthetic").data.n_train
    assert quick.data.n_train == load_recipe("synthetic-quick").data.n_train
    assert quick.methods == full.methods and len(full.methods) == 5


def test_ablation_table_rows_are_variants():
    board = pd.DataFrame(
        [
            {
                "method": m,
                "eval_set": "e",
                "n_seeds": 1,
                "rougeL_mean": r,
                "rougeL_std": float("nan"),
                "exact_match_mean": r / 2,
                "exact_match_std": float("nan"),
            }
            for m, r in [
                ("teacher", 90.0),
                ("dpkd[beta=0.1]", 40.0),
                ("dpkd[beta=0.5]", 50.0),
                ("sft", 1.0),
            ]
        ]
    )
    tables = ablation_tables(board)
    assert list(tables) == ["dpkd"]
    table = tables["dpkd"]
    assert list(table["variant"]) == ["dpkd[beta=0.1]", "dpkd[beta=0.5]"]
    assert list(table["beta"]) == [0.1, 0.5]
    assert list(table["e ROUGE-L"]) == [40.0, 50.0]
