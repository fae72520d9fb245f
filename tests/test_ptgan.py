"""pt-GAN: a seconds-long run on a tiny SynthReID with a baseline F_R2. F_R2 and G stay frozen while FusionNet
trains, the K poses come from the clustering and stay in the checkpoint, the FusionNet inputs are cached and follow
the weights, and the run loads back as a Disentangler whose embed is the FusionNet feature."""
import json

import numpy as np
import pytest
import torch

from reid_workbench.codes import is_disentangler, swap
from reid_workbench.data.datasets import load_dataset
from reid_workbench.data.pose import PoseClusterConfig, example_pose
from reid_workbench.data.synth import SynthConfig, write_synthreid
from reid_workbench.methods.ptgan import (PTGAN, ClassDiscriminator, FusionNet, PoseMapGenerator, PoseVectorGenerator,
                                          PTGANConfig, class_loss, fit_target_poses, l2_loss, pose_vector)
from reid_workbench.methods.common import split_keypoints
from reid_workbench.registry import load_trained, method_info
from reid_workbench.runs import train_run

SMOKE = method_info("ptgan").smoke


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    work = tmp_path_factory.mktemp("ptgan")
    root, _ = write_synthreid(work / "synth", SynthConfig.tiny(size=(64, 32)), progress=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train_run("baseline", root, work / "reid", preset="tiny", progress=False, verify_images=False,
                  config_overrides={k: v for k, v in SMOKE["reid"].items() if k != "pretrained"} | {"size": (64, 32)})
        train_run("ptgan", root, work / "ptgan", preset="tiny", progress=False, verify_images=False,
                  config_overrides=SMOKE | {"reid_run": str(work / "reid")})
    finally: torch.set_num_threads(threads)
    return root, work


def test_reid_and_generator_stay_frozen_while_fusionnet_trains(trained):
    root, work = trained
    reid, model = load_trained(work / "reid"), load_trained(work / "ptgan")
    for name, value in reid.state_dict().items():               # F_R2: weights and BatchNorm statistics
        assert torch.equal(model.reid.state_dict()[name], value), name
    # G after the fusion stage equals G in the generator stage's last checkpoint (saved inside the run's log)
    log = (work / "ptgan" / "train.log").read_text()
    assert "stage 'fusion'" in log and "frozen ['Baseline', 'PoseMapGenerator', 'ClassDiscriminator', 'FusionNet']" in log
    cached = np.load(work / "ptgan" / "fusion" / "train_inputs.npy")
    ds = load_dataset(root)
    assert cached.shape == (len(ds.train), model.config.num_poses + 1, model.reid_dim)
    # the cached inputs are what the trained (frozen) F_R2 and G give now: they did not move during the fusion stage
    from reid_workbench.data.loaders import ReIDImageDataset, TransformConfig, build_test_transform
    images = ReIDImageDataset(ds.train[:4], build_test_transform(TransformConfig(size=tuple(model.config.size))), root=ds.root)
    batch = torch.stack([images[i]["image"] for i in range(4)])
    assert torch.allclose(model.fusion_inputs(batch), torch.from_numpy(cached[:4]), atol=1e-5)


def test_target_poses_are_the_clustering_and_stay_in_the_checkpoint(trained):
    root, work = trained
    model = load_trained(work / "ptgan")
    poses = split_keypoints(load_dataset(root), model.config.size)
    again = fit_target_poses(poses, model.config.size, model.config.cluster_config(), model.config.num_poses)
    assert np.allclose(model.target_poses.numpy(), again, atol=1e-5)           # stable for a seed
    assert model.target_poses.shape == (model.config.num_poses, 18, 3)
    assert int(model.best_validation[1]) >= 0                                   # early stopping kept an epoch


def test_fusion_inputs_are_cached_and_counted(trained):
    root, work = trained
    model = load_trained(work / "ptgan")
    images = torch.randn(3, 3, 64, 32)
    first = model.embed(images)
    assert model.feature_cost["images"] == 3 and model.feature_cost["generated"] == 3 * model.config.num_poses
    assert torch.equal(model.embed(images), first)                             # from the cache: nothing generated
    assert model.feature_cost["images"] == 3
    model.train(); model.eval()                                                 # training may change the weights
    assert not model.feature_cache


def test_loads_as_a_disentangler_whose_embed_is_the_fusion_feature(trained):
    root, work = trained
    model = load_trained(work / "ptgan")
    assert is_disentangler(model)
    images = torch.randn(2, 3, 64, 32)
    inputs = model.fusion_inputs(images)
    with torch.no_grad(): expected = torch.nn.functional.normalize(model.best_fusion.eval().features(inputs), dim=1)
    assert torch.allclose(model.embed(images), expected, atol=1e-6)
    from reid_workbench.data.pose import flip_pose
    pose = torch.as_tensor(example_pose((64, 32)))
    kps = torch.stack([pose, flip_pose(pose, 32)])
    with torch.no_grad():
        codes = model.encode(images, kps)
        assert codes.appearance.shape == (2, 1, model.appearance_dim)
        moved = model.decode(swap(codes[0], codes[1]))                         # a's appearance in b's pose
        assert torch.allclose(moved, model.decode(model.encode(images[:1], kps[1:])), atol=1e-6)
        assert not torch.allclose(moved, model.decode(codes[0]))               # the pose changes the image
    with pytest.raises(ValueError, match="keypoints"): model.encode(images)


def test_modules_and_losses():
    G = PoseMapGenerator(16, (64, 32), (8, 8, 8, 8, 8), 4)
    kp = torch.as_tensor(example_pose((64, 32)))[None].repeat(2, 1, 1)
    assert G(torch.randn(2, 16), kp).shape == (2, 3, 64, 32)
    assert PoseVectorGenerator(16, (64, 32), (8, 8, 8, 8, 8), "resize")(torch.randn(2, 16), kp).shape == (2, 3, 64, 32)
    logit, classes = ClassDiscriminator(5, (8, 8))(torch.randn(2, 3, 64, 32))
    assert logit.shape == (2,) and classes.shape == (2, 5)
    assert pose_vector(kp, (64, 32)).shape == (2, 54)
    y = torch.rand(2, 3, 8, 4)
    assert l2_loss(y, y) == 0 and l2_loss(y, y + 1) == pytest.approx(1.0)
    assert class_loss(torch.tensor([[10.0, -10.0]]), torch.tensor([0])) < 1e-3
    fusion = FusionNet(4, 2, 3)
    assert fusion(torch.randn(5, 3, 4)).shape == (5, 3)


def test_evaluation_reports_the_cost_of_generating(trained):
    from reid_workbench.runs import evaluate_run
    root, work = trained
    result = evaluate_run(work / "ptgan", root)       # MethodInfo.test_flip: no mirror images for pt-GAN's feature
    ds = load_dataset(root)
    cost = result["feature_cost"]
    assert result["flip"] is False and cost["images"] == len(ds.query) + len(ds.gallery)
    assert cost["generated"] == cost["images"] * SMOKE["num_poses"] and cost["seconds"] > 0
    baseline = evaluate_run(work / "reid", root)
    assert "feature_cost" not in baseline and baseline["flip"] is True
