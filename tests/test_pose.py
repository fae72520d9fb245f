"""Tests of reid_workbench.data.pose: file formats, heatmaps, skeletons, flips, normalisation, clustering."""
import json
import sys

import numpy as np
import pytest
import torch
from scipy import ndimage

import reid_workbench  # noqa: F401  (registers torchvision fallbacks before torchvision is imported)
from reid_workbench.data.pose import (
    BODY25_TO_COCO18, COCO18_LIMBS, COCO18_NAMES, FLIP_PERMUTATION, MEDIAPIPE_TO_COCO18, MISSING, NECK,
    OPENPOSE_COLORS, SKELETON_LIMBS, MediapipePoseEstimator, PoseClusterConfig, PoseClusters, denormalize_poses,
    draw_skeleton, example_pose, flip_pose, impute_invisible, masked_kmeans, mediapipe_landmarks_to_coco18,
    missing_pose, normalize_poses, openpose_to_coco18, pose_to_heatmaps, read_fdgan_pose_dir, read_fdgan_pose_txt,
    read_keypoints_csv, read_openpose_json, read_openpose_people, resize_pose, torso_frame, write_fdgan_pose_txt,
    write_keypoints_csv, write_openpose_json)

J = {n: i for i, n in enumerate(COCO18_NAMES)}


def _partly_hidden_pose():
    "example_pose with a known-but-hidden r_elbow and an unknown r_wrist."
    pose = example_pose()
    pose[J["r_elbow"], 2] = 0
    pose[J["r_wrist"]] = (MISSING, MISSING, 0)
    return pose


# ---------------------------------------------------------------- constants and the keypoints CSV (API in use)

def test_constants():
    assert len(COCO18_NAMES) == 18 and len(COCO18_LIMBS) == 19 and len(OPENPOSE_COLORS) == 18
    assert SKELETON_LIMBS == COCO18_LIMBS[:17]
    for k, name in enumerate(COCO18_NAMES):
        mirrored = COCO18_NAMES[FLIP_PERMUTATION[k]]
        assert mirrored == name.replace("r_", "#").replace("l_", "r_").replace("#", "l_")


def test_keypoints_csv_round_trip(tmp_path):
    poses = {"a.jpg": _partly_hidden_pose(), "b.jpg": missing_pose()}
    back = read_keypoints_csv(write_keypoints_csv(tmp_path / "kp.csv", poses))
    assert list(back) == ["a.jpg", "b.jpg"]
    for name in poses: np.testing.assert_array_equal(back[name], poses[name])


# ---------------------------------------------------------------- heatmaps

def test_heatmap_peak_is_one_at_the_keypoint_and_invisible_channels_are_zero():
    pose = _partly_hidden_pose()
    heat = pose_to_heatmaps(pose, (256, 128))
    assert heat.shape == (18, 256, 128) and heat.dtype == np.float32
    for k in range(18):
        if pose[k, 2] == 0:
            assert heat[k].max() == 0
            continue
        assert np.unravel_index(heat[k].argmax(), heat[k].shape) == (int(pose[k, 1]), int(pose[k, 0]))
        assert heat[k].max() == pytest.approx(1.0, abs=1e-6)


def test_heatmap_argmax_is_the_rounded_subpixel_keypoint():
    pose = missing_pose()
    pose[0] = (20.3, 51.7, 1)
    pose[5] = (99.6, 10.2, 1)
    heat = pose_to_heatmaps(pose, (128, 128), sigma=3, ref_height=None)
    assert np.unravel_index(heat[0].argmax(), heat[0].shape) == (52, 20)
    assert np.unravel_index(heat[5].argmax(), heat[5].shape) == (10, 100)
    assert heat[0].max() < 1


