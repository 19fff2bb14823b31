"""The Python container API on real GloVe vectors: compress, open, decode at prefix rates (in
steps: codes per vector), read only the planes needed, stream in bounded memory, resolve external
models and check that they fit, describe a file's contents and sizes."""
import io
import json
import os

import numpy as np
import pytest

import qinco_codec
from qinco_codec.errors import InputError, ModelMismatchError
from qinco_codec.readers import iter_npy_stream


@pytest.fixture(scope="module")
def model16(glove_train):
    model = qinco_codec.train(glove_train[:8000], preset="qinco2-XS", steps=16, epochs=1, samples_per_epoch=2048,
                              val=500, quiet=True)
    model.config = model.config.replace(B=1)  # greedy encoding keeps the suite fast; beam search is tested in test_model
    return model


@pytest.fixture(scope="module")
def qnc16(tmp_path_factory, model16, glove_base):
    path = tmp_path_factory.mktemp("qnc") / "base.qnc"
    summary = qinco_codec.compress(glove_base, path, model16, chunk_rows=1000, quiet=True,
                                   metadata={"source": "glove50 base"})
    return path, summary


def _mse(a, b):
    return float(((a - b) ** 2).sum(1).mean())


def test_decoded_prefix_equals_model_prefix(qnc16, model16, glove_base):
    path, _ = qnc16
    codes = model16.encode(glove_base)
    with qinco_codec.open(path) as f:
        assert (f.n, f.dim, f.bytes_per_vector) == (len(glove_base), 50, 16)
        assert f.metadata == {"source": "glove50 base"}
        np.testing.assert_array_equal(f.codes(), codes)
        for steps in (4, 8, 16):
            dec = f.decode(steps=steps)
            np.testing.assert_array_equal(dec, model16.decode(codes, steps=steps))
            assert _mse(dec, glove_base) == pytest.approx(_mse(model16.decode(codes, steps=steps), glove_base))


def test_file_size_is_codes_plus_model_plus_small_overhead(qnc16, model16, glove_base):
    path, summary = qnc16
    expected = len(glove_base) * 16 + summary["model_bytes"]
    size = os.path.getsize(path)
    assert summary["file_size"] == size
    assert expected <= size + 1 and size <= expected * 1.01


def test_half_rate_reads_about_half_the_code_bytes(qnc16):
    path, _ = qnc16
    reads = {}
    for steps in (8, 16):
        with qinco_codec.open(path) as f:
            before = f.bytes_read
            f.codes(steps=steps)
            reads[steps] = f.bytes_read - before
    assert reads[8] <= 0.55 * reads[16], reads


def test_rows_read_only_their_chunks(qnc16, model16, glove_base):
    path, _ = qnc16
    with qinco_codec.open(path) as f:
        f.model  # loads the embedded model (read once), not counted below
        before = f.bytes_read
        part = f.decode(steps=8, rows=slice(1500, 1600))
        used = f.bytes_read - before
        np.testing.assert_allclose(part, f.decode(steps=8)[1500:1600], rtol=1e-5, atol=1e-6)
        picked = f.decode(rows=np.array([4999, 0, 2500]))
        np.testing.assert_allclose(picked, f.decode()[[4999, 0, 2500]], rtol=1e-5, atol=1e-6)
    assert used < 8 * 1000 * 1.2  # one chunk of 1000 rows at 8 bytes, plus its header


def test_iter_decode_streams_in_order(qnc16):
    path, _ = qnc16
    with qinco_codec.open(path) as f:
        full = f.decode(steps=8)
        batches = list(f.iter_decode(steps=8, batch_size=1700))
    assert [len(b) for b in batches] == [1700, 1700, 1600]
    np.testing.assert_array_equal(np.concatenate(batches), full)


def test_open_works_on_a_file_object(qnc16):
    path, _ = qnc16
    with open(path, "rb") as fh, qinco_codec.open(fh) as f:
        assert f.decode(steps=4).shape == (f.n, 50)


@pytest.mark.parametrize("steps,msg", [(3.5, "positive integer"), (17, "exceeds the file's rate"),
                                       (0, "positive integer"), (True, "positive integer")])
@pytest.mark.parametrize("call", ["codes", "decode", "iter_decode"])
def test_bad_rates_are_clear_errors(qnc16, steps, msg, call):
    path, _ = qnc16
    with qinco_codec.open(path) as f, pytest.raises(InputError, match=msg):
        getattr(f, call)(steps=steps)  # iter_decode checks when called, not at the first batch


