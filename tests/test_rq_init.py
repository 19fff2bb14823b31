"""The residual k-means start: at high dimension its codebooks must not collapse into singleton
clusters (a centroid that only encodes its own training point), and it must start as well as
faiss's ResidualQuantizer trained the same way (greedy, plain k-means per step)."""
import numpy as np
import pytest
import torch

from qinco_codec.rq_init import min_cluster_points, nearest, residual_kmeans


def _anisotropic(n, D, seed):
    """Unit-norm vectors with a decaying spectrum: what sentence embeddings look like."""
    g = torch.Generator().manual_seed(seed)
    scales = torch.tensor([1.0 / (1 + i) ** 0.6 for i in range(D)])
    basis = torch.linalg.qr(torch.randn(D, D, generator=g))[0] * scales
    x = torch.randn(n, D, generator=g) @ basis.T
    return x / x.norm(dim=1, keepdim=True)


def _normalised(train, other):
    mean = train.mean(0)
    std = (train - mean).square().mean().sqrt()
    return (train - mean) / std, (other - mean) / std


def _prefix_mse(x, codebooks):
    r, out = x.clone(), []
    for cb in codebooks:
        idx, _ = nearest(r, cb)
        r -= cb[idx]
        out.append(float(r.square().sum(1).mean()))
    return out


def test_high_dimensional_codebooks_have_no_singleton_clusters():
    x = _anisotropic(6000, 256, seed=1)
    xt, _ = _normalised(x, x)
    codebooks = residual_kmeans(xt, 6, 64, iters=8, seed=0)
    r = xt.clone()
    for m, cb in enumerate(codebooks, start=1):
        idx, _ = nearest(r, cb)
        counts = torch.bincount(idx, minlength=64)
        # with the earlier rule (only empty clusters re-seeded, from far points) 13 held one point
        assert int((counts <= 1).sum()) <= 4, (m, sorted(counts.tolist())[:10])
        r -= cb[idx]


def test_start_matches_faiss_residual_quantizer_on_held_out_vectors():
    faiss = pytest.importorskip("faiss")
    x = _anisotropic(9000, 256, seed=2)
    xt, xb = _normalised(x[:7000].contiguous(), x[7000:].contiguous())
    M, K = 6, 64
    ours = residual_kmeans(xt, M, K, iters=10, seed=0)
    rq = faiss.ResidualQuantizer(xt.shape[1], M, 6)
    rq.max_beam_size, rq.train_type = 1, 0   # greedy, plain k-means per step: the same algorithm
    rq.cp.niter = 10
    rq.train(xt.numpy())
    theirs = [torch.from_numpy(c) for c in faiss.vector_to_array(rq.codebooks).reshape(M, K, xt.shape[1])]
    a, b = _prefix_mse(xb, ours), _prefix_mse(xb, theirs)
    assert a[-1] <= b[-1] * 1.005, (a, b)


def test_min_cluster_points():
    assert min_cluster_points(100, 256) == 2.0
    assert min_cluster_points(256 * 80, 256) == 10.0


def _beam_mse(x, codebooks, beam):
    """Error of beam-search codes (beam_step all the way) under the codebooks: (n,) -> float."""
    from qinco_codec.rq_init import beam_step
    r, e = x.unsqueeze(1).clone(), (x * x).sum(1, keepdim=True)
    for cb in codebooks:
        r, e = beam_step(r, e, cb, min(beam, r.shape[1] * len(cb)))
    return float(e[:, 0].mean())


def test_beam_step_keeps_the_best_extensions():
    from qinco_codec.rq_init import beam_step
    g = torch.Generator().manual_seed(3)
    x = torch.randn(40, 8, generator=g)
    cb1, cb2 = torch.randn(5, 8, generator=g), torch.randn(6, 8, generator=g)
    r, e = beam_step(x.unsqueeze(1), (x * x).sum(1, keepdim=True), cb1, 3)
    r, e = beam_step(r, e, cb2, 4)
    # brute force over all 5 x 6 pairs, restricted to the 3 best first steps (what a beam keeps)
    for i in range(len(x)):
        first = ((x[i] - cb1) ** 2).sum(1).argsort()[:3]
        errs = sorted(float(((x[i] - cb1[a] - cb2[b]) ** 2).sum()) for a in first for b in range(6))
        np.testing.assert_allclose(e[i].numpy(), errs[:4], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose((r[i] ** 2).sum(1).numpy(), e[i].numpy(), rtol=1e-4, atol=1e-4)


def test_beam_of_one_is_greedy_residual_kmeans():
    from qinco_codec.rq_init import beam_residual_kmeans
    x = _anisotropic(3000, 32, seed=4)
    greedy = residual_kmeans(x, 3, 16, iters=5, seed=0)
    beam1 = beam_residual_kmeans(x, 3, 16, beam=1, iters=5, seed=0)
    for a, b in zip(greedy, beam1):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-5)


def test_beam_trained_codebooks_code_held_out_vectors_better():
    from qinco_codec.rq_init import beam_residual_kmeans
    x = _anisotropic(8000, 64, seed=5)
    xt, xb = _normalised(x[:6000].contiguous(), x[6000:].contiguous())
    greedy = residual_kmeans(xt, 4, 32, iters=8, seed=0)
    beam = beam_residual_kmeans(xt, 4, 32, beam=5, iters=8, seed=0)
    assert _beam_mse(xb, beam, 5) < _beam_mse(xb, greedy, 5)


def test_a_stopped_beam_trained_start_is_complete_and_an_unstopped_one_unchanged():
    """The training budget's stop: a stop that never fires changes nothing; one that fires at
    once still gives every codebook (the initial draws); it is asked before every Lloyd
    iteration, with a reserve once one has been timed."""
    from qinco_codec.rq_init import beam_residual_kmeans
    x = _anisotropic(2000, 16, seed=6)
    plain = beam_residual_kmeans(x, 3, 8, beam=4, iters=4, seed=0)
    reserves = []
    never = beam_residual_kmeans(x, 3, 8, beam=4, iters=4, seed=0,
                                 stop=lambda reserve: reserves.append(reserve) or False)
    for a, b in zip(plain, never):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert len(reserves) == 3 * 4 and reserves[0] == 0.0 and min(reserves[1:]) > 0
    stopped = beam_residual_kmeans(x, 3, 8, beam=4, iters=4, seed=0, stop=lambda reserve: True)
    assert [tuple(c.shape) for c in stopped] == [(8, 16)] * 3
    assert all(bool(torch.isfinite(c).all()) for c in stopped)
    assert _beam_mse(x, stopped, 4) > _beam_mse(x, plain, 4)
