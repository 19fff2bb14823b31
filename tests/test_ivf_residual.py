"""IVF-QINCo files (SPEC.md 5.4, .qnc 1.3): codes of the residual of each row to its list's
centroid. compress(ivf=..., ivf_residual=True) and qinco-compress --ivf-residual write them;
decoding adds the centroid back (whole, by rows, streamed, and as the spec-only reader says);
search scores centroid plus residual; the section's refusals; the tools that must not drop the
lists of such a file (qinco-index, rewriting, merging)."""
import hashlib
import io

import numpy as np
import pytest

import qinco_codec
import spec_reader  # tests/spec_reader.py: written from SPEC.md alone
from pipe_stream import Pipe
from qinco_codec.errors import InputError, QncFormatError
from qinco_codec.formats import QncReader, QncWriter
from qinco_codec.formats.ivf import IvfSection
from qinco_codec.formats.layout import SECTION_IVF_RESIDUAL, SECTION_FLAG_REQUIRED
from qinco_codec.formats.sections import encode_section

from cli_util import cli_runner

ROWS, NLIST, STEPS = 4000, 64, 4
SHA = hashlib.sha256(b"model").digest()


@pytest.fixture(scope="module")
def vectors(glove_base):
    return np.ascontiguousarray(glove_base[:ROWS])


def _compress(vectors, path, **kw):
    """Codebooks only (the RQ start: fast, deterministic), as rate control picks at this n."""
    return qinco_codec.compress(vectors, path, steps=STEPS, ivf=NLIST, max_minutes=0.2,
                                model_choice="codebooks", quiet=True, **kw)


@pytest.fixture(scope="module")
def files(vectors, tmp_path_factory):
    d = tmp_path_factory.mktemp("residual")
    plain, residual = d / "plain.qnc", d / "residual.qnc"
    summaries = (_compress(vectors, plain, ivf_residual=False),
                 _compress(vectors, residual, ivf_residual=True))
    return plain, residual, summaries


def test_residual_codes_decode_to_centroid_plus_residual_with_lower_error(vectors, files):
    """The list's centroid carries bits the codes do not pay for: at the same code rate the
    residual file reconstructs GloVe with clearly lower error than the plain one (IVF-RQ
    against RQ), and its quality report measures the vectors, not the residuals."""
    plain, residual, (s_plain, s_res) = files
    with qinco_codec.open(plain) as f:
        mse_plain = float(((f.decode() - vectors) ** 2).sum(1).mean())
    with qinco_codec.open(residual) as f:
        assert f.header.version == (1, 3) and f.residual_codes
        decoded = f.decode()
        ivf = QncReader(residual).ivf()
        np.testing.assert_array_equal(decoded, f.model.decode(f.codes()) + ivf.centroids[ivf.list_ids])
        mse_res = float(((decoded - vectors) ** 2).sum(1).mean())
    assert mse_res < 0.9 * mse_plain, (mse_res, mse_plain)
    assert s_res["ivf"]["residual_codes"] and not s_plain["ivf"]["residual_codes"]
    full = s_res["quality_report"]["rates"][-1]
    assert full["steps"] == STEPS
    assert abs(full["mse"] - mse_res) < 0.15 * mse_res        # a sample of the same error
    assert full["cosine"] > 0.8                               # of the vectors (residuals: ~0.6)


