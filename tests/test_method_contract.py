"""The conformance suite: every registered method (and the two toys of `toy_methods`, one with a keypoint structure)
keeps the contract the rest of the library relies on — a complete MethodInfo, the Disentangler protocol with its
generic operations, the test feature, sample images, exact resume after a crash, and the load round trip."""
import pytest
import torch

import toy_methods  # noqa: F401  (registers toy_stripes and toy_keypoints)
from reid_workbench.codes import Codes, interpolate, is_disentangler, shuffle_parts, swap
from reid_workbench.codes_metrics import encode_images, evaluate_disentanglement
from reid_workbench.core import IMAGE_RANGES, convert_range, load_checkpoint, seed_everything
from reid_workbench.data.datasets import load_dataset
from reid_workbench.data.synth import SynthConfig, write_synthreid
from reid_workbench.models.backbones import no_pretrained_weights
from reid_workbench.registry import available_methods, info_of, load_trained, method_config, method_info
from reid_workbench.training import Trainer, TrainerConfig

LIBRARY = [n for n in available_methods() if method_info(n).model.__module__.startswith("reid_workbench.methods.")]
METHODS = LIBRARY + ["toy_stripes", "toy_keypoints"]
DISENTANGLERS = [n for n in METHODS if method_info(n).disentangler]


def build(name: str, num_classes: int = 6):
    "The method's model from its tiny preset with its smoke overrides (random weights, no downloads)."
    info = method_info(name)
    with no_pretrained_weights():
        return info.model(method_config(name, "tiny", **info.smoke), num_classes)


def inputs(model, batch: int = 3, seed: int = 0) -> dict:
    "encode's arguments for a batch of random images in the model's range (and in-frame keypoints if it needs them)."
    info = info_of(model)
    h, w = info.input_size(model.config)
    gen = torch.Generator().manual_seed(seed)
    out = {"images": convert_range(torch.rand(batch, 3, h, w, generator=gen), "unit", info.normalization)}
    if info.structure_kind == "keypoints":
        xy = torch.rand(batch, 18, 2, generator=gen) * torch.tensor([w - 1.0, h - 1.0])
        out["keypoints"] = torch.cat([xy, (torch.rand(batch, 18, 1, generator=gen) > 0.2).float()], -1)
    return out


def test_the_library_methods_are_discovered():
    assert {"baseline", "dgnet", "isgan"} <= set(LIBRARY)
    assert "toy_keypoints" in available_methods(disentangler=True)


@pytest.mark.parametrize("name", METHODS)
def test_method_info_is_complete(name):
    info = method_info(name)
    assert info.model.info is info and info.model.name == name and "tiny" in info.presets
    for preset in info.presets:
        h, w = info.input_size(method_config(name, preset))
        assert h > 0 and w > 0
    assert is_disentangler(info.model) == info.disentangler
    assert len(info.regions()) == info.num_parts and all(0 <= t < b <= 1 for t, b in info.regions())
    assert info.normalization in IMAGE_RANGES and info.swap_body in ("a", "b")
    assert all(other in available_methods() for other in info.references.values())


@pytest.mark.parametrize("name", METHODS)
def test_embed_gives_one_unit_feature_per_image(name):
    seed_everything(0)
    model = build(name).eval()
    with torch.no_grad(): f = model.embed(inputs(model)["images"])
    assert f.dim() == 2 and len(f) == 3 and torch.isfinite(f).all()
    assert torch.allclose(f.norm(dim=1), torch.ones(3), atol=1e-4)


@pytest.mark.parametrize("name", DISENTANGLERS)
def test_protocol_and_generic_operations(name):
    seed_everything(0)
    model, info = build(name).eval(), method_info(name)
    args = inputs(model)
    with torch.no_grad():
        codes = model.encode(*args.values())
        ca, cb = codes[0], codes[1]
        decode = model.decode
        assert isinstance(codes, Codes) and codes.structure_kind == info.structure_kind
        assert codes.appearance.shape[:2] == (3, info.num_parts)
        out = decode(codes)
        assert out.shape == args["images"].shape and torch.isfinite(out).all()
        assert torch.equal(out, decode(codes))                                   # decoding is deterministic
        for which in ("appearance", "structure"):
            assert torch.equal(decode(interpolate(ca, cb, 0.0, which)), decode(ca))
        assert torch.equal(interpolate(ca, cb, 1.0, "appearance").appearance, cb.appearance)
        assert torch.equal(interpolate(ca, cb, 1.0, "structure").structure, cb.structure)
        swapped = swap(ca, cb)
        assert torch.equal(swapped.appearance, ca.appearance) and torch.equal(swapped.structure, cb.structure)
        assert torch.equal(decode(swap(ca, ca)), decode(ca))
        everything = shuffle_parts(ca, cb, list(range(info.num_parts)))
        assert torch.equal(everything.appearance, cb.appearance) and torch.equal(everything.structure, ca.structure)


