"""A feature index on disk, and reading one feature from it in milliseconds.

Files in the index directory:

- ``index.json``: the build config, the SAE's fingerprint, model, hook, token counts, versions.
- ``features.safetensors``: every per-feature array, first axis = feature (``density``,
  ``count``, ``max``, ``hist.counts``/``hist.width``, ``top.*`` and ``sample.*`` examples with
  their windows, ``logits.*``, ``nearest.*``, ``map.xy``).
- ``corpus.safetensors``: the token ids ``[sequences, context]`` (-1 = padding) and the search
  tables: "fires on" as CSR (per token, the features whose top examples peak on it) and
  "promotes" (per token, the features that raise its logit most).
- ``vocab.json``: the token strings, so reading needs no model; ``index.json`` adds, for
  byte-level tokenizers, the raw bytes of the ids that are only part of a character and whether
  tokens carry their own spaces (``models.tokens``), so split characters are shown whole.

Why fixed-shape arrays in safetensors rather than a database: every question the browser asks is
"row i of these arrays" (or "row t of a search table"), which a memory-mapped file answers with one
offset computation and a small read, in microseconds, with no query engine, no schema migration
and nothing unpickled; the files are what the rest of the project already uses for tensors. At 16k
features the whole index is tens of MB. For tools that want tables, ``export.py`` writes the
whole index to parquet (DuckDB and pandas read it directly).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path

import torch

from sae_core.errors import ArtifactError
from sae_core.features.build import StreamState
from sae_core.features.config import FeatureIndexError, IndexConfig
from sae_core.features.weights import LogitEffects
from sae_core.io import atomic_write_json, read_json, save_tensors
from sae_core.models.tokens import assemble
from sae_core.models.unembed import RAW

INDEX_FILE, FEATURES_FILE, CORPUS_FILE, VOCAB_FILE = (
    "index.json", "features.safetensors", "corpus.safetensors", "vocab.json")
FORMAT_VERSION = 1


# --- writing -------------------------------------------------------------------------------------

def fires_on_table(tokens_NT: torch.Tensor, top_gidx_SK: torch.Tensor, top_value_SK: torch.Tensor,
                   d_vocab: int) -> dict[str, torch.Tensor]:
    """CSR over tokens: for token t, ``feature[offsets[t]:offsets[t+1]]`` are the features with a
    top example peaking on t, by their highest such activation (descending)."""
    S, K = top_gidx_SK.shape
    valid = top_gidx_SK >= 0
    feat = torch.arange(S)[:, None].expand(S, K)[valid]
    value = top_value_SK[valid]
    token = tokens_NT.reshape(-1).long()[top_gidx_SK[valid]]
    # one entry per (token, feature): its best value
    order = torch.argsort(-value, stable=True)
    order = order[torch.argsort(feat[order], stable=True)]
    order = order[torch.argsort(token[order], stable=True)]
    token, feat, value = token[order], feat[order], value[order]
    first = torch.ones_like(token, dtype=torch.bool)
    first[1:] = (token[1:] != token[:-1]) | (feat[1:] != feat[:-1])
    token, feat, value = token[first], feat[first], value[first]
    order = torch.argsort(-value, stable=True)  # best feature first within each token
    order = order[torch.argsort(token[order], stable=True)]
    token, feat, value = token[order], feat[order], value[order]
    offsets = torch.zeros(d_vocab + 1, dtype=torch.int64)
    offsets[1:] = torch.cumsum(torch.bincount(token, minlength=d_vocab), 0)
    return {"fires.offsets": offsets, "fires.feature": feat, "fires.value": value}


def write_index(out_dir: Path, state: StreamState, effects: LogitEffects, nearest: tuple, map_xy,
                cfg: IndexConfig, meta: dict, vocab: list[str]) -> None:
    """Write the index files (each atomically); ``index.json`` last, so its presence means done."""
    out_dir = Path(out_dir)
    count = state.count_S
    feats = {
        "count": count, "density": count.double().div(state.n_kept).float(), "max": state.max_S,
        "hist.counts": state.hist.counts_SH, "hist.width": state.hist.width_S,
        "top.value": state.top.value_SK, "top.gidx": state.top.gidx_SK, "top.window": state.top.window_SKW,
        "sample.value": state.sample.value_SK, "sample.gidx": state.sample.gidx_SK,
        "sample.window": state.sample.window_SKW,
        "logits.top_ids": effects.top_ids_SL, "logits.top_vals": effects.top_vals_SL,
        "logits.bottom_ids": effects.bottom_ids_SL, "logits.bottom_vals": effects.bottom_vals_SL,
        "logits.hist": effects.hist_counts_SH, "logits.range": effects.hist_range_S2,
        "nearest.ids": nearest[0], "nearest.cos": nearest[1],
    }
    if map_xy is not None:
        feats["map.xy"] = map_xy
    save_tensors(out_dir / FEATURES_FILE, feats)
    corpus = {"tokens": state.tokens_NT,
              **fires_on_table(state.tokens_NT, state.top.gidx_SK, state.top.value_SK, len(vocab)),
              "promoters": effects.promoters_VN, "promoters.vals": effects.promoter_vals_VN}
    save_tensors(out_dir / CORPUS_FILE, corpus)
    atomic_write_json(out_dir / VOCAB_FILE, vocab)
    atomic_write_json(out_dir / INDEX_FILE, {
        "format_version": FORMAT_VERSION, "config": asdict(cfg), "n_features": int(count.numel()),
        "n_tokens": state.n_kept, "n_sequences": int(state.tokens_NT.shape[0]),
        "has_map": map_xy is not None, "written": time.time(), **meta})


# --- reading -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Example:
    """One context: token strings, the feature's activation on each, and which token it peaks on."""
    tokens: list[str]
    acts: list[float]
    peak: int            # position of the example's token within ``tokens``
    value: float         # the activation at ``peak``
    sequence: int
    position: int        # position of the peak token within its sequence

    def prompt(self, spaced: bool, specials: set[str]) -> str:
        """The context as text up to its peak, from the start of the document it peaks in (the tokens
        after the last special token, such as an end-of-text, before the peak): a prompt whose last
        token is the peak (steering starts from it; what drives the feature is read at it)."""
        upto = self.tokens[:self.peak + 1]
        start = max((i + 1 for i, t in enumerate(upto) if t.strip() in specials), default=0)
        return (" " if spaced else "").join(upto[start:]).strip()


