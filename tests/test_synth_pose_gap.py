"""SynthReID's pose-coverage gap (train_views, train_pose_spread) and pose bank (pose_bank, load_pose_bank)."""
import hashlib, json, math, re

import numpy as np
import pytest

from reid_workbench.cli import main
from reid_workbench.data.pose import COCO18_NAMES, read_keypoints_csv
from reid_workbench.data.synth import (TRAIN_PHASE, SynthConfig, load_factors, load_pose_bank, render,
                                       render_keypoints, sample_cameras, sample_identity, sample_nuisance,
                                       sample_pose_bank, synthreid_info, write_synthreid)

K = {n: i for i, n in enumerate(COCO18_NAMES)}
SIZE = (64, 32)
SPREAD = 0.25


def tree_hashes(root) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    base = tmp_path_factory.mktemp("gap")
    gap_cfg = SynthConfig.tiny(size=SIZE, train_views=("front", "back"), train_pose_spread=SPREAD, pose_bank=120)
    gap, summary = write_synthreid(base / "gap", gap_cfg, progress=False)
    plain, _ = write_synthreid(base / "plain", SynthConfig.tiny(size=SIZE), progress=False)
    return dict(gap=gap, plain=plain, summary=summary, cfg=gap_cfg, gap_df=load_factors(gap), plain_df=load_factors(plain))


# ---------------------------------------------------------------- the gap

def test_training_split_lacks_the_held_out_views(data):
    df = data["gap_df"]
    train, test = df[df.split == "train"], df[(df.split != "train") & (df.pid > 0)]
    assert len(train) == 36 and set(train.nu_view) == {"front", "back"}
    assert {"left", "right"} <= set(test.nu_view)
    side = read_keypoints_csv(data["gap"] / "keypoints" / "bounding_box_train.csv")
    assert len(side) == 36                                                   # keypoints for every training image
    plain = data["plain_df"]                                                 # without the option training has sides
    assert {"left", "right"} & set(plain[plain.split == "train"].nu_view)


def test_spread_narrows_training_poses_only(data):
    df = data["gap_df"]
    train, test = df[df.split == "train"], df[df.split != "train"]
    assert (abs(train.nu_walk_phase - TRAIN_PHASE) <= SPREAD * math.pi + 1e-4).all()
    assert train.nu_stride.max() <= 0.04 + SPREAD * 0.38 + 1e-4 and train.nu_stride.min() >= 0.04
    assert train.nu_arm_swing.max() <= 0.05 + SPREAD * 0.40 + 1e-4
    assert test.nu_walk_phase.max() - test.nu_walk_phase.min() > math.pi       # test poses keep the full range
    plain = data["plain_df"]
    assert np.ptp(plain[plain.split == "train"].nu_walk_phase) > 2 * SPREAD * math.pi


def test_gap_leaves_the_test_split_and_the_names_unchanged(data):
    gap, plain = data["gap"], data["plain"]
    for folder in ("query", "bounding_box_test"):
        assert {p.name: p.read_bytes() for p in (gap / folder).iterdir()} == \
               {p.name: p.read_bytes() for p in (plain / folder).iterdir()}
        assert (gap / "keypoints" / f"{folder}.csv").read_bytes() == (plain / "keypoints" / f"{folder}.csv").read_bytes()
    assert sorted(p.name for p in (gap / "bounding_box_train").iterdir()) == \
           sorted(p.name for p in (plain / "bounding_box_train").iterdir())
    cols = [c for c in data["gap_df"].columns if c not in ("nu_view", "nu_walk_phase", "nu_stride", "nu_arm_swing")]
    assert data["gap_df"][cols].equals(data["plain_df"][cols])              # only the four pose factors differ


def test_options_are_recorded(data):
    info = synthreid_info(data["gap"])
    assert info["args"]["train_views"] == ["front", "back"] and info["args"]["train_pose_spread"] == SPREAD
    assert info["args"]["pose_bank"] == 120 and info["pose_bank"] == "keypoints/pose_bank.csv"
    plain = synthreid_info(data["plain"])
    assert (plain["args"]["train_views"], plain["args"]["train_pose_spread"], plain["args"]["pose_bank"]) == (None, 1.0, 0)
    assert "pose_bank" not in plain


