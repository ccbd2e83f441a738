"""The steering study's Method table: each step as arXiv 2503.04429 (and, for refusal, Arditi et
al. 2024) computes it, and what the study in hand did, read from its results (issue #29). The page's
Method panel and README show it; ``study.REVISION`` < 5 studies have no such record."""
from __future__ import annotations

from sae_core.steering.study import PAPER_LR


def method_rows(results: dict) -> list[dict[str, str]]:
    """Rows ``{step, paper, this study}`` for a revision-5 study's ``results``."""
    lay, sizes, tr = results["layers"], results["prompts"], results["mapper_training"]
    ae, affine = tr["autoencoder"], tr["affine"]
    lr_note = ("the paper's" if ae["lr"] == PAPER_LR else
               f"not the paper's {PAPER_LR:g}: in {ae['epochs']} epochs 1e-4 leaves the zoo mappers further from "
               "their target (bench/steering_mapper_lr.py); --paper trains at 1e-4")
    return [
        {"step": "layers",
         "paper": "the steerable layers are found first (a sweep over layers), the mappers trained between them",
         "this study": "; ".join(f"{fam} at {h['target']} from {h['source']} ({h['why']})"
                                 for fam, h in lay.items())},
        {"step": "prompts",
         "paper": "-",
         "this study": "three disjoint sets (tested): build " + _sizes(sizes["build"]) + "; select "
                       + _sizes(sizes["select"]) + "; report " + _sizes(sizes["report"])},
        {"step": "mappers",
         "paper": f"autoencoder (hidden sqrt(d_src d_tgt)) against an affine baseline; AdamW, lr {PAPER_LR:g} "
                  "(the rate this code cites as the paper's)",
         "this study": f"autoencoder: {ae['fit']}, lr {ae['lr']:g} ({lr_note}), {ae['epochs']} epochs; affine: "
                       + (affine["fit"] + " (the minimum of the affine MSE)" if affine["lr"] is None
                          else f"{affine['fit']}, lr {affine['lr']:g}, {affine['epochs']} epochs")
                       + "; the affine transfer measured at each task's alpha"},
        {"step": "refusal bypass",
         "paper": "Arditi et al.: the direction projected out at every layer and every position",
         "this study": "both: at every position of the vector's own layer, and at every layer "
                       "(each block's input and the last block's output)"},
        {"step": "alpha and layer",
         "paper": "-",
         "this study": "on selection prompts: the smallest alpha whose 95% Wilson bound reaches the target; "
                       "the last layer below 80% depth with coherence KL <= 0.1; every rate shown on report prompts"},
        {"step": "mode", "paper": "-", "this study": results["mode"]},
    ]


def _sizes(by_kind: dict[str, int]) -> str:
    return ", ".join(f"{k} {n}" for k, n in by_kind.items())


def fitted_by(training: dict) -> str:
    """A mapper's ``mapper_training`` entry in a few words ("AdamW, lr 0.001, 10 epochs")."""
    if training.get("lr") is None:
        return training["fit"]
    return f"{training['fit']}, lr {training['lr']:g}, {training['epochs']} epochs"
