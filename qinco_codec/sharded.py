"""Sharded compression (`qinco_codec.compress_sharded`, `qinco-shard`): a collection encoded as
N independent .qnc shards with one model, as Ray tasks or in local processes.

Why shards fall on chunk boundaries. Shard i holds chunks [i*C//N, (i+1)*C//N) of the
C = ceil(n / chunk_rows) chunks one `compress` of all n rows would write, so every shard but the
last holds a multiple of chunk_rows rows and `merge` copies every chunk byte for byte: the merged
file is the file `compress(x, model=..., steps=..., chunk_rows=..., zstd_level=..., A=..., B=...)`
writes, byte for byte, because each shard also carries the same sections (model_config,
metadata, embedded model, and the quality report, measured once by the driver on the sample
`compress` measures, SAMPLE_ROWS rows of the whole collection).

Engines. With Ray (the optional extra `[distributed]`): one task per shard (`num_cpus` = the
task's threads), on the running Ray if `ray.init` was called, else `ray.init(address)` (a
cluster) or a local Ray started for the call and shut down after it. Without Ray: a pool of
local processes (spawn context, so no torch state is forked), as many as the cores allow at
`threads` threads each. Every task reads its own rows of the inputs (files are opened by path in
the task: on a cluster, the inputs and OUT_DIR must be on a filesystem every node sees; an
in-memory array is put in Ray's object store once).

Restartable. OUT_DIR holds the shards and `<name>.manifest.json`, the job's parameters (inputs
with their sizes and mtimes, model id, steps, A, B, chunk_rows, zstd level, shard row ranges)
and its quality report. A rerun with the same parameters skips every shard that exists and
verifies (header fields, model id, row count, sections, every plane's CRC; the embedded model's
SHA-256) and redoes the others; a rerun with other parameters rewrites every shard. Each shard is
written through the atomic writer, so a shard file is complete or absent. A failed task is
retried `retries` times (errors a rerun cannot fix, such as bad input, are not retried); a shard
that still fails ends the call with an error naming it, the shards done so far staying.

Threads: 1 per task by default (set before the task imports torch; OMP_WAIT_POLICY=PASSIVE
unless the environment chose one, see threads.py). Progress over all shards (rows, rate, ETA)
goes to stderr unless quiet.
"""
import concurrent.futures
import hashlib
import json
import multiprocessing
import os
import time

import numpy as np

from .errors import InputError, QincoError, QncFormatError
from .progress import bar, duration, note

DEFAULT_CHUNK_ROWS = 65536   # as compressor.DEFAULT_CHUNK_ROWS (not imported: it imports torch code)
MANIFEST_VERSION = 1
PIECE_SECONDS = 1.0          # a task reports progress about this often
FIRST_PIECE_ROWS = 64     # then as many rows as take PIECE_SECONDS (codes do not depend on it)
MAX_PIECE_ROWS = 16384
POLL_SECONDS = 0.5
FAULT_ENV = "QINCO_SHARD_FAULT"  # "INDEX:MARKER": shard INDEX fails once (tests of the retries)


