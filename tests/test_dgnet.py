"""DG-Net: config and schedule, encoder / decoder / discriminator shapes, losses, gray input, the detach switch, the
Disentangler protocol, the optimizers, short training runs with the Trainer, teachers, resume and load_trained."""
import json, math

import pytest
import torch

from reid_workbench.codes import Codes, interpolate, swap
from reid_workbench.core import convert_range, seed_everything
from reid_workbench.data.datasets import load_synthreid
from reid_workbench.data.loaders import LoaderConfig
from reid_workbench.data.synth import SynthConfig, write_synthreid
from reid_workbench.methods.baseline import Baseline, BaselineConfig
from reid_workbench.methods.common import weighted_sum
from reid_workbench.methods.dgnet import DGNet, DGNetConfig, _structure_donors, l1_loss, primary_feature_weights, soft_label_kl
from reid_workbench.registry import info_of, load_trained, method_info
from reid_workbench.training import Trainer, TrainerConfig

H, W = 64, 32


def small(**overrides) -> DGNetConfig:
    "The tiny preset at 64x32 with a smaller generator and pinned learning rates: what the tests train."
    return DGNetConfig.tiny(**(dict(size=(H, W), structure_channels=16, structure_res_blocks=1, mlp_hidden=32, dis_dim=8,
                                    dis_layers=2, feature_dim=64, teacher_epochs=0, teacher_overrides={},
                                    lr_appearance=0.01, head_lr_mult=1.0, lr_generator=5e-4) | overrides))


def test_config_presets_validation_and_loader_config():
    paper = DGNetConfig.paper()
    assert paper == DGNetConfig()
    assert (paper.depth, paper.pretrained, paper.size, paper.feature_dim, paper.structure_channels) == (50, "imagenet", (256, 128), 512, 128)
    assert (paper.img_weight, paper.id_cross_weight, paper.prim_weight, paper.fine_ratio, paper.test_fine_weight) == (5, 0.5, 2, 0.2, 0.5)
    assert (paper.warmup_iters, paper.ramp_iters, paper.dis_scales, paper.gan_loss) == (30000, 4000, 3, "nonsaturating")
    assert (paper.lr_appearance, paper.momentum, paper.lr_generator, paper.betas) == (0.002, 0.9, 1e-4, (0.0, 0.999))
    assert paper.detach_appearance_for_image_losses is False and paper.teacher_mode == "train"
    teacher = paper.teacher_config()
    assert (teacher.head, teacher.triplet_weight, teacher.label_smoothing, teacher.depth, teacher.size) == ("ide", 0, 0, 50, (256, 128))
    tiny = DGNetConfig.tiny()
    assert (tiny.depth, tiny.pretrained, tiny.size, tiny.appearance_cut, tiny.teacher_mode) == (18, False, (64, 32), "layer3", "none")
    assert (paper.appearance_cut, paper.r1_reduction, paper.prim_fine_on_detached, paper.appearance_stats_from_real,
            paper.structure_jitter) == ("layer4", "sum", True, True, 0.0)
    assert tiny.replace(teacher_run="runs/baseline").teacher_mode == "run"
    assert (tiny.teacher_config().depth, tiny.teacher_config().size) == (18, (64, 32))
    assert DGNetConfig.tiny(teacher_epochs=0).teacher_mode == "none"
    assert DGNetConfig.from_json(tiny.to_json()) == tiny
    assert DGNetConfig.tiny(teacher_overrides={"milestones": (3,)}).teacher_overrides == {"milestones": [3]}  # JSON-stable
    assert DGNetConfig(teacher_run="somewhere").teacher_mode == "run"
    lc = paper.loader_config(LoaderConfig(num_workers=3))
    assert (lc.batch_size, lc.P, lc.K, lc.num_workers, lc.transform.size, lc.transform.random_erasing_p) == (8, 16, 4, 3, (256, 128), 0.0)
    for bad, msg in [(dict(size=(250, 128)), "multiples of 4"), (dict(depth=101), "depth=101"),
                     (dict(gan_loss="wgan"), "gan_loss='wgan'"), (dict(batch_size=1), "batch_size=1"),
                     (dict(img_weight=-1), "img_weight=-1"), (dict(teacher_overrides={"head": "x"}), "teacher_overrides"),
                     (dict(size=(64, 32), dis_layers=4), "dis_layers=4"), (dict(appearance_cut="layer2"), "appearance_cut"),
                     (dict(r1_reduction="max"), "r1_reduction"), (dict(structure_jitter=1.5), "structure_jitter")]:
        with pytest.raises(ValueError, match=msg): DGNetConfig(**bad)
    assert (method_info("dgnet").config, method_info("dgnet").model) == (DGNetConfig, DGNet)


