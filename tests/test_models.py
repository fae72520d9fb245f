"Backbones (ResNet trunks, weights loading) and re-ID heads."
import urllib.error

import pytest
import torch

import reid_workbench  # noqa: F401  (registers torchvision fallbacks first)
import torchvision
from reid_workbench.models.backbones import (ResNetTrunk, WeightsError, imagenet_weights_file, load_trunk_weights,
                                             no_pretrained_weights, read_weights_file, resnet_stage_channels)
from reid_workbench.models.heads import BatchNormNoBias, BNNeckHead, GlobalPool, IDEHead


def _out_shape(trunk, h, w, device="cpu"):
    with torch.no_grad(): return tuple(trunk.eval()(torch.randn(1, 3, h, w, device=device)).shape)


@pytest.mark.parametrize("depth,channels", [(18, 512), (34, 512), (50, 2048)])
def test_trunk_shapes_and_last_stride(depth, channels):
    torch.manual_seed(0)
    trunk = ResNetTrunk(depth, last_stride=1)
    assert (trunk.out_channels, trunk.stride) == (channels, 16)
    y = trunk.eval()(torch.randn(2, 3, 128, 64))
    assert tuple(y.shape) == (2, channels, 8, 4) and torch.isfinite(y).all() and y.min() >= 0  # ends in a ReLU
    with torch.device("meta"):  # the other sizes: shapes only, without computing (or initialising) anything
        s1, s2 = ResNetTrunk(depth, last_stride=1), ResNetTrunk(depth, last_stride=2)
        reference = torchvision.models.get_model(f"resnet{depth}")
    assert s2.stride == 32
    assert _out_shape(s2, 128, 64, "meta") == (1, channels, 4, 2)
    assert _out_shape(s1, 256, 128, "meta") == (1, channels, 16, 8)  # last stride 1 doubles the final map
    assert _out_shape(s2, 256, 128, "meta") == (1, channels, 8, 4)
    # torchvision's parameter names without the classifier
    assert list(trunk.state_dict()) == [k for k in reference.state_dict() if not k.startswith("fc.")]


def test_last_stride_changes_only_the_first_block_of_layer4():
    trunk = ResNetTrunk(50, last_stride=1)
    strides = {n: m.stride for n, m in trunk.named_modules() if isinstance(m, torch.nn.Conv2d) and m.stride != (1, 1)}
    assert strides == {"conv1": (2, 2), "layer2.0.conv2": (2, 2), "layer2.0.downsample.0": (2, 2),
                       "layer3.0.conv2": (2, 2), "layer3.0.downsample.0": (2, 2)}
    basic = ResNetTrunk(18, last_stride=1)
    assert basic.layer4[0].conv1.stride == (1, 1) and basic.layer4[0].downsample[0].stride == (1, 1)


def test_cut_at_layer3_and_conv4_1():
    t = ResNetTrunk(50, cut_at="layer3")
    assert (t.out_channels, t.stride, t.stages[-1], hasattr(t, "layer4")) == (1024, 16, "layer3", False)
    assert _out_shape(t, 256, 128) == (1, 1024, 16, 8)
    c = ResNetTrunk(50, cut_at="layer3.0")
    assert len(c.layer3) == 1 and _out_shape(c, 256, 128) == (1, 1024, 16, 8)
    assert tuple(c.stem(torch.randn(1, 3, 64, 32)).shape) == (1, 64, 16, 8)
    assert c.stem[0] is c.conv1  # the stem is the trunk's own modules, not copies
    assert _out_shape(ResNetTrunk(18, cut_at="stem"), 128, 64) == (1, 64, 32, 16)
    with pytest.raises(ValueError, match="cut_at='stem.0'"): ResNetTrunk(18, cut_at="stem.0")
    with pytest.raises(ValueError, match="has 6 blocks"): ResNetTrunk(50, cut_at="layer3.6")
    with pytest.raises(ValueError, match="last_stride=3"): ResNetTrunk(18, last_stride=3)
    with pytest.raises(ValueError, match="use one of \\[18, 34, 50\\]"): ResNetTrunk(101)
    assert resnet_stage_channels(34)["layer3"] == 256


@pytest.fixture
def resnet18_file(tmp_path):
    torch.manual_seed(0)
    net = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18-random.pth"
    torch.save(net.state_dict(), path)
    return net, path


def test_local_weights_load(resnet18_file, tmp_path):
    net, path = resnet18_file
    trunk = ResNetTrunk(18, pretrained=str(path))
    assert trunk.weights_report.source == str(path) and trunk.weights_report.ignored == ["fc.bias", "fc.weight"]
    assert trunk.weights_report.loaded == len(trunk.state_dict())
    ref = net.state_dict()
    assert all(torch.equal(v, ref[k]) for k, v in trunk.state_dict().items())
    # the loaded trunk computes what torchvision's network computes before its pooling
    net.eval(); trunk.eval()
    x = torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        expected = net.layer4(net.layer3(net.layer2(net.layer1(net.maxpool(net.relu(net.bn1(net.conv1(x))))))))
    cut = ResNetTrunk(18, last_stride=2, pretrained=path).eval()
    with torch.no_grad(): assert torch.allclose(cut(x), expected, atol=1e-6)
    # wrapped ({"state_dict": ...}) with DataParallel's prefix, into a cut trunk: extra stages are ignored
    wrapped = tmp_path / "wrapped.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in ref.items()}, "epoch": 3}, wrapped)
    part = ResNetTrunk(18, cut_at="layer2", pretrained=wrapped)
    assert torch.equal(part.layer2[1].conv2.weight, ref["layer2.1.conv2.weight"])
    assert "layer3.0.conv1.weight" in part.weights_report.ignored


