"""Tests of reid_workbench.metrics against plain per-query references written from Torchreid's algorithm."""
import numpy as np
import pandas as pd
import pytest
import torch

from reid_workbench import metrics
from reid_workbench.metrics import (compute_distance_matrix, evaluate_features, evaluate_rank, extract_features,
                                    re_ranking, _re_ranking_reference,
                                    _evaluate_rank_reference as reference_market)


# ---------------------------------------------------------------- references (one query at a time, like Torchreid)

def _pad_cmc(cmc, max_rank):
    "Torchreid truncates each query's CMC to max_rank; a shorter kept list stays at its last value (1)."
    cmc = cmc[:max_rank]
    return np.concatenate([cmc, np.full(max_rank - len(cmc), cmc[-1])])


def _average_precision(raw_cmc):
    num_rel = raw_cmc.sum()
    tmp_cmc = raw_cmc.cumsum()
    tmp_cmc = np.asarray([x / (i + 1.0) for i, x in enumerate(tmp_cmc)]) * raw_cmc
    return tmp_cmc.sum() / num_rel


def reference_cuhk03(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=50, num_repeats=10, seed=0):
    "Torchreid's eval_cuhk03 loop, the random choice of one image per identity taken from the documented draws."
    distmat, q_pids, g_pids, q_camids, g_camids = map(np.asarray, (distmat, q_pids, g_pids, q_camids, g_camids))
    num_q, num_g = distmat.shape
    max_rank = min(max_rank, num_g)
    rng = np.random.default_rng(seed)
    ids = np.unique(g_pids)
    indices = np.argsort(distmat, axis=1, kind="stable")
    all_cmc, all_ap = [], []
    for q in range(num_q):
        u = rng.random((num_repeats, len(ids)))  # drawn for every query, valid or not
        order = indices[q]
        keep = ~((g_pids[order] == q_pids[q]) & (g_camids[order] == q_camids[q]))
        raw_cmc = (g_pids[order][keep] == q_pids[q]).astype(np.int32)
        if not np.any(raw_cmc):
            continue
        kept = order[keep]  # gallery indices, best first
        cmc = np.zeros(max_rank)
        for r in range(num_repeats):
            mask = np.zeros(len(raw_cmc), dtype=bool)
            for k, pid in enumerate(ids):
                members = np.sort(kept[g_pids[kept] == pid])  # eligible images of this identity, gallery order
                if len(members) == 0:
                    continue
                chosen = members[int(np.floor(u[r, k] * len(members)))]
                mask[np.flatnonzero(kept == chosen)[0]] = True
            one_cmc = raw_cmc[mask].cumsum()
            one_cmc[one_cmc > 1] = 1
            cmc += _pad_cmc(one_cmc, max_rank)
        all_cmc.append(cmc / num_repeats)
        all_ap.append(_average_precision(raw_cmc))
    return np.asarray(all_cmc).sum(0) / len(all_cmc), np.mean(all_ap), len(all_cmc)


def random_problem(nq=60, ng=300, n_ids=25, n_cams=4, seed=0, absent=5, distractors=40, dist=None):
    "Random ids and cameras: some query ids absent from the gallery, some gallery images pid 0 (distractors)."
    rng = np.random.default_rng(seed)
    q_pids = rng.integers(1, n_ids + 1 + absent, nq)  # ids > n_ids never appear in the gallery
    g_pids = rng.integers(1, n_ids + 1, ng)
    g_pids[rng.choice(ng, distractors, replace=False)] = 0
    q_cams, g_cams = rng.integers(0, n_cams, nq), rng.integers(0, n_cams, ng)
    if dist is None:
        dist = rng.random((nq, ng), dtype=np.float32)
    return dist, q_pids, g_pids, q_cams, g_cams


def check_market(args, **kw):
    res = evaluate_rank(*args, **kw)
    cmc, mAP, mINP, n_valid = reference_market(*args, max_rank=kw.get("max_rank", 50))
    assert res["num_valid_queries"] == n_valid
    np.testing.assert_allclose(res["cmc"], cmc, atol=1e-6, rtol=0)
    assert abs(res["mAP"] - mAP) < 1e-6 and abs(res["mINP"] - mINP) < 1e-6
    return res


# ---------------------------------------------------------------- market1501 protocol