# ------------------------------------------------------------------ the inputs, as one collection
class Collection:
    """The rows to compress: one vector file, a list of files, row ranges `(path, start, stop)`
    of files, or one in-memory (n, d) array, seen as one sequence of n rows. `segments` lists
    (path or None for the array, start, stop) in order; `read(lo, hi)` gives global rows as
    float32 (what `compress` encodes)."""

    def __init__(self, inputs):
        from .readers import open_vectors

        self.array = None
        if isinstance(inputs, np.ndarray):
            if inputs.ndim != 2:
                raise InputError(f"inputs: expected a 2-D array (n, d), got shape {inputs.shape}")
            self.array = inputs
            self.segments = [(None, 0, len(inputs))]
            self.dim, self.dtype = inputs.shape[1], inputs.dtype
        else:
            items = [inputs] if _is_item(inputs) else list(inputs)
            if not items:
                raise InputError("inputs: no input files given")
            self.segments, self.dim, self.dtype = [], None, None
            for item in items:
                if not _is_item(item):
                    raise InputError(f"inputs: expected a path or (path, start, stop), got "
                                     f"{item!r}")
                path, start, stop = (item, 0, None) if isinstance(item, (str, os.PathLike)) \
                    else item
                path = os.fspath(path)
                with open_vectors(path) as vectors:
                    n, dim, dtype = vectors.n, vectors.dim, vectors.dtype
                stop = n if stop is None else stop
                if not 0 <= start <= stop <= n:
                    raise InputError(f"{path}: row range [{start}, {stop}) is not within its "
                                     f"{n} rows")
                if self.dim is None:
                    self.dim, self.dtype = dim, dtype
                elif dim != self.dim:
                    raise InputError(f"{path}: vectors of dimension {dim}, the first input has "
                                     f"{self.dim}")
                elif np.dtype(dtype) != np.dtype(self.dtype):
                    raise InputError(f"{path}: vectors of dtype {np.dtype(dtype).name}, the "
                                     f"first input has {np.dtype(self.dtype).name}")
                self.segments.append((path, start, stop))
        self.n = sum(stop - start for _, start, stop in self.segments)
        self.name = "the array" if self.array is not None else self.segments[0][0]

    def pieces(self, lo, hi):
        """(path or None, start, stop) of each segment's part of global rows [lo, hi)."""
        out, at = [], 0
        for path, start, stop in self.segments:
            count = stop - start
            a, b = max(lo, at), min(hi, at + count)
            if a < b:
                out.append((path, start + a - at, start + b - at))
            at += count
        return out

    def read(self, lo, hi):
        """Global rows [lo, hi) as a float32 (hi - lo, dim) array."""
        return read_pieces(self.pieces(lo, hi), self.array, self.dim)

    def identity(self):
        """What the manifest records of the inputs, to tell a rerun on the same inputs."""
        if self.array is not None:
            digest = hashlib.sha256(np.ascontiguousarray(self.array).data).hexdigest()
            return [{"array_sha256": digest, "shape": list(self.array.shape),
                     "dtype": self.array.dtype.name}]
        out = []
        for path, start, stop in self.segments:
            st = os.stat(path)
            out.append({"path": os.path.abspath(path), "start": start, "stop": stop,
                        "size": st.st_size, "mtime_ns": st.st_mtime_ns})
        return out


def _is_item(value):
    """A path, or a (path, start, stop) row range."""
    if isinstance(value, (str, os.PathLike)):
        return True
    return (isinstance(value, tuple) and len(value) == 3 and
            isinstance(value[0], (str, os.PathLike)) and
            all(isinstance(v, (int, np.integer)) for v in value[1:]))


def read_pieces(pieces, array, dim):
    """Rows of `pieces` ((path or None, start, stop): None reads `array`) as one float32 array."""
    from .readers import open_vectors

    parts = []
    for path, start, stop in pieces:
        if path is None:
            parts.append(np.asarray(array[start:stop], dtype=np.float32))
        else:
            with open_vectors(path) as vectors:
                parts.append(vectors.read(start, stop))
    return np.concatenate(parts) if parts else np.empty((0, dim), np.float32)