def test_heatmap_matches_fdgan_filtered_delta():
    "FD-GAN's loader blurs a one-pixel delta with a Gaussian filter and divides by the max; same values within 4 sigma."
    pose = missing_pose()
    pose[3] = (60, 90, 1)
    heat = pose_to_heatmaps(pose, (256, 128), sigma=5)[3]
    delta = np.zeros((256, 128))
    delta[90, 60] = 1
    ref = ndimage.gaussian_filter(delta, sigma=5)
    ref /= ref.max()
    window = (slice(90 - 20, 90 + 21), slice(60 - 20, 60 + 21))
    np.testing.assert_allclose(heat[window], ref[window], atol=1e-6)


def _sigma_at(channel, x, y, d=3):
    "Bandwidth of a Gaussian channel measured from its value d pixels right of the peak."
    return float(np.sqrt(d * d / (-2 * np.log(float(channel[y, x + d])))))


def test_sigma_range_samples_per_keypoint_in_range_and_scales_with_height():
    for size, lo, hi in (((256, 128), 4, 6), ((128, 64), 2, 3)):
        pose = example_pose(size)
        pose[:, 0] = size[1] // 2 - 4  # keep x + 3 inside the image for every joint
        heat = pose_to_heatmaps(np.stack([pose] * 4), size, sigma_range=(4, 6), generator=np.random.default_rng(0))
        sig = np.array([[_sigma_at(heat[b, k], int(pose[k, 0]), int(pose[k, 1])) for k in range(18)] for b in range(4)])
        assert sig.min() >= lo - 1e-3 and sig.max() <= hi + 1e-3
        assert sig.max() - sig.min() > 0.5 * (hi - lo)          # really drawn from the range, per keypoint
        assert len(np.unique(sig.round(4))) > 60
    # a fixed sigma is scaled the same way; ref_height=None uses it as given
    small = pose_to_heatmaps(example_pose((128, 64)), (128, 64), sigma=5)
    assert _sigma_at(small[0], 32, 20) == pytest.approx(2.5, abs=1e-3)
    raw = pose_to_heatmaps(example_pose((128, 64)), (128, 64), sigma=5, ref_height=None)
    assert _sigma_at(raw[0], 32, 20) == pytest.approx(5, abs=1e-3)


def test_heatmap_randomness_is_seeded():
    pose = example_pose()
    a = pose_to_heatmaps(pose, (64, 32), sigma_range=(4, 6), generator=7)
    b = pose_to_heatmaps(pose, (64, 32), sigma_range=(4, 6), generator=np.random.default_rng(7))
    np.testing.assert_array_equal(a, b)
    t1 = pose_to_heatmaps(torch.tensor(pose), (64, 32), sigma_range=(4, 6), generator=torch.Generator().manual_seed(3))
    t2 = pose_to_heatmaps(torch.tensor(pose), (64, 32), sigma_range=(4, 6), generator=torch.Generator().manual_seed(3))
    assert torch.equal(t1, t2)
    t3 = pose_to_heatmaps(torch.tensor(pose), (64, 32), sigma_range=(4, 6), generator=torch.Generator().manual_seed(4))
    assert not torch.equal(t1, t3)


def test_heatmap_batching_numpy_and_torch():
    poses = np.stack([example_pose((64, 32)), resize_pose(_partly_hidden_pose(), (256, 128), (64, 32))])
    heat_np = pose_to_heatmaps(poses, (64, 32))
    assert isinstance(heat_np, np.ndarray) and heat_np.shape == (2, 18, 64, 32)
    heat_t = pose_to_heatmaps(torch.tensor(poses), (64, 32))
    assert isinstance(heat_t, torch.Tensor) and heat_t.shape == (2, 18, 64, 32) and heat_t.dtype == torch.float32
    np.testing.assert_allclose(heat_t.numpy(), heat_np, atol=1e-7)
    np.testing.assert_allclose(heat_np[1], pose_to_heatmaps(poses[1], (64, 32)), atol=1e-7)
    assert heat_np[1, J["r_wrist"]].max() == 0
    with pytest.raises(ValueError, match="sigma_range"):
        pose_to_heatmaps(poses, (64, 32), sigma_range=(6, 4))
    with pytest.raises(ValueError, match=r"\(18, 3\)"):
        pose_to_heatmaps(np.zeros((17, 3)), (64, 32))


