"""Model construction, encoding and decoding: shapes, dtypes, determinism, prefix decoding,
the split-layer fast path against the plain network, and clear errors for bad input."""
import numpy as np
import pytest
import torch

import qinco_codec
from qinco_codec import codec
from qinco_codec.errors import InputError
from qinco_codec.model import QincoModel
from qinco_codec.presets import PRESETS


def _randomize(model, seed=0):
    """Give every network weight a non-zero value so the steps are not the identity."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "codebook" not in name and "preselect" not in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    return model


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_builds_untrained_module(name):
    m = QincoModel.from_preset(name, dim=24, M=4)
    assert isinstance(m, torch.nn.Module)
    assert (m.dim, m.M, m.K) == (24, 4, 256)
    assert len(m.steps) == 3


def test_qinco1_step_has_paper_shapes():
    m = QincoModel.from_preset("qinco1-L2", dim=32, M=3)
    step = m.steps[0]
    assert step.concat.weight.shape == (32, 64) and step.concat.bias is not None
    assert [b[0].weight.shape for b in step.blocks] == [(256, 32)] * 2
    assert step.in_proj is None and step.out_proj is None and step.preselect is None


def test_qinco2_step_has_projections_and_preselection():
    m = QincoModel.from_preset("qinco2-S", dim=32, M=3)
    step = m.steps[0]
    assert step.in_proj.weight.shape == (128, 32) and step.out_proj.weight.shape == (32, 128)
    assert step.concat.weight.shape == (128, 160)
    assert step.preselect.shape == (256, 32)


@pytest.mark.parametrize("K,dtype", [(256, np.uint8), (16, np.uint8), (4096, np.uint16)])
def test_encode_decode_shapes_and_dtypes(K, dtype, rng):
    m = _randomize(QincoModel.from_preset("qinco2-XS", dim=12, M=3, K=K))
    x = rng.standard_normal((50, 12)).astype(np.float32)
    codes = m.encode(x)
    assert codes.shape == (50, 3) and codes.dtype == dtype
    assert codes.max() < K
    out = m.decode(codes)
    assert out.shape == (50, 12) and out.dtype == np.float32


def test_torch_and_numpy_inputs_agree(rng):
    m = _randomize(QincoModel.from_preset("qinco1-L2", dim=8, M=3, K=16))
    x = rng.standard_normal((40, 8)).astype(np.float32)
    c1 = m.encode(x)
    np.testing.assert_array_equal(c1, m.encode(torch.from_numpy(x)))
    np.testing.assert_array_equal(m.decode(c1), m.decode(torch.from_numpy(c1.astype(np.int64))))


def test_encoding_is_deterministic_and_batch_independent(glove_base, rq_model):
    x = glove_base[:1000]
    a = rq_model.encode(x)
    np.testing.assert_array_equal(a, rq_model.encode(x))
    np.testing.assert_array_equal(a, rq_model.encode(x, batch_size=97))
    beam = rq_model.encode(x[:200], B=4)
    np.testing.assert_array_equal(beam, rq_model.encode(x[:200], B=4, batch_size=37))


def test_untrained_model_is_exactly_residual_quantization(glove_base, rq_model):
    codes = rq_model.encode(glove_base[:500], A=0, B=1).astype(np.int64)
    recon = rq_model.codebook0[codes[:, 0]].detach().clone()
    for j, step in enumerate(rq_model.steps, start=1):
        recon += step.codebook[codes[:, j]].detach()
    expected = rq_model.denormalize(recon).numpy()
    np.testing.assert_allclose(rq_model.decode(codes), expected, rtol=1e-5, atol=1e-5)


def test_prefix_decoding_error_decreases_with_steps(glove_base, rq_model):
    x = glove_base
    codes = rq_model.encode(x)
    errs = [((rq_model.decode(codes, steps=m) - x) ** 2).sum(1).mean() for m in range(1, 9)]
    assert all(a > b for a, b in zip(errs, errs[1:])), errs
    # fewer columns mean the same as steps=
    np.testing.assert_array_equal(rq_model.decode(codes[:, :3]), rq_model.decode(codes, steps=3))


def test_split_layer_fast_path_matches_plain_network(rng):
    for preset in ("qinco1-L2", "qinco2-XS", "qinco2-S"):
        m = _randomize(QincoModel.from_preset(preset, dim=10, M=2, K=32))
        step = m.steps[0]
        xhat = torch.randn(7, 10)
        with torch.no_grad():
            all_k = step.corrections(step.candidate_tables(), xhat)           # (7, K, 10)
            for k in (0, 5, 31):
                plain = step(torch.full((7,), k), xhat)
                torch.testing.assert_close(all_k[:, k], plain, rtol=1e-5, atol=1e-5)


def test_decode_matches_training_forward(rng):
    m = _randomize(QincoModel.from_preset("qinco2-XS", dim=10, M=4, K=32))
    codes = torch.from_numpy(rng.integers(0, 32, (20, 4)))
    with torch.no_grad():
        plain = codec.decode_with_grad(m, codes)[-1]
        fast = codec.decode_normalized(m, codes)
    torch.testing.assert_close(fast, plain, rtol=1e-5, atol=1e-5)


def test_full_preselection_equals_exhaustive_and_beam_helps(glove_base, rq_model):
    x = glove_base[:200]
    m = _randomize(QincoModel.from_preset("qinco2-XS", dim=50, M=8), seed=1)
    m.load_state_dict({**m.state_dict(), **{k: v for k, v in rq_model.state_dict().items()
                                            if "codebook" in k or "preselect" in k or k in ("mean", "std")}})
    np.testing.assert_array_equal(m.encode(x, A=0, B=1), m.encode(x, A=m.K, B=1))
    greedy = ((m.decode(m.encode(x, A=0, B=1)) - x) ** 2).sum(1).mean()
    beam = ((m.decode(m.encode(x, A=0, B=3)) - x) ** 2).sum(1).mean()
    assert beam < greedy


@pytest.mark.parametrize("bad,msg", [
    (np.full((3, 50), np.nan, np.float32), "non-finite"),
    (np.array([[np.inf] * 50], np.float32), "non-finite"),
    (np.zeros((3, 49), np.float32), "expected dimension 50"),
    (np.zeros(50, np.float32), "2-D"),
    (np.zeros((2, 3, 50), np.float32), "2-D"),
    (np.array([["a"] * 50]), "numeric"),
])
def test_bad_vectors_are_refused_clearly(rq_model, bad, msg):
    with pytest.raises(InputError, match=msg):
        rq_model.encode(bad)


def test_other_numeric_dtypes_are_cast(rq_model, glove_base):
    x = glove_base[:20]
    np.testing.assert_array_equal(rq_model.encode(x.astype(np.float64)), rq_model.encode(x))
    assert rq_model.encode(np.zeros((2, 50), np.int32)).shape == (2, 8)


def test_non_contiguous_and_empty_inputs(rq_model, glove_base):
    x = np.asfortranarray(glove_base[:30])
    np.testing.assert_array_equal(rq_model.encode(x), rq_model.encode(np.ascontiguousarray(x)))
    assert rq_model.encode(np.zeros((0, 50), np.float32)).shape == (0, 8)
    assert rq_model.decode(np.zeros((0, 8), np.uint8)).shape == (0, 50)


@pytest.mark.parametrize("codes,steps,msg", [
    (np.full((2, 8), 256), None, r"\[0, 256\)"),
    (np.zeros((2, 9), np.uint8), None, "M=8"),
    (np.zeros((2, 8), np.float32), None, "integer"),
    (np.zeros((2, 4), np.uint8), 5, "steps must be between 1 and 4"),
])
def test_bad_codes_are_refused_clearly(rq_model, codes, steps, msg):
    with pytest.raises(InputError, match=msg):
        rq_model.decode(codes, steps=steps)


@pytest.mark.parametrize("kwargs,msg", [
    (dict(name="qinco3", dim=8, M=2), "unknown preset"),
    (dict(name="qinco2-S", dim=8, M=2, K=100), "power of two"),
    (dict(name="qinco2-S", dim=8, M=2, K=131072), "power of two"),
    (dict(name="qinco2-S", dim=8, M=0), "'M' must be in"),
    (dict(name="qinco2-S", dim=8, M=1025), r"'M' must be in \[1, 1024\], got 1025"),
    (dict(name="qinco2-S", dim=65537, M=2), r"'dim' must be in \[1, 65536\]"),
])
def test_bad_model_arguments(kwargs, msg):
    with pytest.raises(InputError, match=msg):
        QincoModel.from_preset(**kwargs)


def test_cuda_device_without_gpu_is_a_clear_error(rq_model):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(InputError, match="no CUDA device"):
        rq_model.encode(np.zeros((1, 50), np.float32), device="cuda")


def test_package_import_does_not_load_torch():
    import subprocess
    import sys
    code = "import sys, qinco_codec; qinco_codec.QncFormatError; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    assert qinco_codec.QincoModel is QincoModel


def test_bfloat16_encoding_keeps_mse_within_half_a_percent(glove_base, rq_model):
    x = glove_base[:300]
    m = _randomize(QincoModel.from_preset("qinco2-XS", dim=50, M=8), seed=2)
    m.load_state_dict({**m.state_dict(), **{k: v for k, v in rq_model.state_dict().items()
                                            if "codebook" in k or "preselect" in k or k in ("mean", "std")}})
    exact_codes = m.encode(x)
    exact = ((m.decode(exact_codes) - x) ** 2).sum(1).mean()
    fast = ((m.decode(m.encode(x, precision="bfloat16")) - x) ** 2).sum(1).mean()
    assert abs(fast / exact - 1) < 0.005
    bf16_decode = m.decode(exact_codes, precision="bfloat16")
    assert np.abs(bf16_decode - m.decode(exact_codes)).max() < 0.05 * np.abs(x).max()
    with pytest.raises(InputError, match="precision"):
        m.encode(x, precision="float8")
