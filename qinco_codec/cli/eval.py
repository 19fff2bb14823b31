"""qinco-eval: reconstruction error (and search recall) of a model at every prefix rate."""
import click

from .commands import command
from .common import device_option, search_options, threads_option
from .formatting import echo_json
from .paths import existing_input
from .stdio import load_vectors

EXAMPLE = """
qinco-eval model.safetensors base.fvecs
qinco-eval model.safetensors base.fvecs --queries query.fvecs --gt groundtruth.ivecs --json
"""


@command("qinco-eval", EXAMPLE)
@click.argument("model_path", metavar="MODEL", is_eager=True, callback=existing_input("MODEL"))
@click.argument("data", metavar="DATA", is_eager=True, callback=existing_input("DATA"))
@click.option("--queries", metavar="PATH", default=None, is_eager=True,
              callback=existing_input("--queries"),
              help="Query vectors; with --gt, adds R@1 and R@10 (search in the decoded DATA).")
@click.option("--gt", metavar="PATH", default=None, is_eager=True,
              callback=existing_input("--gt"),
              help="Ground truth: per query, ids of its nearest DATA rows (.ivecs, .ibin or .npy); "
                   "column 0 (the true nearest neighbour) is used.")
@search_options
@click.option("--json", "as_json", is_flag=True, help="Print the rows as a JSON list instead of a table.")
@device_option("encoding and decoding")
@threads_option
def main(model_path, data, queries, gt, A, B, as_json, device):
    """Encode DATA (any vector file; '-' reads an .npy from stdin) with MODEL (a model file, or a
    .qnc file whose embedded model is used) once at its full rate, decode every prefix of the
    codes, and print per prefix: steps, bytes per vector, MSE
    (squared L2 error summed over dimensions, mean over vectors), relative MSE (MSE divided by
    the data's variance around its mean) and, with --queries and --gt, R@1 and R@10.
    """
    if (queries is None) != (gt is None):
        raise click.UsageError("--queries and --gt go together: give both or neither")
    from .. import evaluate  # torch: imported only once the inputs are known to exist
    from ..errors import InputError
    from ..model_resolution import ModelFile
    from ..readers import read_ints, read_vectors
    model = ModelFile.read(model_path).model  # a model file, or a .qnc's embedded model
    x = load_vectors(data)
    q = g = None
    if queries is not None:
        q, g = read_vectors(queries), read_ints(gt)
        if len(g) != len(q):
            raise InputError(f"--gt {gt} has {len(g)} rows, --queries {queries} has {len(q)}")
        if g.size and (g[:, 0].min() < 0 or g[:, 0].max() >= len(x)):
            raise InputError(f"--gt {gt}: neighbour ids must be row numbers of DATA "
                             f"(0..{len(x) - 1}), got values in [{g[:, 0].min()}, {g[:, 0].max()}]")
    rows = evaluate(model, x, queries=q, gt=g, A=A, B=B, device=device)
    if as_json:
        echo_json(rows)
        return
    recall_keys = [k for k in ("R@1", "R@10") if rows and k in rows[0]]
    header = f"{'steps':>5} {'bytes/vec':>9} {'MSE':>12} {'rel MSE':>9}" + \
        "".join(f" {k:>7}" for k in recall_keys)
    click.echo(header)
    for r in rows:
        line = f"{r['steps']:>5} {r['bytes']:>9} {r['mse']:>12.6g} {r['rel_mse']:>9.5f}"
        click.echo(line + "".join(f" {r[k]:>7.4f}" for k in recall_keys))
    about = f"# {len(x)} vectors of dim {x.shape[1]}; model {model.sha256[:16]}... " \
        f"({model.config.preset}, K={model.K}, M={model.M})"
    click.echo(about + (f"; {len(q)} queries" if q is not None else ""))


if __name__ == "__main__":
    main()
