"""The QINCo step architectures as data: the one place that says what tensors a model has, what
shapes they take, what a candidate and a decode cost, and how the encoder's candidate buffer is
laid out.

Everything that must agree with the network derives from here: the module builder (`steps.py`),
the model file reader (`serialize.py`: names, shapes and byte counts checked against a file's
header by arithmetic before any module is built), model sizing (`sizing.py`: bytes by arithmetic),
the speed benchmark's FLOP and matmul models, faiss export, and MODEL-SPEC.md section 3 (checked
by tests/test_architecture.py). Adding a step variant means adding a `Variant` here and its forward
in `steps.py`.

The variants (MODEL-SPEC.md section 4), with de the width the network works at:
    qinco1  z = c + W_cat·[c; x̂] + b;  z += W2·ReLU(W1·z) (L times);  f = z              (de = D)
    qinco2  u = W_in·c;  u += W_cat·[u; x̂] + b;  u += W2·ReLU(W1·u);  f = c + W_out·u
            (W_in only when de != D; a pre-selection codebook per step, used by the encoder only)
"""
from typing import NamedTuple

from .formats.layout import bytes_per_code  # noqa: F401  (re-exported: the one byte-width rule)

# Floats per cache line: every part of the encoder's candidate buffer starts on a 64-byte boundary.
ALIGN_FLOATS = 16
# Bytes per element of each weight dtype a model file may store.
DTYPE_SIZES = {"F32": 4, "F16": 2, "BF16": 2}


class Variant(NamedTuple):
    """What distinguishes one step architecture from another."""
    projections: bool   # works at its own width de (W_in when de != D, W_out always)
    preselect: bool     # carries a pre-selection codebook per step (an encoder-only tensor)


VARIANTS = {
    "qinco1": Variant(projections=False, preselect=False),
    "qinco2": Variant(projections=True, preselect=True),
}


class StepShape(NamedTuple):
    """The dimensions of one step network (every step of a model has the same)."""
    arch: str
    D: int          # vector dimension
    K: int          # codewords per step
    L: int          # residual blocks
    h: int          # hidden width of a block
    de: int         # width the network works at
    in_proj: bool   # W_in (de, D) present
    out_proj: bool  # W_out (D, de) present
    preselect: bool  # the variant has pre-selection codebooks

    @classmethod
    def of(cls, config):
        """The step shape of a model config (anything with arch, dim, K, L, hidden, embed)."""
        v = VARIANTS[config.arch]
        D = config.dim
        de = config.embed if v.projections and config.embed else D
        return cls(config.arch, D, config.K, config.L, config.hidden, de,
                   in_proj=v.projections and de != D, out_proj=v.projections, preselect=v.preselect)


# ---------------------------------------------------------------- tensor inventory
class TensorSpec(NamedTuple):
    """One tensor of a model file: its name, shape and role."""
    name: str
    shape: tuple
    role: str   # "normalisation", "codebook", "preselect" (encoder only) or "network"


# The step modules that hold a step's network (shared by every step under share_steps); the
# codebooks are the rest.
NETWORK_MODULES = ("in_proj", "concat", "blocks", "out_proj")


def network_tensors(s, prefix):
    """The network tensors of one step (MODEL-SPEC.md section 3), names under `prefix`."""
    out = []
    if s.in_proj:
        out.append(TensorSpec(f"{prefix}in_proj.weight", (s.de, s.D), "network"))
    out.append(TensorSpec(f"{prefix}concat.weight", (s.de, s.de + s.D), "network"))
    out.append(TensorSpec(f"{prefix}concat.bias", (s.de,), "network"))
    for l in range(s.L):
        out.append(TensorSpec(f"{prefix}blocks.{l}.0.weight", (s.h, s.de), "network"))
        out.append(TensorSpec(f"{prefix}blocks.{l}.2.weight", (s.de, s.h), "network"))
    if s.out_proj:
        out.append(TensorSpec(f"{prefix}out_proj.weight", (s.D, s.de), "network"))
    return out


def tensor_inventory(config, preselect=True):
    """Every tensor of a model file of this config, in step order (a generator: a hostile config
    with millions of tensors is refused by `inventory_size` before anyone walks it).
    preselect=False leaves out the encoder-only pre-selection codebooks (a decode-only model)."""
    s = StepShape.of(config)
    yield TensorSpec("mean", (s.D,), "normalisation")
    yield TensorSpec("std", (), "normalisation")
    yield TensorSpec("codebook0", (s.K, s.D), "codebook")
    for i in range(config.M - 1):
        yield TensorSpec(f"steps.{i}.codebook", (s.K, s.D), "codebook")
        if s.preselect and preselect:
            yield TensorSpec(f"steps.{i}.preselect", (s.K, s.D), "preselect")
        if i == 0 or not config.share_steps:
            yield from network_tensors(s, f"steps.{i}.")


