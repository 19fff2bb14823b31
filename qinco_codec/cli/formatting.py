"""How the commands print: JSON output, sizes, ratios and percentages, and the size lines of
a .qnc file's description (QncFile.describe) that qinco-info and qinco-compress both show."""
import json

import click
import numpy as np


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


def fmt_ratio(r):
    return "n/a" if r is None else (f"{r:.1f}x" if r >= 10 else f"{r:.2f}x")


def fmt_percent(part, whole):
    return "n/a" if not whole or part is None else f"{100.0 * part / whole:.1f}%"


def size_lines(info):
    """Human-readable lines for the size accounting of QncFile.describe(): file size, where the
    model is and its share, and the compression ratios (against the source dtype too when the
    vectors were not float32)."""
    model = info["model_bytes"]
    if info["model_embedded"]:
        where = f"embedded, {fmt_size(model)} = {fmt_percent(model, info['file_size'])} of the file"
    elif model is not None:
        where = f"not embedded ({fmt_size(model, short=True)}, kept outside the file)"
    else:
        where = "not embedded (model file not found: size unknown)"
    lines = [
        f"file size:   {fmt_size(info['file_size'])}",
        f"model:       {where}",
        f"compression: {fmt_ratio(info['ratio_with_model'])} vs float32 "
        f"({fmt_size(info['float32_bytes'], short=True)}) counting the model, "
        f"{fmt_ratio(info['ratio_without_model'])} without it",
    ]
    if info["source_dtype"] != "float32":
        lines.append(f"             {fmt_ratio(info['source_ratio_with_model'])} vs the source "
                     f"{info['source_dtype']} ({fmt_size(info['source_bytes'], short=True)}) "
                     f"counting the model, {fmt_ratio(info['source_ratio_without_model'])} without it")
    return lines
