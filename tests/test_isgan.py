"""IS-GAN: config and presets, module shapes (paper dimensions), losses on hand-made inputs, pairs and regions, the
part-level shuffle (never empty, never all, and local in the generated image), stage freezing through the Trainer, a
short training that lowers L_S, the Disentangler protocol and load_trained."""
import math

import pytest
import torch
from torch import nn

from reid_workbench.codes import Codes, shuffle_parts
from reid_workbench.core import convert_range, seed_everything
from reid_workbench.methods.common import weighted_sum
from reid_workbench.methods.isgan import (GLOBAL_FEATURES, LOCAL_FEATURES, PART_REGIONS, ISGAN, ISGANConfig,
                                          ISGANDiscriminator, ISGANGenerator, PartEncoder, draw_part_shuffle,
                                          identification_loss, kl_standard_normal, pair_indices, part_branch_blocks,
                                          part_shuffle, region_features, shuffling_loss)
from reid_workbench.models.backbones import ResNetTrunk
from reid_workbench.registry import method_info
from reid_workbench.training import Trainer, TrainerConfig

H, W = 96, 32
NUM_IDS = 8


def small(**overrides) -> ISGANConfig:
    "The tiny preset with smaller codes, G and D: what the tests train."
    return ISGANConfig.tiny(**(dict(size=(H, W), related_dim=32, unrelated_dim=8, noise_dim=8, generator_channels=(64, 32, 32, 16, 16),
                                    dis_channels=(16, 16, 32, 32, 32)) | overrides))


def person(gen: torch.Generator, upper: torch.Tensor, lower: torch.Tensor) -> torch.Tensor:
    "A two-colour 'person' in [-1, 1]: upper body rows 6-48, lower body rows 48-90, on a grey background."
    img = torch.full((3, H, W), -0.2) + 0.1 * torch.randn((), generator=gen)
    img[:, 6:48, 9:23] = upper[:, None, None]
    img[:, 48:90, 9:23] = lower[:, None, None]
    return img.clamp(-1, 1)


def colour_batches(n: int, seed: int, ids: int = 4, k: int = 2, fixed: bool = True) -> list[dict]:
    """n P x K batches (ImageNet range) of two-colour people. fixed: identity i always wears the same colours (a small
    re-ID problem); else every batch draws new random colours per identity (upper and lower independent)."""
    gen = torch.Generator().manual_seed(seed)
    palette = torch.rand(NUM_IDS, 2, 3, generator=torch.Generator().manual_seed(99)) * 1.8 - 0.9
    out = []
    for _ in range(n):
        pids = torch.randperm(NUM_IDS, generator=gen)[:ids].repeat_interleave(k)
        colours = {int(p): palette[int(p)] if fixed else torch.rand(2, 3, generator=gen) * 1.8 - 0.9 for p in pids}
        images = torch.stack([person(gen, *colours[int(p)]) for p in pids])
        out.append({"image": convert_range(images, "tanh", "imagenet"), "pid": pids})
    return out


# -- config, pairs, regions -------------------------------------------------------------------------------------------