def test_weights_errors(resnet18_file, tmp_path):
    net, path = resnet18_file
    with pytest.raises(WeightsError, match="missing.pth: weights file not found"):
        ResNetTrunk(18, pretrained=tmp_path / "missing.pth")
    with pytest.raises(WeightsError, match="looks like resnet18.*missing keys: layer1.2"):
        ResNetTrunk(34, pretrained=path)
    with pytest.raises(WeightsError, match="looks like resnet18.*wrong shape"):
        ResNetTrunk(50, pretrained=path)
    renamed = tmp_path / "renamed.pth"
    torch.save({k.replace("conv1.", "conv_1."): v for k, v in net.state_dict().items()}, renamed)
    with pytest.raises(WeightsError, match="unexpected keys: conv_1.weight"):
        ResNetTrunk(18, pretrained=renamed)
    pickled = tmp_path / "pickled.pth"
    torch.save(net, pickled)  # a whole pickled model: refused by weights_only=True
    with pytest.raises(WeightsError, match="refused to load"):
        read_weights_file(pickled)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a torch file at all" * 10)
    with pytest.raises(WeightsError, match="junk.pth: not a readable torch weights file"):
        read_weights_file(junk)
    with pytest.raises(WeightsError, match="expected a state_dict"):
        load_trunk_weights(ResNetTrunk(18), {"epoch": 3}, "dict")
    with pytest.raises(ValueError, match="pretrained=3"):
        ResNetTrunk(18, pretrained=3)


def test_imagenet_offline_and_cached(monkeypatch, tmp_path, resnet18_file):
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    def offline(*args, **kwargs): raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    cached = imagenet_weights_file(18)
    assert cached == tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    with pytest.raises(WeightsError, match=r"not in the torch hub cache .*resnet18-f37072fd.pth.*offline.*pretrained=False"):
        ResNetTrunk(18, pretrained="imagenet")
    # a file in the hub cache is used without any download
    net, path = resnet18_file
    cached.parent.mkdir(parents=True)
    cached.write_bytes(path.read_bytes())
    trunk = ResNetTrunk(18, pretrained=True)
    assert trunk.weights_report.source == str(cached)
    assert torch.equal(trunk.conv1.weight, net.conv1.weight)
    cached.unlink()
    with no_pretrained_weights():  # models whose weights come from a checkpoint load nothing, even offline
        assert ResNetTrunk(18, pretrained="imagenet").weights_report is None
    with pytest.raises(WeightsError, match="offline"): ResNetTrunk(18, pretrained="imagenet")  # the context ended


def test_global_pool_and_ide_head():
    x = torch.randn(4, 8, 3, 2)
    assert torch.allclose(GlobalPool("avg")(x), x.mean((2, 3))) and torch.equal(GlobalPool("max")(x), x.amax((2, 3)))
    with pytest.raises(ValueError, match="got shape \\(4, 8, 3\\)"): GlobalPool()(x[..., 0])
    torch.manual_seed(0)
    head = IDEHead(64, num_classes=7, pool="max", bottleneck_dim=32, dropout=0.5)
    out = head.eval()(torch.randn(5, 64, 4, 2))
    assert {k: tuple(v.shape) for k, v in out.items()} == {"feature": (5, 32), "triplet_feature": (5, 64), "logits": (5, 7)}
    assert torch.allclose(out["logits"], head.classifier(out["feature"]))  # no dropout in eval mode
    plain = IDEHead(64, num_classes=7, bottleneck_dim=None, dropout=0.0)
    out = plain(torch.randn(5, 64))
    assert torch.equal(out["feature"], out["triplet_feature"]) and out["logits"].shape == (5, 7)
    with pytest.raises(ValueError, match="num_classes=0"): IDEHead(64, 0)


def test_bnneck_head_bias_frozen_and_init():
    torch.manual_seed(0)
    head = BNNeckHead(256, num_classes=100)
    assert isinstance(head.bn, BatchNormNoBias) and head.classifier.bias is None
    assert [n for n, _ in head.named_parameters()] == ["bn.weight", "classifier.weight"]
    assert torch.equal(head.bn.weight, torch.ones(256)) and abs(head.classifier.weight.std().item() - 0.001) < 1e-4
    opt = torch.optim.SGD(head.parameters(), lr=1.0, weight_decay=0.1)
    head.requires_grad_(True)  # even a blanket unfreeze cannot make the shift trainable
    assert not head.bn.bias.requires_grad
    x, y = torch.randn(8, 256, 4, 2) * 2 + 3, torch.arange(8) % 4
    for _ in range(3):
        out = head(x)
        loss = torch.nn.functional.cross_entropy(out["logits"], y) + out["triplet_feature"].pow(2).mean()
        opt.zero_grad(); loss.backward(); opt.step()
    assert torch.equal(head.bn.bias, torch.zeros(256)) and not torch.equal(head.bn.weight, torch.ones(256))
    out = head.eval()(x)
    assert torch.allclose(out["triplet_feature"], x.mean((2, 3)))
    expected = (out["triplet_feature"] - head.bn.running_mean) / (head.bn.running_var + head.bn.eps).sqrt() * head.bn.weight
    assert torch.allclose(out["feature"], expected, atol=1e-5)
    # saves and loads (the bias travels as a buffer)
    other = BNNeckHead(256, num_classes=100)
    other.load_state_dict(head.state_dict())
    assert torch.allclose(other.eval()(x)["logits"], out["logits"])
