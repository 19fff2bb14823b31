"""Residual k-means (RQ) in torch: the starting point of every model, and an honest baseline.

Each of the M codebooks is a k-means of the residuals left by the previous ones (greedy RQ).
Copied into a zero-initialised QincoModel, it makes the untrained model decode exactly as RQ.
"""
import torch

ASSIGN_CHUNK = 1 << 14


def nearest(x, centroids):
    """Index and squared distance of the nearest centroid for each row of x (chunked)."""
    c_sq = (centroids * centroids).sum(1)
    idx = torch.empty(len(x), dtype=torch.int64, device=x.device)
    dist = torch.empty(len(x), dtype=x.dtype, device=x.device)
    for s in range(0, len(x), ASSIGN_CHUNK):
        xb = x[s:s + ASSIGN_CHUNK]
        d = c_sq - 2.0 * (xb @ centroids.T)
        best, arg = d.min(1)
        idx[s:s + ASSIGN_CHUNK] = arg
        dist[s:s + ASSIGN_CHUNK] = (best + (xb * xb).sum(1)).clamp_min_(0)
    return idx, dist


def kmeans(x, K, iters=10, generator=None):
    """K centroids of x by Lloyd iterations; empty clusters are re-seeded from far points."""
    n, d = x.shape
    perm = torch.randperm(n, generator=generator)
    if n >= K:
        centroids = x[perm[:K]].clone()
    else:  # fewer points than centroids: duplicates with tiny noise
        reps = x[perm[torch.arange(K) % n]]
        noise = torch.randn(K, d, generator=generator).to(x) * (x.std() * 1e-3 + 1e-8)
        centroids = reps + noise
    for _ in range(iters):
        idx, dist = nearest(x, centroids)
        sums = torch.zeros_like(centroids).index_add_(0, idx, x)
        counts = torch.bincount(idx, minlength=K).to(x.dtype)
        filled = counts > 0
        centroids[filled] = sums[filled] / counts[filled].unsqueeze(1)
        empty = (~filled).nonzero().flatten()
        if len(empty):
            far = torch.topk(dist, min(len(empty), n)).indices
            centroids[empty[: len(far)]] = x[far]
    return centroids


def residual_kmeans(x, M, K, iters=10, seed=0):
    """M codebooks (each K x d) of greedy residual k-means on x."""
    gen = torch.Generator().manual_seed(seed)
    residual = x.clone()
    codebooks = []
    for _ in range(M):
        cb = kmeans(residual, K, iters, gen)
        idx, _ = nearest(residual, cb)
        residual -= cb[idx]
        codebooks.append(cb)
    return codebooks


@torch.no_grad()
def init_from_rq(model, x, iters=10, seed=0, max_points=200_000):
    """Set the model's normalisation from raw x and its codebooks from residual k-means on it."""
    x = torch.as_tensor(x, dtype=torch.float32)
    if len(x) > max_points:
        gen = torch.Generator().manual_seed(seed)
        x = x[torch.randperm(len(x), generator=gen)[:max_points]]
    mean = x.mean(0)
    std = (x - mean).square().mean().sqrt().clamp_min(1e-12)
    model.set_normalization(mean, std)
    codebooks = residual_kmeans((x - mean) / std, model.M, model.K, iters, seed)
    model.codebook0.copy_(codebooks[0])
    for step, cb in zip(model.steps, codebooks[1:]):
        step.codebook.copy_(cb)
        if step.preselect is not None:
            step.preselect.copy_(cb)
    return model
