"""Exports of a feature index for other tools.

- ``feature_json``: one feature's dashboard data in a shape close to Neuronpedia's feature JSON
  (``activations`` with ``tokens``/``values``/``maxValue``/``maxValueTokenIndex``,
  ``pos_str``/``pos_values``, ``neg_str``/``neg_values``, ``frac_nonzero``, the histograms as
  ``freq_hist_data_bar_heights``/``freq_hist_data_bar_values`` and ``logits_hist_data_*``,
  ``topkCosSimIndices``/``topkCosSimValues``), plus a ``sae_studio`` block with our extra fields.
- ``export_parquet``: the whole index as one parquet table, a row per feature with list columns,
  written in feature batches (DuckDB: ``SELECT * FROM 'features.parquet' WHERE feature = 7``).
"""
from __future__ import annotations

from pathlib import Path

from sae_core.features.index import FeatureIndex, FeatureView
from sae_core.io import atomic_write_bytes, dumps_json

PARQUET_BATCH = 1024


def _centres(edges: list[float]) -> list[float]:
    return [(a + b) / 2 for a, b in zip(edges[:-1], edges[1:])]


def _example(e) -> dict:
    return {"tokens": e.tokens, "values": e.acts, "maxValue": e.value, "maxValueTokenIndex": e.peak}


def feature_record(view: FeatureView, index: FeatureIndex) -> dict:
    """The Neuronpedia-like dict for one feature (see the module doc)."""
    info = index.info
    return {
        "modelId": info.get("model_name", ""), "layer": info.get("hook", ""), "index": view.index,
        "activations": [_example(e) for e in view.top],
        "pos_str": [t for t, _ in view.promoted], "pos_values": [v for _, v in view.promoted],
        "neg_str": [t for t, _ in view.suppressed], "neg_values": [v for _, v in view.suppressed],
        "frac_nonzero": view.density, "maxActApprox": view.max_act,
        "freq_hist_data_bar_heights": view.hist_counts,
        "freq_hist_data_bar_values": _centres(view.hist_edges),
        "logits_hist_data_bar_heights": view.logit_hist_counts,
        "logits_hist_data_bar_values": _centres(view.logit_hist_edges),
        "topkCosSimIndices": [j for j, _ in view.nearest],
        "topkCosSimValues": [c for _, c in view.nearest],
        "sae_studio": {
            "sae_fingerprint": index.fingerprint, "n_tokens": info.get("n_tokens"),
            "count": view.count, "log10_density": view.log10_density,
            "quantile_examples": [{"label": label, "examples": [_example(e) for e in group]}
                                  for label, group in view.quantiles],
            "map_xy": list(view.map_xy) if view.map_xy else None,
        },
    }


def feature_json(view: FeatureView, index: FeatureIndex) -> str:
    return dumps_json(feature_record(view, index), indent=1)  # a dead feature's log10_density: null


def export_feature_json(index: FeatureIndex, feature: int, path: Path) -> Path:
    atomic_write_bytes(Path(path), feature_json(index.feature(feature), index).encode())
    return Path(path)


def _schema(pa):
    f32, strs = pa.float32(), pa.list_(pa.string())
    return pa.schema([
        ("feature", pa.int64()), ("density", pa.float64()), ("count", pa.int64()), ("max_act", f32),
        ("top_tokens", pa.list_(strs)), ("top_values", pa.list_(pa.list_(f32))),
        ("top_peak", pa.list_(pa.int32())), ("top_max", pa.list_(f32)),
        ("pos_str", strs), ("pos_values", pa.list_(f32)), ("neg_str", strs), ("neg_values", pa.list_(f32)),
        ("hist_edges", pa.list_(pa.float64())), ("hist_counts", pa.list_(pa.int64())),
        ("nearest", pa.list_(pa.int64())), ("nearest_cos", pa.list_(f32)),
        ("map_x", f32), ("map_y", f32)])


def export_parquet(index: FeatureIndex, path: Path, on_progress=None) -> Path:
    """The whole index as a parquet table (one row per feature), written atomically."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    writer = None
    try:
        for start in range(0, index.n_features, PARQUET_BATCH):
            rows = []
            for i in range(start, min(start + PARQUET_BATCH, index.n_features)):
                v = index.feature(i)
                rows.append({
                    "feature": i, "density": v.density, "count": v.count, "max_act": v.max_act,
                    "top_tokens": [e.tokens for e in v.top], "top_values": [e.acts for e in v.top],
                    "top_peak": [e.peak for e in v.top], "top_max": [e.value for e in v.top],
                    "pos_str": [t for t, _ in v.promoted], "pos_values": [x for _, x in v.promoted],
                    "neg_str": [t for t, _ in v.suppressed], "neg_values": [x for _, x in v.suppressed],
                    "hist_edges": v.hist_edges, "hist_counts": v.hist_counts,
                    "nearest": [j for j, _ in v.nearest], "nearest_cos": [c for _, c in v.nearest],
                    "map_x": v.map_xy[0] if v.map_xy else None, "map_y": v.map_xy[1] if v.map_xy else None,
                })
            table = pa.Table.from_pylist(rows, schema=_schema(pa))
            if writer is None:
                writer = pq.ParquetWriter(tmp, table.schema)
            writer.write_table(table)
            if on_progress:
                on_progress(min(start + PARQUET_BATCH, index.n_features), index.n_features)
        writer.close()
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
