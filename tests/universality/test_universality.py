"""Universality measures, nulls, streamed correlation and matching against hand references and
planted ground truth (issue #13's correctness list)."""
import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from sae_core.universality import UniversalityError, linear_cka, mutual_knn, rsa, svcca
from sae_core.universality import nulls
from sae_core.universality.analysis import AnalysisConfig
from sae_core.universality.correlation import Codes, CorrelationAccumulator, TopTokens, add_cross
from sae_core.universality.matching import MatchConfig, match, nonconcept_ids


def _reference_svcca(X, Y, k):
    """Centre, SVD, keep k directions, CCA by whitening (an independent path to the same numbers)."""
    def reduce(M):
        M = M - M.mean(0)
        U, S, _ = np.linalg.svd(M, full_matrices=False)
        return U[:, :k] * S[:k]

    def inv_sqrt(C):
        w, V = np.linalg.eigh(C)
        return V @ np.diag(w ** -0.5) @ V.T
    A, B = reduce(X), reduce(Y)
    T = inv_sqrt(A.T @ A) @ A.T @ B @ inv_sqrt(B.T @ B)
    return np.linalg.svd(T, compute_uv=False).mean()


def test_svcca_matches_a_numpy_reference_and_its_invariances():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 12)) @ np.diag(np.linspace(3, 0.1, 12))
    Y = X[:, :8] @ rng.normal(size=(8, 9)) + 0.5 * rng.normal(size=(300, 9))
    got = svcca(X, Y, var_threshold=0.99)
    kx, ky = got.used["k_x"], got.used["k_y"]
    assert 1 < kx < 12 and got.used["var_x"] >= 0.99
    # against the reference at fixed k (the same on each side)
    for k in (3, 6, 9):
        assert svcca(X, Y, k=k).value == pytest.approx(_reference_svcca(X, Y, k), abs=1e-6)
    assert svcca(X, X).value == pytest.approx(1.0, abs=1e-9)
    # invariant to an invertible linear map when every direction is kept
    M = rng.normal(size=(12, 12)) + 3 * np.eye(12)
    assert svcca(X @ M, Y, k=12).value == pytest.approx(svcca(X, Y, k=12).value, abs=1e-8)
    # the paper's code kept one direction: |corr| of the first principal scores
    pc = [np.linalg.svd(m - m.mean(0), full_matrices=False) for m in (X, Y)]
    s1, s2 = pc[0][0][:, 0], pc[1][0][:, 0]
    compat = svcca(X, Y, paper_compat=True)
    assert compat.value == pytest.approx(abs(np.corrcoef(s1, s2)[0, 1]), abs=1e-9)
    assert (compat.used["k_x"], compat.used["k_y"], compat.used["paper_compat"]) == (1, 1, True)
    assert svcca(torch.tensor(X), torch.tensor(Y), k=3).value == pytest.approx(svcca(X, Y, k=3).value)


def test_linear_cka_in_feature_space_equals_the_gram_form(monkeypatch):
    from sae_core.universality import measures

    rng = np.random.default_rng(4)
    X = rng.normal(size=(40, 6)) + 3.0  # off-centre rows
    Y = X @ rng.normal(size=(6, 9)) + rng.normal(size=(40, 9))
    feature_space = [linear_cka(X, Y, debiased=d).value for d in (False, True)]
    monkeypatch.setattr(measures, "GRAM_ENTRY_IN_MACS", 0)  # every comparison through the n x n Grams
    assert [linear_cka(X, Y, debiased=d).value for d in (False, True)] == pytest.approx(feature_space, abs=1e-12)


def test_linear_cka_matches_the_published_test_vector():
    np.random.seed(1337)
    X = np.random.randn(100, 10)
    Y = np.random.randn(100, 10) + X
    assert linear_cka(X, Y).value == pytest.approx(0.55761, abs=1e-5)
    assert linear_cka(X, Y, debiased=True).value == pytest.approx(0.51346, abs=1e-5)
    assert linear_cka(X, X).value == pytest.approx(1.0)


def test_biased_cka_of_independent_data_is_inflated_at_small_n_and_debiased_is_not():
    rng = np.random.default_rng(1)
    biased, debiased = [], []
    for _ in range(30):
        X, Y = rng.normal(size=(32, 16)), rng.normal(size=(32, 16))
        biased.append(linear_cka(X, Y).value)
        debiased.append(linear_cka(X, Y, debiased=True).value)
    assert np.mean(biased) > 0.3 and abs(np.mean(debiased)) < 0.03


