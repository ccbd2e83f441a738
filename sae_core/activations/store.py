"""On-disk sharded activation store: what harvesting writes and SAE training reads.

Layout of a store directory::

    meta.json                  StoreMeta (+ format tag and rows per shard)
    shard_00000.safetensors    "acts" [n, d] (storage dtype), "tokens" [n] int64, and for harvested
                               stores "doc" [n] and "pos" [n] int64: each row's key (document
                               index in the harvest's texts, token position in its row)
    shard_00001.safetensors    ...
    progress.json              only while (or after) a harvest builds it: resume position

Every shard has ``shard_tokens`` rows except the last (a distributed harvest, ``parallel``, merges
its ranks' parts: there the last shard of each part may be short too). Shards are safetensors written atomically
(``sae_core.io``), so a crash never leaves a half shard that looks whole. ``meta.json`` says
``complete: true`` only once every shard is on disk; ``ActivationStore.open`` refuses anything
else, so training can never silently read a partial harvest.

Token ids are stored beside the activations so analyses (top contexts, masking) can tell which
token each row came from; rows imported from a user's file have token id -1 (unknown). The row
keys (``row_keys``) let two stores be paired row by row: a paired harvest checks that both models'
stores hold the same (document, position) in the same order.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch

from sae_core.errors import ArtifactError
from sae_core.io import TORCH_DTYPES, atomic_write_json, load_tensors, read_json, save_tensors

FORMAT = "sae-studio-activations/1"
META_FILE = "meta.json"
PROGRESS_FILE = "progress.json"
# rows per shard unless asked otherwise (harvests and imports; a store's name records any other value)
SHARD_TOKENS = 65536
_SHARD_RE = re.compile(r"shard_(\d{5})\.safetensors")


@dataclass(frozen=True)
class StoreMeta:
    """What a store holds and how it was made.

    model: model name the activations came from (``zoo:tiny-a``, ``user-file``).
    hook: hook name (``blocks.1.hook_resid_post``) or a user label.
    d: width of each activation row.
    dtype: storage dtype of the shards (``float32``, ``float16``, ``bfloat16``); reads are float32.
    n_tokens: rows in completed shards (the full count once ``complete``).
    context_size: tokens per input row during harvesting (0 for imported files).
    shard_tokens: rows per shard (the last shard may be shorter).
    exclude_special: whether BOS and other special-token positions were dropped.
    source: where the inputs came from ("zoo-corpus seed 0", a file path).
    complete: True once every shard is written.
    """

    model: str
    hook: str
    d: int
    dtype: str
    n_tokens: int
    context_size: int
    shard_tokens: int
    exclude_special: bool
    source: str
    complete: bool

    def __post_init__(self):
        if self.dtype not in TORCH_DTYPES:
            raise ArtifactError(f"storage dtype {self.dtype!r} is not one of {sorted(TORCH_DTYPES)}")
        if self.d <= 0 or self.shard_tokens <= 0 or self.n_tokens < 0:
            raise ArtifactError(f"invalid store shape: d={self.d}, shard_tokens={self.shard_tokens}, "
                                f"n_tokens={self.n_tokens} (d and shard_tokens must be positive)")


def shard_path(path: Path, index: int) -> Path:
    return Path(path) / f"shard_{index:05d}.safetensors"


def write_shard(path: Path, index: int, acts_ND: torch.Tensor, tokens_N: torch.Tensor,
                doc_N: torch.Tensor | None = None, pos_N: torch.Tensor | None = None) -> None:
    """Atomically write shard ``index``: ``acts`` [n, d] as given, ``tokens`` [n] as int64, and the
    row keys ``doc``/``pos`` [n] when given."""
    tensors = {"acts": acts_ND, "tokens": tokens_N.to(torch.int64)}
    if doc_N is not None:
        tensors |= {"doc": doc_N.to(torch.int64), "pos": pos_N.to(torch.int64)}
    save_tensors(shard_path(path, index), tensors, metadata={"format": FORMAT})


def write_meta(path: Path, meta: StoreMeta, shard_rows: list[int]) -> None:
    atomic_write_json(Path(path) / META_FILE, {"format": FORMAT, **asdict(meta), "shard_rows": shard_rows})


def remove_shards_from(path: Path, index: int) -> None:
    """Delete shards numbered ``index`` and above (stale leftovers of an earlier, longer attempt)."""
    for p in Path(path).glob("shard_*.safetensors"):
        m = _SHARD_RE.fullmatch(p.name)
        if m and int(m.group(1)) >= index:
            p.unlink()


def _shard_shapes(p: Path) -> tuple[list[int], list[int]]:
    """Shapes of ``acts`` and ``tokens`` from the header alone (no data read)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(p), framework="pt") as f:
            return list(f.get_slice("acts").get_shape()), list(f.get_slice("tokens").get_shape())
    except (SafetensorError, OSError, ValueError, KeyError) as e:
        raise ArtifactError(f"activation shard {p} is unreadable or not a store shard ({e}); "
                            "delete the store directory and harvest again") from None


