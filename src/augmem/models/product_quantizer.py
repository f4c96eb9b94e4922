"""Product quantisation in torch (REMIND, spec 14.6; the original uses faiss ``ProductQuantizer(d, M, 8)``).

A d-dimensional vector is cut into M sub-vectors of d/M dimensions; each sub-space has its own codebook of K
centroids, trained by k-means on the training vectors. ``encode`` maps every sub-vector to its nearest centroid
(squared Euclidean distance; the first one on a tie), giving M codes per vector (uint8 for K <= 256); ``decode``
concatenates the centroids of the codes.

Training is exact and deterministic for a given generator, and follows faiss's defaults (``ClusteringParameters``):

* at most ``max_points_per_centroid`` * K training vectors (faiss: 256 per centroid): a larger set is subsampled
  with one random permutation drawn from ``generator`` (faiss prints "Sampling a subset of ...");
* initial centroids: K distinct training vectors drawn with one random permutation from ``generator``, the same
  vectors for every sub-space (faiss seeds every sub-space's clustering alike); fewer than K vectors are repeated
  cyclically;
* ``iterations`` Lloyd iterations (faiss: 25), all sub-spaces at once: assignment by the vectorised distance
  ||x||^2 - 2 x.c + ||c||^2, centroid update by a one-hot matrix product (deterministic on every device, unlike
  atomic scatter-adds);
* an empty cluster takes over half of the largest one as faiss's ``split_clusters`` does: the empty centroid becomes
  the large one times (1 + eps * s) and the large one times (1 - eps * s), s = +1/-1 alternating over dimensions,
  eps = 1/1024 (no random draw).
"""
from __future__ import annotations

from typing import Any

import torch

EPS_SPLIT = 1.0 / 1024.0
CHUNK_ELEMENTS = 1 << 24  # elements of one (M, chunk, K) distance block


