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


def test_a_link_builds_a_quick_index_and_opens_its_feature(workspace):
    """Issue #28: a link into the browser (universality, sweep, circuits) for an SAE without an index
    builds a quick one on the spot and shows the feature asked for; the sidebar's way in offers it."""
    from sae_app.feature_panels import QUICK_TOKENS

    small_sweep(workspace)
    [l1] = [a for a in workspace.list("sae") if a.meta.get("l") == 1.0]
    at = features_page(app_test().run())  # arriving from the sidebar: a button, nothing built yet
    assert at.button(key="fb_quick").label == "Build a quick index (20,000 tokens)"
    assert any("no feature index yet" in i.value for i in at.info) and not workspace.list("feature_index")
    at.session_state["fb_open_sae"], at.session_state["fb_goto"] = l1.name, 7  # what open_later sets
    at.run(timeout=300)
    assert not at.exception and not page_errors(at), page_errors(at)
    [art] = workspace.list("feature_index")
    assert art.meta["sae"] == str(l1.path) and art.meta["n_tokens_requested"] == QUICK_TOKENS == 20_000
    assert at.selectbox(key="fb_sae").value == l1.name
    assert at.number_input(key="fb_feature").value == 7 and [h.value for h in at.subheader] == ["Feature 7"]
    index = FeatureIndex.open(art.path)
    assert f"over {index.info['n_tokens']:,} tokens" in at.caption[0].value
    assert at.caption[0].value.endswith("A quick index built on demand (20,000 tokens requested, no map): "
                                        "build a fuller one in the panel above.")
    assert {m.label: m.value for m in at.metric}["active tokens"] == f"{index.feature(7).count:,}"
    _out_of_range_dead_features_and_live_only(at, index)


def _out_of_range_dead_features_and_live_only(at, index):
    """The rest of issue #28 on the l=1 SAE (most of its features never fire), in the same session."""
    count = index.column("count")
    dead, live = (count == 0).nonzero().squeeze(1).tolist(), (count > 0).nonzero().squeeze(1).tolist()
    assert dead and live, "the l=1 SAE should have dead and live features"
    # out of range: an error naming the number and the range, and no other feature posing as it
    for view in ("Feature", "Map"):
        at.segmented_control(key="fb_view").set_value(view).run()
        at.number_input(key="fb_feature").set_value(64).run()
        assert page_errors(at) == ["feature 64 is out of range: this SAE has features 0..63; "
                                   "give a number from 0 to 63"]
        assert at.number_input(key="fb_feature").value == 64
        assert not at.subheader and not at.get("plotly_chart") and not at.info
    at.segmented_control(key="fb_view").set_value("Feature").run()
    # a dead feature says "never fired", never "-inf"
    at.number_input(key="fb_feature").set_value(dead[0]).run()
    assert not page_errors(at)
    assert {m.label: m.value for m in at.metric}["log10 density"] == "never fired"
    assert at.info[0].value.startswith(f"Feature {dead[0]} never fired on the index's {index.info['n_tokens']:,} tokens")
    assert "inf" not in " ".join(m.value for m in at.metric)
    # live features only: the count in the label, the open dead feature gives way to the next live one
    assert at.checkbox(key="fb_live").label == f"live features only ({len(live)} of 64 fired)"
    at.checkbox(key="fb_live").check().run()
    nxt = next((j for j in live if j > dead[0]), live[0])
    assert at.number_input(key="fb_feature").value == nxt and at.selectbox(key="fb_live_pick").value == nxt
    assert at.selectbox(key="fb_live_pick").options == [
        f"#{j} · {t}" if t else f"#{j}" for j, t in index.overview().loc[live, "top_tokens"].items()]
    at.selectbox(key="fb_live_pick").set_value(live[-1]).run()
    assert at.number_input(key="fb_feature").value == live[-1] and at.subheader[0].value == f"Feature {live[-1]}"
    near = [b.label for b in at.button if b.key and b.key.startswith("fb_near")]
    assert near == [f"#{j} · {c:.2f}" for j, c in index.feature(live[-1]).nearest if j in set(live)]
    assert (not near) == ("None of its nearest features ever fired." in [c.value for c in at.caption])
    # the sweep's link names the SAE but no feature: the first feature that fired opens, not a dead one
    at.session_state["fb_open_sae"] = at.selectbox(key="fb_sae").value
    at.run()
    assert at.number_input(key="fb_feature").value == live[0] != live[-1]
    assert at.subheader[0].value == f"Feature {live[0]}" and not page_errors(at)


def test_feature_map_says_never_fired_and_can_hide_dead_features():
    import pandas as pd

    from sae_app.feature_charts import feature_map

    overview = pd.DataFrame({"feature": [0, 1, 2], "x": [0.0, 1.0, 2.0], "y": [0.0, 1.0, 0.5],
                             "density": [0.0, 0.01, 0.1], "log10_density": [float("nan"), -2.0, -1.0],
                             "top_tokens": ["", "March", "1"]})
    fig = feature_map(overview, selected=0)
    live, dead, sel = fig.data
    assert list(live.customdata[:, 0]) == [1, 2] and list(live.marker.color) == [-2.0, -1.0]
    assert dead.name == "never fired" and list(dead.customdata[:, 0]) == [0]
    assert dead.hovertemplate == "feature %{customdata[0]}: never fired<extra></extra>"
    assert sel.name == "feature 0"
    fig = feature_map(overview, selected=0, live_only=True)  # the dead feature is gone, and not ringed
    assert [t.name for t in fig.data] == ["features"]
    assert [t.name for t in feature_map(overview, selected=2, live_only=True).data] == ["features", "feature 2"]


def test_the_page_opens_on_an_sae_with_an_index_before_a_newer_one_without(indexed, workspace):
    _, art = indexed
    with workspace.create("sae", "newer-without-index", model="zoo:tiny-a", hook=HOOK) as d:
        save_sae(load_sae(art.path), d)  # as the demo's universality SAE: newer, and not indexed
    assert workspace.list("sae")[0].name == "newer-without-index"
    at = features_page(app_test().run())
    assert not at.exception and not page_errors(at)
    assert at.selectbox(key="fb_sae").value == art.name
    assert not any("no feature index yet" in i.value for i in at.info)
