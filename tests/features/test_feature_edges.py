"""Feature index edges (issue #28): duplicate contexts shown once, dead features never "-inf",
a feature number out of range named with the valid range."""
import json
import math

import pytest
import torch

from sae_core.features.config import FeatureIndexError, IndexConfig
from sae_core.features.export import feature_json
from sae_core.features.job import build_feature_index
from sae_core.sae.config import SAEConfig
from sae_core.sae.registry import create_sae

HOOK = "blocks.1.hook_resid_post"
CFG = IndexConfig(n_tokens=200, batch_size=4, n_top=8, n_samples=4, before=3, after=2, hist_bins=8,
                  n_logits=3, logit_hist_bins=5, n_promoters=2, n_nearest=2, feature_map=False)
STORY = "There once lived a quiet sheep called Hugo . Hugo liked to explore in the town ."
PLANTED = [STORY, "63 , 64 , 65 , 66 , 67", STORY]  # the story twice: every context of it repeats
DEAD = 0  # b_enc far below zero: never fires


@pytest.fixture(scope="module")
def index(tiny_a, tmp_path_factory):
    torch.manual_seed(0)
    sae = create_sae(SAEConfig(arch="topk", d_in=128, d_sae=24, k=4))
    with torch.no_grad():
        sae.b_enc.copy_(torch.linspace(-1.0, 1.0, 24))
        sae.b_enc[DEAD] = -1e4
    return build_feature_index(tiny_a, sae.eval(), HOOK, PLANTED, tmp_path_factory.mktemp("edges"), CFG,
                               meta={"model_name": "zoo:tiny-a"})


def _stored_top(index, f: int) -> list[tuple[tuple[str, ...], int, int]]:
    """``(tokens, peak, sequence)`` of the top examples as stored (duplicates and all), read from
    the raw columns rather than through ``FeatureView``."""
    T = index.tokens_NT.shape[1]
    out = []
    for g in index.column("top.gidx")[f].tolist():
        if g < 0:
            continue
        seq, pos = divmod(g, T)
        lo = max(0, pos - CFG.before)
        ids = [t for t in index.tokens_NT[seq, lo:pos + CFG.after + 1].tolist() if t >= 0]
        out.append((tuple(index.token_str(t) for t in ids), pos - lo, seq))
    return out


def test_identical_contexts_are_shown_once(index):
    planted_seen = 0
    for f in range(index.n_features):
        stored = _stored_top(index, f)
        if any(seq == 2 for *_, seq in stored):  # a copy of the story made it into the stored top
            planted_seen += 1
        view = index.feature(f)
        shown = [(tuple(e.tokens), e.peak) for e in view.top]
        assert len(set(shown)) == len(shown), f"feature {f} shows a context twice"
        # each stored context once, in stored (best-first) order
        assert shown == list(dict.fromkeys((toks, peak) for toks, peak, _ in stored))
        assert 2 not in {e.sequence for e in view.top}  # every story context already came from sequence 0
    assert planted_seen >= 3  # the planted duplicate really was in the stored lists


def test_dead_feature_has_no_log10_density(index):
    view = index.feature(DEAD)
    assert view.count == 0 and view.density == 0.0 and view.top == []
    assert view.log10_density is None
    rec = json.loads(feature_json(view, index), parse_constant=lambda c: pytest.fail(f"{c} in the JSON"))
    assert rec["sae_studio"]["log10_density"] is None
    live = int(index.column("count").argmax())
    assert index.feature(live).log10_density == pytest.approx(math.log10(index.feature(live).density))
    overview = index.overview()
    assert math.isnan(overview.loc[DEAD, "log10_density"])
    assert overview.loc[live, "log10_density"] == pytest.approx(math.log10(overview.loc[live, "density"]))
    assert not (overview["log10_density"] == -math.inf).any()


@pytest.mark.parametrize("bad", [24, 600, -1])
def test_feature_out_of_range_names_it_and_the_range(index, bad):
    with pytest.raises(FeatureIndexError) as e:
        index.feature(bad)
    assert str(e.value) == (f"feature {bad} is out of range: this SAE has features 0..23; "
                            "give a number from 0 to 23")
