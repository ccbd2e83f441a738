"""Universality on the tiny hub layouts (issue #31): two models of one tokenizer from different
families (Llama, Gemma 2) are compared through the same job, and a model compared with itself
through one SAE matches every live feature to itself."""
from __future__ import annotations

import pytest

from sae_core.universality.analysis import AnalysisConfig
from sae_core.universality.job import Universality, UniversalityConfig, universality_to_workspace
from sae_core.workspace import Workspace

pytest.importorskip("transformer_lens")

HOOK = "blocks.0.hook_resid_post"
FAST = AnalysisConfig(runs=10, runs_small=10, bootstrap_runs=10)


def _config(a: str, b: str, **kw) -> UniversalityConfig:
    return UniversalityConfig(model_a=a, hook_a=HOOK, model_b=b, hook_b=HOOK, n_tokens=12000, d_sae=256, k=8,
                              train_tokens=4096 * 5, analysis=FAST, **kw)


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    return Workspace(tmp_path_factory.mktemp("uni_layouts") / "ws")


def test_a_llama_layout_against_a_gemma_layout(ws):
    art = universality_to_workspace(ws, _config("random:llama-3.2-1b-tiny", "random:gemma-2-2b-tiny"))
    res = Universality.open(art.path).results
    assert res["n_tokens"] >= 10000 and res["d_sae"] == {"a": 256, "b": 256}
    assert res["saes"]["a"].startswith("random:llama-3.2-1b-tiny__") and res["saes"]["b"].startswith("random:gemma-2-2b-tiny__")
    assert len(res["pairs"]) == art.meta["n_pairs"] > 0
    assert all(-1 <= p["corr"] <= 1 for p in res["pairs"])
    assert 0 <= res["scores"]["svcca"]["value"] <= 1


def test_a_layout_against_itself_through_one_sae_matches_every_feature_to_itself(ws):
    """The Llama layout's SAE from the comparison above on both sides: every live feature's best
    match is itself, at correlation 1 (no training here: the paired harvest and the matching)."""
    first = universality_to_workspace(ws, _config("random:llama-3.2-1b-tiny", "random:gemma-2-2b-tiny"))
    sae = Universality.open(first.path).results["saes"]["a"]
    same = universality_to_workspace(ws, _config("random:llama-3.2-1b-tiny", "random:llama-3.2-1b-tiny",
                                                 sae_a=sae, sae_b=sae))
    res = Universality.open(same.path).results
    assert res["pairs"] and all(p["a"] == p["b"] and p["corr"] == pytest.approx(1.0, abs=1e-5) for p in res["pairs"])
    assert res["scores"]["svcca"]["value"] == pytest.approx(1.0, abs=1e-4)
