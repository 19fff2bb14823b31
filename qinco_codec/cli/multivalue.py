"""Options that take several values (`qinco-bench rd --bytes 8 16`, `qinco-bench speed --threads
1,2`), built on click's public API only: a parameter type that splits "8,16", `multiple=True` for
repeated flags, and a command whose `parse_args` spreads "--bytes 8 16" into "--bytes 8 --bytes
16" before click's parser sees it.

Accepted spellings, all equivalent: `--bytes 8,16`, `--bytes 8 --bytes 16` and `--bytes 8 16`.
In the last one the values after the first are taken while they look like values of the option
(integers, or names among its choices), so a positional argument after them (a DATA path) stays
positional; `--` ends the options as usual.
"""
import click

from .commands import CONTEXT_SETTINGS, QincoCommand, examples_epilog


class ValueList(click.ParamType):
    """One or more values separated by commas (or spaces): "8,16" -> (8, 16).

    item: converts one value (raises ValueError for a bad one); choices: the lower-case names
    a further value may have in the "--opt a b" spelling (for item=str); what: the values, as
    the error message names them."""

    name = "list"

    def __init__(self, item=int, choices=None, what=None):
        self.item, self.choices = item, choices
        self.what = what or ("integers" if item is int else "names")

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        out = []
        for token in str(value).replace(",", " ").split():
            try:
                out.append(self.item(token))
            except ValueError:
                self.fail(f"expected {self.what}, got {token!r}", param, ctx)
        return tuple(out)

    def looks_like(self, token):
        """Whether `token`, after the option's first value, is one more value of it."""
        parts = token.replace(",", " ").split()
        if not parts or token.startswith("--"):
            return False
        if self.choices is not None:
            return all(p.lower() in self.choices for p in parts)
        try:
            for p in parts:
                self.item(p)
        except ValueError:
            return False
        return True


def _flatten(ctx, param, value):
    """multiple=True gives one tuple per occurrence: join them, in order."""
    return tuple(v for chunk in value or () for v in chunk)


def many_option(*decls, item=int, choices=None, what=None, **kwargs):
    """A click option taking one or more values (see the module docstring); the command must be
    a MultiValueCommand (`multi_command`) for the space-separated spelling."""
    return click.option(*decls, type=ValueList(item, choices, what), multiple=True,
                        callback=_flatten, **kwargs)


class MultiValueCommand(QincoCommand):
    """A QincoCommand that accepts "--opt a b" for its ValueList options (by rewriting it to
    "--opt a --opt b" in parse_args, before click parses)."""

    def parse_args(self, ctx, args):
        return super().parse_args(ctx, spread(self, args))


def spread(command, args):
    """args with every "--opt a b ..." of a ValueList option written as "--opt a --opt b ..."."""
    lists = {name: p.type for p in command.params
             if isinstance(p, click.Option) and isinstance(p.type, ValueList) for name in p.opts}
    out, i = [], 0
    while i < len(args):
        token = args[i]
        out.append(token)
        i += 1
        if token == "--":
            out.extend(args[i:])
            break
        name, eq, _ = token.partition("=")
        kind = lists.get(name)
        if kind is None:
            continue
        if not eq and i < len(args):       # the option's first value: always its own
            out.append(args[i])
            i += 1
        while i < len(args) and kind.looks_like(args[i]):
            out += [name, args[i]]
            i += 1
    return out


def multi_command(name, example):
    """Decorator: a MultiValueCommand called `name` whose help ends with `example`."""
    return click.command(name, cls=MultiValueCommand, context_settings=CONTEXT_SETTINGS,
                         epilog=examples_epilog(example))
