"Disentanglement metrics: SSIM, Fréchet distance, swap ground truth, the trivial references, retention, eval_codes."
import json

import numpy as np
import pytest
import scipy.linalg
import torch
from PIL import Image
from scipy.ndimage import gaussian_filter

from reid_workbench.codes import Codes, StripeColourToy
from reid_workbench.codes_metrics import (
    diversity_plan, eval_codes, evaluate_disentanglement, fid, find_inception_weights, frechet_distance,
    frechet_distance_from_stats, from_unit, identity_retention, inception_feature_extractor, intra_identity_ssim,
    l1_error, load_swap_set, load_test_images, reconstruct, reconstruction_scores, reid_feature_extractor,
    sample_swap_pairs, ssim, ssim_diversity, swap_fidelity, swap_ground_truth, to_unit)
from reid_workbench.core import IMAGE_RANGES, Config, save_checkpoint
from reid_workbench.data.synth import SynthConfig, load_factors, rerender, synthreid_info, write_synthreid
from reid_workbench.viz import to_pil


# ---------------------------------------------------------------- image ranges, SSIM, L1

def test_to_unit_from_unit_round_trip_and_to_pil():
    x = torch.rand(2, 3, 8, 4, generator=torch.Generator().manual_seed(0))
    for norm in IMAGE_RANGES:
        assert torch.allclose(to_unit(from_unit(x, norm), norm), x, atol=1e-6)
    z = torch.zeros(3, 2, 2)   # ImageNet-normalised zero is the mean colour, as viz.to_pil shows it
    assert np.asarray(to_pil(z))[0, 0].tolist() == (to_unit(z)[:, 0, 0] * 255 + 0.5).long().tolist() == [124, 116, 104]
    assert to_unit(torch.full((3, 1, 1), 255, dtype=torch.uint8)).tolist() == [[[1.0]]] * 3
    assert to_unit(torch.full((3, 1, 1), 9.0)).max() == 1.0     # clamped
    with pytest.raises(ValueError, match="source='zscore'"): to_unit(x, "zscore")


def _ssim_scipy(x, y):
    "Wang et al.'s SSIM of two (H, W) float64 arrays via scipy's Gaussian filter (11 taps) and the valid crop."
    f = lambda z: gaussian_filter(z, 1.5, truncate=3.5)[5:-5, 5:-5]
    mx, my = f(x), f(y)
    vx, vy, cxy = f(x * x) - mx ** 2, f(y * y) - my ** 2, f(x * y) - mx * my
    return (((2 * mx * my + 1e-4) * (2 * cxy + 9e-4)) / ((mx ** 2 + my ** 2 + 1e-4) * (vx + vy + 9e-4))).mean()


def test_ssim_known_values_and_properties():
    g = torch.Generator().manual_seed(1)
    img = torch.rand(3, 3, 40, 24, generator=g)
    assert ssim(img, img).tolist() == [1.0, 1.0, 1.0]
    a, b, c1 = 0.3, 0.7, 0.01 ** 2        # constant images: only the luminance term is left
    assert ssim(torch.full((3, 16, 16), a, dtype=torch.float64), torch.full((3, 16, 16), b, dtype=torch.float64)).item() == pytest.approx(
        (2 * a * b + c1) / (a * a + b * b + c1), abs=1e-9)
    noisy = (img + 0.1 * torch.randn(img.shape, generator=g)).clamp(0, 1)
    noisier = (img + 0.3 * torch.randn(img.shape, generator=g)).clamp(0, 1)
    assert torch.allclose(ssim(img, noisy), ssim(noisy, img), atol=1e-12)
    assert (ssim(img, noisier) < ssim(img, noisy)).all() and (ssim(img, noisy) < 0.99).all()
    assert ssim(img, 1 - img).max() < 0                       # anti-correlated structure
    # an independent implementation (scipy.ndimage, as scikit-image computes gaussian_weights=True SSIM)
    want = np.mean([_ssim_scipy(img[0, c].double().numpy(), noisy[0, c].double().numpy()) for c in range(3)])
    assert ssim(img[0], noisy[0]).item() == pytest.approx(want, abs=1e-10)
    u8 = (img * 255).round().to(torch.uint8)
    assert torch.allclose(ssim(u8, u8.flip(-1)), ssim(u8.double() / 255, u8.flip(-1).double() / 255))
    with pytest.raises(ValueError, match="smaller than the 11x11 window"): ssim(torch.rand(3, 8, 30), torch.rand(3, 8, 30))
    with pytest.raises(ValueError, match="different shapes"): ssim(torch.rand(3, 16, 16), torch.rand(3, 16, 17))


