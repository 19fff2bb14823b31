"""Per-dimension defaults (presets.DIMENSION_RULES): a preset's fields change from a dimension on,
in every place a model is built for that dimension, and an explicit value still wins."""
import pytest

from qinco_codec.config import ModelConfig
from qinco_codec.presets import DIMENSION_RULES, PRESETS, for_dimension, get_preset

RULES = [pytest.param(r, id=f"{r.preset}@{r.min_dim}") for r in DIMENSION_RULES]


def test_there_is_a_rule_for_the_default_preset_at_sentence_embedding_dimensions():
    from qinco_codec.presets import DEFAULT_PRESET
    assert any(r.preset == DEFAULT_PRESET and r.min_dim <= 384 for r in DIMENSION_RULES)


@pytest.mark.parametrize("rule", RULES)
def test_a_rule_applies_from_its_dimension_on_and_not_below(rule):
    own = PRESETS[rule.preset]
    assert rule.preset in PRESETS and rule.why
    assert set(rule.fields) <= set(own.as_dict()) and rule.fields != {k: getattr(own, k) for k in rule.fields}
    for dim in (rule.min_dim, rule.min_dim * 2):
        p = for_dimension(own, dim)
        assert {k: getattr(p, k) for k in rule.fields} == rule.fields
    below = for_dimension(own, rule.min_dim - 1)
    assert {k: getattr(below, k) for k in rule.fields} != rule.fields
    assert get_preset(rule.preset) == own        # no dimension: the preset as written


@pytest.mark.parametrize("rule", RULES)
def test_models_built_for_the_dimension_record_the_rule_and_overrides_win(rule):
    cfg = ModelConfig.from_preset(rule.preset, rule.min_dim, 4)
    for k, v in rule.fields.items():
        assert getattr(cfg, k) == v
    small = ModelConfig.from_preset(rule.preset, 50, 4) if rule.min_dim > 50 else None
    if small is not None:
        assert all(getattr(small, k) == getattr(PRESETS[rule.preset], k) for k in rule.fields)
    key = next(iter(rule.fields))
    forced = getattr(PRESETS[rule.preset], key)
    assert getattr(ModelConfig.from_preset(rule.preset, rule.min_dim, 4, **{key: forced}), key) == forced
