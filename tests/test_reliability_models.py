"""Reliability: untrusted model files (safetensors) and checkpoints.

tests/test_serialize.py covers NaN weights, wrong shapes, bad config fields and a few malformed
files. Here: oversized safetensors header lengths, configs that claim huge dimensions or step
counts (refused quickly, with small peak memory), header JSON of the wrong types or nested
deeply, byte- and structure-level fuzzing of model files, models embedded in .qnc files, pickles
that must never be unpickled, and a grep of the package for unsafe deserialisation.
"""
import contextlib
import json
import pickle
import re
import signal
import struct
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import qinco_codec
from qinco_codec.checkpoint import Checkpoint
from qinco_codec.errors import ModelFormatError
from qinco_codec.formats import QncWriter
from qinco_codec.model import QincoModel
from qinco_codec.serialize import MAX_HEADER_BYTES, model_from_bytes, model_to_bytes
from reliability_util import rss_growth_when_refused

REPO = Path(__file__).resolve().parents[1]
PACKAGE_DIRS = ("qinco_codec",)


@pytest.fixture(scope="module")
def small():
    """(model, safetensors bytes, parsed header, tensor bytes) of an untrained 8-d model."""
    model = QincoModel.from_preset("qinco2-XS", 8, 2, K=16)
    data = model_to_bytes(model)
    hlen = struct.unpack("<Q", data[:8])[0]
    return model, data, json.loads(data[8:8 + hlen]), data[8 + hlen:]


def build(header, body):
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + body


def with_config(small, **changes):
    _, _, header, body = small
    header = json.loads(json.dumps(header))
    config = json.loads(header["__metadata__"]["config"])
    config.update(changes)
    header["__metadata__"]["config"] = json.dumps(config)
    return build(header, body)


class TimeLimit(AssertionError):
    pass


@contextlib.contextmanager
def time_limit(seconds):
    """Raise TimeLimit (an AssertionError) if the block runs longer than `seconds`."""
    def on_alarm(signum, frame):
        raise TimeLimit(f"not finished within {seconds} s")
    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@contextlib.contextmanager
def traced_peak():
    """Yields a list that receives the traced-memory peak (bytes above the start) on exit."""
    result = []
    tracemalloc.start()
    tracemalloc.reset_peak()
    before = tracemalloc.get_traced_memory()[0]
    try:
        yield result
    finally:
        result.append(tracemalloc.get_traced_memory()[1] - before)
        tracemalloc.stop()


def refused_quickly(data, match, seconds=2.0, max_peak=1 << 20):
    """model_from_bytes(data) raises ModelFormatError matching `match` within `seconds`, with a
    traced peak below `max_peak` bytes."""
    t0 = time.perf_counter()
    with traced_peak() as peak, time_limit(max(seconds * 5, 10)):
        with pytest.raises(ModelFormatError, match=match or None):
            model_from_bytes(data)
    elapsed = time.perf_counter() - t0
    assert elapsed < seconds, elapsed
    assert peak[0] < max_peak, peak[0]


# -- oversized safetensors header length --------------------------------------------------------

@pytest.mark.parametrize("hlen", [2 ** 64 - 1, 2 ** 63, 2 ** 32, MAX_HEADER_BYTES + 8])
def test_oversized_header_length_is_refused_before_reading_it(hlen):
    """The 8-byte length says more than the limit (16 MiB) or the file: refused without slicing
    or parsing anything; the 16 MiB + 8 case has those bytes actually present."""
    body = b"{" + b" " * (MAX_HEADER_BYTES + 8) if hlen == MAX_HEADER_BYTES + 8 else b"{}"
    refused_quickly(struct.pack("<Q", hlen) + body, "header length")


def test_header_length_one_past_the_end_is_refused(small):
    _, data, _, _ = small
    hlen = len(data) - 8 + 1
    refused_quickly(struct.pack("<Q", hlen) + data[8:], "header length")


# -- configs that claim huge sizes --------------------------------------------------------------

def test_config_with_huge_dims_is_refused_quickly_with_small_memory(small):
    """dim, K, hidden, embed, A, B at their limits (65536): the bytes such a model needs are worked
    out by arithmetic and compared with the file's size before anything is listed or built."""
    data = with_config(small, dim=65536, K=65536, hidden=65536, embed=65536, A=65536, B=65536)
    refused_quickly(data, "describes a model of at least [0-9,]+ bytes of tensor data; the file holds")