def test_l1_error():
    x = torch.rand(2, 3, 4, 4)
    assert torch.allclose(l1_error(x, x + 0.25), torch.full((2,), 0.25, dtype=torch.float64))
    assert l1_error(x[0], x[0]).item() == 0.0


# ---------------------------------------------------------------- Fréchet distance, FID

def test_frechet_distance_hand_cases():
    # 1-D Gaussians: (mu1 - mu2)^2 + s1 + s2 - 2 sqrt(s1 s2), s = variances
    assert frechet_distance_from_stats(1.0, 4.0, 3.0, 9.0) == pytest.approx(4 + 4 + 9 - 12, abs=1e-12)
    assert frechet_distance_from_stats(0.0, 2.0, 0.0, 2.0) == pytest.approx(0.0, abs=1e-12)
    f1, f2 = np.array([0.0, 1, 2, 5]), np.array([1.0, 1, 4, 6, 8])
    v1, v2 = f1.var(ddof=1), f2.var(ddof=1)
    assert frechet_distance(f1, f2) == pytest.approx((f1.mean() - f2.mean()) ** 2 + v1 + v2 - 2 * np.sqrt(v1 * v2))
    # d dimensions, full rank: the textbook formula with scipy.linalg.sqrtm
    rng = np.random.default_rng(0)
    xa, xb = rng.normal(size=(300, 6)), rng.normal(size=(300, 6)) @ rng.normal(size=(6, 6)) + 0.5
    ca, cb = np.cov(xa, rowvar=False), np.cov(xb, rowvar=False)
    want = ((xa.mean(0) - xb.mean(0)) ** 2).sum() + np.trace(ca + cb - 2 * scipy.linalg.sqrtm(ca @ cb).real)
    assert frechet_distance(xa, xb) == pytest.approx(want, rel=1e-9)
    assert frechet_distance(torch.from_numpy(xa), xa) == pytest.approx(0.0, abs=1e-8)
    # fewer samples than features: the sample-space route equals the covariance route
    few, many = rng.normal(size=(12, 40)), rng.normal(size=(30, 40)) * 2 + 1
    want = frechet_distance_from_stats(few.mean(0), np.cov(few, rowvar=False), many.mean(0), np.cov(many, rowvar=False))
    assert frechet_distance(few, many) == pytest.approx(want, rel=1e-7)
    assert frechet_distance(many, few) == pytest.approx(want, rel=1e-7)
    with pytest.raises(ValueError, match="6 features, feats_fake 3"): frechet_distance(xa, xb[:, :3])
    with pytest.raises(ValueError, match="at least 2"): frechet_distance(xa[:1], xb)


class MeanColour(torch.nn.Module):
    "A toy re-ID model: mean colour of the (ImageNet-normalised) image."
    def embed(self, images): return to_unit(images).mean((2, 3))


def test_fid_with_a_pluggable_extractor():
    real = torch.rand(20, 3, 16, 8, generator=torch.Generator().manual_seed(2))
    assert fid(real, real, MeanColour()) == pytest.approx(0.0, abs=1e-9)
    redless = real.clone(); redless[:, 0] = 0
    assert fid(real, redless, MeanColour()) > 0.1
    ext = reid_feature_extractor(MeanColour(), size=(32, 16), flip=False)
    feats = ext(real)
    assert feats.shape == (20, 3) and torch.allclose(feats.norm(dim=1), torch.ones(20), atol=1e-5)
    assert fid(real, redless, ext) == fid(real, redless, lambda x: ext(x))


def test_inception_extractor_never_downloads(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(FileNotFoundError, match="no Inception-v3 weights at .*download.pytorch.org"):
        find_inception_weights()
    with pytest.raises(FileNotFoundError, match="weights file not found"): inception_feature_extractor(tmp_path / "x.pth")
    import torchvision
    net = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False)
    path = tmp_path / "hub" / "checkpoints" / "inception_v3_google-0cc3c7bd.pth"
    path.parent.mkdir(parents=True)
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in net.state_dict().items()}, path)
    assert find_inception_weights() == path
    ext = inception_feature_extractor()
    assert ext(torch.rand(1, 3, 64, 32)).shape == (1, 2048)
    torch.save({"fc.weight": torch.zeros(3)}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="not torchvision Inception-v3 weights"): inception_feature_extractor(tmp_path / "bad.pth")


