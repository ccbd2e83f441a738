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
``pre = (x - b_dec) @ W_enc + b_enc`` computes the same thing. Settings that change what the SAE
computes are honoured or refused, never ignored (issue #11): a TopK SAE must name its ``k``;
``normalize_activations = "expected_average_only_in"`` (trained on ``x * s``) is folded into the
weights when the directory's ``activation_scaler.json`` holds ``s``, as SAELens's trainer folds it
before its final save; ``finetuning_scaling_factor = true`` (older SAELens: codes multiplied by a
learned per-latent factor before decoding) is folded into the decoder rows (the codes the browser
shows are then SAELens's pre-factor codes, its ``encode`` output); per-token normalisation,
``reshape_activations`` (hook_z) and ``hook_head_index`` (one attention head) are refused, since
the app harvests and splices whole hook activations.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch

from sae_core.errors import ArtifactError
from sae_core.io import atomic_write_json, load_tensors, read_json, save_tensors
from sae_core.sae.base import SAE
from sae_core.sae.config import K_ARCHS, SAEConfig, SAEConfigError
from sae_core.sae.registry import create_sae

CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae_weights.safetensors"
SPARSITY_FILE = "sparsity.safetensors"
SCALER_FILE = "activation_scaler.json"  # SAELens's trainer: {"scaling_factor": s or null}

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
    scale = _norm_scaling_factor(raw, path)
    weights = load_tensors(path / WEIGHTS_FILE)
    sae = create_sae(cfg)
    _check_shapes(weights, cfg, path)
    if not raw.get("apply_b_dec_to_input", True):
        weights["b_enc"] = weights["b_enc"] + weights["b_dec"] @ weights["W_enc"]
    if raw.get("finetuning_scaling_factor"):  # x_hat = (z * f) @ W_dec + b_dec
        f = weights.get("finetuning_scaling_factor")
        if f is None or tuple(f.shape) != (cfg.d_sae,):
            raise ArtifactError(
                f"{path / CFG_FILE} sets finetuning_scaling_factor, so the decoder multiplies each "
                f"code by a learned factor, but {WEIGHTS_FILE} holds no 'finetuning_scaling_factor' "
                f"tensor of shape ({cfg.d_sae},) (got {None if f is None else tuple(f.shape)})")
        weights["W_dec"] = weights["W_dec"] * f[:, None]
    if scale is not None:  # trained on x * s: encode x * s, and divide the reconstruction by s
        weights.update(W_enc=weights["W_enc"] * scale, W_dec=weights["W_dec"] / scale,
                       b_dec=weights["b_dec"] / scale)
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
    where = path / CFG_FILE
    meta = raw.get("meta") or raw.get("metadata") or raw
    fn = raw.get("activation_fn_str")
    if fn not in (None, "relu", "topk"):  # older SAELens: e.g. tanh-relu under "standard"
        raise SAEConfigError(f"{where}: activation_fn_str={fn!r} is not supported (only relu and "
                             "topk); this SAE cannot be loaded here")
    arch = raw.get("architecture") or "standard"
    if fn == "topk" and arch == "standard":  # older SAELens wrote TopK as a standard SAE + topk
        arch = "topk"
    if arch not in _IMPORT_ARCH:
        raise SAEConfigError(
            f"{where}: unknown SAE architecture {arch!r}; supported: {', '.join(sorted(_IMPORT_ARCH))}")
    reshape = raw.get("reshape_activations")
    if reshape not in (None, "none"):
        raise SAEConfigError(f"{where}: reshape_activations={reshape!r} is not supported: this SAE "
                             "reads its hook reshaped (hook_z: heads flattened), and only SAEs of "
                             "hook activations as they are (reshape_activations 'none') load here")
    head = raw.get("hook_head_index")
    if head is None:  # SAELens 6 keeps it in meta
        head = meta.get("hook_head_index")
    if head is not None:
        raise SAEConfigError(f"{where}: hook_head_index={head!r} is not supported: this SAE reads "
                             "one attention head of its hook, and sae-studio feeds SAEs the whole "
                             "hook activation")
    k = raw.get("k") if raw.get("k") is not None else (raw.get("activation_fn_kwargs") or {}).get("k")
    has_k = _IMPORT_ARCH[arch] in K_ARCHS
    if has_k and not (isinstance(k, (int, float)) and float(k).is_integer()):
        # k used to default to 32 here: a TopK SAE then ran with a k it was never trained with
        raise ArtifactError(f"{where}: a {arch} SAE needs its k (latents kept per token) as a whole "
                            f"number in the field 'k' (got {k!r}); add it to {CFG_FILE}")
    try:
        return SAEConfig(arch=_IMPORT_ARCH[arch], d_in=int(raw["d_in"]), d_sae=int(raw["d_sae"]),
                         **({"k": int(k)} if has_k else {}), model_name=meta.get("model_name") or "",
                         hook_name=meta.get("hook_name") or "", dtype="float32",
                         extra={"imported_from": "SAELens", "architecture": arch})
    except KeyError as e:
        raise ArtifactError(f"{where} lacks the field {e}; is this an SAE config?") from None


def _norm_scaling_factor(raw: dict, path: Path) -> float | None:
    """The input scale ``s`` to fold into the weights (None: none), from ``normalize_activations``."""
    norm = raw.get("normalize_activations")
    if norm in (None, "none"):
        return None
    where = path / CFG_FILE
    if norm != "expected_average_only_in":  # per-token rescaling at run time, which we do not do
        raise SAEConfigError(f"{where}: normalize_activations={norm!r} is not supported (only "
                             "'none', and 'expected_average_only_in' with its scaling factor)")
    scaler = path / SCALER_FILE
    s = read_json(scaler).get("scaling_factor") if scaler.exists() else None
    if not isinstance(s, (int, float)) or not math.isfinite(s) or s <= 0:
        # SAELens itself only warns here and runs the SAE on unscaled inputs: every magnitude is
        # then off by the unknown factor
        raise SAEConfigError(
            f"{where}: normalize_activations='expected_average_only_in' means the SAE was trained on "
            f"inputs scaled by a factor, but {scaler.name} holds none (got {s!r}); put "
            f'{{"scaling_factor": s}} in {scaler}, or fold s into the weights and set '
            "normalize_activations to 'none'")
    return float(s)


def _check_shapes(weights: dict, cfg: SAEConfig, path: Path) -> None:
    expected = {"W_enc": (cfg.d_in, cfg.d_sae), "b_enc": (cfg.d_sae,),
                "W_dec": (cfg.d_sae, cfg.d_in), "b_dec": (cfg.d_in,)}
    for name, shape in expected.items():
        if name not in weights:
            raise ArtifactError(f"{path / WEIGHTS_FILE} has no tensor {name!r} (has: {sorted(weights)})")
        if tuple(weights[name].shape) != shape:
            raise ArtifactError(f"{path / WEIGHTS_FILE}: {name} has shape {tuple(weights[name].shape)}"
                                f" but cfg.json says {shape}")
