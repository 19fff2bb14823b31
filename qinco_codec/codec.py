"""Encoding (greedy, pre-selection, beam search) and decoding in the model's normalised space.

These functions work on torch tensors that already live on the right device; `QincoModel.encode`
and `.decode` wrap them with input checks, normalisation, batching and numpy conversion.
"""
import torch


def _sq_dist_to_rows(r, rows, row_sqnorms):
    """‖r − rows_k‖² minus ‖r‖² (enough to rank k): r (..., D), rows (K, D) -> (..., K)."""
    return row_sqnorms - 2.0 * (r @ rows.T)


def _gather_rows(t, index):
    """t (N, F, X...) gathered along dim 1 by index (N, G) -> (N, G, X...)."""
    shape = index.shape + t.shape[2:]
    expanded = index.reshape(index.shape + (1,) * (t.dim() - 2)).expand(shape)
    return t.gather(1, expanded)


@torch.no_grad()
def encode_normalized(model, x, A=0, B=1, dtype=torch.float32):
    """Codes (N, M) int64 for normalised vectors x (N, D).

    A: candidates pre-selected per hypothesis with the step's plain codebook (0 or >= K: all K).
    B: beam width (1: greedy). The best final hypothesis is returned.
    dtype: float32 (exact) or bfloat16 (the candidate networks run in bfloat16; faster on CPUs
    with bf16 matmul, distances and reconstructions stay float32).
    """
    K, M = model.K, model.M
    B = max(1, min(B, K))
    C0 = model.codebook0
    keep = 1 if M == 1 else B
    d0 = _sq_dist_to_rows(x, C0, (C0 * C0).sum(1))
    _, idx = torch.topk(d0, keep, dim=1, largest=False, sorted=True)     # (N, F)
    codes = idx.unsqueeze(-1)                                            # (N, F, 1)
    xhat = C0[idx]                                                       # (N, F, D)
    for m, step in enumerate(model.steps, start=2):
        keep = 1 if m == M else B
        tables = step.candidate_tables(dtype)
        r = x.unsqueeze(1) - xhat                                        # (N, F, D)
        use_pre = 0 < A < K and step.preselect is not None
        if use_pre:
            pre = step.preselect
            _, cand = torch.topk(_sq_dist_to_rows(r, pre, (pre * pre).sum(1)), A, dim=-1,
                                 largest=False, sorted=True)             # (N, F, A)
            f = step.corrections(tables, xhat, cand)                     # (N, F, A, D)
        else:
            cand = None
            f = step.corrections(tables, xhat)                           # (N, F, K, D)
        n_cand = f.shape[2]
        err = (r.unsqueeze(2) - f).square_().sum(-1)                     # (N, F, n_cand)
        _, j = torch.topk(err.reshape(len(x), -1), keep, dim=1, largest=False, sorted=True)
        parent = torch.div(j, n_cand, rounding_mode="floor")
        code = j % n_cand if cand is None else cand.reshape(len(x), -1).gather(1, j)
        f_sel = _gather_rows(f.reshape(len(x), -1, f.shape[-1]), j)
        xhat = _gather_rows(xhat, parent) + f_sel
        codes = torch.cat([_gather_rows(codes, parent), code.unsqueeze(-1)], dim=-1)
    return codes[:, 0, :]


@torch.no_grad()
def decode_normalized(model, codes, dtype=torch.float32):
    """Reconstructions (N, D) in normalised space from codes (N, m), m <= M (a prefix).
    float32 is the reference decoder; bfloat16 runs the step networks in bfloat16 (opt-in)."""
    xhat = model.codebook0[codes[:, 0]]
    for j, step in enumerate(model.steps[: codes.shape[1] - 1], start=1):
        tables = step.candidate_tables(dtype)
        xhat = xhat + step.corrections(tables, xhat, codes[:, j : j + 1]).squeeze(-2)
    return xhat


def decode_with_grad(model, codes):
    """All M partial reconstructions with gradients (training): list of (N, D) tensors."""
    xhat = model.codebook0[codes[:, 0]]
    outs = [xhat]
    for j, step in enumerate(model.steps, start=1):
        xhat = xhat + step(codes[:, j], xhat)
        outs.append(xhat)
    return outs
