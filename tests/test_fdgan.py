"""FD-GAN: config presets, the shape of every module, each loss on hand-made inputs, flip augmentation swapping the
left / right heatmap channels, the frozen E and V of stage II, the keypoint Disentangler and a short tiny training."""
import pytest
import torch

from reid_workbench.core import seed_everything
from reid_workbench.data.datasets import load_synthreid
from reid_workbench.data.loaders import ReIDImageDataset, TransformConfig, build_train_transform
from reid_workbench.data.pose import FLIP_PERMUTATION, example_pose
from reid_workbench.data.synth import SynthConfig, write_synthreid
from reid_workbench.methods.fdgan import (FDGAN, FDGANConfig, FDGANDiscriminators, IdentityDiscriminator, ImageEncoder,
                                          Judged, PoseDecoder, PoseEncoder, PoseGenerator, VerificationHead,
                                          reconstruction_loss, same_pose_loss, verification_loss)
from reid_workbench.models.gan import smoothed_d_loss
from reid_workbench.models.gan import gan_d_loss
from reid_workbench.registry import load_trained, method_info
from reid_workbench.runs import train_run
from reid_workbench.training import Stage, Trainer, TrainerConfig


def small(**overrides) -> FDGANConfig:
    "The tiny preset at 64x32 with a still smaller G and D_pd: what the tests train."
    return FDGANConfig.tiny(**(dict(size=(64, 32), noise_dim=8, pose_dim=16, pose_channels=(8, 16, 16, 16, 16),
                                    generator_channels=(64, 32, 16, 16, 8), pose_dis_dim=8, pairs_per_batch=8) | overrides))


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root, _ = write_synthreid(tmp_path_factory.mktemp("fdgan") / "synth", SynthConfig.tiny(ids=16), progress=False)
    return load_synthreid(root)


def test_presets_and_validation():
    paper = FDGANConfig.paper()
    assert paper == FDGANConfig() and (paper.depth, paper.pretrained, paper.size) == (50, "imagenet", (256, 128))
    assert (paper.noise_dim, paper.pose_dim, paper.pairs_per_batch, paper.pos_neg_ratio) == (256, 128, 128, (1, 3))
    assert (paper.lr_encoder, paper.lr_verifier, paper.lr_generator, paper.lr_dis_id, paper.lr_dis_pd) == (0.01, 0.1, 1e-3, 1e-4, 1e-2)
    assert (paper.lr3_encoder, paper.lr3_generator, paper.lr3_verifier, paper.lr3_dis) == (1e-6, 1e-6, 1e-5, 1e-4)
    assert (paper.real_label_range, paper.fake_label_range, paper.sigma_range) == ((0.7, 1.0), (0.0, 0.3), (4.0, 6.0))
    assert FDGANConfig.from_json(FDGANConfig.tiny().to_json()) == FDGANConfig.tiny()
    for bad, msg in [(dict(depth=101), "depth=101"), (dict(real_label_range=(0.9, 0.8)), "real_label_range"),
                     (dict(sigma_range=(0.0, 2.0)), "sigma"), (dict(generator_dropout=1.0), "generator_dropout")]:
        with pytest.raises(ValueError, match=msg): FDGANConfig(**bad)
    info = method_info("fdgan")
    assert (info.model, info.structure_kind, info.references) == (FDGAN, "keypoints", {"encoder_run": "baseline"})
    assert info.quickstart == {"epochs_stage2": 3, "epochs_stage3": 0, "use_lid": False}     # stages I and II, no D_id


