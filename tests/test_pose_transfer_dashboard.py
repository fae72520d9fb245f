"""The pose-transfer dashboard without a browser: its pure functions (joint edits, walks, the palette, transfer) and
the dashboard driven through its widgets, on the smoke-sized FD-GAN / PT / pt-GAN (random weights: the checks are
about which codes reach `decode`, not about image quality) and a tiny SynthReID at their input size."""
import numpy as np
import pytest
import torch
from PIL import Image

from reid_workbench.codes import StripeColourToy, swap
from reid_workbench.dashboards import RunDashboards
from reid_workbench.dashboards.core import CodeBank, ImageBank, dashboards_for, png_array
from reid_workbench.dashboards.pose_transfer import (PoseTransferDashboard, edit_joint, has_keypoint_structure,
                                                     model_target_poses, pose_codes, pose_palette, skeleton_image, transfer,
                                                     transfer_all, walk_poses)
from reid_workbench.data.datasets import load_dataset
from reid_workbench.data.pose import COCO18_NAMES, PoseClusterConfig
from reid_workbench.data.synth import SynthConfig, write_synthreid
from reid_workbench.methods.common import split_keypoints
from reid_workbench.methods.ptgan import fit_target_poses
from reid_workbench.models.backbones import no_pretrained_weights
from reid_workbench.registry import method_config, method_info

SIZE = (64, 32)


def build(name: str):
    "The method's model from its tiny preset with its smoke overrides (random weights), in eval mode."
    info = method_info(name)
    with no_pretrained_weights():
        torch.manual_seed(0)
        return info.model(method_config(name, "tiny", **info.smoke), 8).eval()


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root, _ = write_synthreid(tmp_path_factory.mktemp("pose_transfer") / "synth", SynthConfig.tiny(ids=8, size=SIZE),
                              progress=False)
    return root


@pytest.fixture(scope="module")
def pt_codes(synth):
    return CodeBank(build("pt"), ImageBank.from_dataset(synth, SIZE, max_images=16, per_identity=2))


@pytest.fixture(scope="module")
def dash(pt_codes, synth):
    return PoseTransferDashboard(pt_codes, palette_data=synth, palette_size=5, steps=4, background=False)


def image(widget) -> np.ndarray: return png_array(widget.value)


# ---------------------------------------------------------------- which models
def test_applies_only_to_keypoint_disentanglers(synth, pt_codes):
    for name in ("fdgan", "pt", "ptgan"):
        model = build(name)
        assert has_keypoint_structure(model), name
        assert "pose transfer" in [e.title for e in dashboards_for(model)]
    toy = StripeColourToy()
    assert not has_keypoint_structure(toy) and not has_keypoint_structure(build("baseline"))
    assert not has_keypoint_structure(None)
    assert "pose transfer" not in [e.title for e in dashboards_for(toy)]
    with pytest.raises(ValueError) as e:
        PoseTransferDashboard(toy, synth)
    assert "\n" not in str(e.value) and "'StripeColourToy' has structure kind 'tensor'" in str(e.value)


def test_run_dashboards_list_it_between_swap_and_interpolation(tmp_path, synth, pt_codes):
    (tmp_path / "run").mkdir()
    dashes = RunDashboards(tmp_path / "run", synth, model=pt_codes.model, max_images=8)
    titles = list(dashes.dashboards)
    assert titles.index("swap") < titles.index("pose transfer") < titles.index("interpolation")
    pose = dashes["pose transfer"]
    assert pose.ok and pose.wait(), pose.error_message
    assert pose.codes is dashes["swap"].codes and "synthreid training poses" in pose.palette_source


