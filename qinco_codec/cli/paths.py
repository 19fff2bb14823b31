"""The checks every command makes on the paths it was given, before any work (reading, training,
importing torch): an input exists (existing_input, while the command line is parsed); no output
is the same file as an input or another output; an output's directory exists and is writable; an
existing output is replaced only with -f/--force.

The same file is the same (st_dev, st_ino), so hard links, symbolic links and spellings such as
`./a.npy` and `dir/../a.npy` are all caught; an output that does not exist yet is the same as
another when both name one entry of one directory. '-' (stdin or stdout) is never a file here.

This module imports neither torch nor the model code.
"""
import os

from ..errors import InputError

STDIO = "-"


def _is_file_path(path):
    return path is not None and os.fspath(path) != STDIO


def file_identity(path):
    """What makes two paths the same file: (st_dev, st_ino) of what `path` names (symbolic
    links followed); for a path that does not exist yet, its directory's (st_dev, st_ino) and
    its name; else (a directory that is missing too) the absolute path."""
    real = os.path.realpath(os.fspath(path))
    try:
        st = os.stat(real)
        return ("file", st.st_dev, st.st_ino)
    except OSError:
        pass
    directory, name = os.path.split(real)
    try:
        st = os.stat(directory)
        return ("new", st.st_dev, st.st_ino, name)
    except OSError:
        return ("path", real)


def check_distinct(inputs=(), outputs=()):
    """Refuse (InputError, one line naming both options and the path) when an output is the
    same file as an input or as another output. `inputs` and `outputs` are (option, path)
    pairs; paths that are None or '-' are skipped. Inputs may name the same file as each other
    (they are only read). A path that is both read and written (qinco-train's --resume) is
    an output."""
    seen = []  # (identity, option, path, is_output)
    for option, path, is_output in [(o, p, False) for o, p in inputs] + \
                                   [(o, p, True) for o, p in outputs]:
        if not _is_file_path(path):
            continue
        ident = file_identity(path)
        for other_ident, other_option, other_path, other_is_output in seen:
            if ident == other_ident and (is_output or other_is_output):
                raise InputError(f"{other_option} and {option} name the same file "
                                 f"({os.fspath(path)}); writing one would destroy the other: "
                                 f"give another path")
        seen.append((ident, option, path, is_output))


def check_input(path, option="INPUT"):
    """An input path ('-' aside) must exist: the error names it before anything is imported."""
    if not _is_file_path(path):
        return
    try:
        os.stat(os.fspath(path))
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, os.fspath(path)) from None


def existing_input(option):
    """A click callback for an input argument or option (declare it with is_eager=True): the
    path must exist ('-' aside), checked while the command line is parsed, so before any other
    option's callback (--threads imports torch) and before any work."""
    def callback(ctx, param, value):
        check_input(value, option)
        return value
    return callback


def output_target(path):
    """The file a write to `path` replaces: `path` itself, or for a symbolic link the file it
    points to (the link is kept; see formats.atomic.atomic_output)."""
    return os.path.realpath(os.fspath(path)) if os.path.islink(path) else os.fspath(path)


def check_output(path, option="OUTPUT", force=False):
    """Before any work: OUTPUT is not a directory, its directory exists and is writable, and
    it does not exist yet unless `force` (-f/--force). Errors name OUTPUT (never the temporary
    file the write goes through). '-' and None are skipped."""
    if not _is_file_path(path):
        return
    path = os.fspath(path)
    target = output_target(path)
    if os.path.isdir(target):
        raise InputError(f"{option} {path} is a directory")
    if os.path.lexists(path) and not force:
        kind = "a symbolic link" if os.path.islink(path) else "a file"
        raise InputError(f"{option} {path} already exists ({kind}); pass -f/--force to replace it")
    directory = os.path.dirname(os.path.abspath(target)) or "."
    if not os.path.isdir(directory):
        raise InputError(f"{option} {path}: directory {directory} does not exist")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise InputError(f"{option} {path}: directory {directory} is not writable")
