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


def _ratio_line(label, reference, size_text, info):
    with_model = info["bytes_with_model"]
    without = info["bytes_without_model"]
    r_with = reference / with_model if reference and with_model else None
    r_without = reference / without if reference and without else None
    return (f"{label} {fmt_ratio(r_with)} vs {size_text} counting the model, "
            f"{fmt_ratio(r_without)} without it")


def _per_vector(info):
    """', X bytes/vector in all (Y of codes)' for a file with rows: the file's bytes per vector
    with the model counted (when it is in the file or its size is known) beside the code rate."""
    n = info.get("n")
    with_model = info["bytes_with_model"] if not info["model_embedded"] else info["file_size"]
    if not n or with_model is None:
        return ""
    where = "in all" if info["model_embedded"] else "with the model"
    return f", {with_model / n:,.2f} bytes/vector {where} ({info['bytes_per_vector']} of codes)"


def size_lines(info, input_name=None, input_bytes=None):
    """Human-readable lines for the size accounting of QncFile.describe(): file size, where the
    model is and its share, and the compression ratios, with and without the model: first
    against the input (like zstd: the input file when `input_name` and `input_bytes` are given,
    as qinco-compress does, else the vectors in their source dtype when that is not float32),
    then against the vectors as float32."""
    model = info["model_bytes"]
    if info["model_embedded"]:
        where = f"embedded, {fmt_size(model)} = {fmt_percent(model, info['file_size'])} of the file"
    elif model is not None:
        where = f"not embedded ({fmt_size(model, short=True)}, kept outside the file)"
    else:
        where = "not embedded (model file not found: size unknown)"
    lines = [f"file size:   {fmt_size(info['file_size'])}{_per_vector(info)}", f"model:       {where}"]
    label = "compression:"
    if input_bytes is not None:
        lines.append(_ratio_line(label, input_bytes, f"the input {input_name} "
                                 f"({fmt_size(input_bytes, short=True)})", info))
        label = " " * len(label)
    elif info["source_dtype"] != "float32":
        lines.append(_ratio_line(label, info["source_bytes"], f"the source {info['source_dtype']} "
                                 f"({fmt_size(info['source_bytes'], short=True)})", info))
        label = " " * len(label)
    lines.append(_ratio_line(label, info["float32_bytes"],
                             f"float32 ({fmt_size(info['float32_bytes'], short=True)})", info))
    return lines
