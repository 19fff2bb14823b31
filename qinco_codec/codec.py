"""Encoding (greedy, pre-selection, beam search) and decoding in the model's normalised space.

These functions work on torch tensors that already live on the right device; `QincoModel.encode`
and `.decode` wrap them with input checks, normalisation, batching and numpy conversion.

Speed (CPU): every step's tables are computed once per call, then the rows are processed in
chunks whose candidate buffer (chunk vectors x hypotheses x candidates x width floats, 3 MiB)
stays in cache, all M steps per chunk; candidates are evaluated by `QincoStep.candidate_residuals`
(one reused buffer, matmuls accumulating into it), pre-selection picks its A candidates with
numpy's partition, and decoding runs `QincoStep.decode_step` on chunks of 2048 vectors. Chunking
never changes a vector's result: every row is computed independently of the others (tested).
"""
import threading
from contextlib import contextmanager

import numpy as np
import torch

from .architecture import CandidateLayout
from .steps import Workspace

# Floats of the candidate buffer [z | p | c − r] per chunk on the CPU (3 MiB): 2048 GEMM rows of a
# d = 128 QINCo1 step (width de + h = 384), about 3,200 of qinco2-XS's (242), the sizes where
# this machine's sgemm ran fastest with the buffer still mostly in cache.
CPU_CHUNK_FLOATS = 3 << 18
# Vectors per decoding chunk on the CPU (their (rows, h) activations stay in L2).
CPU_DECODE_ROWS = 2048