@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_distances_match_reference(seed):
    args = random_problem(seed=seed)
    res = check_market(args)
    assert len(res["cmc"]) == 50 and res["cmc"].dtype == np.float64
    assert 0 <= res["mINP"] <= res["mAP"] <= 1 and isinstance(res["mAP"], float)
    assert res["num_valid_queries"] < len(args[1])  # absent identities were skipped


def test_tied_integer_distances_break_ties_by_gallery_index():
    rng = np.random.default_rng(3)
    args = random_problem(nq=50, ng=200, dist=rng.integers(0, 6, (50, 200)), seed=3)
    check_market(args)  # int64 distances: exactly representable, counting path
    check_market((args[0].astype(np.float64), *args[1:]))
    check_market((torch.from_numpy(args[0].astype(np.float32)), *args[1:]), chunk_size=7)


def test_hand_example_with_tie():
    # Distances tie between a wrong image (column 0) and the match (column 1): the lower index ranks first.
    res = evaluate_rank(np.array([[2.0, 2.0, 3.0, 1.0]]), [5], [7, 5, 5, 8], [0], [1, 1, 0, 1], max_rank=4)
    # kept list: col 3 (wrong), col 0 (wrong), col 1 (match); col 2 is the same camera and is dropped
    np.testing.assert_allclose(res["cmc"], [0, 0, 1, 1])
    assert res["mAP"] == pytest.approx(1 / 3) and res["mINP"] == pytest.approx(1 / 3)


def test_float64_and_sort_path_match_reference(monkeypatch):
    dist, *ids = random_problem(seed=4)
    check_market((dist.astype(np.float64) + 1e-12 * np.arange(dist.shape[1]), *ids))  # not float32: sort path
    monkeypatch.setattr(metrics, "_COUNT_MAX_MEMBERS", 0)  # force the sort path for float32 too
    check_market((dist, *ids))


def test_large_identity_uses_sort_path_and_matches():
    rng = np.random.default_rng(5)
    dist, q_pids, g_pids, q_cams, g_cams = random_problem(nq=30, ng=400, seed=5)
    g_pids[:200] = 1  # identity 1 has 200+ gallery images: more members than the counting path takes
    q_pids[:10] = 1
    check_market((dist, q_pids, g_pids, q_cams, g_cams))
    check_market((rng.integers(0, 4, dist.shape).astype(np.float32), q_pids, g_pids, q_cams, g_cams))


def test_distractors_never_match():
    dist, q_pids, g_pids, q_cams, g_cams = random_problem(seed=6, distractors=100)
    res = check_market((dist, q_pids, g_pids, q_cams, g_cams))
    # moving every distractor to the very front costs rank, never adds a hit
    front = dist.copy()
    front[:, g_pids == 0] = -1.0
    worse = check_market((front, q_pids, g_pids, q_cams, g_cams))
    assert worse["cmc"][0] == 0 and worse["mAP"] < res["mAP"]
    assert worse["num_valid_queries"] == res["num_valid_queries"]


def test_same_camera_images_are_ignored():
    dist, q_pids, g_pids, q_cams, g_cams = random_problem(seed=7)
    res = check_market((dist, q_pids, g_pids, q_cams, g_cams))
    # putting each query's same-pid same-camera images first changes nothing
    junk = (q_pids[:, None] == g_pids[None]) & (q_cams[:, None] == g_cams[None])
    assert junk.any()
    moved = np.where(junk, -5.0, dist).astype(np.float32)
    res2 = check_market((moved, q_pids, g_pids, q_cams, g_cams))
    assert res2["mAP"] == pytest.approx(res["mAP"], abs=1e-12)
    np.testing.assert_array_equal(res2["cmc"], res["cmc"])


def test_queries_without_gallery_match_are_skipped():
    dist = np.array([[0.1, 0.2], [0.3, 0.4], [0.5, 0.6]], np.float32)
    # query 0: absent id; query 1: only same-camera images of its id; query 2: a valid match at rank 2
    res = evaluate_rank(dist, [9, 1, 2], [1, 2], [0, 0, 0], [0, 1], max_rank=5)
    assert res["num_valid_queries"] == 1 and res["mAP"] == 0.5 and len(res["cmc"]) == 2  # min(max_rank, n_gallery)
    np.testing.assert_array_equal(res["cmc"], [0, 1])


