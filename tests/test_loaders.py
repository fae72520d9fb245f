"Tests of reid_workbench.data.loaders: transforms with keypoints, samplers, datasets and DataLoaders."
from __future__ import annotations
from collections import Counter
from pathlib import Path
import numpy as np
import pytest
import torch
from PIL import Image
from reid_workbench.data.datasets import ImageRecord, ReIDDataset
from reid_workbench.data.pose import COCO18_NAMES, FLIP_PERMUTATION
from reid_workbench.data.loaders import (
    LoaderConfig, PKSampler, PairDataset, PositivePairSampler, ReIDImageDataset, ShuffleSampler, TransformConfig,
    VerificationPairSampler, build_test_loaders, build_test_transform, build_train_loader, build_train_transform,
    load_image, transform_image_and_pose)
import torchvision.transforms.v2 as T

R_WRIST, L_WRIST, R_ANKLE, L_ANKLE = (COCO18_NAMES.index(n) for n in ("r_wrist", "l_wrist", "r_ankle", "l_ankle"))
H, W = 32, 16

def toy_pose(dx: float = 0.0) -> np.ndarray:
    "A hand-made pose on a 16x32 image: a few joints visible, the rest unknown."
    pose = np.full((18, 3), -1.0, np.float32); pose[:, 2] = 0
    pose[R_WRIST] = (3 + dx, 12, 1); pose[L_WRIST] = (12 + dx, 12, 1)
    pose[R_ANKLE] = (5, 29, 1); pose[L_ANKLE] = (10, 29, 0)  # known position, not visible
    return pose

def dot_image(pose: np.ndarray, shade: int = 0) -> Image.Image:
    "A dark image with a red dot on the right wrist and a green dot on the left wrist."
    arr = np.full((H, W, 3), shade, np.uint8)
    rx, ry = pose[R_WRIST, :2].astype(int); lx, ly = pose[L_WRIST, :2].astype(int)
    arr[ry, rx] = (255, 0, 0); arr[ly, lx] = (0, 255, 0)
    return Image.fromarray(arr)

@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> ReIDDataset:
    "6 identities with 1..6 images over 3 cameras, plus a query / gallery split; paths relative to the root."
    root = tmp_path_factory.mktemp("toy")
    records, keypoints = [], {}
    for pid, n in enumerate([1, 2, 3, 4, 5, 6]):
        for k in range(n):
            path = f"{pid:04d}_c{k % 3 + 1}s1_{k:06d}_00.png"
            pose = toy_pose(dx=k % 2)
            dot_image(pose, shade=20 * pid).save(root / path)
            records.append(ImageRecord(path, pid, k % 3)); keypoints[path] = pose
    return ReIDDataset("toy", root, records, records[::4], records[1::4], keypoints)

def plain(**kw) -> TransformConfig:
    "A transform config with every random step off unless asked, at the toy image size."
    return TransformConfig(**{**dict(size=(H, W), pad=0, flip_p=0.0, random_erasing_p=0.0, normalize=False), **kw})

# ---------------------------------------------------------------- samplers

PIDS = [0] * 7 + [1] * 2 + [2] * 5 + [3] * 4 + [4] * 1 + [5] * 9
CAMS = [0, 1, 0, 1, 0, 1, 0] + [0, 0] + [0, 1, 1, 1, 1] + [2, 2, 2, 2] + [0] + [0, 1, 2] * 3

def test_pk_batches_have_p_identities_with_k_images():
    s = PKSampler(PIDS, P=3, K=4, seed=0)
    for epoch in range(3):
        batches = list(s)
        assert len(batches) == len(s) == (2 + 1 + 2 + 1 + 1 + 3) // 3
        for b in batches:
            assert len(b) == 12
            counts = Counter(PIDS[i] for i in b)
            assert len(counts) == 3 and set(counts.values()) == {4}
            for k in range(3): assert len({PIDS[i] for i in b[4 * k:4 * k + 4]}) == 1  # grouped by identity
            # identities with >= K images give K distinct images; fewer than K: drawn with replacement
            for k in range(3):
                chunk = b[4 * k:4 * k + 4]
                if PIDS.count(PIDS[chunk[0]]) >= 4: assert len(set(chunk)) == 4
    single = [b for b in PKSampler([0] * 1 + [1] * 4 + [2] * 4, P=3, K=4, seed=1)]
    assert all(Counter(b)[0] == 4 for b in single)  # the one image of pid 0, four times
    with pytest.raises(ValueError, match="at least P=7 identities"): PKSampler(PIDS, P=7, K=4)