def test_config_presets_validation_and_registry():
    paper = ISGANConfig.paper()
    assert paper == ISGANConfig()
    assert (paper.depth, paper.pretrained, paper.size, paper.branch_depth) == (50, "imagenet", (384, 128), "layer4")
    assert (paper.related_dim, paper.unrelated_dim, paper.noise_dim, paper.P, paper.K) == (256, 64, 128, 4, 4)
    assert (paper.lambda_r, paper.lambda_u, paper.lambda_u_stage3, paper.lambda_s, paper.lambda_ps, paper.lambda_d,
            paper.lambda_c) == (20, 0.001, 0.01, 10, 10, 1, 2)
    assert (paper.lr, paper.betas, paper.lr_discriminator, paper.momentum, paper.stage3_lr_factor) == (2e-4, (0.9, 0.999), 2e-4, 0.9, 0.1)
    assert paper.stage_epochs == (300, 200, 100) and paper.random_erasing_p == 0.5
    tiny = ISGANConfig.tiny()
    assert (tiny.depth, tiny.pretrained, tiny.size, tiny.branch_depth) == (18, False, (128, 64), "layer3")
    assert (tiny.P, tiny.K, tiny.triplet_weight, tiny.generator_dropout) == (8, 4, 1.0, 0.0)      # the tiny stage-1 aids
    assert (paper.triplet_weight, paper.pool, paper.generator_dropout) == (0.0, "max", 0.5)
    assert ISGANConfig.from_json(tiny.to_json()) == tiny
    assert ISGANConfig.tiny(epochs=6).stage_epochs == (3, 2, 1) and ISGANConfig.tiny(epochs=2).stage_epochs == (2, 0, 0)
    lc = paper.loader_config()
    assert (lc.P, lc.K, lc.batch_size, lc.transform.size, lc.transform.random_erasing_p) == (4, 4, 16, (384, 128), 0.5)
    for bad, msg in [(dict(size=(100, 32)), "multiples of 32"), (dict(size=(64, 32)), "height >= 96"),
                     (dict(depth=101), "depth=101"), (dict(K=1), "K=1"), (dict(branch_depth="layer5"), "branch_depth"),
                     (dict(lambda_s=-1), "lambda_s=-1"), (dict(lambda_r=0), "lambda_r=0"),
                     (dict(triplet_weight=-1), "triplet_weight=-1"), (dict(pool="mean"), "pool"),
                     (dict(generator_channels=(8, 8)), "generator_channels"), (dict(test_label="x"), "test_label")]:
        with pytest.raises(ValueError, match=msg): ISGANConfig(**bad)
    assert (method_info("isgan").config, method_info("isgan").model) == (ISGANConfig, ISGAN)


def test_pair_indices():
    a, p = pair_indices(torch.tensor([5, 5, 5, 5, 2, 2, 2, 2]))
    assert a.tolist() == [4, 6, 0, 2] and p.tolist() == [5, 7, 1, 3]
    a, p = pair_indices(torch.tensor([0, 1, 0, 1, 0, 2]))          # odd one out and a singleton stay unpaired
    assert a.tolist() == [0, 1] and p.tolist() == [2, 3]
    with pytest.raises(ValueError, match="no two images of one identity"): pair_indices(torch.tensor([0, 1, 2]))


def test_part_regions_and_region_features():
    assert method_info("isgan").regions() == [tuple(r) for r in PART_REGIONS] and len(PART_REGIONS) == 8
    assert all(PART_REGIONS[k] == (0.0, 1.0) for k in GLOBAL_FEATURES)
    assert [PART_REGIONS[k] for k in (3, 4)] == [(0.0, 0.5), (0.5, 1.0)]
    assert [PART_REGIONS[k] for k in (5, 6, 7)] == pytest.approx([(0, 1 / 3), (1 / 3, 2 / 3), (2 / 3, 1)])
    assert region_features("upper") == [3, 5] and region_features("lower") == [4, 7]
    assert region_features("top") == [5] and region_features("middle") == [6] and region_features("bottom") == [7]
    assert region_features("whole") == list(range(8))
    assert region_features((0.0, 2 / 3)) == [3, 5, 6]
    assert region_features({3, 4, 5}) == region_features("lower") and region_features({2, 3}) == [6]
    assert region_features({0, 1, 2, 3, 4, 5}) == list(range(8))
    with pytest.raises(ValueError, match="region 'legs'"): region_features("legs")
    with pytest.raises(ValueError, match="top < bottom"): region_features((0.5, 0.2))
    with pytest.raises(ValueError, match=r"stripes \[7\]"): region_features({7})
    with pytest.raises(TypeError, match="set of stripes"): region_features([0, 1])


# -- modules -----------------------------------------------------------------------------------------------------------

