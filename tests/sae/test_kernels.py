"""The fast sparse kernels agree with the plain dense path (codes, reconstructions, every
parameter's gradient, buffers), including ties and batches with fewer positives than k."""
import pytest
import torch

from sae_core.sae import SAEConfig, create_sae, kernels
from sae_core.training.step import aux_k_loss
from sae_core.training.loop import TrainerConfig, train_sae
from tests.helpers import batch_source, sae_state

ARCHS = ["topk", "batchtopk", "sampled"]


@pytest.fixture(autouse=True)
def mode():
    """Tests switch the kernels mode; restore the previous one afterwards."""
    old = kernels.kernels_mode()
    yield kernels.set_kernels
    kernels.set_kernels(old)


def _run(cfg, state, x_ND, mode, dead_S=None):
    """One forward + loss (MSE, plus AuxK when ``dead_S`` is given) + backward under ``mode``."""
    kernels.set_kernels(mode)
    sae = create_sae(cfg).train()
    sae.load_state_dict(state)
    out = sae(x_ND)
    loss = (out.x_hat - x_ND).pow(2).sum(-1).mean()
    if dead_S is not None:
        loss = loss + aux_k_loss(sae, x_ND, out, dead_S)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in sae.named_parameters()}
    return out, grads, dict(sae.named_buffers()), out.fired(), out.l0()


def _assert_agree(cfg, state, x_ND, dead_S=None):
    p_out, p_grads, p_bufs, p_fired, p_l0 = _run(cfg, state, x_ND, "plain", dead_S)
    f_out, f_grads, f_bufs, f_fired, f_l0 = _run(cfg, state, x_ND, "fast", dead_S)
    assert p_out.codes is None and f_out.codes is not None
    assert torch.equal(p_out.z, f_out.z)  # the same entries, the same values
    torch.testing.assert_close(f_out.x_hat, p_out.x_hat, rtol=1e-5, atol=1e-5)
    for name, g in p_grads.items():
        torch.testing.assert_close(f_grads[name], g, rtol=1e-4, atol=1e-5, msg=name)
    for name, b in p_bufs.items():
        assert torch.equal(f_bufs[name], b), name
    assert torch.equal(p_fired, f_fired) and p_l0 == pytest.approx(f_l0)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("n, d_in, d_sae, k", [(1, 8, 16, 3), (50, 16, 64, 4), (300, 32, 256, 8),
                                              (1024, 16, 512, 16)])
def test_fast_path_agrees_on_random_inputs(arch, n, d_in, d_sae, k):
    # the last shape makes k*N large enough for the sampled-threshold BatchTopK selection
    cfg = SAEConfig(arch=arch, d_in=d_in, d_sae=d_sae, k=k, l=2.0)
    state = sae_state(cfg, seed=n)
    _assert_agree(cfg, state, torch.randn(n, d_in, generator=torch.Generator().manual_seed(n)))


@pytest.mark.parametrize("arch", ARCHS)
def test_fast_path_agrees_with_ties(arch):
    """Integer weights and inputs give many exactly equal pre-activations, also at the cut."""
    cfg = SAEConfig(arch=arch, d_in=8, d_sae=32, k=3, l=2.0)
    g = torch.Generator().manual_seed(0)
    state = sae_state(cfg, seed=0)
    state["W_enc"] = torch.randint(-1, 2, (8, 32), generator=g).float()
    state["b_enc"] = torch.zeros(32)
    state["b_dec"] = torch.zeros(8)
    x_ND = torch.randint(-1, 2, (40, 8), generator=g).float()
    _assert_agree(cfg, state, x_ND)


@pytest.mark.parametrize("arch", ARCHS)
def test_fast_path_agrees_when_k_exceeds_the_positive_activations(arch):
    cfg = SAEConfig(arch=arch, d_in=16, d_sae=64, k=20, l=2.0)
    state = sae_state(cfg, seed=1)
    state["b_enc"] = torch.full((64,), -2.5)  # only a few latents are positive per token
    x_ND = torch.randn(30, 16, generator=torch.Generator().manual_seed(1))
    _, _, _, _, l0 = _run(cfg, state, x_ND, "plain")
    assert 0 < l0 < 20
    _assert_agree(cfg, state, x_ND)


