"""``sae-core``: the library's long jobs from the shell, with progress bars.

Every command calls the same function the app calls; errors the library raises on purpose
(``SAECoreError``) are printed as one line and exit with status 2, never as a traceback. One
module per command group; this one puts them together, in the order ``--help`` lists them.
"""
from __future__ import annotations

import logging
import os

import typer

from sae_core.cli import (circuits, evaluation, features, models, steer_gate, steer_generate, steering, training,
                          universality, workspace)

os.environ.setdefault("HF_HUB_OFFLINE", "1")

SUMMARY = ("sae-studio from the shell: the bundled model zoo, a model's hooks, generate text; harvest "
           "activations, train SAEs, sweep Sampled-SAE's l; evaluate SAEs downstream (probing, absorption, the lottery); index features, print one feature; steer models "
           "(vectors, their transfer, safety switches, SAE features); universality of two models' features, steer-pair "
           "(both steered through a matched pair); circuit "
           "discovery; the app's demo and its workspace.")
# Plain click help, not Rich's: under Rich, typer shows a "<bool>" type after every flag (--help
# included) and reads "[...]" in a help text as markup, so "[default: ...]" vanished from it.
app = typer.Typer(help=SUMMARY, no_args_is_help=True, add_completion=False, rich_markup_mode=None)
for group in (models, training, evaluation, features, universality, workspace):  # top-level commands
    app.add_typer(group.commands)
app.add_typer(steering.steer_app, name="steer")  # with steer_generate's and steer_gate's commands
app.add_typer(models.zoo_app, name="zoo")
app.add_typer(workspace.ws_app, name="workspace")
app.add_typer(circuits.circuit_app, name="circuit")


def main() -> None:  # pragma: no cover - console entry
    logging.basicConfig(level=logging.WARNING)
    app()