def test_config_with_huge_dims_process_memory(small, tmp_path):
    """The same in a fresh process, measured by its maximum resident set (torch allocations are
    invisible to tracemalloc): it grows by far less than one 65536 x 65536 float32 matrix."""
    path = tmp_path / "huge.safetensors"
    path.write_bytes(with_config(small, dim=65536, K=65536, hidden=65536, embed=65536))
    verdict, grew_mib = rss_growth_when_refused(
        "qinco_codec.load_model(sys.argv[1])", "ModelFormatError", path, timeout=300,
        preload=("qinco_codec.serialize", "qinco_codec.model"))
    assert verdict == "refused" and grew_mib < 200, (verdict, grew_mib)


def test_config_with_huge_step_count_is_refused_quickly(small):
    data = with_config(small, M=1024, L=256)
    with time_limit(5):
        with pytest.raises(ModelFormatError):
            model_from_bytes(data)


def test_moderate_step_count_is_refused_quickly(small):
    """M=64, L=16 (about 1000 blocks): refused by the size arithmetic, with nothing listed or built."""
    refused_quickly(with_config(small, M=64, L=16), "describes a model of at least", seconds=2,
                    max_peak=4 << 20)


def test_hostile_placeholder_entries_are_refused_quickly(small):
    """The red-team file (issue 17, bug 6): a config of M=1024, L=256 and 529,917 placeholder
    tensor entries ({"shape": []}) in a 12 MB header cost 860 s and 3.5 GB before it was refused.
    The config alone is over the tensor limit, so it is refused before the entries are looked at;
    at M=256 the size arithmetic refuses it."""
    _, _, header, body = small
    for M in (1024, 256):
        h = json.loads(json.dumps(header))
        config = json.loads(h["__metadata__"]["config"])
        config.update(M=M, L=256)
        h["__metadata__"]["config"] = json.dumps(config)
        for i in range(529_917 if M == 1024 else 100_000):
            h[f"p{i}"] = {"shape": []}
        refused_quickly(build(h, body), "over the 131,072 limit|describes a model of at least|tensor",
                        seconds=10, max_peak=1 << 30)


# -- header JSON of the wrong types -------------------------------------------------------------

def _mutated(small, how):
    _, _, header, body = small
    h = json.loads(json.dumps(header))
    how(h)
    return build(h, body)


def _set(path, value):
    def how(h):
        node = h
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
    return how


DEEP = "[" * 100_000

WRONG_TYPES = [
    pytest.param(_set(["codebook0", "shape"], 5), id="shape-int"),
    pytest.param(_set(["std", "shape"], True), id="shape-bool"),
    pytest.param(_set(["__metadata__"], [1, 2]), id="metadata-list"),
    pytest.param(_set(["__metadata__"], "text"), id="metadata-string"),
    pytest.param(_set(["__metadata__", "config"], 5), id="config-int"),
    pytest.param(_set(["__metadata__", "config"], None), id="config-null"),
    pytest.param(_set(["__metadata__", "config"], DEEP), id="config-deeply-nested"),
    pytest.param(_set(["codebook0", "shape"], "ab"), id="shape-string"),
    pytest.param(_set(["codebook0", "shape"], [1e9, 1e9]), id="shape-floats"),
    pytest.param(_set(["codebook0", "shape"], [2 ** 62, 2 ** 62]), id="shape-huge"),
    pytest.param(_set(["codebook0", "shape"], [-1, 8]), id="shape-negative"),
    pytest.param(_set(["codebook0", "data_offsets"], [0, 2 ** 62]), id="offsets-huge"),
    pytest.param(_set(["codebook0", "data_offsets"], [8, 0]), id="offsets-reversed"),
    pytest.param(_set(["codebook0", "dtype"], "F8_E4M3"), id="dtype-float8"),
    pytest.param(_set(["codebook0", "dtype"], "XYZ"), id="dtype-unknown"),
    pytest.param(_set(["codebook0"], "not an object"), id="tensor-entry-string"),
    pytest.param(_set(["__metadata__", "format"], 7), id="format-int"),
    pytest.param(_set(["__metadata__", "config"], "[1]"), id="config-json-list"),
    pytest.param(_set(["__metadata__", "config"], '{"dim": 8'), id="config-invalid-json"),
]


@pytest.mark.parametrize("how", WRONG_TYPES)
def test_header_values_of_the_wrong_type_are_refused(small, how):
    refused_quickly(_mutated(small, how), "")