@dataclass(frozen=True)
class FeatureView:
    """All the browser shows for one feature."""
    index: int
    density: float                 # fraction of kept tokens where the feature is > 0
    count: int
    max_act: float
    top: list[Example]
    quantiles: list[tuple[str, list[Example]]]  # (label, examples) from the uniform sample
    hist_edges: list[float]        # nonzero-activation histogram
    hist_counts: list[int]
    promoted: list[tuple[str, float]]
    suppressed: list[tuple[str, float]]
    logit_hist_edges: list[float]
    logit_hist_counts: list[int]
    nearest: list[tuple[int, float]]
    map_xy: tuple[float, float] | None

    @property
    def log10_density(self) -> float | None:
        """None for a feature that never fired (not -inf: it is shown, and written to JSON)."""
        import math

        return math.log10(self.density) if self.density > 0 else None


def distinct_contexts(examples: list[Example]) -> list[Example]:
    """``examples`` with each context (the same tokens, peaking at the same place) kept once, at
    its first (highest) occurrence: the corpus repeats templated sentences, so a feature's top
    examples are often one context many times over, which shows nothing new (issue #28)."""
    seen, out = set(), []
    for e in examples:
        if (key := (tuple(e.tokens), e.peak)) not in seen:
            seen.add(key)
            out.append(e)
    return out