def test_rsa_is_the_spearman_of_the_lower_triangles():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(40, 6))
    Y = X @ rng.normal(size=(6, 5)) + rng.normal(size=(40, 5))
    tri = np.tril_indices(40, -1)
    want = spearmanr(np.corrcoef(X)[tri], np.corrcoef(Y)[tri]).statistic
    got = rsa(X, Y)
    assert got.value == pytest.approx(want, abs=1e-12) and not got.used["subsampled"]
    sub = rsa(X, Y, max_rows=20, seed=3)
    assert sub.used == {"rows_used": 20, "subsampled": True, "seed": 3} and -1 <= sub.value <= 1


def test_mutual_knn_sees_shared_neighbourhoods():
    rng = np.random.default_rng(4)
    X = rng.normal(size=(200, 8))
    Q, _ = np.linalg.qr(rng.normal(size=(8, 8)))
    same = mutual_knn(X, X @ Q, k=5)  # a rotation keeps every cosine neighbourhood
    assert same.value == pytest.approx(1.0) and same.used["jaccard"] == pytest.approx(1.0)
    chance = mutual_knn(X, rng.normal(size=(200, 8)), k=5)
    assert chance.value < 0.1 and chance.used["chance"] == pytest.approx(5 / 199)


def test_permutation_p_values_are_uniform_under_the_null():
    rng = np.random.default_rng(5)
    ps = []
    for i in range(300):
        X, Y = rng.normal(size=(20, 3)), rng.normal(size=(20, 3))
        obs = linear_cka(X, Y).value
        ps.append(nulls.shuffled(linear_cka, X, Y, obs, runs=19, seed=i).p)
    ps = np.array(ps)
    assert set(np.round(ps * 20).astype(int)) <= set(range(1, 21))  # p = (1 + #>=) / (1 + runs)
    for q in (0.1, 0.25, 0.5, 0.75):
        assert abs(np.mean(ps <= q) - q) < 0.07, q


def test_nulls_and_bootstrap_on_a_real_pairing():
    rng = np.random.default_rng(6)
    X = rng.normal(size=(120, 6))
    Y = X @ rng.normal(size=(6, 6)) + 0.3 * rng.normal(size=(120, 6))
    obs = svcca(X, Y, k=6).value
    sig = nulls.shuffled(lambda a, b: svcca(a, b, k=6), X, Y, obs, runs=50)
    assert sig.p == pytest.approx(1 / 51) and sig.z > 5 and sig.null.shape == (50,)
    everything = np.vstack([X, rng.normal(size=(200, 6))]), np.vstack([Y, rng.normal(size=(200, 6))])
    sub = nulls.random_subsets(lambda a, b: svcca(a, b, k=6), *everything, n=120, observed=obs, runs=20)
    assert sub.p == pytest.approx(1 / 21) and sub.kind == "random_subsets"
    lo, hi = nulls.bootstrap(lambda a, b: svcca(a, b, k=6), X, Y, runs=40)
    assert lo < obs < hi + 1e-9 and hi - lo < 0.1
    # the best cell of a heatmap against the best of chance over all cells
    cells = [(X, Y), (X, rng.normal(size=(120, 6)))]
    best = max(svcca(a, b, k=6).value for a, b in cells)
    mx = nulls.max_null(lambda a, b: svcca(a, b, k=6), cells, best, runs=30)
    assert mx.p == pytest.approx(1 / 31) and mx.null_mean > sig.null_mean  # the max of two nulls is larger