# ---------------------------------------------------------------- skeleton images

def test_skeleton_limb_pixels_have_the_openpose_colour_of_their_limb():
    size = (512, 256)
    pose = example_pose(size)
    sk = draw_skeleton(pose, size, thickness=3, radius=1)
    assert sk.shape == (512, 256, 3) and sk.dtype == np.uint8
    for i, (a, b) in enumerate(SKELETON_LIMBS):
        x, y = np.round((pose[a, :2] + pose[b, :2]) / 2).astype(int)
        assert tuple(sk[y, x]) == OPENPOSE_COLORS[i], COCO18_NAMES[a] + "-" + COCO18_NAMES[b]
    for k in range(18):  # joint dots in the keypoint's colour
        x, y = pose[k, :2].astype(int)
        assert tuple(sk[y, x]) == OPENPOSE_COLORS[k]
    assert (sk[0, 0] == 0).all() and (sk[-1, -1] == 0).all()  # black background


def test_skeleton_skips_limbs_with_an_invisible_end():
    size = (512, 256)
    pose = example_pose(size)
    pose[J["r_elbow"], 2] = 0
    sk = draw_skeleton(pose, size, thickness=3, radius=1)
    for a, b in ((2, 3), (3, 4)):
        x, y = np.round((pose[a, :2] + pose[b, :2]) / 2).astype(int)
        assert (sk[y, x] == 0).all()
    x, y = pose[J["r_elbow"], :2].astype(int)
    assert (sk[y - 3:y + 4, x - 3:x + 4] == 0).all()
    assert (draw_skeleton(missing_pose(), (64, 32)) == 0).all()


def test_skeleton_canvas_batch_and_torch():
    pose = example_pose((128, 64))
    canvas = np.full((128, 64, 3), 90, np.uint8)
    over = draw_skeleton(pose, canvas=canvas)
    drawn = (over != 90).any(-1)
    assert 0 < drawn.mean() < 0.3 and (over[~drawn] == 90).all()
    half = draw_skeleton(pose, canvas=canvas, alpha=0.5)
    y, x = pose[J["l_knee"], 1:2].astype(int)[0], int(pose[J["l_knee"], 0])
    np.testing.assert_allclose(half[y, x], (canvas[y, x] * 0.5 + np.array(OPENPOSE_COLORS[J["l_knee"]]) * 0.5), atol=1)
    batch = draw_skeleton(torch.tensor(np.stack([pose, flip_pose(pose, 64)])), (128, 64))
    assert batch.shape == (2, 128, 64, 3)
    np.testing.assert_array_equal(batch[0], draw_skeleton(pose, (128, 64)))
    with pytest.raises(ValueError, match="size"):
        draw_skeleton(pose)
    with pytest.raises(ValueError, match="differs"):
        draw_skeleton(pose, (64, 64), canvas=canvas)


# ---------------------------------------------------------------- flips

def test_flip_is_an_involution_and_swaps_left_and_right():
    pose = _partly_hidden_pose()
    flipped = flip_pose(pose, 128)
    np.testing.assert_array_equal(flip_pose(flipped, 128), pose)
    # the mirrored right shoulder is the new left shoulder, at x' = W - 1 - x
    np.testing.assert_array_equal(flipped[J["l_shoulder"]], [127 - pose[J["r_shoulder"], 0], pose[J["r_shoulder"], 1], 1])
    np.testing.assert_array_equal(flipped[J["nose"]], [127 - pose[J["nose"], 0], pose[J["nose"], 1], 1])
    np.testing.assert_array_equal(flipped[J["l_elbow"]], [127 - pose[J["r_elbow"], 0], pose[J["r_elbow"], 1], 0])
    np.testing.assert_array_equal(flipped[J["l_wrist"]], [MISSING, MISSING, 0])   # unknown stays unknown
    batch = torch.tensor(np.stack([pose, example_pose()]))
    tflip = flip_pose(batch, 128)
    assert isinstance(tflip, torch.Tensor) and torch.equal(flip_pose(tflip, 128), batch)
    np.testing.assert_array_equal(tflip[0].numpy(), flipped)


