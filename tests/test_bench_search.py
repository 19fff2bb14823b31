"""qinco-bench search end to end on tiny synthetic data (a tiny model, short sweeps), its recall
and target arithmetic on hand-made cases, and its usage errors. No timing is asserted."""
import json

import numpy as np
import pytest

pytest.importorskip("faiss")
pytest.importorskip("matplotlib")

from cli_util import cli_runner, one_line_error, restore_threads  # noqa: E402,F401
from qinco_codec.bench import search as bench  # noqa: E402
from qinco_codec.cli.bench import main as bench_main  # noqa: E402

DIM, N_BASE, N_QUERIES, NLIST = 16, 300, 20, 4
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def invoke(*args):
    return cli_runner().invoke(bench_main, ["search", *[str(a) for a in args]])


@pytest.fixture(scope="module", autouse=True)
def _threads_put_back(restore_threads):
    yield


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Correlated Gaussian vectors around a few centres, and a tiny 2-byte model trained on them."""
    from qinco_codec import train

    rng = np.random.default_rng(0)
    mix = rng.normal(size=(DIM, DIM)) / np.sqrt(DIM) * np.linspace(0.3, 2.0, DIM)
    centres = rng.normal(size=(8, DIM))
    draw = lambda n: (rng.normal(size=(n, DIM)) @ mix
                      + centres[rng.integers(0, 8, n)]).astype(np.float32)
    d = tmp_path_factory.mktemp("search")
    paths = {k: d / f"{k}.npy" for k in ("train", "base", "queries")}
    arrays = {"train": draw(1000), "base": draw(N_BASE), "queries": draw(N_QUERIES)}
    for k, a in arrays.items():
        np.save(paths[k], a)
    model = train(arrays["train"], steps=2, epochs=1, samples_per_epoch=256, quiet=True)
    paths["model"] = d / "m2.safetensors"
    model.save(paths["model"])
    return paths


QUICK = ["--threads", "1", "--nlist", NLIST, "--nprobe", "1", NLIST, "--our-nprobe", NLIST,
         "--shortlist", "5", N_BASE, "--ef-search", "16", "--ivf-variants", "filter",
         "residual", "--epochs", "1", "--samples-per-epoch", "256", "--quiet"]


@pytest.fixture(scope="module")
def run(files, tmp_path_factory):
    out = tmp_path_factory.mktemp("search-out")
    result = invoke(files["base"], "--queries", files["queries"], "--train", files["train"],
                    "--bytes", "2", "--model", files["model"], *QUICK, "--out", out)
    assert result.exit_code == 0, (result.stderr, result.exception)
    return result, out, json.loads((out / "search.json").read_text())


def test_json_structure(run):
    result, out, data = run
    assert data["complete"] is True and result.stderr == ""   # --quiet: nothing on stderr
    s = data["settings"]
    assert (s["n_base"], s["n_queries"], s["dim"], s["bytes"], s["nlist"]) == (
        N_BASE, N_QUERIES, DIM, [2], NLIST)
    rows = data["rows"]
    curves = {r["curve"] for r in rows}
    assert set(bench.CURVES.values()) <= curves
    assert {"ours, exhaustive", "ours, full decode", f"ours, IVF{NLIST}",
            "ours IVF-QINCo, full decode", f"ours IVF-QINCo, IVF{NLIST}"} <= curves
    residual = [r for r in rows if r["curve"].startswith("ours IVF-QINCo")]
    assert all(r["params"]["residual"] and r["extra_bytes"] > 0 for r in residual)
    for r in rows:
        assert r["bytes"] == 2 and r["family"] in ("qinco", "faiss")
        assert set(r["qps"]) == {"1"} and r["qps"]["1"] > 0 and r["seconds"]["1"] > 0
        got = [r[f"R@{k}"] for k in bench.RECALL_AT if r[f"R@{k}"] is not None]
        assert got == sorted(got) and all(0 <= v <= 1 for v in got), r
        if r["params"].get("shortlist") == 5:    # 5 results per query: R@1 but no R@10
            assert r["R@1"] is not None and r["R@10"] is None
        else:
            assert r["R@10"] is not None
    assert {r["params"]["efSearch"] for r in rows if r["curve"] == "faiss HNSW-PQ"} == {16}
    assert {r["params"]["nprobe"] for r in rows if r["curve"] == "faiss IVF-RQ"} == {1, NLIST}
    ceilings = {r["curve"] for r in rows if r["ceiling"]}
    assert ceilings == {"faiss PQ, exhaustive", "faiss PQ fast scan, exhaustive",
                        "faiss RQ, exhaustive", "ours, full decode", "ours IVF-QINCo, full decode"}
    assert all(r["extra_bytes"] == bench.ID_BYTES for r in rows if "IVF" in r["curve"])
    assert data["targets"] and data["targets"][0]["bytes"] == 2
    # outputs beside the JSON, and every curve in the printed table
    assert (out / "search.png").read_bytes()[:8] == PNG_MAGIC
    md = (out / "search.md").read_text()
    assert md.startswith("# Search: base.npy (l2)") and "| method | B/vec | setting |" in md
    for r in rows:
        assert r["line"] in result.stdout


def test_ceilings_hold_where_they_must(run):
    """Exact re-ranking of every row is a brute-force search over the decoded vectors: the
    shortlist of every row (exhaustive, and IVF with every list probed, whatever the variant)
    has the full-decode ceiling's recall exactly."""
    rows = run[2]["rows"]
    for prefix, expected in (("ours,", 2), ("ours IVF-QINCo,", 1)):  # exhaustive + filter; residual
        ceiling = next(r for r in rows if r["curve"] == f"{prefix} full decode")
        full = [r for r in rows if r["family"] == "qinco" and not r["ceiling"]
                and r["params"]["shortlist"] == N_BASE and r["curve"].startswith(prefix)]
        assert len(full) == expected
        for r in full:
            assert [r[f"R@{k}"] for k in bench.RECALL_AT] == [ceiling[f"R@{k}"]
                                                               for k in bench.RECALL_AT]