@pytest.mark.parametrize("arch", ARCHS)
def test_fast_aux_k_agrees(arch):
    cfg = SAEConfig(arch=arch, d_in=16, d_sae=128, k=4, l=2.0)
    state = sae_state(cfg, seed=2)
    dead_S = torch.rand(128, generator=torch.Generator().manual_seed(2)) < 0.5
    _assert_agree(cfg, state, torch.randn(64, 16, generator=torch.Generator().manual_seed(2)), dead_S)


def test_batch_topk_indices_matches_the_dense_rule():
    """The sampled-threshold selection keeps exactly the dense rule's positive entries."""
    g = torch.Generator().manual_seed(3)
    for shape, k_total, scale in [((2048, 256), 16 * 2048, 1.0), ((512, 64), 40_000, 1.0),
                                  ((4096, 128), 20_000, 0.0)]:
        acts_NS = torch.randn(shape, generator=g) + scale * torch.randn(shape[1], generator=g)
        acts_NS = torch.round(acts_NS * 8) / 8  # coarse values: many ties at the cut
        dense_NS = kernels.batch_topk_dense(torch.relu(acts_NS), k_total)
        flat_M = kernels.batch_topk_indices(acts_NS, k_total)
        assert torch.equal(flat_M, (dense_NS.flatten() > 0).nonzero().squeeze(1))


def _brute_masked_topk(acts_NS, cols_S, k):
    """The plain AuxK rule: relu of the allowed columns, each row's k largest, positive ones."""
    dead_NS = torch.relu(torch.where(cols_S, acts_NS, torch.full_like(acts_NS, -1.0)))
    vals_NK, idx_NK = dead_NS.topk(min(k, acts_NS.shape[1]), dim=-1)
    rows_NK = torch.arange(acts_NS.shape[0])[:, None].expand_as(idx_NK)
    return {(r, c) for r, c, v in zip(rows_NK.flatten().tolist(), idx_NK.flatten().tolist(),
                                      vals_NK.flatten().tolist()) if v > 0}


@pytest.mark.parametrize("block", [None, 1, 2, 4, 8, 16])
@pytest.mark.parametrize("n, s, k, allowed, shift", [
    (64, 512, 8, 0.9, 0.0),     # most columns allowed (the Sampled-SAE's AuxK)
    (64, 512, 8, 0.3, 0.0),     # few allowed
    (33, 300, 5, 0.8, 0.0),     # width not a multiple of the block: padded last block
    (20, 256, 16, 0.05, 0.0),   # k larger than the allowed columns
    (40, 256, 8, 0.9, -2.5),    # most rows have fewer than k positive allowed entries
    (10, 64, 4, 0.0, 0.0),      # nothing allowed
    (12, 40, 6, 1.0, 0.0),      # fewer blocks than k at the widest blocks: plain top-k
])
def test_masked_topk_row_indices_matches_brute_force(block, n, s, k, allowed, shift):
    g = torch.Generator().manual_seed(n + s + k)
    acts_NS = torch.randn(n, s, generator=g) + shift
    cols_S = torch.rand(s, generator=g) < allowed
    rows_M, cols_M = kernels.masked_topk_row_indices(acts_NS.clone(), cols_S, k, block=block)
    got = list(zip(rows_M.tolist(), cols_M.tolist()))
    assert set(got) == _brute_masked_topk(acts_NS, cols_S, k) and len(got) == len(set(got))
    assert torch.equal(rows_M, rows_M.sort().values)  # rows ascending (the decoder groups by row)
    assert bool(cols_S[cols_M].all()) and bool((acts_NS[rows_M, cols_M] > 0).all())


def test_masked_topk_in_place_keeps_the_selected_values():
    acts_NS = torch.randn(16, 1024, generator=torch.Generator().manual_seed(0))
    cols_S = torch.arange(1024) % 10 != 0
    work_NS = acts_NS.clone()
    rows_M, cols_M = kernels.masked_topk_row_indices(work_NS, cols_S, 8, inplace=True, block=8)
    assert torch.equal(work_NS[rows_M, cols_M], acts_NS[rows_M, cols_M])
    assert set(zip(rows_M.tolist(), cols_M.tolist())) == _brute_masked_topk(acts_NS, cols_S, 8)