def test_string_ids_and_tensor_inputs():
    dist, q_pids, g_pids, q_cams, g_cams = random_problem(seed=8)
    res = evaluate_rank(dist, q_pids, g_pids, q_cams, g_cams)
    names = np.array([f"id{p:03d}" for p in range(100)])
    res_s = evaluate_rank(torch.from_numpy(dist), names[q_pids], names[g_pids], torch.from_numpy(q_cams),
                          torch.from_numpy(g_cams))
    assert res_s["mAP"] == pytest.approx(res["mAP"], abs=1e-12)


def test_chunk_size_does_not_change_results():
    args = random_problem(seed=9)
    a, b = evaluate_rank(*args, chunk_size=1), evaluate_rank(*args, chunk_size=1000)
    assert a["mAP"] == pytest.approx(b["mAP"], abs=1e-12) and a["mINP"] == pytest.approx(b["mINP"], abs=1e-12)
    np.testing.assert_array_equal(a["cmc"], b["cmc"])


def test_accelerator_code_path_matches_reference(monkeypatch):
    "Distances on an accelerator stay torch tensors; run those steps here on CPU tensors."
    monkeypatch.setattr(metrics, "_distances", lambda d: torch.as_tensor(np.asarray(d)))
    rng = np.random.default_rng(10)
    dist, *ids = random_problem(seed=10)
    check_market((dist, *ids))
    check_market((rng.integers(0, 5, dist.shape), *ids), chunk_size=9)  # int64 tensor, ties
    check_market((dist.astype(np.float64) + 1e-12 * np.arange(dist.shape[1]), *ids))  # sort path
    res = evaluate_rank(dist, *ids, max_rank=20, protocol="cuhk03", num_repeats=4, seed=2)
    cmc, mAP, _ = reference_cuhk03(dist, *ids, max_rank=20, num_repeats=4, seed=2)
    np.testing.assert_allclose(res["cmc"], cmc, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="NaN"):
        evaluate_rank(np.full_like(dist, np.nan), *ids)


# ---------------------------------------------------------------- errors

def test_shape_errors_name_arrays_and_shapes():
    dist, q_pids, g_pids, q_cams, g_cams = random_problem(nq=5, ng=8, n_ids=3, absent=0, distractors=0)
    with pytest.raises(ValueError, match=r"g_pids has shape \(5,\) but distmat has 8 columns"):
        evaluate_rank(dist, q_pids, q_pids, q_cams, g_cams)
    with pytest.raises(ValueError, match=r"q_camids has shape \(8,\) but distmat has 5 rows.*\(5, 8\)"):
        evaluate_rank(dist, q_pids, g_pids, g_cams, g_cams)
    with pytest.raises(ValueError, match="distmat must be 2-D"):
        evaluate_rank(dist[0], q_pids, g_pids, q_cams, g_cams)
    with pytest.raises(ValueError, match="q_pids must be 1-D"):
        evaluate_rank(dist, q_pids[:, None], g_pids, q_cams, g_cams)
    with pytest.raises(ValueError, match="no query has a true match"):
        evaluate_rank(dist, q_pids + 100, g_pids, q_cams, g_cams)
    with pytest.raises(ValueError, match="NaN"):
        evaluate_rank(np.full((5, 8), np.nan), q_pids, g_pids, q_cams, g_cams)
    with pytest.raises(ValueError, match="protocol"):
        evaluate_rank(dist, q_pids, g_pids, q_cams, g_cams, protocol="duke")
    with pytest.raises(ValueError, match=r"q_q_dist \(5, 5\).*got \(5, 8\)"):
        re_ranking(dist, dist, np.zeros((8, 8)))


# ---------------------------------------------------------------- cuhk03 single-gallery-shot

