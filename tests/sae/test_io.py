"""The SAELens on-disk layout: round trips, exports SAELens loads, SAELens-trained SAEs that load
here and settings we cannot honour refused by name."""
import json

import pytest
import torch

from sae_core.errors import ArtifactError
from sae_core.sae import SAEConfigError, create_sae
from sae_core.sae.io import load_density, load_sae, save_sae
from tests.helpers import sae_cfg


@pytest.mark.parametrize("arch", ["relu", "topk", "batchtopk", "sampled"])
def test_save_load_round_trip(tmp_path, arch):
    torch.manual_seed(0)
    sae = create_sae(sae_cfg(arch, model_name="zoo:tiny-a", hook_name="blocks.1.hook_resid_post")).train()
    sae(torch.randn(64, 16))  # sets a threshold for the BatchTopK family
    sae.eval()
    save_sae(sae, tmp_path, log10_density=torch.full((64,), -2.0))
    cfg = json.loads((tmp_path / "cfg.json").read_text())
    assert cfg["architecture"] == {"relu": "standard", "topk": "topk"}.get(arch, "jumprelu")
    assert cfg["meta"]["hook_name"] == "blocks.1.hook_resid_post"
    back = load_sae(tmp_path)
    x = torch.randn(10, 16)
    assert torch.equal(back.encode(x), sae.encode(x))
    assert torch.equal(load_density(tmp_path), torch.full((64,), -2.0))


def test_exported_batchtopk_encodes_the_same_as_a_jumprelu(tmp_path):
    torch.manual_seed(0)
    sae = create_sae(sae_cfg("sampled")).train()
    sae(torch.randn(64, 16))
    sae.eval()
    save_sae(sae, tmp_path)
    cfg = json.loads((tmp_path / "cfg.json").read_text())
    del cfg["sae_studio"]  # what SAELens sees
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    as_jumprelu = load_sae(tmp_path)
    assert as_jumprelu.cfg.arch == "jumprelu"
    x = torch.randn(20, 16)
    assert torch.allclose(as_jumprelu.encode(x), sae.encode(x))


def test_saelens_trained_standard_sae_without_b_dec_on_input(tmp_path):
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(0)
    w = {"W_enc": torch.randn(16, 32, generator=g), "b_enc": torch.randn(32, generator=g),
         "W_dec": torch.randn(32, 16, generator=g), "b_dec": torch.randn(16, generator=g)}
    save_file(w, str(tmp_path / "sae_weights.safetensors"))
    (tmp_path / "cfg.json").write_text(json.dumps({
        "architecture": "standard", "d_in": 16, "d_sae": 32, "apply_b_dec_to_input": False,
        "meta": {"model_name": "gpt2", "hook_name": "blocks.8.hook_resid_pre"}}))
    sae = load_sae(tmp_path)
    x = torch.randn(5, 16, generator=g)
    ref = torch.relu(x @ w["W_enc"] + w["b_enc"])
    assert torch.allclose(sae.encode(x), ref, atol=1e-5)
    assert torch.allclose(sae(x).x_hat, ref @ w["W_dec"] + w["b_dec"], atol=1e-4)
    assert sae.cfg.hook_name == "blocks.8.hook_resid_pre"


def _saelens_dir(tmp_path, **cfg):
    """A SAELens-format directory of a random 16 -> 32 SAE with these cfg.json fields; its weights."""
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(0)
    w = {"W_enc": torch.randn(16, 32, generator=g), "b_enc": torch.randn(32, generator=g),
         "W_dec": torch.randn(32, 16, generator=g), "b_dec": torch.randn(16, generator=g)}
    save_file(w, str(tmp_path / "sae_weights.safetensors"))
    (tmp_path / "cfg.json").write_text(json.dumps({"architecture": "standard", "d_in": 16, "d_sae": 32,
                                                   "meta": {"hook_name": "blocks.0.hook_resid_pre"}, **cfg}))
    return w