def test_flip_matches_torchvision_image_and_keypoint_flip():
    from torchvision import tv_tensors
    from torchvision.transforms import v2
    from torchvision.transforms.v2 import functional as TF
    H, W = 64, 32
    pose = example_pose((H, W))
    pose[:, :2] = np.round(pose[:, :2])
    image = torch.arange(3 * H * W, dtype=torch.int32).reshape(3, H, W)   # every pixel unique
    flipped_image = TF.horizontal_flip(image)
    flipped = flip_pose(pose, W)
    for j in range(18):
        src = FLIP_PERMUTATION[j]  # the body joint now called j
        xs, ys = pose[src, :2].astype(int)
        xd, yd = flipped[j, :2].astype(int)
        assert torch.equal(flipped_image[:, yd, xd], image[:, ys, xs]), COCO18_NAMES[j]
    kp = TF.horizontal_flip_keypoints(torch.tensor(pose[:, :2]), canvas_size=(H, W))
    np.testing.assert_array_equal(flipped[:, :2], kp.numpy()[list(FLIP_PERMUTATION)])
    out_img, out_kp = v2.RandomHorizontalFlip(p=1.0)(tv_tensors.Image(image),
                                                     tv_tensors.KeyPoints(torch.tensor(pose[:, :2]), canvas_size=(H, W)))
    assert torch.equal(out_img, flipped_image)
    np.testing.assert_array_equal(flipped[:, :2], out_kp.numpy()[list(FLIP_PERMUTATION)])


# ---------------------------------------------------------------- OpenPose JSON

@pytest.mark.parametrize("model", ["COCO", "BODY_25"])
def test_openpose_json_round_trip(tmp_path, model):
    pose = _partly_hidden_pose()
    other = example_pose()
    other[:, 2] = 0
    other[0, 2] = 1
    path = write_openpose_json(tmp_path / "x_keypoints.json", [other, pose], model=model)
    people = json.loads(path.read_text())["people"]
    assert len(people) == 2 and len(people[0]["pose_keypoints_2d"]) == 3 * (18 if model == "COCO" else 25)
    np.testing.assert_array_equal(read_openpose_json(path), pose)                # the most confident person
    np.testing.assert_array_equal(read_openpose_json(path, person="first")[:, 2], other[:, 2])
    np.testing.assert_array_equal(read_openpose_json(path, person=1), pose)
    poses, scores = read_openpose_people(path)
    assert poses.shape == (2, 18, 3) and scores[1] > scores[0]
    with pytest.raises(ValueError, match="person"):
        read_openpose_json(path, person=5)
    if model == "BODY_25":
        flat = np.array(people[1]["pose_keypoints_2d"]).reshape(25, 3)
        np.testing.assert_allclose(flat[8, :2], pose[[J["r_hip"], J["l_hip"]], :2].mean(0))   # MidHip
        assert (flat[19:] == 0).all()


def test_openpose_body25_mapping_and_threshold(tmp_path):
    body25 = np.zeros((25, 3), np.float32)
    body25[:, 0] = 100 + np.arange(25)
    body25[:, 1] = 7
    body25[:, 2] = 0.8
    body25[3, 2] = 0.04          # RElbow found with low confidence
    body25[4] = 0                # RWrist not found
    data = {"version": 1.0, "people": [{"pose_keypoints": body25.reshape(-1).tolist()}]}   # old key
    (tmp_path / "old.json").write_text(json.dumps(data))
    pose = read_openpose_json(tmp_path / "old.json", threshold=0.05)
    np.testing.assert_array_equal(pose[:, 0][pose[:, 2] > 0] - 100,
                                  [b for b in BODY25_TO_COCO18 if b not in (3, 4)])
    np.testing.assert_array_equal(pose[J["r_elbow"]], [103, 7, 0])
    np.testing.assert_array_equal(pose[J["r_wrist"]], [MISSING, MISSING, 0])
    assert read_openpose_json(tmp_path / "old.json", threshold=0.01)[J["r_elbow"], 2] == 1
    assert openpose_to_coco18(body25)[J["l_ear"], 0] == 118


