"""ModelConfig: the typed, validated config of a model file (MODEL-SPEC.md section 2).

One frozen value with exactly the keys MODEL-SPEC.md specifies, validated once, here, whether it
comes from a preset, from code or from a file. The decoding fields fix the network; the encoder
defaults (A, B, train_A) and the informational fields (preset, trained, and any key a later minor
version adds) travel with the model but a decoder does not need them. Keys this version does not
know are kept verbatim in `other`, so loading and re-saving a model gives back the same bytes.
"""
import dataclasses
import json
from dataclasses import dataclass, field
from typing import Mapping, Optional

from .architecture import VARIANTS, StepShape, inventory_size
from .errors import InputError

# Inclusive upper bounds, checked before anything is allocated (MODEL-SPEC.md section 2).
LIMITS = {"dim": 1 << 16, "M": 1024, "K": 1 << 16, "L": 256, "hidden": 1 << 16, "embed": 1 << 16,
          "A": 1 << 16, "B": 1 << 16, "train_A": 1 << 16}
# Lower bounds of the integer fields.
MINIMA = {"dim": 1, "M": 1, "K": 2, "L": 0, "hidden": 1, "embed": 0, "A": 0, "B": 1, "train_A": 0}
# Longest accepted preset label (informational, any string).
MAX_PRESET_CHARS = 256
# Most tensors a model may have (M = 1024 steps of L = 16 blocks need 35,811): bounds the modules
# a reader builds for a file whose config is within every per-field limit.
MAX_TENSORS = 1 << 17
# Boolean decoding fields written only when true (files without them read as false).
OPTIONAL_FLAGS = ("share_steps", "unit_norm")
# Keys that must be present in a file's config (the rest have defaults).
REQUIRED_KEYS = ("arch", "dim", "M", "K", "L", "hidden", "embed")


@dataclass(frozen=True)
class ModelConfig:
    """Architecture, encoder defaults and provenance of one model."""

    # decoding fields: they fix the network
    arch: str
    dim: int
    M: int
    K: int
    L: int
    hidden: int
    embed: int = 0
    share_steps: bool = False
    unit_norm: bool = False   # decoded vectors are scaled to unit L2 norm (feature "unit_norm")
    # encoder defaults: how codes are searched unless the caller says otherwise
    A: int = 0
    B: int = 1
    train_A: int = 0
    # informational: not needed to decode
    preset: str = ""
    trained: Optional[Mapping] = None
    other: Mapping = field(default_factory=dict)

    def __post_init__(self):
        problem = _problem(self)
        if problem:
            raise InputError(f"model config: {problem}")
        object.__setattr__(self, "other", dict(self.other))   # copies: the caller's dict stays theirs
        if self.trained is not None:
            object.__setattr__(self, "trained", dict(self.trained))

    # ---- derived facts
    @property
    def step(self):
        """The `StepShape` every step of this model has."""
        return StepShape.of(self)

    def replace(self, **changes):
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_preset(cls, name, dim, M, K=256, **overrides):
        """The config of preset `name` for `dim`-dimensional vectors (its per-dimension values,
        presets.DIMENSION_RULES; any field overridden) and M codes of K values."""
        from .presets import get_preset
        p = get_preset(name, int(dim), **overrides)
        return cls(arch=p.arch, dim=int(dim), M=int(M), K=int(K), L=p.L, hidden=p.hidden,
                   embed=p.embed, share_steps=p.share_steps, A=p.A, B=p.B, train_A=p.train_A,
                   preset=p.name)

    # ---- JSON form (the `config` string of a model file)
    def to_dict(self):
        """The config as the model file stores it: MODEL-SPEC.md's keys, defaults included, the
        unknown keys kept; `share_steps` and `unit_norm` only when true and `trained` only when
        set, as earlier versions wrote them."""
        out = dict(self.other)
        for f in dataclasses.fields(self):
            if f.name in ("other", "trained") + OPTIONAL_FLAGS:
                continue
            out[f.name] = getattr(self, f.name)
        for flag in OPTIONAL_FLAGS:
            if getattr(self, flag):
                out[flag] = True
        if self.trained is not None:
            out["trained"] = _plain(self.trained)
        return out

    def to_json(self):
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, obj, source="model config"):
        """Validate a config JSON object (from a file); problems are an InputError naming
        `source` and the field."""
        if not isinstance(obj, dict):
            raise InputError(f"{source}: config is not a JSON object")
        for key in REQUIRED_KEYS:
            if key not in obj:
                raise InputError(f"{source}: config field {key!r} is missing")
        known = {f.name for f in dataclasses.fields(cls)} - {"other"}
        kwargs = {k: v for k, v in obj.items() if k in known}
        kwargs["other"] = {k: v for k, v in obj.items() if k not in known}
        try:
            return cls(**kwargs)
        except InputError as exc:
            raise InputError(f"{source}: {str(exc).removeprefix('model config: ')}") from None


def _plain(value):
    """MappingProxy -> dict, recursively, for JSON."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _problem(c):
    """What is wrong with a config (one sentence), or None."""
    if not isinstance(c.arch, str) or c.arch not in VARIANTS:
        return f"field 'arch' must be one of {', '.join(map(repr, VARIANTS))}, got {c.arch!r}"
    for key, hi in LIMITS.items():
        v = getattr(c, key)
        if not _is_int(v):
            return f"field {key!r} must be an integer, got {v!r}"
        if key == "K" and (not MINIMA[key] <= v <= hi or v & (v - 1)):
            return f"field 'K' must be a power of two in [{MINIMA[key]}, {hi}], got {v}"
        if not MINIMA[key] <= v <= hi:
            return f"field {key!r} must be in [{MINIMA[key]}, {hi}], got {v}"
    for flag in OPTIONAL_FLAGS:
        if not isinstance(getattr(c, flag), bool):
            return f"field {flag!r} must be true or false, got {getattr(c, flag)!r}"
    tensors = inventory_size(c).tensors
    if tensors > MAX_TENSORS:
        return f"M={c.M} steps of L={c.L} blocks make {tensors:,} tensors, over the {MAX_TENSORS:,} limit"
    if not isinstance(c.preset, str) or len(c.preset) > MAX_PRESET_CHARS:
        return f"field 'preset' must be a string of at most {MAX_PRESET_CHARS} characters, got {c.preset!r:.80}"
    if c.trained is not None and not isinstance(c.trained, Mapping):
        return f"field 'trained' must be a JSON object, got {c.trained!r:.80}"
    return None