def encode_chunk_rows(model):
    """GEMM rows (vectors x hypotheses x candidates) of one encoding chunk on the CPU."""
    width = CandidateLayout.of(model.config.step).width if model.steps else model.dim
    return max(1, CPU_CHUNK_FLOATS // width)


def _sq_dist_to_rows(r, rows, row_sqnorms):
    """‖r − rows_k‖² minus ‖r‖² (enough to rank k): r (..., D), rows (K, D) -> (..., K).
    One matmul with alpha = −2 accumulating onto the norms (bit-identical to norms − 2·(r·rows))."""
    r2 = r.reshape(-1, r.shape[-1])
    return torch.addmm(row_sqnorms, r2, rows.T, alpha=-2.0).view(r.shape[:-1] + (rows.shape[0],))


def _smallest(d, k):
    """Indices of the k smallest entries of each row of d (R, K): the set torch.topk(largest=False)
    picks, in increasing index order. On the CPU, numpy's SIMD partition finds each row's k-th
    smallest value (several times faster than torch.topk's per-row selection) and the entries not
    above it are the answer; rows with ties at that value (or NaNs) fall back to torch.topk."""
    if d.device.type != "cpu" or d.dtype != torch.float32 or k >= d.shape[1]:
        return torch.topk(d, k, dim=1, largest=False, sorted=True).indices
    dn = d.numpy()
    kth = np.partition(dn, k - 1, axis=1)[:, k - 1:k]
    flat = np.flatnonzero(dn <= kth)
    if len(flat) != k * len(dn):
        return torch.topk(d, k, dim=1, largest=False, sorted=True).indices
    return torch.from_numpy((flat % dn.shape[1]).reshape(len(dn), k))


def _gather_rows(t, index):
    """t (N, F, X...) gathered along dim 1 by index (N, G) -> (N, G, X...): one index_select of
    whole rows of the flattened (N·F, X...) tensor (about 15x faster on the CPU than torch.gather
    with an expanded index, which visits every element)."""
    N, F = t.shape[:2]
    flat = (index + torch.arange(0, N * F, F, device=index.device).unsqueeze(1)).reshape(-1)
    return t.reshape((N * F,) + t.shape[2:]).index_select(0, flat).view(index.shape + t.shape[2:])


def _chunks(n, size, device):
    """Ranges of about `size` rows (one range on GPUs), of nearly equal sizes: no short tail
    chunk, whose matmuls of 1 to 3 rows BLAS would round differently (matrix-vector kernels)
    from the same rows inside a larger matmul."""
    if device.type != "cpu" or n == 0:
        return [(0, n)] if n else []
    size = max(1, size)
    count = max(1, -(-n // size))
    bounds = [n * i // count for i in range(count + 1)]
    return list(zip(bounds[:-1], bounds[1:]))


@torch.no_grad()
def encode_normalized(model, x, A=0, B=1, dtype=torch.float32, expanded=None):
    """Codes (N, M) int64 for normalised vectors x (N, D).

    A: candidates pre-selected per hypothesis with the step's plain codebook (0 or >= K: all K).
    B: beam width (1: greedy). The best final hypothesis is returned.
    dtype: float32 (exact) or bfloat16 (the candidate networks run in bfloat16; faster on CPUs
    with bf16 matmul, distances and reconstructions stay float32).
    expanded: score QINCo2 candidates by the expanded error (None: where it saves work, see
    `architecture.expands_error`; False: the direct ‖f − r‖², the reference in tests).
    """
    K, M = model.K, model.M
    B = max(1, min(B, K))
    use_pre = [0 < A < K and step.preselect is not None for step in model.steps]
    tables = [step.candidate_tables(dtype, expanded) for step in model.steps]
    pre_sq = [(s.preselect * s.preselect).sum(1) if u else None for s, u in zip(model.steps, use_pre)]
    c0_sq = (model.codebook0 * model.codebook0).sum(1)
    # steps whose correction is exactly their codeword (W_out = 0: an untrained QINCo2 step, or a
    # codebooks-only model): scored as residual quantization, ‖r − c‖² from one matmul
    identity = [(s.codebook * s.codebook).sum(1) if s.is_identity() else None for s in model.steps]
    width = max(A, 1) if any(use_pre) else K
    hypotheses = B if M > 1 else 1
    if all(c is not None for c in identity):  # residual quantization: (hypotheses, K) distances a row
        rows = CPU_CHUNK_FLOATS // (hypotheses * (K + model.dim))
    else:
        rows = encode_chunk_rows(model) // (hypotheses * width)
    codes = torch.empty((len(x), M), dtype=torch.int64, device=x.device)

    def encode_rows(s, e, ws):
        codes[s:e] = _encode_chunk(model, x[s:e], A, B, tables, use_pre, pre_sq, c0_sq, ws, identity)

    each_chunk(encode_rows, _chunks(len(x), rows, x.device), x.device)
    return codes


def each_chunk(fn, ranges, device):
    """fn(start, end, workspace) for every range. On the CPU with T > 1 torch threads, T worker
    threads take whole chunks, each chunk's operations running on its own thread (torch's
    intra-op threads set to 1 meanwhile, then restored): the step networks' matmuls are too
    narrow (64 to 384 columns) to split well, so whole chunks scale better, and single-threaded
    operations have no barrier at which a descheduled thread is waited for on a busy machine.
    Every chunk's operations are single-threaded either way, so results (codes, decoded vectors,
    search shortlists) never depend on the thread count. Used by encoding, QincoModel.decode and
    the IVF scan (search/engine.py). The workers inherit the caller's grad and inference mode."""
    threads = torch.get_num_threads() if device.type == "cpu" else 1
    if threads == 1 or len(ranges) <= 1:
        ws = Workspace()
        with _single_threaded(device):
            for s, e in ranges:
                fn(s, e, ws)
        return
    from concurrent.futures import ThreadPoolExecutor

    inference, grad = torch.is_inference_mode_enabled(), torch.is_grad_enabled()
    pending = iter(ranges)
    lock = threading.Lock()

    def worker():
        ws = Workspace()
        with torch.inference_mode(inference), torch.set_grad_enabled(grad):
            while True:
                with lock:
                    rng = next(pending, None)
                if rng is None:
                    return
                fn(rng[0], rng[1], ws)

    with _single_threaded(device), ThreadPoolExecutor(min(threads, len(ranges))) as pool:
        for job in [pool.submit(worker) for _ in range(min(threads, len(ranges)))]:
            job.result()


@contextmanager
def _single_threaded(device):
    """torch's intra-op threads set to 1 on the CPU for the block (restored after)."""
    if device.type != "cpu":
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _encode_chunk(model, x, A, B, tables, use_pre, pre_sq, c0_sq, ws, identity):
    M, N, D = model.M, len(x), model.dim
    C0 = model.codebook0
    keep = 1 if M == 1 else B
    _, idx = torch.topk(_sq_dist_to_rows(x, C0, c0_sq), keep, dim=1, largest=False, sorted=True)
    codes = idx.unsqueeze(-1)                                            # (N, F, 1)
    xhat = C0[idx]                                                       # (N, F, D)
    for m, step in enumerate(model.steps, start=2):
        keep = 1 if m == M else B
        F = xhat.shape[1]
        r = x.unsqueeze(1) - xhat                                        # (N, F, D)
        tb = tables[m - 2]
        cand = None
        if use_pre[m - 2]:
            cand = _smallest(_sq_dist_to_rows(r.reshape(N * F, D), step.preselect, pre_sq[m - 2]), A)  # (N·F, A)
        c_sq = identity[m - 2]
        if c_sq is not None:
            rr = r.reshape(N * F, D)
            err = _sq_dist_to_rows(rr, step.codebook, c_sq).add_(torch.linalg.vecdot(rr, rr).unsqueeze(1))
            err = err if cand is None else err.gather(1, cand)          # (N·F, K or A)
            n_cand = err.shape[1]
            _, j = torch.topk(err.view(N, F * n_cand), keep, dim=1, largest=False, sorted=True)
        elif tb.expanded:
            err, z = step.candidate_errors(tb, xhat.reshape(N * F, D), r.reshape(N * F, D), cand, ws, with_z=True)
            n_cand = err.shape[1]
            _, j = torch.topk(err.view(N, F * n_cand), keep, dim=1, largest=False, sorted=True)
        else:
            e = step.candidate_residuals(tb, xhat.reshape(N * F, D), r.reshape(N * F, D), cand, ws)
            n_cand = e.shape[1]
            e = e.view(N, F * n_cand, D)                                 # f − r per candidate
            _, j = torch.topk(torch.linalg.vecdot(e, e), keep, dim=1, largest=False, sorted=True)
        parent = torch.div(j, n_cand, rounding_mode="floor")
        code = j % n_cand if cand is None else cand.reshape(N, -1).gather(1, j)
        if c_sq is not None:                  # the kept hypotheses, reconstructed as the decoder will: x̂ + f
            xhat = step.decode_step(tb, _gather_rows(xhat, parent).reshape(N * keep, D),
                                    code.reshape(-1)).view(N, keep, D)
        elif tb.expanded:                     # x̂ + c + W_out z from the winners' z
            z_win = _gather_rows(z.reshape(N, F * n_cand, z.shape[-1]), j).reshape(N * keep, -1)
            xhat = step.apply_correction(tb, _gather_rows(xhat, parent).reshape(N * keep, D),
                                         code.reshape(-1), z_win).view(N, keep, D)
        else:
            xhat = x.unsqueeze(1) + _gather_rows(e, j)                   # x + (f − r) = x̂ + f
        codes = torch.cat([_gather_rows(codes, parent), code.unsqueeze(-1)], dim=-1)
    return codes[:, 0, :]


@torch.no_grad()
def decode_normalized(model, codes, dtype=torch.float32):
    """Reconstructions (N, D) in normalised space from codes (N, m), m <= M (a prefix).
    float32 is the reference decoder; bfloat16 runs the step networks in bfloat16 (opt-in)."""
    steps = model.steps[: codes.shape[1] - 1]
    tables = [step.decode_tables(dtype) for step in steps]
    out = torch.empty((len(codes), model.dim), dtype=torch.float32, device=codes.device)
    for s, e in _chunks(len(codes), CPU_DECODE_ROWS, codes.device):
        cb = codes[s:e]
        xhat = model.codebook0[cb[:, 0]]
        for j, (step, tb) in enumerate(zip(steps, tables), start=1):
            xhat = step.decode_step(tb, xhat, cb[:, j])
        out[s:e] = xhat
    return out


def decode_with_grad(model, codes):
    """All M partial reconstructions with gradients (training): list of (N, D) tensors."""
    xhat = model.codebook0[codes[:, 0]]
    outs = [xhat]
    for j, step in enumerate(model.steps, start=1):
        xhat = xhat + step(codes[:, j], xhat)
        outs.append(xhat)
    return outs
