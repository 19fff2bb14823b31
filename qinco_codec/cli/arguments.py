"""Option values that need parsing beyond click's types: a JSON object (--metadata) and a row
range (--rows A:B)."""
import json

import click

from ..errors import InputError


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
