"""SynthReID: determinism, Market layout, keypoints on the drawn body, ground truth re-rendering and swaps."""
import hashlib, math, re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

from reid_workbench.data import synth
from reid_workbench.data.pose import COCO18_NAMES, read_keypoints_csv
from reid_workbench.data.synth import (VIEWS, Identity, Nuisance, SynthConfig, encode_jpeg, factors_to_identity_nuisance,
                                       flip_keypoints, load_factors, mirror_nuisance, render, render_layers, rerender,
                                       sample_camera, sample_cameras, sample_identities, sample_identity,
                                       sample_nuisance, write_synthreid)

K = {n: i for i, n in enumerate(COCO18_NAMES)}
NAME_RE = re.compile(r"^(-1|\d{4})_c(\d)s1_(\d{6})_00\.jpg$")
MAGENTA = (255, 0, 255)


def tree_hashes(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root, summary = write_synthreid(tmp_path_factory.mktemp("s") / "synth", SynthConfig.tiny(), progress=False)
    return root, summary


def flat(nuisance: Nuisance, **kw) -> Nuisance:
    "The same pose and framing in front of a flat magenta wall, with no camera effects and no occluder."
    return replace(nuisance, background="plain", bg_color=MAGENTA, bg_color2=MAGENTA, horizon=2.0, cast=(1.0, 1.0, 1.0),
                   brightness=1.0, blur=0.0, noise=0.0, occluder="none", **kw)


def random_scenes(n, seed=0):
    rng = np.random.default_rng(seed)
    cams = sample_cameras(rng, 4)
    return [(sample_identity(rng), sample_nuisance(rng, cams[i % 4])) for i in range(n)]


# ---------------------------------------------------------------- determinism and layout

def test_same_seed_same_bytes_different_seed_differs(tiny, tmp_path):
    root, _ = tiny
    again, _ = write_synthreid(tmp_path / "again", SynthConfig.tiny(), progress=False)
    h0, h1 = tree_hashes(root), tree_hashes(again)
    assert len(h0) > 80 and h0 == h1
    parallel, _ = write_synthreid(tmp_path / "parallel", SynthConfig.tiny(), progress=False, workers=2)
    assert tree_hashes(parallel) == h0
    other, _ = write_synthreid(tmp_path / "other", SynthConfig.tiny(seed=1), progress=False)
    h2 = tree_hashes(other)
    assert h2["factors.csv"] != h0["factors.csv"]
    images = [k for k in h0 if k.endswith(".jpg")]
    assert sum(h2.get(k) == h0[k] for k in images) == 0


def test_market_layout(tiny):
    root, summary = tiny
    assert sorted(p.name for p in root.iterdir()) == ["bounding_box_test", "bounding_box_train", "factors.csv",
                                                      "keypoints", "query", "synthreid.json"]
    assert not list(root.parent.glob(".synth.tmp-*"))
    recs = {}
    frames = []
    for folder in ("bounding_box_train", "query", "bounding_box_test"):
        recs[folder] = []
        for p in sorted((root / folder).iterdir()):
            m = NAME_RE.match(p.name)
            assert m, p.name
            pid, cam, frame = int(m.group(1)), int(m.group(2)), int(m.group(3))
            assert 1 <= cam <= 3
            recs[folder].append((pid, cam))
            frames.append(frame)
            with Image.open(p) as im: assert im.size == (64, 128) and im.mode == "RGB"
    assert len(frames) == len(set(frames))                                  # frame numbers are unique
    train, query, gallery = (recs[f] for f in ("bounding_box_train", "query", "bounding_box_test"))
    train_pids = {p for p, _ in train}
    test_pids = {p for p, _ in query + gallery if p > 0}
    assert train_pids == set(range(1, 7)) and test_pids == set(range(7, 13))   # half / half, disjoint
    assert len(train) == 6 * 6 and len(query) + len(gallery) == 6 * 6 + 4 + 3
    for pid in test_pids:                                                  # every test identity: >= 2 cameras
        assert len({c for p, c in query + gallery if p == pid}) >= 2
    assert {p for p, _ in query} <= {p for p, _ in gallery}
    for pid, cam in query:                                                 # a cross-camera match exists
        assert any(p == pid and c != cam for p, c in gallery)
    assert len(query) == len(set(query))                                   # at most one query per (pid, camera)
    assert sum(p == 0 for p, _ in gallery) == 4 and sum(p == -1 for p, _ in gallery) == 3
    assert all(p > 0 for p, _ in train + query)
    assert summary["counts"]["query_images"] == len(query) and summary["counts"]["junk_images"] == 3
    assert summary["args"]["size"] == [128, 64] and summary["version"] == synth.SYNTH_VERSION
    for folder, items in recs.items():                                     # keypoints for every image
        kps = read_keypoints_csv(root / "keypoints" / f"{folder}.csv")
        assert sorted(kps) == sorted(p.name for p in (root / folder).iterdir())
    df = load_factors(root)
    assert len(df) == len(train) + len(query) + len(gallery)
    assert set(df.split) == {"train", "query", "gallery"}
    row = df[df.pid == 0].iloc[0]
    assert row["name"].startswith("0000_") and row.camid == int(row["name"][6]) - 1


def test_junk_images_are_badly_framed(tiny):
    df = load_factors(tiny[0])
    junk = df[df.pid == -1]
    assert all(n.startswith("-1_c") for n in junk.name)
    assert all((s < 0.6) or (s > 1.4) for s in junk.nu_scale)


def test_config_validation_and_existing_output(tiny, tmp_path):
    for bad, word in [(dict(cams=1), "cams=1"), (dict(cams=10), "cams=10"), (dict(ids=1), "ids=1"),
                      (dict(images_per_id=1), "images_per_id"), (dict(size=(20, 10)), "size="),
                      (dict(seed=-1), "seed"), (dict(confuser_fraction=0.9), "confuser_fraction")]:
        with pytest.raises(ValueError, match=re.escape(word)): SynthConfig(**bad)
    assert SynthConfig(size="256x128").size == (256, 128)
    with pytest.raises(FileExistsError, match="not empty"): write_synthreid(tiny[0], SynthConfig.tiny(), progress=False)


def test_crashed_write_leaves_nothing(tmp_path, monkeypatch):
    def boom(*a, **k): raise RuntimeError("disk full")
    monkeypatch.setattr(synth, "write_keypoints_csv", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        write_synthreid(tmp_path / "ds", SynthConfig.tiny(), progress=False)
    assert list(tmp_path.iterdir()) == []


def test_incomplete_dataset_is_refused(tmp_path):
    root, _ = write_synthreid(tmp_path / "ds", SynthConfig.tiny(ids=4, images_per_id=2, distractors=0, junk=0),
                              progress=False)
    (root / "synthreid.json").unlink()
    with pytest.raises(FileNotFoundError, match="not a complete SynthReID"): load_factors(root)


# ---------------------------------------------------------------- ground truth

def test_rerender_from_factor_table_reproduces_every_file(tiny):
    root, _ = tiny
    df = load_factors(root)
    folders = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}
    for name, split in zip(df.name, df.split):
        assert encode_jpeg(rerender(root, name, df)) == (root / folders[split] / name).read_bytes(), name


def test_factor_row_round_trips_exactly(tiny):
    root, _ = tiny
    df = load_factors(root)
    idn, nu = factors_to_identity_nuisance(df.iloc[5])
    assert isinstance(idn, Identity) and isinstance(nu, Nuisance)
    # a dict of strings (csv.DictReader) gives the same objects
    as_text = {k: (repr(float(v)) if isinstance(v, float) else str(v)) for k, v in df.iloc[5].items()}
    assert factors_to_identity_nuisance(as_text) == (idn, nu)
    assert nu.camid == df.camid.iloc[5]
    with pytest.raises(KeyError, match="id_bag"): factors_to_identity_nuisance(df.iloc[5].drop("id_bag"))
    # every row gives back exactly the objects the generator sampled
    items, _ = synth._plan(SynthConfig.tiny())
    assert [it.name for it in items] == list(df.name)
    for it, (_, row) in zip(items, df.iterrows()):
        assert factors_to_identity_nuisance(row) == (it.identity, it.nuisance)
        assert (row.pid, row.camid, row.split) == (it.pid, it.camid, it.split)


def test_swap_ground_truth():
    scenes = random_scenes(12, seed=3)
    for (a, _), (b, nb) in zip(scenes[::2], scenes[1::2]):
        a_body_b = replace(a, height=b.height, width=b.width)
        la, lb = render_layers(a_body_b, nb), render_layers(b, nb)
        # keypoints depend on the nuisance and the body shape only
        np.testing.assert_array_equal(la.keypoints, lb.keypoints)
        # background pixels away from both people are identical
        radius = nb.blur * 128 / 128
        grow = 2 * math.ceil(3 * radius + 2) + 1
        people = Image.fromarray((la.person_mask | lb.person_mask).astype(np.uint8) * 255)
        away = np.asarray(people.filter(ImageFilter.MaxFilter(grow))) == 0
        assert away.mean() > 0.4
        np.testing.assert_array_equal(la.image[away], lb.image[away])
        assert not np.array_equal(la.image, lb.image)                      # but the people differ


def test_nuisance_moves_keypoints_identity_does_not():
    (a, na), (b, nb) = random_scenes(2, seed=8)
    assert not np.allclose(render(a, na)[1][:, :2], render(a, nb)[1][:, :2])
    same_body = replace(b, height=a.height, width=a.width)
    np.testing.assert_array_equal(render(a, na)[1], render(same_body, na)[1])


def test_render_is_pure():
    (a, n), = random_scenes(1, seed=4)
    img1, kp1 = render(a, n)
    random_state = np.random.get_state()
    np.random.seed(123)
    img2, kp2 = render(a, n)
    np.random.set_state(random_state)
    np.testing.assert_array_equal(img1, img2)
    np.testing.assert_array_equal(kp1, kp2)
    assert img1.dtype == np.uint8 and img1.shape == (128, 64, 3) and kp1.dtype == np.float32 and kp1.shape == (18, 3)


# ---------------------------------------------------------------- keypoints and drawing

@pytest.mark.parametrize("size", [(128, 64), (256, 128)])
def test_visible_keypoints_lie_on_the_drawn_body(size):
    h, w = size
    bg = np.array(MAGENTA, np.float32)
    checked = 0
    for idn, nu in random_scenes(40, seed=size[0]):
        img, kp = render(idn, flat(nu), size)
        shadowed = bg * (1 - 60 / 255)
        for x, y, v in kp:
            if not v: continue
            col, row = int(round(x)), int(round(y))
            assert 0 <= col < w and 0 <= row < h
            px = img[row, col].astype(np.float32)
            assert np.abs(px - bg).max() > 30 and np.abs(px - shadowed).max() > 30, (idn, nu, x, y)
            checked += 1
    assert checked > 40 * 11


def test_view_semantics():
    (idn, nu), = random_scenes(1, seed=5)
    base = flat(nu, yaw=0.0, offset_x=0.0, scale=0.95)
    kp = {v: render(idn, replace(base, view=v))[1] for v in VIEWS}
    f, b, l, r = kp["front"], kp["back"], kp["left"], kp["right"]
    assert f[K["r_shoulder"], 0] < f[K["l_shoulder"], 0] and f[K["r_hip"], 0] < f[K["l_hip"], 0]
    assert b[K["r_shoulder"], 0] > b[K["l_shoulder"], 0] and b[K["r_hip"], 0] > b[K["l_hip"], 0]
    assert f[:, 2].sum() == 18
    assert b[[K["nose"], K["r_eye"], K["l_eye"]], 2].sum() == 0 and b[:, 2].sum() == 15
    assert l[K["nose"], 0] < l[K["neck"], 0] and r[K["nose"], 0] > r[K["neck"], 0]     # facing left / right
    for kps, near, far in ((l, "l", "r"), (r, "r", "l")):
        assert kps[K[f"{near}_shoulder"], 2] == 1 and kps[K[f"{far}_shoulder"], 2] == 0
        assert kps[K[f"{near}_hip"], 2] == 1 and kps[K[f"{far}_hip"], 2] == 0
        assert kps[K[f"{near}_eye"], 2] == 1 and kps[K[f"{far}_eye"], 2] == 0
        assert kps[K[f"{far}_ear"], 2] == 0 and kps[K["nose"], 2] == 1


def test_side_view_far_arm_hidden_behind_torso():
    (idn, nu), = random_scenes(1, seed=6)
    still = flat(nu, view="left", yaw=0.0, stride=0.05, arm_swing=0.0)      # arms hang straight down
    kp = render(idn, still)[1]
    assert kp[K["r_elbow"], 2] == 0 and kp[K["l_elbow"], 2] == 1


def test_occluded_keypoints_are_invisible():
    hidden = 0
    for idn, nu in random_scenes(30, seed=9):
        n = replace(flat(nu, view="front", yaw=0.0, offset_x=0.0), occluder="pole", occluder_x=0.35, occluder_y=0.0,
                    occluder_w=0.3, occluder_h=1.0, occluder_color=(10, 200, 10))
        layers = render_layers(idn, n)
        kp = layers.keypoints
        x0, x1 = 0.35 * 64, 0.65 * 64
        for x, y, v in kp:
            if x0 + 1 < x < x1 - 2: assert v == 0; hidden += 1
            if v: assert not (x0 - 0.5 < x < x1 - 0.5)
        assert (layers.part_map[:, 24:41] == synth.PART_NAMES.index("occluder")).all()
        assert not layers.person_mask[:, 24:41].any()
    assert hidden >= 30 * 3                                                # nose, neck at least


def test_mirror_flips_keypoints_and_silhouette():
    mismatched_v, n_img = 0, 0
    for idn, nu in random_scenes(16, seed=10):
        idn = replace(idn, bag="none")                                     # the shoulder bag is on the left hip
        n = replace(nu, occluder="none")
        l1, l2 = render_layers(idn, n), render_layers(idn, mirror_nuisance(n))
        flipped = flip_keypoints(l1.keypoints, 64)
        np.testing.assert_allclose(flipped[:, :2], l2.keypoints[:, :2], atol=1e-3)
        mismatched_v += int((flipped[:, 2] != l2.keypoints[:, 2]).sum())
        a, b = l1.person_mask[:, ::-1], l2.person_mask
        assert (a & b).sum() / (a | b).sum() > 0.9
        n_img += 1
    assert mismatched_v <= n_img // 4
    assert mirror_nuisance(mirror_nuisance(n)).view == n.view


def test_sizes_scale_keypoints():
    for idn, nu in random_scenes(6, seed=11):
        k1 = render(idn, nu, (128, 64))[1]
        k2 = render(idn, nu, (256, 128))[1]
        np.testing.assert_allclose(k2[:, :2], 2 * k1[:, :2] + 0.5, atol=1e-3)
        assert (k1[:, 2] != k2[:, 2]).sum() <= 2
        img, kp = render(idn, nu, (96, 48))
        assert img.shape == (96, 48, 3)
        np.testing.assert_allclose(kp[:, :2], 0.75 * k1[:, :2] - 0.125, atol=1e-3)
    with pytest.raises(ValueError, match="size="): render(idn, nu, (10, 10))


# ---------------------------------------------------------------- factors and sampling

def test_confusers_share_clothing_colours(tmp_path):
    root, summary = write_synthreid(tmp_path / "c", SynthConfig.tiny(confuser_fraction=0.5, distractors=0, junk=0),
                                    progress=False)
    df = load_factors(root).drop_duplicates("pid").set_index("pid")
    confusers = df[df.id_confuser_of > 0]
    assert len(confusers) == summary["counts"]["confuser_ids"] == 6
    cols = [f"id_{part}_color_{c}" for part in ("upper", "lower", "shoe") for c in "rgb"]
    for pid, row in confusers.iterrows():
        target = df.loc[row.id_confuser_of]
        assert (pid <= 6) == (row.id_confuser_of <= 6)                      # same split
        assert list(row[cols]) == list(target[cols])
        assert row.id_upper_pattern != target.id_upper_pattern and row.id_bag != target.id_bag
        assert row.id_hair_length != target.id_hair_length
        assert abs(row.id_height - target.id_height) >= 0.05 and abs(row.id_width - target.id_width) >= 0.08
    assert df[df.id_confuser_of < 0].shape[0] == 6


def test_camera_style_is_fixed_per_camera(tiny):
    df = load_factors(tiny[0])
    style = ["nu_background", "nu_bg_color_r", "nu_texture_seed", "nu_horizon", "nu_noise"]
    per_cam = df.groupby("camid")[style].nunique()
    assert (per_cam == 1).all().all()
    assert df.groupby("camid").nu_texture_seed.first().nunique() == 3
    assert df.nu_view.nunique() >= 3 and df.nu_brightness.nunique() > 10


def test_sampling_is_driven_by_the_generator_only():
    a = [sample_identity(np.random.default_rng(5)) for _ in range(2)]
    assert a[0] == a[1]
    cam = sample_camera(np.random.default_rng(1), 2)
    assert sample_nuisance(np.random.default_rng(2), cam) == sample_nuisance(np.random.default_rng(2), cam)
    people = sample_identities(np.random.default_rng(0), 30, 0.2)
    assert sum(p.confuser_of > 0 for p in people) == 6
    with pytest.raises(ValueError, match="Identity.hair_length"): replace(people[0], hair_length="mohawk")
