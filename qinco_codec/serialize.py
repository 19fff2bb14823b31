"""Model files: safetensors weights plus a JSON config in the header metadata.

The SHA-256 of the file bytes is the model id that containers refer to. Loading parses only the
safetensors header (JSON) and raw tensor bytes: nothing in a model file can execute code. Every
check (header size, config fields, tensor names, shapes, finiteness) runs before the model is built.
"""
import hashlib
import json
import os
import struct

import torch
from safetensors.torch import load as st_load_bytes

from . import safetensors_io
from .formats.atomic import write_bytes_atomic
from .errors import ModelFormatError
from .presets import PRESETS

FORMAT_NAME = "qinco-codec-model"
MAX_HEADER_BYTES = 16 << 20
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
REQUIRED_CONFIG = {"preset": str, "arch": str, "dim": int, "M": int, "K": int, "L": int, "hidden": int,
                   "embed": int, "A": int, "B": int}
LIMITS = {"dim": 1 << 16, "M": 1024, "K": 65536, "L": 256, "hidden": 1 << 16, "embed": 1 << 16,
          "A": 65536, "B": 65536}


def sha256_hex(data):
    return hashlib.sha256(data).hexdigest()


def model_to_bytes(model, weight_dtype="float32"):
    """The safetensors bytes of a model (weights optionally stored as float16 / bfloat16)."""
    if weight_dtype not in DTYPES:
        raise ValueError(f"weight_dtype must be one of {sorted(DTYPES)}, got {weight_dtype!r}")
    tensors = {}
    for name, t in model.state_dict().items():
        t = t.detach().cpu().contiguous()
        if t.is_floating_point() and name not in ("mean", "std"):
            t = t.to(DTYPES[weight_dtype])
        tensors[name] = t
    meta = {"format": FORMAT_NAME, "config": json.dumps(model.config, sort_keys=True),
            "weight_dtype": weight_dtype}
    return safetensors_io.encode(tensors, meta)


def save_model(model, path, weight_dtype="float32"):
    """Write the model atomically; return the SHA-256 hex of the file (the model id)."""
    data = model_to_bytes(model, weight_dtype)
    write_bytes_atomic(path, data)
    return sha256_hex(data)


