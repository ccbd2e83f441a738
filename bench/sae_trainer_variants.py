"""Trainer variants side by side: held-out FVU (inference rule and, for the BatchTopK family, the
training batch rule), L0, dead-latent fraction and wall time after N steps, for the choices in
``sae_core.training.loop`` (decoder init, dead window, AuxK token fraction) and the Sampled-SAE's
inference calibration.

A variant is ``ARCH[:field=value...]``; a field is any ``SAEConfig`` or ``TrainerConfig`` field
(``decoder_init=random``, ``dead_tokens=1000000``, ``aux_fraction=1.0``, ``l=16``,
``scoring=entropy``, ...). Data: ``--data small`` is ``sae_throughput.py``'s small activation file
(run that first), or ``--acts DIR`` a workspace activation store. The training rows are shuffled
once (seed 0), the last ``--eval-rows`` rows are held out; every variant sees the same batches.
Constant learning rate (the trainer's default value), no warm-up, no decay, as in
``sae_throughput.py``.

    .venv/bin/python bench/sae_trainer_variants.py --steps 400 \\
        --variants batchtopk,batchtopk:decoder_init=random,batchtopk:aux_fraction=1.0,topk
    .venv/bin/python bench/sae_trainer_variants.py --acts WORKSPACE/activations/NAME --d-sae 512 \\
        --k 16 --batch 1024 --steps 195 --eval-rows 10000 \\
        --variants sampled:l=16:scoring=entropy,sampled:l=16:scoring=entropy:decoder_init=random
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from sae_core.sae.config import SAEConfig  # noqa: E402
from sae_core.training.loop import TrainerConfig, train_sae  # noqa: E402


def _parse(variant: str, base: dict) -> tuple[SAEConfig, dict]:
    arch, *opts = variant.split(":")
    sae_kw, tr_kw = dict(base["sae"], arch=arch), dict(base["trainer"])
    types = {f.name: f.type for f in dataclasses.fields(SAEConfig) + dataclasses.fields(TrainerConfig)}
    for opt in opts:
        key, value = opt.split("=", 1)
        if key not in types:
            raise SystemExit(f"unknown field {key!r} in variant {variant!r}")
        cast = float if "float" in str(types[key]) else int if "int" in str(types[key]) else str
        (sae_kw if key in SAEConfig.__dataclass_fields__ else tr_kw)[key] = cast(value)
    return SAEConfig(**sae_kw), tr_kw


def _fvu(recon, held_ND: torch.Tensor, batch: int) -> tuple[float, float]:
    err, active = 0.0, 0
    with torch.no_grad():
        for s in range(0, held_ND.shape[0], batch):
            x = held_ND[s:s + batch]
            z = recon(x)
            err += (z[0] - x).pow(2).sum().item()
            active += int((z[1] != 0).sum())
    return err / (held_ND - held_ND.mean(0)).pow(2).sum().item(), active / held_ND.shape[0]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--variants", required=True)
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--data", default="small", help="small: bench/results/data/small_d128.npy")
    p.add_argument("--acts", type=Path, default=None, help="a workspace activation store instead")
    p.add_argument("--d-sae", type=int, default=2048)
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--batch", type=int, default=4096)
    p.add_argument("--eval-rows", type=int, default=16384)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.acts:
        from sae_core.activations.store import ActivationStore
        x = ActivationStore.open(args.acts).read_all().float()
    else:
        path = REPO / "bench" / "results" / "data" / f"{args.data}_d128.npy"
        if not path.exists():
            raise SystemExit(f"{path} is missing: run bench/sae_throughput.py --sizes {args.data} first")
        x = torch.from_numpy(np.load(path))
    train, held = x[:-args.eval_rows], x[-args.eval_rows:]
    train = train[torch.randperm(train.shape[0], generator=torch.Generator().manual_seed(0))]
    n_batches = train.shape[0] // args.batch

    def source(seed: int):
        for i in range(n_batches):
            yield train[i * args.batch:(i + 1) * args.batch]

    base = {"sae": dict(d_in=x.shape[1], d_sae=args.d_sae, k=args.k),
            "trainer": dict(total_tokens=args.steps * args.batch, batch_size=args.batch,
                            warmup_steps=0, decay_fraction=0.0, seed=0, device="cpu")}
    print(f"data {args.acts or args.data}: {train.shape[0]} training rows ({n_batches} batches), "
          f"{held.shape[0]} held out; d_sae {args.d_sae}, k {args.k}, batch {args.batch}, {args.steps} steps")
    print(f"{'variant':58} {'FVU':>8} {'FVU batch':>9} {'L0':>6} {'dead':>6} {'s':>6}")
    for variant in args.variants.split(","):
        cfg, tr_kw = _parse(variant, base)
        t0 = time.perf_counter()
        res = train_sae(source, cfg, TrainerConfig(**tr_kw))
        seconds = time.perf_counter() - t0
        sae = res.sae
        fvu, l0 = _fvu(lambda h: (sae(h).x_hat, sae.encode(h)), held, args.batch)
        fvu_b = (_fvu(lambda h: ((z := sae.encode_batch_rule(h)) @ sae.W_dec + sae.b_dec, z), held, args.batch)[0]
                 if hasattr(sae, "encode_batch_rule") else float("nan"))
        row = dict(variant=variant, fvu=fvu, fvu_batch_rule=fvu_b, l0=l0,
                   dead_fraction=res.history[-1].aux_dead_fraction, seconds=seconds)
        print(f"{variant:58} {fvu:8.4f} {fvu_b:9.4f} {l0:6.1f} {row['dead_fraction']:6.3f} {seconds:6.1f}",
              flush=True)
        print(json.dumps(row), file=sys.stderr)


if __name__ == "__main__":
    main()