def test_ceiling_equals_brute_force_over_decoded(files, run):
    from qinco_codec.evaluation import knn
    from qinco_codec.serialize import load_model

    model = load_model(files["model"])
    base, queries = np.load(files["base"]), np.load(files["queries"])
    decoded = model.decode(model.encode(base))
    ids = knn(decoded, queries, 100)
    truth = bench.exact_neighbours(base, queries, 1)
    ceiling = next(r for r in run[2]["rows"] if r["curve"] == "ours, full decode")
    expected = {f"R@{k}": ceiling[f"R@{k}"] for k in bench.RECALL_AT}
    assert bench.recalls(ids, truth) == pytest.approx(expected, abs=1.5 / N_QUERIES)  # a tie


def test_recalls_hand_made():
    ids = np.array([[3, 1, 2], [0, 5, 6], [9, 8, 7]])
    gt = np.array([[1, 4], [9, 0], [9, 1]])              # only the first column counts
    assert bench.recalls(ids, gt, ks=(1, 2, 3)) == {"R@1": pytest.approx(1 / 3),
                                                      "R@2": pytest.approx(2 / 3),
                                                      "R@3": pytest.approx(2 / 3)}
    # fewer results than k: no R@k, unless the base has no more rows than that
    assert bench.recalls(ids[:, :2], gt, ks=(3,), n=10) == {"R@3": None}
    assert bench.recalls(ids[:, :2], gt, ks=(3,), n=2)["R@3"] == pytest.approx(2 / 3)


def test_exact_neighbours_by_metric():
    base = np.array([[1, 0], [3, 0], [0, 2]], np.float32)
    q = np.array([[2.9, 0.0]], np.float32)
    assert bench.exact_neighbours(base, q, 3, "l2").tolist() == [[1, 0, 2]]
    q = np.array([[0.0, 1.0]], np.float32)                # IP: the largest dot product first
    assert bench.exact_neighbours(base, q, 3, "ip")[0, 0] == 2
    assert bench.exact_neighbours(base, np.array([[0.1, 0.0]], np.float32), 1, "ip")[0, 0] == 1


def _row(curve, family, r10, qps, ceiling=False):
    return {"line": curve, "curve": curve, "family": family, "bytes": 8, "ceiling": ceiling,
            "params": {}, "R@10": r10, "qps": {"2": qps}}


