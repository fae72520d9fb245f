"GAN building blocks: gray input (and core's image ranges), conv / AdaIN blocks, the AdaIN decoder, PatchGAN D, GAN losses, R1."
import math

import pytest
import torch
import torch.nn.functional as F

from reid_workbench.core import IMAGENET_MEAN, IMAGENET_STD, convert_range
from reid_workbench.models.gan import (AdaIN2d, AdaINDecoder, AdaINResBlock, ConvBlock, MLP, MultiScaleDiscriminator,
                                       PatchDiscriminator, ResBlock, gan_d_loss, gan_g_loss, norm_layer, r1_penalty,
                                       rgb_to_gray)


def test_convert_range_round_trips_and_known_values():
    torch.manual_seed(0)
    unit = torch.rand(2, 3, 4, 4)
    for source in ("imagenet", "unit", "tanh"):
        for target in ("imagenet", "unit", "tanh"):
            there = convert_range(convert_range(unit, "unit", source), source, target)
            assert torch.allclose(convert_range(there, target, "unit"), unit, atol=1e-6)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1).expand(1, 3, 2, 2)
    assert torch.allclose(convert_range(mean, "unit", "imagenet"), torch.zeros(1, 3, 2, 2), atol=1e-6)
    assert torch.allclose(convert_range(torch.zeros(1, 3, 1, 1), "unit", "tanh"), -torch.ones(1, 3, 1, 1))
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    assert torch.allclose(convert_range(torch.ones(1, 3, 1, 1), "imagenet", "unit"), mean[..., :1, :1] + std)
    with pytest.raises(ValueError, match="source='rgb'"): convert_range(unit, "rgb", "unit")
    with pytest.raises(ValueError, match=r"\(\.\.\., 3, H, W\)"): convert_range(torch.rand(2, 1, 4, 4), "unit", "tanh")


def test_rgb_to_gray_is_bt601_luma_in_tanh_range():
    rgb = torch.tensor([[1.0, 0, 0], [0, 1, 0], [0, 0, 1], [0.5, 0.5, 0.5]]).view(4, 3, 1, 1)
    gray = rgb_to_gray(rgb, "unit")
    assert gray.shape == (4, 1, 1, 1)
    assert torch.allclose(gray.flatten(), torch.tensor([0.299, 0.587, 0.114, 0.5]) * 2 - 1, atol=1e-6)
    # the same image in another range gives the same gray
    assert torch.allclose(rgb_to_gray(convert_range(rgb, "unit", "imagenet")), gray, atol=1e-5)
    assert torch.allclose(rgb_to_gray(rgb * 2 - 1, "tanh"), gray, atol=1e-6)


def test_conv_and_residual_blocks():
    x = torch.randn(2, 8, 16, 8)
    assert ConvBlock(8, 4, 4, stride=2, padding=1)(x).shape == (2, 4, 8, 4)
    assert ConvBlock(8, 16, 7, norm="in")(x).shape == (2, 16, 16, 8)
    assert ResBlock(8)(x).shape == x.shape
    assert isinstance(norm_layer("ln", 8), torch.nn.GroupNorm) and norm_layer("ln", 8).num_groups == 1
    with pytest.raises(ValueError, match="norm='gn'"): norm_layer("gn", 8)
    with pytest.raises(ValueError, match="pad_type='circular'"): ConvBlock(8, 8, pad_type="circular")


def test_adain_sets_the_statistics_and_blocks_check_their_params():
    torch.manual_seed(0)
    x = torch.randn(3, 4, 10, 6) * 2 + 3
    gamma, beta = torch.randn(3, 4) * 0.5, torch.randn(3, 4)
    y = AdaIN2d(4)(x, gamma, beta)
    assert torch.allclose(y.mean((2, 3)), beta, atol=1e-4)
    assert torch.allclose(y.std((2, 3), unbiased=False), 1 + gamma, atol=1e-3)
    assert torch.allclose(AdaIN2d(4)(x, torch.zeros(3, 4), torch.zeros(3, 4)), F.instance_norm(x), atol=1e-5)
    with pytest.raises(ValueError, match=r"\(3, 4\)"): AdaIN2d(4)(x, torch.zeros(3, 5), torch.zeros(3, 5))
    block = AdaINResBlock(4)
    assert block.num_params == 16 and block(x, torch.randn(3, 16)).shape == x.shape
    with pytest.raises(ValueError, match=r"params must be \(3, 16\)"): block(x, torch.randn(3, 8))
    mlp = MLP(6, 10, hidden_dim=7, num_layers=3)
    assert mlp(torch.randn(2, 2, 3)).shape == (2, 10)
    assert sum(isinstance(m, torch.nn.Linear) for m in mlp) == 3