# ---------------------------------------------------------------- SynthReID fixtures and fake models

@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root, _ = write_synthreid(tmp_path_factory.mktemp("codes_metrics") / "synthreid", SynthConfig.tiny(ids=16),
                              progress=False)
    return root


def _key(image) -> bytes:
    "The uint8 bytes of an ImageNet-normalised image: identifies a test image whatever float noise it picked up."
    return (to_unit(image) * 255).round().to(torch.uint8).numpy().tobytes()


class ToyModel(torch.nn.Module):
    "The test models' re-ID feature (the protocol asks for one; these metrics do not use it)."
    def embed(self, images): return images.flatten(1)


class Oracle(ToyModel):
    "Knows every test image; decode(swap) renders the ground truth (what a perfect disentangler would output)."
    def __init__(self, root, body="a"):
        super().__init__()
        info = synthreid_info(root)
        self.factors, self.body = load_factors(root), body
        self.args = tuple(info["args"]["size"]), int(info["args"]["supersample"]), int(info["args"]["jpeg_quality"])
        self.test = load_test_images(root)
        self.index = {_key(from_unit(im)): i for i, im in enumerate(self.test.images)}

    def encode(self, images):
        idx = torch.tensor([float(self.index[_key(im)]) for im in images.cpu()])
        return Codes(idx.view(-1, 1, 1), idx.view(-1, 1))

    def decode(self, codes):
        size, ss, q = self.args     # the dataset's own size: the metrics do not resize
        out = [torch.from_numpy(swap_ground_truth(self.factors, self.test.names[int(i)], self.test.names[int(j)], size,
                                                  ss, self.body, q)).permute(2, 0, 1)
               for i, j in zip(codes.appearance.flatten(), codes.structure.flatten())]
        return from_unit(torch.stack(out))


class ReturnA(ToyModel):
    "Trivial reference 'return a': the appearance code is the whole image."
    def encode(self, images):
        return Codes(images.flatten(1)[:, None], images.new_zeros(len(images), 1),
                     structure_extra={"shape": torch.tensor([list(images.shape[1:])] * len(images))})
    def decode(self, codes): return codes.appearance[:, 0].view(-1, *codes.structure_extra["shape"][0].tolist())


class ReturnB(ToyModel):
    "Trivial reference 'return b': the structure code is the whole image."
    def encode(self, images): return Codes(images.new_zeros(len(images), 1, 1), images.clone())
    def decode(self, codes): return codes.structure


class PidReID(torch.nn.Module):
    "A fake re-ID model that knows the identity of every real test image (one-hot pid), whichever way it is flipped."
    def __init__(self, root):
        super().__init__()
        test = load_test_images(root)
        self.pids = sorted(set(test.pids))
        self.table = {}
        for im, pid in zip(test.images, test.pids):
            for view in (im, im.flip(-1)): self.table[_key(from_unit(view))] = self.pids.index(pid)
    def embed(self, images):
        return torch.nn.functional.one_hot(torch.tensor([self.table[_key(im)] for im in images.cpu()]),
                                           len(self.pids)).float()


# ---------------------------------------------------------------- pairs and ground truth

def test_pairs_are_seeded_prefix_stable_and_of_different_test_identities(synth):
    factors = load_factors(synth)
    pairs = sample_swap_pairs(factors, 40, seed=3)
    assert sample_swap_pairs(factors, 40, seed=3) == pairs and sample_swap_pairs(factors, 10, seed=3) == pairs[:10]
    assert sample_swap_pairs(factors, 40, seed=4) != pairs
    row = factors.set_index("name")
    for a, b in pairs:
        assert row.loc[a, "pid"] > 0 and row.loc[b, "pid"] > 0 and row.loc[a, "pid"] != row.loc[b, "pid"]
        assert row.loc[a, "split"] in ("query", "gallery") and row.loc[b, "split"] in ("query", "gallery")
    with pytest.raises(ValueError, match="num_pairs=0"): sample_swap_pairs(factors, 0)


