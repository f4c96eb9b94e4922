"""Product quantisation in torch (REMIND, spec 14.6) against brute force."""
from __future__ import annotations

import pytest
import torch

from augmem.models.product_quantizer import ProductQuantizer


def data(n=200, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(5, d, generator=g) * 3
    return centres[torch.randint(0, 5, (n,), generator=g)] + torch.randn(n, d, generator=g)


def fitted(iterations=10, seed=1, **kw):
    return ProductQuantizer(8, 2, 4, iterations, **kw).fit(data(), torch.Generator().manual_seed(seed))


def brute_codes(pq, x):
    """The nearest centroid of every sub-vector by an explicit loop over all centroids."""
    out = torch.empty(x.shape[0], pq.m, dtype=torch.long)
    for m in range(pq.m):
        sub = x[:, m * pq.ds:(m + 1) * pq.ds]
        best = torch.full((x.shape[0],), float("inf"))
        for k in range(pq.k):
            dist = ((sub - pq.codebooks[m, k]) ** 2).sum(1)
            better = dist < best
            best = torch.where(better, dist, best)
            out[better, m] = k
    return out


def test_encode_is_the_nearest_centroid_and_decode_the_concatenation():
    pq = fitted()
    x = data(n=300, seed=5)
    codes = pq.encode(x)
    assert codes.dtype == torch.uint8 and codes.shape == (300, 2)
    assert torch.equal(codes.long(), brute_codes(pq, x))
    rec = pq.decode(codes)
    hand = torch.cat([pq.codebooks[m, codes[:, m].long()] for m in range(pq.m)], dim=1)
    assert torch.equal(rec, hand)
    assert pq.codebooks.shape == (2, 4, 4) and pq.nbytes() == 2 * 4 * 4 * 4


def test_centroids_are_the_means_of_their_clusters_after_training():
    x = data()
    pq = fitted(iterations=30)
    codes = pq.encode(x).long()
    for m in range(2):
        for k in range(4):
            members = x[codes[:, m] == k, m * 4:(m + 1) * 4]
            assert len(members) > 0
            assert torch.allclose(members.mean(0), pq.codebooks[m, k], atol=1e-5)


def test_reconstruction_error_decreases_with_iterations():
    x = data()
    errs = [float(((fitted(it).reconstruct(x) - x) ** 2).sum()) for it in (0, 1, 2, 5, 20)]
    assert all(b <= a + 1e-4 for a, b in zip(errs, errs[1:])), errs
    assert errs[-1] < 0.8 * errs[0]


def test_deterministic_for_a_seed_and_seed_dependent():
    a, b, c = fitted(seed=3), fitted(seed=3), fitted(seed=4, iterations=0)
    assert torch.equal(a.codebooks, b.codebooks)
    assert not torch.equal(fitted(seed=3, iterations=0).codebooks, c.codebooks)


def test_initial_centroids_are_training_vectors_and_subsampling():
    x = data()
    pq = ProductQuantizer(8, 2, 4, 0).fit(x, torch.Generator().manual_seed(0))
    for m in range(2):
        for k in range(4):
            assert (x[:, m * 4:(m + 1) * 4] == pq.codebooks[m, k]).all(1).any()
    # max 2 points per centroid: k-means sees 8 of the 200 vectors; all 8 are perfectly reconstructable after
    # training with 4 centroids only if the sample is tiny, so just check the cap changes the result
    capped = ProductQuantizer(8, 2, 4, 5, max_points_per_centroid=2).fit(x, torch.Generator().manual_seed(0))
    full = ProductQuantizer(8, 2, 4, 5, max_points_per_centroid=0).fit(x, torch.Generator().manual_seed(0))
    assert not torch.equal(capped.codebooks, full.codebooks)


def test_fewer_vectors_than_centroids_and_identical_vectors():
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 5.0, 5.0]])
    pq = ProductQuantizer(4, 2, 4, 5).fit(x, torch.Generator().manual_seed(0))
    assert torch.isfinite(pq.codebooks).all()
    assert torch.allclose(pq.reconstruct(x), x, atol=1e-2)


def test_maps_round_trip_and_state():
    pq = fitted()
    f = torch.randn(3, 8, 2, 5)
    codes = pq.encode_maps(f)
    assert codes.shape == (3, 2, 5, 2) and codes.dtype == torch.uint8
    vec = f.permute(0, 2, 3, 1).reshape(-1, 8)
    assert torch.equal(codes.reshape(-1, 2), pq.encode(vec))
    assert torch.equal(pq.decode_maps(codes).permute(0, 2, 3, 1).reshape(-1, 8), pq.reconstruct(vec))
    back = ProductQuantizer.from_state(pq.state())
    assert torch.equal(back.codebooks, pq.codebooks) and back.encode(vec).equal(pq.encode(vec))


def test_bad_shapes():
    with pytest.raises(ValueError):
        ProductQuantizer(8, 3, 4)
    with pytest.raises(ValueError):
        ProductQuantizer(8, 2, 300)
    with pytest.raises(RuntimeError):
        ProductQuantizer(8, 2, 4).encode(torch.zeros(1, 8))