# ---------------------------------------------------------------- pure functions
def test_edit_joint_moves_that_joint_and_nothing_else(pt_codes):
    pose = pt_codes.keypoints(0)
    moved = edit_joint(pose, "l_knee", 7.5, 30.0)
    j = COCO18_NAMES.index("l_knee")
    np.testing.assert_array_equal(moved[j], [7.5, 30.0, 1.0])
    np.testing.assert_array_equal(np.delete(moved, j, 0), np.delete(pose, j, 0))
    assert edit_joint(pose, j, 1, 2, visible=False)[j, 2] == 0 and pose[j, 2] == pt_codes.keypoints(0)[j, 2]  # a copy
    with pytest.raises(ValueError, match="joint 18 out of range"): edit_joint(pose, 18, 0, 0)
    with pytest.raises(ValueError, match=r"a pose is \(18, 3\)"): edit_joint(pose[:17], 0, 0, 0)


def test_walk_poses_go_from_start_to_end(pt_codes):
    start, end = pt_codes.keypoints(0), pt_codes.keypoints(3)
    walk = walk_poses(start, end, 5)
    assert walk.shape == (5, 18, 3)
    np.testing.assert_array_equal(walk[0], start)
    np.testing.assert_array_equal(walk[-1], end)
    both = (start[:, 2] > 0) & (end[:, 2] > 0)
    assert both.sum() >= 8
    np.testing.assert_allclose(walk[1, both, :2], start[both, :2] + (end[both, :2] - start[both, :2]) / 4, atol=1e-4)
    with pytest.raises(ValueError, match="steps=1 must be >= 2"): walk_poses(start, end, 1)


def test_palette_is_pt_gans_kmeans_clustering_of_the_training_poses(synth):
    model = build("pt")
    palette, source = pose_palette(model, synth, SIZE, k=8)
    assert palette.shape == (8, 18, 3) and source == "k-means centres of the synthreid training poses"
    seen = palette[..., 2] > 0
    assert seen.sum(1).min() >= 8                                              # a side view shows half the joints
    xy = palette[seen][:, :2]
    assert (xy >= 0).all() and (xy[:, 0] <= SIZE[1] - 1).all() and (xy[:, 1] <= SIZE[0] - 1).all()
    training = split_keypoints(load_dataset(synth), SIZE)
    expected = fit_target_poses(training, SIZE, PoseClusterConfig(method="kmeans", mode="full", k=8), 8)
    np.testing.assert_array_equal(palette, expected)
    assert pose_palette(model, synth, SIZE, k=8)[0] is palette                    # fitted once
    few, source = pose_palette(model, training[:5], SIZE, k=8)                   # poses given directly: at most N
    assert few.shape == (5, 18, 3) and source == "k-means centres of 5 poses"
    with pytest.raises(ValueError, match=r"poses must be \(N, 18, 3\)"): pose_palette(model, training[:, :5], SIZE)


def test_pt_gans_palette_is_its_own_target_poses(synth):
    model = build("ptgan")
    assert model_target_poses(model) is None                                     # not fitted yet: the dataset's
    assert pose_palette(model, synth, SIZE, k=4)[1].startswith("k-means centres")
    training = split_keypoints(load_dataset(synth), SIZE)
    K = model.config.num_poses
    model.target_poses.copy_(torch.from_numpy(fit_target_poses(training, SIZE, model.config.cluster_config(), K)))
    palette, source = pose_palette(model, synth, SIZE, k=8)
    np.testing.assert_array_equal(palette, model.target_poses.numpy())
    assert source == f"ptgan's own {K} target poses"
    dash = PoseTransferDashboard(model, synth, max_images=8, background=False)
    assert dash.ok and len(dash.palette_buttons) == K, dash.error_message


@pytest.mark.parametrize("method", ["pt", "fdgan", "ptgan"])
def test_transfer_is_decode_of_the_swap(synth, method):
    codes = CodeBank(build(method), ImageBank.from_dataset(synth, SIZE, max_images=8, per_identity=2))
    a, b = 0, codes.bank.other_identity(0)
    own = transfer(codes, a, codes.keypoints(a))
    np.testing.assert_array_equal(np.asarray(own), np.asarray(codes.decode(codes[a])[0]))
    moved = transfer(codes, a, codes.keypoints(b))
    np.testing.assert_array_equal(np.asarray(moved), np.asarray(codes.decode(swap(codes[a], codes[b]))[0]))
    # the pose reaches the generator (a random FD-GAN barely shows it: compare before rounding to pixels)
    assert not torch.equal(*(codes.decode_tensor(pose_codes(codes, a, codes.keypoints(i))) for i in (a, b)))
    many = transfer_all(codes, a, np.stack([codes.keypoints(a), codes.keypoints(b)]))
    assert len(many) == 2 and many[0].size == own.size
    with pytest.raises(ValueError, match=r"poses must be \(K, 18, 3\)"): transfer(codes, a, codes.keypoints(a)[:, :2])