def test_ground_truth_definition(synth):
    factors = load_factors(synth)
    a, b = sample_swap_pairs(factors, 1, seed=0)[0]
    assert np.array_equal(swap_ground_truth(factors, a, a, jpeg_quality=None), rerender(synth, a, factors))
    with Image.open(next(synth.glob(f"*/{a}"))) as im:   # with JPEG: exactly the dataset's file of a
        assert np.array_equal(swap_ground_truth(factors, a, a), np.asarray(im.convert("RGB")))
    gt_a, gt_b = (swap_ground_truth(factors, a, b, body=body, jpeg_quality=None) for body in ("a", "b"))
    image_b = rerender(synth, b, factors)
    assert np.array_equal(gt_a[:5, :5], image_b[:5, :5])            # b's background ...
    assert not np.array_equal(gt_a, image_b)                          # ... a's person
    row = factors.set_index("name")
    same_body = (row.loc[a, "id_height"], row.loc[a, "id_width"]) == (row.loc[b, "id_height"], row.loc[b, "id_width"])
    assert np.array_equal(gt_a, gt_b) == same_body
    with pytest.raises(ValueError, match="body='c'"): swap_ground_truth(factors, a, b, body="c")
    with pytest.raises(KeyError, match="nope.jpg"): swap_ground_truth(factors, "nope.jpg", b)


def test_swap_set_and_errors(synth, tmp_path):
    s = load_swap_set(synth, 5, seed=2, size=(64, 32))
    assert len(s) == 5 and s.a.shape == s.b.shape == s.gt.shape == (5, 3, 64, 32) and s.gt.dtype == torch.uint8
    assert all(pa != pb for pa, pb in zip(s.pids_a, s.pids_b))
    with pytest.raises(ValueError, match="need a SynthReID dataset"): load_swap_set(tmp_path)


# ---------------------------------------------------------------- scores on oracle / trivial models

def test_oracle_scores_perfectly_and_beats_both_references(synth):
    res = evaluate_disentanglement(Oracle(synth), synth, num_pairs=8, diversity_ids=3)
    assert res["swap_l1"] == pytest.approx(0.0, abs=1e-6) and res["swap_ssim"] == pytest.approx(1.0, abs=1e-6)
    assert res["swap_beats_both"] and res["swap_beats_both_l1"] and res["swap_beats_both_ssim"]
    assert res["swap_l1_ref_a"] > 0.02 and res["swap_l1_ref_b"] > 0.005 and res["swap_ssim_ref_b"] < 0.999
    assert res["recon_l1"] == pytest.approx(0.0, abs=1e-6)   # GT of (a, a) is a's own file
    assert 0 < res["intra_ssim_generated"] < 1 and 0 < res["intra_ssim_real"] < 1
    assert res["retention_appearance"] is None and res["fid"] is None and len(res["notes"]) == 2
    json.dumps(res)
    assert res["gt_body"] == "a" and res["size"] == [128, 64] and res["num_pairs"] == 8
    # the oracle for b's body shape is perfect only against the body='b' truth
    res_b = evaluate_disentanglement(Oracle(synth, body="b"), synth, num_pairs=8, diversity_ids=2, body="b")
    assert res_b["swap_l1"] == pytest.approx(0.0, abs=1e-6) and res_b["gt_body"] == "b"


def test_return_a_and_return_b_equal_their_references(synth):
    reid = PidReID(synth)
    ra = evaluate_disentanglement(ReturnA(), synth, reid_model=reid, num_pairs=8, diversity_ids=4)
    assert (ra["swap_l1"], ra["swap_ssim"]) == (ra["swap_l1_ref_a"], ra["swap_ssim_ref_a"])
    assert not ra["swap_beats_both"]
    assert (ra["recon_l1"], ra["recon_ssim"], ra["diversity_generated"]) == (0.0, 1.0, 0.0)
    # the fake re-ID model knows every real identity: a copy of a is a's identity, never b's
    assert (ra["retention_appearance"], ra["retention_structure"]) == (1.0, 0.0)
    assert (ra["retention_appearance_ref_a"], ra["retention_structure_ref_b"]) == (1.0, 1.0)
    assert ra["retention_gallery_size"] == ra["fid_num_real"] - 2 and ra["notes"] == []
    rb = evaluate_disentanglement(ReturnB(), synth, reid_model=reid, num_pairs=8, diversity_ids=4)
    assert (rb["swap_l1"], rb["swap_ssim"]) == (rb["swap_l1_ref_b"], rb["swap_ssim_ref_b"])
    assert (rb["retention_appearance"], rb["retention_structure"]) == (0.0, 1.0)
    assert rb["fid"] == rb["fid_ref_real"]                       # its swaps are the real images b
    assert rb["swap_l1_ref_a"] == ra["swap_l1_ref_a"]           # same seed, same pairs
    assert rb["diversity_generated"] > 0.3


