"""The expanded error (issue 13): at high dimension the encoder scores QINCo2 candidates by
‖c‖² − 2c·r + ‖r‖² + z·(2W_outᵀ(c − r) + W_outᵀW_out z) instead of evaluating the D-wide output
projection per candidate. It is exact algebra: the same errors up to rounding, the same codes,
and a per-candidate cost that grows with d only by a dot product."""
import numpy as np
import pytest
import torch

from qinco_codec import architecture as arch
from qinco_codec import codec
from qinco_codec.model import QincoModel
from qinco_codec.steps import Workspace

DIMS = [128, 384, 768]


def _model(dim, K=64, M=4, seed=0):
    model = QincoModel.from_preset("qinco2-XS", dim, M, K=K)   # de = 64, h = 128, L = 2
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            scale = 1.0 if "codebook" in name or "preselect" in name else 0.5 / p.shape[-1] ** 0.5
            p.copy_(torch.randn(p.shape, generator=g) * scale)
    return model


@pytest.mark.parametrize("dim", DIMS)
@pytest.mark.parametrize("with_idx", [False, 4, 9])
def test_expanded_errors_equal_the_direct_ones(dim, with_idx):
    """All K candidates, 4 of 64 (c·r from the gathered rows) and 9 of 64 (from the full matmul)."""
    model = _model(dim)
    step = model.steps[0]
    assert arch.expands_error(step.shape)
    g = torch.Generator().manual_seed(1)
    xhat = torch.randn(40, dim, generator=g)
    r = torch.randn(40, dim, generator=g)
    idx = torch.randint(0, 64, (40, with_idx), generator=g) if with_idx else None
    assert arch.gathers_cr(step.shape, with_idx) == (with_idx == 4)
    with torch.no_grad():
        e = step.candidate_residuals(step.candidate_tables(expanded=False), xhat, r, idx, Workspace())
        direct = torch.linalg.vecdot(e.double(), e.double())
        expanded = step.candidate_errors(step.candidate_tables(), xhat, r, idx, Workspace()).double()
    assert expanded.shape == direct.shape == (40, with_idx or 64)
    torch.testing.assert_close(expanded, direct, rtol=2e-5, atol=2e-5 * float(direct.mean()))


@pytest.mark.parametrize("dim", DIMS)
@pytest.mark.parametrize("A,B", [(0, 1), (16, 1), (16, 4), (4, 4)])
def test_expanded_encoder_gives_the_direct_codes(dim, A, B):
    model = _model(dim, seed=dim)
    x = torch.from_numpy(np.random.default_rng(dim).standard_normal((300, dim)).astype(np.float32))
    with torch.no_grad():
        fast = codec.encode_normalized(model, x, A, B)
        direct = codec.encode_normalized(model, x, A, B, expanded=False)
        same = (fast == direct).all(1).float().mean().item()
        errors = [float((codec.decode_normalized(model, c) - x).square().sum(1).mean()) for c in (fast, direct)]
    assert same >= 0.99, same
    assert abs(errors[0] - errors[1]) <= 1e-5 * errors[1], errors


def test_low_dimension_keeps_the_direct_error():
    """Where the Gram product would cost more than the projection (D <= de + 1, e.g. GloVe-50
    with de = 64), the encoder keeps the direct error: its codes are unchanged."""
    assert not arch.expands_error(_model(50).config.step)
    assert not arch.expands_error(_model(65).config.step) and arch.expands_error(_model(66).config.step)


def test_per_candidate_cost_does_not_depend_on_d():
    costs = {d: arch.candidate_macs(_model(d).config.step) for d in (128, 384, 768, 1536)}
    assert len(set(costs.values())) == 1, costs
    # what d costs is per hypothesis (W_x x̂, W_outᵀ r, c·r, the kept reconstruction): linear in d
    per_hyp = {d: arch.hypothesis_macs(_model(d).config.step, 16) for d in (128, 256, 384)}
    assert per_hyp[384] - per_hyp[256] == per_hyp[256] - per_hyp[128] > 0
