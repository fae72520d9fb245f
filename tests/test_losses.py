"Losses on hand-made inputs whose values are worked out by hand."
import math

import pytest
import torch
import torch.nn.functional as F

from reid_workbench.losses import (CrossEntropyLSR, TripletLoss, VerificationHead, batch_hard_mining, batch_hard_triplet,
                                   cross_entropy_lsr, pairwise_euclidean, verification_loss)


def test_cross_entropy_lsr_by_hand():
    # three classes, logits (ln 1, ln 2, ln 5): p = (1/8, 2/8, 5/8)
    logits = torch.log(torch.tensor([[1.0, 2.0, 5.0]]))
    y = torch.tensor([2])
    assert cross_entropy_lsr(logits, y, 0.0).item() == pytest.approx(math.log(8 / 5), abs=1e-6)
    # eps = 0.3: target (0.1, 0.1, 0.8)
    expected = 0.1 * math.log(8) + 0.1 * math.log(4) + 0.8 * math.log(8 / 5)
    assert cross_entropy_lsr(logits, y, 0.3).item() == pytest.approx(expected, abs=1e-6)
    assert CrossEntropyLSR(0.3)(logits, y).item() == pytest.approx(expected, abs=1e-6)
    # two samples: the mean of the two
    logits2 = torch.cat([logits, torch.zeros(1, 3)])
    y2 = torch.tensor([2, 0])
    assert cross_entropy_lsr(logits2, y2, 0.3).item() == pytest.approx((expected + math.log(3)) / 2, abs=1e-6)


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.4, 1.0])
def test_cross_entropy_lsr_equals_torch(eps):
    torch.manual_seed(0)
    z, y = torch.randn(32, 11) * 3, torch.randint(0, 11, (32,))
    assert torch.allclose(cross_entropy_lsr(z, y, eps), F.cross_entropy(z, y, label_smoothing=eps), atol=1e-6)
    zg = z.clone().requires_grad_(True); zt = z.clone().requires_grad_(True)
    cross_entropy_lsr(zg, y, eps).backward(); F.cross_entropy(zt, y, label_smoothing=eps).backward()
    assert torch.allclose(zg.grad, zt.grad, atol=1e-7)


def test_cross_entropy_lsr_per_sample_and_errors():
    torch.manual_seed(1)
    z, y = torch.randn(6, 4), torch.randint(0, 4, (6,))
    eps = torch.tensor([0.4, 0.4, 0.4, 0.0, 0.0, 0.0])
    expected = (F.cross_entropy(z[:3], y[:3], label_smoothing=0.4) + F.cross_entropy(z[3:], y[3:])) / 2
    assert torch.allclose(cross_entropy_lsr(z, y, eps), expected, atol=1e-6)
    assert cross_entropy_lsr(z.half(), y, 0.1).dtype == torch.float32  # AMP logits: computed in float32
    with pytest.raises(ValueError, match=r"labels must be in \[0, 4\)"): cross_entropy_lsr(z, y - 1 - y.max())
    with pytest.raises(ValueError, match="epsilon must be in"): cross_entropy_lsr(z, y, 1.5)
    with pytest.raises(ValueError, match="logits must be \\(B, K\\)"): cross_entropy_lsr(z[0], y)
    with pytest.raises(ValueError, match="targets must be"): cross_entropy_lsr(z, y[:3])


def test_pairwise_euclidean_and_mining():
    x = torch.tensor([[0.0, 0.0], [3.0, 4.0], [6.0, 8.0]])
    d = pairwise_euclidean(x)
    assert torch.allclose(d, torch.tensor([[0.0, 5, 10], [5, 0, 5], [10, 5, 0]]), atol=1e-5)
    x.requires_grad_(True)
    pairwise_euclidean(x).sum().backward()
    assert torch.isfinite(x.grad).all()
    d_ap, d_an, valid = batch_hard_mining(d, torch.tensor([0, 0, 1]))
    assert torch.allclose(d_ap[:2], torch.tensor([5.0, 5.0]), atol=1e-5) and d_ap[2] == float("-inf")
    assert torch.allclose(d_an, torch.tensor([10.0, 5.0, 5.0]), atol=1e-5)
    assert valid.tolist() == [True, True, False]


def test_batch_hard_triplet_by_hand():
    # 2-d points: id 0 at (0,0) and (0,2); id 1 at (1,0) and (4,0)
    x = torch.tensor([[0.0, 0.0], [0.0, 2.0], [1.0, 0.0], [4.0, 0.0]])
    pids = torch.tensor([0, 0, 1, 1])
    # anchor (0,0): d_ap 2, d_an 1       -> 2 - 1 + 0.5 = 1.5
    # anchor (0,2): d_ap 2, d_an sqrt5   -> 2.5 - sqrt5
    # anchor (1,0): d_ap 3, d_an 1       -> 2.5
    # anchor (4,0): d_ap 3, d_an 4       -> 0 (3 - 4 + 0.5 < 0)
    expected = (1.5 + (2.5 - math.sqrt(5)) + 2.5 + 0.0) / 4
    assert batch_hard_triplet(x, pids, 0.5).item() == pytest.approx(expected, abs=1e-5)
    assert TripletLoss(0.5)(x, pids).item() == pytest.approx(expected, abs=1e-5)
    sp = lambda v: math.log1p(math.exp(v))
    soft = (sp(1.0) + sp(2 - math.sqrt(5)) + sp(2.0) + sp(-1.0)) / 4
    assert batch_hard_triplet(x, pids, None).item() == pytest.approx(soft, abs=1e-5)
    assert TripletLoss(None)(x, pids).item() == pytest.approx(soft, abs=1e-5)