def test_module_shapes_with_the_papers_dimensions():
    torch.manual_seed(0)
    model = ISGAN(ISGANConfig.tiny(size=(H, W), related_dim=256, unrelated_dim=64, noise_dim=128), num_classes=5).eval()
    x = torch.randn(2, 3, H, W)
    with torch.no_grad():
        out = model.encode_features(x)
        assert out["features"].shape == (2, 8, 256) and out["logits"].shape == (2, 8, 5)     # E_R: 8 x 256, 8 classifiers
        assert out["mean"].shape == out["logvar"].shape == (2, 8, 64)                        # E_U: 8 x 64, VAE-style
        assert model.code_dim == 2048 + 512 + 128 + 5                                         # phi_R + phi_U + noise + one-hot
        image = model.generate(out["features"], out["mean"], torch.randn(2, 128), model.one_hot(torch.tensor([0, 4])))
        assert image.shape == x.shape and image.abs().max() <= 1                              # G: input size, tanh range
        dom, cls = model.discriminator(image)
        assert dom.shape == (2, 1, H // 32, W // 32) and cls.shape == (2, 5)                  # D_D patch map, D_C logits
        assert model.embed(x).shape == (2, 2048)
    assert sum(isinstance(m, nn.ConvTranspose2d) for m in model.generator.modules()) == 6
    assert {type(m) for m in model.discriminator.shared.modules()} >= {nn.Conv2d, nn.InstanceNorm2d, nn.LeakyReLU}
    assert len(model.discriminator.shared) == 5
    # every branch has its own weights, E_R and E_U too
    params = [set(map(id, b.parameters())) for enc in (model.related, model.unrelated) for b in enc.branches]
    assert all(not (params[i] & params[j]) for i in range(6) for j in range(i + 1, 6))


def test_paper_scale_shapes_resnet50_at_384x128():
    torch.manual_seed(0)
    full = ResNetTrunk(50, last_stride=2)
    trunk = ResNetTrunk(50, last_stride=1, cut_at="layer3.0").eval()
    blocks = part_branch_blocks(full, "layer4")
    with torch.no_grad():
        x = trunk(torch.randn(1, 3, 384, 128))
        assert x.shape == (1, 1024, 24, 8)                                                      # conv4_1
        assert [tuple(b.eval()(x).shape) for b in blocks] == [(1, 2048, 12, 4), (1, 2048, 24, 8), (1, 2048, 24, 8)]
        e_r = PartEncoder(blocks, 2048, 256, num_classes=751).eval()
        assert e_r(x)["features"].flatten(1).shape == (1, 2048)                                 # phi_R: 2048-d
        g = ISGANGenerator(2048 + 512 + 128 + 751, (384, 128), channels=(16, 8, 8, 8, 8)).eval()
        assert g(torch.randn(1, 3439)).shape == (1, 3, 384, 128)
        dom, cls = ISGANDiscriminator(751, (384, 128), channels=(8, 8, 16, 16, 16))(torch.randn(1, 3, 384, 128))
    assert dom.shape == (1, 1, 12, 4) and cls.shape == (1, 751)                                 # the paper's 12 x 4 PatchGAN


# -- losses ------------------------------------------------------------------------------------------------------------

def test_losses_on_hand_made_inputs():
    assert kl_standard_normal(torch.zeros(3, 8, 4), torch.zeros(3, 8, 4)).item() == 0.0      # N(0, 1) || N(0, 1)
    mean, logvar = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, math.log(2.0)]])
    # 0.5 * (1 + 1 - 1 - 0) + 0.5 * (0 + 2 - 1 - log 2)
    assert kl_standard_normal(mean, logvar).item() == pytest.approx(0.5 + 0.5 * (1 - math.log(2)), abs=1e-6)
    assert kl_standard_normal(torch.ones(4, 2), torch.zeros(4, 2)).item() == pytest.approx(1.0)   # averaged over the batch
    logits = torch.zeros(2, 8, 4)
    assert identification_loss(logits, torch.tensor([1, 2])).item() == pytest.approx(8 * math.log(4), abs=1e-5)
    sure = torch.full((1, 8, 3), -30.0); sure[0, :, 2] = 30.0
    assert identification_loss(sure, torch.tensor([2])).item() == pytest.approx(0.0, abs=1e-6)
    one = torch.zeros(1, 8, 3); one[0, 0] = torch.tensor([math.log(3.0), 0.0, 0.0])   # only part 0 differs: p = 3/5
    assert identification_loss(one, torch.tensor([0])).item() == pytest.approx(-math.log(0.6) + 7 * math.log(3), abs=1e-5)
    assert shuffling_loss([torch.zeros(2, 3, 4, 4)] * 2, [torch.ones(2, 3, 4, 4), torch.full((2, 3, 4, 4), -0.25)]).item() == 1.25


