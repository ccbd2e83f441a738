"""Features: browse an SAE's features (top contexts, histograms, logit effects, neighbours, map)."""
import streamlit as st

from sae_app import (demo_build, feature_cache, feature_drivers, feature_panels as fp, feature_steering, listing, session,
                     sidebar)
from sae_core.errors import SAECoreError
from sae_core.features.export import feature_json
from sae_core.sae.config import sae_label

sel = sidebar.current()
st.title("Feature browser")
if not sel.ready:
    st.error(sel.workspace_error or sel.model_error or "choose a model and hook in the sidebar")
    st.stop()

saes = {a.name: a for a in feature_cache.list_saes(sel.workspace_root, sel.model_name, sel.hook)}
c1, c2 = st.columns([3, 2])
# a link from another page (Sampled-SAE, Universality, Circuits) names the SAE to open; its
# feature, if any, waits in "fb_goto" until the SAE has an index (built here on demand)
wanted = st.session_state.pop("fb_open_sae", None)
if linked := wanted in saes:
    st.session_state["fb_sae"], st.session_state["fb_sae_dir"] = wanted, ""
    st.session_state.setdefault("fb_goto", fp.FIRST_LIVE)  # the sweep's link names no feature
elif wanted is not None:
    st.warning(f"SAE `{wanted}` is not in this workspace at `{sel.model_name}` / `{sel.hook}`.")
if st.session_state.get("fb_sae") not in saes and saes:
    st.session_state["fb_sae"] = next(iter(saes))
name = c1.selectbox("SAE", list(saes), key="fb_sae", format_func=lambda n: (
    f"{n}  ({sae_label(saes[n].meta, detail=True)}, d_sae={saes[n].meta.get('d_sae')})"),
    placeholder="no SAE at this model and hook")
typed = c2.text_input("…or an SAE directory (ours or SAELens format)", key="fb_sae_dir").strip()
sae_path = typed or (str(saes[name].path) if name else None)
if not sae_path:
    demo_build.wait_for(sel.workspace_root, "sae")
    st.info(f"No SAE trained at `{sel.model_name}` / `{sel.hook}` in this workspace: train one on the "
            "Sampled-SAE page (or `sae-core train`), or give an SAE directory above.")
    st.stop()
try:
    sae, fingerprint = feature_cache.load_sae(sae_path)
    width = session.hook_width(sel.model_name, sel.hook)
except SAECoreError as e:
    st.error(str(e))
    st.stop()
if sae.cfg.d_in != width:
    st.error(f"This SAE reads d_in={sae.cfg.d_in}, but `{sel.hook}` of `{sel.model_name}` has width "
             f"{width}. Choose the model and hook it was trained on (its cfg.json says "
             f"`{sae.cfg.model_name or '?'}` / `{sae.cfg.hook_name or '?'}`).")
    st.stop()

indexes = feature_cache.indexes_for(sel.workspace_root, fingerprint)
stale = [a for a in listing.list_artifacts(sel.workspace_root, "feature_index")
         if a.meta.get("sae") == sae_path and a.meta.get("sae_fingerprint") != fingerprint]
if stale and not indexes:
    st.warning("An index exists for an earlier version of this SAE (its weights have changed since: "
               "the fingerprints differ). Rebuild it below.")
fp.build_panel(sel, sae_path, expanded=not indexes and not linked)
if not indexes:
    demo_build.wait_for(sel.workspace_root, "feature_index")  # the demo indexes its sweep's SAEs
    fp.quick_index(sel, sae_path, auto=linked)  # builds, then reruns; or stops the page
art = indexes[0]
index = feature_cache.open_index(str(art.path), art.created)
st.caption(f"Index `{art.name}`: {index.n_features:,} features over {index.info['n_tokens']:,} tokens "
           f"of {index.text_source}." + fp.quick_note(index.info))

overview = feature_cache.index_overview(str(art.path), art.created)
fp.apply_pending_jump(overview)
top = st.columns([1, 3])
with top[0]:  # no bounds: a number out of range is named in an error, not silently reset
    feature = st.number_input("Feature", step=1, key=fp.FEATURE_KEY, help=f"0 to {index.n_features - 1}")
    live = fp.live_picker(overview)
view_mode = top[1].segmented_control("View", ["Feature", "Map"], default="Feature", key="fb_view")
with top[1]:
    fp.search_panel(index)
try:
    view = index.feature(feature)
except SAECoreError as e:
    st.error(str(e))
    st.stop()
if view_mode == "Map":
    fp.map_panel(str(art.path), art.created, view.index, live_only=live is not None)
else:
    st.subheader(f"Feature {view.index}")
    fp.feature_panel(index, view, sae_path, sel, live)
    feature_steering.steer_panel(view, index, sae_path, fingerprint, sel)
    feature_drivers.drivers_panel(view, index, sae_path, fingerprint, sel)
    st.download_button("Download this feature as JSON (Neuronpedia-like)", feature_json(view, index),
                       file_name=f"feature_{view.index}.json", mime="application/json", key="fb_json")
