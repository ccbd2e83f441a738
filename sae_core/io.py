"""Atomic file writes and safe reads: JSON for configs, safetensors for tensors.

Every artifact is written to a temporary file beside its target and moved into place with
``os.replace``, so a reader never sees half a file and an interrupted job loses nothing already
written. JSON is strict (``dumps_json``): every file and printout parses with any JSON parser.
Tensor files are read only as safetensors (never unpickled); a truncated or foreign file raises
``ArtifactError`` with the path and what to do.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Iterator

import torch

from sae_core.errors import ArtifactError

# dtype names in configs and metadata -> torch dtypes (one table for models, SAEs and stores)
TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
                "float64": torch.float64}


def _atomic_write(path: Path, write) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; artifacts are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    _atomic_write(path, lambda f: f.write(data))


def json_safe(obj: Any) -> Any:
    """``obj`` with every NaN and ±inf float (numpy's included: they subclass float) as None."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def dumps_json(obj: Any, **kw) -> str:
    """``json.dumps(obj, **kw)`` as strict JSON: JSON has no NaN or infinity (Python's ``NaN`` and
    ``-Infinity`` are refused by strict parsers: JavaScript's ``JSON.parse``, jq, serde), so each
    non-finite float becomes null. Readers treat null as "no value": a dead feature's log-density
    (log10 0 = -inf) is null, meaning "never fired"; a z-score of a null with no spread is null."""
    return json.dumps(json_safe(obj), allow_nan=False, **kw)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (dumps_json(obj, indent=2, sort_keys=True) + "\n").encode())


def read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ArtifactError(f"{path} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ArtifactError(f"{path} is not valid JSON ({e}); delete it and rebuild the artifact") from None


def save_pair(out_dir: Path, weights: str, tensors: dict, meta_file: str, meta: dict) -> Path:
    """Write ``tensors`` (safetensors) and ``meta`` (JSON) into ``out_dir``, atomically each."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_tensors(out_dir / weights, {k: v.detach().contiguous() for k, v in tensors.items()})
    atomic_write_json(out_dir / meta_file, meta)
    return out_dir


def load_pair(path: Path, weights: str, meta_file: str, what: str) -> tuple[dict, dict]:
    """``(tensors, meta)`` from a directory written by ``save_pair``; clear errors otherwise."""
    path = Path(path)
    if not (path / meta_file).exists() or not (path / weights).exists():
        raise ArtifactError(f"{path} is not {what} directory (needs {weights} and {meta_file})")
    return load_tensors(path / weights), read_json(path / meta_file)


def save_tensors(path: Path, tensors: dict, metadata: dict[str, str] | None = None) -> None:
    """Atomically write a dict of torch tensors as safetensors."""
    from safetensors.torch import save

    data = save({k: v.contiguous() for k, v in tensors.items()}, metadata=metadata)
    atomic_write_bytes(path, data)


def load_tensors(path: Path, device: str = "cpu") -> dict:
    """Read a safetensors file; a truncated, foreign or missing file raises ``ArtifactError``."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.exists():
        raise ArtifactError(f"{path} does not exist")
    try:
        return load_file(str(path), device=device)
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise ArtifactError(
            f"{path} is not a readable safetensors file ({e}). It may be truncated or in another "
            "format; re-download or rebuild it.") from None


@dataclass(frozen=True)
class JsonResult:
    """A result directory whose ``FILE`` holds ``{"config": ..., "results": ...}``."""
    path: Path
    config: dict
    results: dict
    FILE: ClassVar[str] = ""

    @classmethod
    def open(cls, path):
        d = read_json(Path(path) / cls.FILE)
        return cls(Path(path), d["config"], d["results"])


def json_lines(path: Path, example: str, error: type[Exception]) -> Iterator[tuple[int, Any]]:
    """``(line number, value)`` of each non-empty line of a ``.jsonl`` file; a line that is not JSON
    raises ``error`` naming the file, the line and what a line should look like (``example``)."""
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                yield n, json.loads(line)
            except json.JSONDecodeError as e:
                raise error(f"{path.name} line {n} is not JSON ({e.msg}); each line must be an object "
                            f"such as {example}") from None