def shard_ranges(n, chunk_rows, shards):
    """Row range [lo, hi) of each shard: shard i holds chunks [i*C//S, (i+1)*C//S) of the
    C = ceil(n / chunk_rows) chunks, S = min(shards, C) (at least 1), so that every boundary is a
    multiple of chunk_rows."""
    chunks = -(-n // chunk_rows)
    count = max(1, min(shards, chunks))
    bounds = [min(n, (i * chunks // count) * chunk_rows) for i in range(count + 1)]
    return list(zip(bounds[:-1], bounds[1:]))


def shard_path(out_dir, name, index, count):
    """OUT_DIR/<name>-00000-of-00004.qnc: the shards sort in row order."""
    return os.path.join(os.fspath(out_dir), f"{name}-{index:05d}-of-{count:05d}.qnc")


# ------------------------------------------------------------------ verifying a shard on disk
def verify_shard(path, job):
    """None when the shard at `path` is the complete shard `job` describes, else why not: the
    header fields and sections it must have, then every plane's CRC and the embedded model's
    SHA-256."""
    from .formats import QncReader

    if not os.path.exists(path):
        return "missing"
    expected = {"n": job["hi"] - job["lo"], "dim": job["dim"], "K": job["K"], "M": job["steps"],
                "chunk_rows": job["chunk_rows"], "source_dtype": job["source_dtype"],
                "model_sha256": bytes.fromhex(job["model_sha256"]),
                "has_embedded_model": job["embed_model"], "metadata": job["metadata"],
                "quality_report": job["quality_report"], "model_config": job["model_config"]}
    try:
        with QncReader(path) as reader:
            for field, want in expected.items():
                if getattr(reader.header, field) != want:
                    return f"{field} differs from this job's"
            for _ in reader.raw_chunks():  # each plane's CRC is checked
                pass
            if reader.header.has_embedded_model:
                reader.model_bytes()  # checked against the header's SHA-256
    except (QncFormatError, OSError) as exc:
        return f"does not verify ({exc})"
    return None


# ------------------------------------------------------------------ the task: one shard
def _apply_threads(threads):
    """Use `threads` CPU threads in this worker; before torch is imported, also the wait policy."""
    from .threads import DEFAULT_WAIT_POLICY, WAIT_POLICY, request_threads
    os.environ.setdefault(WAIT_POLICY, DEFAULT_WAIT_POLICY)
    request_threads(threads)


def _injected_fault(index):
    """FAULT_ENV="INDEX:MARKER" (or "INDEX:MARKER:exit"): shard INDEX fails once: it creates
    MARKER, then raises (or its process exits at once, as a killed worker does)."""
    spec = os.environ.get(FAULT_ENV, "")
    if not spec:
        return
    which, marker, *kind = spec.split(":")
    if int(which) == index and not os.path.exists(marker):
        open(marker, "w").close()
        if kind == ["exit"]:
            os._exit(70)
        raise RuntimeError(f"injected fault ({FAULT_ENV}) in shard {index}")


def encode_shard(job, model_data, array=None, report=None):
    """Write the shard `job` describes (a dict, see compress_sharded): encode its rows with the
    model in `model_data` (safetensors bytes) into job['path'] through the atomic writer.
    `report(rows_done)` is called as it goes. Returns (index, rows, seconds)."""
    _apply_threads(job["threads"])
    _injected_fault(job["index"])
    import binascii

    from .formats import QncWriter
    from .serialize import model_from_bytes

    t0 = time.monotonic()
    model = model_from_bytes(model_data)
    rows, done, piece = job["hi"] - job["lo"], 0, FIRST_PIECE_ROWS
    with QncWriter(job["path"], n=rows, dim=job["dim"], source_dtype=job["source_dtype"],
                   K=job["K"], M=job["steps"], model_sha256=binascii.unhexlify(job["model_sha256"]),
                   model_config=job["model_config"], metadata=job["metadata"],
                   model_bytes=model_data if job["embed_model"] else None,
                   chunk_rows=job["chunk_rows"], zstd_level=job["zstd_level"] or None,
                   quality_report=job["quality_report"]) as writer:
        while done < rows:
            lo = job["lo"] + done
            hi = min(job["hi"], lo + piece)
            x = read_pieces(_pieces_of(job, lo, hi), array, job["dim"])
            if getattr(model.config, "unit_norm", False):  # as compress checks its rows
                from .unit_norm import check_unit_norm
                check_unit_norm(x, row_offset=lo)
            t = time.monotonic()
            codes = model.encode(x, A=job["A"], B=job["B"], device=job["device"])
            rate = len(x) / max(time.monotonic() - t, 1e-9)
            writer.write_codes(codes[:, :job["steps"]])
            done += len(x)
            piece = int(min(MAX_PIECE_ROWS, max(FIRST_PIECE_ROWS, rate * PIECE_SECONDS)))
            if report is not None:
                report(done)
    return job["index"], rows, time.monotonic() - t0


def _pieces_of(job, lo, hi):
    """The (path or None, start, stop) pieces of global rows [lo, hi) of the job's segments
    (the array, when given in pieces, starts at global row job['array_base'])."""
    out, at = [], 0
    for path, start, stop in job["segments"]:
        count = stop - start
        a, b = max(lo, at), min(hi, at + count)
        if a < b:
            shift = job.get("array_base", 0) if path is None else 0
            out.append((path, start + a - at - shift, start + b - at - shift))
        at += count
    return out


# ------------------------------------------------------------------ engines
_BOARD = None  # the process pool's shared per-shard row counts (set in each worker)
_MODEL = None  # the model's bytes, given to each worker once when it starts


def _init_worker(board, model_data):
    global _BOARD, _MODEL
    _BOARD, _MODEL = board, model_data


def _process_task(job, array):
    def report(rows):
        _BOARD[job["index"]] = rows
    return encode_shard(job, _MODEL, array, report)


class ProcessEngine:
    """Shard tasks in a pool of local processes (spawn context); progress in shared memory."""

    name = "local processes"

    def __init__(self, shards, workers, collection, model_data):
        self._ctx = multiprocessing.get_context("spawn")
        self._board = self._ctx.Array("q", shards, lock=False)
        self._workers, self._collection, self._model_data = workers, collection, model_data
        self._pool = None
        self._pool_of = {}  # future -> the pool it runs in (a dead worker breaks only its pool)

    def describe(self):
        return f"{self._workers} local processes"

    def _executor(self):
        if self._pool is None:
            self._pool = concurrent.futures.ProcessPoolExecutor(
                self._workers, mp_context=self._ctx, initializer=_init_worker,
                initargs=(self._board, self._model_data))
        return self._pool

    def submit(self, job):
        self._board[job["index"]] = 0
        array = None
        if self._collection.array is not None:  # only this shard's rows travel to the worker
            array = self._collection.array[job["lo"]:job["hi"]]
            job = dict(job, array_base=job["lo"])
        pool = self._executor()
        future = pool.submit(_process_task, job, array)  # small: the model went at start-up
        self._pool_of[future] = pool
        return future

    def wait(self, handles, timeout):
        """[(handle, result or None, exception or None)] of the handles done within timeout."""
        done, _ = concurrent.futures.wait(handles, timeout=timeout,
                                          return_when=concurrent.futures.FIRST_COMPLETED)
        out = []
        for future in done:
            error = future.exception()
            pool = self._pool_of.pop(future, None)
            if isinstance(error, concurrent.futures.process.BrokenProcessPool) and \
                    pool is self._pool:  # a worker died: this pool is unusable, retries get a new one
                self._pool.shutdown(wait=False, cancel_futures=True)
                self._pool = None
            out.append((future, None if error else future.result(), error))
        return out

    def rows_done(self, indices):
        return sum(self._board[i] for i in indices)

    def cancel(self, handles):
        """Stop now (an interrupted run): pending tasks cancelled, running workers terminated
        (their atomic writers leave no shard behind)."""
        for future in handles:
            future.cancel()
        if self._pool is not None:
            processes = list((getattr(self._pool, "_processes", None) or {}).values())
            for process in processes:
                process.terminate()
            for process in processes:
                process.join(5)
            queue = getattr(self._pool, "_call_queue", None)
            if queue is not None:  # nobody reads it now: do not wait at exit to flush it
                queue.cancel_join_thread()
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def close(self):
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


class RayEngine:
    """One Ray task per shard (num_cpus = its threads); progress through a small actor."""

    name = "Ray"

    def __init__(self, shards, threads, collection, model_data, address):
        import ray

        self._ray, self._started = ray, False
        if not ray.is_initialized():
            ray.init(address=address, include_dashboard=False, log_to_driver=False,
                     logging_level="ERROR")
            self._started = True
        self._threads = threads
        self._model = ray.put(model_data)
        self._array = None if collection.array is None else ray.put(collection.array)
        self._task = ray.remote(_ray_task).options(num_cpus=threads, max_retries=0)
        self._board = ray.remote(_RayBoard).options(num_cpus=0).remote(shards)

    def describe(self):
        cpus = int(self._ray.cluster_resources().get("CPU", 0))
        return f"Ray ({cpus} CPUs, {self._threads} per task)"

    def submit(self, job):
        return self._task.remote(job, self._model, self._array, self._board)

    def wait(self, handles, timeout):
        ray = self._ray
        done, _ = ray.wait(list(handles), num_returns=len(handles), timeout=timeout)
        out = []
        for ref in done:
            try:
                out.append((ref, ray.get(ref), None))
            except Exception as exc:  # RayTaskError (subclasses the task's error), worker death
                out.append((ref, None, exc))
        return out

    def rows_done(self, indices):
        return self._ray.get(self._board.rows.remote(list(indices)))

    def cancel(self, handles):
        for ref in handles:
            self._ray.cancel(ref, force=True)

    def close(self):
        self._ray.kill(self._board)
        if self._started:
            self._ray.shutdown()


class _RayBoard:
    """Rows done per shard, set by the tasks (a Ray actor)."""

    def __init__(self, shards):
        self._rows = [0] * shards

    def set(self, index, rows):
        self._rows[index] = rows

    def rows(self, indices):
        return sum(self._rows[i] for i in indices)


def _ray_task(job, model_data, array, board):
    board.set.remote(job["index"], 0)
    return encode_shard(job, model_data, array, lambda rows: board.set.remote(job["index"], rows))


def ray_available():
    """Whether Ray (the [distributed] extra) can be imported."""
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


# ------------------------------------------------------------------ the manifest
def _manifest_path(out_dir, name):
    return os.path.join(os.fspath(out_dir), f"{name}.manifest.json")


def _read_manifest(path):
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
        return value if isinstance(value, dict) else None
    except (OSError, ValueError):
        return None


def _write_manifest(path, manifest):
    from .formats.atomic import write_bytes_atomic
    write_bytes_atomic(path, (json.dumps(manifest, sort_keys=True, indent=1) + "\n").encode())


# ------------------------------------------------------------------ the driver
class _Rows:
    """The collection as `compressor._sample` reads a vector file: n, dim and `vectors.read`."""

    def __init__(self, collection):
        self.n, self.dim, self.vectors = collection.n, collection.dim, collection


def _quality(model, data, collection, steps, A, B, device, seed):
    """The quality report `compress` writes for this collection and model (same sample rows)."""
    from .compressor import _sample, quality_report
    from .sources import ArraySource

    source = ArraySource(collection.array) if collection.array is not None else _Rows(collection)
    sample, held_out = _sample(source, None, seed)
    if not len(sample):
        return None
    codes = model.encode(sample, A=A, B=B, device=device)[:, :steps]
    return quality_report(model, data, sample, codes, held_out, device)


def compress_sharded(inputs, out_dir, model, shards=4, *, steps=None, A=None, B=None,
                     chunk_rows=DEFAULT_CHUNK_ROWS, zstd_level=3, embed_model=True, metadata=None,
                     report=True, seed=0, device="auto", ray_address=None, use_ray=None,
                     threads=1, workers=None, retries=2, name="shard", bytes=None, quiet=True):
    """Encode `inputs` as `shards` .qnc files in `out_dir` with one `model`; returns a summary
    dict (`paths`: the shards in row order, for `merge`).

    inputs: a vector file path, a list of paths, (path, start, stop) row ranges, or one (n, d)
    array. model: a model path (or a .qnc embedding one), a model_resolution.ModelFile or a
    QincoModel. steps, A, B, chunk_rows, zstd_level, embed_model, metadata, seed, device, bytes:
    as `compress`, whose file the merged shards equal. `report=False` writes no quality report.
    Engine: Ray when `use_ray` is true, or when it is None and Ray is installed (`ray_address`:
    a cluster, else the running Ray or a local one); else `workers` local processes (default:
    the cores at `threads` each). `retries`: attempts after a failure. See the module docstring.
    """
    from .compressor import config_summary
    from .model_resolution import load_model_arg
    from .rates import deprecated_bytes
    from .serialize import model_from_bytes
    from .threads import available_cores

    if isinstance(shards, bool) or not isinstance(shards, int) or shards < 1:
        raise InputError(f"shards={shards!r} must be a positive integer")
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise InputError(f"retries={retries!r} must be an integer >= 0")
    if not isinstance(threads, int) or threads < 1:
        raise InputError(f"threads={threads!r} must be a positive integer")
    if not isinstance(chunk_rows, int) or not 1 <= chunk_rows <= 1 << 24:
        raise InputError(f"chunk_rows={chunk_rows!r} must be an integer in [1, 2**24]")
    if use_ray is None:
        use_ray = ray_address is not None or ray_available()
    if use_ray and not ray_available():
        raise InputError("Ray is not installed: pip install 'qinco-codec[distributed]', or run "
                         "the shards in local processes (use_ray=False, qinco-shard without --ray)")
    collection = Collection(inputs)
    model, data, sha = load_model_arg(model)
    model = model_from_bytes(data)  # encode with exactly the weights the shards decode with
    if collection.dim != model.dim:
        raise InputError(f"{collection.name}: vectors of dimension {collection.dim}, the model "
                         f"expects {model.dim}")
    steps = deprecated_bytes(steps, bytes, model.K, model.M, "the model's rate")
    steps = model.M if steps is None else steps
    chosen_A = model.config.A if A is None else A
    if getattr(model, "decode_only", False) and 0 < chosen_A < model.K:  # as compress refuses
        raise InputError(f"the model is decode-only (no pre-selection codebooks), so it cannot "
                         f"encode with A={chosen_A}: use the full model, or A=0 (every codeword "
                         f"evaluated)")
    os.makedirs(out_dir, exist_ok=True)
    if not embed_model:
        from . import model_store
        model_store.put(data, sha)
    ranges = shard_ranges(collection.n, chunk_rows, shards)
    if len(ranges) < shards:
        note(f"{collection.n:,} vectors make {len(ranges)} chunks of {chunk_rows:,} rows: "
             f"{len(ranges)} shards, not {shards}", quiet)
    params = {"version": MANIFEST_VERSION, "inputs": collection.identity(), "n": collection.n,
              "dim": collection.dim, "source_dtype": np.dtype(collection.dtype).name,
              "model_sha256": sha, "K": model.K, "steps": steps, "A": A, "B": B,
              "chunk_rows": chunk_rows, "zstd_level": zstd_level or 0,
              "embed_model": bool(embed_model), "metadata": metadata, "report": bool(report),
              "seed": seed, "ranges": [list(r) for r in ranges]}
    if metadata is not None:
        from .formats.sections import encode_json
        encode_json(metadata, "metadata")  # refused here, not in every task
    params = json.loads(json.dumps(params))  # as the manifest stores it (tuples as lists, ...)
    metadata = params["metadata"]  # and as a shard's header gives it back
    manifest_file = _manifest_path(out_dir, name)
    old = _read_manifest(manifest_file)
    changed = None if old is None else sorted(k for k in set(params) | set(old)
                                              if k != "quality_report" and old.get(k) != params.get(k))
    reuse = old is not None and not changed
    if old is not None and changed:
        note(f"{manifest_file}: {', '.join(changed)} changed since the shards there were written: "
             f"every shard is rewritten", quiet)
    if reuse:
        quality = old.get("quality_report")
    else:
        quality = _quality(model, data, collection, steps, A, B, device, seed) if report else None
        _write_manifest(manifest_file, dict(params, quality_report=quality))
    base = {"dim": model.dim, "K": model.K, "steps": steps, "model_sha256": sha, "A": A, "B": B,
            "chunk_rows": chunk_rows, "source_dtype": params["source_dtype"],
            "zstd_level": zstd_level or 0, "embed_model": bool(embed_model), "metadata": metadata,
            "quality_report": quality, "model_config": config_summary(model), "device": device,
            "threads": threads}
    jobs = []
    for i, (lo, hi) in enumerate(ranges):
        path = shard_path(out_dir, name, i, len(ranges))
        jobs.append(dict(base, index=i, path=path, lo=lo, hi=hi,
                         segments=[(p, a, b) for p, a, b in collection.segments]))
    todo, skipped = [], []
    for job in jobs:
        why = verify_shard(job["path"], job) if reuse else "missing" if not os.path.exists(
            job["path"]) else "written with other parameters"
        if why is None:
            skipped.append(job)
        else:
            if why != "missing":
                note(f"{job['path']}: {why}: rewriting it", quiet)
            todo.append(job)
    t0 = time.monotonic()
    engine_name = "nothing to do"
    if todo:
        if use_ray:
            engine = RayEngine(len(jobs), threads, collection, data, ray_address)
        else:
            count = workers or max(1, available_cores() // threads)
            engine = ProcessEngine(len(jobs), max(1, min(count, len(todo))), collection, data)
        try:
            engine_name = engine.describe()
            _run(engine, todo, retries, collection.n, sum(j["hi"] - j["lo"] for j in skipped),
                 len(jobs), quiet)
        finally:
            engine.close()
    seconds = time.monotonic() - t0
    encoded = sum(j["hi"] - j["lo"] for j in todo)
    summary = {"out_dir": os.fspath(out_dir), "paths": [j["path"] for j in jobs],
               "written": [j["path"] for j in todo], "skipped": [j["path"] for j in skipped],
               "n": collection.n, "rows_encoded": encoded, "engine": engine_name,
               "seconds": seconds, "model_sha256": sha, "steps": steps,
               "manifest": manifest_file, "quality_report": quality}
    note(summary_line(summary), quiet)
    return summary


def _run(engine, todo, retries, total, skipped_rows, shard_count, quiet):
    """Run the jobs on the engine to completion, retrying failed ones; a bar shows the rows of
    all shards (the skipped ones counted as done)."""
    attempts = {job["index"]: 0 for job in todo}
    running = {engine.submit(job): job for job in todo}
    active = [job["index"] for job in todo]
    failures = []
    with bar(total=total, desc=f"encode ({shard_count} shards)", unit="vec", quiet=quiet,
             initial=skipped_rows) as pbar:
        try:
            while running:
                for handle, _, error in engine.wait(list(running), POLL_SECONDS):
                    job = running.pop(handle)
                    if error is None:
                        continue
                    attempts[job["index"]] += 1
                    final = isinstance(error, QincoError) or attempts[job["index"]] > retries
                    if final:
                        failures.append((job, error))
                    else:
                        note(f"{job['path']}: failed ({_one_line(error)}); retry "
                             f"{attempts[job['index']]} of {retries}", quiet)
                        running[engine.submit(job)] = job
                if not quiet:
                    pbar.n = skipped_rows + engine.rows_done(active)
                    pbar.refresh()
        except BaseException:
            engine.cancel(list(running))
            from .formats.atomic import remove_stale_temporaries
            for job in running.values():  # the killed writers' temporary files
                remove_stale_temporaries(job["path"])
            raise
    if failures:
        job, error = failures[0]
        tries = attempts[job["index"]]
        raise QincoError(f"shard {job['path']} failed after {tries} attempt"
                         f"{'s' if tries > 1 else ''}: {_one_line(error)}"
                         f"{f' ({len(failures) - 1} more shards failed)' if len(failures) > 1 else ''}"
                         f"; the shards that were written stay: run again to redo the rest")


def _one_line(error):
    text = " ".join(str(error).split()) or type(error).__name__
    # Ray wraps a task's error in a traceback dump: its last line is the error itself
    if "Traceback" in str(error):
        lines = [line for line in str(error).strip().splitlines() if line.strip()]
        text = lines[-1].strip() if lines else text
    return text


def summary_line(s):
    """One line for people: what was written where, on what, how fast."""
    rate = s["rows_encoded"] / max(s["seconds"], 1e-9)
    written, skipped = len(s["written"]), len(s["skipped"])
    how = (f"on {s['engine']} in {duration(s['seconds'])} ({rate:,.0f} vectors/s)"
           if written else "nothing to encode")
    return (f"sharded {s['n']:,} vectors into {len(s['paths'])} shards in {s['out_dir']}: "
            f"{written} written, {skipped} skipped (already complete and verified), {how}")
