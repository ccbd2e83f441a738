"""``sae-core circuit discover|edges|compare|heads|lens``: the circuits study from the shell.

``discover`` builds (or finds: the artifact is named by its configuration) one study and prints its
circuits; ``edges`` and ``compare`` print parts of a study (``--study NAME``, default the newest);
``heads`` and ``lens`` (the logit lens) read a model directly.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from sae_core.circuits.discovery import DiscoveryConfig
from sae_core.circuits.heads import ov_scores
from sae_core.circuits.job import CircuitStudyConfig
from sae_core.circuits.tasks import TaskConfig, excluded_line
from sae_core.cli.common import Bar, WorkspaceOpt, config_option, friendly, words
from sae_core.io import dumps_json

circuit_app = typer.Typer(help="Circuits for sequence continuation: nodes, edges, heads, tasks compared.",
                          no_args_is_help=True)

ModelOpt = config_option(CircuitStudyConfig, "model")
TemplateOpt = config_option(CircuitStudyConfig, "template")
JsonOpt = typer.Option(False, "--json", help="Print nodes, edges and performance as JSON.")
StudyOpt = typer.Option(None, "--study", help="A circuits study in the workspace [default: the newest].")


def _floats(text: str) -> tuple[float, ...]:
    from sae_core.circuits.tasks import CircuitError

    try:
        return tuple(float(x) for x in words(text))
    except ValueError:
        raise CircuitError(f"{text!r}: give comma-separated numbers, such as 10,20,40") from None


def _open(study: Optional[str], workspace):
    from sae_core.circuits.job import KIND, CircuitStudy
    from sae_core.circuits.tasks import CircuitError
    from sae_core.workspace import Workspace

    arts = Workspace(workspace).list(KIND)
    art = next((a for a in arts if study in (None, a.name)), None)
    if art is None:
        raise CircuitError(f"no circuits study {study or ''} in the workspace: build one with `sae-core circuit "
                           "discover`" + (f" (it has {', '.join(a.name for a in arts)})" if arts else ""))
    return art, CircuitStudy.open(art.path)


def _given(ctx: typer.Context, name: str) -> bool:
    """Whether option ``name`` was given on the command line (not left at its default). By the
    source's name: typer carries its own copy of click, whose enum is not ``click.core``'s."""
    source = ctx.get_parameter_source(name)
    return source is not None and source.name == "COMMANDLINE"


def _rules_line(results: dict) -> str:
    r = results.get("rules")
    if r is None:
        return "(a revision-1 study: default mode; rebuild it for its rules)"
    edges = (f"the authors' path patching in the circuit, kept under {r['ratio_threshold']:g} of the model's LD"
             if r["edges"] == "paper" else f"{r['edges']} on the full model ({r['baseline']} baseline), kept at "
             f"|score| >= {100 * r['edge_threshold']:g}% of LD (this tool's rule)")
    return f"mode {r['mode']}: {r['prompts']} prompts, {r['ov']} OV scores; edges by {edges}"


@circuit_app.command("discover")
@friendly
def discover(ctx: typer.Context, model: str = ModelOpt, tasks: str = config_option(CircuitStudyConfig, "tasks"),
             template: str = TemplateOpt, prompts: int = config_option(CircuitStudyConfig, "n_prompts", "--prompts"),
             threshold: float = config_option(DiscoveryConfig, "threshold"),
             reference: str = config_option(DiscoveryConfig, "reference"),
             method: str = config_option(CircuitStudyConfig, "method"),
             baseline: str = config_option(CircuitStudyConfig, "baseline"),
             ig_steps: int = config_option(CircuitStudyConfig, "ig_steps", "--ig-steps"),
             edge_threshold: float = config_option(CircuitStudyConfig, "edge_threshold", "--edge-threshold"),
             validate: int = config_option(CircuitStudyConfig, "validate_top", "--validate"),
             curve: str = config_option(CircuitStudyConfig, "curve_thresholds", "--curve"),
             random_circuits: int = config_option(CircuitStudyConfig, "n_random", "--random"),
             seed: int = config_option(CircuitStudyConfig, "seed"),
             ratio: float = config_option(CircuitStudyConfig, "ratio_threshold", "--edge-ratio"),
             paper: bool = typer.Option(False, "--paper", help="The authors' prompts, OV scores and edges (mode "
                                        "paper, method paper; --method still chooses the edges)."),
             as_json: bool = JsonOpt, workspace: Optional[Path] = WorkspaceOpt):
    """Find each task's circuit by iterative mean-ablation pruning (arXiv 2311.04131), score its edges."""
    from sae_core.circuits.job import CircuitStudy, circuits_to_workspace
    from sae_core.workspace import Workspace

    if paper and not _given(ctx, "method"):
        method = "paper"
    cfg = CircuitStudyConfig(model=model, tasks=words(tasks), mode="paper" if paper else "default",
                             template=template, n_prompts=prompts, method=method, baseline=baseline,
                             ratio_threshold=ratio,
                             discovery=DiscoveryConfig(threshold=threshold, reference=reference), ig_steps=ig_steps,
                             edge_threshold=edge_threshold, validate_top=validate, curve_thresholds=_floats(curve),
                             n_random=random_circuits, seed=seed)
    bar = None if as_json else Bar("circuits", unit="task")
    art = circuits_to_workspace(Workspace(workspace), cfg, on_progress=bar)
    if bar:
        bar.close()
        typer.echo(f"{art.kind}/{art.name} -> {art.path}")
    st = CircuitStudy.open(art.path)
    r = {t: st.results["tasks"][t] for t in st.tasks}
    if as_json:
        typer.echo(dumps_json({"artifact": art.name, "mode": st.results["mode"], "method": cfg.method, "tasks": {
            t: {"nodes": v["circuit"]["nodes"], "metrics": v["circuit"]["metrics"], "edges": v["edges_in_graph"],
                "prompts": v["stats"], "ablation": v["ablation"]} for t, v in r.items()}}))
        return
    typer.echo(_rules_line(st.results))
    for t, v in r.items():
        m, s = v["circuit"]["metrics"], v["stats"]
        heads = st.circuit(t).heads()
        typer.echo(f"\n{t}: {s['kept']} of {s['generated']} prompts kept ({s['wrong_top1']} wrong top-1, "
                   f"{s['weak_margin']} below the 2x margin); model LD {v['ld_model']:.2f}")
        if s.get("excluded"):
            typer.echo(f"  members left out, not one token of this tokenizer: {excluded_line(s['excluded'], t)}")
        if v.get("subjects"):
            typer.echo(f"  subjects: {v['subjects']}")
        typer.echo(f"  circuit: {len(v['circuit']['nodes'])} components ({len(heads)} heads): "
                   + " ".join(v["circuit"]["nodes"]))
        typer.echo(f"  performance {m['performance']:.1f}%  LD {m['logit_diff']:.2f}  KL {m['kl']:.3f}  "
                   f"p(answer) {m['p_answer']:.3f}  top-1 {m['top1']:.2f}")
        curve = ", ".join(f"T={p['threshold']:g}: {p['size']} -> {p['performance']:.0f}% (random "
                          f"{max(p['random_performance'], default=float('nan')):.0f}% best)" for p in v["curve"])
        typer.echo(f"  size curve: {curve}")
        typer.echo(f"  edges: {len(v['edges_in_graph'])} in the circuit"
                   + (f"; verbs {', '.join(v['verbs'])}" if v.get("verbs") else ""))
        if val := v.get("validation"):
            typer.echo(f"  top {len(val['edges'])} edges by |attribution| against exact patching: Spearman rho "
                       f"{val['spearman']:.2f}")


