"""Crash-safe file output: write to a temporary file in the target directory, fsync, then rename.

A reader never sees a half-written file under the final name, and an interrupted writer leaves
at most a temporary file named `.<name>.<random>.tmp` (removed on any Python-level failure). A
writer holds an exclusive flock on its temporary file, so the next successful write of the same
name can tell the leftovers of killed writers (unlocked) from a concurrent writer's (locked) and
removes the former.

Replacing a file keeps its permission bits (a 0600 file stays 0600); a new file gets 0666 less
the umask. A symbolic link is followed: the file it points to is replaced (in its own
directory) and the link itself stays. OSErrors of the write itself (a full disk, a read-only or
failing device) name the final path, never the temporary file.
"""
import contextlib
import errno
import fcntl
import glob
import io
import os
import stat
import tempfile

TMP_SUFFIX = ".tmp"
# errno values that are about the file being written, not about what the caller reads: an
# OSError with one of these and no file name is given the output's name.
WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EIO})


def target_path(path):
    """The file a write to `path` replaces: `path`, or the file a symbolic link points to."""
    path = os.fspath(path)
    return os.path.realpath(path) if os.path.islink(path) else path


def _named(exc, path):
    """`exc` with `path` as its file name when it has none and is about the write."""
    if isinstance(exc, OSError) and exc.filename is None and exc.errno in WRITE_ERRNOS:
        return OSError(exc.errno, exc.strerror or os.strerror(exc.errno), path)
    return None


class _Output(io.BufferedWriter):
    """The temporary file, a buffered binary writer whose write errors name the final path
    (they can happen before the caller's `with` block starts, e.g. writing a header on entry,
    where atomic_output's own handler does not see them)."""

    def __init__(self, fd, shown):
        super().__init__(io.FileIO(fd, "wb"))
        self.shown = shown

    def write(self, data):
        try:
            return super().write(data)
        except OSError as exc:
            named = _named(exc, self.shown)
            if named is None:
                raise
            raise named from exc

    def flush(self):
        try:
            return super().flush()
        except OSError as exc:
            named = _named(exc, self.shown)
            if named is None:
                raise
            raise named from exc


@contextlib.contextmanager
def atomic_output(path, mode="wb"):
    """Yield a file object; on clean exit it is fsynced and renamed to `path`, else deleted."""
    shown = os.fspath(path)
    path = target_path(shown)
    directory = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp_path = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".",
                                        suffix=TMP_SUFFIX, dir=directory)
    except OSError as exc:  # a missing or read-only directory: say which output it was for
        raise OSError(exc.errno, exc.strerror, shown) from None
    try:
        try:
            os.fchmod(fd, _mode_for(path))  # mkstemp makes 0600; give the usual (or the old) mode
            fcntl.flock(fd, fcntl.LOCK_EX)  # released by the kernel however this process ends
            with (_Output(fd, shown) if mode == "wb" else os.fdopen(fd, mode)) as f:
                yield f
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp_path, path)
        except OSError as exc:
            named = _named(exc, shown)
            if named is None:
                raise
            raise named from exc
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_path)
        raise
    _fsync_directory(directory)
    remove_stale_temporaries(path)


def _mode_for(path):
    """Permission bits for the new file: those of the regular file it replaces, else 0666 less
    the umask."""
    try:
        st = os.stat(path)
        if stat.S_ISREG(st.st_mode):
            return stat.S_IMODE(st.st_mode)
    except OSError:
        pass
    return 0o666 & ~_umask()


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