# ---------------------------------------------------------------- the dashboard
def test_from_image_shows_the_swap_and_its_ground_truth(dash, pt_codes):
    dash.source.value = "from image"
    dash.person_picker.value, dash.pose_picker.value = 0, 5
    assert dash.ok, dash.error_message
    np.testing.assert_array_equal(np.asarray(dash.generated), np.asarray(pt_codes.decode(swap(pt_codes[0], pt_codes[5]))[0]))
    np.testing.assert_array_equal(image(dash.truth_image), np.asarray(pt_codes.bank.swap_truth(0, 5)))
    np.testing.assert_array_equal(image(dash.skeleton_view), np.asarray(skeleton_image(pt_codes.keypoints(5), SIZE)))
    assert dash.truth_column.layout.display is None and dash.scores.value.startswith("vs ground truth — person: L1")
    assert dash.pose_picker.widget.layout.display is None and dash.palette_box.layout.display == "none"
    before = image(dash.generated_image)
    dash.pose_picker.value = 6
    assert (image(dash.generated_image) != before).any() and dash.target is not None
    np.testing.assert_array_equal(dash.target, pt_codes.keypoints(6))
    person = image(dash.person_image)
    dash.person_picker.value = 2
    assert (image(dash.person_image) != person).any()
    np.testing.assert_array_equal(np.asarray(dash.generated), np.asarray(transfer(pt_codes, 2, pt_codes.keypoints(6))))


def test_palette_source_has_no_ground_truth(dash, pt_codes):
    dash.person_picker.value = 1
    dash.source.value = "pose palette"
    dash.palette_buttons[3].click()
    assert dash.ok and dash.palette_index == 3 and dash.palette_buttons[3].button_style == "info"
    np.testing.assert_array_equal(dash.target, dash.palette[3])
    np.testing.assert_array_equal(np.asarray(dash.generated), np.asarray(transfer(pt_codes, 1, dash.palette[3])))
    assert dash.truth is None and dash.truth_column.layout.display == "none" and dash.scores.value == ""
    assert "no ground truth for a palette pose" in dash.truth_note.value
    assert dash.palette_box.layout.display is None and dash.pose_picker.widget.layout.display == "none"


def test_editing_joints_starts_from_the_target_and_moves_one_joint(dash, pt_codes):
    dash.source.value = "pose palette"
    dash.palette_buttons[1].click()
    start = dash.palette[1].copy()
    dash.source.value = "edit joints"
    np.testing.assert_array_equal(dash.target, start)
    generated = image(dash.generated_image)
    j = COCO18_NAMES.index("r_wrist")
    dash.joint.value = j                                                          # the sliders follow, nothing moves
    if start[j, 2] > 0: assert (dash.joint_x.value, dash.joint_y.value) == (pytest.approx(start[j, 0], abs=0.5), pytest.approx(start[j, 1], abs=0.5))
    np.testing.assert_array_equal(dash.target, start)
    assert (image(dash.generated_image) == generated).all()
    dash.joint_x.value, dash.joint_y.value = 3.0, 4.0
    np.testing.assert_array_equal(dash.target[j], [3.0, 4.0, 1.0])
    np.testing.assert_array_equal(np.delete(dash.target, j, 0), np.delete(start, j, 0))
    assert (image(dash.generated_image) != generated).any() and "an edited pose" in dash.truth_note.value
    dash.joint_visible.value = False
    assert dash.target[j, 2] == 0
    dash.reset_pose.click()
    np.testing.assert_array_equal(dash.target, pt_codes.keypoints(dash.person_picker.value))
    assert dash.ok, dash.error_message


