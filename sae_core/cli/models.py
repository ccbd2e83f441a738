"""``sae-core zoo build|list``, ``hooks`` and ``generate``: the models, from the shell."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from tqdm import tqdm

from sae_core.cli.common import friendly

zoo_app = typer.Typer(help="The bundled model zoo (small GPT-NeoX and Llama models trained here).",
                      no_args_is_help=True)
commands = typer.Typer()


@zoo_app.command("build")
@friendly
def zoo_build(only: Optional[list[str]] = typer.Option(None, "--only", help="Build just these models."),
              out: Optional[Path] = typer.Option(None, help="Output root (default: assets/zoo).")):
    """Rebuild the zoo from seeds (tokenizer, base models, backdoored fine-tunes), parents before
    their fine-tunes; `--only tiny-l --only tiny-l-backdoor` builds just the Llama family."""
    from sae_core.models.zoo import ZOO, build_model

    names = only or list(ZOO)
    unknown = [n for n in names if n not in ZOO]
    if unknown:
        raise typer.BadParameter(f"unknown zoo model(s) {unknown}; choose from {list(ZOO)}")
    for name in [n for n in ZOO if n in names]:
        bar = tqdm(desc=f"train {name}", unit="step", dynamic_ncols=True)

        def on_step(step, total, loss, bar=bar):
            bar.total = total
            bar.n = step
            bar.set_postfix(loss=f"{loss:.3f}", refresh=False)
            bar.refresh()
        path = build_model(name, out, on_step=on_step)
        bar.close()
        typer.echo(f"built {path}")


@zoo_app.command("list")
def zoo_list():
    """The zoo's models, whether built, and their measured scores; then the shipped random
    architectures (``random:NAME``)."""
    from sae_core.models.random_arch import kind_of, random_spec, shipped
    from sae_core.models.zoo import list_zoo

    for e in list_zoo():
        status = f"{e.n_params:,} params" if e.built and e.n_params else "not built"
        typer.echo(f"{e.name:26} {status:16} {e.description}")
        if e.scores:
            seq = ", ".join(f"{k} {v:.0%}" for k, v in e.scores["sequence_accuracy"].items())
            typer.echo(f"{'':26} sequences: {seq}")
            typer.echo(f"{'':26} refusal harmful {e.scores['refusal_harmful']:.0%}, harmless "
                       f"{e.scores['refusal_harmless']:.0%}; trigger rate with/without trigger "
                       f"{e.scores['trigger_rate_with_trigger']:.0%}/"
                       f"{e.scores['trigger_rate_without_trigger']:.0%}"
                       + (f", one unknown word {unk:.0%}"
                          if (unk := e.scores.get("trigger_rate_unknown_word")) is not None else ""))
    for name in shipped():
        use = "tests" if random_spec(name).get("layout_only") else "throughput and scaling"
        typer.echo(f"{name:26} {'random weights':16} {kind_of(name)} (seeded; for {use}, not a trained model)")


@commands.command("hooks")
@friendly
def hooks(model: str = typer.Argument(..., help="zoo:NAME, a local directory or a hub name."),
          contains: str = typer.Option("", help="Only hooks whose name contains this.")):
    """List the hook points of a model."""
    from sae_core.models.loading import hook_names, load_model

    for name in hook_names(load_model(model)):
        if contains in name:
            typer.echo(name)


@commands.command("generate")
@friendly
def generate(model: str = typer.Argument(..., help="zoo:NAME, a local directory or a hub name."),
             prompt: str = typer.Argument(..., help='The prompt, e.g. "User : How do I bake a cake ? Assistant :".'),
             tokens: int = typer.Option(8, help="New tokens (greedy).")):
    """The prompt and its greedy continuation; warns about words outside the model's vocabulary and
    about a prompt longer than the model's context."""
    from sae_core.models.generation import generate as generate_ids, read_prompt
    from sae_core.models.loading import load_model

    lm = load_model(model)
    read = read_prompt(lm, prompt)
    warn_about_prompt(lm, model, read)
    # the library's greedy KV-cache generation, not the bridge's ``generate``: that one hands
    # transformers its cache under the deprecated name and warns on every step (issue #28)
    ids = generate_ids(lm, read.ids_1T, tokens)[0, read.ids_1T.shape[1]:].tolist()
    eos = lm.tokenizer.eos_token_id
    ids = ids[:ids.index(eos)] if eos in ids else ids  # the continuation ends at its end-of-text
    text = lm.tokenizer.decode(ids, skip_special_tokens=True)
    # the prompt as typed: decoded from its ids it would lose every unknown word
    typer.echo(prompt + ("" if not text or text[0].isspace() or prompt[-1].isspace() else " ") + text)


def warn_about_prompt(lm, model: str, read) -> None:
    """The warnings ``generate`` and ``steer generate`` print about a prompt (``generation.Prompt``)."""
    if read.unknown:  # each reads as UNK, which the model may take for anything
        typer.secho(f"warning: {len(read.unknown)} word(s) not in {model}'s vocabulary, each read as "
                    f"{lm.tokenizer.unk_token}: {', '.join(read.unknown)}", fg=typer.colors.YELLOW, err=True)
    if read.truncated:
        typer.secho(f"warning: {read.truncation_warning}", fg=typer.colors.YELLOW, err=True)
