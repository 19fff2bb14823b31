"""Residual k-means (RQ) in torch: the starting point of every model, and an honest baseline.

Each of the M codebooks is a k-means of the residuals left by the previous ones (greedy RQ).
Copied into a zero-initialised QincoModel, it makes the untrained model decode exactly as RQ.

A caller with a time budget passes `stop(reserve)`, asked before every Lloyd iteration with
`reserve` the seconds the residual k-means still needs after it were it to stop there (one
assignment pass per codebook left, timed on the last iteration): once it says stop, the
codebook at hand keeps its current centroids and the later ones their initial draws (K
residuals of the data), so the result is always a complete, valid set of codebooks.
`on_iteration` is called after every Lloyd iteration (a progress bar). Neither changes the
result of a run that is not stopped.
"""
import time

import torch

ASSIGN_CHUNK = 1 << 14
LLOYD_ITERS = 10  # Lloyd iterations per codebook
SPLIT_EPS = 1.0 / 1024  # relative offset between the two halves of a split cluster
# Residuals the beam-trained k-means of one step may see by default, times the dimension (128 MiB
# of float32), and never fewer than the vectors: all B hypotheses of 50k vectors up to
# d = 128 at B = 5, fewer above (its time grows as points·d: 91 s for 16 steps of 150k 384-d
# points on one thread).
BEAM_TRAIN_FLOATS = 1 << 25


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


def min_cluster_points(n, K):
    """Fewest points a cluster may keep between Lloyd iterations: an eighth of the mean size,
    and at least 2."""
    return max(2.0, n / (8.0 * K))


def split_small_clusters(centroids, counts, min_points, generator):
    """Move the centroid of every cluster with fewer than `min_points` points (an empty one, or a
    singleton that only encodes its own point) onto a large cluster, split in two.

    Why: at high dimension, random data points as initial centroids make a few small-norm
    centroids attract nearly everything, and every other centroid keeps just itself: a
    singleton is a fixed point of Lloyd's update, which neither an empty-cluster rule nor
    dead-codeword reset sees. On 384-d data, from the fourth residual step on, 240 of 256
    clusters were singletons; the codebook memorised training vectors (their residual became
    exactly zero) and generalised badly. Splitting (faiss's rule for empty clusters: the donor is
    drawn in proportion to its size beyond the minimum, and the two halves are its centroid
    scaled by 1 +/- 1/1024 on alternate coordinates) gives every codeword real support.
    """
    K, d = centroids.shape
    sign = torch.ones(d, dtype=centroids.dtype, device=centroids.device)
    sign[1::2] = -1
    for ci in (counts < min_points).nonzero().flatten().tolist():
        surplus = (counts - 2 * min_points).clamp_min(0)
        if float(surplus.sum()) <= 0:
            break
        cj = int(torch.multinomial(surplus.cpu(), 1, generator=generator))
        centroids[ci] = centroids[cj] * (1 + SPLIT_EPS * sign)
        centroids[cj] = centroids[cj] * (1 - SPLIT_EPS * sign)
        counts[ci] = counts[cj] / 2
        counts[cj] -= counts[ci]


def kmeans(x, K, iters=LLOYD_ITERS, generator=None, stop=None, on_iteration=None):
    """K centroids of x by Lloyd iterations; between iterations, clusters with too few points
    take over half of a large one (`split_small_clusters`).
    Iterations end early once `stop()` is true (checked before each); `on_iteration(seconds)`
    is told how long each one took."""
    n, d = x.shape
    perm = torch.randperm(n, generator=generator)
    if n >= K:
        centroids = x[perm[:K]].clone()
    else:  # fewer points than centroids: duplicates with tiny noise
        reps = x[perm[torch.arange(K) % n]]
        noise = torch.randn(K, d, generator=generator).to(x) * (x.std() * 1e-3 + 1e-8)
        centroids = reps + noise
    for iteration in range(iters):
        if stop is not None and stop():
            break
        t0 = time.monotonic()
        idx, _ = nearest(x, centroids)
        sums = torch.zeros_like(centroids).index_add_(0, idx, x)
        counts = torch.bincount(idx, minlength=K).to(x.dtype)
        filled = counts > 0
        centroids[filled] = sums[filled] / counts[filled].unsqueeze(1)
        if iteration < iters - 1:   # the last update stands: a split needs a Lloyd step after it
            split_small_clusters(centroids, counts, min_cluster_points(n, K), generator)
        if on_iteration is not None:
            on_iteration(time.monotonic() - t0)
    return centroids


class _StepBudget:
    """A residual k-means' side of the time budget (module docstring): `stop_for(steps_left)` is
    the kmeans stop, asking `stop(reserve)` with the seconds the steps left would still need, each
    the last Lloyd iteration (about one assignment pass) plus `per_step` (what a step does besides,
    e.g. a beam-search step); `timed` records each iteration and tells `on_iteration`."""

    def __init__(self, stop, on_iteration):
        self.stop, self.on_iteration = stop, on_iteration
        self.iteration = 0.0  # seconds of the last Lloyd iteration
        self.per_step = 0.0

    def timed(self, seconds):
        self.iteration = seconds
        if self.on_iteration is not None:
            self.on_iteration()

    def stop_for(self, steps_left):
        if self.stop is None:
            return None
        return lambda: self.stop(steps_left * (self.iteration + self.per_step))