def _read_tokens(p: Path, name: str = "tokens") -> torch.Tensor:
    """Only the ``tokens`` (or another int64 column) [n] of a shard (its acts are not read)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(p), framework="pt") as f:
            if name not in f.keys():
                raise ArtifactError(f"activation shard {p} has no {name!r} column: the store was made before "
                                    "rows were keyed by (document, position), or imported from a file; "
                                    "harvest it again to pair it with another")
            return f.get_tensor(name)
    except (SafetensorError, OSError, ValueError, KeyError) as e:
        raise ArtifactError(f"activation shard {p} is unreadable ({e}); harvest again") from None


class ActivationStore:
    """A complete store on disk. Open with ``ActivationStore.open(path)``."""

    def __init__(self, path: Path, meta: StoreMeta, shard_rows: list[int]):
        self.path = Path(path)
        self.meta = meta
        self._shard_rows = list(shard_rows)

    @classmethod
    def open(cls, path: str | Path) -> "ActivationStore":
        """Open a complete store; ``ArtifactError`` says why when it is missing, partial or foreign."""
        path = Path(path)
        if not path.is_dir():
            raise ArtifactError(f"no activation store at {path} (not a directory); harvest one first")
        if not (path / META_FILE).exists():
            if (path / PROGRESS_FILE).exists():
                raise ArtifactError(f"{path} holds an interrupted harvest; call the harvest again with "
                                    "the same arguments to resume it")
            raise ArtifactError(f"{path} is not an activation store (no {META_FILE})")
        raw = read_json(path / META_FILE)
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            raise ArtifactError(f"{path / META_FILE} is not a {FORMAT} store description; the directory "
                                "holds something else")
        names = {f.name for f in fields(StoreMeta)}
        missing = names - raw.keys()
        if missing:
            raise ArtifactError(f"{path / META_FILE} lacks {sorted(missing)}; the store is corrupt, "
                                "delete it and harvest again")
        meta = StoreMeta(**{k: raw[k] for k in names})
        if not meta.complete:
            raise ArtifactError(f"{path} is an incomplete store ({meta.n_tokens} rows so far); call the "
                                "harvest again with the same arguments to finish it")
        shard_rows = list(raw.get("shard_rows", []))
        if sum(shard_rows) != meta.n_tokens:
            raise ArtifactError(f"{path}: shards hold {sum(shard_rows)} rows but meta says "
                                f"{meta.n_tokens}; the store is corrupt, harvest again")
        for i, rows in enumerate(shard_rows):
            p = shard_path(path, i)
            if not p.exists():
                raise ArtifactError(f"{path}: shard {p.name} is missing; the store is corrupt, harvest again")
            acts_shape, tok_shape = _shard_shapes(p)
            if acts_shape != [rows, meta.d] or tok_shape != [rows]:
                raise ArtifactError(f"{p} has acts {acts_shape} / tokens {tok_shape}, expected "
                                    f"[{rows}, {meta.d}] / [{rows}]; the store is corrupt, harvest again")
        return cls(path, meta, shard_rows)

    @property
    def n_tokens(self) -> int:
        return self.meta.n_tokens

    @property
    def d(self) -> int:
        return self.meta.d

    @property
    def shard_rows(self) -> list[int]:
        """Rows in each shard, in order."""
        return list(self._shard_rows)

    def shard_paths(self) -> list[Path]:
        return [shard_path(self.path, i) for i in range(len(self._shard_rows))]

    def read_shard(self, index: int, device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """``(acts [n, d] float32, tokens [n] int64)`` of one shard."""
        t = load_tensors(shard_path(self.path, index))
        return t["acts"].to(device=device, dtype=torch.float32), t["tokens"].to(device)

    def read_all(self, device: str | torch.device = "cpu") -> torch.Tensor:
        """Every row, ``[n_tokens, d]`` float32 (meant for small stores: it is all in memory)."""
        if not self._shard_rows:
            return torch.empty(0, self.d, device=device)
        return torch.cat([self.read_shard(i, device)[0] for i in range(len(self._shard_rows))])

    def token_ids(self) -> torch.Tensor:
        """``[n_tokens]`` int64: the token id of each row (-1 where unknown, e.g. imported files)."""
        if not self._shard_rows:
            return torch.empty(0, dtype=torch.int64)
        return torch.cat([_read_tokens(p) for p in self.shard_paths()])

    def row_keys(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(doc [n_tokens], pos [n_tokens])`` int64: each row's document and token position."""
        if not self._shard_rows:
            return torch.empty(0, dtype=torch.int64), torch.empty(0, dtype=torch.int64)
        return (torch.cat([_read_tokens(p, "doc") for p in self.shard_paths()]),
                torch.cat([_read_tokens(p, "pos") for p in self.shard_paths()]))

    def __repr__(self) -> str:
        m = self.meta
        return f"ActivationStore({self.path}, {m.model} {m.hook}, {m.n_tokens} x {m.d} {m.dtype})"
