"""qinco-info: what a .qnc file holds, how big its parts are, and how well it compresses.

Reads only the header, the sections, the index and the chunk headers (not the codes), and never
imports torch, so it is fast on files of any size.
"""
import click

from .commands import command
from .common import force_option
from .formatting import echo_json, fmt_percent, fmt_size, size_lines
from .paths import check_distinct, check_input, check_output
from ..description import ivf_lines

EXAMPLE = """
qinco-info base.qnc
qinco-info base.qnc --json | jq .rates
qinco-info base.qnc --extract-model model.safetensors   # the embedded model, byte for byte
"""


def _config_text(config):
    keys = ("preset", "arch", "dim", "M", "K", "L", "hidden", "embed", "A", "B", "parameters", "version")
    parts = [f"{k}={config[k]}" for k in keys if k in config]
    parts += [f"{k}={v}" for k, v in config.items() if k not in keys and not isinstance(v, (dict, list))]
    return " ".join(parts) if parts else "(none)"


def _held_out_text(held_out):
    return {True: "held out from the model's training sample", False: "the model was trained on all of them",
            None: "the model was given"}.get(held_out, "")


def _trained_text(trained):
    if not trained:
        return "no training record"
    parts = [f"{trained['epochs']} epoch{'' if trained['epochs'] == 1 else 's'}" if "epochs" in trained else None,
             f"{trained['samples']:,} samples" if isinstance(trained.get("samples"), int) else None,
             f"validation MSE {trained['val_mse']:.4g}" if isinstance(trained.get("val_mse"), (int, float)) else None]
    parts += [f"{k}={v}" for k, v in trained.items() if k not in ("epochs", "samples", "val_mse")]
    return ", ".join(p for p in parts if p)


def quality_lines(info):
    """Lines for the quality report of a QncFile.describe() dict (SPEC.md 5.2): the error per
    rate on the writer's sample, the model's weight precision and training record, the writer.
    Files without a report say so."""
    report = info.get("quality_report")
    if not isinstance(report, dict):
        return ["quality:     not recorded (the file has no quality report: written before .qnc 1.1 "
                "or without one)"]
    sample, model = report.get("sample") or {}, report.get("model") or {}
    rows = sample.get("rows")
    held = _held_out_text(sample.get("held_out"))
    lines = [f"quality:     measured on {rows:,} vectors" + (f" ({held})" if held else "")
             if isinstance(rows, int) else "quality:     measured on a sample",
             "             bytes/vector           MSE  relative MSE  mean cosine"]
    for r in report.get("rates") or []:
        try:
            lines.append(f"             {r['bytes_per_vector']:>12}  {r['mse']:>12.5g}  {r['rel_mse']:>12.4g}"
                         f"  {r['cosine']:>11.4f}")
        except (KeyError, TypeError, ValueError):
            lines.append(f"             {r}")
    if model.get("weight_dtype"):
        lines.append(f"weights:     {model['weight_dtype']}")
    if "trained" in model:
        lines.append(f"training:    {_trained_text(model['trained'])}")
    if report.get("writer"):
        lines.append(f"written by:  {report['writer']}")
    return lines


