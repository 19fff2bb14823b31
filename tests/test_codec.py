"""The encoder and decoder against plain references: exact codes equal a per-candidate evaluation
of the step networks on real GloVe vectors, prefix decoding equals the training forward
truncated, chunking never changes a result, and the top-k helper keeps torch.topk's set.
(Moved here from test_bench_speed.py: these test the codec, not the benchmark, and need no faiss.)"""
import numpy as np
import pytest
import torch

from qinco_codec import codec
from qinco_codec.model import QincoModel
from qinco_codec.rq_init import init_from_rq


def _randomize(model, scale=0.1, seed=0, codebooks=False):
    """Non-zero step networks, so that the steps are not the identity; random codebooks too with
    codebooks=True (else they are kept)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        if codebooks:
            model.codebook0.copy_(torch.randn(model.codebook0.shape, generator=gen))
        for step in model.steps:
            for name, p in step.named_parameters():
                if codebooks or name not in ("codebook", "preselect"):
                    p.copy_(torch.randn(p.shape, generator=gen) * (scale if "codebook" not in name and name != "preselect" else 0.5))
    return model


def _reference_encode(model, x, A=0):
    """Greedy encoding by plain per-candidate evaluation: at every step, the step module's own
    forward on (codeword, x̂) for every candidate (all K, or the A nearest pre-selection
    codewords), then the candidate with the smallest squared error."""
    with torch.no_grad():
        xn = model.normalize(torch.from_numpy(x))
        d0 = ((xn[:, None, :] - model.codebook0[None]) ** 2).sum(-1)
        codes = [d0.argmin(1)]
        xhat = model.codebook0[codes[0]]
        N, K = len(xn), model.K
        for step in model.steps:
            r = xn - xhat
            if A:
                dp = ((r[:, None, :] - step.preselect[None]) ** 2).sum(-1)
                cand = torch.topk(dp, A, dim=1, largest=False).indices          # (N, A)
            else:
                cand = torch.arange(K).expand(N, K)
            C = cand.shape[1]
            f = step(cand.reshape(-1), xhat.repeat_interleave(C, 0)).view(N, C, -1)
            err = ((r[:, None, :] - f) ** 2).sum(-1)
            j = err.argmin(1)
            codes.append(cand.gather(1, j[:, None])[:, 0])
            xhat = xhat + f[torch.arange(N), j]
    return torch.stack(codes, 1).numpy()


@pytest.mark.parametrize("preset,A", [("qinco1-L2", 0), ("qinco2-XS", 0), ("qinco2-XS", 16)])
def test_exact_codes_equal_plain_reference_on_glove(glove_train, glove_base, preset, A):
    model = _randomize(init_from_rq(QincoModel.from_preset(preset, 50, 5), glove_train[:4000], iters=3),
                       scale=0.05 if preset.startswith("qinco1") else 0.1)
    x = glove_base[:250]
    ours = model.encode(x, A=A, B=1).astype(np.int64)
    ref = _reference_encode(model, x, A)
    same = (ours == ref).all(1)
    assert same.all(), f"{(~same).sum()} of {len(x)} vectors got other codes than the plain reference"


def test_prefix_decode_equals_full_decode_truncated(rng):
    model = _randomize(QincoModel.from_preset("qinco2-XS", 12, 5, K=32), codebooks=True)
    codes = torch.from_numpy(rng.integers(0, 32, (300, 5)))
    with torch.no_grad():
        partial = codec.decode_with_grad(model, codes)                       # x̂_1 .. x̂_M
        for m in range(1, 6):
            torch.testing.assert_close(codec.decode_normalized(model, codes[:, :m]), partial[m - 1],
                                       rtol=1e-5, atol=1e-5)
    full = model.decode(codes.numpy().astype(np.uint8))
    np.testing.assert_array_equal(model.decode(codes.numpy().astype(np.uint8), steps=5), full)


@pytest.mark.parametrize("preset,A,B", [("qinco1-L2", 0, 2), ("qinco2-XS", 8, 3), ("qinco2-XS", 0, 1)])
def test_chunking_never_changes_results(monkeypatch, rng, preset, A, B):
    """Rows are computed independently of each other. (d = 16: MKL's kernel for very small
    matrices, e.g. 10 x 10, rounds differently depending on a row's memory alignment.)"""
    model = _randomize(QincoModel.from_preset(preset, 16, 4, K=32), codebooks=True)
    x = torch.from_numpy(rng.standard_normal((97, 16)).astype(np.float32))
    with torch.no_grad():
        codes = codec.encode_normalized(model, x, A, B)
        dec = codec.decode_normalized(model, codes)
        monkeypatch.setattr(codec, "CPU_CHUNK_FLOATS", 37 * 300)
        monkeypatch.setattr(codec, "CPU_DECODE_ROWS", 37)
        assert torch.equal(codec.encode_normalized(model, x, A, B), codes)
        assert torch.equal(codec.decode_normalized(model, codes), dec)


@pytest.mark.parametrize("mode", ["no_grad", "inference_mode"])
def test_worker_threads_give_the_single_thread_codes(monkeypatch, rng, mode):
    """With 2 torch threads the chunks run on worker threads (`codec.each_chunk`): the same
    codes as with 1 thread, single-threaded operations in the workers, the caller's grad mode kept
    by the workers (no autograd graph on the model's parameters), and torch's thread count
    restored afterwards."""
    model = _randomize(QincoModel.from_preset("qinco2-XS", 96, 4, K=64), codebooks=True)   # expanded error
    x = torch.from_numpy(rng.standard_normal((300, 96)).astype(np.float32))
    monkeypatch.setattr(codec, "CPU_CHUNK_FLOATS", 40 * 256)      # several chunks
    context = torch.no_grad if mode == "no_grad" else torch.inference_mode
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        with context():
            one = codec.encode_normalized(model, x, 8, 3)
        seen = []
        real = codec._encode_chunk

        def spy(*args):
            seen.append((threading_ident(), torch.get_num_threads(), torch.is_grad_enabled()))
            return real(*args)

        monkeypatch.setattr(codec, "_encode_chunk", spy)
        torch.set_num_threads(2)
        with context():
            two = codec.encode_normalized(model, x, 8, 3)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, two) and not two.requires_grad
    workers = {t for t, _, _ in seen}
    assert len(seen) > 2 and threading_ident() not in workers and len(workers) <= 2, seen
    assert all(n == 1 and not grad for _, n, grad in seen), seen


def threading_ident():
    import threading
    return threading.get_ident()


def test_smallest_is_topks_set_with_ties_and_nans():
    gen = torch.Generator().manual_seed(0)
    d = torch.randn(50, 64, generator=gen)
    ref = torch.topk(d, 8, dim=1, largest=False).indices.sort(1).values
    assert torch.equal(codec._smallest(d, 8).sort(1).values, ref)
    d[3, :10] = -5.0                          # a tie at the k-th value: falls back to torch.topk
    d[7, 2] = float("nan")
    got = codec._smallest(d, 8)
    assert torch.equal(got, torch.topk(d, 8, dim=1, largest=False).indices)
