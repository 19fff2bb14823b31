"""Where the commands' data comes from and goes: vector files or '-' (an .npy stream on stdin or
stdout, a .qnc container on stdout), with the checks on output paths made before any work."""
import contextlib
import os
import shutil
import sys
import tempfile

import numpy as np

from ..errors import InputError

STDIO = "-"


def stdin_binary():
    return getattr(sys.stdin, "buffer", sys.stdin)


def stdout_binary(what="binary .npy data", example="'> out.npy' or '| python ...'"):
    """Binary stdout for data output; refuses a terminal (binary data would garble it)."""
    stream = getattr(sys.stdout, "buffer", sys.stdout)
    isatty = getattr(stream, "isatty", None)
    if isatty is not None and isatty():
        raise InputError(f"refusing to write {what} to a terminal; redirect stdout (e.g. {example})")
    return stream


def vector_source(path):
    """What `qinco_codec.compress` accepts for INPUT: a path, or for '-' an .npy stream on stdin."""
    if path == STDIO:
        from ..readers import iter_npy_stream
        return iter_npy_stream(stdin_binary(), name="stdin")
    return path


def load_vectors(path, what="data"):
    """A whole vector file (or an .npy on stdin for '-') as a float32 array."""
    from ..readers import read_vectors
    if path == STDIO:
        stream = vector_source(path)
        batches = list(stream.batches)
        return np.concatenate(batches) if batches else np.empty((0, stream.dim), np.float32)
    return read_vectors(path)


def check_not_directory(path, what="output"):
    if path != STDIO and os.path.isdir(path):
        raise InputError(f"{what} {path} is a directory")


def check_output_path(path):
    """The vector format an output path asks for ('.npy', '.fvecs', '.fbin'; '-' is .npy on stdout)."""
    from ..readers import WRITABLE_EXTENSIONS
    if path == STDIO:
        return ".npy"
    ext = os.path.splitext(path)[1].lower()
    if ext not in WRITABLE_EXTENSIONS:
        raise InputError(f"{path}: cannot write {ext or 'extension-less'!r} files; output formats: "
                         f"{', '.join(WRITABLE_EXTENSIONS)} (or '-' for .npy on stdout)")
    check_not_directory(path)
    return ext


def write_vectors_out(path, batches, n, dim, dtype=np.float32):
    """Write batches adding up to (n, dim) vectors to `path` (see readers.write_vector_stream:
    the file appears atomically once complete), or as an .npy on stdout for '-'."""
    from ..readers import write_npy_stream, write_vector_stream

    check_output_path(path)
    if path == STDIO:
        out = stdout_binary()
        write_npy_stream(out, batches, n, dim, dtype)
        out.flush()
        return
    write_vector_stream(path, batches, n, dim, dtype)


@contextlib.contextmanager
def container_output(path):
    """Yield the path a .qnc should be written to: `path` itself, or for '-' a file in a
    temporary directory whose bytes are copied to stdout once the block ends without error (the
    container's index comes last, so the file is complete before anything is sent)."""
    if path != STDIO:
        check_not_directory(path)
        yield path
        return
    out = stdout_binary("a binary .qnc file", "'> out.qnc' or '| ssh host \"cat > x.qnc\"'")
    with tempfile.TemporaryDirectory(prefix="qinco-compress-") as tmp:
        staged = os.path.join(tmp, "stdout.qnc")
        yield staged
        with open(staged, "rb") as f:
            shutil.copyfileobj(f, out, 1 << 20)
        out.flush()
