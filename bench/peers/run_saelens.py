"""SAELens (``sae-lens`` 6.x): its BatchTopK training SAE driven by its own ``SAETrainer``.

``BatchTopKTrainingSAE(BatchTopKTrainingSAEConfig(d_in, d_sae, k))`` with the config's defaults
(decoder rows initialised to norm 0.1, ``rescale_acts_by_decoder_norm=True``, ``b_dec`` zeros, no
activation normalisation, AuxK coefficient 1.0) and ``SAETrainer(SAETrainerConfig(...), sae,
data_provider)`` as ``LanguageModelSAETrainingRunner`` builds it (Adam betas 0.9/0.999, constant lr
scheduler, no warm-up, dead-feature window 1000 steps, no checkpoints, no wandb). Each step is the
body of ``SAETrainer.fit``: ``maybe_reset_sparsity()``, ``step(batch)`` (training forward pass
+ loss, firing statistics, ``loss.backward()``, ``clip_grad_norm_(1.0)``, ``Adam.step()``,
``zero_grad()``, lr and coefficient scheduler steps), ``_checkpoint_if_needed()``, the step counter
and the progress-bar update (a disabled tqdm). The in-memory batch replaces the model-driven
``ActivationsStore``.

FVU: ``fvu`` is the inference SAE SAELens writes for a BatchTopK run (``save_inference_model`` ->
``SAE.load_from_disk``: a JumpReLU with the learned ``topk_threshold``); ``fvu_train_rule`` is the
training SAE's own BatchTopK encode over held-out batches of the training batch size.
"""
from __future__ import annotations

import os
import sys
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

import _common  # noqa: E402


def _recon(sae, x):
    z = sae.encode(x)
    return sae.decode(z), z


def main() -> None:
    args = _common.parse_args()
    train, held_out = _common.setup(args)
    rss_base = _common.rss_mb()

    from importlib.metadata import version

    from sae_lens import SAE, BatchTopKTrainingSAE, BatchTopKTrainingSAEConfig, SAETrainer
    from sae_lens.config import SAETrainerConfig
    from tqdm.auto import tqdm

    d_in = train.shape[1]
    torch.manual_seed(args.seed)
    cfg = BatchTopKTrainingSAEConfig(d_in=d_in, d_sae=args.d_sae, k=float(args.k),
                                     dtype="float32", device=args.device)
    sae = BatchTopKTrainingSAE(cfg)
    total = (args.warmup + args.steps) * args.batch
    tcfg = SAETrainerConfig(total_training_samples=total, train_batch_size_samples=args.batch,
                            lr=args.lr, lr_end=args.lr, lr_scheduler_name="constant",
                            lr_warm_up_steps=0, device=args.device, autocast=False)

    def provider():
        i = 0
        while True:
            yield _common.batch_at(train, i, args.batch)
            i += 1
    trainer = SAETrainer(tcfg, sae, provider())
    trainer.sae.to(args.device)
    pbar = tqdm(total=total, disable=True)

    def step(x):
        trainer.maybe_reset_sparsity()
        out = trainer.step(x)
        trainer._checkpoint_if_needed()
        trainer.n_training_steps += 1
        trainer._update_pbar(out, pbar)

    durations = _common.timed_loop(step, train, args)

    sae.eval()
    with torch.no_grad():
        fvu_b, l0_b = _common.fvu_l0(lambda x: _recon(sae, x), held_out, args.batch)
    with tempfile.TemporaryDirectory() as d:
        sae.save_inference_model(d)
        inf = SAE.load_from_disk(d, device=args.device)
    inf.eval()
    with torch.no_grad():
        fvu, l0 = _common.fvu_l0(lambda x: _recon(inf, x), held_out, args.batch)
    _common.emit(args, durations, fvu, l0, rss_base, trainer="saelens-batchtopk",
                 fvu_train_rule=fvu_b, l0_train_rule=l0_b, version=version("sae-lens"),
                 inference_class=type(inf).__name__,
                 topk_threshold=float(sae.topk_threshold))


if __name__ == "__main__":
    main()