def test_block_width_model_picks_blocks_only_for_many_allowed_columns():
    assert kernels._block_width(16384, int(0.92 * 16384), 256) > 1   # blocked measured faster
    assert kernels._block_width(16384, int(0.36 * 16384), 256) == 1  # blocked measured slower
    assert kernels._block_width(64, 60, 16) == 1                     # too narrow to prune


@pytest.mark.parametrize("arch", ARCHS)
def test_forward_into_a_reused_pre_buffer_is_the_same_forward(arch, mode):
    mode("fast")
    cfg = SAEConfig(arch=arch, d_in=16, d_sae=128, k=4, l=2.0)
    state = sae_state(cfg, seed=6)
    x_ND = torch.randn(50, 16, generator=torch.Generator().manual_seed(6))
    buf = torch.full((64, 128), float("nan"))  # larger than the batch, and stale
    outs = []
    for pre_buf in (None, buf):
        sae = create_sae(cfg).train()
        sae.load_state_dict(state)
        outs.append(sae(x_ND, pre_buf))
    assert torch.equal(outs[0].x_hat, outs[1].x_hat) and torch.equal(outs[0].z, outs[1].z)
    assert outs[1].pre.data_ptr() == buf.data_ptr()  # written in place, no fresh allocation
    sae = create_sae(cfg).train()
    sae.load_state_dict(state)
    small = sae(x_ND, torch.empty(10, 128))  # too few rows: ignored, not an error
    assert torch.equal(small.x_hat, outs[0].x_hat)


def test_unknown_mode_is_an_error():
    with pytest.raises(ValueError, match="plain"):
        kernels.set_kernels("turbo")


def test_relu_stays_dense_under_fast_kernels(mode):
    mode("fast")
    out = create_sae(SAEConfig(arch="relu", d_in=8, d_sae=16))(torch.randn(5, 8))
    assert out.codes is None and out.z.shape == (5, 16)


@pytest.mark.parametrize("arch", ARCHS)
def test_training_runs_agree(arch, mode):
    """20 full trainer steps (with AuxK active) give nearly the same weights on both paths."""
    g = torch.Generator().manual_seed(4)
    x = torch.randn(4096, 16, generator=g) * (torch.rand(16, generator=g) + 0.5)

    # wide and sparse, with a short dead window, so that AuxK has dead latents to work with
    # l=120: a pool of 240 latents, some of which lose every slot, so AuxK runs for Sampled too
    # (it counts silence only inside the pool)
    cfg = SAEConfig(arch=arch, d_in=16, d_sae=256, k=2, l=120.0)
    tcfg = TrainerConfig(total_tokens=256 * 20, batch_size=256, lr=1e-3, dead_tokens=256, seed=1)
    results = {}
    for m in ("plain", "fast"):
        mode(m)
        results[m] = train_sae(batch_source(x, 256), cfg, tcfg)
    plain, fast = (results[m].sae.state_dict() for m in ("plain", "fast"))
    for name, v in plain.items():
        torch.testing.assert_close(fast[name], v, rtol=1e-3, atol=1e-4, msg=name)
    assert any(h.aux > 0 for h in results["fast"].history)  # AuxK was exercised
    for a, b in zip(results["plain"].history, results["fast"].history):
        assert a.l0 == pytest.approx(b.l0) and a.loss == pytest.approx(b.loss, rel=1e-3)


def test_blocked_transpose_equals_the_transpose():
    from sae_core.sae.kernels import transposed

    for rows in (1, 511, 512, 1300):
        src = torch.randn(rows, 7)
        out = transposed(src)
        assert out.is_contiguous() and torch.equal(out, src.T)


def test_blocked_indices_above_a_cut_equal_nonzero():
    from sae_core.sae.kernels import flat_indices_above

    torch.manual_seed(0)
    for rows in (1, 128, 129, 700):
        acts = torch.randn(rows, 33)
        acts[0, :5] = 0.5  # ties at the cut
        for strict in (False, True):
            want = ((acts.reshape(-1) > 0.5) if strict else (acts.reshape(-1) >= 0.5)).nonzero().squeeze(1)
            assert torch.equal(flat_indices_above(acts, torch.tensor(0.5), strict), want)