def test_identity_retention_by_hand():
    gal, gal_pids = torch.tensor([[0.0, 0], [0, 1], [1, 0], [1, 1]]), [1, 1, 2, 2]
    q = torch.tensor([[0.0, 0.1], [0.9, 0.1], [1.0, 0.9]])
    assert identity_retention(q, gal, gal_pids, [1, 1, 2], [2, 2, 1]) == dict(appearance=2 / 3, structure=1 / 3)
    assert identity_retention(q, gal, gal_pids, [1, 1, 2], [2, 2, 1], exclude=[[0, 1], [], [2, 3]]) == \
        dict(appearance=0.0, structure=1.0)
    with pytest.raises(ValueError, match="no gallery image left"):
        identity_retention(q, gal, gal_pids, [1, 1, 2], [2, 2, 1], exclude=[[0, 1, 2, 3], [], []])


def test_reconstruction_of_stripe_colour_toy():
    toy, g = StripeColourToy(), torch.Generator().manual_seed(4)
    grey = torch.rand(4, 1, 32, 16, generator=g).expand(4, 3, 32, 16)
    stripes = torch.rand(4, 3, 4, 1, 1, generator=g).expand(4, 3, 4, 8, 16).flatten(2, 3)
    exact = (0.5 * grey + 0.5 * stripes)          # grey detail + one colour per stripe: what the toy represents
    scores = reconstruction_scores(reconstruct(toy, exact, "unit"), exact)
    assert scores["recon_l1"] == pytest.approx(0.0, abs=1e-6) and scores["recon_ssim"] == pytest.approx(1.0, abs=1e-6)
    coloured = torch.rand(4, 3, 32, 16, generator=g)     # colour texture is averaged over channels: lost
    assert reconstruction_scores(reconstruct(toy, coloured, "unit"), coloured)["recon_l1"] > 0.1


def test_swap_fidelity_and_diversity_units():
    g = torch.Generator().manual_seed(5)
    a, b, gt = (torch.rand(3, 3, 16, 16, generator=g) for _ in range(3))
    perfect = swap_fidelity(gt, gt, a, b)
    assert (perfect["swap_l1"], perfect["swap_ssim"], perfect["swap_beats_both"]) == (0.0, 1.0, True)
    half = swap_fidelity(a, gt, a, b)
    assert (half["swap_l1"], half["swap_beats_both"]) == (half["swap_l1_ref_a"], False)
    same = [torch.rand(1, 3, 16, 16, generator=g).expand(4, 3, 16, 16)] * 3
    assert ssim_diversity(same) == pytest.approx(0.0, abs=1e-12)
    grp = torch.rand(3, 3, 16, 16, generator=g)
    assert intra_identity_ssim([grp]) == pytest.approx(ssim(grp[[0, 0, 1]], grp[[1, 2, 2]]).mean().item())
    with pytest.raises(ValueError, match="at least 2"): intra_identity_ssim([grp[:1]])
    plan = diversity_plan([1, 1, 1, 2, 2, 3, 4, 4], num_ids=2, k=2, seed=0)
    assert len(plan) == 2 and plan == diversity_plan([1, 1, 1, 2, 2, 3, 4, 4], num_ids=2, k=2, seed=0)
    pids = [1, 1, 1, 2, 2, 3, 4, 4]
    for p in plan:
        assert p["pid"] != 3 and all(pids[i] == p["pid"] for i in p["real"])
        assert all(pids[i] != p["pid"] for i in p["structure"]) and len(p["real"]) == len(p["structure"]) == 2


def test_model_errors(synth):
    class NoDecode:
        def encode(self, images): return Codes(images.new_zeros(len(images), 1, 1), images)
    with pytest.raises(TypeError, match="has no decode"): evaluate_disentanglement(NoDecode(), synth, num_pairs=2)
    class Shrinks(ReturnB):
        def decode(self, codes): return codes.structure[..., ::2, ::2]
    with pytest.raises(ValueError, match=r"Shrinks.decode returned \(2, 3, 64, 32\)"):
        evaluate_disentanglement(Shrinks(), synth, num_pairs=2)


# ---------------------------------------------------------------- eval_codes on run folders

def _write_run(run, method, config, num_classes, state):
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps(dict(method=method, method_config=config.to_dict(),
                                                     num_classes=num_classes)))
    save_checkpoint(dict(model=state, method=method), run / "checkpoints" / "last.pt")