class ProductQuantizer:
    def __init__(self, d: int, m: int, k: int = 256, iterations: int = 25, max_points_per_centroid: int = 256):
        if d % m != 0:
            raise ValueError(f"product quantiser: {m} codebooks do not divide the dimension {d}")
        if not 1 <= k <= 256:
            raise ValueError(f"product quantiser: {k} centroids do not fit uint8 codes (1..256)")
        self.d, self.m, self.k = int(d), int(m), int(k)
        self.ds = self.d // self.m
        self.iterations = int(iterations)
        self.max_points_per_centroid = int(max_points_per_centroid)
        self.codebooks: torch.Tensor | None = None  # (M, K, d/M) float32

    @property
    def trained(self) -> bool:
        return self.codebooks is not None

    def nbytes(self) -> int:
        """Bytes of the codebooks: M * K * (d/M) float32."""
        return self.m * self.k * self.ds * 4

    # ------------------------------------------------------------------------------------------------ training
    def _split(self, x: torch.Tensor) -> torch.Tensor:
        """(N, d) -> (M, N, d/M)."""
        if x.dim() != 2 or x.shape[1] != self.d:
            raise ValueError(f"product quantiser: expected (N, {self.d}) vectors, got {tuple(x.shape)}")
        return x.reshape(x.shape[0], self.m, self.ds).permute(1, 0, 2)

    def _chunk(self, n: int) -> int:
        return max(1, min(n, CHUNK_ELEMENTS // max(1, self.m * self.k)))

    @staticmethod
    def _assign(xs: torch.Tensor, centroids: torch.Tensor, chunk: int) -> torch.Tensor:
        """Nearest centroid per sub-vector: xs (M, N, ds), centroids (M, K, ds) -> (M, N) long."""
        c_sq = (centroids * centroids).sum(-1).unsqueeze(1)  # (M, 1, K)
        out = torch.empty(xs.shape[:2], dtype=torch.long, device=xs.device)
        for s in range(0, xs.shape[1], chunk):
            part = xs[:, s:s + chunk]
            dist = torch.baddbmm(c_sq + (part * part).sum(-1, keepdim=True), part, centroids.transpose(1, 2),
                                 alpha=-2.0)
            out[:, s:s + chunk] = dist.argmin(-1)
        return out

    def fit(self, x: torch.Tensor, generator: torch.Generator) -> "ProductQuantizer":
        """Train the codebooks on the vectors ``x`` (N, d), random draws from ``generator`` (CPU)."""
        x = x.detach().float()
        n = x.shape[0]
        if n == 0:
            raise ValueError("product quantiser: no training vectors")
        cap = self.max_points_per_centroid * self.k
        if self.max_points_per_centroid > 0 and n > cap:
            keep = torch.randperm(n, generator=generator)[:cap]
            x = x[keep.to(x.device)]
            n = cap
        xs = self._split(x)  # (M, N, ds)
        perm = torch.randperm(n, generator=generator)
        init = perm[torch.arange(self.k) % n].to(x.device)
        centroids = xs[:, init].clone()  # (M, K, ds)
        chunk = self._chunk(n)
        sign = torch.ones(self.ds, device=x.device)
        sign[1::2] = -1
        for _ in range(self.iterations):
            assign = self._assign(xs, centroids, chunk)
            sums = torch.zeros_like(centroids)
            counts = torch.zeros(self.m, self.k, device=x.device)
            for s in range(0, n, chunk):
                onehot = torch.nn.functional.one_hot(assign[:, s:s + chunk], self.k).to(x.dtype)  # (M, c, K)
                sums += torch.bmm(onehot.transpose(1, 2), xs[:, s:s + chunk])
                counts += onehot.sum(1)
            filled = counts > 0
            centroids = torch.where(filled.unsqueeze(-1), sums / counts.clamp_min(1).unsqueeze(-1), centroids)
            if not bool(filled.all()):
                centroids, counts = self._split_empty(centroids, counts, sign)
        self.codebooks = centroids.contiguous()
        return self

    @staticmethod
    def _split_empty(centroids: torch.Tensor, counts: torch.Tensor, sign: torch.Tensor):
        centroids, counts = centroids.clone(), counts.clone()
        for m, j in (counts == 0).nonzero().tolist():
            big = int(counts[m].argmax())
            if counts[m, big] <= 1:
                continue
            base = centroids[m, big].clone()
            centroids[m, j] = base * (1 + EPS_SPLIT * sign)
            centroids[m, big] = base * (1 - EPS_SPLIT * sign)
            half = counts[m, big] / 2
            counts[m, j], counts[m, big] = half, counts[m, big] - half
        return centroids, counts

    # ------------------------------------------------------------------------------------------------ codes
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Vectors (N, d) -> codes (N, M) uint8: the nearest centroid of every sub-vector."""
        if self.codebooks is None:
            raise RuntimeError("product quantiser: encode before fit")
        xs = self._split(x.detach().to(self.codebooks.device, self.codebooks.dtype))
        return self._assign(xs, self.codebooks, self._chunk(xs.shape[1])).t().to(torch.uint8)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes (N, M) -> vectors (N, d): the concatenated centroids."""
        if self.codebooks is None:
            raise RuntimeError("product quantiser: decode before fit")
        codes = codes.to(self.codebooks.device).long()
        sub = self.codebooks[torch.arange(self.m, device=codes.device).view(1, -1), codes]  # (N, M, ds)
        return sub.reshape(codes.shape[0], self.d)

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    # ------------------------------------------------------------------------------------------------ maps
    def encode_maps(self, f: torch.Tensor) -> torch.Tensor:
        """Feature maps (B, d, H, W) -> codes (B, H, W, M) uint8 (one code vector per spatial position)."""
        b, d, h, w = f.shape
        return self.encode(f.permute(0, 2, 3, 1).reshape(b * h * w, d)).view(b, h, w, self.m)

    def decode_maps(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes (B, H, W, M) -> feature maps (B, d, H, W)."""
        b, h, w, m = codes.shape
        return self.decode(codes.reshape(b * h * w, m)).view(b, h, w, self.d).permute(0, 3, 1, 2).contiguous()

    # ------------------------------------------------------------------------------------------------ state
    def state(self) -> dict[str, Any]:
        return {"d": self.d, "m": self.m, "k": self.k, "iterations": self.iterations,
                "max_points_per_centroid": self.max_points_per_centroid,
                "codebooks": None if self.codebooks is None else self.codebooks.detach().cpu().clone()}

    @classmethod
    def from_state(cls, state: dict[str, Any], device: str | torch.device = "cpu") -> "ProductQuantizer":
        pq = cls(state["d"], state["m"], state["k"], state["iterations"], state["max_points_per_centroid"])
        if state["codebooks"] is not None:
            pq.codebooks = state["codebooks"].to(device)
        return pq