def test_primary_feature_weights_schedule():
    cfg = DGNetConfig()
    expected = {0: (0, 0), 29_999: (0, 0), 30_000: (0, 0), 30_001: (2 / 4000, 0.4 / 4000), 31_000: (0.5, 0.1),
                32_000: (1.0, 0.2), 33_000: (1.5, 0.3), 34_000: (2.0, 0.4), 50_000: (2.0, 0.4)}
    for it, (prim, fine) in expected.items():
        assert primary_feature_weights(it, cfg) == pytest.approx((prim, fine), abs=1e-12), it
    assert primary_feature_weights(10, DGNetConfig(warmup_iters=10, ramp_iters=0)) == (2.0, pytest.approx(0.4))
    assert primary_feature_weights(7, DGNetConfig(warmup_iters=0, ramp_iters=14, prim_weight=1.0, fine_ratio=0.5)) == (0.5, 0.25)
    # without a teacher lambda_prim is 0 but L_fine keeps its schedule
    model = DGNet(small(warmup_iters=0, ramp_iters=4), num_classes=3)
    weights = model.loss_weights(2)
    assert "prim" not in weights and weights["fine"] == pytest.approx(0.2)


def test_module_shapes_and_ranges():
    torch.manual_seed(0)
    model = DGNet(DGNetConfig.tiny(size=(128, 64), appearance_cut="layer4"), num_classes=5).eval()
    x = torch.randn(2, 3, 128, 64)
    out = model.appearance_encoder(x)
    assert out["code"].shape == (2, 512, 4, 1)              # ResNet-18: 512 x 4 x 1
    assert DGNet(DGNetConfig.tiny(), num_classes=5).appearance_encoder.code(torch.randn(2, 3, 64, 32)).shape == (2, 256, 4, 1)
    assert out["prim"].shape == out["fine"].shape == (2, 256) and out["prim_logits"].shape == (2, 5)
    s = model.structure_encoder(x)
    assert s.shape == (2, model.config.structure_channels, 32, 16)   # C x H/4 x W/4
    image = model.generate(out["code"], s)
    assert image.shape == x.shape and image.abs().max() <= 1   # tanh range
    decoded = model.decode(model.encode(x))                    # ImageNet range: within the converted [-1, 1] box
    lo, hi = convert_range(-torch.ones(1, 3, 1, 1), "tanh", "imagenet"), convert_range(torch.ones(1, 3, 1, 1), "tanh", "imagenet")
    assert ((decoded >= lo - 1e-5) & (decoded <= hi + 1e-5)).all()
    dis = model.discriminator(image)
    assert [tuple(o.shape) for o in dis] == [(2, 1, 16, 8), (2, 1, 8, 4), (2, 1, 4, 2)]
    # the paper's sizes: 2048 x 4 x 1 and 128 x 64 x 32 at 256 x 128 (ResNet-50 without ImageNet weights here)
    paper = DGNet(DGNetConfig(pretrained=False, teacher_epochs=0), num_classes=5).eval()
    with torch.no_grad():
        codes = paper.encode(torch.randn(1, 3, 256, 128))
        assert codes.appearance.shape == (1, 4, 2048) and codes.structure.shape == (1, 128, 64, 32)
        assert [tuple(o.shape[-2:]) for o in paper.discriminator(torch.randn(1, 3, 256, 128))] == [(16, 8), (8, 4), (4, 2)]


