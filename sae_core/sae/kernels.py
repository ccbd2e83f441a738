"""Fast paths for the k-sparse SAEs (TopK, BatchTopK, Sampled), their plain fallback, and the one
switch between them (issue #3).

Why: with k active latents out of d_sae, the plain path spends almost all its time on dense
[N, d_sae] work that is multiplied by zeros: the decode ``z @ W_dec``, its backward (two more dense
matmuls) and the encoder's backward ``x^T @ grad_pre``. The fast path keeps the one dense matmul
that is needed (the encoder's forward, to know which latents win) and does everything else on the
M ~ k*N selected entries:

- selection runs under ``no_grad`` on the dense pre-activations and returns coordinates
  ``rows_M, cols_M`` (rows ascending); entries whose value is <= 0 are dropped, which changes
  nothing (their code is 0 and ReLU passes no gradient there);
- ``_EncodeAt`` attaches the encoder's gradient to the selected values: grad W_enc = (x-b_dec)^T @
  sparse grad, done as one ``embedding_bag`` over the entries grouped by latent;
- ``_SparseDecode`` is ``x_hat[n] = sum_m vals[m] W_dec[cols[m]]`` as an ``embedding_bag``; its
  backward gives grad vals with ``sampled_addmm`` (one dot product per entry) and grad W_dec with
  another ``embedding_bag`` (sparsify's decoder trick, plus a sparse encoder backward).
- BatchTopK's top k*N over the batch guesses a threshold from a strided sample, keeps the
  candidates above it and finds the exact k*N-th value among them (``kthvalue``), instead of a
  full ``topk`` over N*d_sae values.
- AuxK's per-token top k_aux among dead latents prunes by block maxima when most latents are
  dead (``masked_topk_row_indices``), as in the Sampled-SAE, whose pool leaves ~90% of them dead.

Ties: the batch selection keeps every value above the k*N-th largest value t and, among values
equal to t, those with the lowest flat index. The plain ``batch_topk_dense`` applies the same
rule, so both paths select the same entries even with ties (torch.topk leaves ties unspecified).

Switch: ``SAE_STUDIO_KERNELS=plain|fast|auto`` in the environment (default auto) or
``set_kernels``; ``sae_forward`` is the only place that reads it. ReLU and JumpReLU always take the
plain path. ``auto`` is fast on the CPU and plain on CUDA (issue #15): the fast path's selections
have data-dependent sizes (``nonzero``, ``bincount``), each a device-to-host synchronisation on a
GPU, while the plain path is fixed-size dense work (``topk``, ``scatter``, matmuls) that a GPU
queues without waiting; ``tests/training/test_sync_free.py`` checks that the plain training step has no
data-dependent op at all.
"""
from __future__ import annotations

import math
import os
import warnings
from typing import NamedTuple

import torch
import torch.nn.functional as F

from sae_core import distributed
from sae_core.sae.output import ForwardOutput

MODES = ("plain", "fast", "auto")
_MODE = os.environ.get("SAE_STUDIO_KERNELS", "auto")
if _MODE not in MODES:
    raise ValueError(f"SAE_STUDIO_KERNELS={_MODE!r}; choose 'plain', 'fast' or 'auto'")


def set_kernels(mode: str) -> str:
    """Select ``"plain"``, ``"fast"`` or ``"auto"`` kernels for every later forward pass; returns
    the old mode."""
    global _MODE
    if mode not in MODES:
        raise ValueError(f"kernels mode {mode!r}; choose 'plain', 'fast' or 'auto'")
    old, _MODE = _MODE, mode
    return old


def kernels_mode() -> str:
    return _MODE


_DEFER_EVERYWHERE = False


def defer_host_reads(t: torch.Tensor) -> bool:
    """Whether code should keep ``t``'s values on its device instead of reading them on the host:
    on CUDA, where every read waits for the GPU. ``emulate_gpu_host_rules`` applies the CUDA rule
    on any device (how ``tests/training/test_sync_free.py`` checks the GPU step on a CPU)."""
    return t.is_cuda or _DEFER_EVERYWHERE


