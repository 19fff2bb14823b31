"""How every qinco-* command starts and ends: click commands and groups whose errors are one line
`<prog>: error: <message>` on stderr (exit code 2 for usage errors, 1 for everything a user can
cause, 130 when interrupted; never a traceback for those), with -h/--help and an Examples epilog.

Set QINCO_DEBUG=1 to get the full traceback of an error instead of its one-line message.
"""
import os
import sys

import click

from ..errors import QincoError

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