def test_loss_functions_on_hand_made_inputs():
    x = torch.randn(2, 3, 8, 4)
    assert l1_loss(x, x).item() == 0.0
    assert l1_loss(torch.zeros(2, 2), torch.tensor([[1.0, -2], [3, 0]])).item() == pytest.approx(1.5)
    with pytest.raises(ValueError, match="shapes differ"): l1_loss(torch.zeros(2), torch.zeros(3))
    logits = torch.randn(4, 7)
    assert soft_label_kl(logits, logits).item() == pytest.approx(0.0, abs=1e-6)
    q, p = torch.tensor([[0.5, 0.5], [0.9, 0.1]]), torch.tensor([[0.25, 0.75], [0.5, 0.5]])
    by_hand = ((q * (q / p).log()).sum(1)).mean().item()
    assert soft_label_kl(p.log(), q.log()).item() == pytest.approx(by_hand, rel=1e-6)
    teacher = torch.randn(3, 5, requires_grad=True)
    student = torch.randn(3, 5, requires_grad=True)
    soft_label_kl(student, teacher).backward()
    assert teacher.grad is None and student.grad.abs().sum() > 0   # the teacher's soft labels are targets


def _pair_batch(anchor, positive, pids) -> dict:
    return {"anchor": {"image": anchor, "pid": pids}, "other": {"image": positive, "pid": pids}}


def test_generator_loss_total_is_the_weighted_sum_of_eq_10():
    seed_everything(0)
    model = DGNet(small(), num_classes=6).train()
    anchor, positive, pids = torch.randn(4, 3, H, W), torch.randn(4, 3, H, W), torch.tensor([0, 1, 2, 3])
    batch = _pair_batch(anchor, positive, pids)
    weights = model.loss_weights(0) | {"prim": 1.5, "fine": 0.3}
    out = model.gan_forward(batch, model.loss_weights(0))
    out["teacher_logits"] = torch.randn(4, 6)
    losses = model.generator_losses(out, batch, weights, model.discriminator(out["fake"]))
    cfg = model.config
    expected = (5 * (losses["img1"] + losses["img2"]) + losses["code1"] + losses["code2"] + losses["id_s"]
                + 0.5 * losses["id_c"] + losses["adv"] + 1.5 * losses["prim"] + 0.3 * losses["fine"])
    assert (cfg.img_weight, cfg.id_cross_weight) == (5, 0.5)
    assert weighted_sum(losses, weights).item() == pytest.approx(expected.item(), rel=1e-6)
    # code reconstruction compares with the structure *donor*'s code; id_s sees both heads on all real images
    assert out["donors"].tolist() == _structure_donors(pids).tolist()
    assert losses["code2"].item() == pytest.approx(l1_loss(out["fake_structure"], out["s_anchor"][out["donors"]]).item())
    real = out["real_appearance"]
    ce = torch.nn.functional.cross_entropy
    both = torch.cat([pids, pids])
    assert losses["id_s"].item() == pytest.approx((ce(real["prim_logits"], both) + ce(real["fine_logits"], both)).item(), rel=1e-6)
    assert losses["fine"].item() == pytest.approx(ce(out["fake_appearance"]["fine_logits"], pids[out["donors"]]).item(), rel=1e-6)
    d = model.discriminator_losses(out, batch, weights)
    assert weighted_sum(d, weights).item() == pytest.approx((d["dis"] + cfg.r1_gamma / 2 * d["r1"]).item(), rel=1e-6)


def test_structure_donors_avoid_the_same_identity():
    assert _structure_donors(torch.tensor([0, 1, 2, 3])).tolist() == [3, 0, 1, 2]
    donors = _structure_donors(torch.tensor([5, 5, 7, 7, 9, 9]))
    assert (torch.tensor([5, 5, 7, 7, 9, 9])[donors] != torch.tensor([5, 5, 7, 7, 9, 9])).all()
    assert _structure_donors(torch.tensor([4, 4])).tolist() == [1, 0]   # no choice: a same-identity donor


