"""Named model configurations.

QINCo1 presets follow Huijben et al. 2024 (step = concat block + L residual MLP blocks of width h,
exhaustive greedy encoding). QINCo2 presets follow Vallaeys et al. 2025 (in/out projections to
width de, hidden dh, a pre-selection codebook per step, A candidates and beam B at encode time).
`qinco2-XS` is ours: a small network for low-dimensional data where the model's bytes count.
"""
from dataclasses import asdict, dataclass, replace

from .errors import InputError


@dataclass(frozen=True)
class Preset:
    """Architecture and default search / training settings of one model family member."""

    name: str
    arch: str            # "qinco1" or "qinco2"
    L: int               # residual blocks per step
    hidden: int          # h (QINCo1) or dh (QINCo2)
    embed: int = 0       # de for QINCo2 (0 = the data dimension); unused by QINCo1
    A: int = 0           # pre-selected candidates per beam at encode time (0 = all K)
    B: int = 1           # beam width at encode time
    train_A: int = 0     # candidates used to encode training batches (0 = all K)
    lr: float = 1e-3
    weight_decay: float = 0.0
    clip_value: float = 0.0   # element-wise gradient clipping (0 = off)
    clip_norm: float = 1.0    # gradient-norm clipping (0 = off)
    share_steps: bool = False  # one network for all steps (each step keeps its own codebooks)

    def as_dict(self):
        return asdict(self)


PRESETS = {
    p.name: p
    for p in [
        Preset("qinco1-L2", "qinco1", L=2, hidden=256, lr=1e-3),
        Preset("qinco1-L16", "qinco1", L=16, hidden=256, lr=1e-3),
        Preset("qinco2-XS", "qinco2", L=2, hidden=128, embed=64, A=16, B=4, train_A=16,
               lr=3e-3, weight_decay=0.1, clip_value=0.1, clip_norm=0.0),
        Preset("qinco2-S", "qinco2", L=2, hidden=256, embed=128, A=16, B=32, train_A=16,
               lr=8e-4, weight_decay=0.1, clip_value=0.1, clip_norm=0.0),
        Preset("qinco2-M", "qinco2", L=4, hidden=384, embed=384, A=16, B=32, train_A=16,
               lr=8e-4, weight_decay=0.1, clip_value=0.1, clip_norm=0.0),
        Preset("qinco2-L", "qinco2", L=16, hidden=384, embed=384, A=16, B=32, train_A=16,
               lr=8e-4, weight_decay=0.1, clip_value=0.1, clip_norm=0.0),
    ]
}

DEFAULT_PRESET = "qinco2-XS"


@dataclass(frozen=True)
class DimensionRule:
    """Preset fields that take other values from a dimension on, because they were measured to
    be the better trade there (the measurement is named in `why`)."""

    preset: str
    min_dim: int
    fields: dict
    why: str


DIMENSION_RULES = (
    # docs/experiments/2026-12-02-encoder-search-minilm384.md: at d=384 the pre-selection is
    # nearly exact, so A=4 (a quarter of the candidates of A=16) costs 0.13% MSE at B=4
    # (0.28008 against 0.27972, 16-B model, 5,000 held-out vectors) for twice the encode rate;
    # measured at 384, applied from 256 on (GloVe-50 keeps A=16).
    # docs/experiments/2026-12-03-beam-minilm384.md: B=2 then halves the encoder's work again
    # (the beam is what the encoder's cost scales with once A=4) for 2.8% MSE at 16 B
    # (0.2829 against 0.2751, 5,000 held-out vectors): 3,888 vectors/s on 2 cores, 0.68x faiss RQ
    # beam 5's rate in the same run, where B=4 gave 1,799 (0.31x); A=2,B=4 and A=4,B=3 fall
    # between (2,756 and 2,602 vectors/s, +1.3% and +1.1%).
    DimensionRule("qinco2-XS", 256, {"A": 4, "B": 2},
                  "A=4 costs 0.13% MSE against A=16 at d=384 and encodes twice as fast; "
                  "B=2 costs 2.8% MSE against B=4 for 2.2x the rate again"),
)


def for_dimension(preset, dim):
    """`preset` (a Preset) as it applies to `dim`-dimensional vectors: DIMENSION_RULES applied."""
    for rule in DIMENSION_RULES:
        if rule.preset == preset.name and dim >= rule.min_dim:
            preset = replace(preset, **rule.fields)
    return preset


def get_preset(name, dim=None, **overrides):
    """The preset called `name`, for `dim`-dimensional vectors when given (`for_dimension`), with
    any field overridden; unknown names are an InputError."""
    if name not in PRESETS:
        raise InputError(f"unknown preset {name!r}; expected one of: {', '.join(PRESETS)}")
    p = PRESETS[name] if dim is None else for_dimension(PRESETS[name], dim)
    return replace(p, **overrides) if overrides else p