@pytest.mark.parametrize("name", DISENTANGLERS)
def test_encode_refuses_another_input_size(name):
    "A decoder decodes to the size it was built for: images of another size are refused, not silently resized."
    model = build(name).eval()
    args = inputs(model, batch=2)
    h, w = args["images"].shape[-2:]
    args["images"] = args["images"][..., : h - 4, : w - 2]
    with pytest.raises(ValueError, match=f"takes {h}x{w} images .*got {h - 4}x{w - 2}"):
        with torch.no_grad(): model.encode(*args.values())


def test_a_keypoint_method_says_it_needs_keypoints():
    model = build("toy_keypoints")
    with pytest.raises(ValueError, match="needs the images' keypoints"):
        model.encode(inputs(model)["images"])


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root, _ = write_synthreid(tmp_path_factory.mktemp("contract") / "synth", SynthConfig.tiny(ids=8), progress=False)
    return load_dataset(root)


def fit(name, dataset, folder, crash_at=None, resume=False):
    "Train the smoke configuration two steps per epoch; `crash_at`: raise in that training step (0-based)."
    seed_everything(0)
    model, info = build(name, dataset.num_train_pids), method_info(name)
    if crash_at is not None:
        step, calls = model.training_step, []
        def crashing(batch, ctx):
            if len(calls) == crash_at: raise RuntimeError("simulated crash")
            calls.append(1)
            return step(batch, ctx)
        model.training_step = crashing
    trainer = Trainer(model, dataset, folder, TrainerConfig(device="cpu", progress=False, log_every=1, seed=0,
                                                            max_steps_per_epoch=2),
                      loader_config=info.loader_config(model.config, seed=0), data_info={"root": str(dataset.root)})
    trainer.fit(resume=resume)
    return trainer


@pytest.mark.parametrize("name", METHODS)
def test_crashed_run_resumes_exactly_and_loads_back(name, synth, tmp_path):
    straight = fit(name, synth, tmp_path / "straight")
    assert straight.global_step >= 2, "the smoke run must have two epochs to test resume"
    with pytest.raises(RuntimeError, match="simulated crash"):
        fit(name, synth, tmp_path / "crashed", crash_at=straight.global_step - 1)   # in the last epoch
    assert 0 < load_checkpoint(tmp_path / "crashed" / "checkpoints" / "last.pt")["global_step"] < straight.global_step
    resumed = fit(name, synth, tmp_path / "crashed", resume="auto")
    assert "resume from" in (tmp_path / "crashed" / "train.log").read_text()
    a, b = straight.method.state_dict(), resumed.method.state_dict()
    assert resumed.global_step == straight.global_step and all(torch.equal(a[k], b[k]) for k in a)
    loaded = load_trained(tmp_path / "straight")
    assert loaded.training is False and all(torch.equal(a[k].cpu(), v) for k, v in loaded.state_dict().items())
    images = inputs(loaded)["images"]
    with torch.no_grad(): assert torch.equal(loaded.embed(images), straight.method.eval().embed(images))
    samples = straight.method.sample_images(next(iter(straight._loader(straight.stages[-1], 0))))
    assert samples is None or (samples.dim() == 4 and samples.shape[1] == 3)


@pytest.mark.parametrize("name", DISENTANGLERS)
def test_disentanglement_metrics_hand_pose_methods_the_datasets_keypoints(name, synth):
    "evaluate_disentanglement runs every Disentangler (one whose encode takes keypoints gets SynthReID's: encode_images)."
    model = build(name, synth.num_train_pids)
    out = evaluate_disentanglement(model, synth.root, num_pairs=4, diversity_ids=2, diversity_k=2)
    assert out["num_pairs"] == 4 and 0 <= out["recon_ssim"] <= 1 and out["swap_l1"] >= 0
    if method_info(name).structure_kind == "keypoints":
        with pytest.raises(ValueError, match="needs the images' keypoints"):
            encode_images(model, inputs(model)["images"])
