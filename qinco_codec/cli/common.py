"""What the qinco-* commands share: error handling (one line on stderr, exit code 1, 2 for usage
errors, never a traceback for errors a user can cause), common options, argument parsing, vector
input and output, and number formatting.

This module imports neither torch nor the model code, so that `qinco-info` stays cheap.
Set QINCO_DEBUG=1 to get the full traceback of an error instead of its one-line message.
"""
import json
import os
import sys

import click
import numpy as np

from ..errors import InputError, QincoError

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
DEVICES = ("auto", "cpu", "cuda")
STDIO = "-"


# ---------------------------------------------------------------- errors
def _one_line(text):
    return " ".join(str(text).split())


def describe_os_error(exc):
    """'No such file or directory: x.npy' rather than '[Errno 2] No such file ...'."""
    what = exc.strerror or exc.__class__.__name__
    if exc.filename is not None and exc.filename2 is not None:
        return f"{what}: {exc.filename} -> {exc.filename2}"
    if exc.filename is not None:
        return f"{what}: {exc.filename}"
    return _one_line(str(exc)) or what


class _OneLineErrors:
    """Mixin for click commands and groups: errors end the program with one line
    `<prog>: error: <message>` on stderr: exit code 2 for usage errors, 1 for everything a user
    can cause (QincoError, OSError, other click errors), 130 when interrupted. Unexpected
    exceptions (bugs) keep their traceback."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        prog = prog_name or self.name
        code = 0
        try:
            rv = super().main(args=args, prog_name=prog_name or self.name, complete_var=complete_var,
                              standalone_mode=False, **extra)
            code = rv if isinstance(rv, int) else 0
        except click.UsageError as exc:
            where = exc.ctx.command_path if exc.ctx is not None else prog
            code = _report(prog, f"{exc.format_message()} (see '{where} --help')", exc.exit_code)
        except click.ClickException as exc:
            code = _report(prog, exc.format_message(), exc.exit_code)
        except click.Abort:
            code = _report(prog, "interrupted", 130)
        except QincoError as exc:
            code = _report(prog, exc, 1)
        except OSError as exc:
            code = _report(prog, describe_os_error(exc), 1)
        except MemoryError:
            code = _report(prog, "out of memory", 1)
        if standalone_mode:
            sys.exit(code)
        return code


class QincoCommand(_OneLineErrors, click.Command):
    """A click command with one-line errors (see _OneLineErrors)."""


class QincoGroup(_OneLineErrors, click.Group):
    """A click group (a command with subcommands) with one-line errors (see _OneLineErrors)."""


def _report(prog, message, code):
    if os.environ.get("QINCO_DEBUG") and sys.exc_info()[0] is not None:
        raise
    click.echo(f"{prog}: error: {_one_line(message)}", err=True)
    return code


def examples_epilog(example):
    """Help text ending: 'Examples:' and the example lines, shown verbatim."""
    return "\b\nExamples:\n" + "\n".join(f"  {line}" for line in example.strip().splitlines())


def command(name, example):
    """Decorator: a QincoCommand called `name` whose help ends with `example` (shown verbatim)."""
    return click.command(name, cls=QincoCommand, context_settings=CONTEXT_SETTINGS,
                         epilog=examples_epilog(example))


def group(name, example):
    """Decorator: a QincoGroup called `name` (subcommands are added with `.command`)."""
    return click.group(name, cls=QincoGroup, context_settings=CONTEXT_SETTINGS,
                       epilog=examples_epilog(example))


# ---------------------------------------------------------------- shared options
def device_option(what="computation"):
    return click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True,
                        help=f"Device for {what}: 'auto' picks CUDA when available, else the CPU.")


def threads_option(f):
    """--threads: CPU threads for torch. Default: $OMP_NUM_THREADS when set, else the cores this
    process may run on (`qinco_codec.threads.default_threads`)."""
    def apply(ctx, param, value):
        from ..devices import use_threads
        from ..threads import default_threads
        return use_threads(value or default_threads())
    return click.option("--threads", type=click.IntRange(min=1), default=None, callback=apply,
                        expose_value=False, is_eager=False,
                        help="CPU threads. [default: $OMP_NUM_THREADS if set, else the cores this "
                             "process may run on (os.sched_getaffinity)]")(f)


def quiet_option(what="the progress bars and notes on stderr"):
    return click.option("-q", "--quiet", is_flag=True, help=f"Do not print {what}.")


def search_options(f):
    """--A and --B: the encoder's search effort (defaults: the model's own settings)."""
    f = click.option("--B", "B", type=click.IntRange(min=1), default=None,
                     help="Beam width of the encoder (1 = greedy). Default: the model's setting.")(f)
    f = click.option("--A", "A", type=click.IntRange(min=0), default=None,
                     help="Candidates pre-selected per beam entry at each step (0 = all K). "
                          "Default: the model's setting.")(f)
    return f


# ---------------------------------------------------------------- argument parsing
def parse_json_object(text, option="--metadata"):
    """A JSON object from the command line, or from a file when given as @PATH."""
    if text is None:
        return None
    source = "value"
    if text.startswith("@"):
        path = text[1:]
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except OSError as exc:
            raise InputError(f"{option}: cannot read {path}: {exc.strerror or exc}") from None
        except UnicodeDecodeError:
            raise InputError(f"{option}: {path} is not UTF-8 text") from None
        source = f"file {path}"
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise InputError(f"{option}: {source} is not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise InputError(f"{option}: expected a JSON object such as '{{\"source\": \"x\"}}', "
                         f"got a JSON {type(value).__name__.replace('dict', 'object')}")
    return value


def parse_rows(text, n):
    """'A:B' (either end may be left out, negative counts from the end) -> slice(a, b) checked
    against the n rows of the file."""
    if text is None:
        return None
    parts = text.split(":")
    if len(parts) != 2:
        raise click.BadParameter(f"expected A:B (e.g. 0:1000, 5000: or :-10), got {text!r}",
                                 param_hint="--rows")
    bounds = []
    for part, default in zip(parts, (0, n)):
        part = part.strip()
        if not part:
            bounds.append(default)
            continue
        try:
            v = int(part)
        except ValueError:
            raise click.BadParameter(f"{part!r} in {text!r} is not an integer",
                                     param_hint="--rows") from None
        bounds.append(v + n if v < 0 else v)
    a, b = bounds
    if not 0 <= a <= b <= n:
        raise InputError(f"--rows {text}: rows [{a}, {b}) are not a range within the file's "
                         f"{n} rows")
    return slice(a, b)


# ---------------------------------------------------------------- vectors in and out
def stdin_binary():
    return getattr(sys.stdin, "buffer", sys.stdin)


def stdout_binary():
    """Binary stdout for data output; refuses a terminal (binary data would garble it)."""
    stream = getattr(sys.stdout, "buffer", sys.stdout)
    isatty = getattr(stream, "isatty", None)
    if isatty is not None and isatty():
        raise InputError("refusing to write binary .npy data to a terminal; redirect stdout "
                         "(e.g. '> out.npy' or '| python ...')")
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


def write_vector_stream(path, batches, n, dim, dtype=np.float32):
    """Write batches adding up to (n, dim) vectors as .npy / .fvecs / .fbin, or .npy to stdout
    for '-', holding one batch at a time. Files appear atomically (temporary file + rename), so
    an interrupted run leaves no partial output under the final name."""
    from ..formats.atomic import atomic_output
    from ..readers import write_npy_stream, write_vectors

    ext = check_output_path(path)
    if path == STDIO:
        out = stdout_binary()
        write_npy_stream(out, batches, n, dim, dtype)
        out.flush()
        return
    if ext == ".fvecs" and n == 0:
        write_vectors(path, np.empty((0, dim), np.float32))  # raises the readers' clear error
    if ext != ".npy" and np.dtype(dtype) != np.float32:
        raise InputError(f"{path}: {ext} stores float32 only; use .npy for {np.dtype(dtype).name}")
    with atomic_output(path) as f:
        if ext == ".npy":
            write_npy_stream(f, batches, n, dim, dtype)
            return
        if ext == ".fbin":
            f.write(np.array([n, dim], "<u4").tobytes())
        row = np.dtype([("dim", "<i4"), ("vec", "<f4", (dim,))])
        written = 0
        for batch in batches:
            batch = np.ascontiguousarray(batch, dtype="<f4")
            if ext == ".fbin":
                f.write(batch.data)
            else:
                table = np.empty(len(batch), row)
                table["dim"], table["vec"] = dim, batch
                f.write(table.data)
            written += len(batch)
        if written != n:
            raise InputError(f"{path}: got {written} decoded rows, expected {n}")


def with_progress(batches, total, desc, quiet):
    """Pass batches through, advancing a progress bar on stderr by their row counts."""
    from ..progress import bar
    with bar(total=total, desc=desc, unit="vec", quiet=quiet) as pbar:
        for batch in batches:
            yield batch
            pbar.update(len(batch))


# ---------------------------------------------------------------- output
def echo_json(obj):
    click.echo(json.dumps(obj, indent=2, sort_keys=False, default=_json_default))


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"cannot serialise {type(obj).__name__}")


def fmt_size(n, short=False):
    """'610,370 bytes (596.1 KiB)', or with short=True '596.1 KiB'."""
    if n is None:
        return "unknown"
    text = f"{n:,} bytes"
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}" if short else f"{text} ({n / scale:.1f} {unit})"
    return text


def ratio(numerator, denominator):
    return numerator / denominator if numerator is not None and denominator else None


def fmt_ratio(r):
    return "n/a" if r is None else (f"{r:.1f}x" if r >= 10 else f"{r:.2f}x")


def fmt_percent(part, whole):
    return "n/a" if not whole or part is None else f"{100.0 * part / whole:.1f}%"


def size_report(n, dim, file_size, model_bytes, embedded):
    """The accounting `qinco-compress` and `qinco-info` both report: float32 size of the vectors,
    the file's size with and without its model, compression ratios and the model's share."""
    raw = n * dim * 4
    if embedded:
        without, with_model = file_size - (model_bytes or 0), file_size
    else:
        without = file_size
        with_model = file_size + model_bytes if model_bytes is not None else None
    return {"float32_bytes": raw, "file_size": file_size, "model_bytes": model_bytes,
            "model_embedded": bool(embedded),
            "model_share_of_file": ratio(model_bytes, file_size) if embedded else 0.0,
            "bytes_without_model": without, "bytes_with_model": with_model,
            "ratio_without_model": ratio(raw, without), "ratio_with_model": ratio(raw, with_model)}


def size_lines(report):
    """Human-readable lines for a size_report."""
    model = report["model_bytes"]
    if report["model_embedded"]:
        where = (f"embedded, {fmt_size(model)} = "
                 f"{fmt_percent(model, report['file_size'])} of the file")
    elif model is not None:
        where = f"not embedded ({fmt_size(model, short=True)}, kept outside the file)"
    else:
        where = "not embedded (model file not found: size unknown)"
    return [
        f"file size:   {fmt_size(report['file_size'])}",
        f"model:       {where}",
        f"compression: {fmt_ratio(report['ratio_with_model'])} vs float32 "
        f"({fmt_size(report['float32_bytes'], short=True)}) counting the model, "
        f"{fmt_ratio(report['ratio_without_model'])} without it",
    ]


def check_not_directory(path, what="output"):
    if path != STDIO and os.path.isdir(path):
        raise InputError(f"{what} {path} is a directory")
