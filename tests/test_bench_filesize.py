"""qinco-bench filesize: the faiss size rule and the crossover arithmetic on hand-made numbers,
one end-to-end run on a tiny synthetic collection, and its refusals."""
import json

import numpy as np
import pytest

pytest.importorskip("faiss")

from cli_util import cli_runner, one_line_error, restore_threads  # noqa: E402,F401
from qinco_codec.bench import filesize as fs  # noqa: E402
from qinco_codec.cli.bench import main as bench_main  # noqa: E402

DIM = 16


def invoke(*args):
    return cli_runner().invoke(bench_main, ["filesize", *[str(a) for a in args]])


@pytest.fixture(scope="module", autouse=True)
def _threads_put_back(restore_threads):
    yield


# ---------------------------------------------------------------- the faiss size rule
def test_faiss_file_bytes_counts_codes_and_float16_codebooks():
    assert fs.faiss_file_bytes(1000, 16, 4) == 1000 * 4 + 4 * 256 * 16 * 2 == 36_768


def test_largest_faiss_m_within_the_budget():
    assert fs.largest_faiss_m(1000, 16, 36_768) == 4        # exactly four steps' bytes
    assert fs.largest_faiss_m(1000, 16, 36_767) == 3        # one byte short of four
    assert fs.largest_faiss_m(1000, 16, 9_191) == 0         # not even one step
    assert fs.largest_faiss_m(1000, 16, 10 ** 9, limit=32) == 32
    for budget in (9_192, 50_000, 123_456):
        m = fs.largest_faiss_m(1000, 16, budget)
        assert fs.faiss_file_bytes(1000, 16, m) <= budget < fs.faiss_file_bytes(1000, 16, m + 1)


# ---------------------------------------------------------------- crossover arithmetic
CURVE = {4: 1.0, 5: 0.8, 6: 0.7}


def fitting(n):
    """Codebooks-only steps in the network's file: more at small n (the model's bytes buy them)."""
    return 6 if n < 20_000 else 5 if n < 50_000 else 4


def test_measured_crossover_is_the_smallest_winning_size():
    points = [(10_000, 0.5, 1.0), (1_000, 2.0, 1.0), (3_000, 0.9, 1.0)]
    assert fs.measured_crossover(points) == 3_000
    assert fs.measured_crossover([(1_000, None, None), (3_000, 1.0, 1.0)]) == 3_000   # a tie wins
    assert fs.measured_crossover([(1_000, None, None), (3_000, 1.2, 1.0)]) is None


def test_best_codebooks_mse_uses_at_most_the_steps_that_fit():
    assert fs.best_codebooks_mse(CURVE, 5) == 0.8
    assert fs.best_codebooks_mse({"4": 1.0, "5": 0.8}, 9) == 0.8   # keys from JSON are strings
    assert fs.best_codebooks_mse(CURVE, 3) is None


def test_crossover_beyond_bisects_to_the_first_winning_size():
    assert fs.crossover_beyond(0.9, CURVE, fitting, 10_000) == 50_000    # needs codebooks at 4
    assert fs.crossover_beyond(0.75, CURVE, fitting, 10_000) == 20_000   # at 5 steps already
    assert fs.crossover_beyond(0.8, CURVE, fitting, 10_000) == 20_000    # equal MSE wins
    assert fs.crossover_beyond(0.65, CURVE, fitting, 10_000) == 10_000   # wins where measured
    assert fs.crossover_beyond(1.1, CURVE, fitting, 10_000) is None      # never: 1.0 at 4 steps


def test_codebooks_steps_fitting_shrinks_to_the_network_steps():
    small = fs.codebooks_steps_fitting(1_000, DIM, 4, 100_000, limit=16)
    assert 4 < small <= 16        # 100 kB of network buys about ten codebook steps at n=1,000
    assert fs.codebooks_steps_fitting(1_000, DIM, 4, 100_000, limit=6) == 6
    assert fs.codebooks_steps_fitting(10 ** 9, DIM, 4, 100_000, limit=16) == 4
    sizes = [1_000, 3_000, 10_000, 100_000, 10 ** 6]
    steps = [fs.codebooks_steps_fitting(n, DIM, 4, 100_000, limit=16) for n in sizes]
    assert steps == sorted(steps, reverse=True)


def test_crossover_cells_say_below_and_never():
    assert fs.measured_text([1_000, 3_000], 1_000).startswith("below the smallest size measured")
    assert fs.measured_text([1_000, 3_000], 3_000) == "3,000"
    assert fs.measured_text([1_000, 3_000], None) == "not at 1,000, 3,000"
    assert fs.computed_text(None, 3_000, 1.2, 1.0, 4).startswith("never at this budget")
    assert fs.computed_text(50_000, 3_000, 0.9, 1.0, 4) == "about 50,000 (computed beyond 3,000)"
    assert fs.computed_text(None, 3_000, None, None, 4).startswith("no network measured")


