"""The Python container API on real GloVe vectors: compress, open, decode at prefix rates,
read only the planes needed, stream in bounded memory, resolve external models."""
import io
import os

import numpy as np
import pytest

import qinco_codec
from qinco_codec.errors import InputError, ModelMismatchError
from qinco_codec.readers import iter_npy_stream


@pytest.fixture(scope="module")
def model16(glove_train):
    model = qinco_codec.train(glove_train[:8000], preset="qinco2-XS", M=16, epochs=1, samples_per_epoch=2048,
                              val=500, quiet=True)
    model.config["B"] = 1  # greedy encoding keeps the suite fast; beam search is tested in test_model
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
        for nbytes in (4, 8, 16):
            dec = f.decode(bytes=nbytes)
            np.testing.assert_array_equal(dec, model16.decode(codes, steps=nbytes))
            assert _mse(dec, glove_base) == pytest.approx(_mse(model16.decode(codes, steps=nbytes), glove_base))


def test_file_size_is_codes_plus_model_plus_small_overhead(qnc16, model16, glove_base):
    path, summary = qnc16
    expected = len(glove_base) * 16 + summary["model_bytes"]
    size = os.path.getsize(path)
    assert summary["file_size"] == size
    assert expected <= size + 1 and size <= expected * 1.01


def test_half_rate_reads_about_half_the_code_bytes(qnc16):
    path, _ = qnc16
    reads = {}
    for nbytes in (8, 16):
        with qinco_codec.open(path) as f:
            before = f.bytes_read
            f.codes(bytes=nbytes)
            reads[nbytes] = f.bytes_read - before
    assert reads[8] <= 0.55 * reads[16], reads


def test_rows_read_only_their_chunks(qnc16, model16, glove_base):
    path, _ = qnc16
    with qinco_codec.open(path) as f:
        f.model  # loads the embedded model (read once), not counted below
        before = f.bytes_read
        part = f.decode(bytes=8, rows=slice(1500, 1600))
        used = f.bytes_read - before
        np.testing.assert_allclose(part, f.decode(bytes=8)[1500:1600], rtol=1e-5, atol=1e-6)
        picked = f.decode(rows=np.array([4999, 0, 2500]))
        np.testing.assert_allclose(picked, f.decode()[[4999, 0, 2500]], rtol=1e-5, atol=1e-6)
    assert used < 8 * 1000 * 1.2  # one chunk of 1000 rows at 8 bytes, plus its header


def test_iter_decode_streams_in_order(qnc16):
    path, _ = qnc16
    with qinco_codec.open(path) as f:
        full = f.decode(bytes=8)
        batches = list(f.iter_decode(bytes=8, batch_size=1700))
    assert [len(b) for b in batches] == [1700, 1700, 1600]
    np.testing.assert_array_equal(np.concatenate(batches), full)


def test_open_works_on_a_file_object(qnc16):
    path, _ = qnc16
    with open(path, "rb") as fh, qinco_codec.open(fh) as f:
        assert f.decode(bytes=4).shape == (f.n, 50)


@pytest.mark.parametrize("nbytes,msg", [(3.5, "positive integer"), (17, "exceeds the file's rate"),
                                        (0, "positive integer")])
def test_bad_byte_rates_are_clear_errors(qnc16, nbytes, msg):
    path, _ = qnc16
    with qinco_codec.open(path) as f, pytest.raises(InputError, match=msg):
        f.decode(bytes=nbytes)


def test_external_model_from_path_store_and_mismatch(tmp_path, monkeypatch, model16, glove_base):
    monkeypatch.setenv("QINCO_MODEL_DIR", str(tmp_path / "store"))
    path = tmp_path / "ext.qnc"
    summary = qinco_codec.compress(glove_base[:500], path, model16, bytes=8, embed_model=False, quiet=True)
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
    qinco_codec.compress(str(npy), a, model16, bytes=4, quiet=True, batch_size=256)
    buf = io.BytesIO(npy.read_bytes())
    qinco_codec.compress(iter_npy_stream(buf, batch_size=100), b, model16, bytes=4, quiet=True)
    assert a.read_bytes() == b.read_bytes()  # same input, model and options: same bytes
    with qinco_codec.open(a) as f:
        np.testing.assert_array_equal(f.codes(), model16.encode(x)[:, :4])


def test_compress_trains_a_model_when_none_is_given(tmp_path, glove_base):
    path = tmp_path / "auto.qnc"
    summary = qinco_codec.compress(glove_base, path, bytes=4, max_minutes=0.05, quiet=True,
                                   train_size=1000, B=1)
    with qinco_codec.open(path) as f:
        assert f.header.has_embedded_model and f.bytes_per_vector == 4
        assert f.model.config["trained"]["epochs"] >= 1
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
    code = (f"import sys, qinco_codec; f = qinco_codec.open({str(path)!r}); c = f.codes(bytes=4); "
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
