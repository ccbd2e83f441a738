"""The panels of the Features page: choosing the SAE and its index, search, one feature, the map.

Each function draws one panel from data the library already computed (``FeatureIndex``); the
current feature lives in ``st.session_state["fb_feature"]`` and every "open feature j" control
goes through ``open_feature`` (a widget callback, so it may set the number input's state).
"""
from __future__ import annotations

import streamlit as st

from sae_app import contexts, feature_cache, feature_charts as charts, jobs, session, text_input
from sae_core.errors import SAECoreError
from sae_core.models.loading import unknown_words

FEATURE_KEY = "fb_feature"


def open_feature(j: int) -> None:
    st.session_state[FEATURE_KEY] = int(j)


def open_later(model_name: str, hook: str, sae_name: str, feature: int) -> None:
    """From another page's widget callback: the feature browser opens on this SAE's feature (the
    caller then switches to ``views/features.py``)."""
    from sae_app import sidebar

    sidebar.request(model_name, hook)
    st.session_state["fb_open_sae"], st.session_state["fb_goto"] = sae_name, int(feature)


def apply_pending_jump() -> None:
    """A jump requested after the number input was drawn (map clicks) takes effect on this run."""
    if (j := st.session_state.pop("fb_goto", None)) is not None:
        open_feature(j)


def build_panel(sel, sae_path: str, expanded: bool) -> None:
    with st.expander("Build a feature index for this SAE", expanded=expanded):
        c1, c2 = st.columns(2)
        n_tokens = c1.number_input("corpus tokens", 2_000, 50_000_000, 50_000, step=10_000, key="fb_tokens")
        fmap = c2.checkbox("feature map (UMAP; about a minute for 16k features)", True, key="fb_map")
        text = text_input.text_source_input("fb")
        if st.button("Build index", type="primary", key="fb_build", disabled=text is None):
            def job(bar):
                stage = {"name": "starting", "frac": 0.0}  # the streaming pass reports progress

                def on_stage(name):
                    stage["name"] = name
                    bar.progress(stage["frac"], text=name)

                def on_progress(done, total):
                    stage["frac"] = done / total
                    bar.progress(stage["frac"], text=f"{stage['name']}: {done:,}/{total:,} sequences")
                return feature_cache.build_index(sel.workspace_root, sae_path, sel.model_name, sel.hook,
                                         n_tokens=int(n_tokens), feature_map=fmap, text=text,
                                         on_stage=on_stage, on_progress=on_progress)
            if jobs.run_job("Building the feature index…", job, select_key="fb_index_built"):
                st.rerun()


def search_panel(index) -> None:
    mode = st.segmented_control("Find features", ["fires on token", "promotes token"], key="fb_mode")
    if not mode:
        return
    query = st.text_input(f"Token the feature {mode.split()[0]} (one word or symbol)", key="fb_query")
    if not query:
        return
    try:
        hits = (index.search_fires_on if mode == "fires on token" else index.search_promotes)(query, limit=24)
    except SAECoreError as e:
        st.error(str(e))
        return
    if not hits:
        st.info(f"No feature has a top example on {query!r} in this index.")
    cols = st.columns(6)
    for n, (j, v) in enumerate(hits):
        cols[n % 6].button(f"#{j} · {v:.3g}", key=f"fb_hit{n}", on_click=open_feature, args=(j,),
                           help=f"open feature {j}", width="stretch")


def feature_panel(index, view, sae_path: str, sel) -> None:
    m = st.columns(4)
    m[0].metric("density", f"{view.density:.4%}", help="share of the index's tokens where it is > 0")
    m[1].metric("log10 density", f"{view.log10_density:.2f}")
    m[2].metric("max activation", f"{view.max_act:.3g}")
    m[3].metric("active tokens", f"{view.count:,}")
    left, right = st.columns([3, 2])
    with left:
        st.markdown("**Top activations**")
        st.html(contexts.examples_html(view.top, view.max_act))
        for label, group in view.quantiles:
            with st.expander(f"Random examples, {label}"):
                st.html(contexts.examples_html(group, view.max_act))
    with right:
        if view.hist_counts:
            st.plotly_chart(charts.activation_histogram(view.hist_edges, view.hist_counts), key="fb_hist")
        p, s = st.columns(2)
        p.dataframe({"promoted": [t for t, _ in view.promoted], "logit": [v for _, v in view.promoted]},
                    hide_index=True, width="stretch")
        s.dataframe({"suppressed": [t for t, _ in view.suppressed], "logit": [v for _, v in view.suppressed]},
                    hide_index=True, width="stretch")
        st.caption(f"Direct logit effects, W_dec · W_U: {index.logit_basis}")
        st.plotly_chart(charts.logit_histogram(view.logit_hist_edges, view.logit_hist_counts), key="fb_lhist")
        st.markdown("**Nearest features** (decoder cosine)")
        cols = st.columns(3)
        for n, (j, c) in enumerate(view.nearest):
            cols[n % 3].button(f"#{j} · {c:.2f}", key=f"fb_near{n}", on_click=open_feature, args=(j,),
                               width="stretch", help=f"open feature {j} (cosine {c:.3f})")
    try_panel(view, sae_path, sel)


def try_panel(view, sae_path: str, sel) -> None:
    st.markdown("**Try it**: type text and see this feature's activation on each token")
    text = st.text_area("Text", key="fb_try", height=80, placeholder="March April May June", label_visibility="collapsed")
    if not text:
        return
    if unknown := unknown_words(session.load_model(sel.model_name), text):  # the model reads each as UNK
        st.warning(f"Not in the model's vocabulary (each reads as one unknown token): {', '.join(unknown)}")
    try:
        out = feature_cache.try_text(sae_path, sel.model_name, sel.hook, text, view.index)
    except SAECoreError as e:
        st.error(str(e))
        return
    if out.truncated_from:
        st.warning(f"The text has {out.truncated_from:,} tokens; only the first {len(out.tokens):,} are shown.")
    scale = max(view.max_act, max(out.acts, default=0.0))
    st.html(contexts.tokens_html(out.tokens, out.acts, scale))
    st.caption(f"max here {max(out.acts, default=0.0):.3g} (index max {view.max_act:.3g})")


def map_panel(index_path: str, created: float, current: int) -> None:
    overview = feature_cache.index_overview(index_path, created)
    if overview["x"].isna().all():
        st.info("This index was built without a feature map; rebuild it with the map option.")
        return
    event = st.plotly_chart(charts.feature_map(overview, current), key="fb_mapfig", on_select="rerun",
                            selection_mode="points")
    points = [p for p in (event.selection.points if event else []) if p.get("customdata")]
    if points:
        j = int(points[-1]["customdata"][0])
        if st.session_state.get("fb_map_last") != j:  # a selection persists: act on new clicks only
            st.session_state["fb_map_last"] = j
            st.session_state["fb_goto"] = j
            st.rerun()
    st.caption("Click a point to open that feature. Colour: log10 density; grey: never active.")