# ---------------------------------------------------------------- defaults change nothing

def test_default_options_give_byte_identical_data(data, tmp_path):
    explicit, _ = write_synthreid(tmp_path / "explicit", SynthConfig.tiny(size=SIZE, train_views=None,
                                                                          train_pose_spread=1.0, pose_bank=0),
                                  progress=False)
    assert tree_hashes(explicit) == tree_hashes(data["plain"])
    # the factor table of the default tiny dataset as it was before the options existed (the random draw order)
    assert tree_hashes(data["plain"])["factors.csv"] == \
        "23336e93be5a740e1612fd1d8933d53fb62d13c855efdf6788416b8f7631cc40", \
        "the default SynthReID changed: if intended, bump SYNTH_VERSION and update this digest"


def test_all_views_and_full_spread_sample_the_same_nuisance():
    cams = sample_cameras(np.random.default_rng(0), 3)
    for s in range(20):
        a = sample_nuisance(np.random.default_rng(s), cams[s % 3])
        b = sample_nuisance(np.random.default_rng(s), cams[s % 3], views=None, pose_spread=1.0)
        assert a == b


# ---------------------------------------------------------------- the pose bank

def test_pose_bank_written_in_image_pixels(data):
    names = list(read_keypoints_csv(data["gap"] / "keypoints" / "pose_bank.csv"))
    assert names == [f"bank_{i:06d}" for i in range(1, 121)]
    bank = load_pose_bank(data["gap"])
    assert bank.shape == (120, 18, 3) and bank.dtype == np.float32
    vis = bank[..., 2] > 0
    assert set(np.unique(bank[..., 2])) <= {0.0, 1.0} and vis.sum(1).min() >= 5
    h, w = SIZE
    x, y = bank[..., 0][vis], bank[..., 1][vis]
    assert ((x > -0.5) & (x < w - 0.5) & (y > -0.5) & (y < h - 0.5)).all()
    both = vis[:, K["r_shoulder"]] & vis[:, K["l_shoulder"]]
    one = vis[:, K["r_shoulder"]] ^ vis[:, K["l_shoulder"]]
    assert both.sum() > 20 and one.sum() > 20                                # front/back and side views
    no_face = ~vis[:, K["nose"]] & vis[:, K["neck"]]
    assert no_face.sum() > 10                                                # back views
    np.testing.assert_allclose(bank, np.stack(list(sample_pose_bank(data["cfg"]).values())), atol=0.006)


def test_pose_bank_scales_with_the_image_size():
    small = np.stack(list(sample_pose_bank(SynthConfig.tiny(size=(64, 32)), 15).values()))
    large = np.stack(list(sample_pose_bank(SynthConfig.tiny(size=(128, 64)), 15).values()))
    np.testing.assert_allclose(large[..., :2], 2 * small[..., :2] + 0.5, atol=1e-3)


def test_pose_bank_is_deterministic_per_seed():
    cfg = SynthConfig.tiny(size=SIZE, pose_bank=10)
    a, b = sample_pose_bank(cfg), sample_pose_bank(cfg)
    assert list(a) == list(b) and all(np.array_equal(a[k], b[k]) for k in a)
    c = sample_pose_bank(SynthConfig.tiny(size=SIZE, pose_bank=10, seed=1))
    assert not any(np.array_equal(a[k], c[k]) for k in a)
    first = sample_pose_bank(cfg, 4)                                         # a longer bank extends a shorter one
    assert all(np.array_equal(first[k], a[k]) for k in first)