@pytest.mark.parametrize("flush_rows", [32_768, 1000])  # 1000: the float32 block flushed mid-stream
def test_streamed_correlation_equals_numpy_and_flags_dead_features(flush_rows, monkeypatch):
    from sae_core.universality import correlation

    monkeypatch.setattr(correlation, "FLUSH_ROWS", flush_rows)
    rng = np.random.default_rng(7)
    A = np.maximum(rng.normal(size=(3000, 40)) - 1.5, 0)   # sparse, non-negative like SAE codes
    B = np.maximum(rng.normal(size=(3000, 30)) - 1.5, 0)
    B[:, :10] += 0.8 * A[:, :10]
    A[:, 7] = 0.0                                           # a dead latent
    acc = CorrelationAccumulator(40, 30)
    for s in range(0, 3000, 512):
        acc.update(torch.tensor(A[s:s + 512], dtype=torch.float32), torch.tensor(B[s:s + 512], dtype=torch.float32))
    res = acc.result()
    with np.errstate(invalid="ignore"):  # numpy's corrcoef of the dead latent is NaN
        want = np.corrcoef(A.T, B.T)[:40, 40:]
    want[7] = 0.0
    np.testing.assert_allclose(res.corr.numpy(), want, atol=1e-5)
    assert res.n_tokens == 3000 and not res.alive_a[7] and int(res.alive_a.sum()) == 39
    a, b = torch.tensor(A[:512], dtype=torch.float32), torch.tensor(B[:512], dtype=torch.float32)
    torch.testing.assert_close(_cross(a, b, sparse_cost=1), (a.t() @ b).double(), rtol=1e-5, atol=1e-5)  # sparse
    torch.testing.assert_close(_cross(a, b, sparse_cost=10 ** 12), (a.t() @ b).double(), rtol=1e-5, atol=1e-5)
    sparser_b = b * (torch.rand(b.shape, generator=torch.Generator().manual_seed(0)) < 0.2)  # the B side as CSR
    torch.testing.assert_close(_cross(a, sparser_b, sparse_cost=1), (a.t() @ sparser_b).double(), rtol=1e-5,
                               atol=1e-5)
    codes = Codes.of(a)
    torch.testing.assert_close(codes.dense(), a)
    assert codes.head(100).n == 100 and torch.equal(codes.head(100).dense(), a[:100])
    with pytest.raises(UniversalityError, match="same token rows"):
        acc.update(a, b[:10])
    with pytest.raises(UniversalityError, match="made for 40 and 30"):
        acc.update(a[:, :5], b)


def _cross(a, b, sparse_cost):
    from sae_core.universality import correlation

    old, correlation.SPARSE_COST_IN_MACS = correlation.SPARSE_COST_IN_MACS, sparse_cost
    try:
        out = torch.zeros(a.shape[1], b.shape[1])
        add_cross(out, a, b)
        return out.double()
    finally:
        correlation.SPARSE_COST_IN_MACS = old


def _planted(n_tokens=6000, d=48, seed=8):
    """Sparse codes A and B = A with its features permuted, scaled and noised."""
    g = torch.Generator().manual_seed(seed)
    A = torch.relu(torch.randn(n_tokens, d, generator=g) - 1.2)
    perm = torch.randperm(d, generator=g)
    B = A[:, perm] * 2.0 + 0.3 * torch.relu(torch.randn(n_tokens, d, generator=g) - 1.0)
    return A, B, perm


@pytest.mark.parametrize("rule", ["many_to_one", "mutual", "hungarian"])
def test_matching_recovers_a_planted_permutation(rule):
    A, B, perm = _planted()
    acc = CorrelationAccumulator(A.shape[1], B.shape[1])
    for s in range(0, A.shape[0], 1000):
        acc.update(A[s:s + 1000], B[s:s + 1000])
    m = match(acc.result(), MatchConfig(rule=rule, drop_nonconcept=False, shared_token=False))
    assert len(m) == 48 and np.array_equal(m.a, perm.numpy()[m.b])  # B feature j is A feature perm[j]
    assert (m.corr > 0.8).all() and m.steps[-1] == ("correlation > 0.1", 48)