def test_weighted_objectives_follow_the_stages_and_switches():
    seed_everything(0)
    model = ISGAN(small(), num_classes=NUM_IDS).train()
    batch = colour_batches(1, 0)[0]
    out = model.forward_pairs(batch["image"], batch["pid"])
    cfg = model.config
    fake_outputs = model.discriminator(out["fake"])
    for stage, lambda_u in (("stage2", cfg.lambda_u), ("stage3", cfg.lambda_u_stage3)):
        weights = model.loss_weights(stage)
        g = model.generator_losses(out, batch, weights, fake_outputs)
        expected = (lambda_u * g["L_U"] + cfg.lambda_s * g["L_S"] + cfg.lambda_ps * g["L_PS"] + cfg.lambda_d * g["L_D"]
                    + cfg.lambda_c * g["L_C"] + (cfg.lambda_r * g["L_R"] if stage == "stage3" else 0))
        assert weighted_sum(g, weights).item() == pytest.approx(expected.item(), rel=1e-5)
        assert ("L_R" in g) == (stage == "stage3")
    weights = model.loss_weights("stage3")
    d = model.discriminator_losses(out, batch, weights)
    assert weighted_sum(d, weights).item() == pytest.approx((cfg.lambda_d * d["D_D"] + cfg.lambda_c * d["D_C"]).item(), rel=1e-5)
    # the ablation switches: each row computes exactly its losses and builds the optimizers it needs
    only_ls = ISGAN(small(use_lps=False, use_ld=False, use_lc=False, use_lu=False), num_classes=NUM_IDS).train()
    out = only_ls.forward_pairs(batch["image"], batch["pid"])
    weights = only_ls.loss_weights("stage3")
    assert sorted(only_ls.generator_losses(out, batch, weights)) == ["L_R", "L_S"]
    assert only_ls.discriminator_losses(out, batch, weights) == {}                        # no D update, no "dis" optimizer
    assert sorted(only_ls.configure_optimizers(only_ls.stages()[1])) == ["gen"]
    baseline = ISGAN(small(use_lps=False, use_ld=False, use_lc=False, use_lu=False, use_ls=False), num_classes=NUM_IDS)
    assert [s.epochs for s in baseline.stages()] == [10, 0, 1] and "fake" not in baseline.forward_pairs(batch["image"], batch["pid"])


# -- the part-level shuffle (the trap of the public code) ----------------------------------------------------------------

def test_part_shuffle_draws_are_never_empty_never_all():
    masks = draw_part_shuffle(torch.Generator().manual_seed(0), num=5000)
    assert masks.shape == (5000, 8) and masks.dtype == torch.bool
    assert not masks[:, list(GLOBAL_FEATURES)].any()                          # globals never move
    counts = masks.sum(1)
    assert counts.min() >= 1 and counts.max() <= len(LOCAL_FEATURES) - 1      # never none, never all
    assert len({tuple(m.tolist()) for m in masks}) == 2 ** 5 - 2              # every proper subset of the locals occurs
    freq = masks[:, list(LOCAL_FEATURES)].float().mean(0)
    assert torch.allclose(freq, torch.full((5,), 0.5), atol=0.03)
    single = draw_part_shuffle()                                              # the global RNG, one mask
    assert single.shape == (8,) and 1 <= int(single.sum()) <= 4
    phi_i, phi_j = torch.zeros(2, 8, 3), torch.ones(2, 8, 3)
    mixed = part_shuffle(phi_i, phi_j, masks[:2])
    assert torch.equal(mixed[..., 0].bool(), masks[:2])