def emulate_gpu_host_rules(on: bool) -> bool:
    """Apply the GPU's rules (``defer_host_reads``, the "auto" kernels' choice) on every device;
    returns the old setting."""
    global _DEFER_EVERYWHERE
    old, _DEFER_EVERYWHERE = _DEFER_EVERYWHERE, on
    return old


class SparseCodes(NamedTuple):
    """Nonzero codes of a batch as coordinates; ``rows_M`` ascending, ``vals_M > 0`` (with grad);
    ``by_col_M`` sorts the entries by latent (shared by the encoder's and decoder's backward)."""
    rows_M: torch.Tensor
    cols_M: torch.Tensor
    vals_M: torch.Tensor
    n_rows: int
    n_latents: int
    by_col_M: torch.Tensor

    def to_dense(self) -> torch.Tensor:
        z_NS = self.vals_M.new_zeros(self.n_rows, self.n_latents)
        return z_NS.index_put((self.rows_M, self.cols_M), self.vals_M)

    def fired(self) -> torch.Tensor:
        """Boolean ``[d_sae]``: latents active on at least one token."""
        fired_S = torch.zeros(self.n_latents, dtype=torch.bool, device=self.cols_M.device)
        return fired_S.index_fill_(0, self.cols_M, True)


# --- selection (no grad) ---------------------------------------------------------------------

def batch_topk_dense(acts_NS: torch.Tensor, k_total: int) -> torch.Tensor:
    """Plain BatchTopK: zero all but the ``k_total`` largest entries (ties: lowest flat index).
    Data-parallel (``distributed.active()``): the cut is global, as in ``batch_topk_indices``;
    ``acts`` is then relu'd (only positive entries are kept)."""
    flat = acts_NS.flatten()
    if distributed.active() is not None:
        keep = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)
        keep[batch_topk_indices(acts_NS.detach(), k_total)] = True
        return torch.where(keep, flat, torch.zeros_like(flat)).view_as(acts_NS)
    k_total = min(k_total, flat.numel())
    t = flat.detach().topk(k_total, sorted=False).values.min()
    keep = _keep_with_ties(flat.detach(), t, k_total)
    return torch.where(keep, flat, torch.zeros_like(flat)).view_as(acts_NS)


def _keep_with_ties(vals: torch.Tensor, t: torch.Tensor, k: int) -> torch.Tensor:
    """Mask of the k largest of ``vals`` given the k-th largest value ``t``; ties by position."""
    gt, eq = vals > t, vals == t
    need = k - gt.sum()
    return gt | (eq & (eq.cumsum(0) <= need))


_STRIDES = (251, 127, 61, 31, 13)  # primes, so a strided sample cycles through every column


@torch.no_grad()
def batch_topk_indices(acts_NS: torch.Tensor, k_total: int) -> torch.Tensor:
    """Ascending flat indices of the positive entries ``batch_topk_dense`` keeps, without a full
    topk: a strided sample gives a threshold a little below the k_total-th value (aiming at ~1.25x
    k_total candidates), and the exact cut is made among the candidates only.

    Data-parallel (``distributed.active()``): ``acts`` is this rank's part of the global batch
    and ``k_total`` its share (k x its rows); the cut is over the global batch: this rank's own
    top ``k_total x world`` are the candidates, and ``distributed.global_cut`` keeps those above
    the global cut-off."""
    if distributed.active() is not None:
        k_global = k_total * distributed.world()
        cand = _batch_topk_local(acts_NS, k_global)
        return cand[distributed.global_cut(acts_NS.reshape(-1).index_select(0, cand), k_global)]
    return _batch_topk_local(acts_NS, k_total)


_NONZERO_ROWS = 128  # rows per block: the block's mask stays in cache between the compare and nonzero


def flat_indices_above(acts_NS: torch.Tensor, lo: torch.Tensor | float, strict: bool = False) -> torch.Tensor:
    """Ascending flat indices of the entries ``>= lo`` (``> lo`` when ``strict``). On the CPU a
    block of rows at a time: the whole batch's boolean mask (100M entries at [4096, 24576]) was
    written and read back from memory, 122 ms against 82 ms in blocks of 128 rows (issue #30)."""
    def above(a: torch.Tensor) -> torch.Tensor:
        return ((a > lo) if strict else (a >= lo)).nonzero().squeeze(1)
    if acts_NS.device.type != "cpu" or acts_NS.dim() != 2 or acts_NS.shape[0] <= _NONZERO_ROWS:
        return above(acts_NS.reshape(-1))
    n_cols = acts_NS.shape[1]
    return torch.cat([above(acts_NS[start:start + _NONZERO_ROWS].reshape(-1)) + start * n_cols
                      for start in range(0, acts_NS.shape[0], _NONZERO_ROWS)])


