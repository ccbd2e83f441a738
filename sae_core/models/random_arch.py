"""Hub architectures with seeded random weights: ``random:pythia-160m``, ``random:gpt2``, ...

Throughput and scaling have to be measured at real widths (d_model 768 and more), and no hub
checkpoint can be downloaded here. So each name is a shipped directory under
``assets/random/<name>/`` holding the hub model's own ``config.json`` (as published) and
``random.json`` (the seed, which hub model it mirrors, a note). ``load_model`` boots it through
the same ``TransformerBridge.boot_transformers`` call as every other model, with
``load_weights=False`` (``from_config``), under a seeded RNG: the same name gives the same weights
on every machine and device.

Token ids come from the zoo's word-level tokenizer (its 512 ids), so BOS, EOS and pad are set to
the zoo's ids; the rest of the embedding is never read. Names ending in ``-tiny`` (``random.json``
says ``layout_only``) keep a hub model's layout (its norms, MLP, attention grouping, residual) at
d_model 128 and 2 layers, with the zoo's 512-id vocabulary: for tests that every analysis runs on
every family, not for timing. These models are labelled as random
wherever a model name is shown (``describe``): their activations have no learned structure, so a
feature found on them means nothing; they exist to time and scale the pipeline.
"""
from __future__ import annotations

import os
from pathlib import Path

from sae_core.errors import ModelNotAvailableError
from sae_core.io import read_json

RANDOM_PREFIX = "random:"
_REPO_ROOT = Path(__file__).resolve().parents[2]


def random_dir() -> Path:
    """Where the shipped configs live: ``$SAE_STUDIO_RANDOM_CONFIGS`` or ``assets/random``."""
    return Path(os.environ.get("SAE_STUDIO_RANDOM_CONFIGS", _REPO_ROOT / "assets" / "random"))


def is_random(name: str) -> bool:
    return name.startswith(RANDOM_PREFIX)


def shipped() -> list[str]:
    """The ``random:`` names this checkout ships, sorted."""
    root = random_dir()
    if not root.is_dir():
        return []
    return sorted(RANDOM_PREFIX + p.name for p in root.iterdir()
                  if (p / "config.json").exists() and (p / "random.json").exists())


def resolve_random(name: str) -> Path:
    """The directory of ``random:NAME``; ``ModelNotAvailableError`` lists the shipped ones."""
    path = random_dir() / name[len(RANDOM_PREFIX):]
    if not (path / "config.json").exists() or not (path / "random.json").exists():
        raise ModelNotAvailableError(
            f"{name!r} is not a shipped random architecture; choose one of {', '.join(shipped()) or '(none)'} "
            f"or add a directory with the hub config.json and a random.json (seed) under {random_dir()}")
    return path


def random_spec(name: str) -> dict:
    """``random.json`` of ``random:NAME`` (seed, ``architecture_of``, tokenizer, note)."""
    return read_json(resolve_random(name) / "random.json")


def describe(name: str) -> str:
    """How a model name is shown: random architectures say so."""
    if not is_random(name):
        return name
    return f"{name} (random weights, {kind_of(name)}; not a trained model)"


def kind_of(name: str) -> str:
    """"architecture of HUB" (its real shape) or "layout of HUB at toy width" (``layout_only``)."""
    spec = random_spec(name)
    return (f"layout of {spec['architecture_of']} at toy width" if spec.get("layout_only")
            else f"architecture of {spec['architecture_of']}")


def label(name: str | None) -> str | None:
    """A model name as a table or a picker shows it: ``random:`` names get "(random weights)"."""
    return f"{name} (random weights)" if name and is_random(name) else name


def boot_random(name: str, device: str, dtype):
    """The bridge of ``random:NAME``: ``boot_transformers(dir, load_weights=False)`` under
    ``torch.manual_seed(seed)`` (the caller's RNG state is restored), with the zoo tokenizer."""
    import torch
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import AutoTokenizer

    from sae_core.models.zoo import resolve_zoo_name

    path = resolve_random(name)
    spec = read_json(path / "random.json")
    tok = AutoTokenizer.from_pretrained(str(resolve_zoo_name(spec["tokenizer"])))
    ids = {"bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(spec["seed"]))
        model = TransformerBridge.boot_transformers(str(path), hf_config_overrides=ids, device=device,
                                                    dtype=dtype, tokenizer=tok, load_weights=False)
    model.cfg.default_prepend_bos = True  # the zoo tokenizer's convention (loading.py)
    if next(model.parameters()).dtype != dtype:  # built from the config in the default dtype
        model.to(dtype)
    return model
