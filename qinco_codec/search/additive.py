"""The additive decoder of a QINCo model: one fixed codebook per step, fitted by least squares to
the model's own reconstructions, so that x̂ ≈ Σ_m C_m[code_m] (QINCo paper §4.3, QINCo2 §5).

Why: QINCo's codebooks depend on the codes before them, so a distance to a QINCo reconstruction
needs the network. With fixed codebooks a query's distance to every code is a sum of M table
lookups (lut.py), cheap enough to scan a whole file; the best few hundred are then re-ranked with
the real decoder (engine.py). The fit only sees codes and decoded vectors, so it works on any
.qnc whatever model wrote it, and on a sample of the file's own rows.

Two fits, same objective min_C ‖X − Σ_m onehot(i_m)·C_m‖²:

* `method="lstsq"` (default): exact least squares by the normal equations, built from pair
  counts (the (MK)² co-occurrence matrix) and code-wise sums of X, never the n × MK one-hot
  matrix (8 GB at n = 1M, M = 8), solved by a Cholesky factorisation with a tiny ridge (the
  system is singular: every step's one-hots sum to the same column of ones).
* `method="alternating"`: block coordinate descent, each step's codebook the mean of the
  residual left by the others over the rows holding each code, starting from the greedy
  residual means (RQ-like); `rounds` sweeps. O(rounds · n · M · d), no (MK)² system.

Measured on GloVe-50 (qinco2-XS trained 20 min, 16 B, fit on 32,768 decoded rows of a 100k
base, error on 20,000 other rows, relative to their variance): lstsq 5.5e-6 in 10.4 s (load 14
on 2 cores; an M·K = 4096 system); alternating 3.3e-2 from the greedy start alone, 1.2e-4
after 2 rounds (4.7 s), 6.3e-6 after 4 (7.5 s), 5.5e-6 after 8 (15.3 s). lstsq is the default:
the exact optimum, and cheaper than alternating rounds that reach it. For a prefix of b steps
fit the prefix (codes[:, :b] against the b-step reconstructions): at b = 8 of 16 its held-out
error is 5.5e-5 against 0.36 for the first 8 codebooks of the full fit (whose later codebooks
absorb part of the earlier steps' work). How additive a model is depends on how far it trained
and on the encoder: a 60-epoch GloVe-50 16-B model with beam-16 codes of the whole base is 5.7e-2
off (docs/experiments/2026-12-03-shortlist-row-terms.md), so its shortlists must be longer.
"""
import numpy as np

from ..errors import InputError

# Ridge added to the normal equations, relative to the mean diagonal entry (rows per code).
RIDGE = 1e-6
DEFAULT_ROUNDS = 4
METHODS = ("lstsq", "alternating")


def _check(codes, decoded, K):
    codes = np.asarray(codes)
    decoded = np.asarray(decoded, dtype=np.float32)
    if codes.ndim != 2 or decoded.ndim != 2 or len(codes) != len(decoded):
        raise InputError(f"fit_additive: expected codes (n, M) and decoded (n, d) with the same n, "
                         f"got {codes.shape} and {decoded.shape}")
    if len(codes) == 0:
        raise InputError("fit_additive: expected at least one row, got 0")
    if codes.dtype.kind not in "iu":
        raise InputError(f"fit_additive: expected integer codes, got dtype {codes.dtype}")
    K = int(codes.max()) + 1 if K is None else int(K)
    if codes.min() < 0 or codes.max() >= K:
        raise InputError(f"fit_additive: codes must lie in [0, {K}), got [{codes.min()}, {codes.max()}]")
    return codes.astype(np.int64), decoded, K


def fit_additive(codes, decoded, K=None, *, method="lstsq", rounds=DEFAULT_ROUNDS):
    """Fixed codebooks (M, K, d) float32 such that decoded ≈ Σ_m C[m, codes[:, m]].

    codes (n, M) integers in [0, K) (K default: the largest code + 1), decoded (n, d) the model's
    reconstructions of those codes (at the same prefix: fit a prefix search on prefix codes and
    prefix reconstructions). A code never seen gets a zero codeword (lstsq: the ridge's answer)."""
    codes, decoded, K = _check(codes, decoded, K)
    if method == "lstsq":
        return _fit_lstsq(codes, decoded, K)
    if method == "alternating":
        return _fit_alternating(codes, decoded, K, rounds)
    raise InputError(f"fit_additive: method must be one of {METHODS}, got {method!r}")


