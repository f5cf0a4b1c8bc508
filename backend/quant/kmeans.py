"""k-means for weight sub-vectors: k-means++ seeding then Lloyd iterations, chunked so that the (N, k)
distance matrix never exists in full, and seeded so that the same weights always give the same codebook.
"""

from __future__ import annotations

import torch


def nearest_codewords(
    x: torch.Tensor, codebook: torch.Tensor, n: int = 1, chunk_size: int = 65536
) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (N, n) of each row's n nearest codewords (closest first) and their squared distances (N, n)."""
    if n > codebook.shape[0]:
        raise ValueError(f"cannot take {n} candidates from a codebook of {codebook.shape[0]} codewords")
    codebook_sq = (codebook * codebook).sum(1)  # (k,)
    indices, distances = [], []
    for chunk in x.split(chunk_size):
        # |x - c|^2 = |x|^2 - 2 x.c + |c|^2
        dist = torch.addmm(codebook_sq, chunk, codebook.T, alpha=-2.0) + (chunk * chunk).sum(1, keepdim=True)
        d, i = dist.clamp_min_(0).topk(n, dim=1, largest=False, sorted=True)  # (chunk, n)
        indices.append(i)
        distances.append(d)
    return torch.cat(indices), torch.cat(distances)


def kmeans_plus_plus(x: torch.Tensor, k: int, generator: torch.Generator, max_points: int = 65536) -> torch.Tensor:
    """k-means++ seeding (D^2 sampling) on a random subset of at most `max_points` rows."""
    if x.shape[0] > max_points:
        x = x[torch.randperm(x.shape[0], generator=generator)[:max_points]]
    first = torch.randint(x.shape[0], (1,), generator=generator)
    centres = [x[first]]
    closest = ((x - centres[0]) ** 2).sum(1)  # (N,) squared distance to the nearest centre so far
    for _ in range(1, k):
        probs = closest / closest.sum() if closest.sum() > 0 else torch.full_like(closest, 1.0 / len(closest))
        pick = torch.multinomial(probs, 1, generator=generator)
        centres.append(x[pick])
        closest = torch.minimum(closest, ((x - centres[-1]) ** 2).sum(1))
    return torch.cat(centres)


def kmeans(
    x: torch.Tensor, k: int, iterations: int = 100, seed: int = 0, chunk_size: int = 65536, tol: float = 1e-6
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cluster rows of x (N, d) into k codewords. Returns (codebook (k, d), assignments (N,) int64).

    Empty clusters are re-seeded at the rows worst served by the current codebook, so every codeword is used
    whenever N >= k. Stops early when the mean squared error improves by less than `tol` (relative).
    """
    if x.dim() != 2:
        raise ValueError(f"k-means expects (N, d) sub-vectors, got shape {tuple(x.shape)}")
    if x.shape[0] < k:
        raise ValueError(f"cannot fit {k} codewords to {x.shape[0]} sub-vectors; skip this layer or lower k")
    x = x.float()
    generator = torch.Generator().manual_seed(seed)
    codebook = kmeans_plus_plus(x, k, generator)
    previous = None
    for _ in range(iterations):
        assignments, dist = nearest_codewords(x, codebook, 1, chunk_size)
        assignments, dist = assignments[:, 0], dist[:, 0]
        counts = torch.bincount(assignments, minlength=k)
        sums = torch.zeros_like(codebook).index_add_(0, assignments, x)
        used = counts > 0
        codebook[used] = sums[used] / counts[used].unsqueeze(1).to(x.dtype)
        empty = (~used).nonzero().squeeze(1)
        if len(empty):
            codebook[empty] = x[dist.topk(len(empty)).indices]
        error = dist.mean().item()
        if len(empty) == 0 and previous is not None and previous - error <= tol * previous:
            break
        previous = error
    assignments, _ = nearest_codewords(x, codebook, 1, chunk_size)
    return codebook, assignments[:, 0]
