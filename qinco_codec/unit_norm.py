"""Unit-norm embeddings: sentence and image encoders usually emit vectors of L2 norm 1, compared
by cosine or inner product. A model with config `unit_norm` decodes every vector (every prefix
rate) back onto the unit sphere, which a plain residual decoder does not do (its decoded norms
spread around 1 and cost recall). These are the rules for when inputs count as unit norm.
"""
import numpy as np

from .errors import InputError

# Largest |norm - 1| of a vector that counts as unit norm: float32 encoders normalise to ~1e-6,
# float16 storage of a unit vector to ~1e-3.
TOLERANCE = 1e-2


def _norms(x):
    """L2 norm of every row, accumulated in float64."""
    return np.sqrt(np.einsum("ij,ij->i", x, x, dtype=np.float64))


def norm_error(x):
    """Largest |L2 norm - 1| over the rows of x (0.0 for no rows)."""
    return float(np.max(np.abs(_norms(x) - 1.0))) if len(x) else 0.0


def looks_unit_norm(x):
    """Whether every row of x (a sample of the input, at least one row) has unit norm."""
    return len(x) > 0 and norm_error(x) <= TOLERANCE


def check_unit_norm(x, row_offset=0, name="input"):
    """Refuse rows that are not unit norm, for a model that decodes to unit norm."""
    norms = _norms(x)
    bad = np.flatnonzero(np.abs(norms - 1.0) > TOLERANCE)
    if len(bad):
        row = int(bad[0])
        raise InputError(f"{name}: row {row_offset + row} has L2 norm {norms[row]:.6g}, but the model "
                         f"decodes to unit norm (unit_norm); use a model without it (qinco-compress "
                         f"--no-unit-norm when it trains one)")