def test_openpose_bad_files(tmp_path):
    (tmp_path / "none.json").write_text('{"version": 1.3, "people": []}')
    np.testing.assert_array_equal(read_openpose_json(tmp_path / "none.json"), missing_pose())
    (tmp_path / "text.json").write_text("not json")
    with pytest.raises(ValueError, match="text.json"):
        read_openpose_json(tmp_path / "text.json")
    (tmp_path / "j20.json").write_text(json.dumps({"people": [{"pose_keypoints_2d": [0.0] * 60}]}))
    with pytest.raises(ValueError, match=r"j20.json, person 0: expected 18 \(COCO\) or 25"):
        read_openpose_json(tmp_path / "j20.json")
    with pytest.raises(ValueError, match="BODY_25"):
        write_openpose_json(tmp_path / "m.json", example_pose(), model="MPI")


# ---------------------------------------------------------------- FD-GAN text files

def test_fdgan_txt_round_trip_row_first(tmp_path):
    pose = resize_pose(_partly_hidden_pose(), (256, 128), (128, 64), centred=False)
    pose[J["l_wrist"], 0] += 0.25
    path = write_fdgan_pose_txt(tmp_path / "0002_c1s1_000451_03.txt", pose)
    lines = path.read_text().splitlines()
    assert len(lines) == 18 and lines[0] == "20 32" and lines[J["l_wrist"]] == "65 47.25"
    assert lines[J["r_elbow"]] == "-1 -1" and lines[J["r_wrist"]] == "-1 -1"
    back = read_fdgan_pose_txt(path)
    expected = pose.copy()
    expected[J["r_elbow"]] = (MISSING, MISSING, 0)   # the format cannot keep hidden coordinates
    np.testing.assert_array_equal(back, expected)
    np.testing.assert_array_equal(read_fdgan_pose_txt(write_fdgan_pose_txt(tmp_path / "xy.txt", pose, order="xy"),
                                                      order="xy"), expected)
    assert list(read_fdgan_pose_dir(tmp_path)) == ["0002_c1s1_000451_03.jpg", "xy.jpg"]


def test_fdgan_txt_negative_means_missing_and_errors(tmp_path):
    path = tmp_path / "p.txt"
    path.write_text("10 5\n-1 -1\n" + "3.5 -1\n" + "1 2\n" * 15)
    pose = read_fdgan_pose_txt(path)
    np.testing.assert_array_equal(pose[0], [5, 10, 1])
    np.testing.assert_array_equal(pose[1:3], [[MISSING, MISSING, 0]] * 2)
    path.write_text("1 2\n" * 17 + "1 x\n")
    with pytest.raises(ValueError, match="p.txt, line 18"):
        read_fdgan_pose_txt(path)
    with pytest.raises(FileNotFoundError):
        read_fdgan_pose_dir(tmp_path / "nope")


def test_resize_pose_about_pixel_centres_or_like_torchvision():
    from torchvision.transforms.v2 import functional as TF
    pose = resize_pose(_partly_hidden_pose(), (256, 128), (128, 64), centred=False)
    centred = resize_pose(pose, (128, 64), (256, 128))
    np.testing.assert_allclose(centred[0, :2], pose[0, :2] * 2 + 0.5)   # pixel c -> the centre of pixels 2c, 2c + 1
    np.testing.assert_allclose(resize_pose(centred, (256, 128), (128, 64)), pose)
    big = resize_pose(pose, (128, 64), (256, 128), centred=False)
    np.testing.assert_array_equal(big[J["r_wrist"]], [MISSING, MISSING, 0])
    known = [k for k in range(18) if k != J["r_wrist"]]
    ref, _ = TF.resize_keypoints(torch.tensor(pose[:, :2]), size=[256, 128], canvas_size=(128, 64))
    np.testing.assert_allclose(big[known, :2], ref.numpy()[known])


# ---------------------------------------------------------------- normalisation

