"""``sae-core index`` and ``feature``: feature indexes and one feature's dashboard data."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from sae_core.cli.common import (Bar, ColumnOpt, CorpusOpt, SplitOpt, WorkspaceOpt, config_option, friendly,
                                 sae_dir, text_source)
from sae_core.features.config import IndexConfig

commands = typer.Typer()


@commands.command("index")
@friendly
def index(sae: str = typer.Option(..., "--sae", help="SAE directory (ours or SAELens) or workspace SAE name."),
          tokens: int = config_option(IndexConfig, "n_tokens", "--tokens"),
          model: Optional[str] = typer.Option(None, help="Model (default: the one in the SAE's cfg.json)."),
          hook: Optional[str] = typer.Option(None, help="Hook (default: the one in the SAE's cfg.json)."),
          feature_map: bool = config_option(IndexConfig, "feature_map", "--map/--no-map"),
          n_top: int = config_option(IndexConfig, "n_top"),
          batch_size: int = config_option(IndexConfig, "batch_size"),
          parquet: Optional[Path] = typer.Option(None, help="Also export the whole index to this parquet file."),
          corpus: Optional[Path] = CorpusOpt, text_column: str = ColumnOpt, split: str = SplitOpt,
          workspace: Optional[Path] = WorkspaceOpt):
    """Build the feature index of an SAE (top contexts, histograms, logit effects, map)."""
    from sae_core.features.job import index_to_workspace
    from sae_core.features.export import export_parquet
    from sae_core.features.index import FeatureIndex
    from sae_core.sae.io import load_sae
    from sae_core.workspace import Workspace

    ws = Workspace(workspace)
    sae_path = sae_dir(ws, sae)
    loaded = load_sae(sae_path)
    model = model or loaded.cfg.model_name
    hook = hook or loaded.cfg.hook_name
    if not model or not hook:
        raise typer.BadParameter("the SAE's cfg.json names no model/hook: pass --model and --hook")
    cfg = IndexConfig(n_tokens=tokens, feature_map=feature_map, n_top=n_top, batch_size=batch_size)
    text = text_source(corpus, text_column, split)
    bar = Bar("index", unit="seq")
    art = index_to_workspace(ws, loaded, model, hook, cfg, sae_source=str(sae_path), text=text,
                             on_progress=bar, on_stage=lambda name: bar.bar.set_description(name[:40]))
    bar.close()
    typer.echo(f"feature_index/{art.name}: {art.meta.get('d_sae')} features over "
               f"{art.meta.get('n_tokens', 0):,} tokens -> {art.path}")
    if parquet:
        export_parquet(FeatureIndex.open(art.path), parquet)
        typer.echo(f"exported -> {parquet}")


@commands.command("feature")
@friendly
def feature(number: int = typer.Argument(..., help="Feature number."),
            index_dir: Path = typer.Option(..., "--index", help="A feature index directory."),
            out: Optional[Path] = typer.Option(None, help="Write the JSON here instead of printing it.")):
    """One feature's dashboard data as Neuronpedia-like JSON."""
    from sae_core.features.export import export_feature_json, feature_json
    from sae_core.features.index import FeatureIndex

    idx = FeatureIndex.open(index_dir)
    if out:
        typer.echo(f"wrote {export_feature_json(idx, number, out)}")
    else:
        typer.echo(feature_json(idx.feature(number), idx))


