"""Activations: harvest a model's activations at the sidebar's hook, then inspect a stored harvest."""
import streamlit as st

from sae_app import activations_cache, activations_charts as charts, demo_build, jobs, listing, session, sidebar
from sae_app import text_input
from sae_core.activations.limits import MAX_TOKENS, MIN_TOKENS
from sae_core.errors import SAECoreError
from sae_core.models.random_arch import label

sel = sidebar.current()
st.title("Activations")
st.write("Run the model over the zoo corpus (or your own) and store its activations at one hook, token by token, "
         "in the workspace. SAEs train on these stores. `sae-core harvest` does the same from the shell.")
for problem in (sel.workspace_error, sel.model_error):
    if problem:
        st.error(problem)

st.subheader("Harvest")
st.markdown(f"Model **{sel.model_name or '—'}**, hook `{sel.hook or '—'}` (change them in the sidebar).")
max_ctx = session.model_info(sel.model_name).n_ctx if sel.ready else 4096
c1, c2, c3 = st.columns(3, vertical_alignment="bottom")
n_tokens = c1.number_input("Tokens", min_value=MIN_TOKENS, max_value=MAX_TOKENS, value=20_000, step=1_000,
                           key="act_n_tokens", help=f"{MIN_TOKENS:,} to {MAX_TOKENS:,}; the store holds exactly "
                                                    "this many (fewer only if the text runs out).")
context_size = c2.number_input("Context size", min_value=4, max_value=max_ctx, value=min(64, max_ctx),
                               step=16, key=f"act_context_size::{max_ctx}",  # new limit, new widget
                               help="Tokens per sequence fed to the model (at most its n_ctx).")
exclude_special = c3.checkbox("Exclude special tokens", value=True, key="act_exclude_special",
                              help="Leave BOS/EOS/padding positions out of the store.")
text = text_input.text_source_input("act")

if st.button("Harvest", type="primary", disabled=not sel.ready or text is None, key="act_harvest"):
    def harvest(bar):
        def on_progress(done: int, total: int) -> None:
            bar.progress(min(1.0, done / max(total, 1)), text=f"{done:,} / {total:,} documents")
        return activations_cache.harvest(sel.workspace_root, sel.model_name, sel.hook, n_tokens=int(n_tokens),
                             context_size=int(context_size), exclude_special=exclude_special, text=text,
                             on_progress=on_progress)
    jobs.run_job(f"Harvesting {n_tokens:,} tokens at `{sel.hook}`…", harvest, select_key="act_store")

st.subheader("Stored activations")
stores = [] if sel.workspace_error else listing.list_artifacts(sel.workspace_root, "activations")
if not stores:
    demo_build.wait_for(sel.workspace_root, "activations")
    st.info("No activation stores in this workspace yet — harvest some above.")
    st.stop()
by_name = {a.name: a for a in stores}
if st.session_state.get("act_store") not in by_name:
    st.session_state["act_store"] = stores[0].name
art = by_name[st.selectbox("Store", list(by_name), key="act_store",
                           format_func=lambda n: f"{n}  ({by_name[n].kind}, {label(by_name[n].model)})")]
try:
    meta = activations_cache.store_meta(str(art.path), art.created)
    summary = activations_cache.store_summary(str(art.path), art.created)
except SAECoreError as e:
    st.error(str(e))
    st.stop()

m1, m2, m3, m4 = st.columns(4)
m1.metric("Tokens", f"{summary.n_tokens:,}")
m2.metric("Dimensions", f"{summary.d:,}")
m3.metric("Mean token norm", f"{summary.norm_mean:.3g}")
m4.metric("Std of token norm", f"{summary.norm_std:.3g}")
with st.expander("Store metadata"):
    st.json(meta)

left, right = st.columns(2)
left.plotly_chart(charts.norm_histogram(summary.norm_centers, summary.norm_counts), width="stretch")
right.plotly_chart(charts.dimension_stats(summary.mean_D, summary.std_D), width="stretch")