def test_deeply_nested_header_json_is_refused():
    text = b'{"a":' + b"[" * 100_000
    text += b" " * (-len(text) % 8)
    refused_quickly(struct.pack("<Q", len(text)) + text, "")


# -- fuzzing ------------------------------------------------------------------------------------

def _load_outcome(data):
    """None when model_from_bytes(data) loads or raises ModelFormatError, else the exception."""
    try:
        model_from_bytes(data)
    except ModelFormatError:
        return None
    except Exception as exc:  # noqa: BLE001
        return exc
    return None


@settings(derandomize=True, database=None, deadline=None, max_examples=200,
          suppress_health_check=list(HealthCheck))
@given(rng=st.randoms(use_true_random=False))
def test_fuzz_model_bytes(rng):
    """Bit flips (header or tensor bytes), truncation, insertion, a rewritten length prefix:
    ModelFormatError or a model, never another exception, within the time and memory bounds."""
    model = QincoModel.from_preset("qinco2-XS", 8, 2, K=16)
    data = bytearray(model_to_bytes(model))
    hlen = struct.unpack("<Q", data[:8])[0]
    op = rng.choice(["flip_header", "flip_header", "flip_data", "truncate", "insert", "length"])
    if op == "flip_header":
        for _ in range(rng.choice([1, 2, 8])):
            data[rng.randrange(8, 8 + hlen)] ^= 1 << rng.randrange(8)
    elif op == "flip_data":
        for _ in range(rng.choice([1, 8, 64])):
            data[rng.randrange(8 + hlen, len(data))] ^= 1 << rng.randrange(8)
    elif op == "truncate":
        del data[rng.randrange(len(data)):]
    elif op == "insert":
        at = rng.randrange(len(data))
        data[at:at] = rng.randbytes(rng.choice([1, 7, 100]))
    else:
        data[:8] = struct.pack("<Q", rng.choice([0, 1, hlen - 1, hlen + 1, len(data), 2 ** 64 - 1,
                                                 rng.getrandbits(64)]))
    tracemalloc.start()
    try:
        with time_limit(10):
            exc = _load_outcome(bytes(data))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert exc is None, f"{op}: {type(exc).__name__}: {exc}"
    assert peak < 64 * len(data) + (1 << 20), peak


JSON_VALUES = [None, True, 0, -1, 5, 2 ** 63, 1e308, "", "x", "F32", [], [1], [[1]], [2 ** 40],
               {}, {"a": 1}, "[" * 3000]


@settings(derandomize=True, database=None, deadline=None, max_examples=200,
          suppress_health_check=list(HealthCheck))
@given(rng=st.randoms(use_true_random=False))
def test_fuzz_model_header_structure(rng):
    """Any value of the header JSON (a tensor entry or one of its fields, the metadata, a config
    field) replaced by a JSON value of any type: ModelFormatError or a model, never another
    exception."""
    model = QincoModel.from_preset("qinco2-XS", 8, 2, K=16)
    data = model_to_bytes(model)
    hlen = struct.unpack("<Q", data[:8])[0]
    header, body = json.loads(data[8:8 + hlen]), data[8 + hlen:]
    config = json.loads(header["__metadata__"]["config"])
    where = rng.choice(["tensor", "tensor_field", "metadata", "metadata_field", "config"])
    value = rng.choice(JSON_VALUES)
    tensor = rng.choice(sorted(k for k in header if k != "__metadata__"))
    if where == "tensor":
        header[tensor] = value
    elif where == "tensor_field":
        header[tensor][rng.choice(["dtype", "shape", "data_offsets", "extra"])] = value
    elif where == "metadata":
        header["__metadata__"] = value
    elif where == "metadata_field":
        header["__metadata__"][rng.choice(["format", "config", "weight_dtype"])] = value
    else:
        config[rng.choice(sorted(config) + ["new"])] = value
        header["__metadata__"]["config"] = json.dumps(config)
    with time_limit(10):
        exc = _load_outcome(build(header, body))
    assert exc is None, f"{where}={value!r}: {type(exc).__name__}: {exc}"


# -- models inside .qnc files, pickles, checkpoints ---------------------------------------------