class FeatureIndex:
    """Read access to an index directory; ``feature(i)`` reads only row i of each array."""

    def __init__(self, path: Path):
        from safetensors import safe_open

        self.path = Path(path)
        if not (self.path / INDEX_FILE).exists():
            raise FeatureIndexError(f"{self.path} holds no {INDEX_FILE}: not a (finished) feature index; "
                                    "build one with `sae-core index`")
        self.info = read_json(self.path / INDEX_FILE)
        if self.info.get("format_version") != FORMAT_VERSION:
            raise FeatureIndexError(f"{self.path} is a feature index of format "
                                    f"{self.info.get('format_version')}, this version reads "
                                    f"{FORMAT_VERSION}; rebuild it")
        self.config = IndexConfig(**self.info["config"])
        self.vocab: list[str] = read_json(self.path / VOCAB_FILE)
        # byte-level tokens (``models.tokens``); indexes built before these keys: word-level
        self.spaced: bool = self.info.get("tokens_spaced", True)
        self._bytes = {int(i): bytes.fromhex(h) for i, h in self.info.get("token_bytes", {}).items()}
        try:
            self._f = safe_open(str(self.path / FEATURES_FILE), framework="pt")
            self._c = safe_open(str(self.path / CORPUS_FILE), framework="pt")
        except Exception as e:  # safetensors raises several types for foreign/truncated files
            raise ArtifactError(f"{self.path}: unreadable index files ({e}); rebuild the index") from None

    @classmethod
    def open(cls, path: str | Path) -> "FeatureIndex":
        return cls(Path(path))

    @property
    def n_features(self) -> int:
        return int(self.info["n_features"])

    @property
    def text_source(self) -> str:
        """The text the index streamed (``TextSource.describe``)."""
        return self.info.get("text_source") or f"zoo corpus, corpus seed {self.config.corpus_seed}"

    @property
    def logit_basis(self) -> str:
        """What the logit effects were computed against (``sae_core.models.unembed``)."""
        return self.info.get("logit_basis", RAW)

    @property
    def fingerprint(self) -> str:
        return self.info.get("sae_fingerprint", "")

    def check_sae(self, fingerprint: str) -> None:
        """Raise when this index was built for another SAE (weights differ)."""
        if fingerprint != self.fingerprint:
            raise FeatureIndexError(
                f"the feature index at {self.path} was built for another SAE (fingerprint "
                f"{self.fingerprint}, this SAE is {fingerprint}): rebuild the index for this SAE")

    def _row(self, name: str, i: int) -> torch.Tensor:
        return self._f.get_slice(name)[i:i + 1][0]

    def column(self, name: str) -> torch.Tensor:
        """A whole per-feature array (e.g. ``density`` for the map); cached by the caller."""
        return self._f.get_tensor(name)

    @cached_property
    def tokens_NT(self) -> torch.Tensor:
        return self._c.get_tensor("tokens")

    def check_feature(self, i: int) -> int:
        if not isinstance(i, int) or isinstance(i, bool):
            raise FeatureIndexError(f"feature index must be an integer, got {i!r}")
        if not 0 <= i < self.n_features:
            raise FeatureIndexError(f"feature {i} is out of range: this SAE has features 0..{self.n_features - 1}; "
                                    f"give a number from 0 to {self.n_features - 1}")
        return i

    def token_str(self, t: int) -> str:
        return self.vocab[t] if 0 <= t < len(self.vocab) else f"<{t}>"

    def pieces(self, ids: list[int]) -> list[str]:
        """A window of ids as text, each id's piece: a character split over several byte-level
        tokens whole on the last of them (``models.tokens.assemble``)."""
        return assemble(ids, self.vocab, self._bytes) if self._bytes else [self.token_str(t) for t in ids]

    def _examples(self, prefix: str, i: int) -> list[Example]:
        values, gidx, windows = (self._row(f"{prefix}.{n}", i) for n in ("value", "gidx", "window"))
        cfg, T = self.config, self.tokens_NT.shape[1]
        out = []
        for v, g, w in zip(values.tolist(), gidx.tolist(), windows.tolist()):
            if g < 0:
                continue
            seq, pos = divmod(g, T)
            lo, hi = max(0, pos - cfg.before), min(T, pos + cfg.after + 1)
            ids = self.tokens_NT[seq, lo:hi].tolist()
            acts = w[lo - (pos - cfg.before):hi - (pos - cfg.before)]
            keep = [j for j, t in enumerate(ids) if t >= 0]  # drop padding
            out.append(Example(self.pieces([ids[j] for j in keep]), [acts[j] for j in keep],
                               keep.index(pos - lo), v, seq, pos))
        return out

    def feature(self, i: int) -> FeatureView:
        i = self.check_feature(i)
        cfg = self.config
        samples = sorted(self._examples("sample", i), key=lambda e: e.value)
        quantiles = []
        if samples:
            n_q = min(cfg.n_quantiles, len(samples))
            for q in range(n_q):
                group = samples[q * len(samples) // n_q:(q + 1) * len(samples) // n_q]
                label = (f"quantile {q * 100 // n_q}–{(q + 1) * 100 // n_q}%: "
                         f"{group[0].value:.3g} to {group[-1].value:.3g}")
                quantiles.append((label, group[::-1]))
        width = float(self._row("hist.width", i))
        counts = self._row("hist.counts", i).tolist()
        used = max((j + 1 for j, c in enumerate(counts) if c), default=0)
        lo, hi = self._row("logits.range", i).tolist()
        lh = self._row("logits.hist", i).tolist()
        xy = self._row("map.xy", i).tolist() if self.info.get("has_map") else None
        return FeatureView(
            index=i, density=float(self._row("density", i)), count=int(self._row("count", i)),
            max_act=float(self._row("max", i)), top=distinct_contexts(self._examples("top", i)),
            quantiles=quantiles,
            hist_edges=[width * j for j in range(used + 1)], hist_counts=counts[:used],
            promoted=self._logits(i, "top"), suppressed=self._logits(i, "bottom"),
            logit_hist_edges=[lo + (hi - lo) * j / len(lh) for j in range(len(lh) + 1)],
            logit_hist_counts=lh,
            nearest=list(zip(self._row("nearest.ids", i).tolist(), self._row("nearest.cos", i).tolist())),
            map_xy=tuple(xy) if xy else None)

    def _logits(self, i: int, which: str) -> list[tuple[str, float]]:
        ids, vals = self._row(f"logits.{which}_ids", i).tolist(), self._row(f"logits.{which}_vals", i).tolist()
        return [(self.token_str(t), v) for t, v in zip(ids, vals)]

    def overview(self, n_tokens: int = 3):
        """One row per feature for the map and lists: ``feature``, ``x``, ``y`` (NaN without a
        map), ``density``, ``log10_density`` (NaN where the feature never fired), ``max_act`` and
        ``top_tokens`` (the tokens its top ``n_tokens`` examples peak on)."""
        import numpy as np
        import pandas as pd

        density = self.column("density").double().numpy()
        gidx = self.column("top.gidx")[:, :n_tokens]
        flat = self.tokens_NT.reshape(-1).long()
        peak = torch.where(gidx >= 0, flat[gidx.clamp_min(0)], -1).tolist()
        xy = self.column("map.xy").numpy() if self.info.get("has_map") else np.full((len(density), 2), np.nan)
        log10 = np.full_like(density, np.nan)
        np.log10(density, out=log10, where=density > 0)
        return pd.DataFrame({
            "feature": np.arange(len(density)), "x": xy[:, 0], "y": xy[:, 1], "density": density,
            "log10_density": log10, "max_act": self.column("max").numpy(),
            "top_tokens": [" · ".join(self.token_str(t) for t in row if t >= 0) for row in peak]})

    # --- search ------------------------------------------------------------------------------
    def token_ids(self, text: str) -> list[int]:
        """Vocabulary ids whose string equals ``text`` (also with surrounding spaces stripped)."""
        text = text.strip()
        if not text:
            raise FeatureIndexError("empty search: type a token (e.g. 'March') or a feature number")
        exact = [t for t, s in enumerate(self.vocab) if s == text]
        return exact or [t for t, s in enumerate(self.vocab) if s.strip() == text]

    def _require_token(self, text: str) -> list[int]:
        ids = self.token_ids(text)
        if not ids:
            raise FeatureIndexError(f"{text.strip()!r} is not a token of this model's vocabulary; "
                                    "search for a single token (one word or symbol)")
        return ids

    def search_fires_on(self, text: str, limit: int = 50) -> list[tuple[int, float]]:
        """Features whose top examples peak on token ``text``: (feature, activation), best first."""
        offsets = self._c.get_slice("fires.offsets")
        hits = []
        for t in self._require_token(text):
            a, b = offsets[t:t + 2].tolist()
            feats = self._c.get_slice("fires.feature")[a:b].tolist()
            vals = self._c.get_slice("fires.value")[a:b].tolist()
            hits += zip(feats, vals)
        return sorted(hits, key=lambda fv: -fv[1])[:limit]

    def search_promotes(self, text: str, limit: int = 50) -> list[tuple[int, float]]:
        """Features whose decoder direction raises the logit of ``text`` most: (feature, effect)."""
        hits = []
        for t in self._require_token(text):
            hits += zip(self._c.get_slice("promoters")[t:t + 1][0].tolist(),
                        self._c.get_slice("promoters.vals")[t:t + 1][0].tolist())
        return sorted(hits, key=lambda fv: -fv[1])[:limit]
