"""Steering's workspace artifacts: how each is built from others, saved, and found by name.

- kind ``steering``: the study of ``study.StudyConfig`` (``steering_study_to_workspace``):
  ``vectors/<name>/``, ``mappers/<name>/`` and ``study.json`` (``study.Study``);
- kind ``capabilities``: the corrupted-capabilities study of ``capabilities.CapabilitiesConfig``
  (``capabilities_to_workspace``): per-layer vectors and mappers and ``capabilities.json``;
- kind ``vector`` (``sae-core steer vector|transfer``): one ``SteeringVector`` (``vector.safetensors``
  + ``vector.json``), saved by ``save_vector``;
- kind ``mapper`` (``sae-core steer map|switch``): one ``Mapper`` (``mapper.safetensors`` +
  ``mapper.json``), with ``role`` ``transfer`` or ``switch`` in its record (``mapper_to_workspace``,
  ``save_mapper``). Its registry record lists both inputs (source and target model and hook), so
  ``Workspace.list(uses=model)`` finds it from either side.
- kind ``gated_switch``: a study's switch gated by an SAE feature (``gate_to_workspace``,
  ``gated_switch`` module doc): ``gate.json``; an SAE it trained is an ``sae`` artifact of its own.
The studies return at once when their artifact exists (the name is a hash of the configuration).
``find_vector`` / ``find_mapper`` resolve a directory, a workspace artifact name, or a study's
vector or mapper name, newest study first.
"""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Callable

from sae_core.activations.paired import open_paired, paired_to_workspace
from sae_core.errors import ArtifactError
from sae_core.io import atomic_write_json
from sae_core.models.loading import load_model
from sae_core.models.texts import TextSource
from sae_core.sae.io import load_sae, save_sae
from sae_core.steering import capabilities as C, gated_switch as G, study as S
from sae_core.steering.feature_edits import check_sae_fits
from sae_core.steering.mapper_training import train_mapper_streaming
from sae_core.steering.mappers import Endpoint, Mapper, fidelity
from sae_core.steering.vectors import SteeringVector
from sae_core.workspace import Artifact, Workspace, artifact_name

VECTOR, MAPPER = "vector", "mapper"
Progress = Callable[[int, int, str], None]


def _no_progress(done: int, total: int, text: str) -> None:
    """The default ``on_progress``."""


def steering_study_to_workspace(ws: Workspace, cfg: S.StudyConfig = S.StudyConfig(), *,
                                load: Callable[[str], object] | None = None,
                                on_progress: Progress | None = None) -> Artifact:
    """Build (or find) the steering study of ``cfg`` (``study`` module doc). ``load(name)``: how models
    are loaded (default ``load_model``; the app passes its cache)."""
    name = artifact_name(cfg.target_model, cfg.target_hook, {"study": asdict(cfg), "revision": S.REVISION})
    if (existing := ws.get(S.KIND, name)) is not None:
        return existing
    load, step = load or load_model, on_progress or _no_progress
    built = S.build_study(load(cfg.source_model), load(cfg.target_model), load(cfg.base_model), cfg, step)
    rates = built.results["rates"]
    meta = {"source_model": cfg.source_model, "base_model": cfg.base_model,
            "alpha": built.results["tasks"][S.ALPHA_TASK]["alpha"],
            "hate_rate_native": rates["fine-tuned + native vector"]["hate_rate"],
            "hate_rate_switch": rates["fine-tuned + switch"]["hate_rate"]}
    return _save(ws, S.KIND, name, built, S.Study.FILE, cfg, meta, step, model=cfg.target_model,
                 hook=cfg.target_hook)


def capabilities_to_workspace(ws: Workspace, cfg: C.CapabilitiesConfig = C.CapabilitiesConfig(), *,
                              load: Callable[[str], object] | None = None,
                              on_progress: Progress | None = None) -> Artifact:
    """Build (or find) the per-layer corrupted-capabilities study of ``cfg`` (``capabilities`` module doc)."""
    name = artifact_name(cfg.target_model, "layers", {"capabilities": asdict(cfg), "revision": C.REVISION})
    if (existing := ws.get(C.KIND, name)) is not None:
        return existing
    load, step = load or load_model, on_progress or _no_progress
    built = C.build_capabilities(load(cfg.source_model), load(cfg.target_model), cfg, step)
    best = max(built.results["layers"], key=lambda r: r["outcomes"]["native"]["correct"])
    meta = {"source_model": cfg.source_model, "best_layer": best["layer"],
            "best_correct": best["outcomes"]["native"]["correct"]}
    return _save(ws, C.KIND, name, built, C.Capabilities.FILE, cfg, meta, step, model=cfg.target_model)