def test_normalisation_is_invariant_to_position_and_scale():
    pose = example_pose()
    normed, centre, scale = normalize_poses(pose)
    assert scale[0] == pytest.approx(70) and np.allclose(centre[0], (64, 97))
    np.testing.assert_allclose(normed[0, NECK, :2], [0, -0.5], atol=1e-6)
    moved = pose.copy()
    moved[:, :2] = moved[:, :2] * 0.37 + (11, -5)
    np.testing.assert_allclose(normalize_poses(moved)[0], normed, atol=1e-5)
    np.testing.assert_allclose(denormalize_poses(*normalize_poses(moved))[0], moved, atol=1e-4)


def test_normalisation_fallbacks_and_imputation():
    pose = example_pose()
    no_hips = pose.copy()
    no_hips[[J["r_hip"], J["l_hip"]], 2] = 0
    c, s = torso_frame(no_hips)
    top, bottom = pose[:, 1].min(), pose[:, 1].max()
    assert s[0] == pytest.approx((bottom - top) / 2.75, rel=1e-5)
    assert c[0, 1] == pytest.approx(pose[NECK, 1] + s[0] / 2)
    nothing = missing_pose()
    normed, c, s = normalize_poses(np.stack([pose, nothing]))
    assert np.isnan(s[1]) and (normed[1, :, 2] == 0).all() and np.isfinite(s[0])
    filled, fill = impute_invisible(normalize_poses(np.stack([pose, no_hips]))[0])
    np.testing.assert_allclose(filled[1, J["r_hip"], :2], filled[0, J["r_hip"], :2], atol=1e-6)
    assert np.isfinite(filled[..., :2]).all()


# ---------------------------------------------------------------- clustering

def _templates(size=(256, 128)):
    stand = example_pose(size)
    h, w = size[0] / 256, size[1] / 128
    raised = stand.copy()
    raised[[3, 6], 1] = 40 * h
    raised[[4, 7], 1] = 12 * h
    walk = stand.copy()
    walk[[9, 10], 0] -= np.array([14, 30]) * w
    walk[[12, 13], 0] += np.array([14, 30]) * w
    bent = stand.copy()
    bent[[4, 7], 0] = 64 * w
    bent[[4, 7], 1] = 120 * h
    return np.stack([stand, raised, walk, bent])


def _jittered(templates, n_each, seed=0, hidden=0.2):
    rng = np.random.default_rng(seed)
    poses = np.repeat(templates, n_each, axis=0)
    poses[..., :2] += rng.normal(0, 1.5, poses[..., :2].shape) + rng.normal(0, 4, (len(poses), 1, 2))
    poses[..., 2] = rng.random(poses.shape[:2]) > hidden
    return poses, np.repeat(np.arange(len(templates)), n_each)


def _purity(labels, truth):
    return sum(np.bincount(truth[labels == c]).max() for c in set(labels.tolist())) / len(truth)


@pytest.mark.parametrize("method", ["kmeans", "gmm"])
def test_full_body_clustering_recovers_templates(method):
    templates = _templates()
    poses, truth = _jittered(templates, 25)
    pc = PoseClusters.fit(poses, (256, 128), method=method, k=4, seed=0)
    centres = pc.centres()
    assert centres.shape == (4, 18, 3) and centres.dtype == np.float32
    err = np.linalg.norm(centres[:, None, :, :2] - templates[None, :, :, :2], axis=-1).mean(-1)   # px per joint
    assert sorted(err.argmin(1).tolist()) == [0, 1, 2, 3]
    assert err.min(1).max() < 2.5
    assert (centres[..., 2] == 1).all()
    assert _purity(pc.assign(poses), truth) > 0.95
    # the same clusters in pixels of another image size
    np.testing.assert_allclose(pc.centres((128, 64)), resize_pose(centres, (256, 128), (128, 64)), atol=1e-3)
    samples = pc.sample(10, rng=0)
    assert samples.shape == (10, 18, 3)
    np.testing.assert_array_equal(samples, pc.sample(10, rng=np.random.default_rng(0)))
    if method == "kmeans":  # k-means samples are centres
        assert all(np.isclose(centres[:, None, :, :2], s[None, None, :, :2]).all(-1).all(-1).any() for s in samples)


