"""ATRC auxiliary label spaces: depth bins, triangular normals coding, k-means codebook."""

import math

import pytest
import torch
import torch.nn.functional as F

from densemtl.models.atrc.labels import (
    IGNORE,
    BinaryLabels,
    DepthBins,
    NormalsCodebook,
    spherical_kmeans,
)


def test_depth_bin_edges_are_log_spaced_over_range():
    bins = DepthBins(40, 0.7, 10.0)
    edges = bins.edges.double()
    assert edges[0].item() == pytest.approx(0.7) and edges[-1].item() == pytest.approx(10.0)
    ratios = edges[1:] / edges[:-1]
    assert torch.allclose(ratios, torch.full_like(ratios, (10 / 0.7) ** (1 / 40)), rtol=1e-5)


def test_depth_bin_assignment():
    bins = DepthBins(40, 0.7, 10.0)
    step = (10 / 0.7) ** (1 / 40)
    d = torch.tensor([0.0, 0.5, 0.7, 0.7 * step ** 3.5, 0.7 * step ** 39.9, 25.0])
    code = bins.encode(d.view(1, 1, 1, -1))[0, 0]
    assert code.tolist() == [IGNORE, 0, 0, 3, 39, 39]


def test_depth_soft_decoding_in_log_space():
    bins = DepthBins(40, 0.7, 10.0)
    step = (10 / 0.7) ** (1 / 40)
    one_hot = torch.full((1, 40, 1, 1), -1e4)
    one_hot[0, 5] = 0.0
    # a certain bin decodes to its log-space mean: the geometric mean of its edges
    assert bins.decode(one_hot).item() == pytest.approx(0.7 * step ** 5.5, rel=1e-5)
    two = torch.full((1, 40, 1, 1), -1e4)
    two[0, 5] = two[0, 9] = 0.0
    assert bins.decode(two).item() == pytest.approx(0.7 * step ** 7.5, rel=1e-5)


def random_normals(n, seed=0):
    return F.normalize(torch.randn(n, 3, generator=torch.Generator().manual_seed(seed)), dim=1)


def test_triangular_normals_coding_round_trip():
    space = NormalsCodebook(40, "triangular")
    n = random_normals(500).T.reshape(1, 3, 20, 25)
    soft = space.encode(n)
    assert torch.allclose(soft.sum(1), torch.ones(1, 20, 25))
    assert ((soft > 0).sum(1) <= 3).all()
    decoded = space.decode(soft.clamp_min(1e-12).log())
    cos = (decoded * n).sum(1)
    assert cos.min().item() > 1 - 1e-5


def test_triangular_coding_ignores_invalid_pixels_and_nearest_mode_picks_closest_codeword():
    n = torch.zeros(1, 3, 1, 2)
    n[0, :, 0, 1] = torch.tensor([0.0, 0.0, 1.0])
    soft = NormalsCodebook(40, "triangular").encode(n)
    assert soft[0, :, 0, 0].sum() == 0 and soft[0, :, 0, 1].sum().item() == pytest.approx(1.0)
    nearest = NormalsCodebook(40, "nearest")
    code = nearest.encode(n)[0, 0]
    assert code[0] == IGNORE
    assert code[1] == int((nearest.codebook @ torch.tensor([0.0, 0.0, 1.0])).argmax())


def test_spherical_kmeans_recovers_three_directions():
    centres = torch.eye(3)
    g = torch.Generator().manual_seed(0)
    pts = torch.cat([F.normalize(c + 0.05 * torch.randn(100, 3, generator=g), dim=1)
                     for c in centres])
    found = spherical_kmeans(pts, 3, seed=1)
    match = (found @ centres.T).max(0).values
    assert match.min().item() > 0.99


def test_binary_labels_are_class_weighted_cross_entropy():
    space = BinaryLabels([0.2, 0.8])
    target = torch.tensor([[[[1.0, 0.0, 255.0]]]])
    logits = torch.tensor([[[[0.0, 1.0, 3.0]], [[1.0, 0.0, 0.0]]]])
    per_pixel = [0.8 * -math.log(math.e / (1 + math.e)), 0.2 * -math.log(math.e / (1 + math.e))]
    assert space.loss(logits, target).item() == pytest.approx(sum(per_pixel) / 2)
