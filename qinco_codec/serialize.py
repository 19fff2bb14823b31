"""Model files: safetensors weights plus a JSON config in the header metadata.

The SHA-256 of the file bytes is the model id that containers refer to. Loading parses only the
safetensors header (JSON) and raw tensor bytes: nothing in a model file can execute code. Every
check (header size, config fields, tensor names, shapes, finiteness) runs before the model is built.
"""
import hashlib
import json
import os
import stat
import struct

import torch

from . import safetensors_io
from .architecture import inventory_size, tensor_inventory
from .config import ModelConfig
from .errors import InputError, ModelFormatError
from .formats.atomic import write_bytes_atomic

FORMAT_NAME = "qinco-codec-model"
# MODEL-SPEC.md's version: a reader refuses another major; a file without the key is 1.0. A writer
# writes the lowest minor its model needs (FEATURE_MINOR), so models without a 1.2 feature keep
# the bytes and the id they had.
FORMAT_VERSION = (1, 2)
BASE_MINOR = 1
MAX_HEADER_BYTES = 16 << 20
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
WEIGHT_DTYPES = ("F32", "F16", "BF16")   # what weight tensors may be stored as
NORMALISATION_DTYPE = "F32"              # what mean and std must be stored as
# Features a file may list in `requires` (each changes decoding), with the minor that defined it;
# each is the config flag of the same name, and the two must agree.
FEATURE_MINOR = {"unit_norm": 2}
KNOWN_FEATURES = frozenset(FEATURE_MINOR)
# Tensors whose first name component is this are auxiliary: never needed to decode, ignored by a
# reader that does not know them (MODEL-SPEC.md section 3.2).
AUX_PREFIX = "aux."


def sha256_hex(data):
    return hashlib.sha256(data).hexdigest()


def model_to_bytes(model, weight_dtype="float32", decode_only=False):
    """The safetensors bytes of a model (weights optionally stored as float16 / bfloat16;
    decode_only leaves out the encoder-only pre-selection codebooks)."""
    if weight_dtype not in DTYPES:
        raise ValueError(f"weight_dtype must be one of {sorted(DTYPES)}, got {weight_dtype!r}")
    tensors = {}
    for name, t in model.state_dict().items():
        if decode_only and name.endswith(".preselect"):
            continue
        t = t.detach().cpu().contiguous()
        if t.is_floating_point() and name not in ("mean", "std"):
            t = t.to(DTYPES[weight_dtype])
        tensors[name] = t
    features = sorted(f for f in FEATURE_MINOR if getattr(model.config, f))
    minor = max([BASE_MINOR] + [FEATURE_MINOR[f] for f in features])
    meta = {"format": FORMAT_NAME, "format_version": "%d.%d" % (FORMAT_VERSION[0], minor),
            "config": model.config.to_json(), "weight_dtype": weight_dtype}
    if features:
        meta["requires"] = json.dumps(features, separators=(",", ":"))
    return safetensors_io.encode(tensors, meta)


def save_model(model, path, weight_dtype="float32", decode_only=False):
    """Write the model atomically; return the SHA-256 hex of the file (the model id)."""
    data = model_to_bytes(model, weight_dtype, decode_only)
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


