"""K and K·l against d_sae: refused with the values named, before any harvest (issue #28)."""
import pytest
from typer.testing import CliRunner

from sae_core.cli import app
from sae_core.sae.config import SAEConfigError
from sae_core.training.sweep import SweepConfig
from sae_core.workspace import Workspace

runner = CliRunner()
FULL_POOL = ("K·l = 16·64 = 1024 exceeds d_sae = 512: the pool would hold every latent and the run "
             "would be plain BatchTopK; lower l or raise d_sae")


def test_sweep_config_refuses_a_pool_of_every_latent():
    with pytest.raises(SAEConfigError) as e:
        SweepConfig(k=16, d_sae=512, ls=(1.0, 64.0, 4.0))  # the largest l names the problem
    assert str(e.value) == FULL_POOL
    with pytest.raises(SAEConfigError, match="k=600 must be between 1 and d_sae=512"):
        SweepConfig(k=600, d_sae=512, ls=(1.0,))  # failed only after the harvest before
    # K·l = d_sae is the widest pool allowed (the quick demo's l=16 at K=4, d_sae=64)
    assert SweepConfig(k=4, d_sae=64, ls=(1.0, 16.0)).ls == (1.0, 16.0)


@pytest.mark.parametrize("cmd,says", [
    (["sweep", "--k", "16", "--d-sae", "512", "--l", "1,64"], FULL_POOL),
    (["train", "--arch", "sampled", "--k", "16", "--l", "64", "--d-sae", "512"], FULL_POOL),
    (["sweep", "--k", "600", "--d-sae", "512", "--l", "1"], "k=600 must be between 1 and d_sae=512"),
    (["train", "--arch", "sampled", "--k", "600", "--d-sae", "512"], "k=600 must be between 1 and d_sae=512")])
def test_k_and_pool_wider_than_the_sae_are_one_line_before_any_work(tmp_path, cmd, says):
    result = runner.invoke(app, cmd + ["--tokens", "2048", "--harvest-tokens", "500", "-w", str(tmp_path / "ws")],
                           terminal_width=300)
    assert result.exit_code == 2, result.output
    assert f"error: {says}" in result.output and "Traceback" not in result.output
    assert Workspace(tmp_path / "ws").list("activations") == []  # nothing was harvested first