def _batch_topk_local(acts_NS: torch.Tensor, k_total: int) -> torch.Tensor:
    flat = acts_NS.reshape(-1)
    k_total = min(k_total, flat.numel())
    cand = None
    stride = next((p for p in _STRIDES if k_total >= 1024 * p and acts_NS.shape[-1] % p), 0)
    if stride:
        sample = flat[::stride]
        kk = min(sample.numel(), int(1.25 * k_total / stride) + 32)
        lo = sample.topk(kk, sorted=False).values.min()
        if lo > 0:
            cand = flat_indices_above(acts_NS, lo)
            if cand.numel() < k_total:  # the guess was too high: fall back to all positives
                cand = None
    if cand is None:
        cand = flat_indices_above(acts_NS, 0.0, strict=True)
    if cand.numel() <= k_total:  # every positive entry is kept
        return cand
    vals_C = flat.index_select(0, cand)
    t = vals_C.kthvalue(vals_C.numel() - k_total + 1).values
    return cand[_keep_with_ties(vals_C, t, k_total)]


@torch.no_grad()
def topk_row_indices(acts_NS: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``rows_M, cols_M`` of the positive entries among each row's k largest (the same
    ``torch.topk`` call as ``TopKSAE.activate`` on the same tensor, so ties resolve identically)."""
    vals_NK, idx_NK = acts_NS.topk(k, dim=-1, sorted=False)
    return _positive_coords(vals_NK, idx_NK)


def _positive_coords(vals_NK: torch.Tensor, cols_NK: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``rows_M, cols_M`` (rows ascending) of the entries of per-row picks with a positive value."""
    keep_NK = vals_NK > 0
    rows_NK = torch.arange(vals_NK.shape[0], device=vals_NK.device)[:, None].expand_as(cols_NK)
    return rows_NK[keep_NK], cols_NK[keep_NK]


def _block_width(n_cols: int, n_allowed: int, k: int) -> int:
    """Block width g for ``masked_topk_row_indices``, or 1 for a plain top-k over the allowed
    columns. g is a power of two near sqrt(n_cols / k), which balances the two top-k passes
    (n_cols/g block maxima, then k*g candidates). Blocks pay when the allowed columns are many:
    per row, the plain way costs a column gather and a top-k over ``n_allowed`` values (~6 units
    each), the blocked way a masking and block-max pass over all ``n_cols`` (~2 units each) and
    top-k over n_cols/g + k*g values (~5.5 units each). ``bench/sae_kernel_parts.py`` on the
    2-core CPU (1024 of 4096 rows, row gather included; plain / blocked, ms):
    d_sae 16384, k 256: 20% allowed 50 / 86, 50% 79 / 78, 70% 94 / 74, 92% 150 / 70;
    d_sae 2048, k 64: 36% 6.4 / 9.8, 70% 11.3 / 10.4, 92% 13.7 / 9.3. The model switches at
    56% (large) and 68% (small) allowed."""
    if n_cols < 8 * k:
        return 1
    g = 2 ** round(0.5 * math.log2(n_cols / k))
    blocked = 2.0 * n_cols + 5.5 * (n_cols / g + k * g)
    return g if blocked < 6.0 * n_allowed else 1


