"""The Python face of .qnc files: `compress` vectors into one, `open` one to read codes or decode
vectors at any prefix rate.

Reading codes needs no torch: this module imports the model machinery only when a model is
actually needed (training, encoding, decoding).
"""
import binascii
import os
import time

import numpy as np

from .errors import InputError, ModelMismatchError
from .formats import QncReader, QncWriter
from .prefetch import Prefetcher, TimedIterator
from .progress import bar, note
from .validation import as_float_matrix

DEFAULT_CHUNK_ROWS = 65536
DEFAULT_TRAIN_SIZE = 100_000
DEFAULT_BYTES = 16
DEFAULT_MAX_MINUTES = 5.0


# ---------------------------------------------------------------- input sources
class _ArraySource:
    """An in-memory or memory-mapped (n, d) array seen as a source of float32 batches."""

    def __init__(self, array, name="x"):
        if hasattr(array, "detach"):
            array = array.detach().cpu().numpy()
        array = np.asarray(array) if not isinstance(array, np.ndarray) else array
        if array.ndim != 2:
            raise InputError(f"{name}: expected a 2-D array (n, d), got shape {tuple(array.shape)}")
        self.array, self.name = array, name
        self.n, self.dim, self.dtype = array.shape[0], array.shape[1], array.dtype

    def iter_batches(self, batch_size):
        for s in range(0, self.n, batch_size):
            yield self.array[s:s + batch_size]

    def sample(self, k, seed=0):
        if self.n <= k:
            return np.asarray(self.array)
        rows = np.sort(np.random.default_rng(seed).choice(self.n, k, replace=False))
        return np.asarray(self.array[rows])


class _StreamSource:
    """A one-pass stream of batches (stdin): the training sample is its first rows, kept for encoding."""

    def __init__(self, stream, name="stdin"):
        self.stream, self.name = stream, name
        self.n, self.dim, self.dtype = stream.n, stream.dim, stream.dtype
        self._head, self._it = [], iter(stream.batches)

    def sample(self, k, seed=0):
        got = sum(len(b) for b in self._head)
        while got < k:
            batch = next(self._it, None)
            if batch is None:
                break
            self._head.append(batch)
            got += len(batch)
        return np.concatenate(self._head)[:k] if self._head else np.empty((0, self.dim), np.float32)

    def iter_batches(self, batch_size):
        yield from self._head
        self._head = []
        yield from self._it


class _FileSource:
    """A vector file (any format the readers support), read batch by batch."""

    def __init__(self, vectors):
        self.vectors, self.name = vectors, vectors.path
        self.n, self.dim, self.dtype = vectors.n, vectors.dim, vectors.dtype

    def iter_batches(self, batch_size):
        return self.vectors.iter_batches(batch_size)

    def sample(self, k, seed=0):
        if self.n <= k:
            return self.vectors.read(0, self.n)
        rows = np.sort(np.random.default_rng(seed).choice(self.n, k, replace=False))
        parts, start = [], 0
        for batch in self.vectors.iter_batches(65536):
            lo, hi = np.searchsorted(rows, [start, start + len(batch)])
            parts.append(batch[rows[lo:hi] - start])
            start += len(batch)
        return np.concatenate(parts)


def _as_source(x):
    """Wrap what compress() was given as a source with n, dim, dtype, sample() and iter_batches()."""
    if isinstance(x, (str, os.PathLike)):
        from .readers import open_vectors
        return _FileSource(open_vectors(x))
    if hasattr(x, "iter_batches") and hasattr(x, "sample"):
        return x
    if hasattr(x, "batches") and hasattr(x, "n"):
        return _StreamSource(x)
    return _ArraySource(x)


# ---------------------------------------------------------------- models
def _load_model_arg(model):
    """(QincoModel, its safetensors bytes, sha256 hex) from a path or a QincoModel."""
    from .serialize import model_to_bytes, read_model_file, sha256_hex

    if isinstance(model, (str, os.PathLike)):
        return read_model_file(model)
    data = model_to_bytes(model)
    return model, data, sha256_hex(data)


