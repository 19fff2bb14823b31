"""Crash-safe file output: write to a temporary file in the target directory, fsync, then rename.

A reader never sees a half-written file under the final name, and an interrupted writer leaves
at most a temporary file named `.<name>.<random>.tmp` (removed on any Python-level failure). A
writer holds an exclusive flock on its temporary file, so the next successful write of the same
name can tell the leftovers of killed writers (unlocked) from a concurrent writer's (locked) and
removes the former.
"""
import contextlib
import fcntl
import glob
import os
import tempfile

TMP_SUFFIX = ".tmp"


@contextlib.contextmanager
def atomic_output(path, mode="wb"):
    """Yield a file object; on clean exit it is fsynced and renamed to `path`, else deleted."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp_path = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=TMP_SUFFIX,
                                    dir=directory)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        fcntl.flock(fd, fcntl.LOCK_EX)     # released by the kernel however this process ends
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_path)
        raise
    _fsync_directory(directory)
    remove_stale_temporaries(path)


def remove_stale_temporaries(path):
    """Delete `.<name>.*.tmp` files of `path` left by writers that were killed (not locked)."""
    directory, name = os.path.split(os.path.abspath(path))
    for tmp in glob.glob(os.path.join(glob.escape(directory), glob.escape("." + name) + ".*" + TMP_SUFFIX)):
        with contextlib.suppress(OSError):
            fd = os.open(tmp, os.O_RDONLY)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                os.unlink(tmp)
            except BlockingIOError:  # a live writer holds it
                pass
            finally:
                os.close(fd)


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_directory(directory):
    """Make the rename itself durable (best effort: not every filesystem allows it)."""
    with contextlib.suppress(OSError):
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def write_bytes_atomic(path, data):
    """Write `data` to `path` atomically."""
    with atomic_output(path) as f:
        f.write(data)
