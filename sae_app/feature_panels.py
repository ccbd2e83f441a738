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


FIRST_LIVE = "first live"  # a jump to the first feature that fired (a link that names no feature)


def apply_pending_jump(overview) -> None:
    """A jump requested after the number input was drawn (map clicks), or by a link before the
    SAE had an index, takes effect on this run."""
    if (j := st.session_state.pop("fb_goto", None)) == FIRST_LIVE:
        live = overview.loc[overview["density"] > 0, "feature"]
        open_feature(live.iloc[0] if len(live) else 0)
    elif j is not None:
        open_feature(j)


def _index_job(sel, sae_path: str, n_tokens: int, fmap: bool, text):
    """``job(progress_bar)`` for ``jobs.run_job``: build this SAE's index, stages and sequences
    shown on the bar."""
    def job(bar):
        stage = {"name": "starting", "frac": 0.0}  # the streaming pass reports progress

        def on_stage(name):
            stage["name"] = name
            bar.progress(stage["frac"], text=name)

        def on_progress(done, total):
            stage["frac"] = done / total
            bar.progress(stage["frac"], text=f"{stage['name']}: {done:,}/{total:,} sequences")
        return feature_cache.build_index(sel.workspace_root, sae_path, sel.model_name, sel.hook,
                                         n_tokens=n_tokens, feature_map=fmap, text=text,
                                         on_stage=on_stage, on_progress=on_progress)
    return job


def build_panel(sel, sae_path: str, expanded: bool) -> None:
    with st.expander("Build a feature index for this SAE", expanded=expanded):
        c1, c2 = st.columns(2)
        n_tokens = c1.number_input("corpus tokens", 2_000, 50_000_000, 50_000, step=10_000, key="fb_tokens")
        fmap = c2.checkbox("feature map (UMAP; about a minute for 16k features)", True, key="fb_map")
        text = text_input.text_source_input("fb")
        if st.button("Build index", type="primary", key="fb_build", disabled=text is None):
            if jobs.run_job("Building the feature index…", _index_job(sel, sae_path, int(n_tokens), fmap, text),
                            select_key="fb_index_built"):
                st.rerun()


# An index built on demand streams this many tokens of the zoo corpus, without the map: seconds,
# not minutes (the map's UMAP alone takes longer), enough for top contexts of the live features.
QUICK_TOKENS = 20_000


def quick_index(sel, sae_path: str, auto: bool) -> None:
    """This SAE has no index: build a quick one here, at once when a link asked for one of its
    features (``auto``: the link's callback set ``fb_open_sae``), else on a click; the page then
    reruns and shows the feature. Stops the page (nothing below needs an index)."""
    st.info(f"This SAE has no feature index yet. A quick one streams {QUICK_TOKENS:,} corpus tokens through "
            "the model and the SAE (seconds, no feature map); the panel above builds a fuller one "
            "(or `sae-core index --sae DIR`).")
    if auto or st.button(f"Build a quick index ({QUICK_TOKENS:,} tokens)", type="primary", key="fb_quick"):
        job = _index_job(sel, sae_path, QUICK_TOKENS, False, None)
        if jobs.run_job(f"Building a quick feature index ({QUICK_TOKENS:,} tokens)…", job,
                        select_key="fb_index_built"):
            st.rerun()
    st.stop()


def quick_note(info: dict) -> str:
    """What the index caption adds for an index built on demand."""
    if info.get("n_tokens_requested") != QUICK_TOKENS or info.get("has_map"):
        return ""
    return (f" A quick index built on demand ({QUICK_TOKENS:,} tokens requested, no map): build a fuller one "
            "in the panel above.")


LIVE_KEY, LIVE_PICK_KEY = "fb_live", "fb_live_pick"


def _to_live(live: list[int]) -> None:
    """Turning "live features only" on while a dead feature is open opens the next live one."""
    current = st.session_state.get(FEATURE_KEY, 0)
    if st.session_state.get(LIVE_KEY) and live and current not in set(live):
        open_feature(next((j for j in live if j > current), live[0]))


def _pick_live() -> None:
    if (j := st.session_state.get(LIVE_PICK_KEY)) is not None:
        open_feature(j)


def live_picker(overview) -> set[int] | None:
    """The "live features only" switch (many SAEs have mostly dead features: 496 of 512 for l=1)
    and, when on, a list of the live features; returns the live features' ids when on, else None."""
    live = overview.loc[overview["density"] > 0, "feature"].tolist()
    if not st.checkbox(f"live features only ({len(live):,} of {len(overview):,} fired)", key=LIVE_KEY,
                       on_change=_to_live, args=(live,)):
        return None
    if not live:
        st.info("No feature of this SAE fired on the index's tokens.")
        return set()
    live_set, tops = set(live), overview["top_tokens"]
    current = st.session_state.get(FEATURE_KEY)
    st.session_state[LIVE_PICK_KEY] = current if current in live_set else None  # follows the number above
    st.selectbox("Live feature", live, key=LIVE_PICK_KEY, on_change=_pick_live,
                 format_func=lambda j: f"#{j} · {tops[j]}" if tops[j] else f"#{j}",
                 placeholder=f"feature {current} never fired: pick a live one")
    return live_set


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


def feature_panel(index, view, sae_path: str, sel, live: set[int] | None = None) -> None:
    """One feature; with ``live`` (the "live features only" ids), nearest features that never
    fired are left out."""
    if view.count == 0:
        st.info(f"Feature {view.index} never fired on the index's {index.info['n_tokens']:,} tokens: it has no "
                "contexts and no activation histogram. Its logit effects and nearest features come from its "
                "weights.")
    m = st.columns(4)
    m[0].metric("density", f"{view.density:.4%}", help="share of the index's tokens where it is > 0")
    m[1].metric("log10 density", "never fired" if view.log10_density is None else f"{view.log10_density:.2f}")
    m[2].metric("max activation", f"{view.max_act:.3g}")
    m[3].metric("active tokens", f"{view.count:,}")
    left, right = st.columns([3, 2])
    with left:
        st.markdown("**Top activations**")
        st.html(contexts.examples_html(view.top, view.max_act, index.spaced))
        for label, group in view.quantiles:
            with st.expander(f"Random examples, {label}"):
                st.html(contexts.examples_html(group, view.max_act, index.spaced))
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
        nearest = [(j, c) for j, c in view.nearest if live is None or j in live]
        if not nearest:
            st.caption("None of its nearest features ever fired.")
        cols = st.columns(3)
        for n, (j, c) in enumerate(nearest):
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
    st.html(contexts.tokens_html(out.tokens, out.acts, scale, spaced=out.spaced))
    st.caption(f"max here {max(out.acts, default=0.0):.3g} (index max {view.max_act:.3g})")


def map_panel(index_path: str, created: float, current: int, live_only: bool = False) -> None:
    overview = feature_cache.index_overview(index_path, created)
    if overview["x"].isna().all():
        st.info("This index was built without a feature map; rebuild it with the map option.")
        return
    event = st.plotly_chart(charts.feature_map(overview, current, live_only), key="fb_mapfig",
                            on_select="rerun", selection_mode="points")
    points = [p for p in (event.selection.points if event else []) if p.get("customdata")]
    if points:
        j = int(points[-1]["customdata"][0])
        if st.session_state.get("fb_map_last") != j:  # a selection persists: act on new clicks only
            st.session_state["fb_map_last"] = j
            st.session_state["fb_goto"] = j
            st.rerun()
    st.caption("Click a point to open that feature. Colour: log10 density"
               + ("." if live_only else "; grey: never fired."))
