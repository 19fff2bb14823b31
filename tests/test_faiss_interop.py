"""Export of QINCo1 models to faiss's IndexQINCo: same codes, same reconstructions, on raw vectors."""
import sys

import numpy as np
import pytest
import torch

faiss = pytest.importorskip("faiss")
if not hasattr(faiss, "IndexQINCo"):
    pytest.skip("faiss < 1.9 has no IndexQINCo", allow_module_level=True)

from qinco_codec.errors import InputError  # noqa: E402
from qinco_codec.faiss_interop import codes_from_faiss, codes_to_faiss, to_faiss  # noqa: E402
from qinco_codec.model import QincoModel  # noqa: E402
from qinco_codec.rq_init import init_from_rq  # noqa: E402

FAISS_BATCH = 256   # faiss's encoder holds n*K*2d floats at once: keep its batches small


def _randomize_networks(model, scale=0.05, seed=0):
    """Small random concat / block weights (codebooks kept): steps are no longer f(c, x̂) = c."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for step in model.steps:
            for name, p in step.named_parameters():
                if name != "codebook":
                    p.copy_(torch.randn(p.shape, generator=g) * scale)
    return model


def _rq_decode(model, codes):
    """What the model would decode if every step returned its codeword (plain RQ)."""
    with torch.no_grad():
        xn = model.codebook0[torch.from_numpy(codes[:, 0].astype(np.int64))]
        for j, step in enumerate(model.steps, start=1):
            xn = xn + step.codebook[torch.from_numpy(codes[:, j].astype(np.int64))]
        return model.denormalize(xn).numpy()


def _faiss_encode(index, x):
    return np.concatenate([index.sa_encode(x[i:i + FAISS_BATCH]) for i in range(0, len(x), FAISS_BATCH)])


def _check_equivalent(model, x):
    index = to_faiss(model)
    assert index.is_trained and index.d == model.dim
    ours = model.encode(x, A=0, B=1)
    packed = _faiss_encode(index, x)
    theirs = codes_from_faiss(model, packed)
    assert theirs.dtype == ours.dtype and theirs.shape == ours.shape
    if model.K == 256:   # one byte per code: faiss's packed codes are our code matrix byte for byte
        assert packed.dtype == np.uint8 and packed.shape == ours.shape
    # Greedy search compares float32 distances computed in different spaces (raw vs normalised)
    # and with different summation orders, so an exact near-tie could in principle resolve either
    # way; we allow 0.1% of vectors to differ (none did on GloVe-50, K in {16, 256, 512}).
    same_rows = (theirs == ours).all(axis=1).mean()
    assert same_rows >= 0.999, f"only {same_rows:.4%} of vectors got the same codes from faiss"
    if same_rows == 1.0:
        assert np.array_equal(codes_to_faiss(model, ours), packed)

    dec_ours = model.decode(ours)
    dec_faiss = index.sa_decode(codes_to_faiss(model, ours))
    rel = np.linalg.norm(dec_faiss - dec_ours, axis=1) / np.linalg.norm(dec_ours, axis=1)
    assert rel.max() < 1e-4, f"faiss reconstructions differ by up to {rel.max():.2e} (relative)"
    return ours, dec_ours


@pytest.mark.parametrize("K,M,n", [(256, 4, 1000), (16, 3, 500), (512, 2, 300)])
def test_random_networks_match_faiss(glove_train, glove_base, K, M, n):
    """RQ-initialised qinco1-L2 with random step networks; K=16/M=3 packs 12 bits into 2 bytes,
    K=512 uses uint16 codes and 9-bit faiss codes (18 bits -> 3 bytes)."""
    x = glove_train if K == 256 else glove_train[:4000]
    model = _randomize_networks(init_from_rq(QincoModel.from_preset("qinco1-L2", 50, M, K=K), x, seed=0))
    assert float(model.std) != 1.0 and float(model.mean.abs().max()) > 0   # normalisation is exercised
    base = glove_base[:n]
    codes, dec = _check_equivalent(model, base)
    # the step networks really act: decoding differs clearly from plain residual quantization
    rq = _rq_decode(model, codes)
    assert np.linalg.norm(dec - rq, axis=1).mean() > 0.05 * np.linalg.norm(dec, axis=1).mean()


@pytest.mark.slow
def test_trained_model_matches_faiss(glove_train, glove_base):
    import qinco_codec

    model = qinco_codec.train(glove_train[:5000], preset="qinco1-L2", steps=4, epochs=1, samples_per_epoch=2048,
                              val=256, quiet=True)
    assert any(float(s.concat.weight.detach().abs().max()) > 0 for s in model.steps), "training left the steps at zero"
    _check_equivalent(model, glove_base[:500])


def test_qinco2_is_refused():
    model = QincoModel.from_preset("qinco2-XS", 50, 4)
    with pytest.raises(InputError, match="QINCo1 architecture only.*'qinco2'"):
        to_faiss(model)


def test_bad_normalisation_is_refused():
    model = QincoModel.from_preset("qinco1-L2", 8, 2, K=16)
    model.std.fill_(0.0)
    with pytest.raises(InputError, match="std must be finite and > 0"):
        to_faiss(model)


def test_missing_faiss_is_reported(monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)     # makes `import faiss` raise ImportError
    with pytest.raises(InputError, match=r"pip install qinco-codec\[bench\]"):
        to_faiss(QincoModel.from_preset("qinco1-L2", 8, 2, K=16))


def test_code_packing_round_trip():
    model = QincoModel.from_preset("qinco1-L2", 8, 5, K=8)        # 15 bits -> 2 bytes per vector
    codes = np.random.default_rng(0).integers(0, 8, size=(100, 5)).astype(np.uint8)
    packed = codes_to_faiss(model, codes)
    assert packed.shape == (100, 2) and packed.dtype == np.uint8
    assert np.array_equal(codes_from_faiss(model, packed), codes)
    with pytest.raises(InputError, match="shape"):
        codes_from_faiss(model, packed[:, :1])