def _parse_header(data, source):
    if len(data) < 8:
        raise ModelFormatError(f"{source}: not a safetensors file ({len(data)} bytes, need at least 8)")
    (hlen,) = struct.unpack("<Q", data[:8])
    if hlen > MAX_HEADER_BYTES or 8 + hlen > len(data):
        raise ModelFormatError(f"{source}: safetensors header length {hlen} exceeds the file "
                               f"({len(data)} bytes) or the {MAX_HEADER_BYTES}-byte limit")
    try:
        header = json.loads(data[8:8 + hlen])
    except RecursionError:
        raise ModelFormatError(f"{source}: safetensors header JSON is nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ModelFormatError(f"{source}: safetensors header is not valid JSON ({exc})") from None
    if not isinstance(header, dict):
        raise ModelFormatError(f"{source}: safetensors header is not a JSON object")
    return header, 8 + hlen


def _parse_config(header, source):
    meta = header.get("__metadata__") or {}
    if not isinstance(meta, dict):
        raise ModelFormatError(f"{source}: safetensors __metadata__ is not a JSON object")
    if meta.get("format") != FORMAT_NAME:
        raise ModelFormatError(f"{source}: not a qinco-codec model (metadata format is "
                               f"{meta.get('format')!r}, expected {FORMAT_NAME!r})")
    if not isinstance(meta.get("config"), str):
        raise ModelFormatError(f"{source}: model config metadata is missing or not a string")
    try:
        config = json.loads(meta["config"])
    except (ValueError, RecursionError):
        raise ModelFormatError(f"{source}: model config metadata is not valid JSON") from None
    if not isinstance(config, dict):
        raise ModelFormatError(f"{source}: model config is not a JSON object")
    for key, typ in REQUIRED_CONFIG.items():
        if not isinstance(config.get(key), typ) or isinstance(config.get(key), bool):
            raise ModelFormatError(f"{source}: config field {key!r} must be {typ.__name__}, "
                                   f"got {config.get(key)!r}")
    for key, hi in LIMITS.items():
        lo = 0 if key in ("embed", "A", "L") else 1
        if not lo <= config[key] <= hi:
            raise ModelFormatError(f"{source}: config field {key!r}={config[key]} outside [{lo}, {hi}]")
    if config["preset"] not in PRESETS:
        raise ModelFormatError(f"{source}: config names unknown preset {config['preset']!r}; "
                               f"known: {', '.join(PRESETS)}")
    if config["arch"] not in ("qinco1", "qinco2"):
        raise ModelFormatError(f"{source}: config names unknown architecture {config['arch']!r}")
    if not isinstance(config.get("share_steps", False), bool):
        raise ModelFormatError(f"{source}: config field 'share_steps' must be true or false, "
                               f"got {config['share_steps']!r}")
    K = config["K"]
    if K < 2 or K & (K - 1):
        raise ModelFormatError(f"{source}: config K={K} is not a power of two >= 2")
    return config


def expected_tensor_count(config):
    """How many tensors a model of this config has (checked before any module is built, so a tiny
    file cannot make the loader build millions of modules)."""
    per_step = 3 + 2 * config["L"]                      # codebook, concat weight and bias, blocks
    if config["arch"] == "qinco2":
        embed = config["embed"] or config["dim"]
        per_step += 2 + (embed != config["dim"])       # preselect, out_proj, in_proj
    if config.get("share_steps") and config["M"] > 1:  # the network is stored once
        codebooks = 1 + (config["arch"] == "qinco2")
        return 3 + (config["M"] - 1) * codebooks + (per_step - codebooks)
    return 3 + (config["M"] - 1) * per_step             # mean, std, codebook0


def model_from_bytes(data, source="<bytes>"):
    """A QincoModel from safetensors bytes, after checking everything against its config."""
    from .model import QincoModel

    header, _ = _parse_header(data, source)
    config = _parse_config(header, source)
    declared = {k: v.get("shape") for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)}
    if len(declared) != expected_tensor_count(config):
        raise ModelFormatError(f"{source}: tensors do not match the config: {len(declared)} tensors, it implies "
                               f"{expected_tensor_count(config)}")
    for k, shape in declared.items():
        if not (isinstance(shape, list) and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                                for d in shape)):
            raise ModelFormatError(f"{source}: tensor {k!r} has an invalid shape {shape!r}")
    with torch.device("meta"):  # shapes only: nothing is allocated before they match the file
        expected = {k: tuple(v.shape) for k, v in QincoModel(config).state_dict().items()}
    missing, unexpected = set(expected) - set(declared), set(declared) - set(expected)
    if missing or unexpected:
        raise ModelFormatError(f"{source}: tensors do not match the config: missing "
                               f"{sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}")
    for k, shape in expected.items():
        if tuple(declared[k] or ()) != shape:
            raise ModelFormatError(f"{source}: tensor {k!r} has shape {declared[k]}, expected {list(shape)}")
    try:
        tensors = st_load_bytes(data)
    except Exception as exc:  # safetensors raises its own error types on malformed offsets
        raise ModelFormatError(f"{source}: malformed safetensors data ({exc})") from None
    for k, t in tensors.items():
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise ModelFormatError(f"{source}: tensor {k!r} contains NaN or inf")
    model = QincoModel(config)
    model.load_state_dict({k: t.float() for k, t in tensors.items()})
    return model


def read_model_file(path):
    """(model, file bytes, SHA-256 hex) of a model file; unreadable files are a ModelFormatError."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise ModelFormatError(f"no such model file: {path}") from None
    except IsADirectoryError:
        raise ModelFormatError(f"model path is a directory: {path}") from None
    except OSError as exc:
        raise ModelFormatError(f"cannot read model file {path}: {exc.strerror or exc}") from None
    return model_from_bytes(data, source=path), data, sha256_hex(data)


def load_model(path):
    """Load a model file; returns a QincoModel on the CPU with `.sha256` set to the file's id."""
    model, _, sha = read_model_file(path)
    model.sha256 = sha
    return model
