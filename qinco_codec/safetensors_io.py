"""Byte-deterministic safetensors encoding.

The `safetensors` package writes its `__metadata__` map in hash order, so two saves of the same
model can differ byte for byte, and with them the SHA-256 that names a model. This writer emits
the same documented layout (u64 little-endian header length, JSON header, raw little-endian tensor
data) with tensors and keys in sorted order and the header padded with spaces to 8 bytes, so equal
models always give equal bytes. Reading still goes through the `safetensors` package.
"""
import json
import struct

import torch

DTYPE_NAMES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64",
               torch.int64: "I64", torch.int32: "I32", torch.uint8: "U8", torch.bool: "BOOL"}


def encode(tensors, metadata):
    """safetensors bytes of {name: tensor} with string metadata, deterministic for equal inputs."""
    header, blobs, offset = {}, [], 0
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        raw = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        header[name] = {"dtype": DTYPE_NAMES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    header["__metadata__"] = {k: str(v) for k, v in sorted(metadata.items())}
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(blobs)
