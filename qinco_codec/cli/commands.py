"""How every qinco-* command starts and ends: click commands and groups whose errors are one line
`<prog>: error: <message>` on stderr (exit code 2 for usage errors, 1 for everything a user can
cause, 130 when interrupted with Ctrl-C, 128+N when ended by signal N (SIGTERM: 143, SIGHUP:
129); never a traceback for those), with -h/--help, --version and an Examples epilog.

SIGTERM and SIGHUP are turned into an exception while a command runs, so they unwind the
program as Ctrl-C does: a file being written is removed (formats.atomic) and one line is
printed. A signal the parent set to be ignored (`nohup` ignores SIGHUP) stays ignored.

Set QINCO_DEBUG=1 to get the full traceback of an error instead of its one-line message.
"""
import contextlib
import os
import signal
import sys
import threading

import click

from .._version import __version__
from ..errors import QincoError

# Signals that end a command the way Ctrl-C does (with the cleanup that unwinding brings).
TERMINATING_SIGNALS = (signal.SIGTERM, signal.SIGHUP)

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


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


class Terminated(BaseException):
    """Raised in the main thread by SIGTERM or SIGHUP (see terminating_signals_raise). A
    BaseException, like KeyboardInterrupt, so that no `except Exception` swallows it."""

    def __init__(self, signum):
        super().__init__(signum)
        self.signum = signum

    @property
    def name(self):
        return signal.Signals(self.signum).name


def _raise_terminated(signum, frame):
    raise Terminated(signum)


@contextlib.contextmanager
def terminating_signals_raise():
    """While the block runs, SIGTERM and SIGHUP raise Terminated (unless their handler is not
    the default one: an ignored SIGHUP stays ignored, an embedding program's handler stays)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {}
    for sig in TERMINATING_SIGNALS:
        if signal.getsignal(sig) is signal.SIG_DFL:
            previous[sig] = signal.signal(sig, _raise_terminated)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class _OneLineErrors:
    """Mixin for click commands and groups: errors end the program with one line
    `<prog>: error: <message>` on stderr: exit code 2 for usage errors, 1 for everything a user
    can cause (QincoError, OSError, other click errors), 130 when interrupted, 128+N when ended
    by signal N (SIGTERM, SIGHUP). Unexpected
    exceptions (bugs) keep their traceback."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        prog = prog_name or self.name
        code = 0
        try:
            with terminating_signals_raise():
                rv = super().main(args=args, prog_name=prog_name or self.name,
                                  complete_var=complete_var, standalone_mode=False, **extra)
            code = rv if isinstance(rv, int) else 0
        except Terminated as exc:
            code = _report(prog, f"terminated by {exc.name}", 128 + exc.signum)
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


def version_option(name):
    """--version: print '<name> <package version>' and exit (before any other option is used)."""
    return click.version_option(__version__, "--version", prog_name=name,
                                message="%(prog)s %(version)s",
                                help="Print the qinco-codec version and exit.")


def command(name, example):
    """Decorator: a QincoCommand called `name` with --version, whose help ends with `example`
    (shown verbatim)."""
    def decorate(f):
        return click.command(name, cls=QincoCommand, context_settings=CONTEXT_SETTINGS,
                             epilog=examples_epilog(example))(version_option(name)(f))
    return decorate


def group(name, example):
    """Decorator: a QincoGroup called `name` with --version (subcommands are added with
    `.command`)."""
    def decorate(f):
        return click.group(name, cls=QincoGroup, context_settings=CONTEXT_SETTINGS,
                           epilog=examples_epilog(example))(version_option(name)(f))
    return decorate
