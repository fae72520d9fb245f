"""Pose-Transferrable ReID: a seconds-long run on a tiny SynthReID with a baseline guider. The guider stays frozen
(weights and BatchNorm statistics equal the guider run's after the generator stage), the generated set is cached and
reused, regenerated when G changes, and the run loads back as a Disentangler whose swap is a pose transfer."""
import json
import os

import numpy as np
import pytest
import torch

from reid_workbench.codes import is_disentangler, swap
from reid_workbench.data.datasets import load_dataset
from reid_workbench.data.synth import SynthConfig, write_synthreid
from reid_workbench.methods.posetransfer import (PoseTransfer, PTConfig, SiameseUNet, augmented_id_loss,
                                                 augmented_triplet_loss, guider_triplet_loss, skeleton_images)
from reid_workbench.registry import load_trained, method_info
from reid_workbench.runs import train_run
from reid_workbench.training import Stage

SMOKE = method_info("pt").smoke


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    work = tmp_path_factory.mktemp("pt")
    root, _ = write_synthreid(work / "synth", SynthConfig.tiny(size=(64, 32)), progress=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        guider_recipe = SMOKE["reid"]
        train_run("baseline", root, work / "guider", preset="tiny", progress=False, verify_images=False,
                  config_overrides={k: v for k, v in guider_recipe.items() if k != "pretrained"} | {"size": (64, 32)})
        train_run("pt", root, work / "pt", preset="tiny", progress=False, verify_images=False,
                  config_overrides=SMOKE | {"guider_run": str(work / "guider")})
    finally: torch.set_num_threads(threads)
    return root, work


def test_the_guider_stays_frozen(trained):
    root, work = trained
    guider, pt = load_trained(work / "guider"), load_trained(work / "pt")
    mine = pt.guider.state_dict()
    for name, value in guider.state_dict().items():          # weights and BatchNorm running statistics
        assert torch.equal(mine[name], value), name
    assert bool(pt.guider_ready)
    log = json.loads((work / "pt" / "config.json").read_text())
    assert log["method_config"]["guider_run"] == str(work / "guider")


def test_guider_gets_no_gradient_in_a_generator_step(trained):
    root, work = trained
    pt = load_trained(work / "pt").train()
    pt.guider.eval()
    for p in pt.guider.parameters(): p.requires_grad_(False)
    g = torch.Generator().manual_seed(0)
    from reid_workbench.data.pose import example_pose
    kps = torch.as_tensor(example_pose((64, 32)))[None].repeat(4, 1, 1)
    item = lambda: {"image": torch.randn(4, 3, 64, 32, generator=g), "keypoints": kps, "pid": torch.tensor([0, 1, 2, 3])}
    out = pt.gan_forward({"anchor": item(), "other": item()}, pt.loss_weights())
    loss = pt.guider_loss(out)
    loss.backward()
    assert all(p.grad is None for p in pt.guider.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in pt.generator.parameters())


def test_generated_set_is_cached_and_follows_the_generator(trained):
    root, work = trained
    pt, dataset = load_trained(work / "pt"), load_dataset(root)
    folder = work / "pt" / "generated"
    images = folder / "images.npy"
    first = np.array(np.load(images))
    assert first.shape == (len(dataset.train), pt.config.n_generated, 3, 64, 32) and first.dtype == np.uint8
    stamp = os.stat(images).st_mtime_ns
    stage = Stage("reid", 1)
    pt.prepare_stage(stage, dataset, work / "pt")                  # the same G: the cache is reused
    assert os.stat(images).st_mtime_ns == stamp
    assert np.array_equal(np.asarray(pt.generated), first)
    with torch.no_grad(): list(pt.generator.parameters())[-1].add_(0.5)   # another G: regenerated
    pt.prepare_stage(stage, dataset, work / "pt")
    assert not np.array_equal(np.asarray(pt.generated), first)
    poses = np.load(folder / "poses.npy")
    assert poses.shape == (len(dataset.train), pt.config.n_generated) and poses.max() < len(pt.source_poses)


def test_loads_as_a_disentangler_whose_swap_is_a_pose_transfer(trained):
    root, work = trained
    pt = load_trained(work / "pt")
    assert isinstance(pt, PoseTransfer) and is_disentangler(pt)
    from reid_workbench.data.pose import example_pose, flip_pose
    pose = torch.as_tensor(example_pose((64, 32)))
    kps = torch.stack([pose, flip_pose(pose, 32)])
    images = torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        codes = pt.encode(images, kps)
        moved = pt.decode(swap(codes[0], codes[1]))
        assert torch.equal(moved, pt.decode(pt.encode(images[:1], kps[1:])))
        assert not torch.equal(moved, pt.decode(codes[0]))        # the pose changes the image


def test_unet_skips_and_shapes():
    g = SiameseUNet((8, 16, 32)).eval()
    assert [u[0].in_channels for u in g.ups] == [64, 48]
    x, s = torch.zeros(1, 3, 32, 16), torch.zeros(1, 3, 32, 16)
    assert g(x, s).shape == (1, 3, 32, 16)
    with pytest.raises(ValueError, match="multiples of 8"): PTConfig.tiny(size=(36, 16), unet_channels=(8, 16, 32))


def test_skeleton_images_draw_only_visible_joints():
    from reid_workbench.data.pose import example_pose
    pose = torch.as_tensor(example_pose((64, 32)))
    drawn = skeleton_images(pose[None], (64, 32))
    assert drawn.shape == (1, 3, 64, 32) and (drawn > -1).any()
    pose[:, 2] = 0
    assert (skeleton_images(pose[None], (64, 32)) == -1).all()


def test_losses_on_hand_made_inputs():
    a, p, n = torch.zeros(1, 2), torch.tensor([[0.0, 1.0]]), torch.tensor([[3.0, 0.0]])
    assert guider_triplet_loss(a, p, n, 1.0).item() == pytest.approx(0.0)          # 1 - 3 + 1 < 0
    assert guider_triplet_loss(a, n, p, 1.0).item() == pytest.approx(3.0)          # 3 - 1 + 1
    logits, pids = torch.tensor([[4.0, 0.0, 0.0]]), torch.tensor([0])
    real, gen = torch.tensor([False]), torch.tensor([True])
    log_p = torch.log_softmax(logits, 1)[0]
    assert augmented_id_loss(logits, pids, real, 0.4).item() == pytest.approx(-log_p[0].item(), rel=1e-5)
    assert augmented_id_loss(logits, pids, gen, 0.4).item() == pytest.approx((-0.6 * log_p[0] - 0.4 * log_p.mean()).item(), rel=1e-5)
    feats = torch.tensor([[0.0], [5.0], [1.0], [2.0]])                  # r0, r1, g0, g1
    pids, flags = torch.tensor([0, 1, 0, 1]), torch.tensor([False, False, True, True])
    # generated anchors only (real ones have no real positive): g0 -> (1 - 1 + 0.15), g1 -> (3 - 1 + 0.15)
    assert augmented_triplet_loss(feats, pids, flags, 0.3, 0.5).item() == pytest.approx((0.15 + 2.15) / 2)
    assert augmented_triplet_loss(feats, pids, flags, 0.3, 1.0).item() == pytest.approx((0.3 + 2.3) / 2)


def test_a_guider_run_brings_its_own_recipe(trained, tmp_path):
    root, work = trained
    guider = json.loads((work / "guider" / "config.json").read_text())["method_config"]
    cfg = PTConfig.tiny(guider_run=str(work / "guider"))
    assert cfg.reid == guider and cfg.reid_config().epochs == guider["epochs"]
    assert PTConfig.tiny(guider_run=str(tmp_path / "gone")).reid == PTConfig.tiny().reid      # not there: the preset's
    assert PTConfig.from_json(cfg.to_json()) == cfg