def _numel(shape):
    n = 1
    for d in shape:
        n *= d
    return n


class InventorySize(NamedTuple):
    """Counts of a config's tensors and elements, by arithmetic."""
    tensors: int
    normalisation: int   # elements of mean and std (always float32)
    weights: int         # elements of every other tensor
    preselect: int       # elements of the pre-selection codebooks (included in weights)


def inventory_size(config, preselect=True):
    """`tensor_inventory`'s totals in O(1), without listing it."""
    s = StepShape.of(config)
    steps = config.M - 1
    networks = min(steps, 1) if config.share_steps else steps
    net_tensors = 2 + 2 * s.L + s.in_proj + s.out_proj
    net_elems = (s.de * (s.de + s.D) + s.de + 2 * s.L * s.h * s.de
                 + (s.de * s.D if s.in_proj else 0) + (s.D * s.de if s.out_proj else 0))
    pre = s.preselect and preselect
    pre_elems = steps * s.K * s.D if pre else 0
    return InventorySize(
        tensors=3 + steps * (1 + pre) + networks * net_tensors,
        normalisation=s.D + 1,
        weights=s.K * s.D * (1 + steps) + pre_elems + networks * net_elems,
        preselect=pre_elems)


def parameter_count(config, decoding_only=False):
    """Trainable parameters (every weight); `decoding_only` leaves out the pre-selection codebooks."""
    size = inventory_size(config)
    return size.weights - (size.preselect if decoding_only else 0)


def data_bytes(config, weight_dtype="F32", preselect=True):
    """Bytes of a model file's tensor data: float32 normalisation plus the weights at `weight_dtype`
    (a safetensors dtype name or 'float32' / 'float16' / 'bfloat16')."""
    size = inventory_size(config, preselect)
    return 4 * size.normalisation + DTYPE_SIZES[_st_dtype(weight_dtype)] * size.weights


def _st_dtype(name):
    return {"float32": "F32", "float16": "F16", "bfloat16": "BF16"}.get(name, name)


