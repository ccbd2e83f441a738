"""Feature index (issue #4): every stored number against a brute-force dense computation."""
import json

import numpy as np
import pytest
import torch

from sae_core.models.hooks import capture_at_hook
from sae_core.models.loading import keep_mask_BT
from sae_core.models.texts import TextSource, texts_for_tokens
from sae_core.features.job import build_feature_index, index_to_workspace
from sae_core.features.build import sae_fingerprint
from sae_core.features.config import FeatureIndexError, IndexConfig
from sae_core.features.export import export_parquet, feature_json
from sae_core.features.index import FeatureIndex
from sae_core.features.probe import feature_acts_on_text
from sae_core.features.streaming import StreamingHistogram, sample_keys
from sae_core.features.weights import logit_effects, nearest_features, row_histograms
from sae_core.models.unembed import FOLDED, unembed_through_final_norm
from sae_core.models.loading import to_tokens
from sae_core.sae.config import SAEConfig
from sae_core.sae.registry import create_sae
from sae_core.workspace import Workspace

HOOK = "blocks.1.hook_resid_post"
CFG = IndexConfig(n_tokens=2500, batch_size=16, n_top=6, n_samples=5, before=3, after=2,
                  hist_bins=8, n_logits=5, logit_hist_bins=7, n_promoters=4, n_nearest=3,
                  feature_map=False, checkpoint_every=2)


def _sae(seed=0, d_sae=48, arch="topk"):
    torch.manual_seed(seed)
    sae = create_sae(SAEConfig(arch=arch, d_in=128, d_sae=d_sae, k=4))
    with torch.no_grad():  # a spread of encoder biases: some features fire often, some rarely
        sae.b_enc.copy_(torch.linspace(-2.0, 1.0, d_sae))
    return sae.eval()


@pytest.fixture(scope="module")
def texts(tiny_a):
    return texts_for_tokens(tiny_a.tokenizer, CFG.n_tokens, TextSource().documents(CFG.corpus_seed),
                            CFG.context_size, True)


@pytest.fixture(scope="module")
def built(tiny_a, texts, tmp_path_factory):
    sae = _sae()
    out = tmp_path_factory.mktemp("idx")
    index = build_feature_index(tiny_a, sae, HOOK, texts, out, CFG, meta={"model_name": "zoo:tiny-a"})
    return sae, index


@pytest.fixture(scope="module")
def dense(tiny_a, texts, built):
    """All codes ``[n_seq, context, d_sae]`` (masked) and tokens, computed the plain way."""
    sae = built[0]
    tok = tiny_a.tokenizer
    special = sorted(set(tok.all_special_ids))
    z_all = torch.zeros(len(texts), CFG.context_size, sae.cfg.d_sae)
    tokens = torch.full((len(texts), CFG.context_size), -1, dtype=torch.long)
    with torch.inference_mode(), capture_at_hook(tiny_a, HOOK) as capture:
        for s in range(0, len(texts), 5):  # another batch size than the build's
            t_BT = to_tokens(tiny_a, texts[s:s + 5])[:, :CFG.context_size]
            keep = keep_mask_BT(t_BT, tok.pad_token_id, special, True)
            real = keep_mask_BT(t_BT, tok.pad_token_id, [], False)
            z = sae.encode(capture(t_BT)) * keep[..., None]
            z_all[s:s + t_BT.shape[0], :t_BT.shape[1]] = z
            tokens[s:s + t_BT.shape[0], :t_BT.shape[1]] = torch.where(real, t_BT, -1)
    return z_all, tokens


def _brute_top(z_all, f, n, key=None):
    vals = z_all[..., f].reshape(-1)
    score = vals if key is None else key
    gidx = torch.arange(vals.numel())
    live = vals > 0
    order = sorted(gidx[live].tolist(), key=lambda g: (-float(score[g]), g))
    return order[:n]


def test_density_max_and_counts_match_dense(built, dense):
    sae, index = built
    z_all, tokens = dense
    nonzero = (z_all > 0).reshape(-1, z_all.shape[-1])
    n_kept = index.info["n_tokens"]
    special = {0, 1, 2}
    assert n_kept == sum(1 for t in tokens.reshape(-1).tolist() if t >= 0 and t not in special)
    np.testing.assert_array_equal(index.column("count").numpy(), nonzero.sum(0).numpy())
    np.testing.assert_allclose(index.column("density").numpy(), nonzero.sum(0).numpy() / n_kept, rtol=1e-6)
    np.testing.assert_array_equal(index.column("max").numpy(), z_all.reshape(-1, z_all.shape[-1]).amax(0).numpy())
    assert 0 < int((nonzero.sum(0) > 0).sum())  # the fixture SAE has live features