def residual_kmeans(x, M, K, iters=LLOYD_ITERS, seed=0, stop=None, on_iteration=None):
    """M codebooks (each K x d) of greedy residual k-means on x (`stop`, `on_iteration`: see
    the module docstring)."""
    gen = torch.Generator().manual_seed(seed)
    residual = x.clone()
    codebooks = []
    budget = _StepBudget(stop, on_iteration)
    for m in range(M):
        cb = kmeans(residual, K, iters, gen, budget.stop_for(M - m), budget.timed)
        idx, _ = nearest(residual, cb)
        residual -= cb[idx]
        codebooks.append(cb)
    return codebooks


def beam_step(residual, err, codebook, keep):
    """One step of beam search over hypotheses: residual (n, F, d) and their squared norms err
    (n, F) against a codebook (K, d); the `keep` best of the F·K extensions per row as
    (residual (n, keep, d), err (n, keep)), best first."""
    n, F, d = residual.shape
    K = len(codebook)
    c_sq = (codebook * codebook).sum(1)
    new_res = torch.empty((n, keep, d), dtype=residual.dtype)
    new_err = torch.empty((n, keep), dtype=residual.dtype)
    rows = max(1, ASSIGN_CHUNK // F)
    for s in range(0, n, rows):
        r = residual[s:s + rows]                                                  # (b, F, d)
        dist = torch.baddbmm(err[s:s + rows].unsqueeze(-1) + c_sq, r,             # (b, F, K)
                             codebook.T.expand(len(r), d, K), alpha=-2.0)
        best, j = torch.topk(dist.reshape(len(r), F * K), keep, dim=1, largest=False, sorted=True)
        parent, code = torch.div(j, K, rounding_mode="floor"), j % K
        new_res[s:s + rows] = r.gather(1, parent.unsqueeze(-1).expand(-1, -1, d)) - codebook[code]
        new_err[s:s + rows] = best.clamp_min(0)
    return new_res, new_err


def beam_residual_kmeans(x, M, K, beam, iters=LLOYD_ITERS, seed=0, max_points=None, stop=None,
                         on_iteration=None):
    """M codebooks (each K x d) of residual k-means trained the way a beam search will use them
    (faiss ResidualQuantizer's training): step m's k-means runs on the residuals of all `beam`
    hypotheses kept per vector after the steps before it (at most `max_points` of them, a
    seeded sample), then the hypotheses are extended by one beam-search step. `stop`,
    `on_iteration`: see the module docstring (the reserve counts, per step left, one assignment
    pass and one beam-search step).

    Why: the beam's residuals are the ones the codebook will be asked to code, and the `beam`
    times more points per codeword generalise better. Measured on GloVe-50 (20k training
    vectors, 8 steps, held-out 5k, encoded with beam 5): greedy 3.063, this 3.015; faiss's
    ResidualQuantizer (beam 5) 3.009; drawing only n of the n·beam residuals instead: 3.066."""
    gen = torch.Generator().manual_seed(seed)
    n, d = x.shape
    residual = x.unsqueeze(1).clone()                                               # (n, 1, d)
    err = (x * x).sum(1, keepdim=True)                                              # (n, 1)
    codebooks = []
    budget = _StepBudget(stop, on_iteration)
    for m in range(M):
        points = residual.reshape(-1, d)
        if max_points is not None and len(points) > max_points:
            points = points[torch.randperm(len(points), generator=gen)[:max_points]]
        cb = kmeans(points.contiguous(), K, iters, gen, budget.stop_for(M - m), budget.timed)
        codebooks.append(cb)
        if m < M - 1:
            t0 = time.monotonic()
            residual, err = beam_step(residual, err, cb, min(beam, residual.shape[1] * K))
            budget.per_step = time.monotonic() - t0
    return codebooks


@torch.no_grad()
def init_from_rq(model, x, iters=LLOYD_ITERS, seed=0, max_points=200_000, stop=None, on_iteration=None,
                 beam=1, beam_points=None):
    """Set the model's normalisation from raw x and its codebooks from residual k-means on it
    (`stop`, `on_iteration`: see the module docstring). beam > 1: beam-trained residual k-means
    (`beam_residual_kmeans`, on at most `beam_points` residuals a step; None: the larger of the
    vectors and BEAM_TRAIN_FLOATS / d)."""
    x = torch.as_tensor(x, dtype=torch.float32)
    if len(x) > max_points:
        gen = torch.Generator().manual_seed(seed)
        x = x[torch.randperm(len(x), generator=gen)[:max_points]]
    mean = x.mean(0)
    std = (x - mean).square().mean().sqrt().clamp_min(1e-12)
    model.set_normalization(mean, std)
    if beam > 1:
        if beam_points is None:
            beam_points = max(len(x), BEAM_TRAIN_FLOATS // x.shape[1])
        codebooks = beam_residual_kmeans((x - mean) / std, model.M, model.K, beam, iters, seed,
                                         beam_points, stop, on_iteration)
    else:
        codebooks = residual_kmeans((x - mean) / std, model.M, model.K, iters, seed, stop, on_iteration)
    model.codebook0.copy_(codebooks[0])
    for step, cb in zip(model.steps, codebooks[1:]):
        step.codebook.copy_(cb)
        if step.preselect is not None:
            step.preselect.copy_(cb)
    return model