def test_every_way_of_decoding_agrees(files):
    _, residual, _ = files
    with qinco_codec.open(residual) as f:
        whole = f.decode()
        streamed = np.concatenate(list(f.iter_decode(batch_size=777)))
        np.testing.assert_array_equal(streamed, whole)
        rows = np.array([3999, 0, 17, 17, 2048])
        np.testing.assert_array_equal(f.decode(rows=rows), whole[rows])
        np.testing.assert_array_equal(f.decode(rows=slice(100, 300)), whole[100:300])
        prefix = f.decode(steps=2)
        ivf = QncReader(residual).ivf()
        np.testing.assert_array_equal(
            prefix, f.model.decode(f.codes(steps=2)) + ivf.centroids[ivf.list_ids])
    data = residual.read_bytes()
    spec = spec_reader.spec_open(data)
    np.testing.assert_array_equal(spec_reader.spec_codes(spec), qinco_codec.open(residual).codes())
    with qinco_codec.open(residual) as f:
        np.testing.assert_array_equal(f.model.decode(f.codes()) + spec_reader.spec_vector_offsets(spec),
                                      whole)
    with qinco_codec.open(Pipe(data)) as f:   # front to back: the ivf payload kept from the sections
        assert not f._reader.seekable
        np.testing.assert_array_equal(np.concatenate(list(f.iter_decode(batch_size=1000))), whole)


def test_search_of_a_residual_file_is_brute_force_at_full_shortlist(vectors, files):
    _, residual, _ = files
    q = vectors[::97][:30] + 0.05
    with qinco_codec.open(residual) as f:
        decoded = f.decode()
        D, I = f.search(q, 5, shortlist=ROWS, nprobe=NLIST)
        _, I_short = f.search(q, 5, shortlist=50, nprobe=NLIST)
    d2 = ((q[:, None, :].astype(np.float64) - decoded[None]) ** 2).sum(-1)
    truth = np.argsort(d2, 1, kind="stable")[:, :5]
    np.testing.assert_array_equal(I, truth)
    np.testing.assert_allclose(D, np.take_along_axis(d2, truth, 1), rtol=1e-4, atol=1e-3)
    assert np.mean([len(set(a) & set(b)) / 5 for a, b in zip(I_short, truth)]) >= 0.9


def test_qinco_info_says_the_codes_are_residuals(files):
    from qinco_codec.cli.info import main as info_main

    result = cli_runner().invoke(info_main, [str(files[1])])
    assert result.exit_code == 0, result.output
    assert "codes are residuals to the list centroids (IVF-QINCo)" in result.output
    assert "residuals" not in cli_runner().invoke(info_main, [str(files[0])]).output


def test_tools_refuse_to_replace_or_drop_the_lists(files, tmp_path):
    from qinco_codec.ivf_file import rewrite_with_ivf

    _, residual, _ = files
    before = residual.read_bytes()
    with pytest.raises(InputError, match="codes are residuals to its inverted lists"):
        qinco_codec.add_ivf(residual, 8, out=tmp_path / "x.qnc")
    with pytest.raises(InputError, match="cannot be replaced or removed without re-encoding"):
        rewrite_with_ivf(residual, tmp_path / "y.qnc", None)
    assert residual.read_bytes() == before and not list(tmp_path.iterdir())


def test_merging_keeps_residual_codes_only_over_the_same_lists(files, tmp_path):
    plain, residual, _ = files
    out = tmp_path / "m.qnc"
    qinco_codec.merge([residual, residual], out)
    with qinco_codec.open(out) as m, qinco_codec.open(residual) as r:
        assert m.residual_codes and m.n == 2 * r.n
        np.testing.assert_array_equal(m.decode(), np.concatenate([r.decode()] * 2))
    a, b = _write(tmp_path / "a.qnc"), _write(tmp_path / "b.qnc", ivf_residual=False)
    with pytest.raises(InputError, match="are residuals to its inverted lists .* and those of"):
        qinco_codec.merge([tmp_path / "a.qnc", tmp_path / "b.qnc"], tmp_path / "n.qnc")
    other = IvfSection(np.zeros((3, 4), np.float32), np.arange(10, dtype=np.uint16) % 3)
    _write(tmp_path / "c.qnc", ivf=other)
    with pytest.raises(InputError, match="which do not merge .*other centroids"):
        qinco_codec.merge([tmp_path / "a.qnc", tmp_path / "c.qnc"], tmp_path / "n.qnc")
    assert not (tmp_path / "n.qnc").exists()