@pytest.mark.parametrize("seed", [0, 1])
def test_cuhk03_matches_reference(seed):
    rng = np.random.default_rng(seed)
    args = random_problem(nq=40, ng=150, n_ids=12, seed=seed)
    res = evaluate_rank(*args, max_rank=20, protocol="cuhk03", num_repeats=5, seed=seed, chunk_size=6)
    cmc, mAP, n_valid = reference_cuhk03(*args, max_rank=20, num_repeats=5, seed=seed)
    assert res["num_valid_queries"] == n_valid
    np.testing.assert_allclose(res["cmc"], cmc, atol=1e-6, rtol=0)
    assert res["mAP"] == pytest.approx(mAP, abs=1e-6)
    # ties: integer distances
    tied = (rng.integers(0, 3, (40, 150)), *args[1:])
    res = evaluate_rank(*tied, max_rank=20, protocol="cuhk03", num_repeats=3, seed=seed)
    cmc, mAP, n_valid = reference_cuhk03(*tied, max_rank=20, num_repeats=3, seed=seed)
    np.testing.assert_allclose(res["cmc"], cmc, atol=1e-6, rtol=0)


def test_cuhk03_is_deterministic_and_seeded():
    args = random_problem(nq=40, ng=150, n_ids=12, seed=3)
    a = evaluate_rank(*args, protocol="cuhk03", seed=3)
    b = evaluate_rank(*args, protocol="cuhk03", seed=3, chunk_size=1)
    c = evaluate_rank(*args, protocol="cuhk03", seed=4)
    np.testing.assert_array_equal(a["cmc"], b["cmc"])
    assert not np.array_equal(a["cmc"], c["cmc"])


# ---------------------------------------------------------------- re-ranking

def _clustered_features(n_ids, n_per, dim=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(n_ids, dim, generator=g)
    return centers.repeat_interleave(n_per, 0) + 0.6 * torch.randn(n_ids * n_per, dim, generator=g)


def _rerank_inputs(nq=30, ng=80, seed=0, duplicates=False):
    f = _clustered_features(11, 10, seed=seed)
    perm = torch.randperm(len(f), generator=torch.Generator().manual_seed(seed))
    qf, gf = f[perm[:nq]], f[perm[nq:nq + ng]]
    if duplicates:  # identical images: zero distances and exact ties in the initial ranking
        gf[1] = gf[0]
        gf[5] = qf[0]
    return [compute_distance_matrix(a, b) for a, b in ((qf, gf), (qf, qf), (gf, gf))]


@pytest.mark.parametrize("seed,duplicates", [(0, False), (1, True)])
def test_re_ranking_matches_reference(seed, duplicates):
    q_g, q_q, g_g = _rerank_inputs(seed=seed, duplicates=duplicates)
    fast = re_ranking(q_g, q_q, g_g)
    assert fast.dtype == np.float32 and fast.shape == (30, 80)
    np.testing.assert_allclose(fast, _re_ranking_reference(q_g, q_q, g_g), atol=1e-5, rtol=0)
    for k1, k2, lam in ((5, 1, 0.0), (3, 4, 1.0), (120, 3, 0.5)):  # k1 + 1 > N: every image is a neighbour
        np.testing.assert_allclose(re_ranking(q_g.numpy(), q_q.numpy(), g_g.numpy(), k1, k2, lam),
                                   _re_ranking_reference(q_g, q_q, g_g, k1, k2, lam), atol=1e-5, rtol=0)


def test_re_ranking_with_integer_distances_ties():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 5, (40, 3)).astype(np.float64)  # many identical points: heavy ties
    d = ((x[:, None] - x[None]) ** 2).sum(-1)
    q_g, q_q, g_g = d[:12, 12:], d[:12, :12], d[12:, 12:]
    np.testing.assert_allclose(re_ranking(q_g, q_q, g_g, k1=6, k2=3),
                               _re_ranking_reference(q_g, q_q, g_g, k1=6, k2=3), atol=1e-5, rtol=0)


def test_re_ranking_improves_a_clustered_problem():
    q_g, q_q, g_g = _rerank_inputs(seed=2)
    f = _clustered_features(11, 10, seed=2)
    ids = torch.arange(11).repeat_interleave(10)[torch.randperm(len(f), generator=torch.Generator().manual_seed(2))]
    q_ids, g_ids = ids[:30], ids[30:110]
    cams_q, cams_g = np.zeros(30), np.ones(80)
    plain = evaluate_rank(q_g, q_ids, g_ids, cams_q, cams_g)
    rr = evaluate_rank(re_ranking(q_g, q_q, g_g), q_ids, g_ids, cams_q, cams_g)
    assert rr["mAP"] >= plain["mAP"] - 0.02 and rr["mAP"] > 0.5