def _steps_for_bytes(nbytes, bytes_per_code, max_steps, what):
    if nbytes is None:
        return max_steps
    if not isinstance(nbytes, (int, np.integer)) or nbytes <= 0:
        raise InputError(f"bytes must be a positive integer, got {nbytes!r}")
    if nbytes % bytes_per_code:
        raise InputError(f"bytes={nbytes} is not a whole number of codes ({bytes_per_code} bytes per code)")
    if nbytes // bytes_per_code > max_steps:
        raise InputError(f"bytes={nbytes} exceeds {what} of {max_steps * bytes_per_code} bytes per vector")
    return int(nbytes // bytes_per_code)


def _fit_model(n, dim, nbytes, preset, weight_dtype, quiet):
    """The model shape and weight precision that keep a self-trained file below float16 size."""
    from .sizing import fit_model_to_file
    choice = fit_model_to_file(n, dim, nbytes, 256, preset, weight_dtype)
    if choice.overrides or choice.weight_dtype != weight_dtype:
        shape = ", ".join(f"{k}={v}" for k, v in choice.overrides.items()) or "the preset's shape"
        note(f"model sized for {n:,} vectors: {preset} with {shape}, {choice.weight_dtype} weights "
             f"({choice.model_bytes:,} bytes), so that the file stays below float16 size", quiet)
    return choice


def config_summary(model, n_params=None):
    c = model.config
    keys = ("preset", "arch", "dim", "M", "K", "L", "hidden", "embed", "A", "B", "version")
    out = {k: c[k] for k in keys if k in c}
    out["parameters"] = n_params if n_params is not None else model.num_parameters()
    return out


# ---------------------------------------------------------------- compress
def compress(x, path, model=None, *, bytes=None, chunk_rows=DEFAULT_CHUNK_ROWS, embed_model=True,
             metadata=None, preset=None, max_minutes=DEFAULT_MAX_MINUTES, train_size=DEFAULT_TRAIN_SIZE,
             zstd_level=3, A=None, B=None, weight_dtype="float32", model_out=None, batch_size=16384,
             device="auto", quiet=False, seed=0):
    """Encode vectors x into a .qnc file at `path`; returns a summary dict.

    x: an (n, d) array (memory-mapped arrays are read batch by batch), a vector file path, or a
    stream with `.n`, `.dim`, `.dtype` and batches (stdin). With model=None a model of `preset`
    is trained on a sample of x (`train_size` rows, `max_minutes`) for `bytes` bytes per vector.
    `bytes` below the model's rate stores only that prefix of each code. The model is embedded
    unless embed_model=False; then it is put in the model store so the file still opens.
    `weight_dtype` ('float32', 'float16', 'bfloat16') sets how the model's weights are stored.
    """
    from .presets import DEFAULT_PRESET
    from .serialize import model_from_bytes, model_to_bytes, sha256_hex

    src = _as_source(x)
    if model is None:
        from .training import train

        sample = src.sample(train_size, seed)
        if len(sample) < 2:
            raise InputError(f"{getattr(src, 'name', 'input')}: need at least 2 vectors to train a model, "
                             f"got {len(sample)}; pass a trained model instead")
        preset = preset or DEFAULT_PRESET
        overrides = {}
        if embed_model:
            choice = _fit_model(src.n, src.dim, bytes or DEFAULT_BYTES, preset, weight_dtype, quiet)
            overrides, weight_dtype = choice.overrides, choice.weight_dtype
        model = train(sample, preset=preset, bytes=bytes or DEFAULT_BYTES,
                      max_minutes=max_minutes, seed=seed, device=device, quiet=quiet, **overrides)
    model, data, sha = _load_model_arg(model)
    if weight_dtype != "float32":
        data = model_to_bytes(model, weight_dtype)
        sha = sha256_hex(data)
    model = model_from_bytes(data)  # encode with exactly the weights the file will decode with
    if src.dim != model.dim:
        raise InputError(f"input has dimension {src.dim}, the model expects {model.dim}")
    if model_out:
        from .formats.atomic import write_bytes_atomic
        write_bytes_atomic(model_out, data)
    steps = _steps_for_bytes(bytes, model.bytes_per_code, model.M, "the model's rate")
    if not embed_model:
        from . import model_store
        model_store.put(data, sha)
    code_bytes = src.n * steps * model.bytes_per_code
    if embed_model and len(data) > code_bytes and not quiet:
        hint = "" if weight_dtype != "float32" else ", or store its weights as float16"
        note(f"warning: the embedded model ({len(data):,} bytes) is larger than the codes "
             f"({code_bytes:,} bytes); share one model across files with --no-embed-model and the "
             f"model store{hint}", quiet)
    with QncWriter(path, n=src.n, dim=model.dim, source_dtype=np.dtype(src.dtype).name,
                   K=model.K, M=steps, model_sha256=binascii.unhexlify(sha),
                   model_config=config_summary(model), metadata=metadata,
                   model_bytes=data if embed_model else None, chunk_rows=chunk_rows,
                   zstd_level=zstd_level) as w, \
            bar(total=src.n, desc="encode", unit="vec", quiet=quiet) as pbar:
        start = 0
        for batch in src.iter_batches(batch_size):
            xb = as_float_matrix(batch, dim=model.dim, name="input", row_offset=start)
            w.write_codes(model.encode(xb, A=A, B=B, device=device)[:, :steps])
            start += len(batch)
            pbar.update(len(batch))
    file_size = os.path.getsize(path)
    return {"path": os.fspath(path), "n": src.n, "dim": model.dim, "bytes_per_vector": steps * model.bytes_per_code,
            "model_sha256": sha, "model_bytes": len(data), "model_embedded": bool(embed_model),
            "code_bytes": code_bytes, "file_size": file_size}


# ---------------------------------------------------------------- open
def open(source, model=None):  # noqa: A001 - mirrors builtins.open on purpose
    """Open a .qnc file (path or binary file object) for reading; see QncFile."""
    return QncFile(source, model)


class QncFile:
    """A .qnc file opened for reading codes (no torch needed) and decoding vectors.

    `model` (a path or a loaded QincoModel) is only needed when the file does not embed its
    model and the model store does not hold it.
    """

    def __init__(self, source, model=None):
        self._reader = QncReader(source)
        self._model_arg = model
        self._model = None
        h = self._reader.header
        self.header = h
        self.n, self.dim, self.K, self.M = h.n, h.dim, h.K, h.M
        self.bytes_per_code = h.bytes_per_code
        self.bytes_per_vector = h.M * h.bytes_per_code
        self.metadata = h.metadata
        self.model_sha256 = h.model_sha256.hex()
        self.model_size = self._reader.model_size

    def plane_sizes(self):
        """Per chunk, per plane: (stored bytes, raw bytes, zstd-compressed?)."""
        return self._reader.plane_sizes()

    def verify(self):
        """Read every plane and the embedded model, checking every checksum (raises QncFormatError)."""
        for _ in self._reader.iter_chunks():
            pass
        if self.header.has_embedded_model:
            self._reader.model_bytes()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        self._reader.close()

    @property
    def bytes_read(self):
        """Bytes read from the file so far (header, index and the planes actually needed)."""
        return self._reader.bytes_read

    def steps_for(self, nbytes):
        """Number of code steps that `nbytes` bytes per vector stand for (checked)."""
        return _steps_for_bytes(nbytes, self.bytes_per_code, self.M, "the file's rate")

    def codes(self, bytes=None, rows=None):
        """Codes (rows, bytes / bytes_per_code) as stored: a prefix of each vector's code."""
        return self._reader.codes(steps=self.steps_for(bytes), rows=rows)

    @property
    def model(self):
        """The model that decodes this file: embedded, given, or found in the model store."""
        if self._model is None:
            self._model = self._resolve_model()
        return self._model

    def _resolve_model(self):
        from . import model_store
        from .serialize import model_from_bytes, model_to_bytes, read_model_file, sha256_hex

        want = self.model_sha256
        if self._model_arg is None and self.header.has_embedded_model:
            return model_from_bytes(self._reader.model_bytes(), source="embedded model")
        if self._model_arg is not None:
            if isinstance(self._model_arg, (str, os.PathLike)):
                m, _, got = _load_model_arg(self._model_arg)
                where = os.fspath(self._model_arg)
            else:
                m = self._model_arg
                got = getattr(m, "sha256", None) or sha256_hex(model_to_bytes(m))
                where = "the given model"
            if got != want:
                raise ModelMismatchError(f"wrong model: the file was written with model {want}, "
                                         f"{where} is {got}")
            return m
        path = model_store.find(want)
        if path is None:
            raise InputError(f"the file does not embed its model {want}; pass it with --model PATH "
                             f"(model=...) or put it in the model store ({model_store.store_dir()})")
        model, _, got = read_model_file(path)
        if got != want:
            raise ModelMismatchError(f"model store file {path} does not hash to {want}")
        return model

    def _check_model_rate(self, steps):
        if self.model.dim != self.dim or self.model.K != self.K or self.model.M < steps:
            raise ModelMismatchError(f"model (dim={self.model.dim}, K={self.model.K}, M={self.model.M}) "
                                     f"cannot decode this file (dim={self.dim}, K={self.K}, M={self.M})")

    def decode(self, bytes=None, rows=None, device="auto"):
        """float32 vectors (rows, dim) decoded from the first `bytes` bytes of each code."""
        steps = self.steps_for(bytes)
        codes = self._reader.codes(steps=steps, rows=rows)
        self._check_model_rate(steps)
        if len(codes) == 0:
            return np.empty((0, self.dim), dtype=np.float32)
        return self.model.decode(codes, device=device)

    def iter_decode(self, bytes=None, batch_size=65536, device="auto", prefetch=True):
        """Yield decoded float32 batches of up to `batch_size` rows, in file order, in bounded memory.

        With `prefetch` a background thread reads and decompresses the next chunk while the
        current batch decodes. After (or during) the iteration, `stream_stats` holds the rows
        decoded and the seconds spent reading chunks and decoding them.
        """
        steps = self.steps_for(bytes)
        if self.n:
            self._check_model_rate(steps)
        stats = self.stream_stats = {"rows": 0, "read_seconds": 0.0, "decode_seconds": 0.0,
                                     "wall_seconds": 0.0, "prefetch": bool(prefetch)}
        chunks = (block for _, block in self._reader.iter_chunks(steps=steps))
        source = Prefetcher(chunks) if prefetch else TimedIterator(chunks)
        t_start = time.perf_counter()

        def decode(codes):
            t0 = time.perf_counter()
            out = self.model.decode(codes, device=device)
            stats["decode_seconds"] += time.perf_counter() - t0
            stats["rows"] += len(out)
            stats["read_seconds"] = source.busy_seconds
            stats["wall_seconds"] = time.perf_counter() - t_start
            return out

        pending, count = [], 0
        try:
            for block in source:
                pending.append(block)
                count += len(block)
                while count >= batch_size:
                    codes = np.concatenate(pending)
                    yield decode(codes[:batch_size])
                    rest = codes[batch_size:]
                    pending, count = ([rest] if len(rest) else []), len(rest)
            if count:
                yield decode(np.concatenate(pending))
        finally:
            source.close()
            stats["read_seconds"] = source.busy_seconds
            stats["wall_seconds"] = time.perf_counter() - t_start