def test_training_path_really_shuffles_parts():
    "In forward_pairs (the L_PS path) every pair gets a valid mask and G's part-shuffle images differ from the plain ones."
    seed_everything(1)
    model = ISGAN(small(), num_classes=NUM_IDS)
    batch = colour_batches(1, 1, ids=4, k=4)[0]
    model.train()
    for _ in range(20):                                                       # the masks drawn during training
        masks = model.forward_pairs(batch["image"], batch["pid"])["masks"]
        assert masks.shape == (8, 8) and not masks[:, list(GLOBAL_FEATURES)].any()
        assert (masks.sum(1) >= 1).all() and (masks.sum(1) <= 4).all()
    model.eval()                                                              # deterministic: mean phi_U, no noise
    with torch.no_grad():
        out = model.forward_pairs(batch["image"], batch["pid"])
    n = out["num_pairs"]
    recon_a, part_a = out["fake"][:n], out["fake"][4 * n:5 * n]
    phi = out["features"]
    shuffled_in = part_shuffle(phi[out["anchors"]], phi[out["positives"]], out["masks"])
    changed = (shuffled_in != phi[out["anchors"]]).any(2)                    # which features G got from the positive
    assert torch.equal(changed, out["masks"])                                 # exactly the masked ones
    assert ((part_a - recon_a).abs().flatten(1).mean(1) > 1e-4).all()        # and the image changes, for every pair


class RegionColours(nn.Module):
    """A constructed E_R: feature k is a fixed random projection of the mean colour of region k's rows when the region lies
    inside one half of the image (the upper or the lower body), zeros when it spans both (the globals, the middle third).
    No feature then describes both halves, so a G that reconstructs well must draw each half from that half's features."""
    def __init__(self, dim: int, num_classes: int):
        super().__init__()
        self.register_buffer("proj", torch.randn(8, 3, dim, generator=torch.Generator().manual_seed(1)))
        self.register_buffer("within_half", torch.tensor([b <= 0.5 + 1e-6 or t >= 0.5 - 1e-6 for t, b in PART_REGIONS]))
        self.num_classes = num_classes

    def forward(self, images):
        h = images.shape[2]
        means = torch.stack([images[:, :, round(t * h):round(b * h)].mean((2, 3)) for t, b in PART_REGIONS], 1)
        means = means * self.within_half[None, :, None]
        return {"features": torch.einsum("bkc,kcd->bkd", means, self.proj),
                "logits": means.new_zeros(len(images), 8, self.num_classes)}


class NoStructure(nn.Module):
    "A constructed E_U that carries nothing: G must draw everything from phi_R."
    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def forward(self, images):
        z = images.new_zeros(len(images), 8, self.dim)
        return {"mean": z, "logvar": z}


def band_ratio(diff_rows: torch.Tensor, inside: torch.Tensor) -> float:
    "Mean |diff| of the rows inside a region over the mean of the rows outside it."
    return float(diff_rows[inside].mean() / diff_rows[~inside].mean())


