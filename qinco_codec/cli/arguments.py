"""Option values that need parsing beyond click's types: a JSON object (--metadata) and a row
range (--rows A:B)."""
import json
import os
import stat

import click

from ..errors import InputError
from ..formats.layout import MAX_JSON_DEPTH, MAX_JSON_SECTION
from ..formats.sections import encode_json


def parse_json_object(text, option="--metadata"):
    """A JSON object from the command line, or from a file when given as @PATH, checked against
    what the file format can store (SPEC.md 5: at most MAX_JSON_SECTION bytes as stored,
    MAX_JSON_DEPTH levels deep, 64-bit integers) before any work is done, so that a bad value
    costs no training."""
    if text is None:
        return None
    source = "value"
    if text.startswith("@"):
        path = text[1:]
        text = _read_json_file(path, option)
        source = f"file {path}"
    try:
        value = json.loads(text)
    except RecursionError:  # Python's parser recurses once per level
        raise InputError(f"{option}: {source} is JSON nested too deeply (a file stores at most "
                         f"{MAX_JSON_DEPTH} levels)") from None
    except ValueError as exc:
        raise InputError(f"{option}: {source} is not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise InputError(f"{option}: expected a JSON object such as '{{\"source\": \"x\"}}', "
                         f"got a JSON {type(value).__name__.replace('dict', 'object')}")
    encode_json(value, option)  # the writer's own checks: depth, integers, size as stored
    return value


def _read_json_file(path, option):
    """The text of the regular file `path`, read only up to the section limit: a device
    (/dev/zero), a pipe or a directory is refused instead of read until memory runs out."""
    try:
        # non-blocking open: a FIFO with no writer is refused below instead of waited on
        with os.fdopen(os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)), "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise InputError(f"{option}: {path} is not a regular file")
            data = f.read(MAX_JSON_SECTION + 1)
    except OSError as exc:
        raise InputError(f"{option}: cannot read {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_JSON_SECTION:
        raise InputError(f"{option}: {path} is over the {MAX_JSON_SECTION}-byte "
                         f"({MAX_JSON_SECTION >> 20} MiB) limit of a JSON section")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{option}: {path} is not UTF-8 text") from None


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