def gate_to_workspace(ws: Workspace, study_art: Artifact, cfg: G.GateConfig = G.GateConfig(), *,
                      load: Callable[[str], object] | None = None, on_progress: Progress | None = None) -> Artifact:
    """Build (or find) the gated switch of ``cfg`` beside the study ``study_art`` (``gated_switch``
    module doc): ``gate.json``, and the gate's SAE, when it trained one, as an ``sae`` artifact."""
    study = S.Study.open(study_art.path)
    G.check_study(study)
    target = study.config["target_model"]
    name = artifact_name(target, "gate", {"gate": asdict(cfg), "study": study_art.name, "revision": G.REVISION})
    if (existing := ws.get(G.KIND, name)) is not None:
        return existing
    load, step = load or load_model, on_progress or _no_progress
    tgt = load(target)
    sae = None
    if cfg.sae:
        sae = load_sae(Path(cfg.sae))
        check_sae_fits(tgt, sae, sae.cfg.hook_name or study.mapper("switch").source.hook)
    results, trained = G.build_gate(study, tgt, cfg, sae, step)
    gate = results["gate"]
    step(G.STEPS - 1, G.STEPS, "writing")
    if trained is not None:  # an SAE artifact of its own: the feature browser lists it, and the page links to it
        sae_name = artifact_name(target, gate["hook"], {"gate_sae": asdict(cfg.sae_training), "study": study_art.name})
        c = trained.cfg
        with ws.create("sae", sae_name, model=target, hook=gate["hook"], overwrite=True,
                       meta={"arch": c.arch, "d_sae": c.d_sae, "k": c.k, "tokens": cfg.sae_training.train_tokens,
                             "made_for": f"gated switch {name}"}) as d:
            save_sae(trained, d)
        results["sae"]["source"] = f"{G.WORKSPACE_SAE}{sae_name}"
    meta = {"study": study_art.name, "feature": gate["feature"], "auroc": gate["auroc"], "latch": cfg.latch,
            "hate_rate_gated": results["rates"]["gated switch"]["hate_rate"],
            "clean_share": results["targets"]["clean_share"]}
    with ws.create(G.KIND, name, model=target, hook=gate["hook"], meta=meta, overwrite=True) as d:
        atomic_write_json(d / G.GateResults.FILE, {"config": asdict(cfg), "results": results})
    step(G.STEPS, G.STEPS, "done")
    return ws.get(G.KIND, name)


def _save(ws: Workspace, kind: str, name: str, built: S.BuiltStudy, file: str, cfg, meta: dict, step: Progress,
          *, model: str, hook: str | None = None) -> Artifact:
    """Write a study's vectors, mappers and ``file`` (config and results) as the artifact ``kind/name``."""
    step(built.steps - 1, built.steps, "writing")
    with ws.create(kind, name, model=model, hook=hook, meta=meta, overwrite=True) as d:
        for vname, v in built.vectors.items():
            v.save(d / "vectors" / vname)
        for mname, m in built.mappers.items():
            m.save(d / "mappers" / mname)
        atomic_write_json(d / file, {"config": {**asdict(cfg), "mapper": asdict(cfg.mapper)},
                                     "results": built.results})
    step(built.steps, built.steps, "done")
    return ws.get(kind, name)


def save_vector(ws: Workspace, v: SteeringVector, name: str | None = None) -> Artifact:
    name = name or artifact_name(v.model, v.hook, v.meta())
    with ws.create(VECTOR, name, model=v.model, hook=v.hook, meta={"method": v.method, "norm": v.norm,
                                                                  "position": v.position}, overwrite=True) as d:
        v.save(d)
    return ws.get(VECTOR, name)


