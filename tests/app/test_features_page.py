"""The Features page through AppTest: build an index from the page, open, search, try text."""
from __future__ import annotations


from sae_core.models.unembed import FOLDED
from sae_core.features.index import FeatureIndex
from sae_core.sae.io import load_sae, save_sae
from tests.helpers import app_test, features_page, page_errors, small_sweep

HOOK = "blocks.1.hook_resid_post"


def _html(at) -> str:
    return "\n".join(el.proto.body for el in at.get("html"))


def test_build_index_from_the_page_then_open_a_feature(workspace):
    small_sweep(workspace)
    at = features_page(app_test().run())
    assert any("no feature index yet" in i.value for i in at.info)
    # the picker names only the settings each architecture reads (issue #11: "topk, l=4.0, l2")
    labels = [o.split("  ", 1)[1] for o in at.selectbox(key="fb_sae").options]
    assert sorted(labels) == ["(batchtopk k=4, d_sae=64)", "(sampled k=4 l=1 l2 pool=top, d_sae=64)",
                              "(sampled k=4 l=4 l2 pool=top, d_sae=64)", "(topk k=4, d_sae=64)"]
    at.number_input(key="fb_tokens").set_value(3000)
    at.checkbox(key="fb_map").uncheck()
    at.button(key="fb_build").click().run(timeout=300)
    assert not at.exception and not page_errors(at), page_errors(at)
    [art] = workspace.list("feature_index")
    index = FeatureIndex.open(art.path)
    assert at.number_input(key="fb_feature").value == 0
    feature = int(index.column("count").argmax())
    at.number_input(key="fb_feature").set_value(feature).run()
    view = index.feature(feature)
    assert view.top
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["max activation"] == f"{view.max_act:.3g}"
    assert metrics["active tokens"] == f"{view.count:,}"
    assert all(e.tokens[e.peak] in _html(at) for e in view.top[:3])


def test_open_search_nearest_and_try_it(indexed, workspace):
    _, sae_art = indexed
    [art] = workspace.list("feature_index")
    index = FeatureIndex.open(art.path)
    at = features_page(app_test().run())
    assert not page_errors(at), page_errors(at)
    live = int(index.column("count").argmax())
    at.number_input(key="fb_feature").set_value(live).run()
    view = index.feature(live)
    assert any(h.value == f"Feature {live}" for h in at.subheader)
    assert f"{view.top[0].value:.3g}" in _html(at)
    assert f"Direct logit effects, W_dec · W_U: {FOLDED}" in [c.value for c in at.caption]
    # a nearest-feature button opens that feature
    j = view.nearest[0][0]
    at.button(key="fb_near0").click().run()
    assert at.number_input(key="fb_feature").value == j
    # search by a token the feature fires on
    word = view.top[0].tokens[view.top[0].peak]
    at.segmented_control(key="fb_mode").set_value("fires on token").run()
    at.text_input(key="fb_query").input(word).run()
    hits = index.search_fires_on(word, limit=24)
    assert live in [f for f, _ in hits]
    n = [f for f, _ in hits].index(live)
    at.button(key=f"fb_hit{n}").click().run()
    assert at.number_input(key="fb_feature").value == live
    # an unknown token is a clear error, not a crash
    at.text_input(key="fb_query").input("qqqq-nope").run()
    assert any("not a token" in e for e in page_errors(at))
    # try it: the same numbers as the library's probe
    at.text_area(key="fb_try").input(" ".join(view.top[0].tokens)).run()
    assert not at.exception
    assert "max here" in " ".join(c.value for c in at.caption)
    assert at.get("download_button")


def test_map_view_and_wrong_width_sae(indexed, workspace, tmp_path):
    at = features_page(app_test().run())
    at.segmented_control(key="fb_view").set_value("Map").run()
    assert any("without a feature map" in i.value for i in at.info)  # this index has no map
    # an SAE whose d_in does not match the hook: a clear error
    from sae_core.sae.config import SAEConfig
    from sae_core.sae.registry import create_sae

    save_sae(create_sae(SAEConfig(arch="topk", d_in=64, d_sae=32, k=4)), tmp_path / "narrow")
    at.text_input(key="fb_sae_dir").input(str(tmp_path / "narrow")).run()
    assert any("d_in=64" in e and "width 128" in e for e in page_errors(at)), page_errors(at)
    at.text_input(key="fb_sae_dir").input(str(tmp_path / "missing")).run()
    assert any("not a directory" in e for e in page_errors(at)), page_errors(at)


def test_changed_sae_is_offered_a_rebuild(indexed, workspace):
    _, sae_art = indexed
    sae = load_sae(sae_art.path)
    with __import__("torch").no_grad():
        sae.b_enc.add_(0.01)  # retrained, say: the weights differ from what the index describes
    save_sae(sae, sae_art.path)
    at = features_page(app_test().run())
    assert any("earlier version of this SAE" in w.value for w in at.warning)
    assert any("no feature index yet" in i.value for i in at.info)