def _parse_metadata(header, source):
    """(ModelConfig, format version) from the header's __metadata__, every rule checked."""
    meta = header.get("__metadata__") or {}
    if not isinstance(meta, dict):
        raise ModelFormatError(f"{source}: safetensors __metadata__ is not a JSON object")
    if meta.get("format") != FORMAT_NAME:
        raise ModelFormatError(f"{source}: not a qinco-codec model (metadata format is "
                               f"{meta.get('format')!r}, expected {FORMAT_NAME!r})")
    version = _format_version(meta.get("format_version", "1.0"), source)
    requires = _requires(meta.get("requires", "[]"), source)
    unknown = sorted(set(requires) - KNOWN_FEATURES)
    if unknown:
        raise ModelFormatError(f"{source}: the model requires features this reader does not implement: "
                               f"{', '.join(map(str, unknown))} (format {version[0]}.{version[1]}; upgrade qinco-codec)")
    if not isinstance(meta.get("config"), str):
        raise ModelFormatError(f"{source}: model config metadata is missing or not a string")
    try:
        obj = json.loads(meta["config"])
    except (ValueError, RecursionError):
        raise ModelFormatError(f"{source}: model config metadata is not valid JSON") from None
    try:
        config = ModelConfig.from_dict(obj, source)
    except InputError as exc:
        raise ModelFormatError(str(exc)) from None
    for feature in sorted(KNOWN_FEATURES):
        if getattr(config, feature) != (feature in requires):
            raise ModelFormatError(f"{source}: config {feature}={str(getattr(config, feature)).lower()} but "
                                   f"'requires' {'does not list' if feature not in requires else 'lists'} "
                                   f"{feature!r}: the two must agree (MODEL-SPEC.md section 0)")
    return config, version


def _format_version(text, source):
    parts = text.split(".") if isinstance(text, str) else []
    if len(parts) != 2 or not all(p.isdigit() and len(p) <= 4 for p in parts):
        raise ModelFormatError(f"{source}: metadata format_version must be 'MAJOR.MINOR', got {text!r:.40}")
    version = (int(parts[0]), int(parts[1]))
    if version[0] != FORMAT_VERSION[0]:
        raise ModelFormatError(f"{source}: model format version {text} is not supported (this reader "
                               f"implements {FORMAT_VERSION[0]}.x)")
    return version


def _requires(text, source):
    try:
        value = json.loads(text) if isinstance(text, str) else None
    except (ValueError, RecursionError):
        value = None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ModelFormatError(f"{source}: metadata 'requires' must be a JSON list of strings, got {text!r:.60}")
    return value


def _declared_tensors(header, body_len, source):
    """{name: (dtype, shape, begin, end)} of the header's tensors, after the layout rule
    (MODEL-SPEC.md 1): valid entries, sizes that match dtype x shape, data packed without gaps,
    overlaps or trailing bytes."""
    sizes = {"F32": 4, "F16": 2, "BF16": 2, "F64": 8, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
             "BOOL": 1, "U16": 2, "U32": 4, "U64": 8, "F8_E4M3": 1, "F8_E5M2": 1}
    out = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(entry, dict):
            raise ModelFormatError(f"{source}: tensor {name!r} has a header entry that is not an object")
        dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
        if not (isinstance(shape, list) and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                                for d in shape)):
            raise ModelFormatError(f"{source}: tensor {name!r} has an invalid shape {shape!r:.80}")
        if not (isinstance(offsets, list) and len(offsets) == 2 and
                all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
                and 0 <= offsets[0] <= offsets[1] <= body_len):
            raise ModelFormatError(f"{source}: tensor {name!r} has data_offsets {offsets!r:.80} outside "
                                   f"the {body_len}-byte data")
        if not isinstance(dtype, str) or dtype not in sizes:
            raise ModelFormatError(f"{source}: tensor {name!r} has dtype {dtype!r:.40}, which a model "
                                   f"file may not use (allowed: {', '.join(WEIGHT_DTYPES)})")
        numel = 1
        for d in shape:
            numel *= d
        if offsets[1] - offsets[0] != numel * sizes[dtype]:
            raise ModelFormatError(f"{source}: tensor {name!r} holds {offsets[1] - offsets[0]} bytes, "
                                   f"its {dtype} shape {shape} needs {numel * sizes[dtype]}")
        out[name] = (dtype, tuple(shape), offsets[0], offsets[1])
    end = 0
    for name, (_, _, begin, stop) in sorted(out.items(), key=lambda kv: (kv[1][2], kv[1][3])):
        if begin != end:
            raise ModelFormatError(f"{source}: tensor {name!r} starts at data byte {begin}, expected {end} "
                                   f"(tensor data must be packed without gaps or overlaps)")
        end = stop
    if end != body_len:
        raise ModelFormatError(f"{source}: {body_len - end} bytes after the last tensor's data")
    return out


