"""QincoModel: a QINCo / QINCo2 quantizer with its data normalisation, as one nn.Module.

Users pass raw vectors and get raw vectors back; the per-dimension mean and single scalar std
that the networks work under are buffers of the model and travel with its file.
"""
import contextlib

import numpy as np
import torch
from torch import nn

from . import codec
from .architecture import NETWORK_MODULES, bytes_per_code, parameter_count
from .config import ModelConfig
from .devices import resolve_device
from .errors import InputError
from .formats.layout import native_code_dtype
from .steps import QincoStep
from .validation import as_code_matrix, as_float_matrix

# Bound on the largest intermediate tensor of a batch (elements): keeps memory bounded and the
# working set moderate whatever n is. A GPU wants whole chunks per step: far larger batches.
WORK_ELEMENTS = 1 << 22
WORK_ELEMENTS_CUDA = 1 << 27


def _work_elements(dev):
    return WORK_ELEMENTS_CUDA if dev.type == "cuda" else WORK_ELEMENTS


def _upload(a, dev):
    """numpy array -> tensor on dev; through a pinned host buffer (asynchronous copy) on CUDA."""
    t = torch.from_numpy(np.require(a, requirements=("C", "W")))
    if dev.type != "cuda":
        return t
    return t.pin_memory().to(dev, non_blocking=True)


def _download(t, out):
    """Copy tensor t into the numpy array out; through a pinned host buffer on CUDA."""
    if t.device.type == "cuda":
        host = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
        host.copy_(t, non_blocking=True)
        torch.cuda.current_stream(t.device).synchronize()
        t = host
    out[...] = t.numpy()


# Torch dtype that holds codes of 1 or 2 bytes on their way to numpy (torch has no uint16 CPU ops).
_TORCH_CODE_DTYPES = {1: torch.uint8, 2: torch.int32}


@contextlib.contextmanager
def _on_device(model, dev):
    """The model on device `dev` for the duration, back where the caller had it afterwards."""
    home = model.codebook0.device
    if home == dev:
        yield model
        return
    model.to(dev)
    try:
        yield model
    finally:
        model.to(home)


def _precision(name):
    if name not in ("float32", "bfloat16"):
        raise InputError(f"precision must be 'float32' or 'bfloat16', got {name!r}")
    return torch.float32 if name == "float32" else torch.bfloat16


