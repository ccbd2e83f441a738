"""A user's own activation file (``.npy`` or ``.safetensors``, tokens x d), checked and imported.

Files are never unpickled: ``.npy`` goes through ``np.load(allow_pickle=False)`` and safetensors
holds raw tensors only. The header is checked first (``open_activation_file``); rows are then read
a block at a time (a memory-mapped ``.npy``, slices of the safetensors tensor), so importing a
file larger than memory works. Every rejection raises ``ActivationFileError`` naming the file, what is
wrong and how to fix it, because the message is shown as is in the app.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from sae_core.activations.store import (
    META_FILE, PROGRESS_FILE, SHARD_TOKENS, ActivationStore, StoreMeta, remove_shards_from, write_meta,
    write_shard)
from sae_core.errors import ActivationFileError

SUFFIXES = (".npy", ".safetensors")
_KEYS = ("acts", "activations")


_FLOAT_SAFETENSORS = {"F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32, "F64": torch.float64}
_SAFETENSORS_NAMES = {"I8": "int8", "I16": "int16", "I32": "int32", "I64": "int64", "U8": "uint8",
                      "BOOL": "bool"}


@dataclass(frozen=True)
class ActivationFile:
    """A user's file whose header passed every check; its rows are read a block at a time (a
    memory-mapped ``.npy``, slices of a safetensors tensor), so a file larger than memory imports."""
    path: Path
    n: int
    d: int
    dtype: torch.dtype  # as stored in the file
    read: "Reader"

    def rows(self, start: int, stop: int) -> torch.Tensor:
        """Rows ``[start, stop)`` in the file's dtype, checked finite."""
        block = self.read(start, stop)
        _check_finite(self.path, block, start)
        return block


Reader = Callable[[int, int], torch.Tensor]  # rows [start, stop) as stored


def _open_npy(path: Path) -> tuple[tuple, str, Reader | None]:
    """Shape, dtype name and row reader (None: not a float type torch reads) of a ``.npy``."""
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise ActivationFileError(
            f"{path} is not a readable .npy array ({e}). It may be truncated, hold Python objects, "
            "or be another format; save it again with np.save(path, array_float32).") from None
    if not isinstance(arr, np.ndarray):
        raise ActivationFileError(f"{path} does not hold a single array; save one [tokens, d] array")
    if arr.dtype not in (np.float16, np.float32, np.float64):  # torch has no other float of numpy's
        return arr.shape, str(arr.dtype), None
    # np.array copies the rows out of the read-only map (C order, whatever the file's order)
    return arr.shape, str(arr.dtype), lambda a, b: torch.from_numpy(np.array(arr[a:b], order="C"))