def _check_tensors(config, declared, data_len, source):
    """The declared tensors against the config's inventory, by arithmetic first (so a hostile
    config cannot make the reader list millions of expected tensors for a small file); returns
    whether the pre-selection codebooks are present."""
    full, bare = inventory_size(config), inventory_size(config, preselect=False)
    smallest = 4 * bare.normalisation + 2 * bare.weights   # every weight as F16 / BF16
    if smallest > data_len:
        raise ModelFormatError(f"{source}: the config describes a model of at least {smallest:,} bytes "
                               f"of tensor data; the file holds {data_len:,} bytes")
    names = [n for n in declared if not n.startswith(AUX_PREFIX)]
    if len(names) not in (full.tensors, bare.tensors):
        raise ModelFormatError(f"{source}: tensors do not match the config: {len(names)} tensors, it "
                               f"implies {full.tensors}" + (f" (or {bare.tensors} without pre-selection "
                                                           f"codebooks)" if bare.tensors != full.tensors else ""))
    preselect = len(names) == full.tensors
    expected = {t.name: t for t in tensor_inventory(config, preselect)}
    missing, unexpected = set(expected) - set(names), set(names) - set(expected)
    if missing or unexpected:
        raise ModelFormatError(f"{source}: tensors do not match the config: missing "
                               f"{sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}")
    for name, spec in expected.items():
        dtype, shape, _, _ = declared[name]
        if shape != spec.shape:
            raise ModelFormatError(f"{source}: tensor {name!r} has shape {list(shape)}, expected {list(spec.shape)}")
        allowed = (NORMALISATION_DTYPE,) if spec.role == "normalisation" else WEIGHT_DTYPES
        if dtype not in allowed:
            raise ModelFormatError(f"{source}: tensor {name!r} is stored as {dtype}; expected "
                                   f"{' or '.join(allowed)}")
    return preselect


def model_from_bytes(data, source="<bytes>"):
    """A QincoModel from safetensors bytes, after checking everything against its config."""
    from .model import QincoModel

    header, body_start = _parse_header(data, source)
    config, _ = _parse_metadata(header, source)
    declared = _declared_tensors(header, len(data) - body_start, source)
    preselect = _check_tensors(config, declared, len(data) - body_start, source)
    wanted = {n: v for n, v in declared.items() if not n.startswith(AUX_PREFIX)}
    tensors = {}
    body = memoryview(data)[body_start:]
    for name, (dtype, shape, begin, end) in wanted.items():
        t = torch.frombuffer(bytearray(body[begin:end]), dtype=_TORCH_DTYPES[dtype]) if end > begin \
            else torch.empty(0, dtype=_TORCH_DTYPES[dtype])
        t = t.reshape(shape)
        if not torch.isfinite(t).all():
            raise ModelFormatError(f"{source}: tensor {name!r} contains NaN or inf")
        tensors[name] = t
    if not float(tensors["std"]) > 0:
        raise ModelFormatError(f"{source}: tensor 'std' is {float(tensors['std'])}; it must be > 0")
    model = QincoModel(config, preselect=preselect)
    model.load_state_dict({k: t.float() for k, t in tensors.items()})
    return model


_TORCH_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}


def read_model_file(path):
    """(model, file bytes, SHA-256 hex) of a model file; unreadable files are a ModelFormatError."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            info = os.fstat(f.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise ModelFormatError(f"model path is not a regular file (a device, pipe or socket): {path}")
            data = f.read(info.st_size + 1)   # a file that grows while read is caught below
        if len(data) != info.st_size:
            raise ModelFormatError(f"model file {path} changed size while it was read "
                                   f"({info.st_size} bytes, then {len(data)})")
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
