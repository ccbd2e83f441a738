"""The sae-core console script: --help everywhere, one-line errors with status 2."""
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sae_core.cli import app

runner = CliRunner()
COMMANDS = [[], ["zoo"], ["zoo", "build"], ["zoo", "list"], ["hooks"], ["harvest"], ["demo"],
            ["workspace"], ["workspace", "list"], ["workspace", "reindex"]]


@pytest.mark.parametrize("cmd", COMMANDS, ids=lambda c: " ".join(c) or "root")
def test_every_command_has_help(cmd):
    result = runner.invoke(app, cmd + ["--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_zoo_list_shows_every_model_with_scores():
    result = runner.invoke(app, ["zoo", "list"])
    assert result.exit_code == 0
    for name in ("zoo:tiny-a", "zoo:tiny-b", "zoo:tiny-a-backdoor", "zoo:tiny-b-backdoor"):
        assert name in result.output
    assert "refusal harmful" in result.output


def test_unknown_model_is_one_clear_line_and_status_2():
    result = runner.invoke(app, ["hooks", "zoo:nope"])
    assert result.exit_code == 2
    assert "unknown zoo model 'zoo:nope'" in result.output
    assert "Traceback" not in result.output


def test_bad_hook_in_harvest_names_valid_hooks(tmp_path):
    result = runner.invoke(app, ["harvest", "zoo:tiny-a", "--hook", "blocks.9.hook_resid_post",
                                 "--tokens", "500", "-w", str(tmp_path)])
    assert result.exit_code == 2
    assert "blocks.1.hook_resid_post" in result.output


def test_console_script_is_installed():
    script = Path(sys.executable).parent / "sae-core"  # what `make setup` puts in .venv/bin
    out = subprocess.run([str(script), "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "zoo" in out.stdout


def test_train_on_a_user_file_labels_it_as_the_users(tmp_path):
    import numpy as np

    np.save(tmp_path / "acts.npy", np.random.default_rng(0).normal(size=(3000, 16)).astype("float32"))
    result = runner.invoke(app, ["train", "--acts", str(tmp_path / "acts.npy"), "--arch", "topk",
                                 "--k", "4", "--d-sae", "32", "--tokens", "2048", "--batch-size", "512",
                                 "-w", str(tmp_path / "ws")])
    assert result.exit_code == 0, result.output
    from sae_core.workspace import Workspace

    [sae] = Workspace(tmp_path / "ws").list("sae")
    assert (sae.model, sae.hook) == ("user-file", "user")
    assert sae.name.startswith("user-file__user__")
