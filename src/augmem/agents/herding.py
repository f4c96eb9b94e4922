"""Herding exemplar selection (iCaRL; spec 6.3 and 12.22), with the published quirks as arguments.

Features are L2-normalised per item; mu is their mean, normalised. At step k the candidate means are
``(phi_i + sum of the k selected) / (k + 1)``; the pick is the candidate closest to mu. The published code divides
the candidate matrix by its *Frobenius norm* (one scalar for all candidates) instead of normalising each candidate
(``frobenius_norm``), and never removes picked items, so an item can be picked again (``allow_repeats``).
"""
from __future__ import annotations

import torch

_EPS = 1e-12  # guards the division for an all-zero feature (post-ReLU class scores can be all 0)


def herding_select(features: torch.Tensor, n: int, frobenius_norm: bool = True, allow_repeats: bool = True,
                   normalize: bool = True) -> list[int]:
    """Indices (into ``features``, shape (N, ...)) of the ``min(n, N)`` herding picks, in pick order.

    Ties go to the lowest index (as ``np.argmin``).
    """
    phi = features.detach().reshape(len(features), -1).float()
    if normalize:
        phi = phi / phi.norm(dim=1, keepdim=True).clamp_min(_EPS)
    mu = phi.mean(0)
    mu = mu / mu.norm().clamp_min(_EPS)
    n = min(int(n), len(phi))
    chosen: list[int] = []
    total = torch.zeros_like(mu)
    for k in range(n):
        cand = (phi + total) / (k + 1)
        if frobenius_norm:
            cand = cand / cand.norm().clamp_min(_EPS)
        else:
            cand = cand / cand.norm(dim=1, keepdim=True).clamp_min(_EPS)
        dist = ((mu - cand) ** 2).sum(1).sqrt()
        if not allow_repeats and chosen:
            dist[chosen] = float("inf")
        e = int(torch.argmin(dist))
        chosen.append(e)
        total = total + phi[e]
    return chosen