def test_walk_strip_to_the_target_and_through_the_palette(dash, pt_codes):
    dash.source.value = "from image"
    dash.person_picker.value, dash.pose_picker.value = 0, 4
    dash.walk_mode.value = "to target"
    dash.walk_steps.value = 4
    assert len(dash.walk_images) == 4
    expected = transfer_all(pt_codes, 0, walk_poses(pt_codes.keypoints(0), pt_codes.keypoints(4), 4))
    for got, want in zip(dash.walk_images, expected): np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    strip = image(dash.walk_image)
    assert strip.shape[0] > 2 * SIZE[0] and strip.shape[1] > 4 * SIZE[1]
    dash.walk_steps.value = 6
    assert len(dash.walk_images) == 6
    dash.walk_mode.value = "palette"
    assert len(dash.walk_images) == len(dash.palette) == 5 and dash.walk_steps.layout.display == "none"
    for got, want in zip(dash.walk_images, transfer_all(pt_codes, 0, dash.palette)):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    dash.walk_mode.value = "to target"


def test_walk_in_the_background_follows_the_latest_request(pt_codes, synth):
    d = PoseTransferDashboard(pt_codes, palette_data=synth, palette_size=4, steps=3)
    assert d.wait() and d.ok and len(d.walk_images) == 3
    d.person_picker.value, d.walk_steps.value = 3, 5
    assert d.wait() and len(d.walk_images) == 5 and d.walk_status.value == ""
    want = transfer_all(pt_codes, 3, walk_poses(pt_codes.keypoints(3), d.target, 5))
    np.testing.assert_array_equal(np.asarray(d.walk_images[-1]), np.asarray(want[-1]))
    assert len(d.walk_ms) >= 2


def test_save_buttons_write_captioned_pngs(tmp_path, dash):
    dash.run_dir = tmp_path
    dash.source.value = "from image"
    dash.save_view.children[0].click()
    assert dash.ok, dash.error_message
    saved = dash.last_saved
    assert saved.parent == tmp_path / "figures" and saved.name.startswith("pose-transfer-")
    with Image.open(saved) as im:
        assert im.width >= 5 * SIZE[1] and im.height > dash.view_figure().height      # five columns, a caption band
    assert dash.view_caption().startswith(f"{tmp_path.name} · pose transfer: #") and "vs ground truth" in dash.view_caption()
    dash.save_walk.children[0].click()
    assert dash.last_saved.name.startswith("pose-walk-") and dash.last_saved != saved
    assert " from its own pose to the pose of #" in dash.walk_caption()
    dash.source.value = "pose palette"
    assert "no ground truth for a palette pose" in dash.view_caption()


def test_images_without_synthreid_factors(pt_codes):
    bank = pt_codes.bank
    plain = ImageBank(bank.images, bank.names, bank.pids, bank.camids, bank.normalization, keypoints=bank.keypoints)
    d = PoseTransferDashboard(pt_codes.model, plain, palette_size=3, background=False)
    assert d.ok, d.error_message
    assert d.truth is None and "not from SynthReID" in d.truth_note.value
    assert d.palette_source == f"k-means centres of {len(bank)} poses" and len(d.palette) == 3


def test_a_failing_decoder_shows_a_message_and_blanks_the_views(synth):
    codes = CodeBank(build("pt"), ImageBank.from_dataset(synth, SIZE, max_images=8, per_identity=2))
    d = PoseTransferDashboard(codes, palette_data=synth, palette_size=3, background=False)
    assert d.ok and d.generated_image.value and d.truth_image.value

    def explode(codes): raise RuntimeError("decoder exploded")
    codes.model.decode = explode
    d.person_picker.value = 3
    assert not d.ok and "RuntimeError: decoder exploded" in d.error_message
    assert d.generated_image.value == b"" and d.truth_image.value == b"" and d.scores.value == ""