def test_pose_bank_changes_no_image(data, tmp_path):
    with_bank, _ = write_synthreid(tmp_path / "bank", SynthConfig.tiny(size=SIZE, pose_bank=30), progress=False)
    h0, h1 = tree_hashes(data["plain"]), tree_hashes(with_bank)
    assert set(h1) - set(h0) == {"keypoints/pose_bank.csv"}
    assert {k for k in h0 if h0[k] != h1[k]} == {"synthreid.json"}


def test_render_keypoints_equals_render():
    rng = np.random.default_rng(21)
    cams = sample_cameras(rng, 4, occluder_rate=0.5)
    for i in range(30):
        idn, nu = sample_identity(rng), sample_nuisance(rng, cams[i % 4], junk=i % 7 == 0)
        for size, ss in (((128, 64), 2), ((64, 32), 1)):
            np.testing.assert_array_equal(render_keypoints(idn, nu, size, ss), render(idn, nu, size, ss)[1])


def test_load_pose_bank_names_the_missing_file(data):
    with pytest.raises(FileNotFoundError) as e: load_pose_bank(data["plain"])
    msg = str(e.value)
    assert "\n" not in msg and str(data["plain"] / "keypoints" / "pose_bank.csv") in msg
    assert "--pose-bank" in msg and "bounding_box_train.csv" in msg          # how to get one, and the fallback


# ---------------------------------------------------------------- validation and the CLI

@pytest.mark.parametrize("bad, word", [
    (dict(train_views=("front", "up")), "train_views: 'up' is not a view"),
    (dict(train_views=()), "name one or more different views"),
    (dict(train_views=("back", "back")), "name one or more different views"),
    (dict(train_views=5), "train_views=5"),
    (dict(train_pose_spread=0.0), "train_pose_spread=0.0: must lie in (0, 1]"),
    (dict(train_pose_spread=1.5), "train_pose_spread=1.5"),
    (dict(train_pose_spread="wide"), "train_pose_spread='wide'"),
    (dict(train_pose_spread=True), "train_pose_spread=True"),
    (dict(pose_bank=-1), "pose_bank=-1"),
    (dict(pose_bank=2.5), "pose_bank=2.5 must be an integer"),
])
def test_config_validation(bad, word):
    with pytest.raises(ValueError, match=re.escape(word)): SynthConfig.tiny(**bad)


def test_config_accepts_text_views():
    assert SynthConfig(train_views="front, back").train_views == ("front", "back")
    assert SynthConfig(train_views=["left"]).train_views == ("left",)
    assert SynthConfig(train_pose_spread=1).train_pose_spread == 1.0


SMALL = ["--ids", "4", "--images-per-id", "2", "--size", "64x32"]


def test_cli_flags_round_trip(tmp_path, capsys):
    code = main(["synth", "--out", str(tmp_path / "s"), *SMALL, "--train-views", "front,back",
                 "--train-pose-spread", "0.3", "--pose-bank", "25"])
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    info = synthreid_info(tmp_path / "s")
    for args in (printed["args"], info["args"]):
        assert (args["train_views"], args["train_pose_spread"], args["pose_bank"]) == (["front", "back"], 0.3, 25)
    assert load_pose_bank(tmp_path / "s").shape == (25, 18, 3)
    df = load_factors(tmp_path / "s")
    assert set(df[df.split == "train"].nu_view) <= {"front", "back"}


@pytest.mark.parametrize("flag, word", [
    ("--train-views=front,sideways", "'sideways' is not a view"),
    ("--train-pose-spread=0", "train_pose_spread=0"),
    ("--train-pose-spread=abc", "--train-pose-spread"),
    ("--pose-bank=-3", "pose_bank=-3"),
    ("--pose-bank=many", "--pose-bank"),
])
def test_cli_bad_values_are_one_line(tmp_path, capsys, flag, word):
    try: code = main(["synth", "--out", str(tmp_path / "s"), *SMALL, flag])
    except SystemExit as e: code = e.code                                   # argparse's own usage errors
    err = capsys.readouterr().err.strip()
    assert code == 2 and "Traceback" not in err and word in err.splitlines()[-1], err
    assert not (tmp_path / "s").exists()
