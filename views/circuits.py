"""Circuits: the heads and MLPs a model continues sequences with, their edges, and tasks compared."""
import streamlit as st

from sae_app import circuits_cache as cc, circuits_charts as charts, jobs, sidebar
from sae_app.circuits_panels import component_panel, left_out_caption, new_study_form, study_summary
from sae_core.io import dumps_json

sel = sidebar.current()
st.title("Circuits")
st.write("Which components continue a sequence (\"March . April . May\" -> June)? Every head and MLP outside a "
         "circuit is replaced by its mean over corrupted prompts; pruning keeps what the logit difference needs "
         "(arXiv 2311.04131). Edges by the study's method: the Method panel sets it beside the authors'.")
if sel.workspace_error:
    st.error(sel.workspace_error)
    st.stop()
studies = cc.list_studies(sel.workspace_root)
if not studies:
    jobs.offer_build("No circuits study in this workspace yet: digits, number words and months on zoo:tiny-b take "
                     "about a minute, or `sae-core circuit discover` / `sae-core demo`.",
                     "Find the circuits on zoo:tiny-b", key="circ_build", title="Finding circuits…",
                     build=cc.build_demo, root=sel.workspace_root, select_key="circ_new_done", kind=cc.KIND)
by_label = {cc.study_label(a): a for a in studies}
new = st.session_state.pop("circ_new_done", None)  # a study just built: show it
if label := next((label for label, a in by_label.items() if a.name == new), None):
    st.session_state["circ"] = label
art = by_label[st.selectbox("Study", list(by_label), key="circ")]
new_study_form(sel, expanded=False)
path, created = str(art.path), art.created
study = cc.open_study(path, created)
r, cfg = study.results, study.config
tasks = study.tasks
paper_edges = study_summary(r, cfg)
for col, t in zip(st.columns(len(tasks)), tasks):
    c = study.circuit(t)
    col.metric(t, f"{c.performance:.1f}%", f"{len(c.nodes)} components ({len(c.heads())} heads); "
               f"{r['tasks'][t]['n_prompts']} prompts", delta_color="off")
left_out_caption(r)

st.subheader("Circuit graph")
c1, c2, c3 = st.columns([3, 3, 2])
view = c1.segmented_control("Show", tasks + ["union"], default=tasks[0], key="circ_view",
                            format_func=lambda v: "all tasks (union)" if v == "union" else v) or tasks[0]
percent = c2.slider("Edge threshold (% of the model's logit difference)", 0.1, 10.0,
                    float(100 * cfg["edge_threshold"]), 0.1, key="circ_thr", disabled=paper_edges,
                    help="The authors' edges are kept by their rule (LD ratio under "
                         f"{cfg.get('ratio_threshold', 0.8):g})" if paper_edges else None)
only = c3.toggle("Only the circuit's components", True, key="circ_only")
task = tasks[0] if view == "union" else view
g = cc.graph(path, created, task)
components = study.components(task)
if st.session_state.get("circ_node") not in components:  # before the figure, so a click's rerun draws the same one
    st.session_state["circ_node"] = next((n for n in study.circuit(task).nodes if n in components), components[0])
if view == "union":
    edges = {e for t in tasks for e in cc.edges_at(path, created, t, percent, only)}
    nodes = sorted(r["compare"]["membership"])
    fig = charts.circuit_graph(g, edges, nodes, cc.node_text(path, created, task), r["compare"]["membership"], tasks,
                               selected=st.session_state["circ_node"])
    st.caption("Union view: the edges of every task's circuit; each component is coloured by the tasks whose "
               "circuits use it (the legend names them). Hover and the panel below read the "
               f"{task} circuit.")
else:
    edges, nodes = set(cc.edges_at(path, created, task, percent, only)), study.circuit(task).nodes
    fig = charts.circuit_graph(g, edges, nodes, cc.node_text(path, created, task),
                               selected=st.session_state["circ_node"])
event = st.plotly_chart(fig, width="stretch", key="circ_graph", on_select="rerun", selection_mode="points",
                        config={"toImageButtonOptions": {"format": "png", "filename": f"circuit-{task}"}})
clicked = [p.get("customdata") for p in (event.selection.points if event else []) if p.get("customdata")]
if clicked and clicked[0] in components and clicked[0] != st.session_state.get("circ_clicked"):
    st.session_state["circ_node"] = st.session_state["circ_clicked"] = clicked[0]  # a new click, not a kept one
node = st.selectbox("Component (or click one in the graph)", components, key="circ_node")
component_panel(sel.workspace_root, art, task, node)

st.subheader("Tasks compared")
cmp = r["compare"]
h1, h2, h3 = st.columns(3)
h1.plotly_chart(charts.matrix_heatmap(cmp["node_iou"], tasks, tasks, "Node IoU", "{:.2f}", 0, 1), key="circ_niou")
h2.plotly_chart(charts.matrix_heatmap(cmp["edge_iou"], tasks, tasks, "Edge IoU", "{:.2f}", 0, 1), key="circ_eiou")
h3.plotly_chart(charts.matrix_heatmap(cmp["cross_performance"], tasks, tasks, "Circuit (row) on task (column), %",
                                      "{:.0f}", 0, 100, "RdYlGn"), key="circ_cross")
st.caption(f"In every task's circuit ({len(cmp['shared_nodes'])}): {' '.join(cmp['shared_nodes']) or 'none'}.")

st.subheader(f"Validation: {task}")
v = r["tasks"][task]
l, rcol = st.columns(2)
if v["validation"]:
    l.plotly_chart(charts.validation_scatter(v["validation"]), width="stretch", key="circ_valid")
rcol.plotly_chart(charts.size_curve(v["curve"], len(v["circuit"]["nodes"]), v["circuit"]["metrics"]["performance"]),
                  width="stretch", key="circ_curve")
st.subheader(f"Logit lens: {task}")
lens_mode = st.radio("Reading", ["final_norm", "paper"], horizontal=True, key="circ_lens_mode",
                     format_func={"final_norm": "through the final norm (the usual lens)",
                                  "paper": "the authors' (raw states, the last normed twice)"}.get)
lens_rows = cc.lens(path, created, task, lens_mode)
st.plotly_chart(charts.logit_lens(lens_rows, task, lens_mode), width="stretch", key="circ_lens")
st.caption("The residual stream at the last position of the task's prompts, after the embedding and after each "
           "block, read through the unembedding. The authors' code (seqcont_circuits, src/logit_lens) unembeds the "
           "transformers hidden states without a norm, and the last, already normed, once more. Top five of the "
           "first prompt, last row: " + " ".join(t.strip() for t in lens_rows[-1]["top5_first"]))
st.subheader(f"Heads: {task}")
st.plotly_chart(charts.ov_bars(v["ov"]), width="stretch", key="circ_ov")
st.dataframe(cc.node_table(path, created, task), hide_index=True, width="stretch", height=300)
d1, d2, d3 = st.columns(3)
d1.download_button(f"{task} graph (EAP-IG JSON)", dumps_json(g.to_eap_json()), file_name=f"{art.name}-{task}.json",
                   mime="application/json", key="circ_json")
d2.download_button(f"{task} graph (SVG)", charts.circuit_svg(g, edges, nodes, f"{cfg['model']}: {task}"),
                   file_name=f"{art.name}-{task}.svg", mime="image/svg+xml", key="circ_svg")
d3.download_button("Whole study (JSON)", dumps_json({"config": cfg, "results": r}), file_name=f"{art.name}.json",
                   mime="application/json", key="circ_all")
