"""The Method table of a circuits study: each step as the authors computed it (arXiv 2311.04131,
apartresearch/seqcont_circuits) and as this study did, read from the study's ``results["rules"]``
(revision 2), so the table says what made the numbers on the page."""
from __future__ import annotations

PAPER = "paper (authors' code)"
_EDGE_NAMES = {"eap": "EAP (attribution patching)", "eap-ig": "EAP-IG (integrated gradients)",
               "patching": "exact path patching, one edge at a time"}


def method_rows(results: dict) -> list[dict[str, str]]:
    """Rows ``{step, paper (authors' code), this study}`` for a revision-2 study's ``results``."""
    r = results["rules"]
    return [
        {"step": "mode", PAPER: "-", "this study": r["mode"]},
        {"step": "prompts",
         PAPER: "three verb templates mixed in thirds ('{word} done in', '{word} lost in', '{name} born in'; "
                "data/{task}/*.pkl, generate_data.py); members 1-12 starting at the first eight, nothing wraps; "
                "corrupted members random 1-12 with r4 - 1 != r3 (generate_prompts_list_corr); no BOS",
         "this study": _prompts(r)},
        {"step": "nodes",
         PAPER: "iterative mean ablation over the corrupted prompts (run_node_ablation.py), a component dropped "
                "while the circuit keeps more than 100 - T % of the model's LD; MLP means taken with the "
                "circuit's other heads ablated (add_ablation_hook_MLP_head)",
         "this study": f"T = {r['threshold']:g} points from the {r['reference']} model; means over the "
                       f"{r['means_from']} prompts of the unablated model (the authors' MLP means: not reproduced)"},
        {"step": "edges",
         PAPER: "path patching inside the mean-ablated circuit: a sender's corrupted output reaches one receiver's "
                "q, k or v (or an MLP, or the logits); kept when LD / LD(model) < 0.8 (edge_pruning_fns.py, "
                "run_edge_ablation.py)",
         "this study": _edges(r)},
        {"step": "OV scores",
         PAPER: "layer-0 residual of the task's prompts at the member positions, with b_V; every (prompt, member) "
                "counted; for months the next month's ordinal (OV_score_fns.py: get_next_scores, get_copy_scores)",
         "this study": ("the authors' reading (heads.ov_scores_paper), the next month itself, not its ordinal"
                        if r["ov"] == "paper" else
                        "each member alone after BOS, without b_V, each of the first 12 once (heads.ov_scores); "
                        "--paper reads them the authors' way")},
        {"step": "logit lens",
         PAPER: "transformers' hidden states through the unembedding without a norm, the last one normed twice "
                "(logit_lens_fns.py)",
         "this study": "both readings: the usual one (through the final norm) and the authors' (the chart's radio)"},
    ]


def _prompts(r: dict) -> str:
    if r["prompts"] == "paper":
        verbs = ", ".join(r["verbs"]) or f"one template ({r['template']}): the verb mix needs a sentence template"
        return (f"the authors' rules (TaskConfig.paper): verbs {verbs}; members 1-12, no wrap; r4 - 1 != r3. "
                "Prompts start with BOS, and each is filtered alone (theirs: number words and months in whole "
                "groups of eight starts that pass on both)")
    return (f"one template ({r['template']}) per set; members from each sequence's start (digits and number words "
            "from 0 / zero), months wrap; corrupted members random from the first 12, no constraint")


def _edges(r: dict) -> str:
    if r["edges"] == "paper":
        return (f"the authors' computation (edge_pruning.paper_edges), kept under {r['ratio_threshold']:g}; their "
                "code's quirks reproduced: " + "; ".join(r["quirks"]))
    return (f"{_EDGE_NAMES[r['edges']]} on the full model, {r['baseline']} baseline; kept: |score| >= "
            f"{100 * r['edge_threshold']:g}% of LD between the circuit's components, pruned to paths from input "
            "to logits (this tool's rule, not the authors'); --method paper is theirs")
