"""A user's own activation file (``.npy`` or ``.safetensors``, tokens x d), checked and imported.

Files are never unpickled: ``.npy`` goes through ``np.load(allow_pickle=False)`` and safetensors
holds raw tensors only. Every rejection raises ``ActivationFileError`` naming the file, what is
wrong and how to fix it, because the message is shown as is in the app.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from sae_core.activations.store import (
    META_FILE, PROGRESS_FILE, ActivationStore, StoreMeta, remove_shards_from, write_meta, write_shard)
from sae_core.errors import ActivationFileError

SUFFIXES = (".npy", ".safetensors")
_KEYS = ("acts", "activations")


def _read_npy(path: Path) -> torch.Tensor:
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise ActivationFileError(
            f"{path} is not a readable .npy array ({e}). It may be truncated, hold Python objects, "
            "or be another format; save it again with np.save(path, array_float32).") from None
    if not isinstance(arr, np.ndarray):
        raise ActivationFileError(f"{path} does not hold a single array; save one [tokens, d] array")
    if not np.issubdtype(arr.dtype, np.floating):
        raise ActivationFileError(f"{path} has dtype {arr.dtype}, not a floating-point type; activations "
                                  "must be float16, float32 or float64")
    return torch.from_numpy(np.ascontiguousarray(arr))


def _read_safetensors(path: Path) -> torch.Tensor:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            keys = list(f.keys())
            key = next((k for k in _KEYS if k in keys), keys[0] if len(keys) == 1 else None)
            if key is None:
                raise ActivationFileError(
                    f"{path} holds {len(keys)} tensors ({', '.join(keys[:8]) or 'none'}); store a "
                    f"single [tokens, d] tensor, or name it {' or '.join(repr(k) for k in _KEYS)}")
            return f.get_tensor(key)
    except (SafetensorError, OSError, ValueError) as e:
        raise ActivationFileError(
            f"{path} is not a readable safetensors file ({e}). It may be truncated or in another "
            "format; write it again with safetensors.torch.save_file({'acts': tensor}, path).") from None


def _check_finite(path: Path, acts_ND: torch.Tensor) -> None:
    bad_ND = ~torch.isfinite(acts_ND)
    n_bad = int(bad_ND.sum())
    if n_bad:
        row, col = (int(i) for i in bad_ND.nonzero()[0])
        raise ActivationFileError(
            f"{path} has {n_bad} non-finite values (NaN or Inf); the first at row {row}, column {col}. "
            "Drop those rows or replace the values (e.g. np.nan_to_num) before loading.")


def load_activation_file(path: str | Path, d_expected: int | None = None) -> torch.Tensor:
    """``[tokens, d]`` float32 from a ``.npy`` or ``.safetensors`` file, after every check.

    A safetensors file may hold one 2-D tensor, or name it ``acts`` / ``activations``.
    ``d_expected`` (the hook's width), when given, must equal the file's ``d``.
    """
    path = Path(path)
    if path.suffix not in SUFFIXES:
        raise ActivationFileError(f"{path} has extension {path.suffix or '(none)'!r}; activation files "
                                  f"must be {' or '.join(SUFFIXES)} holding a [tokens, d] array")
    if not path.is_file():
        raise ActivationFileError(f"{path} does not exist or is not a file")
    acts = _read_npy(path) if path.suffix == ".npy" else _read_safetensors(path)
    if acts.ndim != 2:
        raise ActivationFileError(
            f"{path} holds an array of shape {tuple(acts.shape)} ({acts.ndim}-D); expected 2-D "
            "[tokens, d]. If it is [batch, pos, d], reshape it to [-1, d] first.")
    if not acts.is_floating_point():
        raise ActivationFileError(f"{path} has dtype {str(acts.dtype).removeprefix('torch.')}, not a "
                                  "floating-point type; activations must be float16, float32 or float64")
    if acts.shape[0] == 0 or acts.shape[1] == 0:
        raise ActivationFileError(f"{path} holds an empty array of shape {tuple(acts.shape)}")
    if d_expected is not None and acts.shape[1] != d_expected:
        raise ActivationFileError(
            f"width mismatch: file has d={acts.shape[1]}, the hook has d={d_expected}. {path} was "
            "likely taken at another model or hook; pick the matching hook or file.")
    acts_ND = acts.to(torch.float32)
    _check_finite(path, acts_ND)
    return acts_ND


def import_activation_file(path: str | Path, out_dir: Path, *, hook: str = "user",
                           model: str = "user-file", shard_tokens: int = 65536,
                           d_expected: int | None = None) -> ActivationStore:
    """Check a user's file and write it as a store in ``out_dir`` (token ids -1: unknown)."""
    acts_ND = load_activation_file(path, d_expected)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # Drop any old description first: a crash mid-import then leaves "not a store", never a store
    # whose meta.json disagrees with its shards.
    for stale in (META_FILE, PROGRESS_FILE):
        (out_dir / stale).unlink(missing_ok=True)
    n, d = acts_ND.shape
    shard_rows = []
    for i, s in enumerate(range(0, n, shard_tokens)):
        rows_ND = acts_ND[s:s + shard_tokens]
        write_shard(out_dir, i, rows_ND, torch.full((rows_ND.shape[0],), -1, dtype=torch.int64))
        shard_rows.append(rows_ND.shape[0])
    remove_shards_from(out_dir, len(shard_rows))  # a previous, longer import in the same dir
    meta = StoreMeta(model=model, hook=hook, d=d, dtype="float32", n_tokens=n, context_size=0,
                     shard_tokens=shard_tokens, exclude_special=False, source=str(Path(path).resolve()),
                     complete=False)
    write_meta(out_dir, replace(meta, complete=True), shard_rows)
    return ActivationStore.open(out_dir)


def import_to_workspace(ws, path: str | Path, *, hook: str = "user", model: str = "user-file",
                        d_expected: int | None = None):
    """Import a user's activation file as an ``activations`` artifact (named by the file's content)."""
    import hashlib

    from sae_core.workspace import artifact_name

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    name = artifact_name(model, hook, {"file_sha256": digest.hexdigest()})
    if (existing := ws.get("activations", name)) is not None:
        return existing
    meta: dict = {}  # filled in below; the record is written when the block succeeds
    with ws.create("activations", name, model=model, hook=hook, meta=meta, overwrite=True) as d:
        store = import_activation_file(path, d, hook=hook, model=model, d_expected=d_expected)
        meta.update(n_tokens=store.n_tokens, d=store.d, source=str(Path(path).resolve()))
    return ws.get("activations", name)