def _distinct(gidx, tokens, index):
    """The first of each identical context (same tokens, same peak): the browser shows each once
    (issue #28)."""
    seen, out = set(), []
    for g in gidx:
        seq, pos = divmod(g, CFG.context_size)
        lo = max(0, pos - CFG.before)
        ids = [t for t in tokens[seq, lo:pos + CFG.after + 1].tolist() if t >= 0]
        if (key := (tuple(index.token_str(t) for t in ids), pos - lo)) not in seen:
            seen.add(key)
            out.append(g)
    return out


def test_top_examples_equal_brute_force(built, dense):
    sae, index = built
    z_all, tokens = dense
    T = CFG.context_size
    checked = 0
    for f in range(sae.cfg.d_sae):
        view = index.feature(f)
        expect = _distinct(_brute_top(z_all, f, CFG.n_top), tokens, index)
        assert [e.sequence * T + e.position for e in view.top] == expect
        for e in view.top:
            assert e.value == pytest.approx(float(z_all[e.sequence, e.position, f]), abs=0)
            lo = max(0, e.position - CFG.before)
            ids = [t for t in tokens[e.sequence, lo:e.position + CFG.after + 1].tolist() if t >= 0]
            assert e.tokens == [index.token_str(t) for t in ids]
            assert e.acts == z_all[e.sequence, lo:lo + len(ids), f].tolist()
            assert e.acts[e.peak] == e.value
        checked += len(view.top)
    assert checked > 50


def test_uniform_sample_equals_bottom_k_keys(built, dense):
    sae, index = built
    z_all, _ = dense
    S = sae.cfg.d_sae
    for f in range(0, S, 5):
        gidx = torch.arange(z_all[..., f].numel())
        keys = sample_keys(gidx, torch.full_like(gidx, f), CFG.seed)
        expect = set(_brute_top(z_all, f, CFG.n_samples, key=keys))
        got = {e.sequence * CFG.context_size + e.position for _, g in index.feature(f).quantiles for e in g}
        assert got == expect


def test_histograms_equal_numpy(built, dense):
    sae, index = built
    z_all, _ = dense
    for f in range(sae.cfg.d_sae):
        view = index.feature(f)
        vals = z_all[..., f].reshape(-1)
        vals = vals[vals > 0].double().numpy()
        if vals.size == 0:
            assert view.hist_counts == []
            continue
        counts, _ = np.histogram(vals, bins=np.array(view.hist_edges))
        np.testing.assert_array_equal(view.hist_counts, counts)
        assert view.hist_edges[-1] > vals.max() >= view.hist_edges[-2]  # the last bin holds the max


def test_streaming_histogram_merges_exactly():
    rng = np.random.default_rng(0)
    h = StreamingHistogram(3, 6)
    seen = {0: [], 1: [], 2: []}
    for scale in (0.1, 1.0, 0.5, 7.0, 100.0):  # growing maxima force repeated doubling
        f = torch.from_numpy(rng.integers(0, 3, 200))
        v = torch.from_numpy(rng.random(200) * scale).float()
        h.update(f, v)
        for fi, vi in zip(f.tolist(), v.tolist()):
            seen[fi].append(vi)
    for fi in range(3):
        counts, _ = np.histogram(np.float32(seen[fi]).astype(np.float64), bins=h.edges(fi).numpy())
        np.testing.assert_array_equal(h.counts_SH[fi].numpy(), counts)


def _folded_unembed_numpy(model) -> np.ndarray:
    """Hand reference: LayerNorm's centring and scale, then W_U, then centring over the vocab."""
    D = model.cfg.d_model
    w = model.ln_final._original_component.weight.detach().double().numpy()
    centre = np.eye(D) - np.ones((D, D)) / D
    M = centre @ np.diag(w) @ model.W_U.detach().double().numpy()
    return M - M.mean(axis=1, keepdims=True)