# ---------------------------------------------------------------- encoder table layout
def aligned_floats(n):
    """n rounded up to a whole number of 64-byte cache lines of floats."""
    return -(-n // ALIGN_FLOATS) * ALIGN_FLOATS


class CandidateLayout(NamedTuple):
    """Row layout of the encoder's candidate buffer G = [z | p | e] (and of the per-codeword
    table [t0 | t1 | c] it is filled from): z (de floats) at 0, the first block's pre-activation p
    (h floats, when L > 0) at `p_off`, and (QINCo2) at `e_off` either c − r / the error e (D
    floats), or with the expanded error (`expands_error`) 2·W_outᵀ(c − r) + (W_outᵀW_out)·z
    (de floats); `width` floats per row, every part starting on a cache line."""
    p_off: int
    e_off: int
    width: int

    @classmethod
    def of(cls, s, expanded=False):
        p_off = aligned_floats(s.de)
        e_off = p_off + (aligned_floats(s.h) if s.L else 0)
        tail = (s.de if expanded else s.D) if s.out_proj else 0
        return cls(p_off, e_off, aligned_floats(e_off + tail))


# The expanded error's c·r for C pre-selected candidates of K: gathered rows and C dots (memory
# traffic, C·D floats a hypothesis) instead of one (hypotheses x K) matmul and a gather of its
# columns, when C is at most K / GATHER_CR_BELOW (measured: see gathers_cr).
GATHER_CR_BELOW = 8


def gathers_cr(s, C):
    """Whether the expanded error takes c·r for C candidates per hypothesis from the C gathered
    codebook rows rather than from the full (hypotheses x K) matmul (`steps.candidate_errors`)."""
    return 0 < C and C * GATHER_CR_BELOW <= s.K


def expands_error(s):
    """Whether the encoder scores a QINCo2 step's candidates by the expanded error
    ‖c − r + W_out z‖² = ‖c‖² − 2 c·r + ‖r‖² + z·(2 W_outᵀ(c − r) + W_outᵀW_out z): de·de + de
    multiply-adds a candidate (the Gram product and a dot), whatever D, instead of de·D + D for
    the output projection and the error; c·r comes from one (hypotheses x K) matmul per step, or
    from the pre-selected rows (`gathers_cr`). Worth it once D > de + 1 (it is exact algebra;
    only the rounding differs). The kept hypotheses are then reconstructed from their candidates'
    z: x̂ + c + W_out z."""
    return s.out_proj and s.de * s.de + s.de < s.de * s.D


def faiss_representable(config):
    """Whether faiss's IndexQINCo can hold this architecture: it implements the QINCo1 step only
    (no projections, no pre-selection codebooks)."""
    s = StepShape.of(config)
    return not (s.in_proj or s.out_proj or s.preselect)


# ---------------------------------------------------------------- work per vector
def effective_search(config, A, B):
    """(A, B) as the encoder applies them: A = 0 when every codeword is evaluated (A >= K, or a
    variant without pre-selection codebooks), B clipped to 1..K."""
    s = StepShape.of(config)
    A = int(A) if 0 < int(A) < s.K and s.preselect else 0
    return A, max(1, min(int(B), s.K))


def candidate_macs(s):
    """Multiply-adds per candidate with the split-layer tables: the first block's second layer
    (its first layer comes from the per-codeword table), the L−1 further blocks, then either the
    output projection (QINCo2) and the squared error, or with the expanded error the Gram
    product, its dot with z and c·r."""
    blocks = (s.h * s.de if s.L else 0) + max(s.L - 1, 0) * 2 * s.de * s.h
    if expands_error(s):
        return blocks + s.de * s.de + s.de
    return blocks + (s.de * s.D if s.out_proj else 0) + s.D


def hypothesis_macs(s, A):
    """Multiply-adds per hypothesis and step, shared by its candidates: W_x x̂, W1 W_x x̂ (L > 0),
    with pre-selection the distances to the K pre-selection codewords, and with the expanded
    error W_outᵀ r, c·r (for all K codewords, or the A gathered ones: `gathers_cr`) and the kept
    hypothesis's reconstruction W_out z."""
    cr = s.D * (A if A and gathers_cr(s, A) else s.K)
    return (s.D * s.de + (s.de * s.h if s.L else 0) + (s.K * s.D if A else 0)
            + ((s.D * s.de + cr + s.de * s.D) if expands_error(s) else 0))


def decode_macs(s):
    """Multiply-adds of one step of decoding one vector: W_x x̂, L blocks, W_out (QINCo2); the
    codeword half of the first layer is a per-call table."""
    return s.D * s.de + s.L * 2 * s.de * s.h + (s.de * s.D if s.out_proj else 0)


def encode_flops(config, A=0, B=1):
    """FLOPs (2 per multiply-add) per vector of our encoder (`codec.encode_normalized`): step 1's
    distances to the K plain codewords, then per later step and hypothesis `hypothesis_macs` plus
    C = A (or K) candidates of `candidate_macs`. Per-call tables and element-wise additions are not
    counted."""
    s = StepShape.of(config)
    A, B = effective_search(config, A, B)
    macs = s.K * s.D + (config.M - 1) * B * (hypothesis_macs(s, A) + (A or s.K) * candidate_macs(s))
    return 2.0 * macs


def decode_flops(config):
    """FLOPs per vector of our decoder (`codec.decode_normalized`)."""
    return 2.0 * (config.M - 1) * decode_macs(StepShape.of(config))


def full_network_macs(s):
    """Multiply-adds of one evaluation of a QINCo1 step network without split tables (what faiss's
    IndexQINCo computes per candidate and per decoded step): concat layer and L blocks."""
    return 2 * s.D * s.D + s.L * 2 * s.D * s.h


def faiss_qinco_encode_flops(config):
    """FLOPs per vector of faiss's IndexQINCo encoder (greedy, exhaustive): every step evaluates
    the whole network for each of the K codewords, plus the squared error; step 1: K·D."""
    s = StepShape.of(config)
    return 2.0 * (s.K * s.D + (config.M - 1) * s.K * (full_network_macs(s) + s.D))


def faiss_qinco_decode_flops(config):
    """FLOPs per vector of faiss's IndexQINCo decoder."""
    return 2.0 * (config.M - 1) * full_network_macs(StepShape.of(config))


def matmul_shapes(config, rows, direction="encode"):
    """The (rows, k, n, count) matmuls one batch of `rows` network rows runs per step: for
    encoding the per-candidate layers, for decoding also the x̂ projection (the speed benchmark
    measures the machine's matmul rate at exactly these shapes)."""
    s = StepShape.of(config)
    shapes = []
    if direction == "decode":
        shapes.append((rows, s.D, s.de, 1))
        if s.L:
            shapes.append((rows, s.de, s.h, 1))
    if s.L:
        shapes.append((rows, s.h, s.de, 1))
    if s.L > 1:
        shapes += [(rows, s.de, s.h, s.L - 1), (rows, s.h, s.de, s.L - 1)]
    if s.out_proj:
        shapes.append((rows, s.de, s.D, 1))
    return shapes or [(rows, s.de, s.de, 1)]