def test_structure_code_sees_only_gray():
    torch.manual_seed(0)
    model = DGNet(small(), num_classes=3).eval()
    unit = torch.rand(2, 3, H, W) * 0.5 + 0.25
    chroma = torch.tensor([0.587, -0.299, 0.0]).view(1, 3, 1, 1)        # orthogonal to the luma weights
    recoloured = unit + 0.4 * chroma * torch.randn(2, 1, H, W).sign()   # other colours, the same luma
    assert ((recoloured >= 0) & (recoloured <= 1)).all()
    a, b = convert_range(unit, "unit", "imagenet"), convert_range(recoloured, "unit", "imagenet")
    with torch.no_grad():
        ca, cb = model.encode(a), model.encode(b)
    assert torch.allclose(ca.structure, cb.structure, atol=1e-4)
    assert not torch.allclose(ca.appearance, cb.appearance, atol=1e-3)   # E_a does see the colours
    assert model.structure_encoder.convs[0][1].in_channels == 1


@pytest.mark.parametrize("detach", [True, False])
def test_detach_switch_controls_image_loss_gradients_into_E_a(detach):
    torch.manual_seed(0)
    model = DGNet(small(detach_appearance_for_image_losses=detach), num_classes=4).train()
    anchor, positive = torch.randn(4, 3, H, W), torch.randn(4, 3, H, W)
    batch = _pair_batch(anchor, positive, torch.arange(4))
    out = model.forward_pairs(anchor, positive)
    image_losses = (l1_loss(out["recon_self"], out["real"]) + l1_loss(out["recon_positive"], out["real"])
                    + model.generator_losses(out, batch, {}, model.discriminator(out["fake"]))["adv"])
    image_losses.backward()
    trunk_grad = sum(p.grad.abs().sum().item() for p in model.appearance_encoder.trunk.parameters() if p.grad is not None)
    decoder_grad = sum(p.grad.abs().sum().item() for p in model.decoder.parameters() if p.grad is not None)
    assert decoder_grad > 0
    assert (trunk_grad == 0) if detach else (trunk_grad > 0)
    # the identification loss trains E_a either way
    model.zero_grad()
    out = model.forward_pairs(anchor, positive)
    model.generator_losses(out, batch, {})["id_s"].backward()
    assert sum(p.grad.abs().sum().item() for p in model.appearance_encoder.trunk.parameters() if p.grad is not None) > 0


@pytest.mark.parametrize("detached", [True, False])
def test_prim_and_fine_train_only_E_a_on_a_detached_image(detached):
    torch.manual_seed(0)
    model = DGNet(small(prim_fine_on_detached=detached), num_classes=4).train()
    batch = _pair_batch(torch.randn(4, 3, H, W), torch.randn(4, 3, H, W), torch.arange(4))
    out = model.gan_forward(batch, {"fine": 0.2})
    assert ("fake_appearance_detached" in out) == detached
    assert "fake_appearance_detached" not in model.gan_forward(batch, {"fine": 0.0})   # no extra pass during the warm-up
    out["teacher_logits"] = torch.randn(4, 4)
    losses = model.generator_losses(out, batch, {"prim": 1.0, "fine": 0.2})
    (losses["prim"] + losses["fine"]).backward()
    grad = lambda m: sum(p.grad.abs().sum().item() for p in m.parameters() if p.grad is not None)
    assert grad(model.appearance_encoder.trunk) > 0
    assert (grad(model.decoder) == 0, grad(model.structure_encoder) == 0) == (detached, detached)


@pytest.mark.parametrize("from_real", [True, False])
def test_appearance_running_statistics_from_real_images_only(from_real):
    torch.manual_seed(0)
    model = DGNet(small(appearance_stats_from_real=from_real), num_classes=4).train()
    twin = DGNet(small(), num_classes=4).train()
    twin.load_state_dict(model.state_dict())
    anchor, positive = torch.randn(4, 3, H, W), torch.randn(4, 3, H, W)
    model.forward_pairs(anchor, positive)                      # real pass, then E_a on the generated images
    twin.appearance_encoder(torch.cat([anchor, positive]))     # the real pass alone
    stats = lambda m: torch.cat([m.appearance_encoder.trunk.bn1.running_mean, m.appearance_encoder.trunk.bn1.running_var])
    assert torch.allclose(stats(model), stats(twin)) == from_real