def test_pk_epoch_covers_most_images_and_reshuffles():
    s = PKSampler(PIDS, P=2, K=2, seed=5)
    first, second = list(s), list(s)
    seen = {i for b in first for i in b}
    assert len(seen) >= 0.85 * len(PIDS)  # chunks are drawn in proportion to what is left: few are left over
    assert first != second and s.epoch == 2
    s.set_epoch(0)
    assert list(s) == first

def test_positive_pairs_share_pid_differ_in_index_and_prefer_another_camera():
    pairs = list(PositivePairSampler(PIDS, CAMS, seed=2))
    assert len(pairs) == len(PIDS) - 1  # every image but the single one of pid 4 anchors once
    assert sorted(i for i, _ in pairs) == [i for i, p in enumerate(PIDS) if p != 4]
    for i, j in pairs:
        assert PIDS[i] == PIDS[j] and i != j
        if PIDS[i] not in (1, 3): assert CAMS[i] != CAMS[j]  # pids 1 and 3 are seen by a single camera
    same_cam = [p for seed in range(5) for p in PositivePairSampler(PIDS, CAMS, prefer_other_camera=False, seed=seed)]
    assert any(CAMS[i] == CAMS[j] for i, j in same_cam if PIDS[i] == 5)
    with pytest.raises(ValueError, match="at least two images"): PositivePairSampler([0, 1, 2])

def test_verification_pairs_are_exactly_one_to_three():
    s = VerificationPairSampler(PIDS, batch_size=8, pos_neg_ratio=(1, 3), camids=CAMS, seed=0)
    batches = list(s)
    assert len(batches) == len(s) == 27 // 2
    flat = [t for b in batches for t in b]
    assert all(len(b) == 8 and sum(same for *_, same in b) == 2 for b in batches)
    assert sum(same for *_, same in flat) * 3 == sum(not same for *_, same in flat)
    for i, j, same in flat:
        assert (PIDS[i] == PIDS[j]) == same
        if same: assert i != j
    assert any(not b[0][2] for b in batches) and any(b[0][2] for b in batches)  # shuffled within the batch
    fd = VerificationPairSampler(list(range(200)) * 2, batch_size=128, seed=0)  # FD-GAN: 128 pairs, 32 positive
    assert all(sum(same for *_, same in b) == 32 for b in fd)
    with pytest.raises(ValueError, match="divisible"): VerificationPairSampler(PIDS, batch_size=6)

def test_samplers_are_deterministic_with_the_seed():
    for make in (lambda s: PKSampler(PIDS, 3, 2, seed=s), lambda s: PositivePairSampler(PIDS, CAMS, seed=s),
                 lambda s: VerificationPairSampler(PIDS, 8, seed=s), lambda s: ShuffleSampler(len(PIDS), seed=s)):
        assert list(make(11)) == list(make(11))
        assert list(make(11)) != list(make(12))