def test_hidden_joints_do_not_split_clusters():
    "A template whose raised arms are hidden half the time still forms one cluster."
    templates = _templates()[:2]
    poses, truth = _jittered(templates, 30, seed=1, hidden=0.0)
    arms = [J["r_elbow"], J["r_wrist"], J["l_elbow"], J["l_wrist"]]
    rng = np.random.default_rng(2)
    hide = (truth[:, None] == 1) & (rng.random((len(poses), 4)) < 0.5)
    hide[hide.all(1), rng.integers(4)] = False      # with no arm visible a pose is ambiguous: keep one
    poses[:, arms, 2] = np.where(hide, 0, 1)
    poses[:, arms, :2] = np.where(hide[..., None], MISSING, poses[:, arms, :2])
    for method in ("kmeans", "gmm"):
        pc = PoseClusters.fit(poses, (256, 128), method=method, k=2, seed=0)
        assert _purity(pc.assign(poses), truth) == 1.0, method
        raised = pc.centres()[pc.assign(poses[truth == 1][:1])[0]]
        assert np.abs(raised[arms, 1] - templates[1, arms, 1]).max() < 5


def test_clustering_is_deterministic_with_a_seed():
    poses, _ = _jittered(_templates(), 15)
    for method in ("kmeans", "gmm"):
        a = PoseClusters.fit(poses, (256, 128), method=method, k=5, seed=3)
        b = PoseClusters.fit(poses, (256, 128), method=method, k=5, seed=3)
        np.testing.assert_array_equal(a.centres(), b.centres())
        np.testing.assert_array_equal(a.sample(7, rng=11), b.sample(7, rng=11))


def test_per_joint_mode_shapes_and_sampling():
    poses, _ = _jittered(_templates(), 15)
    poses[:3] = missing_pose()                     # unusable poses are ignored
    for method in ("kmeans", "gmm"):
        pc = PoseClusters.fit(poses, (256, 128), method=method, mode="per_joint", joint_k=3, seed=0)
        assert pc.num_clusters == 3
        assert pc.centres().shape == (3, 18, 3)
        labels = pc.assign(poses)
        assert labels.shape == (len(poses), 18)
        assert (labels[:3] == -1).all() and (labels[poses[:, :, 2] == 0] == -1).all()
        assert set(np.unique(labels[3:][poses[3:, :, 2] > 0])) <= {0, 1, 2}
        # the wrist of the 'raised' template is its own per-joint cluster, and the most populated comes first
        weights = pc.state["weights"]
        assert (np.diff(weights, axis=1) <= 1e-12).all()
        samples = pc.sample(20, rng=5)
        assert samples.shape == (20, 18, 3) and np.isfinite(samples).all()
        np.testing.assert_array_equal(samples, pc.sample(20, rng=5))


def test_gmm_samples_follow_the_mixture():
    poses, _ = _jittered(_templates()[:1], 40, hidden=0.0)
    pc = PoseClusters.fit(poses, (256, 128), method="gmm", k=1, seed=0)
    samples = pc.sample(2000, rng=0)
    np.testing.assert_allclose(samples[..., :2].mean(0), pc.centres()[0, :, :2], atol=0.5)
    spread = samples[..., :2].std(0)
    assert 0.3 < spread.mean() < 5


def test_default_is_ptgan_gmm12_and_bad_settings_raise():
    poses, _ = _jittered(_templates(), 6)
    pc = PoseClusters.fit(poses, (256, 128))
    assert (pc.config.method, pc.config.mode, pc.num_clusters) == ("gmm", "full", 12)
    assert pc.centres().shape == (12, 18, 3)
    with pytest.raises(ValueError, match="'full' or 'per_joint'"):
        PoseClusters.fit(poses, (256, 128), mode="parts")
    with pytest.raises(ValueError, match="k = 40"):
        PoseClusters.fit(poses, (256, 128), k=40)
    cfg = PoseClusterConfig(method="kmeans", k=4)
    assert PoseClusters.fit(poses, (256, 128), config=cfg, seed=1).config == PoseClusterConfig(method="kmeans", k=4, seed=1)


