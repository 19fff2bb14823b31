"""The CUDA path gives the CPU's results: codes (up to float ties), reconstructions within 1e-4
relative error in float32, prefix decoding, .qnc decoding (whole and streamed), training and the
CLI. Every test here is skipped on a machine without a GPU; BENCHMARKS.md records a GPU run."""
import subprocess
import sys

import numpy as np
import pytest
import torch

import qinco_codec
from qinco_codec.model import QincoModel
from qinco_codec.rq_init import init_from_rq

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

REL_TOL = 1e-4


def _data(n, dim=32, seed=0):
    """Correlated Gaussian vectors (a random linear map of white noise), float32."""
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, dim)) @ rng.standard_normal((dim, dim)) * 0.3).astype(np.float32)


def _model(preset="qinco2-XS", dim=32, M=6, seed=0):
    """RQ-initialised on synthetic data, then every network weight perturbed so that each step
    really evaluates its network (an untrained model's networks output zero)."""
    model = init_from_rq(QincoModel.from_preset(preset, dim, M), _data(4000, dim, seed), seed=seed)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "codebook" not in name and "preselect" not in name:
                p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    return model


def _rel_err(got, ref):
    return float(np.linalg.norm(got - ref) / np.linalg.norm(ref))


@pytest.fixture(scope="module", params=["qinco1-L2", "qinco2-XS"])
def model(request):
    return _model(request.param)


def test_auto_device_is_cuda():
    from qinco_codec.devices import resolve_device
    assert resolve_device("auto").type == "cuda"


@pytest.mark.parametrize("A,B", [(0, 1), (16, 1), (16, 4)])
def test_encode_on_cuda_gives_the_cpu_codes(model, A, B):
    x = _data(3000, seed=1)
    cpu = model.encode(x, A=A, B=B, device="cpu")
    gpu = model.encode(x, A=A, B=B, device="cuda")
    assert gpu.dtype == cpu.dtype and gpu.shape == cpu.shape
    same_rows = (gpu == cpu).all(1).mean()
    assert same_rows >= 0.995, f"only {same_rows:.4f} of rows have identical codes"
    # where a near-tie flipped a code, the error is as good as the CPU's
    mse = lambda c: float(((model.decode(c, device="cpu") - x) ** 2).sum(1).mean())
    assert mse(gpu) <= mse(cpu) * (1 + 1e-3)


def test_decode_on_cuda_matches_cpu_within_1e_4(model):
    codes = model.encode(_data(5000, seed=2), device="cpu")
    for steps in (1, 3, model.M):
        cpu = model.decode(codes, steps=steps, device="cpu")
        gpu = model.decode(codes, steps=steps, device="cuda")
        assert gpu.dtype == np.float32
        assert _rel_err(gpu, cpu) < REL_TOL


def test_prefix_decode_on_cuda_equals_truncated_codes(model):
    codes = model.encode(_data(2000, seed=3), device="cuda")
    np.testing.assert_array_equal(model.decode(codes, steps=3, device="cuda"),
                                  model.decode(codes[:, :3], device="cuda"))


def test_large_batches_cross_batch_boundaries(model):
    """A decode larger than one GPU batch (forced small here) gives the one-batch result."""
    codes = model.encode(_data(10000, seed=4), device="cpu")
    whole = model.decode(codes, device="cuda")
    pieces = model.decode(codes, device="cuda", batch_size=777)
    assert _rel_err(pieces, whole) < 1e-6


def test_bfloat16_decode_on_cuda_is_close(model):
    codes = model.encode(_data(2000, seed=5), device="cpu")
    ref = model.decode(codes, device="cpu")
    got = model.decode(codes, device="cuda", precision="bfloat16")
    assert _rel_err(got, ref) < 2e-2


def test_qnc_decode_and_stream_on_cuda(tmp_path, model):
    x = _data(20000, seed=6)
    path = tmp_path / "x.qnc"
    qinco_codec.compress(x, path, model=model, quiet=True, chunk_rows=3000, B=1)
    with qinco_codec.open(path) as f:
        cpu = f.decode(steps=4, device="cpu")
        gpu = f.decode(steps=4, device="cuda")
        streamed = np.concatenate(list(f.iter_decode(steps=4, batch_size=5000, device="cuda")))
        assert f.stream_stats["rows"] == len(x)
    assert _rel_err(gpu, cpu) < REL_TOL
    assert _rel_err(streamed, cpu) < REL_TOL


def test_training_on_cuda_gives_a_model_the_cpu_decodes(tmp_path):
    x = _data(6000, seed=7)
    model = qinco_codec.train(x, preset="qinco2-XS", steps=4, epochs=2, samples_per_epoch=4096,
                              device="cuda", quiet=True)
    assert next(model.parameters()).device.type == "cpu"
    path = tmp_path / "m.safetensors"
    model.save(path)
    loaded = qinco_codec.load_model(path)
    codes = loaded.encode(x[:1000], device="cuda")
    assert _rel_err(loaded.decode(codes, device="cuda"), loaded.decode(codes, device="cpu")) < REL_TOL


def test_decompress_cli_on_cuda(tmp_path, model):
    x = _data(5000, seed=8)
    qnc, out = tmp_path / "x.qnc", tmp_path / "y.npy"
    qinco_codec.compress(x, qnc, model=model, quiet=True, B=1)
    run = subprocess.run([sys.executable, "-m", "qinco_codec.cli.decompress", str(qnc), str(out),
                          "--device", "cuda", "--bytes", "2"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "vectors/s" in run.stderr
    with qinco_codec.open(qnc) as f:
        ref = f.decode(steps=2, device="cpu")
    assert _rel_err(np.load(out), ref) < REL_TOL


def test_encode_and_decode_on_cuda_leave_the_model_on_the_cpu(model):
    """device='cuda' runs the work on the GPU; the caller's model stays where it was."""
    x = np.random.default_rng(5).standard_normal((64, model.dim)).astype(np.float32)
    codes = model.encode(x, device="cuda")
    assert model.codebook0.device.type == "cpu"
    model.decode(codes, device="cuda")
    assert all(p.device.type == "cpu" for p in model.parameters())