@pytest.mark.parametrize("kw,message", [
    (dict(ivf=None), "ivf_residual needs ivf=NLIST"),
    (dict(unit_norm=True), "residuals to the centroids are not unit norm"),
])
def test_compress_refusals(vectors, tmp_path, kw, message):
    args = dict(steps=2, ivf=8, ivf_residual=True, quiet=True, max_minutes=0.1)
    args.update(kw)
    with pytest.raises(InputError, match=message):
        qinco_codec.compress(vectors[:500], tmp_path / "r.qnc", **args)
    assert not list(tmp_path.iterdir())


def test_compress_refuses_a_given_model(vectors, tmp_path, rq_model):
    with pytest.raises(InputError, match="only for a model compress trains itself"):
        qinco_codec.compress(vectors[:500], tmp_path / "r.qnc", rq_model, ivf=8,
                             ivf_residual=True, quiet=True)


def test_cli_writes_a_residual_file_and_refuses_without_ivf(vectors, tmp_path):
    from qinco_codec.cli.compress import main as compress_main

    np.save(tmp_path / "x.npy", vectors[:1500])
    runner = cli_runner()
    for flag in ("--ivf-residual", "--ivf-filter"):
        bad = runner.invoke(compress_main, [str(tmp_path / "x.npy"), str(tmp_path / "a.qnc"), flag])
        assert bad.exit_code == 2 and f"{flag} needs --ivf NLIST" in bad.output
    res = runner.invoke(compress_main, [str(tmp_path / "x.npy"), str(tmp_path / "r.qnc"),
                                        "--bytes", "2", "--ivf", "16", "--ivf-residual",
                                        "--model-choice", "codebooks", "--max-minutes", "0.1"])
    assert res.exit_code == 0, res.output
    assert "codes are residuals to the list centroids" in res.output
    with qinco_codec.open(tmp_path / "r.qnc") as f:
        assert f.residual_codes and f.header.version == (1, 3)
    common = [str(tmp_path / "x.npy"), "--bytes", "2", "--ivf", "16", "--model-choice", "codebooks",
              "--max-minutes", "0.1", "--quiet"]
    for flag, residual, version in (([], True, (1, 3)), (["--ivf-filter"], False, (1, 2))):
        out = tmp_path / f"d{len(flag)}.qnc"   # the default for a model trained here: residual
        res = runner.invoke(compress_main, [common[0], str(out), *common[1:], *flag])
        assert res.exit_code == 0, res.output
        with qinco_codec.open(out) as f:
            assert f.residual_codes == residual and f.header.version == version


def test_compress_defaults_to_residual_codes_only_for_a_model_it_trains(vectors, tmp_path, rq_model):
    """ivf_residual=None: residual for a self-trained model, plain lists for a given one and for
    a unit-norm model (whose rows must be unit norm, which residuals are not)."""
    unit = vectors[:800] / np.linalg.norm(vectors[:800], axis=1, keepdims=True)
    cases = [(dict(x=vectors[:800], model=None), True), (dict(x=vectors[:800], model=rq_model), False),
             (dict(x=unit, model=None, unit_norm=True), False)]
    for i, (kw, residual) in enumerate(cases):
        x, model = kw.pop("x"), kw.pop("model")
        s = qinco_codec.compress(x, tmp_path / f"{i}.qnc", model, ivf=8, quiet=True,
                                 max_minutes=0.1, model_choice="codebooks" if model is None else "auto",
                                 **({"steps": 2} if model is None else {}), **kw)
        assert s["ivf"]["residual_codes"] == residual, kw


# -- the section's refusals (reader) --------------------------------------------------------------

def _write(path, **kw):
    ivf = IvfSection(np.ones((3, 4), np.float32), np.arange(10, dtype=np.uint16) % 3)
    args = dict(n=10, dim=4, source_dtype="float32", K=16, M=2, model_sha256=SHA,
                model_config={"K": 16}, ivf=ivf, ivf_residual=True, zstd_level=None)
    args.update(kw)
    with QncWriter(path, **args) as w:
        w.write_codes(np.zeros((10, 2), np.uint8))
    return path.read_bytes()