def test_ddp_shares_are_disjoint_and_make_the_epoch():
    for replicas in (2, 3):
        shares = [list(ShuffleSampler(10, seed=4, num_replicas=replicas, rank=r)) for r in range(replicas)]
        assert len({len(s) for s in shares}) == 1
        assert sorted(sum(shares, [])) == sorted(np.resize(np.arange(10), len(shares[0]) * replicas).tolist())
    shares = [list(ShuffleSampler(12, seed=4, num_replicas=3, rank=r)) for r in range(3)]
    assert sorted(sum(shares, [])) == list(range(12))  # divisible: exactly disjoint
    pairs = [list(PositivePairSampler(PIDS, CAMS, seed=4, num_replicas=3, rank=r)) for r in range(3)]
    anchors = [{i for i, _ in p} for p in pairs]
    assert all(not (anchors[a] & anchors[b]) for a in range(3) for b in range(a + 1, 3))  # 27 anchors / 3
    for make in (lambda r: PKSampler(PIDS, 2, 2, seed=4, num_replicas=2, rank=r),
                 lambda r: VerificationPairSampler(PIDS, 8, seed=4, num_replicas=2, rank=r)):
        whole = make(0).epoch_items(np.random.default_rng([4, 0]))
        shares = [list(make(r)) for r in range(2)]
        assert shares[0] == whole[0::2] and shares[1] == whole[1::2] and len(shares[0]) == len(shares[1])
    with pytest.raises(ValueError, match="rank"): ShuffleSampler(5, num_replicas=2, rank=2)

# ---------------------------------------------------------------- transforms and keypoints

def test_flip_keeps_keypoints_consistent_and_swaps_left_right():
    pose = toy_pose()
    img = dot_image(pose)
    out, p = transform_image_and_pose(build_train_transform(plain(flip_p=1.0)), img, pose)
    # the left wrist is now the mirror of the old right wrist: x -> W - 1 - x, and it carries the red dot
    assert p[L_WRIST].tolist() == [W - 1 - 3, 12, 1] and p[R_WRIST].tolist() == [W - 1 - 12, 12, 1]
    assert out[:, 12, W - 1 - 3].tolist() == [1, 0, 0] and out[:, 12, W - 1 - 12].tolist() == [0, 1, 0]
    assert p[L_ANKLE, 2] == 1 and p[R_ANKLE, 2] == 0  # visibility flags swap with the joints
    assert p[R_ANKLE, :2].tolist() == [W - 1 - 10, 29]
    unknown = [i for i in range(18) if pose[i, 2] == 0 and pose[i, 0] < 0]
    assert (p[unknown] == torch.tensor([-1., -1., 0.])).all()
    flipped_names = [COCO18_NAMES[i] for i in FLIP_PERMUTATION]
    assert flipped_names[R_WRIST] == "l_wrist"
    # flipping twice is the identity
    twice = T.Compose([build_train_transform(plain(flip_p=1.0)).transforms[1]] * 2)
    _, back = transform_image_and_pose(T.Compose([T.ToDtype(torch.float32, scale=True), twice]), img, pose)
    assert torch.equal(back, torch.from_numpy(pose))

def test_crop_moves_keypoints_and_hides_joints_out_of_frame():
    pose = toy_pose()
    pose[L_WRIST] = (15, 12, 1)  # on the right edge: pushed out by any crop offset to the left
    img = dot_image(pose)
    tf = build_train_transform(plain(pad=6))
    outcomes = set()
    for seed in range(12):
        torch.manual_seed(seed)
        out, p = transform_image_and_pose(tf, img, pose)
        for joint, colour in ((R_WRIST, [1, 0, 0]), (L_WRIST, [0, 1, 0])):
            x, y, v = p[joint].tolist()
            inside = 0 <= x < W and 0 <= y < H
            assert v == float(inside)  # pushed out of the frame: invisible
            if inside: assert out[:, int(y), int(x)].tolist() == colour  # the dot moved with its keypoint
            if joint == L_WRIST: outcomes.add(inside)
        assert p[L_WRIST, 0] - p[R_WRIST, 0] == 12 and abs(p[L_WRIST, 0] - 15) <= 6  # one translation for all
    assert outcomes == {True, False}

def test_resize_keeps_keypoints_on_their_pixels():
    pose = toy_pose()
    out, p = transform_image_and_pose(build_test_transform(plain(size=(2 * H, 2 * W))), dot_image(pose), pose)
    x, y, _ = p[R_WRIST].tolist()
    assert (x, y) == (6.5, 24.5)  # pixel 3 of 16 covers pixels 6 and 7 of 32: centre 6.5
    assert out[0, 24:26, 6:8].mean() > 0.4 and out[0, 24:26, 9:11].mean() < 0.2