@circuit_app.command("edges")
@friendly
def edges(task: str = config_option(TaskConfig, "task", help="The task whose edges to print."),
          top: int = typer.Option(20, help="Edges to print, largest |score| first."),
          export: Optional[Path] = typer.Option(None, help="Write the task's graph here (EAP-IG's JSON layout)."),
          study: Optional[str] = StudyOpt, as_json: bool = JsonOpt, workspace: Optional[Path] = WorkspaceOpt):
    """Edge scores of a task's graph (attribution or path patching), and its circuit's edges."""
    art, st = _open(study, workspace)
    g = st.graph(task)
    if export:
        g.save(export)
    ranked = sorted(g.scores, key=lambda n: -abs(g.scores[n]))[:top]
    v = st.results["tasks"][task]
    if as_json:
        typer.echo(dumps_json({"artifact": art.name, "task": task, "method": g.meta["method"],
                               "nodes": v["circuit"]["nodes"], "performance": v["circuit"]["metrics"]["performance"],
                               "edges": {n: g.scores[n] for n in ranked}, "in_graph": sorted(g.in_graph),
                               "validation": v["validation"] and v["validation"]["spearman"]}))
        return
    ld = g.meta["ld_clean"]
    typer.echo(f"{task}: {g.meta['method']} over {len(g.scores)} edges (baseline {g.meta['baseline']}); model LD "
               f"{ld:.2f}; {len(g.in_graph)} edges in the circuit")
    typer.echo(f"{'edge':28}{'score':>10}{'% of LD':>9}  in circuit")
    for n in ranked:
        typer.echo(f"{n:28}{g.scores[n]:>10.3f}{100 * g.scores[n] / ld:>9.1f}  {'yes' if n in g.in_graph else ''}")
    if v["validation"]:
        typer.echo(f"attribution vs exact path patching, top {len(v['validation']['edges'])} edges: Spearman rho "
                   f"{v['validation']['spearman']:.3f}")
    if export:
        typer.echo(f"graph written to {export}")


