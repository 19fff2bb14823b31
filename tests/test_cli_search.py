"""qinco-search end to end: ids and distances in every output format, the Python API's answer,
k larger than the file, the prefix rate, and one-line refusals of bad queries and options."""
import numpy as np
import pytest

import qinco_codec
from qinco_codec.cli import search as search_cli
from qinco_codec.readers import read_ints, read_vectors, write_vectors

from cli_util import cli_runner


def run(*args, code=0):
    result = cli_runner().invoke(search_cli.main, [str(a) for a in args])
    assert result.exit_code == code, (result.exit_code, result.stderr, result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def fails(*args, match):
    """One line `qinco-search: error: ...` on stderr, exit code 1, no traceback."""
    result = run(*args, code=1)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("qinco-search: error: "), result.stderr
    assert match in lines[0], (match, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def files(rq_model, glove_base, tmp_path_factory):
    """A 1,500-row .qnc (RQ-start model, 8 B) and 40 queries as .npy and .fvecs."""
    from qinco_codec import datasets

    d = tmp_path_factory.mktemp("cli_search")
    qnc = d / "base.qnc"
    qinco_codec.compress(glove_base[:1500], qnc, rq_model, quiet=True, report=False)
    q = datasets.glove50("query")[:40]
    np.save(d / "q.npy", q)
    write_vectors(d / "q.fvecs", q)
    return qnc, d / "q.npy", d / "q.fvecs", q


def test_round_trip_matches_the_python_api(files, tmp_path):
    qnc, qnpy, _, q = files
    result = run(qnc, qnpy, "-k", "7", "-o", tmp_path / "ids.npy", "--distances", tmp_path / "d.npy",
                 "--shortlist", "50")
    with qinco_codec.open(qnc) as f:
        D, I = f.search(q, 7, shortlist=50)
    ids, dist = np.load(tmp_path / "ids.npy"), np.load(tmp_path / "d.npy")
    assert ids.dtype == np.int64 and dist.dtype == np.float32 and ids.shape == (40, 7)
    np.testing.assert_array_equal(ids, I)
    np.testing.assert_array_equal(dist, D)
    summary = result.stderr.strip().splitlines()[-1]
    assert "searched 40 queries" in summary and "queries/s" in summary and "shortlist 50" in summary


def test_ivecs_and_fvecs_outputs_and_fvecs_queries(files, tmp_path):
    qnc, qnpy, qfvecs, _ = files
    run(qnc, qfvecs, "-k", "5", "-o", tmp_path / "ids.ivecs", "--distances", tmp_path / "d.fvecs", "-q")
    run(qnc, qnpy, "-k", "5", "-o", tmp_path / "ref.npy", "--distances", tmp_path / "ref_d.npy", "-q")
    np.testing.assert_array_equal(read_ints(tmp_path / "ids.ivecs"), np.load(tmp_path / "ref.npy"))
    np.testing.assert_array_equal(read_vectors(tmp_path / "d.fvecs"), np.load(tmp_path / "ref_d.npy"))


def test_k_larger_than_the_file_and_prefix_and_ip(files, tmp_path):
    qnc, qnpy, _, q = files
    run(qnc, qnpy, "-k", "1600", "-o", tmp_path / "all.npy", "--distances", tmp_path / "all_d.npy", "-q")
    ids, dist = np.load(tmp_path / "all.npy"), np.load(tmp_path / "all_d.npy")
    assert (ids[:, 1500:] == -1).all() and np.isinf(dist[:, 1500:]).all()
    assert sorted(ids[0, :1500]) == list(range(1500))
    run(qnc, qnpy, "-k", "3", "--bytes", "4", "--metric", "ip", "-o", tmp_path / "p.npy", "-q")
    with qinco_codec.open(qnc) as f:
        _, I = f.search(q, 3, steps=4, metric="ip")
    np.testing.assert_array_equal(np.load(tmp_path / "p.npy"), I)


def test_bad_queries_get_one_line(files, tmp_path):
    qnc, _, _, q = files
    np.save(tmp_path / "wrong_dim.npy", q[:, :20])
    bad = q[:5].copy()
    bad[2, 7] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    np.save(tmp_path / "empty.npy", np.zeros((0, 50), np.float32))
    (tmp_path / "garbage.npy").write_bytes(b"not an npy file at all")
    out = tmp_path / "ids.npy"
    fails(qnc, tmp_path / "wrong_dim.npy", "-o", out, match="dimension 20, expected 50")
    fails(qnc, tmp_path / "nan.npy", "-o", out, match="row 2, column 7")
    fails(qnc, tmp_path / "empty.npy", "-o", out, match="no vectors")
    fails(qnc, tmp_path / "garbage.npy", "-o", out, match="garbage.npy")
    assert not out.exists()


def test_bad_options_get_one_line(files, tmp_path):
    qnc, qnpy, _, _ = files
    fails(qnc, qnpy, "-o", tmp_path / "ids.txt", match="'.txt'")
    fails(qnc, qnpy, "-o", tmp_path / "ids.npy", "--distances", tmp_path / "d.ivecs", match="--distances")
    fails(qnc, qnpy, "-o", tmp_path / "ids.npy", "--nprobe", "4", match="no IVF section")
    fails(qnc, qnpy, "-o", tmp_path / "ids.npy", "--bytes", "9", match="--bytes")
    fails(qnc, qnpy, "-o", qnpy, match="same file")
    (tmp_path / "exists.npy").write_bytes(b"x")
    fails(qnc, qnpy, "-o", tmp_path / "exists.npy", match="--force")
    result = run(qnc, qnpy, "-o", tmp_path / "ids.npy", "-k", "0", code=2)
    assert "qinco-search: error:" in result.stderr
