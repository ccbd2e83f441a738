"""The Features page's "Steer with this feature" panel: plain and steered generations side by side.

One batched generation (``steering.feature_edits.steer_columns``) gives every column: the plain
model, then one column per strength, each adding the strength times the feature's decoder row or
clamping its activation to it (through the SAE, error term kept), optionally with more features
edited alike. Tokens are shaded by the feature's activation before the edits; the tokens an edit
changed are underlined. The default strengths are multiples of the feature's max activation in the
index, so the first look is already a dose-response.
"""
from __future__ import annotations

import math

import streamlit as st

from sae_app import contexts, feature_cache, session
from sae_core.errors import SAECoreError

MODES = {"add": "add α × decoder row", "clamp": "clamp activation to"}
WHERE = ("all", "prompt", "generated")
MULTIPLES = {"add": (-1, 1, 2, 4, 8), "clamp": (0, 1, 2, 4, 8)}


def default_values(mode: str, max_act: float) -> str:
    """Five strengths as multiples of the feature's max activation (1 when it never fired)."""
    unit = max_act if max_act > 0 else 1.0
    return ", ".join(f"{m * unit:.3g}" for m in MULTIPLES[mode])


def parse_values(text: str) -> list[float]:
    """A comma list of finite numbers; a ``ValueError`` naming the entry that is not one."""
    out = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        try:
            v = float(part)
        except ValueError:
            raise ValueError(f"{part!r} is not a number: give strengths as numbers separated by commas, "
                             "e.g. -2, 2, 4") from None
        if not math.isfinite(v):
            raise ValueError(f"{part!r} is not a finite number: give real numbers such as 0 or 5")
        out.append(v)
    if not out:
        raise ValueError("give at least one strength (numbers separated by commas)")
    return out


def parse_features(text: str, d_sae: int) -> list[int]:
    """More features to edit alike: a comma list of feature numbers of this SAE."""
    out = []
    for part in (p.strip().lstrip("#") for p in text.split(",")):
        if not part:
            continue
        if not part.isdigit() or int(part) >= d_sae:
            raise ValueError(f"{part!r} is not a feature of this SAE: give numbers from 0 to {d_sae - 1}")
        out.append(int(part))
    return out


@st.cache_data(max_entries=32, show_spinner=False)
def columns(sae_path: str, fingerprint: str, model_name: str, hook: str, prompt: str, feature: int,
            extra: tuple[int, ...], mode: str, values: tuple[float, ...], where: str, n_tokens: int):
    """(columns, truncation warning or None): the plain model and one column per strength."""
    from sae_core.steering.feature_edits import FeatureEdit, steer_columns
    from sae_core.steering.interventions import Positions

    sae, _ = feature_cache.load_sae(sae_path)
    cols = {"plain": ()}
    for v in values:
        edits = tuple(FeatureEdit(f, mode, v) for f in (feature, *extra))
        cols[" + ".join(e.label for e in edits)] = edits
    with session.using(model_name) as (model,):
        out, read = steer_columns(model, sae, hook, prompt, cols, watch=feature, positions=Positions(where),
                                  n_tokens=n_tokens)
    return out, read.truncation_warning


def default_prompt(view, spaced: bool, specials: set[str]) -> str:
    """The feature's top context up to its peak (``Example.prompt``); "" when it never fired."""
    return view.top[0].prompt(spaced, specials) if view.top else ""


def steer_panel(view, index, sae_path: str, fingerprint: str, sel) -> None:
    st.markdown("**Steer with this feature**: generate with it added or clamped, beside the plain model")
    key = f"fb_steer_prompt_{view.index}"  # a new feature starts from its own top context
    specials = set(session.load_model(sel.model_name).tokenizer.all_special_tokens)
    st.session_state.setdefault(key, default_prompt(view, index.spaced, specials))
    prompt = st.text_input("Prompt", key=key, placeholder="type a prompt to continue")
    c = st.columns([2, 3, 2, 2])
    mode = c[0].radio("Edit", list(MODES), format_func=MODES.get, key="fb_steer_mode", horizontal=False)
    vkey = f"fb_steer_values_{mode}_{view.index}"
    st.session_state.setdefault(vkey, default_values(mode, view.max_act))
    values_text = c[1].text_input("Strengths (one column each)", key=vkey,
                                  help=f"comma-separated; the feature's max activation in the index is {view.max_act:.3g}")
    where = c[2].selectbox("Positions", WHERE, key="fb_steer_where", help="where the edits act (never the BOS)")
    n_tokens = c[3].number_input("New tokens", 1, 64, 20, key="fb_steer_tokens")
    extra_text = st.text_input("Also edit features (alike)", key="fb_steer_extra", placeholder="e.g. 12, 40")
    try:
        values = parse_values(values_text)
        extra = parse_features(extra_text, index.n_features)
    except ValueError as e:
        st.error(str(e))
        return
    if not prompt.strip():
        st.info("Type a prompt to generate from.")
        return
    try:
        cols, warning = columns(sae_path, fingerprint, sel.model_name, sel.hook, prompt, view.index,
                                tuple(extra), mode, tuple(values), where, int(n_tokens))
    except SAECoreError as e:
        st.error(str(e))
        return
    if warning:
        st.warning(warning)
    scale = max([view.max_act] + [a for col in cols for a in col.acts])
    for start in range(0, len(cols), 3):  # a row of three at a time: columns of one row line up
        for cell, col in zip(st.columns(3), cols[start:start + 3]):
            cell.markdown(f"**{col.label}**")
            cell.html(contexts.steered_html(col.tokens, col.acts, col.edited, col.n_prompt, scale, col.spaced))
    st.caption(f"Shading: feature {view.index}'s activation before the edits (scale {scale:.3g}); underlined: "
               "where an edit changed the activations. Continuations in bold, greedy with the KV cache.")
