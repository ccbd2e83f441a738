"""Panels of the Universality page that are more than a chart: the Method table with the switch to
the authors' computation, the user's keyword groups, a matched pair in context."""
from __future__ import annotations

import json
from functools import partial

import pandas as pd
import streamlit as st

from sae_app import contexts, feature_panels as fp, jobs, universality_cache as uc, universality_charts as charts
from sae_core.errors import SAECoreError
from sae_core.universality.keyword_groups import check_groups
from sae_core.universality.method import method_rows

MODES = {"paper": "the authors' computation (paper mode)", "default": "this project's defaults",
         "custom": "a mix of the authors' steps and this project's"}


PENDING = "uni_pending"  # a result built below the Result box, selected on the next run (set before the box)


def _select(name: str) -> None:
    st.session_state["uni"] = name


def select_pending() -> None:
    """Select a result a panel built on the last run (call before the Result box is drawn)."""
    if PENDING in st.session_state:
        st.session_state["uni"] = st.session_state.pop(PENDING)


def method(root: str, r: dict, cfg: dict) -> None:
    """Each step against the authors' code, read from the result; a switch to the same SAEs'
    comparison in the other mode (shown at once when the workspace has it, else built)."""
    mode = r.get("mode")
    with st.expander(f"Method: {MODES.get(mode, 'not recorded')}"):
        if mode is None:
            st.info("This result was computed before results recorded their method (issue #29): build it again "
                    "to see each step against the authors' code.")
            return
        st.dataframe(pd.DataFrame(method_rows(cfg, r)).set_index("step"), width="stretch")
        other = "default" if mode == "paper" else "paper"
        label = {"paper": "the authors' computation", "default": "this project's defaults"}[other]
        if (name := uc.twin(root, cfg, r, other)) is not None:
            st.button(f"Show {label} on these SAEs", key="uni_twin_show", on_click=_select, args=(name,))
        else:
            jobs.build_button(f"Run {label} on these SAEs", key="uni_twin_build", title=f"Running {label}…",
                              build=partial(uc.build_twin, config=cfg, stored=r, mode=other), root=root,
                              select_key=PENDING)


def keyword_groups(root: str, r: dict, cfg: dict) -> None:
    """The user's own keyword groups, scored on this result's SAEs and steps; bad JSON is refused
    with its reason and the text stays."""
    with st.expander("Your keyword groups"):
        now = {n: g["words"] for n, g in r.get("subspaces", {}).items()}
        text = st.text_area('Groups as JSON: {"name": ["word", ...], ...}', json.dumps(now), height=120,
                            key="uni_groups_text")
        if st.button("Score these groups on this pair", key="uni_groups_build"):
            try:
                groups = check_groups(json.loads(text), "your keyword groups")
            except json.JSONDecodeError as e:
                st.error(f"Your keyword groups are not JSON ({e}); give an object such as "
                         '{"months": ["January", "February"]}.')
                return
            except SAECoreError as e:
                st.error(str(e))
                return
            if jobs.run_job("Scoring your groups…", lambda bar: uc.build_groups(
                    root, lambda d, t, msg: bar.progress(min(d / t, 1.0), text=msg), config=cfg, stored=r,
                    groups=groups), select_key=PENDING):
                st.rerun()


def pair_in_context(root: str, art, r: dict, cfg: dict) -> None:
    """Choose a matched pair (strongest first); both features' top contexts side by side, each
    with a button that opens it in the feature browser at its model and hook. Another result
    starts again from its strongest pair (a pair's index means nothing in another result)."""
    if st.session_state.get("uni_pair_of") != art.name:
        st.session_state.pop("uni_pair", None)
        st.session_state["uni_pair_of"] = art.name
    pick = st.selectbox("Pair in context", uc.pair_options(str(art.path), art.created), key="uni_pair",
                        format_func=lambda i: uc.pair_label(r["pairs"][i]))
    pair = r["pairs"][pick]
    try:
        ctx = uc.pair_contexts(root, str(art.path), art.created, pick)
    except SAECoreError as e:
        st.warning(str(e))
        ctx = None
    sides = st.columns(2)
    for col, side, model, hook in zip(sides, "ab", (cfg["model_a"], cfg["model_b"]), (cfg["hook_a"], cfg["hook_b"])):
        col.markdown(f"**{model}** `{hook}`, feature **{pair[side]}** (fires on {pair[f'fires_{side}']:,} tokens)")
        if ctx is not None:
            col.html(contexts.examples_html(ctx[side], max((e.value for e in ctx[side]), default=0.0),
                                            uc.tokens_spaced(model)))
        if col.button(f"Open feature {pair[side]} in the feature browser", key=f"uni_open_{side}",
                      on_click=fp.open_later, args=(model, hook, r["saes"][side], pair[side])):
            st.switch_page("views/features.py")


def pair_steering(root: str, art, r: dict, cfg: dict) -> None:
    """Both models steered through the chosen pair at matched strength, against random pairs."""
    if not st.toggle("Steer both models with this pair", key="uni_steer",
                     help="each model's feature added at the same multiple of its typical activation"):
        return
    pick = st.session_state.get("uni_pair", uc.pair_options(str(art.path), art.created)[0])
    fraction = st.slider("Strength (x each feature's typical activation)", 0.5, 8.0, 2.0, 0.5, key="uni_steer_frac")
    try:
        e = uc.pair_effect(root, str(art.path), art.created, pick, fraction)
    except SAECoreError as err:
        st.error(str(err))
        return
    m = st.columns(3)
    m[0].metric("effect similarity", f"{e['similarity']:.3f}", help="cosine of the two models' changes of next-token "
                "log-probabilities, every position of the shared prompts")
    null = e["null"]
    m[1].metric("random pairs", f"{sum(null) / len(null):.3f}", help=f"the mean over {len(null)} random pairs")
    m[2].metric("p-value", f"{e['p']:.3g}", help=f"z {e['z']:.1f} against the random pairs")
    st.plotly_chart(charts.pair_effect_null(e), key="uni_steer_null")
    sides = st.columns(2)
    for col, side, model in zip(sides, "ab", (cfg["model_a"], cfg["model_b"])):
        col.markdown(f"**{model}**: feature {e[side]} added at {e[f'strength_{side}']:.3g} x its decoder row; "
                     "raised most: " + ", ".join(f"`{t.strip() or repr(t)}` {v:+.2f}" for t, v in e[f"raised_{side}"]))
    st.caption(f"Shared prompts: {e['n_positions']:,} positions of held-out zoo documents, the same tokens for both "
               "models. Random pairs: one model's matched feature with another pair's partner, steered alike; "
               "p = (1 + random pairs at least as alike) / (1 + runs).")
