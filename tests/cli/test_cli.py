"""The sae-core console script: --help everywhere, one-line errors with status 2."""
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sae_core.cli import app

runner = CliRunner()  # every command's --help: tests/cli/test_options.py


def test_zoo_list_shows_every_model_with_scores():
    result = runner.invoke(app, ["zoo", "list"])
    assert result.exit_code == 0
    for name in ("zoo:tiny-a", "zoo:tiny-b", "zoo:tiny-a-backdoor", "zoo:tiny-b-backdoor"):
        assert name in result.output
    assert "refusal harmful" in result.output
    assert "random:llama-3.2-1b-tiny   random weights   layout of meta-llama/Llama-3.2-1B at toy width" in result.output
    assert "random:gemma-2-2b          random weights   architecture of google/gemma-2-2b" in result.output


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


@pytest.mark.parametrize("device,says", [("gpu0", "is not a torch device"), ("cuda:99", "CUDA device")])
def test_a_device_this_machine_lacks_is_one_clear_line_before_any_work(tmp_path, device, says):
    for cmd in (["train", "--tokens", "2048", "--batch-size", "512"], ["sweep", "--tokens", "2048"]):
        result = runner.invoke(app, cmd + ["--device", device, "-w", str(tmp_path / "ws")])
        assert result.exit_code == 2 and says in result.output and "Traceback" not in result.output
        assert device in result.output
    from sae_core.workspace import Workspace

    assert Workspace(tmp_path / "ws").list("activations") == []  # nothing was harvested first


@pytest.mark.parametrize("cmd,says", [
    (["train", "--arch", "sampled", "--l", "0.5"], "l=0.5 is not allowed: l must be a finite number >= 1"),
    (["sweep", "--l", "0.5,2"], "every l must be a finite number >= 1 (got [0.5])"),
    (["sweep", "--l", "1,two"], "give comma-separated numbers")])
def test_l_below_one_is_one_clear_line_before_any_work(tmp_path, cmd, says):
    """l < 1 used to train as l = 1 (issue #11); now it stops before the harvest."""
    result = runner.invoke(app, cmd + ["--tokens", "2048", "-w", str(tmp_path / "ws")])
    assert result.exit_code == 2 and says in result.output and "Traceback" not in result.output
    from sae_core.workspace import Workspace

    assert Workspace(tmp_path / "ws").list("activations") == []


def test_index_and_feature_commands(tmp_path):
    """`sae-core index` builds the index of an SAE directory; `feature` prints its JSON; parquet export."""
    import json

    import pyarrow.parquet as pq

    from sae_core.features.index import FeatureIndex
    from sae_core.sae.config import SAEConfig
    from sae_core.sae.io import save_sae
    from sae_core.sae.registry import create_sae

    sae_dir = tmp_path / "sae"
    save_sae(create_sae(SAEConfig(arch="topk", d_in=128, d_sae=32, k=4, model_name="zoo:tiny-a",
                                  hook_name="blocks.1.hook_resid_post")), sae_dir)
    ws = tmp_path / "ws"
    result = runner.invoke(app, ["index", "--sae", str(sae_dir), "--tokens", "1500", "--no-map",
                                 "--parquet", str(tmp_path / "f.parquet"), "-w", str(ws)])
    assert result.exit_code == 0, result.output
    [index_dir] = (ws / "feature_index").iterdir()
    index = FeatureIndex.open(index_dir)
    assert index.n_features == 32 and index.info["n_tokens"] >= 1400
    assert pq.read_table(tmp_path / "f.parquet").num_rows == 32
    shown = runner.invoke(app, ["feature", "3", "--index", str(index_dir)])
    assert shown.exit_code == 0 and json.loads(shown.output)["index"] == 3
    bad = runner.invoke(app, ["feature", "32", "--index", str(index_dir)])
    assert bad.exit_code == 2 and "out of range" in bad.output
    missing = runner.invoke(app, ["index", "--sae", "nope", "-w", str(ws)])
    assert missing.exit_code == 2 and "neither a directory nor an SAE" in missing.output
