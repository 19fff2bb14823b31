"""What the benchmarks share: the vectors they measure (`Inputs`), the optional faiss import
(`require_faiss`, defined in qinco_codec/optional.py), wall-clock timing, and tables written as
aligned text, Markdown and JSON."""
import json
import os
import time
from dataclasses import dataclass, field

import numpy as np

from ..formats.atomic import write_bytes_atomic
from ..optional import require_faiss  # noqa: F401 (the benchmarks' import of it)


@dataclass
class Inputs:
    """The vectors a benchmark measures: `base` (encoded, decoded and evaluated) and `train`
    (for training), optional `queries` with their ground truth `gt` (per query, row numbers of
    base, nearest first); `name` (short: the data set or file), `protocol` ('heldout' or 'self'
    for `qinco-bench rd`), `description` (one line for reports) and `notes` on how they were
    drawn."""

    name: str
    train: np.ndarray
    base: np.ndarray
    queries: np.ndarray = None
    gt: np.ndarray = None
    protocol: str = None
    description: str = ""
    notes: list = field(default_factory=list)


class Timer:
    """Context manager measuring wall-clock seconds into `.seconds`."""

    def __enter__(self):
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self._t0
        return False


def best_of(fn, repeats=3, min_seconds=0.0):
    """Smallest wall-clock time of `repeats` calls of fn() (at least one), and fn's last result.
    Keeps calling past `repeats` until `min_seconds` have been spent in total."""
    best, spent, result, done = float("inf"), 0.0, None, 0
    while done < max(1, repeats) or spent < min_seconds:
        with Timer() as t:
            result = fn()
        best, spent, done = min(best, t.seconds), spent + t.seconds, done + 1
    return best, result


def _cell(value, fmt):
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    return format(value, fmt)


def format_table(rows, columns, markdown=False):
    """rows: list of dicts; columns: list of (key, header, format spec). Text or Markdown table."""
    cells = [[_cell(r.get(k), f) for k, _, f in columns] for r in rows]
    headers = [h for _, h, _ in columns]
    if markdown:
        lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
        lines += ["| " + " | ".join(c) + " |" for c in cells]
        return "\n".join(lines)
    widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h) for i, h in enumerate(headers)]
    fmt_row = lambda c: "  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(c, widths)))
    return "\n".join([fmt_row(headers)] + [fmt_row(c) for c in cells])


def write_report(result, name, title, markdown_text, out_dir=None, json_path=None):
    """NAME.json and NAME.md (under `title`) in out_dir, and/or the JSON at json_path ('-' is
    stdout, written by the caller); returns the paths written."""
    paths = {}
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
        paths["json"] = os.path.join(out_dir, f"{name}.json")
        paths["md"] = os.path.join(out_dir, f"{name}.md")
        write_json(paths["json"], result)
        write_text(paths["md"], f"# {title}\n\n{markdown_text}\n")
    if json_path and json_path != "-":
        write_json(json_path, result)
        paths["json_path"] = json_path
    return paths


def emit_report(result, text, paths, json_path, quiet):
    """What a bench command prints: the JSON (with --json -) or the text report on stdout, then
    the paths written on stderr."""
    import json

    import click

    click.echo(json.dumps(result, indent=2) if json_path == "-" else text)
    if not quiet and paths:
        click.echo("wrote " + ", ".join(paths.values()), err=True)


def write_text(path, text):
    """Write text atomically (temporary file, fsync, rename)."""
    write_bytes_atomic(path, text.encode())


def write_json(path, obj):
    write_text(path, json.dumps(obj, indent=2) + "\n")


def notes_and_figure(result, alt, png_name):
    """The closing Markdown lines of a report: its notes, faiss's warnings, then the figure."""
    lines = []
    if result["notes"]:
        lines += ["Notes:", ""] + [f"- {t}" for t in result["notes"]] + [""]
    if result.get("warnings"):
        lines += ["faiss warnings:", ""] + [f"- {t}" for t in result["warnings"]] + [""]
    return lines + [f"![{alt}]({png_name})", ""]


def write_partial(result, out_dir, stem):
    """STEM.json alone, with "complete": false, while a run is going on."""
    os.makedirs(out_dir, exist_ok=True)
    write_json(os.path.join(out_dir, f"{stem}.json"), result)


def write_json_and_markdown(result, out_dir, stem, markdown_text):
    """STEM.json and STEM.md under out_dir; returns the paths of those and of STEM.png (to be
    drawn by the caller)."""
    os.makedirs(out_dir, exist_ok=True)
    paths = {k: os.path.join(out_dir, f"{stem}.{k}") for k in ("json", "md", "png")}
    write_json(paths["json"], result)
    write_text(paths["md"], markdown_text)
    return paths


# Fewest training vectors a benchmark accepts: k-means needs as many points as its 256 codewords.
MIN_TRAIN = 256


def training_vectors(train, base, name):
    """The training vectors given as `name`, as float32, checked against DATA (`base`)."""
    from ..errors import InputError
    from ..validation import as_float_matrix
    train = as_float_matrix(train, name=name, allow_empty=False)
    if train.shape[1] != base.shape[1]:
        raise InputError(f"{name}: dimension {train.shape[1]} differs from DATA's {base.shape[1]}")
    return train


def sample_training(train, train_size, seed):
    """A seeded sample of `train_size` rows (in their order) when there are more."""
    if train_size is not None and train_size < len(train):
        rows = np.sort(np.random.default_rng(seed).choice(len(train), train_size, replace=False))
        train = train[rows]
    return train


def check_training_size(train):
    """Refuse fewer than MIN_TRAIN training vectors."""
    from ..errors import InputError
    if len(train) < MIN_TRAIN:
        raise InputError(f"need at least {MIN_TRAIN} training vectors (256 codewords per step), "
                         f"got {len(train)}")