def test_part_shuffle_changes_mostly_the_rows_of_the_shuffled_region(tmp_path):
    """What is provable: when each part feature describes only its own horizontal region, the part shuffle
    (region_features, shuffle_parts, the masks of the training path) must move the generated image mostly in that
    region. An untrained G mixes every feature into every row, and a trained one may still read one half from features
    that describe both halves (globals, the middle third), so we construct E_R (RegionColours) and E_U (nothing) and
    train the real G through the Trainer (stage 2, E_R frozen, L_S + L_PS) on people whose upper and lower colours vary
    independently."""
    seed_everything(0)
    cfg = small(related_dim=16, unrelated_dim=4, noise_dim=4, use_lu=False, use_ld=False, use_lc=False, lr=3e-3, generator_dropout=0.0,
                epochs_stage1=0, epochs_stage2=1, epochs_stage3=0)
    model = ISGAN(cfg, NUM_IDS)
    model.trunk, model.related, model.unrelated = nn.Identity(), RegionColours(16, NUM_IDS), NoStructure(4)
    trainer = Trainer(model, lambda stage, epoch: colour_batches(200, 7, fixed=False), tmp_path / "run",
                      TrainerConfig(progress=False, log_every=50))
    log = trainer.fit()
    assert log["L_PS"].iloc[-1] < 0.8 * log["L_PS"].iloc[0]                            # G learned to rebuild
    model.eval()
    gen = torch.Generator().manual_seed(123)
    colours = torch.rand(16, 2, 2, 3, generator=gen) * 1.8 - 0.9                     # 16 pairs of different people
    a = convert_range(torch.stack([person(gen, *c[0]) for c in colours]), "tanh", "imagenet")
    b = convert_range(torch.stack([person(gen, *c[1]) for c in colours]), "tanh", "imagenet")
    rows = torch.arange(H)
    with torch.no_grad():
        ca, cb = model.encode(a), model.encode(b)
        recon = model.decode(ca)
        for region, inside in (("upper", rows < H // 2), ("lower", rows >= H // 2)):
            shuffled = model.decode(shuffle_parts(ca, cb, region_features(region)))
            diff_rows = (shuffled - recon).abs().mean((0, 1, 3))                      # mean |diff| per image row
            assert band_ratio(diff_rows, inside) > 3.0, (region, band_ratio(diff_rows, inside))   # measured: 4.7 - 6.8
        # the training path: each pair's random mask, rows covered by a swapped local feature vs. rows covered by none
        images = torch.cat([a[:8], b[:8]])[torch.arange(16).view(2, 8).t().flatten()]   # (a0, b0, a1, b1, ...)
        out = model.forward_pairs(images, torch.arange(8).repeat_interleave(2))
        n = out["num_pairs"]
        diffs = (out["fake"][4 * n:5 * n] - out["fake"][:n]).abs().mean((1, 3))  # (pairs, H)
        inside_sum = outside_sum = 0.0
        for mask, d in zip(out["masks"], diffs):
            covered = torch.zeros(H, dtype=torch.bool)
            for k in torch.nonzero(mask).flatten().tolist():
                top, bottom = PART_REGIONS[k]
                covered[round(top * H):round(bottom * H)] = True
            if covered.all(): continue
            inside_sum += float(d[covered].mean()); outside_sum += float(d[~covered].mean())
        assert inside_sum > 1.8 * outside_sum, (inside_sum, outside_sum)                # measured: 2.3 - 2.5


# -- training through the Trainer ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    "A small IS-GAN trained through all three stages (3 / 25 / 3 steps) on in-memory people; states at each stage start."
    seed_everything(0)
    cfg = small(epochs_stage1=1, epochs_stage2=1, epochs_stage3=1, lr=2e-3)
    model = ISGAN(cfg, NUM_IDS)
    steps = {"stage1": 3, "stage2": 25, "stage3": 3}
    snapshots = {}
    configure = model.configure_optimizers
    def spy(stage):
        snapshots[stage.name] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        return configure(stage)
    model.configure_optimizers = spy
    run = tmp_path_factory.mktemp("isgan") / "run"
    trainer = Trainer(model, lambda stage, epoch: colour_batches(steps[stage.name], 3), run,
                      TrainerConfig(progress=False, log_every=1))
    log = trainer.fit()
    del model.configure_optimizers
    snapshots["end"] = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return trainer, log, snapshots, run


def _changed(before: dict, after: dict, prefix: str) -> list[str]:
    return [k for k in before if k.startswith(prefix) and not torch.equal(before[k], after[k])]


def test_stage_freezing_is_real(trained):
    trainer, log, snap, _ = trained
    s1, s2, s3, end = snap["stage1"], snap["stage2"], snap["stage3"], snap["end"]
    # stage 1 trains the trunk and E_R only
    assert _changed(s1, s2, "trunk.") and _changed(s1, s2, "related.")
    for prefix in ("unrelated.", "generator.", "discriminator."): assert not _changed(s1, s2, prefix), prefix
    # stage 2: trunk and E_R do not change at all (parameters and BN statistics), the rest trains
    assert not _changed(s2, s3, "trunk.") and not _changed(s2, s3, "related.")
    for prefix in ("unrelated.", "generator.", "discriminator."): assert _changed(s2, s3, prefix), prefix
    # stage 3 trains everything
    for prefix in ("trunk.", "related.", "unrelated.", "generator.", "discriminator."): assert _changed(s3, end, prefix), prefix
    # the Trainer gave the gradients back after the stage
    assert all(p.requires_grad for p in trainer.method.parameters())
    assert list(log["stage"].unique()) == ["stage1", "stage2", "stage3"]
    assert log.loc[log["stage"] == "stage2", "L_R"].isna().all() and log.loc[log["stage"] == "stage3", "L_R"].notna().all()
    assert log.loc[log["stage"] == "stage1", "L_T"].notna().all()                     # the tiny preset's stage-1 triplet
    assert {"lr_gen", "lr_dis"} <= set(log.columns)
    lrs = log.groupby("stage")[["lr_encoder", "lr_gen"]].first()
    assert lrs.loc["stage3", "lr_gen"] == pytest.approx(lrs.loc["stage1", "lr_encoder"] * 0.1)      # lr / 10 of stage 1


def test_stage3_runs_at_a_tenth_of_stage1s_lr():
    "'All end-to-end at lr / 10': of stage 1's lr, also when stage 1 has its own (lr_stage1); D at its own lr / 10."
    lr = lambda model, stage, name: model.configure_optimizers(model.stages()[stage])[name][0].param_groups[0]["lr"]
    own = ISGAN(small(lr=5e-4, lr_stage1=2e-3, lr_discriminator=1e-3), num_classes=NUM_IDS)
    assert (lr(own, 0, "encoder"), lr(own, 1, "gen"), lr(own, 1, "dis")) == (2e-3, 5e-4, 1e-3)
    assert (lr(own, 2, "gen"), lr(own, 2, "dis")) == pytest.approx((2e-4, 1e-4))
    one = ISGAN(small(lr=2e-4, lr_stage1=None), num_classes=NUM_IDS)                    # the paper: one lr
    assert (lr(one, 0, "encoder"), lr(one, 2, "gen")) == pytest.approx((2e-4, 2e-5))


def test_short_training_reduces_identity_shuffling_loss(trained):
    _, log, _, _ = trained
    ls = log.loc[log["stage"] == "stage2", "L_S"].to_numpy()
    assert len(ls) == 25
    assert ls[-5:].mean() < 0.8 * ls[:5].mean(), ls


def test_isgan_specifics_of_the_protocol(trained):
    "What the conformance suite (test_method_contract.py) cannot know: the extras, regions, phi_U checks, samples."
    trainer, _, _, run = trained
    model = trainer.method.eval()
    images = colour_batches(1, 11, ids=3, k=1)[0]["image"]
    codes = model.encode(images)
    assert codes.appearance.shape == (3, 8, 32) and codes.structure.shape == (3, 8, 8)
    assert torch.allclose(codes.appearance_extra["label"].sum(1), torch.ones(3), atol=1e-5)
    assert torch.equal(codes.structure_extra["noise"], torch.zeros(3, 8))
    upper = shuffle_parts(codes[0], codes[1], region_features("upper"))
    assert torch.equal(upper.appearance[0, [3, 5]], codes.appearance[1, [3, 5]])
    assert torch.equal(upper.appearance[0, [0, 1, 2, 4, 6, 7]], codes.appearance[0, [0, 1, 2, 4, 6, 7]])
    no_label = Codes(codes.appearance, codes.structure)                                   # extras missing: zeros
    assert model.decode(no_label).shape == images.shape
    with pytest.raises(ValueError, match=r"phi_U \(B, 8, 8\)"): model.decode(Codes(codes.appearance, torch.zeros(3, 8, 5)))
    zeros = ISGAN(small(test_label="zeros"), num_classes=NUM_IDS)
    assert torch.equal(zeros.encode(images).appearance_extra["label"], torch.zeros(3, NUM_IDS))
    # samples: 5 rows (anchor, positive, recon, identity shuffle, part shuffle) of 8 pairs, saved per stage
    batch = colour_batches(1, 5)[0]
    assert model.sample_images(batch).shape == (40, 3, H, W)
    assert sorted(p.name for p in (run / "samples").iterdir()) == ["stage1_e0.png", "stage2_e0.png", "stage3_e0.png"]