def _replace_section(data, section_type, new_section):
    """`data` with the section of `section_type` replaced by the bytes `new_section`, the fixed
    header's sections_length and CRC and the index's chunk offsets mended (as a forger would)."""
    parts = spec_reader.to_parts(data)
    for i, s in enumerate(parts.sections):
        if s.type == section_type:
            if new_section is None:
                del parts.sections[i]
            else:
                typ, flags, payload = new_section
                parts.sections[i] = spec_reader.Section(typ, flags, payload)
            break
    return bytes(spec_reader.emit(parts).buf)


@pytest.mark.parametrize("change,message,spec_message", [
    ((SECTION_IVF_RESIDUAL, 0, bytes(8)), "has flags 0x0; this section type requires flags 0x1",
     "must have flags 1"),
    ((SECTION_IVF_RESIDUAL, 1, bytes(4)), "4 bytes, expected exactly 8", "payload of 4 bytes"),
    ((SECTION_IVF_RESIDUAL, 1, (2).to_bytes(4, "little") + bytes(4)), "unknown offset_kind 2",
     "unknown offset_kind 2"),
])
def test_a_bad_ivf_residual_section_is_refused(tmp_path, change, message, spec_message):
    data = _replace_section(_write(tmp_path / "a.qnc"), SECTION_IVF_RESIDUAL, change)
    with pytest.raises(QncFormatError, match=message):
        QncReader(io.BytesIO(data))
    with pytest.raises(spec_reader.SpecFormatError, match=spec_message):
        spec_reader.spec_open(data)


def test_an_ivf_residual_section_without_lists_is_refused(tmp_path):
    from qinco_codec.formats.layout import SECTION_IVF

    data = _replace_section(_write(tmp_path / "a.qnc"), SECTION_IVF, None)
    with pytest.raises(QncFormatError, match="but the file has no ivf section"):
        QncReader(io.BytesIO(data))
    with pytest.raises(spec_reader.SpecFormatError, match="ivf_residual without an ivf section"):
        spec_reader.spec_open(data)
    with pytest.raises(InputError, match="ivf_residual=True needs ivf"):
        _write(tmp_path / "b.qnc", ivf=None)


def test_writer_marks_the_section_required_and_the_file_1_3(tmp_path):
    data = _write(tmp_path / "a.qnc")
    f = spec_reader.spec_open(data)
    assert (f.version_major, f.version_minor) == (1, 3) and f.residual_codes
    assert [s.flags for s in f.sections if s.type == SECTION_IVF_RESIDUAL] == [SECTION_FLAG_REQUIRED]
    assert encode_section(SECTION_IVF_RESIDUAL, 1, (1).to_bytes(4, "little") + bytes(4)) in data


def test_cli_compresses_residual_codes_from_stdin(vectors, tmp_path):
    """'-': the training sample is the stream's first rows; the file decodes to centroid plus
    residual with the error its quality report states."""
    from qinco_codec.cli.compress import main as compress_main

    buf = io.BytesIO()
    np.save(buf, vectors[:1200])
    res = cli_runner().invoke(compress_main, ["-", str(tmp_path / "s.qnc"), "--bytes", "2", "--ivf",
                                              "8", "--model-choice", "codebooks", "--max-minutes",
                                              "0.1", "--quiet"], input=buf.getvalue())
    assert res.exit_code == 0, (res.stderr, res.exception)
    with qinco_codec.open(tmp_path / "s.qnc") as f:
        assert f.residual_codes and f.n == 1200
        mse = float(((f.decode() - vectors[:1200]) ** 2).sum(1).mean())
        reported = f.header.quality_report["rates"][-1]["mse"]
    assert abs(mse - reported) < 0.1 * mse