def test_hostile_embedded_model_is_refused_when_decoding_but_codes_still_read(tmp_path):
    """A .qnc that embeds a hostile 'model' (a header length of 2^63): its codes read without
    the model; decoding refuses the model with ModelFormatError."""
    import hashlib
    hostile = struct.pack("<Q", 2 ** 63) + b"{}"
    codes = np.arange(40, dtype=np.uint8).reshape(20, 2) % 16
    path = tmp_path / "hostile.qnc"
    with QncWriter(path, n=20, dim=8, source_dtype="float32", K=16, M=2,
                   model_sha256=hashlib.sha256(hostile).digest(), model_config={},
                   model_bytes=hostile) as w:
        w.write_codes(codes)
    with qinco_codec.open(path) as f:
        np.testing.assert_array_equal(f.codes(), codes)
        with pytest.raises(ModelFormatError, match="header length"):
            f.decode()


class _Payload:
    """Unpickling this would create the marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_pickled_model_files_are_never_unpickled(tmp_path):
    """Pickles and torch.save files handed over as models are refused with a one-line error by
    the API and the CLI; the payload never runs."""
    import torch
    from click.testing import CliRunner

    from qinco_codec.cli import compress as compress_cli

    marker = tmp_path / "PWNED"
    evil = tmp_path / "evil.safetensors"
    evil.write_bytes(pickle.dumps(_Payload(marker)))
    evil_pt = tmp_path / "evil.pt"
    torch.save({"x": _Payload(marker)}, evil_pt)
    x = tmp_path / "x.npy"
    np.save(x, np.zeros((4, 8), np.float32))
    for path in (evil, evil_pt):
        with pytest.raises(ModelFormatError):
            qinco_codec.load_model(path)
        try:
            runner = CliRunner(mix_stderr=False)
        except TypeError:
            runner = CliRunner()
        result = runner.invoke(compress_cli.main, [str(x), str(tmp_path / "o.qnc"), "--model",
                                                   str(path), "--quiet"])
        assert result.exit_code == 1, (result.output, result.exception)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("qinco-compress: error: "), lines
    assert not marker.exists()
    assert not (tmp_path / "o.qnc").exists()


@pytest.mark.parametrize("data", [struct.pack("<Q", 2 ** 64 - 1) + b"{}",
                                  struct.pack("<Q", 100_008) + b'{"a":' + b"[" * 100_003,
                                  b"\x80\x04\x95" + bytes(40)])
def test_hostile_checkpoints_are_refused_as_corrupt(tmp_path, data):
    x = np.zeros((10, 8), np.float32)
    path = tmp_path / "run.ckpt"
    path.write_bytes(data)
    with time_limit(10), pytest.raises(ModelFormatError, match="corrupt checkpoint"):
        Checkpoint(path, {"dim": 8}, x, 0).load()


# -- no unsafe deserialisation anywhere in the package ------------------------------------------

UNSAFE = [
    (r"^\s*(import|from)\s+(c?pickle|dill|cloudpickle|joblib|shelve|marshal)\b", "pickle-like import"),
    (r"\bpickle\.(loads?|Unpickler)\b", "pickle.load"),
    (r"\btorch\.load\s*\(", "torch.load"),
    (r"\ballow_pickle\s*=\s*True", "np.load(allow_pickle=True)"),
    (r"\bmarshal\.loads?\b", "marshal.load"),
    (r"\byaml\.(unsafe_)?load\s*\(", "yaml.load"),
    (r"(?<![.\w])(eval|exec)\s*\(", "eval/exec"),
]


def test_no_module_deserialises_with_pickle_or_torch_load():
    files = [p for d in PACKAGE_DIRS for p in sorted((REPO / d).rglob("*.py"))]
    assert len(files) >= 25, files
    found = []
    for path in files:
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            code = line.split("#", 1)[0]
            for pattern, what in UNSAFE:
                if re.search(pattern, code):
                    found.append(f"{path.relative_to(REPO)}:{lineno}: {what}: {line.strip()}")
    assert not found, "\n".join(found)


def test_the_grep_would_catch_each_pattern():
    """The patterns above are not vacuous."""
    samples = ["import pickle", "from joblib import load", "obj = pickle.loads(b)",
               "torch.load(f)", "np.load(p, allow_pickle=True)", "yaml.load(s)", "eval(text)"]
    for sample in samples:
        assert any(re.search(p, sample) for p, _ in UNSAFE), sample
    assert not any(re.search(p, "np.load(p)") for p, _ in UNSAFE)
    assert not any(re.search(p, "model.eval()") for p, _ in UNSAFE)

