"""The Steering page's feature-gated switch: its live column, and its figures beside the always-on switch.

The gated switch (``sae_core.steering.gated_switch``) is the study's switch acting only where a
feature of an SAE of the fine-tuned model fires. Its column is shaded where the switch acted; a
gate that did not open on the prompt is said in a warning, never left as a silent no-op. The
panel shows the report-prompt figures and the issue's three targets, and links the gate's
feature to the feature browser.
"""
from __future__ import annotations

import pandas as pd
import streamlit as st

from sae_app import contexts, feature_panels, jobs, steering_cache
from sae_core.errors import SAECoreError
from sae_core.steering.behaviour import RATE_NAMES
from sae_core.steering.compare import GATED


def _own_threshold(gate_art) -> float:
    return float(steering_cache.open_gate(str(gate_art.path), gate_art.created).results["gate"]["threshold"]["value"])


def gated_live(gate_art, art, prompt: str, n_tokens: int, scale: float) -> None:
    """The gated switch's column (``gate_art``: the study's gated switch, ``steering_cache.gate_of``;
    nothing when it has none or its toggle is off)."""
    if gate_art is None or not st.session_state.get("st_on_gated", True):
        return
    gate = steering_cache.open_gate(str(gate_art.path), gate_art.created)
    threshold = st.session_state.get(f"st_gate_threshold_{gate_art.name}", _own_threshold(gate_art))
    try:
        col = steering_cache.gated_column(str(gate_art.path), gate_art.created, str(art.path), art.created, prompt,
                                          n_tokens, float(threshold))
    except SAECoreError as e:
        st.error(str(e))
        return
    g = gate.results["gate"]
    st.markdown(f"**{GATED}**")
    st.html(contexts.fired_html(col.tokens, col.fired, col.n_prompt, max(scale, max(col.fired, default=0)), col.spaced))
    st.caption(f"→ {col.text}")
    if not col.fired_anywhere:
        st.warning(f"The gated switch did not act: its gate (feature {g['feature']} above {threshold:.4g} at "
                   f"`{g['hook']}`) stayed closed on this prompt and its continuation, as it should on a clean one.")


def gate_toggle(gate_art, cell) -> None:
    """The fifth toggle (when the study has a gated switch)."""
    if gate_art is not None:
        cell.toggle("gated switch", value=True, key="st_on_gated", help=f"Show the column \"{GATED}\"")


def gate_threshold(gate_art, cell) -> None:
    """The gate's threshold, beside the sliders (when the study has a gated switch)."""
    if gate_art is None:
        return
    own = _own_threshold(gate_art)
    cell.number_input("gate threshold", value=own, key=f"st_gate_threshold_{gate_art.name}", format="%.4g",
                      help=f"the feature's activation above which the gate opens; chosen on selection prompts: {own:.4g}")


def gate_panel(sel, art, study, gate_art) -> None:
    st.subheader("Feature-gated switch")
    if gate_art is None:
        st.info("This study's switch has no gate yet: find the SAE feature of the fine-tuned model that tells "
                "triggered requests from clean ones, and switch only where it fires (trains a small SAE; about "
                "half a minute), or `sae-core steer gate`.")
        jobs.build_button("Gate the switch by an SAE feature", key="st_gate_build", root=sel.workspace_root,
                          title="Gating the switch…", select_key="st_gate",
                          build=lambda root, progress: steering_cache.build_gate(root, art.name, progress))
        return
    res = steering_cache.open_gate(str(gate_art.path), gate_art.created).results
    g, th, t = res["gate"], res["gate"]["threshold"], res["targets"]
    st.write(f"The switch acts only where feature {g['feature']} of an SAE of {study.config['target_model']} at "
             f"`{g['hook']}` exceeds {th['value']:.4g}" + (", and from there to the end of the generation" if res["latch"]
                                                             else "") +
             f". The feature is the best of the SAE's at telling triggered from clean build prompts (AUROC "
             f"{g['auroc']:.3f}); the threshold was chosen on selection prompts ({th['rule']}: it opens on "
             f"{th['tpr']:.0%} of triggered and {th['fpr']:.0%} of clean ones). Below, report prompts only.")
    gate_feature_link(sel, res, study)
    rows = {name: {RATE_NAMES[k]: f"{r[k]:.0%}" for k in RATE_NAMES} for name, r in
            ((n, res["rates"][n]) for n in ("fine-tuned", "always-on switch", "gated switch"))}
    for name, row in rows.items():
        row["clean KL"] = f"{res['kl'][name]:.4f}" if name in res["kl"] else ""
        row["acted, clean"] = {"fine-tuned": "", "always-on switch": "100%"}.get(
            name, f"{t['clean_share']:.1%}")
    st.dataframe(pd.DataFrame.from_dict(rows, orient="index"), width="stretch")
    ok = lambda b: "met" if b else "not met"  # noqa: E731
    st.caption(f"Targets: triggered rate within 5 points of the always-on switch: {ok(t['triggered_ok'])} "
               f"({100 * t['triggered_gap']:+.1f} points); under 10% of clean positions: {ok(t['clean_share_ok'])} "
               f"({t['clean_share']:.1%}, the larger of clean text and clean requests with their continuations); "
               f"clean KL at most half the always-on switch's: {ok(t['kl_ok'])} ({t['kl_ratio']:.3f}x). "
               f"The gated switch acted on {res['share']['triggered requests']:.0%} of the positions of triggered "
               "requests and their continuations.")


def gate_feature_link(sel, res: dict, study) -> None:
    from sae_core.steering.gated_switch import WORKSPACE_SAE

    src = res["sae"]["source"]
    if not src.startswith(WORKSPACE_SAE):
        st.caption(f"The gate reads your SAE at `{src}`.")
        return
    if st.button(f"Open feature {res['gate']['feature']} in the feature browser", key="st_gate_feature"):
        feature_panels.open_later(study.config["target_model"], res["gate"]["hook"],
                                  src.removeprefix(WORKSPACE_SAE), res["gate"]["feature"])
        st.switch_page("views/features.py")