def test_unembed_folds_the_final_layernorm(tiny_a):
    M = unembed_through_final_norm(tiny_a)
    np.testing.assert_allclose(M.double().numpy(), _folded_unembed_numpy(tiny_a), atol=1e-5)
    # LayerNorm removes a constant direction, so it promotes nothing; the raw W_U says otherwise
    ones = torch.ones(1, tiny_a.cfg.d_model)
    assert (ones @ M).abs().max() < 1e-4
    assert (ones @ tiny_a.W_U.detach().float()).abs().max() > 0.1
    # the folded effect ranks tokens as the true change of the logits does, for a small step
    # from a residual whose norm term is then nearly constant
    d = torch.randn(tiny_a.cfg.d_model, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        x = torch.zeros(1, 1, tiny_a.cfg.d_model) + torch.randn(tiny_a.cfg.d_model) * 3
        delta = (tiny_a.unembed(tiny_a.ln_final(x + 1e-3 * d)) - tiny_a.unembed(tiny_a.ln_final(x)))[0, 0]
    assert np.corrcoef(delta.numpy(), (d @ M).numpy())[0, 1] > 0.5


def test_logit_effects_and_nearest_equal_direct(tiny_a, built):
    sae, index = built
    eff = sae.W_dec.detach().double() @ torch.from_numpy(_folded_unembed_numpy(tiny_a))
    assert index.logit_basis == FOLDED
    le = logit_effects(sae.W_dec, unembed_through_final_norm(tiny_a), n_top=5, n_bins=7, n_promoters=4)
    np.testing.assert_allclose(le.top_vals_SL, eff.topk(5, dim=1).values, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(le.top_ids_SL, eff.topk(5, dim=1).indices)
    np.testing.assert_array_equal(le.bottom_ids_SL, eff.topk(5, dim=1, largest=False).indices)
    np.testing.assert_array_equal(le.promoters_VN, eff.T.topk(4, dim=1).indices)
    for f in range(0, sae.cfg.d_sae, 7):
        counts, edges = np.histogram(eff[f].double().numpy(), bins=7)
        np.testing.assert_array_equal(le.hist_counts_SH[f].numpy(), counts)
        view = index.feature(f)
        assert [t for t, _ in view.promoted] == [index.token_str(t) for t in eff[f].topk(5).indices.tolist()]
        np.testing.assert_allclose(view.logit_hist_edges, edges, rtol=1e-5, atol=1e-5)
    W = (sae.W_dec / sae.W_dec.norm(dim=1, keepdim=True)).detach()
    cos = (W @ W.T).fill_diagonal_(-2.0)
    ids, vals = nearest_features(sae.W_dec, 3)
    np.testing.assert_array_equal(ids, cos.topk(3, dim=1).indices)
    np.testing.assert_allclose(vals, cos.topk(3, dim=1).values, rtol=1e-5)


def test_row_histograms_edge_cases():
    rows = torch.tensor([[0.0, 1.0, 2.0, 3.0], [5.0, 5.0, 5.0, 5.0], [-1.0, 0.5, 0.5, 2.0]])
    counts, _ = row_histograms(rows, 3)
    for r in range(3):
        np.testing.assert_array_equal(counts[r].numpy(), np.histogram(rows[r].numpy().astype(np.float64), 3)[0])


def test_search_tables(built, dense):
    sae, index = built
    z_all, tokens = dense
    T = CFG.context_size
    # "fires on": the features whose top examples peak on the token, best activation first
    tok_id = int(torch.mode(tokens[tokens > 2]).values)
    word = index.token_str(tok_id)
    expect = {}
    for f in range(sae.cfg.d_sae):
        for g in _brute_top(z_all, f, CFG.n_top):
            if int(tokens.reshape(-1)[g]) == tok_id:
                expect[f] = max(expect.get(f, 0.0), float(z_all.reshape(-1, z_all.shape[-1])[g, f]))
    got = index.search_fires_on(word)
    assert {f for f, _ in got} == set(expect)
    assert [v for _, v in got] == sorted((v for _, v in got), reverse=True)
    with pytest.raises(FeatureIndexError, match="empty search"):
        index.search_fires_on("   ")
    with pytest.raises(FeatureIndexError, match="not a token"):
        index.search_promotes("zzzz-not-a-word")
    assert index.search_promotes(word)[0][0] in range(sae.cfg.d_sae)


def test_bad_feature_and_other_sae(built):
    sae, index = built
    for bad in (-1, sae.cfg.d_sae, 10**9):
        with pytest.raises(FeatureIndexError, match="out of range"):
            index.feature(bad)
    index.check_sae(sae_fingerprint(sae))
    with pytest.raises(FeatureIndexError, match="another SAE.*rebuild"):
        index.check_sae(sae_fingerprint(_sae(seed=1)))


def test_d_in_mismatch_is_a_clear_error(tiny_a, texts, tmp_path):
    sae = create_sae(SAEConfig(arch="topk", d_in=64, d_sae=16, k=2))
    with pytest.raises(FeatureIndexError, match="d_in=64.*width 128"):
        build_feature_index(tiny_a, sae, HOOK, texts[:4], tmp_path, CFG)


def test_batch_size_and_resume_do_not_change_the_index(tiny_a, texts, built, tmp_path):
    from safetensors.torch import load_file

    sae, index = built
    cfg = IndexConfig(**{**CFG.__dict__, "batch_size": 7, "checkpoint_every": 1})
    calls = []

    def interrupt(done, total):
        calls.append(done)
        if len(calls) == 5:
            raise KeyboardInterrupt
    ckpt = tmp_path / "ckpt"
    with pytest.raises(KeyboardInterrupt):
        build_feature_index(tiny_a, sae, HOOK, texts, tmp_path / "a", cfg, ckpt_dir=ckpt, on_progress=interrupt)
    seen = []
    build_feature_index(tiny_a, sae, HOOK, texts, tmp_path / "a", cfg, ckpt_dir=ckpt,
                        on_progress=lambda d, t: seen.append(d))
    assert seen[0] > 7 * 4  # resumed after the checkpointed batches
    a = load_file(str(tmp_path / "a" / "features.safetensors"))
    b = load_file(str(index.path / "features.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)
    assert not ckpt.exists()


def test_try_it_matches_a_script(tiny_a, built):
    sae, _ = built
    text = "one two three four five six"
    out = feature_acts_on_text(tiny_a, sae, HOOK, text, 5)
    with torch.inference_mode():
        _, cache = tiny_a.run_with_cache(to_tokens(tiny_a, text), names_filter=[HOOK])
        expect = sae.encode(cache[HOOK])[0, 1:, 5]
    assert out.tokens == text.split(" ") or "".join(out.tokens).replace(" ", "") == text.replace(" ", "")
    np.testing.assert_allclose(out.acts, expect.numpy(), rtol=1e-5, atol=1e-6)
    assert out.truncated_from is None
    with pytest.raises(FeatureIndexError, match="empty"):
        feature_acts_on_text(tiny_a, sae, HOOK, "  ", 5)
    long = feature_acts_on_text(tiny_a, sae, HOOK, " ".join(["one"] * 400), 5, max_tokens=50)
    assert len(long.acts) == 49 and long.truncated_from == 400
    with pytest.raises(FeatureIndexError, match="out of range"):
        feature_acts_on_text(tiny_a, sae, HOOK, text, sae.cfg.d_sae)


def test_exports(built, tmp_path):
    import pyarrow.parquet as pq

    sae, index = built
    live = int(index.column("count").argmax())
    view = index.feature(live)
    rec = json.loads(feature_json(view, index))
    assert view.top and rec["index"] == live and rec["frac_nonzero"] == pytest.approx(view.density)
    assert [a["maxValue"] for a in rec["activations"]] == [e.value for e in view.top]
    assert rec["activations"][0]["tokens"] == view.top[0].tokens
    assert rec["pos_str"] == [t for t, _ in view.promoted]
    table = pq.read_table(export_parquet(index, tmp_path / "f.parquet")).to_pandas()
    assert len(table) == sae.cfg.d_sae and table["feature"].tolist() == list(range(sae.cfg.d_sae))
    np.testing.assert_allclose(table["density"], index.column("density").numpy(), rtol=1e-6)


def test_workspace_index_is_found_and_idempotent(tiny_a, tmp_path):
    ws = Workspace(tmp_path / "ws")
    sae = _sae(d_sae=16)
    cfg = IndexConfig(**{**CFG.__dict__, "n_tokens": 600})
    art = index_to_workspace(ws, sae, "zoo:tiny-a", HOOK, cfg, model=tiny_a, sae_source="test")
    assert art.meta["sae_fingerprint"] == sae_fingerprint(sae) and art.meta["n_tokens"] > 0
    again = index_to_workspace(ws, sae, "zoo:tiny-a", HOOK, cfg, model=None)  # no model load needed
    assert again.path == art.path
    assert FeatureIndex.open(art.path).n_features == 16


def test_foreign_directory_is_rejected(tmp_path):
    with pytest.raises(FeatureIndexError, match="not a .*feature index"):
        FeatureIndex.open(tmp_path)
