"""qinco-bench rd end to end on small synthetic data (tiny budgets), and its usage errors."""
import json
import math

import numpy as np
import pytest

pytest.importorskip("faiss")
pytest.importorskip("matplotlib")

from cli_util import cli_runner, one_line_error, restore_threads  # noqa: E402,F401
from qinco_codec.cli.bench import main as bench_main  # noqa: E402
from qinco_codec.evaluation import knn  # noqa: E402

DIM = 16
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"



def invoke(*args):
    return cli_runner().invoke(bench_main, ["rd", *[str(a) for a in args]])


def _draw(rng, n, mix, centres):
    """Correlated Gaussian data around a few centres (anisotropic, like real embeddings)."""
    return (rng.normal(size=(n, DIM)) @ mix + centres[rng.integers(0, len(centres), n)]).astype(np.float32)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    rng = np.random.default_rng(0)
    mix = rng.normal(size=(DIM, DIM)) / np.sqrt(DIM) * np.linspace(0.3, 2.0, DIM)
    centres = 0.5 * rng.normal(size=(8, DIM))
    d = tmp_path_factory.mktemp("rd")
    train, base, queries = (_draw(rng, n, mix, centres) for n in (1000, 400, 30))
    paths = {k: d / f"{k}.npy" for k in ("train", "base", "queries", "gt")}
    for key, arr in (("train", train), ("base", base), ("queries", queries),
                     ("gt", knn(base, queries, 10).astype(np.int64))):
        np.save(paths[key], arr)
    return paths


QUICK = ["--threads", "1", "--budget-minutes", "0.02", "--epochs", "1", "--samples-per-epoch", "1024",
         "--opq-iters", "2", "--lsq-iters", "2", "--rotation-bits", "1", "2"]


@pytest.fixture(scope="module", autouse=True)
def _threads_put_back(restore_threads):
    yield


@pytest.fixture(scope="module")
def rd_run(files, tmp_path_factory):
    out = tmp_path_factory.mktemp("rd-out")
    result = invoke(files["base"], "--train", files["train"], "--queries", files["queries"],
                    "--gt", files["gt"], "--bytes", "2", "4", *QUICK, "--out", out)
    assert result.exit_code == 0, (result.stderr, result.exception)
    return result, out


def test_every_method_has_a_row(rd_run):
    result, out = rd_run
    data = json.loads((out / "rd.json").read_text())
    rows = data["rows"]
    methods = {r["method"] for r in rows}
    expected = {"PQ", "OPQ+PQ", "RQ (beam 5)", "LSQ", "float16", "SQ8", "SQ4", "qinco2-XS",
                "qinco2-XS 4B prefix"}
    import faiss
    if hasattr(faiss, "IndexRaBitQ"):
        expected |= {"RaBitQ 1b", "RaBitQ 2b"}
    if hasattr(faiss, "IndexEDEN"):
        expected |= {"EDEN 1b", "EDEN 2b"}
    if hasattr(faiss.ScalarQuantizer, "QT_2bit_tqmse"):
        expected |= {"TurboQuant 2b"}
    assert expected <= methods, expected - methods
    for trained in ("PQ", "OPQ+PQ", "RQ (beam 5)", "LSQ", "qinco2-XS"):
        assert sorted(r["bytes"] for r in rows if r["method"] == trained) == [2, 4], trained
    prefix = [r for r in rows if r["method"] == "qinco2-XS 4B prefix"]
    assert [r["bytes"] for r in prefix] == [2] and prefix[0]["prefix_of"] == 4
    for r in rows:
        for key in ("mse", "rel_mse", "R@1", "R@10", "encode_us", "decode_us", "eff_bytes_n", "eff_bytes_1M"):
            assert r[key] is not None and math.isfinite(r[key]) and r[key] >= 0, (r["method"], key, r[key])
        assert r["model_bytes"] > 0
        assert r["eff_bytes_n"] == pytest.approx(r["bytes"] + r["model_bytes"] / 400)
        assert 0 <= r["R@1"] <= r["R@10"] <= 1
    assert next(r for r in rows if r["method"] == "float16")["rel_mse"] < 1e-5
    # every method's name appears in the printed table
    for m in methods:
        assert m in result.stdout, m


def test_mse_falls_with_rate(rd_run):
    rows = json.loads((rd_run[1] / "rd.json").read_text())["rows"]
    rq = sorted((r["bytes"], r["mse"]) for r in rows if r["method"] == "RQ (beam 5)")
    assert rq[0][1] > rq[1][1] > 0
    ours = {r["bytes"]: r["mse"] for r in rows if r["method"] == "qinco2-XS"}
    prefix = next(r for r in rows if r["method"] == "qinco2-XS 4B prefix")
    assert prefix["mse"] > ours[4]


def test_outputs(rd_run):
    _, out = rd_run
    assert (out / "rd.png").read_bytes()[:8] == PNG_MAGIC
    md = (out / "rd.md").read_text()
    assert md.startswith("# Rate-distortion: base.npy (heldout protocol)")
    assert "| method | B/vec | MSE | rel MSE | R@1 | R@10 |" in md
    assert "![rate-distortion](rd.png)" in md
    data = json.loads((out / "rd.json").read_text())
    assert data["complete"] is True
    assert data["settings"]["protocol"] == "heldout" and data["settings"]["n_eval"] == 400