def test_dgnet_specifics_of_the_protocol():
    "What the conformance suite (test_method_contract.py) cannot know about DG-Net's codes, decoder and feature."
    torch.manual_seed(0)
    model = DGNet(small(), num_classes=3)
    assert info_of(model).regions() == [(0, 0.25), (0.25, 0.5), (0.5, 0.75), (0.75, 1.0)]
    x = torch.randn(3, 3, H, W)
    codes = model.encode(x)
    assert model.training  # encode used eval mode and gave the mode back
    assert codes.appearance.shape == (3, 4, 256) and codes.structure.shape == (3, model.config.structure_channels, H // 4, W // 4)
    with torch.no_grad():
        # stripe k of the appearance code is row k of E_a's 4 x 1 max-pooled map
        assert torch.equal(codes.appearance, model.eval().appearance_encoder.code(x).squeeze(-1).transpose(1, 2))
        assert model.decode(swap(codes[0], codes)).shape == (3, 3, H, W)   # one appearance on every structure
        for which in ("appearance", "structure"):                          # both codes change the image
            half = model.decode(interpolate(codes[0], codes[1], 0.5, which))
            assert not torch.allclose(half, model.decode(codes[0]))
    with pytest.raises(ValueError, match=r"\(B, 4, 256\)"): model.decode(Codes(torch.zeros(1, 2, 256), codes.structure[:1]))
    f = model.embed(x)
    assert f.shape == (3, 128)
    with torch.no_grad():   # [f_prim, 0.5 f_fine] with each part unit-length: the f_fine part has norm 0.5 / sqrt(1.25)
        assert torch.allclose(f[:, 64:].norm(dim=1), torch.full((3,), 0.5 / math.sqrt(1.25)), atol=1e-5)
    grid = model.sample_images({"anchor": {"image": x}, "other": {"image": x}})
    assert grid.shape == (12, 3, H, W) and torch.equal(grid[0], x[0]) and torch.equal(grid[1], x[1])
    assert model.sample_images({"image": x, "pid": torch.arange(3)}) is None


def test_optimizers_follow_the_paper():
    model = DGNet(small(), num_classes=3)
    opts = model.configure_optimizers(model.stages()[0])
    assert sorted(opts) == ["dis", "gen"]
    gen, _ = opts["gen"]
    sgd, adam = gen.optimizers["appearance"], gen.optimizers["generator"]
    cfg = model.config
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["momentum"] == 0.9
    assert [g["lr"] for g in sgd.param_groups] == pytest.approx([cfg.lr_appearance, cfg.lr_appearance * cfg.head_lr_mult])
    assert isinstance(adam, torch.optim.Adam) and adam.defaults["betas"] == (0.0, 0.999)
    ids = lambda opt: {id(p) for g in opt.param_groups for p in g["params"]}
    assert ids(sgd) == {id(p) for p in model.appearance_encoder.parameters()}
    assert ids(adam) == {id(p) for m in (model.structure_encoder, model.decoder) for p in m.parameters()}
    assert ids(opts["dis"][0]) == {id(p) for p in model.discriminator.parameters()}


class _Pairs:
    "A Trainer loader factory of pair batches drawn from a fixed pool of images (no files): identity = 4 stripe colours."
    def __init__(self, num_ids=6, per_id=4, batches=8, batch=6):
        g = torch.Generator().manual_seed(0)
        colours = torch.rand(num_ids, 3, 4, generator=g)
        self.pids = torch.arange(num_ids).repeat_interleave(per_id)
        rows = colours[self.pids].repeat_interleave(H // 4, dim=2)[..., None].expand(-1, -1, -1, W).clone()
        body = torch.zeros(len(self.pids), 1, H, W)
        for i, left in enumerate(torch.randint(0, W // 2, (len(self.pids),), generator=g).tolist()):
            body[i, :, 4:H - 4, left:left + W // 2] = 1      # the "person": a box at a random position
        background = 0.2 + 0.6 * torch.rand(len(self.pids), 1, 1, 1, generator=g)
        self.images = convert_range(rows * body + background * (1 - body), "unit", "imagenet")
        self.num_ids, self.per_id, self.batches, self.batch = num_ids, per_id, batches, batch

    def __call__(self, stage, epoch):
        g = torch.Generator().manual_seed(1000 + epoch)
        batches = []
        for _ in range(self.batches):
            anchors = torch.randperm(len(self.pids), generator=g)[:self.batch]
            partners = self.pids[anchors] * self.per_id + (anchors % self.per_id + 1) % self.per_id  # same id, other image
            item = lambda idx: {"image": self.images[idx], "pid": self.pids[idx], "camid": torch.zeros_like(idx), "index": idx}
            batches.append({"anchor": item(anchors), "other": item(partners), "same": torch.ones(len(anchors), dtype=torch.bool)})
        return batches


def test_short_training_reduces_reconstruction_and_round_trips(tmp_path):
    config = small(epochs=1, warmup_iters=20, ramp_iters=10)
    seed_everything(0)
    trainer = Trainer(DGNet(config, num_classes=6), _Pairs(batches=40), tmp_path / "run",
                      TrainerConfig(log_every=1, seed=0))
    log = trainer.fit()
    assert len(log) == 40 and trainer.global_step == 40
    assert {"gen", "img1", "img2", "code1", "code2", "id_s", "id_c", "adv", "fine", "dis", "r1", "acc"} <= set(log.columns)
    first, last = log["img1"].iloc[:5].mean(), log["img1"].iloc[-5:].mean()
    assert last < 0.85 * first, (first, last)
    assert log["img2"].iloc[-5:].mean() < log["img2"].iloc[:5].mean()
    assert log["lambda_fine"].iloc[0] == 0 and log["lambda_fine"].iloc[-1] == pytest.approx(0.4)
    assert (log["lambda_prim"] == 0).all() and "prim" not in log.columns   # no teacher in this config
    assert (tmp_path / "run" / "samples" / "joint_e0.png").is_file()
    info = json.loads((tmp_path / "run" / "config.json").read_text())
    assert info["method"] == "dgnet" and info["method_config"]["size"] == [H, W]
    loaded = load_trained(tmp_path / "run")
    assert isinstance(loaded, DGNet) and not loaded.training and loaded.config == config
    mine = trainer.method.state_dict()
    theirs = loaded.state_dict()
    assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)
    assert int(loaded.joint_start_step) == 0
    x = _Pairs()(None, 99)[0]["anchor"]["image"]
    with torch.no_grad():
        assert torch.equal(loaded.decode(loaded.encode(x)), trainer.method.decode(trainer.method.encode(x)))
        assert torch.equal(loaded.embed(x), trainer.method.embed(x))


def test_resume_is_exact_with_the_joint_optimizer(tmp_path):
    data = _Pairs(batches=3, batch=4)
    def run(epochs, folder, resume=False):
        seed_everything(0)
        trainer = Trainer(DGNet(small(epochs=epochs, warmup_iters=2, ramp_iters=2), num_classes=6), data, folder,
                          TrainerConfig(log_every=1, seed=0))
        trainer.fit(resume=resume, accept_changes=resume)   # epochs 1 -> 2 on purpose
        return trainer
    straight = run(2, tmp_path / "a")
    run(1, tmp_path / "b")
    resumed = run(2, tmp_path / "b", resume=True)
    assert resumed.global_step == straight.global_step == 6   # weights: test_method_contract.py; here the joint optimizer
    sgd_a = straight.optimizers["gen"].optimizers["appearance"].state_dict()["state"]
    sgd_b = resumed.optimizers["gen"].optimizers["appearance"].state_dict()["state"]
    assert all(torch.equal(sgd_a[k]["momentum_buffer"], sgd_b[k]["momentum_buffer"]) for k in sgd_a)


def test_teacher_trained_on_the_fly_then_frozen(tmp_path):
    config = small(epochs=1, warmup_iters=1, ramp_iters=1, teacher_epochs=1,
                   teacher_overrides={"P": 2, "K": 2, "bottleneck_dim": 32})
    model = DGNet(config, num_classes=6)
    assert [(s.name, s.sampler) for s in model.stages()] == [("teacher", "pk"), ("joint", "pair")]
    assert model.frozen_modules(model.stages()[1]) == [model.teacher] and model.frozen_modules(model.stages()[0]) == []
    assert list(model.configure_optimizers(model.stages()[0])) == ["teacher"]
    pairs = _Pairs(batches=4, batch=4)
    def factory(stage, epoch):
        if stage.name == "joint": return pairs(stage, epoch)
        return [b["anchor"] for b in pairs(stage, epoch)]   # P x K-like image batches for the teacher
    seed_everything(0)
    trainer = Trainer(model, factory, tmp_path / "run", TrainerConfig(log_every=1, seed=0))
    before = {k: v.clone() for k, v in model.teacher.state_dict().items()}
    log = trainer.fit()
    teacher_rows, joint_rows = log[log["stage"] == "teacher"], log[log["stage"] == "joint"]
    assert len(teacher_rows) == 4 and len(joint_rows) == 4 and teacher_rows["teacher_id"].notna().all()
    assert int(model.joint_start_step) == 4                       # the schedule's clock starts with the joint stage
    assert joint_rows["lambda_prim"].tolist() == pytest.approx([0, 0, 2, 2])
    assert joint_rows["prim"].iloc[2:].notna().all() and (joint_rows["prim"].iloc[2:] >= 0).all()
    after_teacher = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)["model"]
    changed = [k for k in before if not torch.equal(before[k], model.teacher.state_dict()[k])]
    assert changed   # the teacher stage trained it ...
    assert all(torch.equal(model.teacher.state_dict()[k], after_teacher[f"teacher.{k}"]) for k in before)
    assert all(p.requires_grad for p in model.teacher.parameters())   # ... and the Trainer gave requires_grad back


def test_teacher_from_a_baseline_run(tmp_path):
    teacher_config = BaselineConfig.teacher(depth=18, pretrained=False, size=(H, W), epochs=1, warmup_epochs=1,
                                            milestones=(), bottleneck_dim=32)
    pairs = _Pairs(batches=2, batch=4)
    Trainer(Baseline(teacher_config, 6), lambda s, e: [b["anchor"] for b in pairs(s, e)], tmp_path / "teacher",
            TrainerConfig(seed=0)).fit()
    config = small(epochs=1, warmup_iters=0, ramp_iters=0, teacher_run=str(tmp_path / "teacher"))
    model = DGNet(config, num_classes=6)
    assert [s.name for s in model.stages()] == ["joint"] and model.teacher is None
    log = Trainer(model, pairs, tmp_path / "run", TrainerConfig(log_every=1, seed=0)).fit()
    assert (log["lambda_prim"] == 2).all() and log["prim"].notna().all()
    assert not any(k.startswith("teacher") or "_loaded" in k for k in model.state_dict())   # never in the checkpoint
    teacher = model.teacher_model()
    assert isinstance(teacher, Baseline) and not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    with pytest.raises(ValueError, match="knows 6 identities"):
        DGNet(config, num_classes=7).teacher_model()
    other_size = DGNet(config.replace(size=(128, 64)), num_classes=6)     # a teacher of another input size:
    fake = torch.randn(2, 3, 128, 64)                                    # its input is resized to the teacher's
    resized = torch.nn.functional.interpolate(fake, size=(H, W), mode="bilinear", align_corners=False)
    assert torch.allclose(other_size.teacher_logits(fake), teacher.logits(resized), atol=1e-5)


def test_trainer_on_synthreid_pairs(tmp_path):
    root, _ = write_synthreid(tmp_path / "synth", SynthConfig.tiny(size=(H, W)), progress=False)
    data = load_synthreid(root)
    config = small(epochs=1)
    seed_everything(0)
    trainer = Trainer(DGNet(config, data.num_train_pids), data, tmp_path / "run",
                      TrainerConfig(log_every=1, seed=0, max_steps_per_epoch=2),
                      loader_config=config.loader_config(LoaderConfig(num_workers=0)))
    log = trainer.fit()
    assert trainer.global_step == 2 and log["acc"].between(0, 1).all()
    assert all(math.isfinite(v) for v in log[["gen", "dis"]].to_numpy().ravel())