def test_batch_hard_triplet_anchors_without_positive_and_gradients():
    x = torch.tensor([[0.0, 0.0], [0.0, 2.0], [1.0, 0.0], [4.0, 0.0], [50.0, 50.0]], requires_grad=True)
    pids = torch.tensor([0, 0, 1, 1, 7])  # the last image is alone: not an anchor, never the closest negative here
    expected = (1.5 + (2.5 - math.sqrt(5)) + 2.5 + 0.0) / 4
    loss = batch_hard_triplet(x, pids, 0.5)
    assert loss.item() == pytest.approx(expected, abs=1e-5)
    loss.backward()
    assert torch.isfinite(x.grad).all() and x.grad[4].abs().sum() == 0
    # anchor (0,0) pulls its positive (0,2) and pushes its negative (1,0): gradient on the anchor points toward
    # the positive and away from the negative
    assert x.grad[0, 1] < 0 and x.grad[0, 0] > 0
    # all alone, or a single identity: no valid anchor, zero loss, zero gradient
    for p in (torch.tensor([0, 1, 2, 3, 4]), torch.zeros(5, dtype=torch.long)):
        y = x.detach().clone().requires_grad_(True)
        loss = batch_hard_triplet(y, p)
        loss.backward()
        assert loss.item() == 0.0 and y.grad.abs().sum() == 0
    with pytest.raises(ValueError, match="expected features \\(B, D\\)"): batch_hard_triplet(x[:, 0], pids)


def test_triplet_training_separates_identities():
    torch.manual_seed(0)
    x = torch.randn(16, 8, requires_grad=True)
    pids = torch.arange(16) // 4
    opt = torch.optim.SGD([x], lr=0.5)
    first = batch_hard_triplet(x, pids, 0.3).item()
    for _ in range(100):
        loss = batch_hard_triplet(x, pids, 0.3)
        opt.zero_grad(); loss.backward(); opt.step()
    assert first > 0.3 and loss.item() < 0.05 * first


def test_verification_head_by_hand():
    head = VerificationHead(3).eval()
    head.bn.eps = 0.0
    with torch.no_grad():
        head.bn.running_mean.copy_(torch.tensor([1.0, 0.0, 0.0])); head.bn.running_var.copy_(torch.tensor([4.0, 1.0, 1.0]))
        head.fc.weight.copy_(torch.tensor([[2.0, 1.0, -1.0]])); head.fc.bias.fill_(0.5)
    f1 = torch.tensor([[3.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    f2 = torch.tensor([[0.0, 0.0, 2.0], [1.0, 1.0, 1.0]])
    # pair 1: squared diff (9, 1, 4) -> BN ((9-1)/2, 1, 4) = (4, 1, 4) -> 8 + 1 - 4 + 0.5 = 5.5
    # pair 2: (0, 0, 0) -> (-0.5, 0, 0) -> -1 + 0.5 = -0.5
    scores = head(f1, f2)
    assert torch.allclose(scores, torch.tensor([5.5, -0.5]))
    assert torch.allclose(head.probability(f1, f2), torch.sigmoid(torch.tensor([5.5, -0.5])))
    same = torch.tensor([1, 0])
    expected = (math.log1p(math.exp(-5.5)) + math.log1p(math.exp(-0.5))) / 2
    assert verification_loss(scores, same).item() == pytest.approx(expected, abs=1e-6)
    # label smoothing 0.1: targets 0.9 / 0.1
    smoothed = (0.9 * math.log1p(math.exp(-5.5)) + 0.1 * math.log1p(math.exp(5.5))
                + 0.9 * math.log1p(math.exp(-0.5)) + 0.1 * math.log1p(math.exp(0.5))) / 2
    assert verification_loss(scores, same, 0.1).item() == pytest.approx(smoothed, abs=1e-6)
    with pytest.raises(ValueError, match="feature shapes differ"): head(f1, f2[:, :2])
    with pytest.raises(ValueError, match="label_smoothing=0.5"): verification_loss(scores, same, 0.5)


def test_verification_head_learns():
    torch.manual_seed(0)
    head = VerificationHead(16)
    centres = torch.randn(4, 16) * 2
    opt = torch.optim.Adam(head.parameters(), lr=0.05)
    for _ in range(60):
        a = torch.randint(0, 4, (64,)); b = torch.where(torch.rand(64) < 0.5, a, torch.randint(0, 4, (64,)))
        f1, f2 = centres[a] + 0.3 * torch.randn(64, 16), centres[b] + 0.3 * torch.randn(64, 16)
        loss = verification_loss(head(f1, f2), (a == b).long())
        opt.zero_grad(); loss.backward(); opt.step()
    head.eval()
    a = torch.randint(0, 4, (200,)); b = torch.randint(0, 4, (200,))
    pred = head.probability(centres[a] + 0.3 * torch.randn(200, 16), centres[b] + 0.3 * torch.randn(200, 16)) > 0.5
    assert (pred == (a == b)).float().mean() > 0.95