def test_eval_codes_writes_json_and_grid(synth, tmp_path):
    from dataclasses import dataclass
    from reid_workbench.methods.baseline import Baseline, BaselineConfig
    from reid_workbench.registry import MethodInfo, register_method
    from reid_workbench.training import Method

    @dataclass
    class ToyConfig(Config):
        size: tuple[int, int] = (128, 64)

    class ToyCodes(Method, StripeColourToy):
        def embed(self, images): return StripeColourToy.embed(self, images)

    register_method(MethodInfo("toy_codes_test", ToyConfig, ToyCodes, structure_kind="tensor", num_parts=4, presets=()))
    _write_run(tmp_path / "toy", "toy_codes_test", ToyConfig(), 8, {})
    torch.manual_seed(0)
    cfg = BaselineConfig.tiny(size=(64, 32))      # a re-ID input size other than the disentangler's: resized
    _write_run(tmp_path / "reid", "baseline", cfg, 8, Baseline(cfg, 8).state_dict())

    out = eval_codes(tmp_path / "toy", synth, reid_run=tmp_path / "reid", num_pairs=6, device="cpu", diversity_ids=3)
    saved = json.loads((tmp_path / "toy" / "disentanglement.json").read_text())
    assert saved == json.loads(json.dumps(out)) and saved["run"] == str(tmp_path / "toy")
    assert saved["reid_run"] == str(tmp_path / "reid") and "baseline" in saved["reid_model"].lower()
    assert 0 <= saved["retention_appearance"] <= 1 and saved["fid"] >= 0 and saved["notes"] == []
    assert saved["num_pairs"] == 6 and saved["method"] == "toy_codes_test" and saved["diversity_ids"] == 3
    with Image.open(tmp_path / "toy" / "swap_grid.png") as grid:
        assert grid.height == 14 + 6 * 130 + 2                       # 6 rows x 5 columns of 128x64, labelled
        assert 5 * 66 + 2 < grid.width < 80 + 5 * 66 + 2             # the row labels' width at the left
    alone = eval_codes(tmp_path / "toy", synth, num_pairs=4, device="cpu", diversity_ids=2)
    assert alone["reid_run"] is None and alone["retention_structure"] is None and alone["fid"] is None
    assert any("re-ID model" in n for n in alone["notes"])


def test_ssim_agrees_with_scikit_image():
    "The same SSIM as scikit-image's structural_similarity: Gaussian window sigma 1.5, data range 1, population covariance."
    structural_similarity = pytest.importorskip("skimage.metrics").structural_similarity
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 3, 64, 32, generator=g, dtype=torch.float64)
    y = (x + 0.2 * torch.randn(3, 3, 64, 32, generator=g, dtype=torch.float64)).clamp(0, 1)
    ours = ssim(x, y)
    theirs = [structural_similarity(a.permute(1, 2, 0).numpy(), b.permute(1, 2, 0).numpy(), gaussian_weights=True,
                                    sigma=1.5, use_sample_covariance=False, data_range=1.0, channel_axis=2)
              for a, b in zip(x, y)]
    assert torch.allclose(ours, torch.tensor(theirs, dtype=torch.float64), atol=1e-6), (ours, theirs)


def test_region_scores_and_appearance_effect(synth):
    from reid_workbench.codes_metrics import appearance_effect, load_swap_set, mask_ssim, region_l1, region_ssim
    pairs = load_swap_set(synth, 6, seed=0)
    person = pairs.mask
    assert person.any() and (~person).any()
    gt, a, b = (to_unit(t, "unit") for t in (pairs.gt, pairs.a, pairs.b))
    # region L1 is the mean over the region's pixels only; mask-SSIM ignores what lies outside the region
    noisy = gt.clone(); noisy[(~person).expand_as(gt)] = 0.0
    assert region_l1(noisy, gt, person).max() == 0 and torch.allclose(mask_ssim(noisy, gt, person), torch.ones(6, dtype=torch.float64))
    everywhere = torch.ones_like(person)
    assert torch.allclose(region_ssim(a, gt, everywhere), ssim(a, gt))          # the whole image: plain SSIM
    assert (region_ssim(noisy, gt, ~person) < ssim(noisy, gt)).all()          # the blacked-out background is seen
    fid = swap_fidelity(pairs.b, pairs.gt, pairs.a, pairs.b, person)
    assert fid["swap_l1_background"] == fid["swap_l1_background_ref_b"] < fid["swap_l1_person_ref_b"]
    effect = appearance_effect(pairs.gt, pairs.b, pairs.gt, pairs.b, person)     # a perfect swap changes what the truth does
    assert effect["appearance_effect"] == effect["appearance_effect_truth"] > 0.05