def test_filters_top_tokens_and_the_one_to_one_choices():
    # B0 and B1 both prefer A0 (B1 more strongly); B2 prefers A1; B3 prefers A2 weakly
    corr = torch.tensor([[0.5, 0.9, 0.0, 0.0],
                         [0.1, 0.0, 0.6, 0.0],
                         [0.0, 0.0, 0.0, 0.05]])
    from sae_core.universality.correlation import Correlation
    c = Correlation(corr, torch.ones(3, dtype=torch.bool), torch.ones(4, dtype=torch.bool), 1000)
    plain = MatchConfig(drop_nonconcept=False, shared_token=False)
    m = match(c, plain)
    assert list(zip(m.a, m.b)) == [(0, 0), (0, 1), (1, 2)]  # B3's 0.05 is under the threshold
    best = match(c, MatchConfig(drop_nonconcept=False, shared_token=False, dedupe="best"))
    first = match(c, MatchConfig(drop_nonconcept=False, shared_token=False, dedupe="first"))
    assert list(zip(best.a, best.b)) == [(0, 1), (1, 2)] and list(zip(first.a, first.b)) == [(0, 0), (1, 2)]
    assert "first pair kept, as the authors' code" in MatchConfig(dedupe="first").label
    top_a = [{5, 6}, {7}, {8}]
    top_b = [{5}, {9}, {1, 7}, {8}]
    m = match(c, MatchConfig(), top_a=top_a, top_b=top_b, nonconcept={1})
    # B1 shares no token with A0; B2's top tokens hold the non-concept token 1
    assert list(zip(m.a, m.b)) == [(0, 0)]
    assert [s for s, _ in m.steps] == ["many-to-one", "no non-concept top token", "a shared top token",
                                       "correlation > 0.1"]
    assert [n for _, n in m.steps] == [4, 3, 2, 1]
    dead = Correlation(corr, torch.tensor([False, True, True]), torch.ones(4, dtype=torch.bool), 1000)
    assert 0 not in match(dead, plain).a


def test_top_tokens_keep_each_features_highest_activations():
    tt = TopTokens(3, m=2)
    codes = torch.tensor([[0.0, 1.0, 0.0], [2.0, 0.5, 0.0], [1.0, 3.0, 0.0]])
    tt.update(codes[:2], torch.tensor([10, 11]))
    tt.update(codes[2:], torch.tensor([12]))
    assert tt.sets() == [{11, 12}, {12, 10}, set()]  # feature 2 never fired
    assert tt.tokens[:, 2].tolist() == [-1, -1]          # and shows no token


def test_top_tokens_equal_a_dense_sort_over_all_batches():
    g = torch.Generator().manual_seed(3)
    codes = torch.relu(torch.randn(2000, 50, generator=g) - 1.5)
    codes[:, 4] = 0.0
    codes[7, 4] = 0.3                                      # fires once: one token, then none
    toks = torch.randint(0, 500, (2000,), generator=g)
    tt = TopTokens(50, m=5)
    for s in range(0, 2000, 256):
        tt.update(Codes.of(codes[s:s + 256]), toks[s:s + 256])
    want_v, want_rows = codes.topk(5, dim=0)
    fired = want_v > 0
    torch.testing.assert_close(tt.values[fired], want_v[fired])
    assert torch.equal(tt.tokens[fired], toks[want_rows][fired]) and (tt.tokens[~fired] == -1).all()
    assert tt.tokens[:, 4].tolist() == [int(toks[7]), -1, -1, -1, -1]


def test_nonconcept_tokens_of_the_zoo_tokenizer(tiny_a):
    tok = tiny_a.tokenizer
    ids = nonconcept_ids(tok)
    word = tok.convert_tokens_to_ids(["Tom", ".", ","])
    assert word[0] not in ids and word[1] in ids and word[2] in ids
    assert set(tok.all_special_ids) <= ids


def test_bad_inputs_are_clear_errors():
    X = np.ones((10, 3))
    with pytest.raises(UniversalityError, match="10 rows against 9"):
        svcca(X, X[:9])
    with pytest.raises(UniversalityError, match="at least 3 matched pairs; got 2"):
        svcca(X[:2], X[:2])
    with pytest.raises(UniversalityError, match="NaN"):
        linear_cka(np.full((5, 2), np.nan), np.ones((5, 2)))
    with pytest.raises(UniversalityError, match="no variance"):
        linear_cka(np.tile([[0.3, 1.7]], (6, 1)), np.random.default_rng(0).normal(size=(6, 2)))
    with pytest.raises(UniversalityError, match="runs=3"):
        nulls.shuffled(linear_cka, X, X, 0.5, runs=3)
    with pytest.raises(UniversalityError, match="every canonical correlation 1"):
        rng = np.random.default_rng(0)
        svcca(rng.normal(size=(6, 10)), rng.normal(size=(6, 10)))
    with pytest.raises(UniversalityError, match="matching rule 'greedy'"):
        MatchConfig(rule="greedy")
    with pytest.raises(UniversalityError, match="applies to the many_to_one rule"):
        MatchConfig(rule="hungarian", dedupe="best")
    with pytest.raises(UniversalityError, match="need each feature's top tokens"):
        from sae_core.universality.correlation import Correlation
        match(Correlation(torch.zeros(2, 2), torch.ones(2, dtype=torch.bool), torch.ones(2, dtype=torch.bool), 9))