def test_targets_and_frontier_hand_made():
    rows = [_row("ours, exhaustive", "qinco", 0.80, 5000),
            _row("ours, exhaustive", "qinco", 0.90, 800),
            _row("ours, exhaustive", "qinco", 0.85, 400),      # dominated: slower and worse
            _row("ours, full decode", "qinco", 0.92, 50, ceiling=True),
            _row("faiss IVF-RQ", "faiss", 0.86, 1000),
            _row("faiss RQ, exhaustive", "faiss", 0.88, 90, ceiling=True)]
    result = {"settings": {"bytes": [8], "threads": [1, 2]}, "rows": rows}
    (e,) = bench.targets(result)
    assert e["met"] is True and e["gap_vs_faiss_ceiling"] == pytest.approx(0.02)
    assert e["ours_top"]["R@10"] == 0.90 and e["faiss_best_ceiling"]["R@10"] == 0.88
    assert e["qps_ratio_at_faiss_best_R10"] == pytest.approx(800 / 1000)
    assert e["ours_at_0.9_ceiling"]["qps"] == 800           # 0.9 * 0.92 = 0.828: 0.80 is short
    assert [r["R@10"] for r in bench.frontier(rows[:3], 2)] == [0.90, 0.80]
    rows[1]["R@10"] = 0.87
    (e,) = bench.targets(result)
    assert e["met"] is False and e["gap_vs_faiss_ceiling"] == pytest.approx(-0.01)
    assert "NOT met by -0.010" in bench.target_lines(result)[0]




def test_usage_errors(files, tmp_path):
    base, q = files["base"], files["queries"]
    assert "DATA or --dataset" in one_line_error(invoke("--out", tmp_path), 2)
    assert "DATA or --dataset" in one_line_error(invoke(base, "--dataset", "glove50"), 2)
    assert "needs --queries" in one_line_error(invoke(base), 2)
    assert "brings its own" in one_line_error(invoke("--dataset", "glove50", "--queries", q), 2)
    assert "--data-dir goes with" in one_line_error(
        invoke(base, "--queries", q, "--data-dir", tmp_path), 2)
    assert "--methods" in one_line_error(invoke(base, "--queries", q, "--methods", "nope"), 2)
    assert "--bytes" in one_line_error(invoke(base, "--queries", q, "--bytes", "0"), 2)
    assert "--model goes with" in one_line_error(
        invoke(base, "--queries", q, "--methods", "ivfpq", "--model", files["model"]), 2)


def test_input_errors(files, tmp_path):
    base, q = files["base"], files["queries"]
    assert "no such file" in one_line_error(
        invoke(base, "--queries", q, "--model", tmp_path / "none.safetensors"), 1)
    (tmp_path / "file").write_text("x")
    assert "not a directory" in one_line_error(
        invoke(base, "--queries", q, "--out", tmp_path / "file"), 1)
    np.save(tmp_path / "q8.npy", np.zeros((3, 8), np.float32))
    assert "dimension 8" in one_line_error(invoke(base, "--queries", tmp_path / "q8.npy",
                                                   "--out", tmp_path / "o"), 1)
    assert "below every --bytes" in one_line_error(
        invoke(base, "--queries", q, "--model", files["model"], "--bytes", "4"), 1)
    assert "train.npy does not exist" in one_line_error(
        invoke("--dataset", "minilm384", "--data-dir", tmp_path, "--out", tmp_path / "o"), 1)


def test_baselines_from_keeps_the_faiss_rows(files, run, tmp_path):
    """--baselines-from: the faiss rows of the earlier run are kept as they were (not measured
    again), ours are measured; a run with other faiss settings is refused, naming the setting."""
    earlier = run[1] / "search.json"
    common = [files["base"], "--queries", files["queries"], "--train", files["train"],
              "--bytes", "2", "--model", files["model"]]
    quick = [a for a in QUICK if a != "residual"]     # only the filter variant of our IVF
    res = invoke(*common, *quick, "--baselines-from", earlier,
                 "--out", tmp_path / "again")
    assert res.exit_code == 0, (res.stderr, res.exception)
    data = json.loads((tmp_path / "again" / "search.json").read_text())
    old = [r for r in run[2]["rows"] if r["family"] == "faiss"]
    new = [r for r in data["rows"] if r["family"] == "faiss"]
    assert [{k: v for k, v in r.items() if k != "reused_from"} for r in new] == old
    assert all(r["reused_from"] == run[2]["environment"]["date"] for r in new)
    assert any("reused from an earlier run" in t for t in data["notes"])
    assert {r["curve"] for r in data["rows"] if r["family"] == "qinco"} == {
        "ours, exhaustive", "ours, full decode", f"ours, IVF{NLIST}"}
    other = invoke(*common, *[a if a != NLIST else 2 for a in quick], "--baselines-from",
                   earlier, "--out", tmp_path / "other")
    assert "differs in nlist (4 there, 2 here)" in one_line_error(other, 1)
    assert "no earlier run at" in one_line_error(
        invoke(*common, "--baselines-from", tmp_path / "none.json", "--out", tmp_path / "x"), 1)
