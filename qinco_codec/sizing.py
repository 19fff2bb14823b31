"""How large a model a self-contained .qnc file can afford.

A file that embeds its model pays for the model's bytes. `qinco-compress` trains a model for the
collection it stores, so it picks the model to fit: the requested preset with the requested
weight precision when the file then stays below what float16 storage of the vectors would take,
else the same preset with float16 weights, else narrower and shallower networks (float16). When
not even the smallest fits, the collection is too small to carry its own model and the caller
gets a clear error (share one model across files instead: --no-embed-model and the model store).
Where the preset fits, the width rule (`shape_for_file`, fitted on measurements written down
below) may still choose the narrow network: when the bytes it saves are worth more as codes.
"""
from dataclasses import dataclass

from .errors import InputError
from .formats.layout import bytes_per_code

# Narrower and shallower rungs tried after the preset itself: (embed, hidden, L).
SMALLER_SHAPES = ((32, 64, 2), (16, 32, 1))

# The width rule for a file that embeds its network (`shape_for_file`), fitted on the 384-d
# MiniLM measurements and written down here. Once a network learns, the narrow one (embed 32,
# hidden 64: SMALLER_SHAPES[0]) reaches 2.0-2.1% higher MSE than qinco2-XS's (75,000 and 200,000
# training vectors, docs/experiments/2026-12-03-data-size-minilm384.md), while a byte of code per
# vector lowers the MSE by about 2.9% (faiss RQ from 16 to 32 B at 384-d: 0.3196 to 0.2001). So
# the narrow network is the better use of the file's bytes when what it saves, spent on codes,
# buys more than its cost: more than about 0.71 bytes per vector (below about 2.8M vectors at
# 384-d, 16 B). Measured at d = 384 only, so applied from NARROW_MIN_DIM on and to NARROW_PRESET;
# the break-even size itself is computed, not measured (no 384-d collection of millions here).
NARROW_PRESET = "qinco2-XS"
NARROW_MIN_DIM = 256
NARROW = dict(zip(("embed", "hidden", "L"), SMALLER_SHAPES[0]))
NARROW_MSE_COST = 0.021            # relative MSE the narrow network costs at equal steps
CODE_MSE_GAIN_PER_BYTE = 0.029     # relative MSE one more byte of code per vector saves
# Bytes kept free for the container's header, sections and index.
CONTAINER_SLACK = 4096
# Upper bounds on a model file's safetensors header: per tensor entry (name, dtype, shape and
# offsets as JSON; the longest, "steps.1023.blocks.255.2.weight" with 6-digit shapes and 12-digit
# offsets, takes under 120) and for the length field and metadata.
HEADER_BYTES_PER_TENSOR = 128
HEADER_BYTES_FIXED = 1024


@dataclass(frozen=True)
class ModelChoice:
    """The shape overrides and weight precision chosen, and what they cost in the file."""
    overrides: dict
    weight_dtype: str
    model_bytes: int
    budget_bytes: int


def float16_bytes(n, dim):
    """Bytes of the same vectors stored as plain float16: the size a .qnc must stay below."""
    return n * dim * 2


def model_file_bytes(config, weight_dtype, decode_only=False):
    """Bytes of a model file of this config: its tensor data (without the pre-selection codebooks
    when `decode_only`) plus a bound on its safetensors header, by arithmetic (nothing is built)."""
    from .architecture import data_bytes, inventory_size
    tensors = inventory_size(config, preselect=not decode_only).tensors
    return data_bytes(config, weight_dtype, preselect=not decode_only) \
        + HEADER_BYTES_PER_TENSOR * tensors + HEADER_BYTES_FIXED


def _model_bytes(preset, dim, M, K, overrides, weight_dtype, decode_only=False):
    """model_file_bytes of the preset's model with `overrides`."""
    from .config import ModelConfig
    return model_file_bytes(ModelConfig.from_preset(preset, dim, M, K, **overrides), weight_dtype,
                            decode_only)


def candidates(preset, weight_dtype):
    """(overrides, weight dtype) from the preferred choice down."""
    yield {}, weight_dtype
    if weight_dtype == "float32":
        yield {}, "float16"
    small = "float16" if weight_dtype == "float32" else weight_dtype
    for embed, hidden, L in SMALLER_SHAPES:
        yield {"embed": embed, "hidden": hidden, "L": L}, small


def narrow_applies(dim, preset):
    """Whether the width rule was measured for this dimension and preset."""
    return preset == NARROW_PRESET and dim >= NARROW_MIN_DIM


def narrow_pays(bytes_per_vector):
    """Whether `bytes_per_vector` more of code (what the narrow network frees) lower the MSE by
    more than the narrow network costs (the width rule above; compared as log-ratios)."""
    import math
    return -bytes_per_vector * math.log1p(-CODE_MSE_GAIN_PER_BYTE) > math.log1p(NARROW_MSE_COST)


def shape_for_file(n, dim, M, K, preset, weight_dtype, decode_only=True):
    """(overrides, line): the narrow network (NARROW) when the width rule says its saved bytes are
    worth more as codes for a file of n vectors, else ({}, None); line says what and why."""
    if not narrow_applies(dim, preset):
        return {}, None
    full = _model_bytes(preset, dim, M, K, {}, weight_dtype, decode_only)
    small = _model_bytes(preset, dim, M, K, NARROW, weight_dtype, decode_only)
    saved = (full - small) / max(n, 1)
    if not narrow_pays(saved):
        return {}, None
    return NARROW, narrow_line(f"{small:,} bytes, not {preset}'s {full:,}",
                               f"it saves {saved:.2f} bytes per vector, worth more as codes")


def narrow_line(size, why):
    """The one line saying the width rule chose the narrow network: its size, and why."""
    return (f"network width: embed {NARROW['embed']}, hidden {NARROW['hidden']} ({size}): {why} "
            f"than the ~{NARROW_MSE_COST:.0%} MSE it costs (width rule, sizing.py)")


def fit_model_to_file(n, dim, M, K, preset, weight_dtype="float32", decode_only=False):
    """The first candidate whose embedded model (decode-only when `decode_only`) keeps the file
    below float16 size (a ModelChoice), or an InputError saying how far off the smallest one is."""
    code_bytes = n * M * bytes_per_code(K)
    budget = float16_bytes(n, dim) - code_bytes - CONTAINER_SLACK
    smallest = None
    for overrides, dtype in candidates(preset, weight_dtype):
        size = _model_bytes(preset, dim, M, K, overrides, dtype, decode_only)
        if size <= budget:
            return ModelChoice(overrides, dtype, size, budget)
        smallest = size if smallest is None else min(smallest, size)
    raise InputError(
        f"{n:,} vectors of dim {dim} are too few to carry their own model: the smallest {preset} "
        f"model for {M} steps takes {smallest:,} bytes, and the file must stay below float16 size "
        f"({float16_bytes(n, dim):,} bytes, {max(budget, 0):,} of them left after the codes); train "
        f"one model on more data and share it (--model PATH --no-embed-model), or lower --bytes")