def render(info):
    """The human-readable report of a QncFile.describe() dict."""
    n, chunks = info["n"], info["chunks"]
    model_rate = info["model_config"].get("M")
    lines = [
        f"file:        {info['path']}",
        f"format:      .qnc version {info['version']}",
        f"vectors:     n={n:,}  dim={info['dim']}  source dtype {info['source_dtype']}",
        f"codes:       K={info['K']} ({info['bytes_per_code']} byte{'s' if info['bytes_per_code'] > 1 else ''}"
        f" per code)  M={info['M']} steps  {info['bytes_per_vector']} bytes/vector"
        f"  {chunks:,} chunk{'s' if chunks != 1 else ''} of up to {info['chunk_rows']:,} rows",
        "rates:       " + ", ".join(str(r["bytes_per_vector"]) for r in info["rates"])
        + " bytes/vector (decode any of these with qinco-decompress --bytes)",
        f"model id:    {info['model_sha256']}",
        f"config:      {_config_text(info['model_config'])}",
    ]
    if isinstance(model_rate, int) and model_rate > info["M"]:
        lines.append(f"             (the model codes {model_rate} steps; this file keeps a prefix of {info['M']})")
    lines.append("planes:      step  stored bytes     raw bytes  zstd saving  stored B/vec at this rate")
    for p, r in zip(info["planes"], info["rates"]):
        lines.append(f"             {p['step']:>4}  {p['stored_bytes']:>12,}  {p['raw_bytes']:>12,}  "
                     f"{fmt_percent(p['raw_bytes'] - p['stored_bytes'], p['raw_bytes']):>11}  "
                     f"{r['stored_bytes_per_vector']:>10.3f}")
    lines.append(f"             all   {info['codes_stored_bytes']:>12,}  {info['codes_raw_bytes']:>12,}  "
                 f"{fmt_percent(info['codes_raw_bytes'] - info['codes_stored_bytes'], info['codes_raw_bytes']):>11}")
    lines += size_lines(info)
    lines += quality_lines(info)
    lines += ivf_lines(info)  # the inverted lists (SPEC.md 5.3), from description.py
    if not info["model_embedded"]:
        lines.append("model store: " + (info["model_in_store"] or
                                        "not found there (decode with qinco-decompress --model PATH)"))
    if info.get("verified"):
        lines.append("verified:    every code plane" + (" and the embedded model" if info["model_embedded"]
                                                        else "") + " match their checksums")
    if info["metadata"] is not None:
        import json
        lines.append(f"metadata:    {json.dumps(info['metadata'], ensure_ascii=False)}")
    return "\n".join(lines)


@command("qinco-info", EXAMPLE)
@click.argument("path", metavar="FILE.qnc")
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
@click.option("--verify", is_flag=True,
              help="Also read all the codes and the embedded model and check their checksums "
                   "(reads the whole file; exit code 1 on the first problem).")
@click.option("--extract-model", "extract_to", metavar="PATH", default=None,
              help="Write the embedded model to PATH exactly as stored (its SHA-256 is the file's "
                   "model id) instead of printing the report.")
@force_option("PATH (--extract-model)")
def main(path, as_json, verify, extract_to, force):
    """Describe FILE.qnc: format version, vectors (n, dim, source dtype), codes (K, bytes per code,
    M steps), the rates it can be decoded at, the model (id, embedded or not, configuration), the
    stored size of each code plane summed over chunks with the zstd saving, the file size, the
    compression ratio to float32 (and to the source dtype when it was another) with and without
    the model, the model's share of the file, and the quality report written with the file (MSE,
    relative MSE and mean cosine per rate on a sample, the model's weight precision and training
    record, the writing program) (QncFile.describe(), which --json prints).

    Reads only headers and the index (unless --verify); needs no model and does not load torch.
    """
    from .. import open as qnc_open

    if extract_to is not None:
        if as_json or verify:
            raise click.UsageError("--extract-model writes the model instead of the report: "
                                   "not with --json or --verify")
        extract_model(path, extract_to, force)
        return
    with qnc_open(path) as f:
        info = f.describe(verify=verify)
    if as_json:
        echo_json(info)
    else:
        click.echo(render(info))


def extract_model(path, out, force):
    """Write the model embedded in `path` to `out`, byte for byte (checked against the model id
    on the way), and say so on stderr."""
    import hashlib

    from ..formats.atomic import write_bytes_atomic
    from ..model_resolution import embedded_model_bytes

    check_input(path, "FILE.qnc")
    check_distinct(inputs=[("FILE.qnc", path)], outputs=[("--extract-model", out)])
    check_output(out, "--extract-model", force)
    data = embedded_model_bytes(path)
    write_bytes_atomic(out, data)
    click.echo(f"wrote {out}: the embedded model, {fmt_size(len(data))}, "
               f"model id {hashlib.sha256(data).hexdigest()}", err=True)


if __name__ == "__main__":
    main()
