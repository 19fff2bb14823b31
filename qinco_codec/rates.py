"""The rate of a .qnc file or a model in the Python API's one unit: *steps*, the number of codes
kept per vector (a prefix of the model's M). The command line speaks bytes per vector
(`--bytes`); `steps_for_bytes` is the one place that converts, using the byte width of a code
that the container format defines (`formats.layout.bytes_per_code`).

`bytes=`, the Python API's former keyword, still works for one release through
`deprecated_bytes`, which warns and converts with the same function.
"""
import warnings

import numpy as np

from .config import LIMITS
from .errors import InputError
from .formats.layout import bytes_per_code

# The most steps a model may have (MODEL-SPEC.md 2): the bound of a rate no model is given for
MAX_MODEL_STEPS = LIMITS["M"]
MODEL_LIMIT = "the model format's limit"


def _is_int(value):
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def check_steps(steps, max_steps, what, name="steps"):
    """`steps` as an int in [1, max_steps] (None: max_steps; max_steps None: the most a model
    may have, MAX_MODEL_STEPS). `what` names the bound in the error, e.g. "the file's rate"."""
    if steps is None:
        return max_steps
    if max_steps is None:
        max_steps, what = MAX_MODEL_STEPS, MODEL_LIMIT
    if not _is_int(steps) or steps < 1:
        raise InputError(f"{name}={steps!r} must be a positive integer (codes per vector)")
    if steps > max_steps:
        raise InputError(f"{name}={steps} exceeds {what} of {max_steps} steps")
    return int(steps)


def steps_for_bytes(nbytes, K, max_steps, what, name="bytes"):
    """The steps that `nbytes` bytes per vector stand for with codes of K values (None: max_steps).

    `nbytes` must be a positive whole number of codes, at most max_steps codes (None: the most
    a model may have, MAX_MODEL_STEPS, so that a rate to train is refused before any work);
    `what` names that bound and `name` the option in the error message ("--bytes" on the
    command line)."""
    if nbytes is None:
        return max_steps
    if max_steps is None:
        max_steps, what = MAX_MODEL_STEPS, MODEL_LIMIT
    bpc = bytes_per_code(K)
    if not _is_int(nbytes) or nbytes <= 0:
        raise InputError(f"{name}={nbytes!r} must be a positive integer (bytes per vector)")
    if nbytes % bpc:
        raise InputError(f"{name}={nbytes} is not a whole number of codes ({bpc} bytes per code "
                         f"with K={K})")
    if nbytes // bpc > max_steps:
        raise InputError(f"{name}={nbytes} exceeds {what} of {max_steps * bpc} bytes per vector")
    return int(nbytes // bpc)


def deprecated_bytes(steps, nbytes, K, max_steps, what, stacklevel=3):
    """The steps of a call that may use the deprecated `bytes=` keyword: `steps` when bytes is
    None, else `nbytes` converted (with a DeprecationWarning). Giving both is an error."""
    if nbytes is None:
        return check_steps(steps, max_steps, what)
    if steps is not None:
        raise InputError(f"give steps= or the deprecated bytes=, not both (got steps={steps!r}, "
                         f"bytes={nbytes!r})")
    warnings.warn("bytes= is deprecated and will be removed in the next release: pass steps= "
                  "(codes per vector; bytes per vector divided by the bytes per code)",
                  DeprecationWarning, stacklevel=stacklevel)
    return steps_for_bytes(nbytes, K, max_steps, what)