def test_module_shapes():
    torch.manual_seed(0)
    assert PoseEncoder((256, 128))(torch.rand(2, 18, 256, 128)).shape == (2, 128)                   # the paper's sizes
    assert PoseDecoder(2048 + 128 + 256, (256, 128), (32, 32, 16, 16, 8))(torch.randn(2, 2432)).shape == (2, 3, 256, 128)
    E = ImageEncoder(18)
    f = E(torch.randn(4, 3, 128, 64))
    assert f.shape == (4, 512) and VerificationHead(512)(f[:2], f[2:]).shape == (2,)
    G = PoseGenerator(512, (128, 64), (8, 8, 8, 8, 8), 16, 8, (32, 16, 16, 8, 8))
    fake = G(f[:2], torch.rand(2, 18, 128, 64), torch.randn(2, 8))
    assert fake.shape == (2, 3, 128, 64) and fake.abs().max() <= 1
    assert IdentityDiscriminator(18)(torch.randn(2, 3, 128, 64), fake).shape == (2,)
    ids, patches = FDGANDiscriminators(18, 8, 3)(Judged(torch.randn(2, 3, 128, 64), fake, torch.rand(2, 18, 128, 64)))
    assert ids.shape == (2,) and patches.shape == (2, 1, 16, 8)
    fixed = PoseGenerator(512, (128, 64), (8, 8, 8, 8, 8), 16, 8, (32, 16, 16, 8, 8), upsample="resize",
                          standardise_appearance=True, pose_skips=True)          # GENERATOR_FIXES: not the paper's
    heat = torch.rand(2, 18, 128, 64)
    assert fixed(f[:2], heat, torch.randn(2, 8)).shape == (2, 3, 128, 64)
    fixed.eval()                                                               # standardised by E(x)'s running statistics
    shifted = fixed(f[:2] + 5.0, heat)
    assert not torch.allclose(shifted, fixed(f[:2], heat))
    fixed.appearance_norm.running_mean -= 5.0                                 # E(x) + 5 under the old statistics
    assert torch.allclose(shifted, fixed(f[:2], heat), atol=1e-5)


def test_losses_on_hand_made_inputs():
    y = torch.rand(3, 3, 8, 4)
    assert same_pose_loss(torch.cat([y, y])) == 0
    assert same_pose_loss(torch.cat([y, y.flip(0)])) > 0
    assert same_pose_loss(torch.cat([y, y + 0.1])) == pytest.approx(0.1, abs=1e-6)
    assert reconstruction_loss(torch.cat([y + 0.1, y - 0.3]), torch.cat([y, y])) == pytest.approx(0.4, abs=1e-6)  # eq. 4 sums
    assert verification_loss(torch.tensor([0.0]), torch.tensor([True])) == pytest.approx(0.6931, abs=1e-4)
    real, fake = torch.randn(6), torch.randn(6)
    assert torch.allclose(smoothed_d_loss(real, fake, (1, 1), (0, 0)), gan_d_loss(real, fake), atol=1e-6)
    torch.manual_seed(0)   # smoothed targets: a confident, right D still pays for the labels' spread
    assert smoothed_d_loss(torch.full((1000,), 20.0), torch.full((1000,), -20.0)) > 1.0
    with pytest.raises(ValueError, match="shapes differ"): reconstruction_loss(y, y[:2])


def test_flip_swaps_left_and_right_heatmap_channels(synth):
    def item(flip_p):
        transform = build_train_transform(TransformConfig(size=(64, 32), pad=0, flip_p=flip_p, random_erasing_p=0.0))
        return ReIDImageDataset(synth.train[:1], transform, synth.keypoints, heatmaps=True, root=synth.root, seed=0)[0]
    plain, flipped = item(0.0), item(1.0)
    mirrored = plain["heatmap"].flip(-1)[list(FLIP_PERMUTATION)]
    assert plain["heatmap"].amax((1, 2)).gt(0.5).sum() >= 10                   # the pose has visible joints
    assert torch.allclose(flipped["heatmap"], mirrored, atol=1e-4)
    assert not torch.allclose(flipped["heatmap"], plain["heatmap"].flip(-1), atol=1e-2)   # a mirror alone is not enough


def test_disentangler_needs_keypoints_and_transfers_pose():
    model = FDGAN(small(), num_classes=4)
    images = torch.randn(2, 3, 64, 32)
    with pytest.raises(ValueError, match="needs the images' keypoints"): model.encode(images)
    pose = torch.as_tensor(example_pose((64, 32)))
    with torch.no_grad():
        codes = model.encode(images, torch.stack([pose, pose]))
        assert codes.appearance.shape == (2, 1, 512) and codes.structure.shape == (2, 18, 3)
        out = model.decode(codes)
    assert out.shape == (2, 3, 64, 32) and torch.isfinite(out).all()


def fit(model, synth, folder, steps):
    trainer = Trainer(model, synth, folder, TrainerConfig(device="cpu", progress=False, log_every=1, seed=0,
                                                          max_steps_per_epoch=steps),
                      loader_config=method_info("fdgan").loader_config(model.config, seed=0))
    return trainer, trainer.fit()


