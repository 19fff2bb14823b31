"""The architecture module is the one definition of the step networks: the modules the package
builds, the files it writes, the sizes it predicts and MODEL-SPEC.md's tensor table all agree
with it."""
import re
from pathlib import Path

import pytest
import torch

from qinco_codec import architecture as arch
from qinco_codec.config import ModelConfig
from qinco_codec.model import QincoModel
from qinco_codec.serialize import model_to_bytes
from qinco_codec.sizing import _model_bytes

SPEC = Path(__file__).resolve().parents[1] / "MODEL-SPEC.md"

CONFIGS = [
    ModelConfig(arch="qinco1", dim=6, M=4, K=16, L=2, hidden=8),
    ModelConfig(arch="qinco1", dim=5, M=3, K=32, L=0, hidden=4),
    ModelConfig(arch="qinco2", dim=12, M=4, K=16, L=2, hidden=7, embed=5),           # in_proj
    ModelConfig(arch="qinco2", dim=5, M=3, K=16, L=1, hidden=7, embed=0),            # de = D
    ModelConfig(arch="qinco2", dim=5, M=3, K=16, L=1, hidden=7, embed=5),            # de = D, given
    ModelConfig(arch="qinco2", dim=12, M=5, K=8, L=3, hidden=4, embed=6, share_steps=True),
    ModelConfig(arch="qinco2", dim=9, M=1, K=512, L=2, hidden=4, embed=3),
]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"{c.arch}-M{c.M}-L{c.L}-de{c.embed}-s{c.share_steps}")
@pytest.mark.parametrize("preselect", [True, False])
def test_inventory_is_what_the_module_holds(config, preselect):
    model = QincoModel(config, preselect=preselect)
    held = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    listed = {t.name: t.shape for t in arch.tensor_inventory(config, preselect)}
    assert held == listed
    size = arch.inventory_size(config, preselect)
    assert size.tensors == len(listed)
    assert size.normalisation + size.weights == sum(t.numel() for t in model.state_dict().values())
    assert arch.parameter_count(config, decoding_only=not preselect) == \
        sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"{c.arch}-M{c.M}-L{c.L}-de{c.embed}-s{c.share_steps}")
@pytest.mark.parametrize("weight_dtype", ["float32", "float16"])
def test_byte_arithmetic_matches_the_written_file(config, weight_dtype):
    data = model_to_bytes(QincoModel(config), weight_dtype)
    header_len = int.from_bytes(data[:8], "little")
    assert len(data) - 8 - header_len == arch.data_bytes(config, weight_dtype)


def test_sizing_bounds_the_file_without_building_a_model(monkeypatch):
    """sizing counts bytes by arithmetic (no module is built) and never under-counts a file."""
    from qinco_codec import model as model_module
    for preset, dim, M in [("qinco2-XS", 50, 8), ("qinco2-S", 384, 16), ("qinco1-L2", 24, 4)]:
        actual = len(model_to_bytes(QincoModel.from_preset(preset, dim, M), "float16"))
        with monkeypatch.context() as mp:
            mp.setattr(model_module.QincoModel, "__init__", lambda *a, **k: pytest.fail("built a model"))
            predicted = _model_bytes(preset, dim, M, 256, {}, "float16")
        assert actual <= predicted <= actual * 1.05 + 2048, (preset, actual, predicted)


def test_candidate_layout_is_the_tables_layout():
    step = QincoModel(CONFIGS[2]).steps[0]
    tables = step.candidate_tables()
    layout = arch.CandidateLayout.of(CONFIGS[2].step)
    assert tables.layout == layout and tables.combined.shape[1] == layout.width
    assert layout.p_off % arch.ALIGN_FLOATS == 0 and layout.e_off % arch.ALIGN_FLOATS == 0
    # the codebook sits at e_off, the first-layer table at 0
    torch.testing.assert_close(tables.combined[:, layout.e_off:layout.e_off + step.dim], step.codebook)
    torch.testing.assert_close(tables.combined[:, :step.embed], step.first_layer_table())


def _spec_rows():
    """(name pattern, shape expression) of MODEL-SPEC.md section 3's table."""
    text = SPEC.read_text()
    section = text[text.index("## 3 Tensors"):text.index("## 4 Decoding")]
    rows = re.findall(r"^\| `([^`]+)` \| \[([^\]]*)\] \|", section, re.M)
    assert len(rows) >= 10, rows
    return rows


def _regex(pattern):
    """A table name (`steps.i.blocks.l.0.weight`) as a regex: i and l stand for any index."""
    return re.escape(pattern).replace(r"steps\.i\.", r"steps\.\d+\.").replace(r"blocks\.l\.", r"blocks\.\d+\.")


def _spec_shape(expr, config):
    s = config.step
    env = {"D": s.D, "K": s.K, "de": s.de, "h": s.h}
    return tuple(eval(part, {}, env) for part in expr.split(",")) if expr.strip() else ()


def test_model_spec_table_lists_exactly_the_inventory():
    rows = _spec_rows()
    used = set()
    for config in CONFIGS:
        for t in arch.tensor_inventory(config):
            matches = [(pat, expr) for pat, expr in rows if re.fullmatch(_regex(pat), t.name)]
            assert len(matches) == 1, (t.name, matches)
            pat, expr = matches[0]
            assert _spec_shape(expr, config) == t.shape, (t.name, expr)
            used.add(pat)
    assert used == {pat for pat, _ in rows}, "a MODEL-SPEC.md row no model has"


def test_network_modules_name_every_network_tensor():
    for config in CONFIGS:
        for t in arch.network_tensors(config.step, "steps.0."):
            assert t.name.split(".")[2] in arch.NETWORK_MODULES


def test_faiss_can_represent_qinco1_only():
    assert arch.faiss_representable(CONFIGS[0])
    assert not arch.faiss_representable(CONFIGS[2]) and not arch.faiss_representable(CONFIGS[3])


def test_flops_follow_the_inventory_shapes():
    """Decoding a step costs one matmul per network weight except the codeword half of the
    concat layer (a per-call table): the FLOP model and the tensor shapes agree."""
    for config in CONFIGS:
        s = config.step
        net = [t for t in arch.network_tensors(s, "") if t.name.endswith("weight") and t.name != "in_proj.weight"]
        macs = sum(t.shape[0] * t.shape[1] for t in net) - s.de * s.de   # concat: only the x̂ half
        assert arch.decode_flops(config) == 2.0 * (config.M - 1) * macs
