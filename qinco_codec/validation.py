"""Checks on user-supplied arrays, so that bad input fails early with a message that says what
was expected and what was given, instead of a shape error deep inside torch."""
import numpy as np

from .errors import InputError


def _to_numpy(x):
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # a torch tensor, without importing torch here
        x = x.detach().cpu().numpy()
    return x


def as_float_matrix(x, dim=None, name="x", allow_empty=True, row_offset=0):
    """Return x as a C-contiguous float32 (n, d) array; reject what cannot be vectors.

    Accepts numpy arrays (memory-mapped or not, any layout), torch tensors, and float16/float64/
    integer dtypes (cast to float32). Rejects 1-D or 3-D input, non-numeric dtypes, NaN/inf,
    and a dimension other than `dim` when given. `row_offset` is added to reported row numbers
    (for batches of a larger input).
    """
    x = _to_numpy(x)
    if not isinstance(x, np.ndarray):
        try:
            x = np.asarray(x)
        except Exception as exc:  # ragged lists and the like
            raise InputError(f"{name}: cannot be read as an array ({exc})") from None
    if x.dtype.kind not in "fiub" or x.dtype == np.bool_:
        raise InputError(f"{name}: expected a numeric array, got dtype {x.dtype}")
    if x.ndim != 2:
        raise InputError(f"{name}: expected a 2-D array (n, d), got {x.ndim}-D with shape {tuple(x.shape)}")
    if dim is not None and x.shape[1] != dim:
        raise InputError(f"{name}: expected dimension {dim} (the model's), got {x.shape[1]}")
    if x.shape[0] == 0 and not allow_empty:
        raise InputError(f"{name}: expected at least one vector, got 0")
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.size and not np.isfinite(x).all():
        bad = np.argwhere(~np.isfinite(x))[0]
        raise InputError(f"{name}: non-finite value {x[tuple(bad)]} at row {bad[0] + row_offset}, "
                         f"column {bad[1]}")
    return x


def as_code_matrix(codes, M, K, name="codes"):
    """Return codes as an int64 (n, m) array with m <= M and every value in [0, K)."""
    codes = _to_numpy(codes)
    codes = np.asarray(codes)
    if codes.dtype.kind not in "iu":
        raise InputError(f"{name}: expected an integer array, got dtype {codes.dtype}")
    if codes.ndim != 2:
        raise InputError(f"{name}: expected a 2-D array (n, steps), got shape {tuple(codes.shape)}")
    if codes.shape[1] > M:
        raise InputError(f"{name}: {codes.shape[1]} columns but the model has only M={M} steps")
    if codes.size and (codes.min() < 0 or codes.max() >= K):
        raise InputError(f"{name}: values must lie in [0, {K}), got [{codes.min()}, {codes.max()}]")
    return codes.astype(np.int64, copy=False)