def test_stage_two_leaves_e_and_v_unchanged(synth, tmp_path):
    seed_everything(0)
    model = FDGAN(small(epochs_stage1=0, epochs_stage2=1, epochs_stage3=0), synth.num_train_pids)
    frozen = {k: v.clone() for k, v in [*model.encoder.state_dict().items(), *model.verifier.state_dict().items()]}
    generator = {k: v.clone() for k, v in model.generator.state_dict().items()}
    _, log = fit(model, synth, tmp_path / "run", steps=3)
    assert len(log) == 3 and {"L_r", "L_sp", "L_id", "L_pd", "D_id", "D_pd"} <= set(log.columns)
    after = {**model.encoder.state_dict(), **model.verifier.state_dict()}
    assert all(torch.equal(frozen[k], after[k]) for k in frozen)                # weights and BN statistics
    assert any(not torch.equal(v, model.generator.state_dict()[k]) for k, v in generator.items())
    assert bool(model.identity_initialised)


def test_share_encoder_trains_e_from_the_generator_side_only(synth, tmp_path):
    seed_everything(0)
    model = FDGAN(small(share_encoder=True, epochs_stage1=0, epochs_stage2=1, epochs_stage3=1), synth.num_train_pids)
    assert model.discriminator.identity.encoder is model.encoder
    encoder = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    head = {k: v.clone() for k, v in model.discriminator.identity.head.state_dict().items()}
    _, log = fit(model, synth, tmp_path / "run", steps=2)                 # stage III: E in "gen" only, no in-place clash
    assert list(log["stage"]) == ["stage2", "stage2", "stage3", "stage3"] and log["D_id"].notna().all()
    assert any(not torch.equal(v, model.encoder.state_dict()[k]) for k, v in encoder.items() if v.is_floating_point())
    assert any(not torch.equal(v, model.discriminator.identity.head.state_dict()[k]) for k, v in head.items())
    state = model.state_dict()                                                # one set of weights, saved under both names
    assert torch.equal(state["encoder.trunk.conv1.weight"], state["discriminator.identity.encoder.trunk.conv1.weight"])


def test_stage_three_freezes_e_batchnorm():
    model = FDGAN(small(), num_classes=4)
    norms = model.frozen_modules(Stage("stage3", 1))
    assert norms and all(isinstance(m, torch.nn.BatchNorm2d) for m in norms)
    assert len(norms) == sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.encoder.modules())


def test_tiny_training_lowers_reconstruction_loss(synth, tmp_path):
    seed_everything(0)
    model = FDGAN(small(epochs_stage1=1, epochs_stage2=6, epochs_stage3=0, lr_generator=2e-3), synth.num_train_pids)
    _, log = fit(model, synth, tmp_path / "run", steps=6)          # 6 epochs x 6 batches of 8 positive pairs
    stage2 = log[log["stage"] == "stage2"]["L_r"].to_numpy()
    assert len(stage2) == 36 and (log["stage"] == "stage1").sum() > 0
    assert stage2[-6:].mean() < 0.8 * stage2[:6].mean(), stage2


def test_encoder_starts_from_a_baseline_run_once(synth, tmp_path):
    train_run("baseline", synth.root, tmp_path / "base", config_overrides=dict(size=(64, 32), epochs=1, warmup_epochs=0,
              milestones=(), P=2, K=2), trainer_overrides={"max_steps_per_epoch": 1}, device="cpu", progress=False,
              verify_images=False)
    base = load_trained(tmp_path / "base")
    model = FDGAN(small(encoder_run=str(tmp_path / "base")), synth.num_train_pids)
    model.configure_optimizers(model.stages()[0])                       # stage I starts from the baseline's trunk
    trunk = model.encoder.trunk.state_dict()
    for key, value in base.backbone.state_dict().items(): assert torch.equal(value, trunk[key]), key
    assert bool(model.encoder_initialised) and not model.init_encoder_from_run()   # once: a resumed run keeps its E
    with pytest.raises(ValueError, match="ResNet-34"):
        FDGAN(small(encoder_run=str(tmp_path / "base"), depth=34), synth.num_train_pids).init_encoder_from_run()