def save_mapper(ws: Workspace, m: Mapper, role: str, name: str | None = None, extra: dict | None = None) -> Artifact:
    meta = {k: v for k, v in m.meta().items() if k != "history"}
    name = name or artifact_name(m.target.model, m.target.hook, {**meta, "role": role})
    inputs = [{"model": m.source.model, "hook": m.source.hook, "side": "source"},
              {"model": m.target.model, "hook": m.target.hook, "side": "target"}]
    with ws.create(MAPPER, name, model=m.source.model, hook=m.source.hook,
                   meta={"role": role, "inputs": inputs, "kind": m.kind, **(extra or {})}, overwrite=True) as d:
        m.save(d)
    return ws.get(MAPPER, name)


def mapper_to_workspace(ws: Workspace, side_a: tuple[str, str], side_b: tuple[str, str], cfg, *, role: str,
                        n_tokens: int, text=None, name: str | None = None, load=None,
                        on_progress=None) -> tuple[Artifact, object]:
    """Harvest the pair (``paired_to_workspace``), train a mapper streamed from it with checkpoints
    under ``.checkpoints/`` (a rerun resumes), measure its fidelity on the text's held-out documents,
    and save it; returns ``(artifact, Fidelity)``."""
    load = load or load_model
    text = text or TextSource()
    pair_art = paired_to_workspace(ws, side_a, side_b, n_tokens=n_tokens, text=text, load=load)
    pair = open_paired(ws, pair_art)
    ckpt = ws.checkpoint_dir(artifact_name(side_b[0], side_b[1], {"pair": pair_art.name, "cfg": asdict(cfg)}))
    m = train_mapper_streaming(pair, cfg, source=Endpoint(*side_a), target=Endpoint(*side_b), ckpt_dir=ckpt,
                               on_progress=on_progress)
    fid = fidelity(m, load(side_a[0]), side_a[1], load(side_b[0]), side_b[1], text.eval_documents(200))
    art = save_mapper(ws, m, role, name, {"fidelity": fid.to_json(), "paired": pair_art.name})
    return art, fid


def _study_with(ws: Workspace, sub: str, name: str):
    """The newest study artifact holding ``sub/name``."""
    return next((art for art in ws.list(S.KIND) if (art.path / sub / name).is_dir()), None)


def _find(ws: Workspace, kind: str, sub: str, name: str, load, what: str, hint: str):
    if Path(name).is_dir():
        return load(Path(name))
    if (art := ws.get(kind, name)) is not None:
        return load(art.path)
    if (study := _study_with(ws, sub, name)) is not None:
        return load(study.path / sub / name)
    known = [a.name for a in ws.list(kind)]
    raise ArtifactError(f"no {what} {name!r} in {ws.root} ({kind}s: {', '.join(known) or 'none'}; {hint})")


def find_vector(ws: Workspace, name: str) -> SteeringVector:
    """A vector directory, a ``vector`` artifact, or a study's vector (module doc)."""
    return _find(ws, VECTOR, "vectors", name, SteeringVector.load, "steering vector",
                 "a study's are native, transferred, random, refusal-native, ...; make one with `sae-core steer vector`")


def find_mapper(ws: Workspace, name: str) -> Mapper:
    """A mapper directory, a ``mapper`` artifact, or a study's mapper (transfer, refusal-transfer, switch)."""
    return _find(ws, MAPPER, "mappers", name, Mapper.load, "mapper",
                 "a study's are transfer, refusal-transfer, switch; train one with `sae-core steer map` or `steer switch`")


def find_gated_switch(ws: Workspace, name: str, threshold: float | None = None):
    """``(gated switch intervention, its study)`` of the ``gated_switch`` artifact ``name`` ("latest": the
    newest); ``threshold`` replaces the gate's own."""
    arts = ws.list(G.KIND)
    art = arts[0] if name == "latest" and arts else ws.get(G.KIND, name)
    if art is None:
        raise ArtifactError(f"no gated switch {name!r} in {ws.root} (gated switches: "
                            f"{', '.join(a.name for a in arts) or 'none'}; make one with `sae-core steer gate`)")
    gate = G.GateResults.open(art.path)
    study_art = ws.get(S.KIND, gate.results.get("study") or art.meta.get("study", ""))
    if study_art is None:
        raise ArtifactError(f"the gated switch {art.name} gates the switch of study {art.meta.get('study')!r}, "
                            f"which is not in {ws.root} any more")
    study = S.Study.open(study_art.path)
    return gate.intervention(study, threshold), study
