"""The generic code operations do exactly what they say, on hand-made Codes."""
import pytest
import torch

from reid_workbench.registry import info_of
from reid_workbench.codes import (Codes, Disentangler, StripeColourToy, interpolate, interpolate_keypoints, equal_stripes, is_disentangler,
                                  parts_mask, shuffle_parts, swap)


def make(batch=3, parts=4, dim=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return Codes(torch.randn(batch, parts, dim, generator=g), torch.randn(batch, 8, 4, 2, generator=g),
                 {"onehot": torch.randint(0, 2, (batch, 6), generator=g)}, {"noise": torch.randn(batch, 3, generator=g)})


def test_swap_takes_appearance_of_a_and_structure_of_b():
    a, b = make(seed=1), make(seed=2)
    s = swap(a, b)
    assert torch.equal(s.appearance, a.appearance) and torch.equal(s.structure, b.structure)
    assert torch.equal(s.appearance_extra["onehot"], a.appearance_extra["onehot"])
    assert torch.equal(s.structure_extra["noise"], b.structure_extra["noise"])
    # swapping twice restores a
    back = swap(a, s)
    assert torch.equal(back.structure, b.structure) and torch.equal(swap(s, a).structure, a.structure)


@pytest.mark.parametrize("which", ["appearance", "structure"])
def test_interpolate_ends_and_midpoint(which):
    a, b = make(seed=1), make(seed=2)
    assert torch.equal(getattr(interpolate(a, b, 0.0, which), which), getattr(a, which))
    assert torch.equal(getattr(interpolate(a, b, 1.0, which), which), getattr(b, which))
    mid = getattr(interpolate(a, b, 0.5, which), which)
    assert torch.allclose(mid, (getattr(a, which) + getattr(b, which)) / 2, atol=1e-6)
    other = "structure" if which == "appearance" else "appearance"
    for t in (0.0, 0.3, 1.0):  # the other code stays a's
        assert torch.equal(getattr(interpolate(a, b, t, which), other), getattr(a, other))
    # integer extras are not blended: they come from the nearer end
    c = interpolate(a, b, 0.4, "appearance")
    assert torch.equal(c.appearance_extra["onehot"], a.appearance_extra["onehot"])
    assert torch.equal(interpolate(a, b, 0.6, "appearance").appearance_extra["onehot"], b.appearance_extra["onehot"])


def test_interpolate_keypoints_only_where_both_visible():
    pa = torch.zeros(1, 18, 3); pb = torch.zeros(1, 18, 3)
    pa[0, :, :2] = 10; pb[0, :, :2] = 30
    pa[0, :9, 2] = 1; pb[0, 5:, 2] = 1          # joints 5..8 visible in both
    out = interpolate_keypoints(pa, pb, 0.25)
    assert torch.equal(out[0, 5:9, :2], torch.full((4, 2), 15.0))
    assert torch.equal(out[0, :5], pa[0, :5])     # nearer end (a) for the others
    assert torch.equal(out[0, 9:], pa[0, 9:])
    assert torch.equal(interpolate_keypoints(pa, pb, 0.75)[0, 9:], pb[0, 9:])
    codes_a = Codes(torch.zeros(1, 1, 2), pa, structure_kind="keypoints")
    codes_b = Codes(torch.zeros(1, 1, 2), pb, structure_kind="keypoints")
    assert torch.equal(interpolate(codes_a, codes_b, 1.0, "structure").structure, pb)
    assert torch.equal(interpolate(codes_a, codes_b, 0.25, "structure").structure, out)   # the codes know their kind


def test_shuffle_takes_exactly_the_chosen_parts():
    a, b = make(parts=8, seed=1), make(parts=8, seed=2)
    for parts in ([0], [2, 5, 7], list(range(8)), []):
        out = shuffle_parts(a, b, parts)
        for p in range(8):
            src = b if p in parts else a
            assert torch.equal(out.appearance[:, p], src.appearance[:, p])
        assert torch.equal(out.structure, a.structure)
    mask = [False, True] * 4
    assert torch.equal(shuffle_parts(a, b, mask).appearance, shuffle_parts(a, b, [1, 3, 5, 7]).appearance)
    with pytest.raises(ValueError, match="8 parts"):
        shuffle_parts(a, b, [8])
    with pytest.raises(ValueError, match=r"expected \(8,\)"):
        parts_mask([True, False], 8)


def test_codes_validation_and_batching():
    with pytest.raises(ValueError, match=r"\(B, P, D\)"):
        Codes(torch.zeros(2, 3), torch.zeros(2, 1))
    with pytest.raises(ValueError, match="batch size 3"):
        Codes(torch.zeros(2, 1, 3), torch.zeros(3, 1))
    a = make(batch=4)
    assert len(a[1]) == 1 and torch.equal(a[1].structure, a.structure[1:2])
    assert torch.equal(Codes.cat([a[:2], a[2:]]).appearance, a.appearance)
    with pytest.raises(ValueError, match="batch sizes 4 and 3"):
        swap(a, make(batch=3))


def test_toy_disentangler_satisfies_protocol_and_regions():
    toy = StripeColourToy()
    assert isinstance(toy, Disentangler)
    # exact on images made of a grey detail plus one colour per stripe (what its codes can describe)
    stripe_colour = lambda: torch.rand(2, 3, 4, 1, 1).expand(2, 3, 4, 4, 8).reshape(2, 3, 16, 8)
    x = torch.rand(2, 1, 16, 8) + stripe_colour()
    assert torch.allclose(toy.decode(toy.encode(x)), x, atol=1e-6)
    assert info_of(toy).regions(4) == [(0, .25), (.25, .5), (.5, .75), (.75, 1)] == equal_stripes(4)
    assert info_of(toy).structure_kind == "tensor" and is_disentangler(toy) and not is_disentangler(object())
    # part shuffle on images: only the rows of the shuffled stripe change
    y = torch.rand(2, 1, 16, 8) + stripe_colour()
    out = toy.decode(shuffle_parts(toy.encode(x), toy.encode(y), [1]))
    changed_rows = (out - x).abs().amax(dim=(0, 1, 3)) > 1e-6
    assert changed_rows[4:8].all() and not changed_rows[:4].any() and not changed_rows[8:].any()