# ---------------------------------------------------------------- features

class _LeftHalfMean(torch.nn.Module):
    "Feature = mean of the left half of the image: flipping swaps the halves."
    def forward(self, x):
        return torch.stack([x[..., : x.shape[-1] // 2].mean((1, 2, 3)), x.mean((1, 2, 3))], 1)


def test_extract_features_flip_tta_and_loader_formats():
    images = torch.rand(6, 3, 4, 6)
    left, right, whole = images[..., :3].mean((1, 2, 3)), images[..., 3:].mean((1, 2, 3)), images.mean((1, 2, 3))
    loader = [{"image": images[:4], "pid": torch.tensor([1, 1, 2, 2]), "camid": torch.tensor([0, 1, 0, 1])},
              (images[4:], torch.tensor([3, 3]), torch.tensor([2, 2]), ["a.jpg", "b.jpg"])]
    model = _LeftHalfMean().train()
    feats, pids, camids = extract_features(model, loader, flip=True, normalize=False)
    torch.testing.assert_close(feats[:, 0], (left + right) / 2)
    torch.testing.assert_close(feats[:, 1], whole)
    assert pids.tolist() == [1, 1, 2, 2, 3, 3] and camids.tolist() == [0, 1, 0, 1, 2, 2]
    assert model.training  # restored
    feats, _, _ = extract_features(model, loader, flip=False, normalize=True)
    torch.testing.assert_close(feats, torch.nn.functional.normalize(torch.stack([left, whole], 1), dim=1))
    with pytest.raises(TypeError, match="loader batch"):
        extract_features(model, [images])


class _Embedder(torch.nn.Module):
    "A module whose test-time feature is a method (like a Disentangler's `embed`), recording its mode when called."
    def __init__(self):
        super().__init__()
        self.bn = torch.nn.BatchNorm1d(2)
        self.modes = []

    def embed(self, x):
        self.modes.append(self.training)
        return self.bn(x.flatten(2).mean(2)[:, :2])


def test_extract_features_puts_a_bound_method_module_in_eval_mode():
    model = _Embedder().train()
    loader = [(torch.rand(3, 3, 4, 2), torch.tensor([1, 2, 3]), torch.tensor([0, 0, 1]))]
    feats, _, _ = extract_features(model.embed, loader, flip=True)
    assert model.modes == [False, False] and model.training  # eval during extraction, train mode restored
    assert feats.shape == (3, 2) and not feats.requires_grad
    torch.testing.assert_close(feats.norm(dim=1), torch.ones(3))


def test_distances_and_evaluate_features():
    rng = torch.Generator().manual_seed(0)
    qf, gf = torch.randn(7, 5, generator=rng), torch.randn(11, 5, generator=rng)
    torch.testing.assert_close(compute_distance_matrix(qf, gf, chunk_size=3), torch.cdist(qf, gf) ** 2,
                               atol=1e-4, rtol=1e-4)
    cos = 1 - torch.nn.functional.normalize(qf, dim=1) @ torch.nn.functional.normalize(gf, dim=1).T
    torch.testing.assert_close(compute_distance_matrix(qf.numpy(), gf.numpy(), "cosine"), cos)
    f = _clustered_features(8, 6, seed=1)
    ids, cams = torch.arange(8).repeat_interleave(6), torch.arange(48) % 2
    q = torch.arange(48) % 6 == 0
    table = evaluate_features(f[q], f[~q], ids[q], ids[~q], cams[q], cams[~q], metric="cosine")
    assert isinstance(table, pd.DataFrame) and list(table.columns) == ["rank1", "rank5", "rank10", "mAP", "mINP"]
    res = evaluate_rank(compute_distance_matrix(f[q], f[~q], "cosine"), ids[q], ids[~q], cams[q], cams[~q])
    assert table.loc[0, "rank1"] == res["cmc"][0] and table.loc[0, "mAP"] == res["mAP"]
    assert all(0 <= v <= 1 for v in table.iloc[0])
    rr = evaluate_features(f[q], f[~q], ids[q], ids[~q], cams[q], cams[~q], rerank=True, k1=5, k2=2)
    assert 0 < rr.loc[0, "mAP"] <= 1
