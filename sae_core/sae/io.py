"""SAEs on disk in the SAELens layout: ``cfg.json`` + ``sae_weights.safetensors`` (+ ``sparsity.safetensors``).

Writing: our own config travels under ``cfg["sae_studio"]`` so a round trip is exact, and the
SAELens fields (``architecture``, ``d_in``, ``d_sae``, ``apply_b_dec_to_input``, ``meta``) let
SAELens load the directory: ReLU exports as ``standard``, TopK as ``topk``; BatchTopK and
Sampled-SAE export as ``jumprelu`` with per-latent thresholds that reproduce their inference
rule exactly (BatchTopK: theta everywhere; Sampled-SAE: theta inside its inference pool, +inf
outside).

Reading: our own directories, and SAELens-trained ones (``standard``, ``topk``, ``jumprelu``,
``batchtopk``; 6.x ``meta`` or older flat configs). An SAE saved with
``apply_b_dec_to_input = false`` has its encoder bias adjusted so that our
``pre = (x - b_dec) @ W_enc + b_enc`` computes the same thing.
"""
from __future__ import annotations

from pathlib import Path

import torch

from sae_core.errors import ArtifactError
from sae_core.io import atomic_write_json, load_tensors, read_json, save_tensors
from sae_core.sae.base import SAE
from sae_core.sae.config import SAEConfig, SAEConfigError
from sae_core.sae.registry import create_sae

CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae_weights.safetensors"
SPARSITY_FILE = "sparsity.safetensors"

_EXPORT_ARCH = {"relu": "standard", "topk": "topk", "batchtopk": "jumprelu", "sampled": "jumprelu",
                "jumprelu": "jumprelu"}
_IMPORT_ARCH = {"standard": "relu", "relu": "relu", "topk": "topk", "jumprelu": "jumprelu",
                "batchtopk": "batchtopk"}


def save_sae(sae: SAE, out_dir: Path, log10_density: torch.Tensor | None = None) -> Path:
    """Write ``sae`` to ``out_dir`` in the SAELens layout (files written atomically)."""
    out_dir = Path(out_dir)
    cfg = sae.cfg
    state = {k: v.detach().cpu() for k, v in sae.state_dict().items()
             if k in ("W_enc", "b_enc", "W_dec", "b_dec")}
    if cfg.arch == "batchtopk":
        state["threshold"] = sae.threshold.detach().cpu().expand(cfg.d_sae).clone()
    elif cfg.arch == "sampled":
        state["threshold"] = sae.inference_thresholds().detach().cpu()
    elif cfg.arch == "jumprelu":
        state["threshold"] = sae.threshold.detach().cpu().clone()
    save_tensors(out_dir / WEIGHTS_FILE, state)
    if log10_density is not None:
        save_tensors(out_dir / SPARSITY_FILE, {"sparsity": log10_density.detach().cpu().float()})
    saelens = {
        "architecture": _EXPORT_ARCH[cfg.arch], "d_in": cfg.d_in, "d_sae": cfg.d_sae,
        "dtype": cfg.dtype, "device": "cpu", "apply_b_dec_to_input": True,
        "normalize_activations": "none", "reshape_activations": "none",
        "meta": {"model_name": cfg.model_name, "hook_name": cfg.hook_name, "prepend_bos": True},
        "sae_studio": cfg.to_json(),
    }
    if cfg.arch == "topk":
        saelens["k"] = cfg.k
    atomic_write_json(out_dir / CFG_FILE, saelens)
    return out_dir


def load_sae(path: Path, device: str = "cpu") -> SAE:
    """Load an SAE directory (ours or SAELens-trained); clear errors for foreign or broken files."""
    path = Path(path)
    if not (path / CFG_FILE).exists():
        raise ArtifactError(f"{path} holds no {CFG_FILE}: not an SAE directory (SAELens layout: "
                            f"{CFG_FILE} + {WEIGHTS_FILE})")
    raw = read_json(path / CFG_FILE)
    cfg = _config_from_json(raw, path)
    weights = load_tensors(path / WEIGHTS_FILE)
    sae = create_sae(cfg)
    _check_shapes(weights, cfg, path)
    if not raw.get("apply_b_dec_to_input", True):
        weights["b_enc"] = weights["b_enc"] + weights["b_dec"] @ weights["W_enc"]
    with torch.no_grad():
        for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
            getattr(sae, name).copy_(weights[name])
        if cfg.arch in ("batchtopk", "sampled"):
            sae.threshold.copy_(weights["threshold"].min() if "threshold" in weights else 0.0)
            sae.threshold_initialized.fill_("threshold" in weights)
        if cfg.arch == "sampled" and "threshold" in weights:
            # The inference pool is where the exported threshold is finite (see save_sae).
            sae.pool_freq.copy_(torch.isfinite(weights["threshold"]).to(sae.pool_freq.dtype))
        elif cfg.arch == "jumprelu":
            sae.threshold.copy_(weights["threshold"])
    return sae.to(device).eval()


def load_density(path: Path) -> torch.Tensor | None:
    """log10 feature density ``[d_sae]`` if the directory has a sparsity file."""
    f = Path(path) / SPARSITY_FILE
    return load_tensors(f)["sparsity"] if f.exists() else None


def _config_from_json(raw: dict, path: Path) -> SAEConfig:
    if "sae_studio" in raw:
        return SAEConfig.from_json(raw["sae_studio"])
    arch = raw.get("architecture") or ("topk" if raw.get("activation_fn_str") == "topk" else "standard")
    if arch not in _IMPORT_ARCH:
        raise SAEConfigError(
            f"{path / CFG_FILE}: unknown SAE architecture {arch!r}; supported: "
            f"{', '.join(sorted(_IMPORT_ARCH))}")
    meta = raw.get("meta") or raw.get("metadata") or raw
    k = raw.get("k") or (raw.get("activation_fn_kwargs") or {}).get("k") or 32
    try:
        return SAEConfig(arch=_IMPORT_ARCH[arch], d_in=int(raw["d_in"]), d_sae=int(raw["d_sae"]),
                         k=int(k), model_name=meta.get("model_name") or "",
                         hook_name=meta.get("hook_name") or "", dtype="float32",
                         extra={"imported_from": "SAELens", "architecture": arch})
    except KeyError as e:
        raise ArtifactError(f"{path / CFG_FILE} lacks the field {e}; is this an SAE config?") from None


def _check_shapes(weights: dict, cfg: SAEConfig, path: Path) -> None:
    expected = {"W_enc": (cfg.d_in, cfg.d_sae), "b_enc": (cfg.d_sae,),
                "W_dec": (cfg.d_sae, cfg.d_in), "b_dec": (cfg.d_in,)}
    for name, shape in expected.items():
        if name not in weights:
            raise ArtifactError(f"{path / WEIGHTS_FILE} has no tensor {name!r} (has: {sorted(weights)})")
        if tuple(weights[name].shape) != shape:
            raise ArtifactError(f"{path / WEIGHTS_FILE}: {name} has shape {tuple(weights[name].shape)}"
                                f" but cfg.json says {shape}")