class QincoModel(nn.Module):
    """Step-1 codebook, M-1 QINCo steps, and the normalisation of the data they were fitted to."""

    def __init__(self, config, preselect=True):
        """config: a `ModelConfig` (or a dict of its fields, validated into one).
        preselect=False builds a decode-only model: no pre-selection codebooks."""
        super().__init__()
        if not isinstance(config, ModelConfig):
            config = ModelConfig.from_dict(dict(config))
        self.config = config
        D, K = config.dim, config.K
        self.register_buffer("mean", torch.zeros(D))
        self.register_buffer("std", torch.ones(()))
        self.codebook0 = nn.Parameter(torch.zeros(K, D))
        with torch.random.fork_rng(devices=[]):  # the same config always starts from the same weights
            torch.manual_seed(0)
            self.steps = nn.ModuleList(QincoStep(config.step, preselect) for _ in range(config.M - 1))
        if config.share_steps:
            first = self.steps[0] if len(self.steps) else None
            for step in self.steps[1:]:
                for part in NETWORK_MODULES:
                    setattr(step, part, getattr(first, part))

    # ---- shared networks: stored once ----
    def _is_alias(self, name):
        """Whether state-dict entry `name` is a later step's view of step 2's shared network."""
        if not self.config.share_steps or not name.startswith("steps."):
            return False
        index, _, rest = name[len("steps."):].partition(".")
        return index != "0" and rest.split(".", 1)[0] in NETWORK_MODULES

    def state_dict(self, *args, **kwargs):
        """As nn.Module's, with a shared network listed once (under the first step)."""
        sd = super().state_dict(*args, **kwargs)
        for name in [k for k in sd if self._is_alias(k)]:
            del sd[name]
        return sd

    def load_state_dict(self, state_dict, strict=True, assign=False):
        if not self.config.share_steps:
            return super().load_state_dict(state_dict, strict=strict, assign=assign)
        result = super().load_state_dict(state_dict, strict=False, assign=assign)
        missing = [k for k in result.missing_keys if not self._is_alias(k)]
        if strict and (missing or result.unexpected_keys):
            raise RuntimeError(f"state dict does not match the model: missing {missing[:5]}, "
                               f"unexpected {result.unexpected_keys[:5]}")
        return result

    # ---- construction ----
    @classmethod
    def from_preset(cls, name, dim, M, K=256, **overrides):
        """An untrained model of preset `name` for `dim`-dimensional vectors and M codes of K values."""
        return cls(ModelConfig.from_preset(name, dim, M, K, **overrides))

    # ---- shape facts
    dim = property(lambda self: self.config.dim)
    M = property(lambda self: self.config.M)
    K = property(lambda self: self.config.K)

    @property
    def decode_only(self):
        """Whether the model lacks the pre-selection codebooks its variant has (decode-only file)."""
        return self.config.step.preselect and any(s.preselect is None for s in self.steps)

    @property
    def bytes_per_code(self):
        return bytes_per_code(self.K)

    @property
    def code_dtype(self):
        return native_code_dtype(self.bytes_per_code)

    @property
    def bytes_per_vector(self):
        return self.M * self.bytes_per_code

    def num_parameters(self, decoding_only=False):
        """Parameter count; `decoding_only` leaves out the pre-selection codebooks."""
        return parameter_count(self.config, decoding_only=decoding_only or self.decode_only)

    def set_normalization(self, mean, std):
        self.mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.std.fill_(float(std))

    def normalize(self, x):
        return (x - self.mean) / self.std

    def denormalize(self, x):
        """Vectors in the input space from the network's normalised space; scaled to unit L2
        norm when the model says its inputs are unit-norm embeddings (config `unit_norm`)."""
        x = x * self.std + self.mean
        if self.config.unit_norm:
            x = x / x.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny)
        return x

    # ---- numpy-facing encode / decode ----
    def _width(self):
        s = self.config.step
        return max(s.D, s.de, s.h) if self.steps else s.D

    def _batch_rows(self, candidates_per_vector, batch_size, dev):
        if batch_size:
            return int(batch_size)
        return max(16, _work_elements(dev) // max(1, candidates_per_vector * self._width()))

    def encode(self, x, A=None, B=None, batch_size=None, device="auto", precision="float32"):
        """Codes (n, M), uint8 for K <= 256 else uint16, for raw vectors x (n, dim).

        A, B default to the model's own settings (config 'A', 'B': exhaustive greedy for QINCo1,
        pre-selection plus beam for QINCo2). A=0 evaluates all K codewords at every step (exhaustive),
        0 < A < K pre-selects A candidates per hypothesis; B is the beam width (1 = greedy).
        precision: 'float32' (exact, reproducible) or 'bfloat16' (candidate networks in bf16: faster
        where the CPU has bf16 matmul; the codes may differ slightly from float32's).
        """
        dtype = _precision(precision)
        x = as_float_matrix(x, dim=self.dim)
        A = self.config.A if A is None else int(A)
        B = self.config.B if B is None else int(B)
        if A < 0 or B < 1:
            raise InputError(f"A must be >= 0 and B >= 1, got A={A}, B={B}")
        if self.decode_only and 0 < A < self.K:
            raise InputError(f"this is a decode-only model (no pre-selection codebooks), so it cannot "
                             f"pre-select A={A} candidates: encode with A=0 (every codeword evaluated) "
                             f"or with the full model")
        dev = resolve_device(device)
        if all(step.is_identity() for step in self.steps):   # RQ: a distance per candidate
            rows = batch_size or max(16, _work_elements(dev) // (min(B, self.K) * (self.K + self.dim)))
        else:
            cands = (A if 0 < A < self.K else self.K) * min(B, self.K)
            rows = self._batch_rows(cands, batch_size, dev)
        out = np.empty((len(x), self.M), dtype=self.code_dtype)
        with torch.inference_mode(), _on_device(self, dev) as model:
            for start in range(0, len(x), rows):
                xb = model.normalize(_upload(x[start:start + rows], dev))
                codes = codec.encode_normalized(model, xb, A, B, dtype)
                _download(codes.to(_TORCH_CODE_DTYPES[self.bytes_per_code]), out[start:start + rows])
        return out

    def decode(self, codes, steps=None, batch_size=None, device="auto", precision="float32"):
        """Raw float32 vectors (n, dim) from codes (n, m); only the first `steps` (or m) codes are used.
        precision='bfloat16' runs the step networks in bf16 (opt-in; float32 is the reference)."""
        dtype = _precision(precision)
        codes = as_code_matrix(codes, self.M, self.K)
        m = codes.shape[1] if steps is None else int(steps)
        if not 1 <= m <= codes.shape[1]:
            raise InputError(f"steps must be between 1 and {codes.shape[1]} (the codes' columns), got {m}")
        dev = resolve_device(device)
        rows = batch_size or max(1024, _work_elements(dev) // self._width() // 4)
        out = np.empty((len(codes), self.dim), dtype=np.float32)
        with torch.inference_mode(), _on_device(self, dev) as model:
            def decode_rows(start, end, _workspace):
                cb = _upload(codes[start:end, :m], dev).long()
                _download(model.denormalize(codec.decode_normalized(model, cb, dtype)), out[start:end])

            # on the CPU, whole chunks on worker threads (codec.each_chunk: the step networks'
            # matmuls are too narrow to split well); the same vectors at any thread count
            codec.each_chunk(decode_rows, [(s, min(s + rows, len(codes)))
                                            for s in range(0, len(codes), rows)], dev)
        return out

    # ---- persistence ----
    def save(self, path):
        """Write the model as safetensors (weights + JSON config); returns its SHA-256 (the model id)."""
        from .serialize import save_model
        return save_model(self, path)

    def extra_repr(self):
        c = self.config
        return f"preset={c.preset}, dim={c.dim}, M={c.M}, K={c.K}"