def test_random_erasing_only_in_train_transform():
    names = lambda tf: [type(t).__name__ for t in tf.transforms]
    cfg = plain(random_erasing_p=1.0, normalize=True)
    assert "RandomErasing" in names(build_train_transform(cfg))
    assert "RandomErasing" not in names(build_test_transform(cfg))
    img = Image.new("RGB", (W, H), (200, 150, 100))
    torch.manual_seed(0)
    train, _ = transform_image_and_pose(build_train_transform(cfg), img)
    test, _ = transform_image_and_pose(build_test_transform(cfg), img)
    assert (train == 0).all(0).sum() > 0          # an erased rectangle, set to 0 (the mean colour)
    assert (test != 0).all() and torch.equal(test, transform_image_and_pose(build_test_transform(cfg), img)[0])
    mean = torch.tensor([200, 150, 100]) / 255
    assert torch.allclose(test[:, 0, 0], (mean - torch.tensor(cfg.mean)) / torch.tensor(cfg.std), atol=1e-5)

# ---------------------------------------------------------------- datasets and loaders

def test_dataset_items_and_heatmaps(toy):
    data = ReIDImageDataset(toy.train, build_test_transform(plain()), toy.keypoints, heatmaps={"sigma": 1.5, "ref_height": None},
                            root=toy.root)
    item = data[3]
    assert set(item) == {"image", "pid", "camid", "index", "path", "keypoints", "heatmap"}
    assert item["image"].shape == (3, H, W) and item["image"].dtype == torch.float32
    assert (item["pid"], item["camid"], item["index"], item["path"]) == (2, 0, 3, toy.train[3].path)
    assert item["keypoints"].shape == (18, 3) and item["heatmap"].shape == (18, H, W)
    for j in (R_WRIST, L_WRIST, R_ANKLE):
        hm = item["heatmap"][j]
        y, x = divmod(int(hm.argmax()), W)
        assert (x, y) == tuple(int(c) for c in item["keypoints"][j, :2]) and hm.max() > 0.9
    assert item["heatmap"][L_ANKLE].max() == 0 and item["heatmap"][0].max() == 0  # invisible, unknown
    half = ReIDImageDataset(toy.train, build_test_transform(plain()), toy.keypoints,
                            heatmaps={"sigma": 1.0, "ref_height": None, "size": (H // 2, W // 2)}, root=toy.root)[3]
    assert half["heatmap"].shape == (18, H // 2, W // 2)
    y, x = divmod(int(half["heatmap"][L_WRIST].argmax()), W // 2)
    assert (x, y) == (6, 6)  # pixel (12, 12) at half size
    fd = ReIDImageDataset(toy.train, build_test_transform(plain()), toy.keypoints,
                          heatmaps={"sigma_range": (4, 6)}, root=toy.root, seed=0)
    assert not torch.equal(fd[3]["heatmap"], fd[3]["heatmap"])  # a new bandwidth per draw
    with pytest.raises(ValueError, match="no keypoints"): ReIDImageDataset(toy.train, heatmaps=True)
    with pytest.raises(ValueError, match="unknown option"): ReIDImageDataset(toy.train, None, toy.keypoints, {"s": 1})

def test_unreadable_image_error_names_the_file(tmp_path):
    (tmp_path / "0001_c1s1_000001_00.jpg").write_bytes(b"\xff\xd8 truncated")
    data = ReIDImageDataset([ImageRecord("0001_c1s1_000001_00.jpg", 1, 0)], root=tmp_path)
    with pytest.raises(OSError, match="0001_c1s1_000001_00.jpg"): data[0]
    with pytest.raises(OSError, match="nothing.png"): load_image(tmp_path / "nothing.png")

def test_pair_dataset_nests_two_items(toy):
    data = PairDataset(ReIDImageDataset(toy.train, build_test_transform(plain()), root=toy.root))
    item = data[(5, 7, True)]
    assert item["same"] is False  # pids 2 and 3: computed from the pids, not the caller's flag
    assert item["anchor"]["index"] == 5 and item["other"]["index"] == 7

def test_train_loaders_for_every_sampler(toy):
    cfg = LoaderConfig(batch_size=4, P=3, K=2, transform=plain(pad=4, flip_p=0.5, random_erasing_p=0.5))
    pk = list(build_train_loader(toy, cfg, "pk"))
    assert len(pk) == 12 // 3 and all(b["image"].shape == (6, 3, H, W) for b in pk)
    assert all(len(set(b["pid"].tolist())) == 3 for b in pk)
    pairs = list(build_train_loader(toy, cfg, "pair"))
    assert len(pairs) == 20 // 4
    for b in pairs:
        assert torch.equal(b["anchor"]["pid"], b["other"]["pid"]) and b["same"].all()
        assert (b["anchor"]["index"] != b["other"]["index"]).all()
    ver = list(build_train_loader(toy, cfg.replace(batch_size=8), "verification"))
    assert len(ver) == 20 // 2 and all(int(b["same"].sum()) == 2 for b in ver)
    rnd = list(build_train_loader(toy, cfg, "random"))
    assert len(rnd) == 21 // 4 and all(len(b["index"]) == 4 for b in rnd)
    with pytest.raises(ValueError, match="unknown sampler"): build_train_loader(toy, cfg, "triplets")

def test_loaders_are_deterministic_with_workers(toy):
    cfg = LoaderConfig(P=2, K=2, seed=3, transform=plain(pad=4, flip_p=0.5, random_erasing_p=0.5))
    runs = [[(b["index"], b["image"], b["keypoints"]) for b in build_train_loader(toy, cfg, "pk")]
            for _ in range(2)]
    with_workers = [[(b["index"], b["image"], b["keypoints"])
                     for b in build_train_loader(toy, cfg.replace(num_workers=2), "pk")] for _ in range(2)]
    for a, b in [(runs[0], runs[1]), (with_workers[0], with_workers[1])]:
        assert len(a) == len(b) and all(torch.equal(x, y) for ba, bb in zip(a, b) for x, y in zip(ba, bb))
    assert torch.equal(runs[0][0][0], with_workers[0][0][0])  # the sampler does not depend on the workers
    other = next(iter(build_train_loader(toy, cfg.replace(seed=4), "pk")))
    assert not torch.equal(other["image"], runs[0][0][1])
    # a second epoch of the same loader reshuffles, and each pass advances the sampler's epoch by exactly one
    for workers in (0, 2):
        loader = build_train_loader(toy, cfg.replace(num_workers=workers), "pk")
        e1, e2 = [b["index"] for b in loader], [b["index"] for b in loader]
        assert any(not torch.equal(a, b) for a, b in zip(e1, e2)) and loader.batch_sampler.epoch == 2
        loader.batch_sampler.set_epoch(0)
        assert all(torch.equal(a, b["index"]) for a, b in zip(e1, loader))

def test_ddp_train_loaders_split_the_epoch(toy):
    cfg = LoaderConfig(batch_size=2, transform=plain())
    shares = [{i for b in build_train_loader(toy, cfg, "random", num_replicas=3, rank=r) for i in b["index"].tolist()}
              for r in range(3)]
    assert all(len(s) == 6 for s in shares) and not (shares[0] & shares[1] or shares[0] & shares[2] or
                                                     shares[1] & shares[2])

def test_test_loaders_keep_record_order(toy):
    cfg = LoaderConfig(test_batch_size=3, transform=plain(pad=4, flip_p=1.0, random_erasing_p=1.0))
    query, gallery = build_test_loaders(toy, cfg)
    for loader, records in ((query, toy.query), (gallery, toy.gallery)):
        batches = list(loader)
        assert [p for b in batches for p in b["path"]] == [r.path for r in records]
        assert torch.cat([b["pid"] for b in batches]).tolist() == [r.pid for r in records]
    first = next(iter(query))
    assert torch.equal(first["keypoints"][0], torch.from_numpy(toy.keypoints[toy.query[0].path]))  # no flip
    assert torch.equal(first["image"], next(iter(query))["image"])

def test_loader_config_round_trip():
    cfg = LoaderConfig.tiny()
    assert LoaderConfig.from_json(cfg.to_json()) == cfg
    assert cfg.transform.size == (128, 64)