def reconstruct(codes, codebooks):
    """Σ_m C[m, codes[:, m]]: (n, d) float32 for codes (n, M) and codebooks (M, K, d)."""
    codes = np.asarray(codes)
    out = np.zeros((len(codes), codebooks.shape[2]), np.float32)
    for m in range(codes.shape[1]):
        out += codebooks[m][codes[:, m]]
    return out


def _group_mean(values, idx, K):
    """Per code k: the mean of values (n, d) over rows with idx == k (zeros where none)."""
    sums = np.zeros((K, values.shape[1]), np.float64)
    np.add.at(sums, idx, values) if len(idx) < 1024 else _add_rows(sums, idx, values)
    counts = np.bincount(idx, minlength=K).astype(np.float64)
    return (sums / np.maximum(counts, 1)[:, None]).astype(np.float32)


def _add_rows(sums, idx, values):
    """sums[idx[i]] += values[i], by a sort and segment sums (np.add.at is slow)."""
    order = np.argsort(idx, kind="stable")
    sorted_idx = idx[order]
    starts = np.flatnonzero(np.r_[True, sorted_idx[1:] != sorted_idx[:-1]])
    sums[sorted_idx[starts]] += np.add.reduceat(values[order].astype(np.float64), starts, axis=0)


def _fit_alternating(codes, x, K, rounds):
    n, M = codes.shape
    C = np.zeros((M, K, x.shape[1]), np.float32)
    residual = x.astype(np.float32, copy=True)
    for m in range(M):                     # greedy start: each step the mean residual per code
        C[m] = _group_mean(residual, codes[:, m], K)
        residual -= C[m][codes[:, m]]
    for _ in range(rounds):                # then block coordinate descent sweeps
        for m in range(M):
            residual += C[m][codes[:, m]]
            C[m] = _group_mean(residual, codes[:, m], K)
            residual -= C[m][codes[:, m]]
    return C


def _normal_equations(codes, x, K):
    """G (MK, MK) float64, G[(m1,k1),(m2,k2)] = rows holding both codes (ridge on the diagonal),
    and b (MK, d) float64, the code-wise sums of x."""
    n, M = codes.shape
    MK = M * K
    G = np.zeros((MK, MK), np.float64)
    for m1 in range(M):
        for m2 in range(m1, M):
            pair = np.bincount(codes[:, m1] * K + codes[:, m2], minlength=K * K).reshape(K, K)
            G[m1 * K:(m1 + 1) * K, m2 * K:(m2 + 1) * K] = pair
            if m2 != m1:
                G[m2 * K:(m2 + 1) * K, m1 * K:(m1 + 1) * K] = pair.T
    b = np.zeros((MK, x.shape[1]), np.float64)
    for m in range(M):
        _add_rows(b[m * K:(m + 1) * K], codes[:, m], x)
    G[np.diag_indices(MK)] += RIDGE * max(1.0, n / K) + 1e-12
    return G, b


def _fit_lstsq(codes, x, K):
    import torch

    M, d = codes.shape[1], x.shape[1]
    G, b = _normal_equations(codes, x, K)
    bt = torch.from_numpy(b)
    # Factor G in its own memory: G is symmetric, so its transpose is the same matrix in the
    # column-major order LAPACK works in, and no (MK)² copy is made (128 MiB at M·K = 4096).
    L = torch.from_numpy(G).mT
    L, info = torch.linalg.cholesky_ex(L, out=(L, torch.empty((), dtype=torch.int32)))
    if int(info) == 0:
        C = torch.cholesky_solve(bt, L)
    else:   # numerically indefinite: the slower general solver, on G built again (its memory
            # now holds the failed factor)
        C = torch.linalg.lstsq(torch.from_numpy(_normal_equations(codes, x, K)[0]), bt).solution
    return C.numpy().reshape(M, K, d).astype(np.float32)