def _open_safetensors(path: Path) -> tuple[tuple, str, Reader | None]:
    """Shape, dtype name and row reader (None: not a float type) of a safetensors file's tensor."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            keys = list(f.keys())
            key = next((k for k in _KEYS if k in keys), keys[0] if len(keys) == 1 else None)
            if key is None:
                raise ActivationFileError(
                    f"{path} holds {len(keys)} tensors ({', '.join(keys[:8]) or 'none'}); store a "
                    f"single [tokens, d] tensor, or name it {' or '.join(repr(k) for k in _KEYS)}")
            sl = f.get_slice(key)
            shape, kind = tuple(sl.get_shape()), sl.get_dtype()
    except (SafetensorError, OSError, ValueError) as e:
        raise ActivationFileError(
            f"{path} is not a readable safetensors file ({e}). It may be truncated or in another "
            "format; write it again with safetensors.torch.save_file({'acts': tensor}, path).") from None

    def read(a: int, b: int) -> torch.Tensor:
        with safe_open(str(path), framework="pt") as f:
            return f.get_slice(key)[a:b]
    dtype = _FLOAT_SAFETENSORS.get(kind)
    name = str(dtype).removeprefix("torch.") if dtype else _SAFETENSORS_NAMES.get(kind, kind)
    return shape, name, read if dtype else None


def open_activation_file(path: str | Path, d_expected: int | None = None) -> ActivationFile:
    """Check a ``.npy`` or ``.safetensors`` file's header (no rows read): a 2-D floating-point
    ``[tokens, d]`` array; a safetensors file may hold one tensor or name it ``acts`` /
    ``activations``. ``d_expected`` (the hook's width), when given, must equal the file's ``d``."""
    path = Path(path)
    if path.suffix not in SUFFIXES:
        raise ActivationFileError(f"{path} has extension {path.suffix or '(none)'!r}; activation files "
                                  f"must be {' or '.join(SUFFIXES)} holding a [tokens, d] array")
    if not path.is_file():
        raise ActivationFileError(f"{path} does not exist or is not a file")
    shape, dtype_name, read = _open_npy(path) if path.suffix == ".npy" else _open_safetensors(path)
    if len(shape) != 2:
        raise ActivationFileError(
            f"{path} holds an array of shape {shape} ({len(shape)}-D); expected 2-D "
            "[tokens, d]. If it is [batch, pos, d], reshape it to [-1, d] first.")
    if read is None:
        raise ActivationFileError(f"{path} has dtype {dtype_name}, not a floating-point type torch "
                                  "reads; activations must be float16, bfloat16, float32 or float64")
    if shape[0] == 0 or shape[1] == 0:
        raise ActivationFileError(f"{path} holds an empty array of shape {shape}")
    if d_expected is not None and shape[1] != d_expected:
        raise ActivationFileError(
            f"width mismatch: file has d={shape[1]}, the hook has d={d_expected}. {path} was "
            "likely taken at another model or hook; pick the matching hook or file.")
    return ActivationFile(path, shape[0], shape[1], read(0, 0).dtype, read)


def _check_finite(path: Path, acts_ND: torch.Tensor, first_row: int = 0) -> None:
    bad_ND = ~torch.isfinite(acts_ND)
    n_bad = int(bad_ND.sum())
    if n_bad:
        row, col = (int(i) for i in bad_ND.nonzero()[0])
        raise ActivationFileError(
            f"{path} has {n_bad} non-finite values (NaN or Inf) in rows {first_row}-"
            f"{first_row + acts_ND.shape[0] - 1}; the first at row {first_row + row}, column {col}. "
            "Drop those rows or replace the values (e.g. np.nan_to_num) before loading.")


def load_activation_file(path: str | Path, d_expected: int | None = None) -> torch.Tensor:
    """``[tokens, d]`` float32 from a ``.npy`` or ``.safetensors`` file, after every check
    (``open_activation_file``, then every value finite). The whole file in memory: for small files."""
    f = open_activation_file(path, d_expected)
    return f.rows(0, f.n).to(torch.float32)


def import_activation_file(path: str | Path, out_dir: Path, *, hook: str = "user",
                           model: str = "user-file", shard_tokens: int = SHARD_TOKENS,
                           d_expected: int | None = None) -> ActivationStore:
    """Check a user's file and write it as a store in ``out_dir`` (token ids -1: unknown), one
    shard at a time: the file is never whole in memory. Half-precision files stay half precision
    on disk (reads are float32 either way); float64 is stored as float32."""
    f = open_activation_file(path, d_expected)
    store_dtype = f.dtype if f.dtype in (torch.float16, torch.bfloat16) else torch.float32
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # Drop any old description first: a crash mid-import then leaves "not a store", never a store
    # whose meta.json disagrees with its shards.
    for stale in (META_FILE, PROGRESS_FILE):
        (out_dir / stale).unlink(missing_ok=True)
    shard_rows = []
    for i, s in enumerate(range(0, f.n, shard_tokens)):
        rows_ND = f.rows(s, min(f.n, s + shard_tokens)).to(store_dtype)
        write_shard(out_dir, i, rows_ND, torch.full((rows_ND.shape[0],), -1, dtype=torch.int64))
        shard_rows.append(rows_ND.shape[0])
    remove_shards_from(out_dir, len(shard_rows))  # a previous, longer import in the same dir
    meta = StoreMeta(model=model, hook=hook, d=f.d, dtype=str(store_dtype).removeprefix("torch."),
                     n_tokens=f.n, context_size=0, shard_tokens=shard_tokens, exclude_special=False,
                     source=str(Path(path).resolve()), complete=False)
    write_meta(out_dir, replace(meta, complete=True), shard_rows)
    return ActivationStore.open(out_dir)