@torch.no_grad()
def masked_topk_row_indices(acts_NS: torch.Tensor, cols_S: torch.Tensor, k: int,
                            inplace: bool = False, block: int | None = None
                            ) -> tuple[torch.Tensor, torch.Tensor]:
    """``rows_M, cols_M`` (rows ascending) of the positive entries among each row's k largest
    over the columns where the boolean ``cols_S`` is True (AuxK: the dead latents).

    When the allowed columns are many (``_block_width``), block-max pruning instead of a top-k
    over all of them: split each row into blocks of g columns (others set to -inf), take each
    block's max, keep the k blocks with the largest maxima, then the k largest entries of those
    k*g candidates. Exact: the k chosen block maxima are k distinct entries, all >= the k-th
    largest block max m, so the row's k-th largest value is >= m, and every entry > m sits in a
    chosen block. Why: the Sampled-SAE leaves ~90% of its latents dead by design (only its pool
    can fire), which made AuxK's selection its main extra cost over BatchTopK (issue #3).
    Ties at the k-th value may resolve differently from one ``torch.topk`` (both are valid).
    ``inplace``: ``acts`` may be overwritten (saves one [N, n] copy when it is a scratch copy).
    ``block``: the block width (1 = plain top-k); None lets ``_block_width`` choose.
    """
    n, s = acts_NS.shape
    allowed = int(cols_S.sum())
    k = min(k, allowed)
    if k == 0:
        empty = torch.empty(0, dtype=torch.long, device=acts_NS.device)
        return empty, empty
    g = _block_width(s, allowed, k) if block is None else block
    n_blocks = -(-s // g)
    if g == 1 or n_blocks < k:  # no blocks, or fewer than wanted values: gather, one top-k
        cols_D = cols_S.nonzero().squeeze(1)
        vals_NK, sub_NK = acts_NS.index_select(1, cols_D).topk(k, dim=-1, sorted=False)
        cols_NK = cols_D[sub_NK]
    else:
        masked_NS = acts_NS if inplace else acts_NS.clone()
        # index_fill_ writes only the other columns, and max_pool1d is one kernel: masked_fill_
        # and amax over [n, blocks, g] were half of this function's time on the CPU
        masked_NS.index_fill_(1, (~cols_S).nonzero().squeeze(1), float("-inf"))
        if n_blocks * g != s:  # pad the last block with -inf
            masked_NS = F.pad(masked_NS, (0, n_blocks * g - s), value=float("-inf"))
        block_NB = F.max_pool1d(masked_NS.unsqueeze(1), g).squeeze(1)
        block_NK = block_NB.topk(k, dim=-1, sorted=False).indices
        cand_NC = (block_NK[:, :, None] * g + torch.arange(g, device=acts_NS.device)).reshape(n, -1)
        vals_NK, pick_NK = masked_NS.gather(1, cand_NC).topk(k, dim=-1, sorted=False)
        cols_NK = cand_NC.gather(1, pick_NK)
    return _positive_coords(vals_NK, cols_NK)


# --- autograd functions ------------------------------------------------------------------------

def _offsets(keys_M: torch.Tensor, n_keys: int) -> torch.Tensor:
    """Start of each key's run in ``keys_M`` sorted ascending (``embedding_bag`` offsets)."""
    counts = torch.bincount(keys_M, minlength=n_keys)
    return torch.cumsum(counts, 0) - counts


def _sum_by_key(keys_M, src_rows_M, table_RD, weights_M, n_keys: int, order_M=None):
    """``out[j] = sum_{m: keys[m]=j} weights[m] * table[src_rows[m]]``, shape ``[n_keys, D]``,
    as one embedding_bag: no [M, D] intermediate. ``order_M`` sorts ``keys_M`` (None: sorted)."""
    if order_M is not None:
        src_rows_M, weights_M = src_rows_M.index_select(0, order_M), weights_M.index_select(0, order_M)
    return F.embedding_bag(src_rows_M, table_RD, _offsets(keys_M, n_keys), mode="sum",
                           per_sample_weights=weights_M)


_TRANSPOSE_BLOCK = 512  # rows per block: a [512, d_in] block and its transpose stay in cache


def transposed(src_SD: torch.Tensor) -> torch.Tensor:
    """``src.T`` as a new contiguous ``[D, S]`` tensor. On the CPU a block at a time: the encoder's
    gradient comes out latent-major, and autograd made the parameter-shaped copy with ``clone``,
    58 ms at [24576, 768] on the 2-core CPU against 17 ms in blocks (issue #30)."""
    if src_SD.device.type != "cpu":
        return src_SD.T.contiguous()
    out_DS = src_SD.new_empty(src_SD.shape[1], src_SD.shape[0])
    for start in range(0, src_SD.shape[0], _TRANSPOSE_BLOCK):
        out_DS[:, start:start + _TRANSPOSE_BLOCK].copy_(src_SD[start:start + _TRANSPOSE_BLOCK].T)
    return out_DS


class _EncodeAt(torch.autograd.Function):
    """``pre[rows, cols]`` (already computed under no_grad) with the encoder's gradients."""

    @staticmethod
    def forward(ctx, x_ND, W_enc, b_enc, b_dec, rows_M, cols_M, by_col_M, pre_M):
        ctx.save_for_backward(x_ND, W_enc, b_dec, rows_M, cols_M, by_col_M)
        return pre_M.clone()

    @staticmethod
    def backward(ctx, g_M):
        x_ND, W_enc, b_dec, rows_M, cols_M, by_col_M = ctx.saved_tensors
        d_sae = W_enc.shape[1]
        g_S = g_M.new_zeros(d_sae).index_add_(0, cols_M, g_M)
        grad_x = grad_W = grad_b_dec = None
        if ctx.needs_input_grad[0]:
            grad_x = _sum_by_key(rows_M, cols_M, W_enc.T.contiguous(), g_M, x_ND.shape[0])
        if ctx.needs_input_grad[1]:
            grad_W = transposed(_sum_by_key(cols_M, rows_M, x_ND - b_dec, g_M, d_sae, by_col_M))
        if ctx.needs_input_grad[3]:
            grad_b_dec = -(W_enc @ g_S)
        return grad_x, grad_W, g_S, grad_b_dec, None, None, None, None


class _SparseDecode(torch.autograd.Function):
    """``out[n] = sum_{m: rows[m]=n} vals[m] * W_dec[cols[m]]`` (no bias)."""

    @staticmethod
    def forward(ctx, rows_M, cols_M, by_col_M, vals_M, W_dec, n_rows):
        ctx.save_for_backward(rows_M, cols_M, by_col_M, vals_M, W_dec)
        ctx.n_rows = n_rows
        return F.embedding_bag(cols_M, W_dec, _offsets(rows_M, n_rows), mode="sum",
                               per_sample_weights=vals_M)

    @staticmethod
    def backward(ctx, g_ND):
        rows_M, cols_M, by_col_M, vals_M, W_dec = ctx.saved_tensors
        grad_vals = grad_W = None
        if ctx.needs_input_grad[3]:
            # One dot product per entry: (g @ W_dec^T) sampled at the entries, never dense.
            crow = torch.zeros(ctx.n_rows + 1, dtype=torch.long, device=rows_M.device)
            crow[1:] = torch.bincount(rows_M, minlength=ctx.n_rows).cumsum(0)
            with warnings.catch_warnings():  # "sparse CSR is beta" is not news to the caller
                warnings.simplefilter("ignore")
                pattern = torch.sparse_csr_tensor(crow, cols_M, torch.ones_like(vals_M),
                                                  (ctx.n_rows, W_dec.shape[0]),
                                                  check_invariants=False)
                grad_vals = torch.sparse.sampled_addmm(pattern, g_ND.contiguous(), W_dec.T,
                                                       beta=0.0).values()
        if ctx.needs_input_grad[4]:
            grad_W = _sum_by_key(cols_M, rows_M, g_ND.contiguous(), vals_M, W_dec.shape[0], by_col_M)
        return None, None, None, grad_vals, grad_W, None


@torch.no_grad()
def _take(acts_NS, rows_M, cols_M) -> torch.Tensor:
    """``acts[rows, cols]``; index_select on the flat view is several times faster on CPU."""
    return acts_NS.reshape(-1).index_select(0, rows_M * acts_NS.shape[1] + cols_M)


def sparse_codes(sae, x_ND, rows_M, cols_M, pre_NS) -> SparseCodes:
    """Codes at the selected entries (all with pre > 0, where ReLU is the identity), with the
    encoder's gradients attached. Under bfloat16 autocast ``pre`` is bfloat16 (the encoder's
    matmul); the codes are taken in the weights' dtype, so the sparse decode and backward run in it."""
    by_col_M = torch.argsort(cols_M, stable=True)
    vals_M = _EncodeAt.apply(x_ND, sae.W_enc, sae.b_enc, sae.b_dec, rows_M, cols_M, by_col_M,
                             _take(pre_NS, rows_M, cols_M).to(sae.W_enc.dtype))
    return SparseCodes(rows_M, cols_M, vals_M, x_ND.shape[0], sae.cfg.d_sae, by_col_M)


def decode_sparse(codes: SparseCodes, W_dec: torch.Tensor) -> torch.Tensor:
    """``codes @ W_dec`` without b_dec, ``[N, d_in]``."""
    return _SparseDecode.apply(codes.rows_M, codes.cols_M, codes.by_col_M, codes.vals_M, W_dec,
                               codes.n_rows)


def topk_per_row(acts_NS: torch.Tensor, k: int, relu: bool = False) -> torch.Tensor:
    """Zero all but the ``k`` largest entries of each row (ties broken by torch.topk); ``relu``:
    zero the negative ones among them too (= top-k of relu(acts), without a relu copy of acts)."""
    vals_NK, idx_NK = acts_NS.topk(k, dim=-1, sorted=False)
    return torch.zeros_like(acts_NS).scatter_(-1, idx_NK, torch.relu(vals_NK) if relu else vals_NK)


# --- the switch ------------------------------------------------------------------------------

def sae_forward(sae, x_ND: torch.Tensor, pre_buf: torch.Tensor | None = None):
    """Forward pass of ``sae`` on ``x_ND [N, d_in]``: the one place that picks the path.

    Fast when the mode is "fast" and the SAE's current rule is k-sparse (``sae.sparse_rule``);
    then ``out.pre`` carries no graph and the gradient flows through ``out.codes``, and the
    pre-activations are written into ``pre_buf`` when one is given and has room for N rows: a fresh
    [N, d_sae] output is mapped and zeroed by the OS on every step, which made the encoder's
    matmul ~1.9x slower ([4096, 128] x [128, 2048] on the 2-core CPU: 25.5 ms fresh, 13.6 ms
    reused; ``bench/sae_kernel_parts.py``).
    The plain path keeps pre in the autograd graph and ignores the buffer.
    """
    if _MODE == "plain" or not sae.sparse_rule or (_MODE == "auto" and defer_host_reads(x_ND)):
        pre_NS = sae.pre_acts(x_ND)
        z_NS = sae.activate(pre_NS)
        return ForwardOutput(sae.decode(z_NS), z_NS, pre_NS)
    with torch.no_grad():
        fits = pre_buf is not None and pre_buf.shape[0] >= x_ND.shape[0]
        pre_NS = sae.pre_acts(x_ND, pre_buf[:x_ND.shape[0]] if fits else None)
        rows_M, cols_M = sae.select_active(pre_NS)
    codes = sparse_codes(sae, x_ND, rows_M, cols_M, pre_NS)
    return ForwardOutput(decode_sparse(codes, sae.W_dec) + sae.b_dec, None, pre_NS, codes)


def aux_decode(sae, x_ND, out, dead_S: torch.Tensor, k_aux: int,
               rows_R: torch.Tensor | None = None) -> torch.Tensor:
    """AuxK reconstruction ``[N, d_in]`` (no b_dec): each token's top ``k_aux`` ReLU
    pre-activations among dead latents, decoded; on the path ``out`` came from. With ``rows_R``
    only those tokens (rows of ``x_ND``), ``[R, d_in]``."""
    pre_NS = out.pre
    if rows_R is not None:
        pre_NS, x_ND = pre_NS.index_select(0, rows_R), x_ND.index_select(0, rows_R)
    if out.codes is None:
        dead_pre_NS = torch.where(dead_S, pre_NS, torch.full_like(pre_NS, -torch.inf))
        return topk_per_row(dead_pre_NS, k_aux, relu=True) @ sae.W_dec  # k_aux <= dead latents
    pre_NS = pre_NS.detach()
    # the row subset is our own copy: the selection may mask it in place (selected entries keep
    # their values, which sparse_codes reads next)
    rows_M, cols_M = masked_topk_row_indices(pre_NS, dead_S, k_aux, inplace=rows_R is not None)
    # Selected entries are dead latents with pre > 0, so the codes are the pre-activations.
    return decode_sparse(sparse_codes(sae, x_ND, rows_M, cols_M, pre_NS), sae.W_dec)
