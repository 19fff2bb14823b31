"""Streaming decode: turn a file's chunks of codes into decoded batches of a chosen size, in file
order and bounded memory, optionally reading the next chunk in a background thread while the
current batch decodes, and account for where the time went."""
import time

import numpy as np

from .errors import InputError
from .prefetch import Prefetcher, TimedIterator


def new_stream_stats(prefetch):
    """The counters `iter_decoded` keeps up to date: rows decoded, seconds spent reading (and
    decompressing) chunks, decoding, and in all."""
    return {"rows": 0, "read_seconds": 0.0, "decode_seconds": 0.0, "wall_seconds": 0.0,
            "prefetch": bool(prefetch)}


def iter_decoded(blocks, decode, batch_size, prefetch, stats):
    """An iterator of decode(codes) for consecutive batches of `batch_size` rows (the last may
    be shorter) of the code blocks `blocks` yields, updating `stats` (see new_stream_stats) as
    it goes. With `prefetch`, blocks are read in a background thread, one ahead. `batch_size`
    is checked here, at the call: below 1, no batch would ever fill and the loop never ends."""
    return _decoded_batches(blocks, decode, check_batch_size(batch_size), prefetch, stats)


def check_batch_size(batch_size):
    """`batch_size` as an int >= 1 (bools and floats refused), else an InputError."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
            or batch_size < 1:
        raise InputError(f"batch_size={batch_size!r} must be a positive integer")
    return int(batch_size)


def _decoded_batches(blocks, decode, batch_size, prefetch, stats):
    """The generator behind iter_decoded."""
    source = Prefetcher(blocks) if prefetch else TimedIterator(blocks)
    t_start = time.perf_counter()

    def timed_decode(codes):
        t0 = time.perf_counter()
        out = decode(codes)
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
                yield timed_decode(codes[:batch_size])
                rest = codes[batch_size:]
                pending, count = ([rest] if len(rest) else []), len(rest)
        if count:
            yield timed_decode(np.concatenate(pending))
    finally:
        source.close()
        stats["read_seconds"] = source.busy_seconds
        stats["wall_seconds"] = time.perf_counter() - t_start
