"""What ``--help`` shows (issue #28): no value type after a flag (``--help <bool>``), the defaults
that help texts state in brackets, and a summary that names every command."""
import re

import pytest
import typer
from typer.testing import CliRunner

from sae_core.cli import app

runner = CliRunner()
ROOT = typer.main.get_command(app)
ENV = {"COLUMNS": "200", "TERM": "dumb", "NO_COLOR": "1"}


def _walk(group, path=()):
    yield path
    for name, sub in getattr(group, "commands", {}).items():
        yield from _walk(sub, path + (name,))


def _help(path) -> str:
    result = runner.invoke(app, list(path) + ["--help"], env=ENV)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("path", list(_walk(ROOT)), ids=lambda p: " ".join(p) or "root")
def test_no_flag_shows_a_value_type(path):
    out = _help(path)
    assert "<bool>" not in out  # a flag takes no value: "--help <bool>" read as if it took one
    assert re.search(r"^\s*--help\s+Show this message and exit\.", out, re.M), out


def test_the_summary_names_every_command():
    summary = " ".join(_help(()).split("Options:")[0].split())
    assert "COMMAND [ARGS]... sae-studio from the shell:" in summary
    for name in ROOT.commands:
        assert re.search(rf"\b{name}", summary), f"the summary of `sae-core --help` does not name {name}"


@pytest.mark.parametrize("command", ["train", "sweep"])
def test_the_implicit_model_and_hook_are_shown_as_defaults(command):
    out = " ".join(_help((command,)).split())
    assert ("--model <str> Model (zoo:NAME, directory or hub name) the activations come from "
            "[default: zoo:tiny-a; with --acts, a label].") in out
    assert "--hook <str> Hook point the SAE reads [default: blocks.1.hook_resid_post; with --acts, a label]." in out
    assert "Train on this .npy/.safetensors [tokens, d] file instead." in out