@pytest.mark.parametrize("name,kw", [("svcca", {"k": 4}), ("svcca", {}), ("rsa", {"max_rows": 30}), ("cka", {}),
                                     ("cka_debiased", {}), ("mutual_knn", {"k": 5}),
                                     ("mutual_knn", {"k": 5, "prefix": 1})])  # prefix 1: rows left to sim
def test_prepared_states_give_the_measure_of_the_taken_rows(name, kw):
    """The nulls' fast path (prepare once, take rows) equals measuring the rows afresh."""
    from sae_core.universality.measures import measure

    rng = np.random.default_rng(9)
    X = rng.normal(size=(60, 7))
    Y = X @ rng.normal(size=(7, 6)) + rng.normal(size=(60, 6))
    m = measure(name, **kw)
    sx, sy = m.prepare(X), m.prepare(Y)
    # as the nulls take rows: Y permuted (shuffled pairing), one subset of both (subsampling
    # interval), a subset of each (random subsets), and rows drawn with replacement (bootstrap)
    draws = [(np.arange(60), rng.permutation(60)), (r := rng.choice(60, 40, replace=False), r),
             (rng.choice(60, 40, replace=False), rng.choice(60, 40, replace=False))]
    if name in ("svcca", "cka", "cka_debiased"):  # repeated rows tie RSA's ranks and kNN's neighbours
        draws.append((r := rng.integers(0, 60, 60), r))
    for rx, ry in draws:
        got = m.compare(m.take(sx, rx), m.take(sy, ry))
        assert got.value == pytest.approx(m(X[rx], Y[ry]).value, abs=1e-9), (name, rx[:3], ry[:3])
        back = np.arange(rx.size)[::-1][:30]                # a take of a take
        twice = m.compare(m.take(m.take(sx, rx), back), m.take(m.take(sy, ry), back))
        assert twice.value == pytest.approx(m(X[rx][back], Y[ry][back]).value, abs=1e-9)
    fast = nulls.shuffled(m, X, Y, 0.5, runs=12, seed=3)
    slow = nulls.shuffled(lambda a, b: m(a, b), X, Y, 0.5, runs=12, seed=3)
    np.testing.assert_allclose(fast.null, slow.null, atol=1e-9)


def test_semantic_subspaces_score_their_own_pairs_against_both_nulls():
    from sae_core.universality.keyword_groups import zoo_groups
    from sae_core.universality.subspaces import members, subspace_scores

    rng = np.random.default_rng(10)
    n = 120
    X = rng.normal(size=(n, 8))
    Y = rng.normal(size=(n, 8))
    months = np.arange(40)                      # the first 40 pairs are about months: alike across sides
    Y[months] = X[months] @ rng.normal(size=(8, 8)) + 0.1 * rng.normal(size=(40, 8))
    pairs = [{"top_a": [" May"] if i in months else [" dog"], "top_b": [" the"]} for i in range(n)]
    assert members(pairs, ("may", "June")).tolist() == months.tolist()  # case-insensitive, either side
    cfg = AnalysisConfig(runs=20, runs_small=50, var_threshold=0.9)
    out = subspace_scores(X, Y, pairs, {"months": ("May",), "days": ("Monday",), "animals": ("dog",)}, cfg)
    assert out["months"]["n_pairs"] == 40 and out["animals"]["n_pairs"] == 80
    assert out["days"]["n_pairs"] == 0 and "fewer than" in out["days"]["note"]
    s = out["months"]["scores"]["svcca"]
    assert s["value"] == pytest.approx(svcca(X[months], Y[months], var_threshold=0.9).value)
    assert s["shuffled"]["p"] == pytest.approx(1 / 51)          # the month pairs are far from chance
    assert s["matched_subsets"]["p"] == pytest.approx(1 / 51)   # and more alike than matched pairs at large
    assert out["animals"]["scores"]["rsa"]["shuffled"]["p"] > 0.05  # the unrelated pairs are not
    with pytest.raises(UniversalityError, match="keyword group 'days' matches no matched feature"):
        subspace_scores(X, Y, pairs, {"days": ("Monday",)}, cfg, strict=True)
    assert {"numbers", "months", "animals", "harmful verbs"} <= set(zoo_groups())
    assert "steal" in zoo_groups()["harmful verbs"] and "March" in zoo_groups()["months"]
