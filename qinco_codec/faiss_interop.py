"""Export a QINCo1 model to faiss (`faiss.IndexQINCo`, faiss >= 1.9).

faiss's CPU QINCo (faiss/utils/NeuralNet.cpp) computes, for step m with codeword c = C_m[i]:

    z = c + MLPconcat([c; x̂])            (Linear 2d -> d with bias, codeword first)
    z = z + linear2(relu(linear1(z)))     (L times, both without bias)
    x̂ ← x̂ + z

with x̂ = C_0[i_0] after the first step, and encodes greedily and exhaustively (nearest of the K
candidates x̂ + z, per step). That is our QINCo1 step exactly, but faiss works on raw vectors
while our networks work on x_n = (x − mean) / std. The normalisation is folded into the weights:
with s = std > 0 and x̂' = s·x̂_n + mean, c' = s·c,

    s·z = c' + W_c c' + W_x (x̂' − mean) + s·b = c' + W_c c' + W_x x̂' + (s·b − W_x mean)

and each block r(z) = W2 relu(W1 z) is positively homogeneous (r(s·z) = s·r(z) for s > 0), so
z' = s·z follows the same recursion with the block weights unchanged, and x̂'_m = s·x̂_n,m + mean.
Hence C_0' = s·C_0 + mean, C_m' = s·C_m, W_concat' = W_concat, b' = s·b − W_x mean, and since
‖x − x̂'‖² = s²‖x_n − x̂_n‖² the nearest candidate is the same in both spaces (up to float
rounding of near-ties).

Codes: faiss packs M codes of log2(K) bits per vector (`index.code_size` bytes); for K = 256 that
is byte-for-byte our uint8 code matrix. `codes_to_faiss` / `codes_from_faiss` convert for any K.
faiss (checked with 1.15.1) cannot write an IndexQINCo with write_index: keep the model file and
call `to_faiss` again instead.
"""
import math

import numpy as np

from .architecture import faiss_representable
from .errors import InputError
from .optional import require_faiss

__all__ = ["to_faiss", "codes_to_faiss", "codes_from_faiss"]


def _nbits(K):
    if not isinstance(K, int) or K < 2 or K & (K - 1):
        raise InputError(f"faiss IndexQINCo needs K to be a power of two >= 2, got K={K!r}")
    nbits = int(math.log2(K))
    if nbits > 16:
        raise InputError(f"faiss export supports K up to 65536 (16 bits per code), got K={K}")
    return nbits


def _check_representable(model):
    """(dim, M, K, nbits, L, h) of a model faiss's IndexQINCo can hold, else InputError: faiss
    implements the QINCo1 step (no projections, de = D) and folds the normalisation into it."""
    cfg, s = model.config, model.config.step
    if not faiss_representable(cfg):
        raise InputError(f"faiss IndexQINCo implements the QINCo1 architecture only; this model is "
                         f"{cfg.arch!r} (preset {cfg.preset!r}): it cannot be exported to faiss")
    nbits = _nbits(s.K)
    std = float(model.std)
    if not (math.isfinite(std) and std > 0):
        raise InputError(f"model std must be finite and > 0 to fold the normalisation, got {std}")
    if not np.all(np.isfinite(model.mean.detach().cpu().numpy())):
        raise InputError("model mean has non-finite values")
    return s.D, cfg.M, s.K, nbits, s.L, s.h


def _f32(a):
    return np.ascontiguousarray(a, dtype=np.float32)


def to_faiss(model):
    """A trained `faiss.IndexQINCo` (empty, `is_trained=True`) equivalent to a QINCo1 `model`.

    `index.sa_encode(x)` on raw float32 vectors gives the model's greedy exhaustive codes
    (`model.encode(x, A=0, B=1)`), packed as faiss bitstrings (for K = 256: our uint8 codes), and
    `index.sa_decode(codes)` its reconstructions (up to float rounding). Note that faiss's encoder
    materialises n·K·2d floats per call: encode large sets in batches. Raises InputError for
    models faiss cannot represent (QINCo2, non power-of-two K, ...) or when faiss is missing.
    """
    faiss = require_faiss("IndexQINCo")
    D, M, K, nbits, L, h = _check_representable(model)

    def np64(t):
        return t.detach().cpu().double().numpy()

    s = float(model.std)
    mean = np64(model.mean)
    index = faiss.IndexQINCo(D, M, nbits, L, h)
    q = index.qinco
    if (q.d, q.K, q.M, q.L, q.h) != (D, K, M, L, h):     # defensive: faiss layout changed
        raise InputError(f"faiss built a QINCo of shape {(q.d, q.K, q.M, q.L, q.h)}, "
                         f"expected {(D, K, M, L, h)}")
    q.codebook0.from_array(_f32(s * np64(model.codebook0) + mean))
    for m, step in enumerate(model.steps):
        fs = q.get_step(m)
        fs.codebook.from_array(_f32(s * np64(step.codebook)))
        W = np64(step.concat.weight)                      # (D, 2D): [W_c | W_x], codeword first
        b = s * np64(step.concat.bias) - W[:, D:] @ mean
        fs.MLPconcat.from_array(_f32(W), _f32(b))
        for l, blk in enumerate(step.blocks):
            fb = fs.get_residual_block(l)
            fb.linear1.from_array(_f32(np64(blk[0].weight)))
            fb.linear2.from_array(_f32(np64(blk[2].weight)))
    index.is_trained = True
    return index


def codes_to_faiss(model, codes):
    """Our (n, M) code matrix -> faiss's packed (n, code_size) uint8 bitstrings."""
    faiss = require_faiss("IndexQINCo")
    codes = np.asarray(codes)
    if codes.ndim != 2 or codes.shape[1] != model.M:
        raise InputError(f"codes must have shape (n, {model.M}), got {codes.shape}")
    return faiss.pack_bitstrings(np.ascontiguousarray(codes, dtype=np.int32), _nbits(model.K))


def codes_from_faiss(model, packed):
    """faiss's packed (n, code_size) uint8 bitstrings -> our (n, M) code matrix (model's dtype)."""
    faiss = require_faiss("IndexQINCo")
    packed = np.ascontiguousarray(packed, dtype=np.uint8)
    nbits = _nbits(model.K)
    size = (model.M * nbits + 7) // 8
    if packed.ndim != 2 or packed.shape[1] != size:
        raise InputError(f"packed codes must have shape (n, {size}), got {packed.shape}")
    return faiss.unpack_bitstrings(packed, model.M, nbits).astype(model.code_dtype)