def test_adain_decoder_size_range_and_style_dependence():
    torch.manual_seed(0)
    decoder = AdaINDecoder(32, style_dim=4 * 16, num_res_blocks=4, num_upsamples=2, mlp_hidden=16)
    assert len(decoder.res_blocks) == 4 and len(decoder.mlps) == 4  # one MLP per AdaIN residual block
    content, style = torch.randn(2, 32, 16, 8), torch.randn(2, 16, 4, 1)
    out = decoder(content, style)
    assert out.shape == (2, 3, 64, 32) and out.abs().max() <= 1
    assert not torch.allclose(decoder(content, style.flip(0)), out)    # the style code matters
    assert not torch.allclose(decoder(content.flip(0), style), out)    # and so does the content
    with pytest.raises(ValueError, match="expected 64"): decoder(content, torch.randn(2, 10))
    with pytest.raises(ValueError, match="content must be"): decoder(torch.randn(2, 16, 16, 8), style)
    with pytest.raises(ValueError, match="divisible"): AdaINDecoder(30, 8, num_upsamples=2)


def test_multiscale_patch_discriminator_shapes():
    d = MultiScaleDiscriminator(num_scales=3, dim=8, num_layers=4)
    outs = d(torch.randn(2, 3, 256, 128))
    assert [tuple(o.shape) for o in outs] == [(2, 1, 16, 8), (2, 1, 8, 4), (2, 1, 4, 2)]
    outs = MultiScaleDiscriminator(num_scales=3, dim=8, num_layers=3)(torch.randn(1, 3, 128, 64))
    assert [tuple(o.shape) for o in outs] == [(1, 1, 16, 8), (1, 1, 8, 4), (1, 1, 4, 2)]
    assert sum(isinstance(m, torch.nn.Conv2d) for m in PatchDiscriminator(dim=8, num_layers=4).modules()) == 5


def test_gan_losses_hand_values():
    zeros = [torch.zeros(2, 1, 4, 2)] * 3
    assert gan_d_loss(zeros, zeros).item() == pytest.approx(3 * 2 * math.log(2))
    assert gan_g_loss(zeros).item() == pytest.approx(3 * math.log(2))
    real, fake = [torch.full((1, 1, 2, 2), 3.0)], [torch.full((1, 1, 2, 2), -1.0)]
    assert gan_d_loss(real, fake).item() == pytest.approx(math.log1p(math.exp(-3)) + math.log1p(math.exp(-1)))
    assert gan_g_loss(fake).item() == pytest.approx(math.log1p(math.exp(1)))
    assert gan_d_loss(real, fake, "lsgan").item() == pytest.approx((3 - 1) ** 2 + 1)
    assert gan_g_loss(fake, "lsgan").item() == pytest.approx(4.0)
    assert gan_d_loss(torch.ones(1, 1, 2, 2), torch.zeros(1, 1, 2, 2), "lsgan").item() == 0.0  # a bare tensor = one scale
    with pytest.raises(ValueError, match="kind='wgan'"): gan_d_loss(zeros, zeros, "wgan")
    with pytest.raises(ValueError, match="2 real but 3 fake"): gan_d_loss(zeros[:2], zeros)


def test_r1_penalty_hand_value_and_gradients():
    torch.manual_seed(0)
    w = torch.randn(1, 3, 4, 2)
    real = torch.randn(5, 3, 4, 2).requires_grad_(True)
    outputs = [(real * w).mean((1, 2, 3), keepdim=True), (2 * real * w).mean((1, 2, 3), keepdim=True)]
    assert r1_penalty(outputs, real).item() == pytest.approx((3 * w).pow(2).sum().item() / w.numel() ** 2, rel=1e-5)
    d = MultiScaleDiscriminator(num_scales=2, dim=4, num_layers=2)
    real = torch.randn(2, 3, 32, 16).requires_grad_(True)
    penalty = r1_penalty(d(real), real)
    assert penalty.item() > 0
    penalty.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for n, p in d.named_parameters() if n.endswith("weight"))
    with pytest.raises(ValueError, match="must require grad"): r1_penalty(d(torch.randn(1, 3, 32, 16)), torch.randn(1, 3, 32, 16))