def test_self_protocol_quick(files, tmp_path):
    """--protocol self trains on a sample of DATA (no --train); a subset of methods."""
    result = invoke(files["base"], "--protocol", "self", "--train-size", "300", "--methods", "pq",
                    "sq", "--bytes", "2", "--quiet", "--out", tmp_path)
    assert result.exit_code == 0, (result.stderr, result.exception)
    assert result.stderr == ""
    data = json.loads((tmp_path / "rd.json").read_text())
    assert data["settings"]["protocol"] == "self" and data["settings"]["n_train"] == 300
    assert {r["method"] for r in data["rows"]} == {"PQ", "SQ4", "SQ8", "float16"}
    assert all("R@1" not in r for r in data["rows"])  # no queries: no recall


def test_extra_beams_and_float16_weights(files, tmp_path):
    """--extra-beams re-encodes the same model with other beam widths (a row each, the model's
    bytes unchanged); --weights float16 counts (and uses) the model at half the float32 bytes."""
    rows = {}
    for weights in ("float32", "float16"):
        out = tmp_path / weights
        result = invoke(files["base"], "--protocol", "self", "--train-size", "600", "--methods", "qinco",
                        "--bytes", "2", *QUICK, "--B", "1", "--extra-beams", "1", "4",
                        "--weights", weights, "--quiet", "--out", out)
        assert result.exit_code == 0, (result.stderr, result.exception)
        data = json.loads((out / "rd.json").read_text())
        assert data["settings"]["weights"] == weights and data["settings"]["extra_beams"] == [1, 4]
        rows[weights] = {r["method"]: r for r in data["rows"]}
    for weights, by_name in rows.items():
        assert set(by_name) == {"qinco2-XS", "qinco2-XS B=4"}  # B=1 is the main row, not repeated
        greedy, beam = by_name["qinco2-XS"], by_name["qinco2-XS B=4"]
        assert greedy["params"]["B"] == 1 and beam["params"]["B"] == 4 and beam["beam_of"] == 2
        assert beam["model_bytes"] == greedy["model_bytes"]
        assert beam["mse"] <= greedy["mse"] * 1.001  # a wider beam never finds worse codes here
        assert "qinco2-XS B=4" in (tmp_path / weights / "rd.md").read_text()
    f32, f16 = rows["float32"]["qinco2-XS"], rows["float16"]["qinco2-XS"]
    assert f16["params"]["weights"] == "float16"
    assert 0.45 < f16["model_bytes"] / f32["model_bytes"] < 0.56
    assert f16["mse"] == pytest.approx(f32["mse"], rel=0.02)




def test_save_models_writes_the_model_that_was_measured(files, tmp_path):
    """--save-models: DIR/models/PRESET-NB.safetensors is the trained model; encoded as the run
    did, it gives the row's MSE."""
    from qinco_codec.evaluation import mse
    from qinco_codec import load_model
    result = invoke(files["base"], "--protocol", "self", "--train-size", "600", "--methods", "qinco",
                    "--bytes", "2", *QUICK, "--B", "1", "--save-models", "--quiet", "--out", tmp_path)
    assert result.exit_code == 0, (result.stderr, result.exception)
    row = json.loads((tmp_path / "rd.json").read_text())["rows"][0]
    model = load_model(tmp_path / "models" / "qinco2-XS-2B.safetensors")
    base = np.load(files["base"])
    assert model.M == 2
    assert mse(base, model.decode(model.encode(base, B=1))) == pytest.approx(row["mse"], rel=1e-5)


def test_usage_errors(files, tmp_path):
    assert "--gt needs --queries" in one_line_error(
        invoke(files["base"], "--gt", files["gt"], "--out", tmp_path), 2)
    assert "DATA or --dataset" in one_line_error(invoke("--out", tmp_path), 2)
    assert "needs --train" in one_line_error(
        invoke(files["base"], "--protocol", "heldout", "--out", tmp_path), 2)
    assert "--methods" in one_line_error(invoke(files["base"], "--methods", "nope"), 2)


def test_input_errors(files, tmp_path):
    bad_q = tmp_path / "q8.npy"
    np.save(bad_q, np.zeros((5, 8), np.float32))
    assert "dimension 8" in one_line_error(
        invoke(files["base"], "--queries", bad_q, "--methods", "sq", "--out", tmp_path), 1)
    bad_gt = tmp_path / "gt.npy"
    np.save(bad_gt, np.zeros((7, 10), np.int64))
    assert "7 rows" in one_line_error(
        invoke(files["base"], "--queries", files["queries"], "--gt", bad_gt, "--methods", "sq",
               "--out", tmp_path), 1)
    small = tmp_path / "small.npy"
    np.save(small, np.ones((100, DIM), np.float32))
    assert "at least 256 training vectors" in one_line_error(
        invoke(small, "--methods", "pq", "--out", tmp_path), 1)


