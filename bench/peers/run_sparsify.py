"""EleutherAI sparsify (``eai-sparsify``): its ``SparseCoder`` TopK SAE and its training step.

Mirrors one step of ``sparsify.trainer.Trainer.fit`` with ``loss_fn="fvu"`` (the hook function
and the step bookkeeping), with the in-memory batch in place of the model's hooked activations:

- step 0 only: ``b_dec`` <- batch mean; every step: ``set_decoder_norm_to_unit_norm()``;
- ``total_variance = (y - y.mean(0)).pow(2).sum()``; ``out = sae(x, y=x, dead_mask=...,
  total_variance=...)``; ``loss = out.fvu + auxk_alpha * out.auxk_loss + out.multi_topk_fvu / 8``;
  ``loss.backward()``; ``float(out.fvu)`` for the running metric (the trainer's sync point);
- fired-latent mask, ``remove_gradient_parallel_to_decoder_directions()``, ``optimizer.step()``,
  ``zero_grad()``, ``scheduler.step()``, dead-latent counters.

Optimizer as ``Trainer.__init__`` builds it: ``adam`` = ``torch.optim.Adam`` (bitsandbytes 8-bit
Adam when importable; not installed here) with ``get_linear_schedule_with_warmup`` (warm-up 0 and a
horizon far beyond the run, i.e. a constant lr, to match the other trainers); ``signum`` (the
package's default) = ``ScheduleFreeWrapper(SignSGD, momentum=0.95)`` at its own default lr.
AuxK: ``auxk_alpha=1/32`` and a dead threshold of ``--dead-tokens`` (1M by default, which no
latent reaches in these short runs, so AuxK costs nothing; the driver passes the same window to
ours). The sparse decoder is the eager
``embedding_bag`` implementation (Triton is CUDA-only; ``SPARSIFY_DISABLE_TRITON=1``).
"""
from __future__ import annotations

import os
import sys

os.environ.setdefault("SPARSIFY_DISABLE_TRITON", "1")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

import _common  # noqa: E402


def main() -> None:
    def extra(p):
        p.add_argument("--optimizer", choices=["adam", "signum"], default="adam")
        p.add_argument("--auxk-alpha", type=float, default=1 / 32)
        p.add_argument("--dead-tokens", type=int, default=1_000_000)
    args = _common.parse_args(extra)
    train, held_out = _common.setup(args)
    rss_base = _common.rss_mb()

    from importlib.metadata import version

    from sparsify import SparseCoder, SparseCoderConfig
    from sparsify.sign_sgd import SignSGD
    from transformers import get_linear_schedule_with_warmup

    d_in = train.shape[1]
    cfg = SparseCoderConfig(activation="topk", num_latents=args.d_sae, k=args.k)
    torch.manual_seed(args.seed)
    sae = SparseCoder(d_in, cfg, args.device, dtype=torch.float32)
    if args.optimizer == "adam":
        try:
            from bitsandbytes.optim import Adam8bit as Adam
        except ImportError:
            from torch.optim import Adam
        opt = Adam([dict(params=sae.parameters(), lr=args.lr)])
        schedulers = [get_linear_schedule_with_warmup(opt, 0, 10**9)]
        lr = args.lr
    else:
        from schedulefree import ScheduleFreeWrapper

        lr = 5e-3 / (sae.num_latents / (2**14)) ** 0.5  # the package's signum default
        opt = ScheduleFreeWrapper(SignSGD([dict(params=sae.parameters(), lr=lr)]), momentum=0.95)
        opt.train()
        schedulers = []

    since_fired = torch.zeros(sae.num_latents, dtype=torch.long, device=args.device)
    did_fire = torch.zeros(sae.num_latents, dtype=torch.bool, device=args.device)
    state = {"step": 0, "fvu_sum": 0.0}

    def step(x):
        if state["step"] == 0:
            sae.b_dec.data = x.mean(0).to(sae.dtype)
        sae.set_decoder_norm_to_unit_norm()
        dead_mask = since_fired > args.dead_tokens if args.auxk_alpha > 0 else None
        total_variance = (x - x.mean(0)).pow(2).sum()
        out = sae(x=x, y=x, dead_mask=dead_mask, total_variance=total_variance)
        did_fire[out.latent_indices.flatten()] = True
        state["fvu_sum"] += float(out.fvu.detach())
        loss = out.fvu + args.auxk_alpha * out.auxk_loss + out.multi_topk_fvu / 8
        loss.backward()
        sae.remove_gradient_parallel_to_decoder_directions()
        opt.step()
        opt.zero_grad()
        for s in schedulers:
            s.step()
        with torch.no_grad():
            since_fired.add_(x.shape[0])
            since_fired[did_fire] = 0
            did_fire.zero_()
        state["step"] += 1

    durations = _common.timed_loop(step, train, args)

    if args.optimizer == "signum":
        opt.eval()  # schedule-free: evaluate at the averaged weights, as Trainer.save does

    def recon(x):
        out = sae(x=x)
        z = torch.zeros(x.shape[0], sae.num_latents).scatter_(1, out.latent_indices, out.latent_acts)
        return out.sae_out, z
    sae.eval()
    fvu, l0 = _common.fvu_l0(recon, held_out, args.batch)
    _common.emit(args, durations, fvu, l0, rss_base, trainer=f"sparsify-topk-{args.optimizer}",
                 lr=lr, version=version("eai-sparsify"),
                 decoder_impl=__import__("sparsify.utils", fromlist=["decoder_impl"]).decoder_impl.__name__)


if __name__ == "__main__":
    main()