def test_subsets_and_curve_rows_are_seeded_and_disjoint():
    a, b = fs.subset_rows(10_000, 1_000, 0), fs.subset_rows(10_000, 1_000, 0)
    assert np.array_equal(a, b) and len(np.unique(a)) == 1_000
    assert np.array_equal(fs.subset_rows(500, 500, 3), np.arange(500))
    rows = fs.curve_rows(10_000, 3_000, 2_000, 0)
    chosen = fs.subset_rows(10_000, 3_000, 0)
    assert len(rows["train"]) == 2_000 and np.isin(rows["train"], chosen).all()
    assert len(rows["collection"]) == fs.HELD_OUT_ROWS and np.isin(rows["collection"], chosen).all()
    assert len(rows["held_out"]) == fs.HELD_OUT_ROWS and not np.isin(rows["held_out"], rows["train"]).any()
    assert fs.curve_rows(3_000, 3_000, 100_000, 0)["held_out"] is None    # no other rows


# ---------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    rng = np.random.default_rng(0)
    mix = rng.normal(size=(DIM, DIM)) / np.sqrt(DIM) * np.linspace(0.3, 2.0, DIM)
    path = tmp_path_factory.mktemp("filesize") / "tiny.npy"
    np.save(path, (rng.normal(size=(3000, DIM)) @ mix).astype(np.float32))
    return path


@pytest.fixture(scope="module")
def run(collection, tmp_path_factory):
    out = tmp_path_factory.mktemp("filesize-out")
    result = invoke("--data", collection, "--name", "tiny", "--sizes", "1000", "3000", "--bytes", 4,
                    "--max-minutes", 0.05, "--threads", 1, "--out", out, "-q")
    return result, out


def test_run_writes_json_and_markdown_with_a_verdict_per_row(run):
    result, out = run
    assert result.exit_code == 0, (result.stderr, result.exception)
    assert result.stderr == ""
    data = json.loads((out / "filesize.json").read_text())
    assert data["complete"] and data["settings"]["sizes"] == [1000, 3000]
    assert data["settings"]["data"] == "tiny" and data["settings"]["collection_rows"] == 3000
    assert {"qinco_codec", "faiss", "torch"} <= set(data["environment"])
    assert data["commands"][0].startswith("qinco-bench filesize --data ")
    for row, n in zip(data["rows"], (1000, 3000)):
        assert row["n"] == n and row["steps"] == 4
        assert row["verdict"] in ("yes", "no")
        assert row["faiss_m"] == fs.largest_faiss_m(n, DIM, row["file_size"]) >= 1
        assert fs.faiss_file_bytes(n, DIM, row["faiss_m"]) <= row["file_size"]
        assert row["file_bpv"] == pytest.approx(row["file_size"] / n)
        assert row["mse"] > 0 and row["faiss_mse"] > 0 and row["faiss_rate_mse"] > 0
        assert (row["verdict"] == "yes") == (row["mse"] <= row["faiss_mse"])
        assert row["model_kind"] in ("network", "codebooks-only")
        assert row["compress_s"] > 0
    (cross,) = data["crossover"]
    assert cross["data"] == "tiny" and cross["measured"] and cross["computed"]
    text = (out / "filesize.md").read_text()
    assert "ours <= RQ" in text and "Crossover" in text and "qinco-bench filesize --data" in text
    assert "ours <= RQ" in result.stdout and "network wins from" in result.stdout


def test_help_has_examples():
    result = invoke("--help")
    assert result.exit_code == 0 and result.stdout.startswith("Usage: qinco-bench filesize")
    assert "qinco-bench filesize --dataset glove50" in result.stdout.split("Examples:")[1]


# ---------------------------------------------------------------- refusals


def test_refuses_a_size_larger_than_the_collection(collection, tmp_path):
    line = one_line_error(invoke("--data", collection, "--sizes", 1000, 5000, "--out", tmp_path), 1)
    assert "5,000 is larger than the collection (3,000 rows)" in line


def test_refuses_a_size_below_256(collection, tmp_path):
    line = one_line_error(invoke("--data", collection, "--sizes", 100, "--out", tmp_path), 1)
    assert "below 256" in line


def test_refuses_an_unknown_dataset(tmp_path):
    line = one_line_error(invoke("--dataset", "sift1m", "--out", tmp_path), 2)
    assert "sift1m" in line


def test_refuses_a_missing_file(tmp_path):
    line = one_line_error(invoke("--data", tmp_path / "nope.npy", "--out", tmp_path), 1)
    assert "no such file" in line


def test_refuses_both_or_neither_source(collection, tmp_path):
    one_line_error(invoke("--out", tmp_path), 2)
    one_line_error(invoke("--dataset", "glove50", "--data", collection, "--out", tmp_path), 2)


def test_the_stored_codebooks_file_bounds_the_curve_at_its_steps():
    curve = {16: 0.594, 17: 0.495, 18: 0.414}
    rows = [{"n": 10_000, "model_kind": "codebooks-only", "steps": 16, "mse": 0.21},
            {"n": 100_000, "model_kind": "codebooks-only", "steps": 16, "mse": 0.537}]
    entry = {}
    fs.apply_stored_codebooks(entry, curve, rows, 16)
    assert curve[16] == 0.537 and entry["curve_prefix_at_steps"] == 0.594
    assert entry["curve_at_steps_from_file"]["n"] == 100_000
    # the network at 0.583 then never beats codebooks only, even where they keep only 16 steps
    assert fs.crossover_beyond(0.583, curve, lambda n: 16, 100_000) is None
    network_rows = [{"n": 100_000, "model_kind": "network", "steps": 16, "mse": 0.4}]
    untouched = dict(curve)
    fs.apply_stored_codebooks({}, untouched, network_rows, 16)
    assert untouched == curve