def test_resume_keeps_the_rows_of_an_interrupted_run(files, tmp_path):
    """A run cut short leaves rd.json with complete=false; --resume measures only what is missing."""
    import json
    out = tmp_path / "rd"
    args = [files["base"], "--train", files["train"], "--methods", "pq", "rq", "--threads", "1",
            "--quiet", "--out", out]
    assert invoke(*args, "--bytes", "4").exit_code == 0
    path = out / "rd.json"
    first = json.loads(path.read_text())
    interrupted = dict(first, complete=False,   # PQ done (marked, to see it is kept), RQ not yet
                       rows=[dict(r, mse=123.0) for r in first["rows"] if r["method"] == "PQ"])
    path.write_text(json.dumps(interrupted))
    res = invoke(*args, "--bytes", "4", "--resume")
    assert res.exit_code == 0, (res.stderr, res.exception)
    rows = json.loads(path.read_text())["rows"]
    assert [r["mse"] for r in rows if r["method"] == "PQ"] == [123.0]
    assert any(r["method"].startswith("RQ") for r in rows)
    done = invoke(*args, "--bytes", "4", "--resume")
    assert done.exit_code == 1 and "complete: nothing to resume" in done.stderr
    path.write_text(json.dumps(interrupted))
    other = invoke(*args, "--bytes", "8", "--resume")
    assert other.exit_code == 1 and "differs in bytes" in other.stderr


def test_baselines_from_reuses_faiss_rows_and_measures_ours(files, tmp_path):
    """--baselines-from keeps the earlier run's faiss rows (marked, to see they are not re-measured)
    and trains only our presets; an earlier run on other vectors is refused, naming the setting."""
    first = tmp_path / "first"
    args = [files["base"], "--train", files["train"], *QUICK, "--quiet"]
    assert invoke(*args, "--methods", "pq", "rq", "--bytes", "2", "4", "--out", first).exit_code == 0
    earlier = json.loads((first / "rd.json").read_text())
    marked = dict(earlier, rows=[dict(r, mse=r["mse"] + 1000.0) for r in earlier["rows"]])
    (first / "rd.json").write_text(json.dumps(marked))
    res = invoke(*args, "--bytes", "4", "--methods", "pq", "rq", "sq", "qinco",
                 "--baselines-from", first / "rd.json", "--out", tmp_path / "second")
    assert res.exit_code == 0, (res.stderr, res.exception)
    data = json.loads((tmp_path / "second" / "rd.json").read_text())
    rows = {(r["method"], r["bytes"]): r for r in data["rows"]}
    assert rows[("PQ", 4)]["mse"] > 1000 and rows[("RQ (beam 5)", 4)]["mse"] > 1000
    assert ("PQ", 2) not in rows  # only the rates of this run
    assert rows[("qinco2-XS", 4)]["mse"] < 1000 and "reused_from" not in rows[("qinco2-XS", 4)]
    assert any("reused from an earlier run" in n for n in data["notes"])
    sq8 = next(r for (m, _), r in rows.items() if m == "SQ8")
    assert "reused_from" not in sq8  # a reference the earlier run lacked: measured now
    other = invoke(files["base"], "--protocol", "self", "--threads", "1", "--quiet", "--methods", "pq",
                   "--bytes", "4", "--baselines-from", first / "rd.json", "--out", tmp_path / "third")
    line = one_line_error(other, 1)
    assert "cannot reuse the baselines" in line and "protocol" in line
    missing = invoke(*args, "--bytes", "4", "--baselines-from", tmp_path / "nope.json",
                     "--out", tmp_path / "fourth")
    assert "--baselines-from: no earlier run at" in one_line_error(missing, 1)


@pytest.mark.parametrize("spelling", [
    ["--bytes", "8", "16", "--methods", "pq", "SQ"],
    ["--bytes", "8,16", "--methods", "pq,sq"],
    ["--bytes", "8", "--bytes", "16", "--methods", "pq", "--methods", "sq"],
    ["--bytes=8", "16", "--methods=pq", "sq"],
])
def test_multi_value_spellings_agree(spelling):
    """'--bytes 8 16', '--bytes 8,16' and '--bytes 8 --bytes 16' parse alike (click's multiple=True
    and a splitting type; 'a b' is spread into repeated flags before click parses), and a DATA
    path after the values stays DATA."""
    from qinco_codec.cli.bench_rd import rd

    ctx = rd.make_context("rd", [*spelling, "data.npy"])
    assert ctx.params["nbytes"] == (8, 16) and ctx.params["data"] == "data.npy"
    assert [m.lower() for m in ctx.params["methods"]] == ["pq", "sq"]
    assert rd.make_context("rd", ["data.npy"]).params["nbytes"] == (4, 8, 16, 32)   # the default
    assert rd.make_context("rd", ["--", "--bytes"]).params["data"] == "--bytes"   # -- ends options


def test_multi_value_bad_integer_is_a_usage_error(tmp_path):
    line = one_line_error(invoke("--bytes", "8,x", "--dataset", "glove50", "--out", tmp_path), 2)
    assert "--bytes" in line and "expected integers, got 'x'" in line