def test_bytes_keyword_is_a_deprecated_alias_of_steps(tmp_path, qnc16, model16, glove_base):
    path, _ = qnc16
    with qinco_codec.open(path) as f:
        for call in ("codes", "decode"):
            with pytest.warns(DeprecationWarning, match="steps="):
                old = getattr(f, call)(bytes=4)
            np.testing.assert_array_equal(old, getattr(f, call)(steps=4))
        with pytest.warns(DeprecationWarning):
            np.testing.assert_array_equal(np.concatenate(list(f.iter_decode(bytes=4))), f.decode(steps=4))
        with pytest.raises(InputError, match="not both"):
            f.decode(steps=4, bytes=4)
    with pytest.warns(DeprecationWarning):
        summary = qinco_codec.compress(glove_base[:300], tmp_path / "b.qnc", model16, bytes=4, quiet=True)
    assert summary["steps"] == 4 and summary["bytes_per_vector"] == 4


def test_external_model_from_path_store_and_mismatch(tmp_path, monkeypatch, model16, glove_base):
    monkeypatch.setenv("QINCO_MODEL_DIR", str(tmp_path / "store"))
    path = tmp_path / "ext.qnc"
    summary = qinco_codec.compress(glove_base[:500], path, model16, steps=8, embed_model=False, quiet=True)
    assert os.path.getsize(path) < 500 * 8 + 4096
    with qinco_codec.open(path) as f:  # found in the store
        assert f.bytes_per_vector == 8 and not f.header.has_embedded_model
        ref = f.decode()
    assert os.path.exists(tmp_path / "store" / f"{summary['model_sha256']}.safetensors")
    model_file = tmp_path / "m.safetensors"
    model16.save(model_file)
    monkeypatch.setenv("QINCO_MODEL_DIR", str(tmp_path / "empty"))
    with qinco_codec.open(path, model=model_file) as f:
        np.testing.assert_array_equal(f.decode(), ref)
    with qinco_codec.open(path) as f, pytest.raises(InputError, match="model store"):
        f.decode()
    other = qinco_codec.QincoModel.from_preset("qinco2-XS", 50, 16)
    other_file = tmp_path / "other.safetensors"
    other_sha = other.save(other_file)
    with qinco_codec.open(path, model=other_file) as f, pytest.raises(ModelMismatchError) as err:
        f.decode()
    assert summary["model_sha256"] in str(err.value) and other_sha in str(err.value)


def test_compress_from_memmapped_npy_and_stdin_stream(tmp_path, model16, glove_base):
    x = glove_base[:700]
    npy = tmp_path / "x.npy"
    np.save(npy, x)
    a, b = tmp_path / "a.qnc", tmp_path / "b.qnc"
    qinco_codec.compress(str(npy), a, model16, steps=4, quiet=True, batch_size=256)
    buf = io.BytesIO(npy.read_bytes())
    qinco_codec.compress(iter_npy_stream(buf, batch_size=100), b, model16, steps=4, quiet=True)
    assert a.read_bytes() == b.read_bytes()  # same input, model and options: same bytes
    with qinco_codec.open(a) as f:
        np.testing.assert_array_equal(f.codes(), model16.encode(x)[:, :4])


def test_compress_trains_a_model_when_none_is_given(tmp_path, glove_base):
    path = tmp_path / "auto.qnc"
    summary = qinco_codec.compress(glove_base, path, steps=4, max_minutes=0.05, quiet=True,
                                   train_size=1000, B=1, model_choice="network")
    with qinco_codec.open(path) as f:
        assert f.header.has_embedded_model and f.bytes_per_vector == 4 and f.model.M == 4
        assert f.model.config.trained["epochs"] >= 1
        assert summary["model_sha256"] == f.model_sha256


def test_empty_input_round_trips(tmp_path, model16):
    path = tmp_path / "empty.qnc"
    qinco_codec.compress(np.zeros((0, 50), np.float32), path, model16, quiet=True)
    with qinco_codec.open(path) as f:
        assert f.n == 0 and f.decode().shape == (0, 50)
        assert list(f.iter_decode()) == []


