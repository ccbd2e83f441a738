"""Distributed harvesting: N processes (``torchrun ... -m sae_core.cli harvest``) fill one store.

Rank r takes a contiguous range of the texts (cut at multiples of the harvest batch, so every rank
runs the same batches a single process would) and harvests it with the ordinary resumable
``harvest_hooks`` into a part directory ``.part-R-of-N`` inside each store, with document indices
offset to the range's start. When every rank is done, rank 0 merges: the parts' shards, in rank
order, become the store's shards (hard links, copies across file systems), their row counts the
store's ``shard_rows``, and ``meta.json`` is written last, atomically; then the parts are removed.
The merged store holds exactly the rows of a single-process harvest, in the same order, with the
same tokens and (document, position) keys (``tests/activations/test_parallel_harvest.py``); only where the
shards are cut differs (each part's last shard may be short). A crash at any point reruns: parts
resume where they stopped, and a merge is redone from the parts it left intact.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import replace
from pathlib import Path

from sae_core.activations.harvest import harvest_hooks
from sae_core.activations.store import (
    ActivationStore, StoreMeta, remove_shards_from, shard_path, write_meta, write_shard)
from sae_core.errors import ArtifactError
from sae_core.io import load_tensors


def text_range(n_texts: int, batch_size: int, rank: int, world: int) -> tuple[int, int]:
    """Rank ``rank``'s texts ``[lo, hi)``: whole batches, as even a share as batches allow."""
    n_batches = -(-n_texts // batch_size)
    lo_b, hi_b = n_batches * rank // world, n_batches * (rank + 1) // world
    return min(n_texts, lo_b * batch_size), min(n_texts, hi_b * batch_size)


def part_dir(out_dir: Path, rank: int, world: int) -> Path:
    return Path(out_dir) / f".part-{rank:03d}-of-{world:03d}"


def harvest_parallel(model, hooks: list[str], texts: list[str], out_dirs: list[Path], dp, *,
                     batch_size: int = 32, max_rows: int | None = None, **kw) -> list[ActivationStore]:
    """``harvest_hooks`` split over the ranks of ``dp`` (module doc); every rank calls it and
    gets the merged stores. Keywords as ``harvest_hooks``; ``max_rows`` is applied when merging
    (a rank cannot know how many rows the ranks before it keep)."""
    lo, hi = text_range(len(texts), batch_size, dp.rank, dp.world)
    done = [d for d in map(Path, out_dirs) if _complete(d)]
    if len(done) < len(out_dirs):
        parts = [part_dir(d, dp.rank, dp.world) for d in out_dirs]
        harvest_hooks(model, hooks, texts[lo:hi], parts, batch_size=batch_size, doc_offset=lo, **kw)
    dp.barrier()
    if dp.is_main:
        for d in map(Path, out_dirs):
            if not _complete(d):
                merge_parts(d, [part_dir(d, r, dp.world) for r in range(dp.world)], max_rows)
    dp.barrier()
    return [ActivationStore.open(d) for d in out_dirs]


def _complete(out_dir: Path) -> bool:
    try:
        ActivationStore.open(out_dir)
        return True
    except ArtifactError:
        return False


def merge_parts(out_dir: Path, parts: list[Path], max_rows: int | None = None) -> ActivationStore:
    """One store in ``out_dir`` from complete part stores, their shards in order (module doc), cut
    after ``max_rows`` rows when given (the shard that crosses it is rewritten, shorter)."""
    stores = [ActivationStore.open(p) for p in parts]
    metas = {(s.meta.model, s.meta.hook, s.meta.d, s.meta.dtype, s.meta.context_size, s.meta.shard_tokens,
              s.meta.exclude_special, s.meta.source) for s in stores}
    if len(metas) != 1:
        raise ArtifactError(f"the parts under {out_dir} were harvested with different settings; delete the "
                            "store directory and harvest again")
    remove_shards_from(out_dir, 0)
    shard_rows: list[int] = []
    left = sum(s.n_tokens for s in stores) if max_rows is None else max_rows
    for store in stores:
        for i, rows in enumerate(store.shard_rows):
            if left <= 0:
                break
            if rows > left:
                _write_head(store, i, left, out_dir, len(shard_rows))
                rows = left
            else:
                _link_or_copy(shard_path(store.path, i), shard_path(out_dir, len(shard_rows)))
            shard_rows.append(rows)
            left -= rows
    meta: StoreMeta = replace(stores[0].meta, n_tokens=sum(shard_rows), complete=True)
    write_meta(out_dir, meta, shard_rows)
    merged = ActivationStore.open(out_dir)
    for p in parts:
        shutil.rmtree(p, ignore_errors=True)
    return merged


def _write_head(store: ActivationStore, index: int, rows: int, out_dir: Path, out_index: int) -> None:
    """Shard ``out_index`` of ``out_dir``: the first ``rows`` rows of ``store``'s shard ``index``."""
    t = load_tensors(shard_path(store.path, index))
    write_shard(out_dir, out_index, t["acts"][:rows], t["tokens"][:rows], t["doc"][:rows], t["pos"][:rows])


def _link_or_copy(src: Path, dst: Path) -> None:
    tmp = dst.with_name(dst.name + ".tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)