def test_unnormalised_clustering_uses_image_fractions():
    templates = _templates()
    poses, truth = _jittered(templates, 20)
    pc = PoseClusters.fit(poses, (256, 128), method="kmeans", k=4, normalize=False)
    assert _purity(pc.assign(poses), truth) > 0.95
    err = np.linalg.norm(pc.centres()[:, None, :, :2] - templates[None, :, :, :2], axis=-1).mean(-1)
    assert err.min(1).max() < 4       # the poses' random shifts (4 px) are not normalised away here
    half = pc.assign(resize_pose(poses, (256, 128), (128, 64)), image_size=(128, 64))
    np.testing.assert_array_equal(half, pc.assign(poses))


def test_masked_kmeans_ignores_hidden_values():
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(0, 0.1, (40, 6)), rng.normal(5, 0.1, (40, 6))])
    mask = rng.random(X.shape) > 0.4
    mask[:, 0] = True
    X[~mask] = 1e6
    centres, labels, inertia = masked_kmeans(X, mask, 2, seed=0)
    assert _purity(labels, np.repeat([0, 1], 40)) == 1.0
    np.testing.assert_allclose(np.sort(centres, axis=0), [[0] * 6, [5] * 6], atol=0.1)
    assert inertia < 80 * 6 * 0.1


# ---------------------------------------------------------------- MediaPipe

def _landmarks_for(pose, W, H, visibility=0.9):
    lm = np.zeros((33, 4), np.float32)
    lm[:, 3] = visibility
    for k, src in enumerate(MEDIAPIPE_TO_COCO18):
        if len(src) == 1:
            lm[src[0], 0] = (pose[k, 0] + 0.5) / W
            lm[src[0], 1] = (pose[k, 1] + 0.5) / H
    return lm


def test_mediapipe_mapping_on_synthetic_landmarks():
    pose = example_pose()
    lm = _landmarks_for(pose, 128, 256)
    lm[12, 3] = 0.2                                      # right shoulder hidden -> no neck either
    out = mediapipe_landmarks_to_coco18(lm, 128, 256)
    np.testing.assert_allclose(out[:, :2][np.arange(18) != NECK], pose[:, :2][np.arange(18) != NECK], atol=1e-3)
    np.testing.assert_allclose(out[NECK, :2], (pose[J["r_shoulder"], :2] + pose[J["l_shoulder"], :2]) / 2, atol=1e-3)
    assert out[J["r_shoulder"], 2] == 0 and out[NECK, 2] == 0 and out[J["l_shoulder"], 2] == 1
    assert out[:, 2].sum() == 16
    # left/right: MediaPipe's 11 is the person's left shoulder, our index 5
    assert MEDIAPIPE_TO_COCO18[J["l_shoulder"]] == (11,) and MEDIAPIPE_TO_COCO18[J["r_eye"]] == (5,)
    batch = mediapipe_landmarks_to_coco18(np.stack([lm, lm]), 128, 256)
    assert batch.shape == (2, 18, 3)
    with pytest.raises(ValueError, match="33, 4"):
        mediapipe_landmarks_to_coco18(np.zeros((17, 4)), 128, 256)


def test_mediapipe_estimator_without_mediapipe_gives_an_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "mediapipe", None)   # makes `import mediapipe` raise ImportError
    with pytest.raises(ImportError, match=r"pip install reid-workbench\[pose\]"):
        MediapipePoseEstimator()


def test_mediapipe_estimator_on_a_blank_image():
    pytest.importorskip("mediapipe")
    est = MediapipePoseEstimator()
    try: pose = est(np.zeros((256, 128, 3), np.uint8))
    finally: est.close()
    assert pose.shape == (18, 3) and pose[:, 2].sum() == 0