def test_nan_input_is_refused_and_leaves_no_file(tmp_path, model16, glove_base):
    x = glove_base[:300].copy()
    x[123, 4] = np.nan
    path = tmp_path / "bad.qnc"
    with pytest.raises(InputError, match="non-finite"):
        qinco_codec.compress(x, path, model16, quiet=True)
    assert os.listdir(tmp_path) == []


def test_wrong_dimension_is_refused(tmp_path, model16):
    with pytest.raises(InputError, match="dimension 49"):
        qinco_codec.compress(np.zeros((5, 49), np.float32), tmp_path / "x.qnc", model16, quiet=True)


def test_reading_codes_does_not_import_torch(qnc16):
    import subprocess
    import sys
    path, _ = qnc16
    code = (f"import sys, qinco_codec; f = qinco_codec.open({str(path)!r}); c = f.codes(steps=4); "
            "print(c.shape, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "(5000, 4) False"


def test_float16_weights_keep_decoding_quality(tmp_path, model16, glove_base):
    x = glove_base[:2000]
    errs, sizes = {}, {}
    for dtype in ("float32", "float16"):
        path = tmp_path / f"{dtype}.qnc"
        summary = qinco_codec.compress(x, path, model16, weight_dtype=dtype, quiet=True)
        with qinco_codec.open(path) as f:
            errs[dtype] = _mse(f.decode(), x)
        sizes[dtype] = summary["model_bytes"]
    assert abs(errs["float16"] / errs["float32"] - 1) < 1e-3, errs
    assert sizes["float16"] < 0.6 * sizes["float32"]


ITER_DECODE_RSS = """
import resource, sys, numpy as np, qinco_codec
with qinco_codec.open(sys.argv[1]) as f:
    f.model
    f.decode(rows=slice(0, 65536))  # warm up allocators and kernels on one batch
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    n = 0
    for batch in f.iter_decode(batch_size=65536):
        n += len(batch)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(n, (after - before) // 1024)
"""


def test_iter_decode_of_a_million_vectors_has_a_memory_ceiling(tmp_path, rq_model):
    """1M x 50 float32 decoded = 200 MB in all; streaming must stay far below that."""
    import subprocess
    import sys

    from qinco_codec.formats import QncWriter
    from qinco_codec.serialize import model_to_bytes, sha256_hex

    n, data = 1_000_000, model_to_bytes(rq_model)
    path = tmp_path / "million.qnc"
    rng = np.random.default_rng(0)
    with QncWriter(path, n=n, dim=50, source_dtype="float32", K=256, M=2, model_sha256=bytes.fromhex(sha256_hex(data)),
                   model_config={"preset": "qinco2-XS"}, model_bytes=data, chunk_rows=65536) as w:
        for s in range(0, n, 100_000):
            w.write_codes(rng.integers(0, 256, (100_000, 2), dtype=np.uint8))
    out = subprocess.run([sys.executable, "-c", ITER_DECODE_RSS, str(path)], capture_output=True, text=True,
                         check=True)
    count, growth_mb = map(int, out.stdout.split())
    assert count == n
    assert growth_mb < 100, f"peak RSS grew by {growth_mb} MB while streaming 1M vectors (200 MB decoded)"


# ---------------------------------------------------------------- describe()
def test_describe_reports_contents_sizes_and_ratios(qnc16, model16, glove_base):
    path, summary = qnc16
    n, size = len(glove_base), os.path.getsize(path)
    with qinco_codec.open(path) as f:
        before = f.bytes_read
        d = f.describe()
        read = f.bytes_read - before
    assert read < 0.1 * n * 16  # chunk headers only, not the codes
    assert (d["n"], d["dim"], d["K"], d["M"], d["bytes_per_code"], d["bytes_per_vector"]) == (n, 50, 256, 16, 1, 16)
    assert d["source_dtype"] == "float32" and d["chunks"] == 5 and d["path"] == str(path)
    assert d["file_size"] == size and d["model_embedded"] is True and d["model_in_store"] is None
    assert d["model_bytes"] == summary["model_bytes"] and d["model_sha256"] == summary["model_sha256"]
    assert [p["raw_bytes"] for p in d["planes"]] == [n] * 16
    assert d["codes_raw_bytes"] == n * 16 and 0 < d["codes_stored_bytes"] <= n * 16
    assert [r["bytes_per_vector"] for r in d["rates"]] == list(range(1, 17))
    assert d["rates"][-1]["stored_bytes_per_vector"] == pytest.approx(d["codes_stored_bytes"] / n)
    assert d["float32_bytes"] == d["source_bytes"] == n * 50 * 4
    assert d["ratio_with_model"] == pytest.approx(n * 200 / size)
    assert d["ratio_without_model"] == pytest.approx(n * 200 / (size - summary["model_bytes"]))
    assert d["source_ratio_with_model"] == d["ratio_with_model"]
    assert d["model_share_of_file"] == pytest.approx(summary["model_bytes"] / size)
    assert d["model_config"]["M"] == 16 and d["model_config"]["preset"] == "qinco2-XS"
    assert d["metadata"] == {"source": "glove50 base"} and "verified" not in d
    json.dumps(d)  # plain JSON-ready values
    with qinco_codec.open(path) as f:
        assert f.describe(verify=True)["verified"] is True


def test_describe_of_an_external_model_and_a_float16_source(tmp_path, monkeypatch, model16, glove_base):
    monkeypatch.setenv("QINCO_MODEL_DIR", str(tmp_path / "store"))
    x = glove_base[:1000].astype(np.float16)
    path = tmp_path / "ext.qnc"
    summary = qinco_codec.compress(x, path, model16, steps=8, embed_model=False, quiet=True)
    size = os.path.getsize(path)
    with qinco_codec.open(path) as f:
        d = f.describe()
    assert d["model_embedded"] is False and d["model_share_of_file"] == 0.0
    assert d["model_in_store"] == str(tmp_path / "store" / f"{summary['model_sha256']}.safetensors")
    assert d["model_bytes"] == summary["model_bytes"] and d["bytes_with_model"] == size + d["model_bytes"]
    assert d["source_dtype"] == "float16" and d["source_bytes"] == 1000 * 50 * 2
    assert d["source_ratio_without_model"] == pytest.approx(d["ratio_without_model"] / 2)
    assert d["ratio_without_model"] == pytest.approx(1000 * 200 / size)
    model_file = tmp_path / "m.safetensors"
    model16.save(model_file)
    monkeypatch.setenv("QINCO_MODEL_DIR", str(tmp_path / "empty"))
    with qinco_codec.open(path) as f:  # no model anywhere: its size is unknown
        d = f.describe()
    assert d["model_bytes"] is None and d["bytes_with_model"] is None and d["ratio_with_model"] is None
    with qinco_codec.open(path, model=model_file) as f:  # the given model file counts
        assert f.describe()["model_bytes"] == os.path.getsize(model_file)
    with open(path, "rb") as fh, qinco_codec.open(fh) as f:  # a file object: the same sizes
        assert f.describe()["file_size"] == size


# ---------------------------------------------------------------- rates, raw planes, empty ranges
def test_zstd_level_0_stores_raw_planes(tmp_path, model16, glove_base):
    x = np.repeat(glove_base[:3], 200, axis=0)  # repetitive codes, which zstd does shrink
    raw, packed = tmp_path / "raw.qnc", tmp_path / "zstd.qnc"
    qinco_codec.compress(x, raw, model16, steps=4, zstd_level=0, chunk_rows=200, quiet=True)
    qinco_codec.compress(x, packed, model16, steps=4, chunk_rows=200, quiet=True)
    with qinco_codec.open(raw) as f, qinco_codec.open(packed) as g:
        assert not any(z for chunk in f.plane_sizes() for _, _, z in chunk)
        assert all(stored == raw_len for chunk in f.plane_sizes() for stored, raw_len, _ in chunk)
        assert all(z for chunk in g.plane_sizes() for _, _, z in chunk)
        np.testing.assert_array_equal(f.codes(), g.codes())
    with pytest.raises(InputError, match="zstd_level"):
        qinco_codec.compress(x, tmp_path / "bad.qnc", model16, zstd_level=23, quiet=True)


def test_empty_row_ranges_read_no_chunk(tmp_path, monkeypatch, model16, glove_base):
    """A file whose one chunk is corrupt: empty selections still return (0, ...) arrays, because
    they read nothing; a real selection hits the corruption."""
    from qinco_codec.errors import QncFormatError

    monkeypatch.setenv("QINCO_MODEL_DIR", str(tmp_path / "store"))
    good = tmp_path / "good.qnc"
    qinco_codec.compress(glove_base[:400], good, model16, steps=4, embed_model=False, zstd_level=0,
                         quiet=True)
    data = bytearray(good.read_bytes())
    data[len(data) // 2] ^= 0xFF  # the codes are most of a file without its model
    bad = tmp_path / "bad.qnc"
    bad.write_bytes(data)
    with qinco_codec.open(bad) as f:
        with pytest.raises(QncFormatError):
            f.codes(rows=slice(0, 10))
    for rows in (slice(5, 5), slice(400, 410), slice(300, 100), np.array([], np.int64)):
        with qinco_codec.open(bad) as f:
            before = f.bytes_read
            assert f.codes(rows=rows).shape == (0, 4) and f.codes(rows=rows).dtype == np.uint8
            assert f.codes(steps=2, rows=rows).shape == (0, 2)
            assert f.bytes_read == before
            out = f.decode(rows=rows)
            assert out.shape == (0, 50) and out.dtype == np.float32


# ---------------------------------------------------------------- model fit rule
def _file_for(tmp_path, name, model, dim, K, M, embed=True):
    """A hand-written .qnc whose header says (dim, K, M), naming (and embedding) `model`."""
    from qinco_codec.formats import QncWriter
    from qinco_codec.serialize import model_to_bytes, sha256_hex

    data = model_to_bytes(model)
    path = tmp_path / name
    with QncWriter(path, n=3, dim=dim, source_dtype="float32", K=K, M=M,
                   model_sha256=bytes.fromhex(sha256_hex(data)), model_config={"M": model.M},
                   model_bytes=data if embed else None) as w:
        w.write_codes(np.zeros((3, M), np.uint16 if K > 256 else np.uint8))
    return path


@pytest.mark.parametrize("dim,K,M,problem", [(49, 256, 4, "dim 50 != 49"), (50, 512, 4, "K 256 != 512"),
                                             (50, 256, 5, "M 4 < 5")])
def test_a_model_must_fit_the_header(tmp_path, dim, K, M, problem):
    model = qinco_codec.QincoModel.from_preset("qinco2-XS", 50, 4)
    path = _file_for(tmp_path, "x.qnc", model, dim, K, M)
    with qinco_codec.open(path) as f:
        np.testing.assert_array_equal(f.codes(), np.zeros((3, M)))  # codes need no model
        for call in (lambda: f.model, f.decode, lambda: list(f.iter_decode())):
            with pytest.raises(ModelMismatchError, match=problem) as err:
                call()
            assert "the embedded model" in str(err.value) and "file's M is at most" in str(err.value)
    external = _file_for(tmp_path, "ext.qnc", model, dim, K, M, embed=False)
    with qinco_codec.open(external, model=model) as f, pytest.raises(ModelMismatchError, match=problem):
        f.decode()


def test_a_prefix_file_decodes_with_its_longer_model(tmp_path):
    model = qinco_codec.QincoModel.from_preset("qinco2-XS", 50, 4)
    path = _file_for(tmp_path, "x.qnc", model, 50, 256, 3)
    with qinco_codec.open(path) as f:
        np.testing.assert_array_equal(f.decode(), model.decode(np.zeros((3, 3), np.uint8)))


# ---------------------------------------------------------------- the caller's model is left alone
def test_a_given_model_is_never_used_itself(tmp_path, monkeypatch, model16, glove_base):
    """compress() and QncFile encode and decode with their own copies of the caller's model, so
    that nothing they do (such as running on another device) can move or change it."""
    from qinco_codec.model import QincoModel

    used = []
    for name in ("encode", "decode"):
        original = getattr(QincoModel, name)

        def recording(self, *args, _original=original, **kwargs):
            used.append(self)
            return _original(self, *args, **kwargs)
        monkeypatch.setattr(QincoModel, name, recording)
    monkeypatch.setenv("QINCO_MODEL_DIR", str(tmp_path / "empty"))
    path = tmp_path / "x.qnc"
    qinco_codec.compress(glove_base[:200], path, model16, steps=4, embed_model=False, quiet=True)
    with qinco_codec.open(path, model=model16) as f:
        decoded = f.decode()
        list(f.iter_decode(batch_size=64))
        assert f.model is not model16
    assert len(used) >= 3 and not any(m is model16 for m in used)
    codes = model16.encode(glove_base[:200])[:, :4]  # the copy decodes exactly as the original
    np.testing.assert_array_equal(decoded, model16.decode(codes))