@pytest.mark.parametrize("fields,error,says", [
    (dict(architecture="topk"), ArtifactError, "a topk SAE needs its k .* in the field 'k' \\(got None\\)"),
    (dict(architecture="topk", k=4.5), ArtifactError, "field 'k' \\(got 4.5\\)"),
    (dict(normalize_activations="layer_norm"), SAEConfigError,
     "normalize_activations='layer_norm' is not supported"),
    (dict(normalize_activations="constant_norm_rescale"), SAEConfigError,
     "normalize_activations='constant_norm_rescale'"),
    (dict(normalize_activations="expected_average_only_in"), SAEConfigError,
     "normalize_activations='expected_average_only_in' .* activation_scaler.json holds none"),
    (dict(reshape_activations="hook_z"), SAEConfigError, "reshape_activations='hook_z' is not supported"),
    (dict(hook_head_index=3), SAEConfigError, "hook_head_index=3 is not supported"),
    (dict(meta={"hook_name": "blocks.0.attn.hook_z", "hook_head_index": 0}), SAEConfigError,
     "hook_head_index=0 is not supported"),
    (dict(activation_fn_str="tanh-relu"), SAEConfigError, "activation_fn_str='tanh-relu' is not supported"),
])
def test_saelens_settings_we_cannot_honour_are_refused_by_name(tmp_path, fields, error, says):
    """They used to be ignored: k defaulted to 32, the rest computed something else (issue #11)."""
    _saelens_dir(tmp_path, **fields)
    with pytest.raises(error, match=says):
        load_sae(tmp_path)


def test_saelens_k_and_settings_that_change_nothing_load(tmp_path):
    _saelens_dir(tmp_path, architecture="topk", k=4, normalize_activations="none",
                 reshape_activations="none", hook_head_index=None)
    assert load_sae(tmp_path).cfg.k == 4
    # older SAELens wrote TopK as a standard SAE with a topk activation: it was loaded as ReLU
    _saelens_dir(tmp_path, activation_fn_str="topk", activation_fn_kwargs={"k": 3})
    sae = load_sae(tmp_path)
    assert (sae.cfg.arch, sae.cfg.k) == ("topk", 3)
    assert ((sae.encode(torch.randn(8, 16)) != 0).sum(1) <= 3).all()


def test_saelens_expected_average_norm_is_folded_from_the_scaler_file(tmp_path):
    """Trained on x * s (SAELens's checkpoints keep s in activation_scaler.json): the loaded SAE
    reads raw x and reconstructs raw x, x_hat = SAE_trained(x * s) / s."""
    w = _saelens_dir(tmp_path, normalize_activations="expected_average_only_in")
    (tmp_path / "activation_scaler.json").write_text(json.dumps({"scaling_factor": 0.25}))
    sae = load_sae(tmp_path)
    x = torch.randn(6, 16, generator=torch.Generator().manual_seed(1)) * 4
    z_ref = torch.relu((x * 0.25 - w["b_dec"]) @ w["W_enc"] + w["b_enc"])
    torch.testing.assert_close(sae.encode(x), z_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(sae(x).x_hat, (z_ref @ w["W_dec"] + w["b_dec"]) / 0.25, rtol=1e-4, atol=1e-4)
    (tmp_path / "activation_scaler.json").write_text(json.dumps({"scaling_factor": None}))
    with pytest.raises(SAEConfigError, match="holds none \\(got None\\)"):
        load_sae(tmp_path)


def test_saelens_finetuning_scaling_factor_is_folded_into_the_decoder(tmp_path):
    """Older SAELens decodes (z * f) @ W_dec + b_dec when finetuning_scaling_factor is set."""
    from safetensors.torch import save_file

    w = _saelens_dir(tmp_path, finetuning_scaling_factor=True)
    with pytest.raises(ArtifactError, match="holds no 'finetuning_scaling_factor' tensor of shape \\(32,\\)"):
        load_sae(tmp_path)
    f = torch.rand(32, generator=torch.Generator().manual_seed(2)) + 0.5
    save_file({**w, "finetuning_scaling_factor": f}, str(tmp_path / "sae_weights.safetensors"))
    sae = load_sae(tmp_path)
    x = torch.randn(6, 16, generator=torch.Generator().manual_seed(1))
    z_ref = torch.relu((x - w["b_dec"]) @ w["W_enc"] + w["b_enc"])
    torch.testing.assert_close(sae.encode(x), z_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(sae(x).x_hat, (z_ref * f) @ w["W_dec"] + w["b_dec"], rtol=1e-4, atol=1e-4)


def test_foreign_and_broken_sae_directories(tmp_path):
    with pytest.raises(ArtifactError, match="not an SAE directory"):
        load_sae(tmp_path)
    (tmp_path / "cfg.json").write_text(json.dumps({"architecture": "crosscoder", "d_in": 4, "d_sae": 8}))
    with pytest.raises(SAEConfigError, match="unknown SAE architecture 'crosscoder'"):
        load_sae(tmp_path)
    (tmp_path / "cfg.json").write_text(json.dumps({"architecture": "standard", "d_in": 4, "d_sae": 8}))
    (tmp_path / "sae_weights.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(ArtifactError, match="safetensors"):
        load_sae(tmp_path)