@circuit_app.command("compare")
@friendly
def compare(study: Optional[str] = StudyOpt, as_json: bool = JsonOpt, workspace: Optional[Path] = WorkspaceOpt):
    """The tasks' circuits compared: node and edge IoU, shared nodes, each circuit on every task."""
    art, st = _open(study, workspace)
    c = st.results["compare"]
    if as_json:
        typer.echo(dumps_json({"artifact": art.name, "mode": st.results.get("mode", "default"),
                               "method": st.config["method"], **c}))
        return
    names = c["tasks"]
    typer.echo(f"{art.name}: {st.config['model']}; {_rules_line(st.results)}")
    sizes = {t: (len(st.results["tasks"][t]["circuit"]["nodes"]), len(st.results["tasks"][t]["edges_in_graph"]))
             for t in names}
    typer.echo("circuits: " + ", ".join(f"{t} {n} nodes / {e} edges" for t, (n, e) in sizes.items()))
    pairs = [(i, j) for i in range(len(names)) for j in range(i + 1, len(names))]
    for i, j in pairs:
        typer.echo(f"  {names[i]} vs {names[j]}: node IoU {c['node_iou'][i][j]:.2f}, edge IoU {c['edge_iou'][i][j]:.2f}")
    for title, key, fmt in [("node IoU", "node_iou", "{:>14.2f}"), ("edge IoU", "edge_iou", "{:>14.2f}"),
                            ("performance % (rows: circuit, columns: task)", "cross_performance", "{:>14.1f}")]:
        typer.echo(f"\n{title}\n{'':14}" + "".join(f"{n:>14}" for n in names))
        for n, row in zip(names, c[key]):
            typer.echo(f"{n:14}" + "".join(fmt.format(x) for x in row))
    typer.echo(f"\nshared by all tasks ({len(c['shared_nodes'])}): " + " ".join(c["shared_nodes"]))


@circuit_app.command("heads")
@friendly
def heads(model: str = ModelOpt,
          task: str = config_option(TaskConfig, "task", help="The sequence the OV scores use."),
          template: str = TemplateOpt, top: int = typer.Option(10, help="Heads to print."),
          k: int = config_option(ov_scores, "k", help="Top-k cut of the OV scores (5 in the paper)."),
          as_json: bool = JsonOpt):
    """Successor-head ranking (OV next / copy scores) and each head's attention to the members."""
    from sae_core.circuits.heads import attention_summary
    from sae_core.circuits.tasks import make_task
    from sae_core.models.loading import load_model

    m = load_model(model)
    ov = ov_scores(m, task, k=k)
    att = {a.head: a for a in attention_summary(m, make_task(m, TaskConfig(task=task, template=template)))}
    if as_json:
        typer.echo(dumps_json({"task": task, "ov": [s.to_json() for s in ov],
                               "attention": [a.to_json() for a in att.values()]}))
        return
    typer.echo(f"{task} on {model}: successor heads first (OV top-{k})")
    typer.echo(f"{'head':8}{'next':>7}{'copy':>7}{'margin':>8}{'last->member':>14}{'member->prev':>14}")
    for s in ov[:top]:
        a = att[s.head]
        typer.echo(f"{s.head:8}{s.next_score:>7.2f}{s.copy_score:>7.2f}{s.next_margin:>8.2f}"
                   f"{a.last_to_last_member:>14.2f}{a.member_to_previous:>14.2f}")


@circuit_app.command("lens")
@friendly
def lens(model: str = ModelOpt,
         task: str = config_option(TaskConfig, "task", help="The task whose clean prompts the lens reads."),
         template: str = TemplateOpt, prompts: int = config_option(TaskConfig, "n_prompts", "--prompts"),
         paper: bool = typer.Option(False, "--paper", help="The authors' reading: raw states through the "
                                    "unembedding, the last one normed twice (see circuits/logit_lens.py)."),
         as_json: bool = JsonOpt):
    """Logit lens: the answer's probability and rank after the embedding and after each block."""
    from sae_core.circuits.logit_lens import logit_lens
    from sae_core.circuits.tasks import make_task
    from sae_core.models.loading import load_model

    m = load_model(model)
    ts = make_task(m, TaskConfig(task=task, template=template, n_prompts=prompts))
    mode = "paper" if paper else "final_norm"
    rows = logit_lens(m, ts, mode)
    if as_json:
        typer.echo(dumps_json({"task": task, "model": model, "mode": mode, "n_prompts": len(ts),
                               "rows": [r.to_json() for r in rows]}))
        return
    typer.echo(f"{task} on {model}, {len(ts)} prompts, last position; "
               + ("the authors' reading (raw states; the last normed twice)" if paper
                  else "each state through the final norm and W_U"))
    typer.echo(f"{'state':10}{'p(answer)':>11}{'top-1':>8}{'mean rank':>11}  top 5 of the first prompt")
    for r in rows:
        typer.echo(f"{r.state:10}{r.p_answer:>11.3f}{100 * r.top1:>7.0f}%{r.mean_rank:>11.1f}  "
                   + " ".join(t.strip() or repr(t) for t in r.top5_first))
