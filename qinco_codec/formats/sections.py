"""Typed sections between the fixed header and the code stream (SPEC.md section "Sections"):
framing (type, flags, length, CRC-32 of the payload, CRC-32 of the section header) and the
canonical JSON payloads.

JSON is written canonically (SPEC.md section 5.1: sorted keys, no whitespace, UTF-8, numbers as
Python writes them, no NaN) so that the same config and metadata always give the same bytes.
"""
import json
import math
from typing import NamedTuple

from .errors import InputError, QncFormatError
from .layout import (JSON_INT_END, JSON_INT_MIN, MAX_JSON_DEPTH, MAX_JSON_SECTION, READ_MAX_INT_DIGITS, READ_MAX_JSON_DEPTH,
                     SECTION_CRC, SECTION_FIELDS, SECTION_FLAG_REQUIRED, SECTION_FLAGS, SECTION_NAMES, SECTION_RESERVED, crc32)


class SectionHeader(NamedTuple):
    """A decoded section header; the payload follows it."""
    type: int
    flags: int
    length: int
    crc32: int

    @property
    def name(self):
        """Readable name of the section type, for messages."""
        return SECTION_NAMES.get(self.type, f"unknown section type {self.type}")


def encode_section(section_type, flags, payload):
    """Section header (fields, then the CRC-32 of the fields) followed by its payload."""
    fields = SECTION_FIELDS.pack(section_type, flags, len(payload), crc32(payload))
    return fields + SECTION_CRC.pack(crc32(fields)) + payload


def decode_section_header(data, offset):
    """Decode and check the 24-byte section header found at file offset `offset`.

    Its CRC is verified before any field is trusted; then type 0 and unexpected flags of known
    types are rejected. Unknown types are returned as they are (the caller skips them or rejects
    them when REQUIRED is set)."""
    fields = data[:SECTION_FIELDS.size]
    (stored,) = SECTION_CRC.unpack_from(data, SECTION_FIELDS.size)
    computed = crc32(fields)
    if stored != computed:
        raise QncFormatError(f"section header at offset {offset}: checksum mismatch (stored "
                             f"0x{stored:08x}, computed 0x{computed:08x})")
    header = SectionHeader(*SECTION_FIELDS.unpack(fields))
    if header.type == SECTION_RESERVED:
        raise QncFormatError(f"section at offset {offset} has type 0, which is reserved and "
                             f"never valid")
    expected = SECTION_FLAGS.get(header.type)
    if expected is not None and header.flags != expected:
        raise QncFormatError(f"{header.name} section at offset {offset} has flags "
                             f"0x{header.flags:x}; this section type requires flags "
                             f"0x{expected:x}")
    return header


def is_required(header):
    """Whether an unknown section's REQUIRED bit is set."""
    return bool(header.flags & SECTION_FLAG_REQUIRED)


def check_section_payload(header, payload):
    """Raise QncFormatError when the payload does not match the CRC-32 in its section header."""
    computed = crc32(payload)
    if computed != header.crc32:
        raise QncFormatError(f"{header.name} section checksum mismatch (stored "
                             f"0x{header.crc32:08x}, computed 0x{computed:08x})")


def _check_value(obj, what, depth=1):
    """What json.dumps would accept but SPEC.md 5 forbids: object keys that are not strings
    (json.dumps would turn them into strings after sorting, giving unsorted or duplicate names),
    integers outside [-2^63, 2^64), and nesting deeper than MAX_JSON_DEPTH levels."""
    if isinstance(obj, (dict, list, tuple)):
        if depth > MAX_JSON_DEPTH:
            raise InputError(f"{what}: JSON nested more than {MAX_JSON_DEPTH} levels deep")
        if isinstance(obj, dict):
            for key in obj:
                if not isinstance(key, str):
                    raise InputError(f"{what}: object key {key!r} is not a string")
        for value in obj.values() if isinstance(obj, dict) else obj:
            _check_value(value, what, depth + 1)
    elif isinstance(obj, int) and not isinstance(obj, bool) and \
            not JSON_INT_MIN <= obj < JSON_INT_END:
        raise InputError(f"{what}: integer {_int_summary(obj)} is outside the JSON integer "
                         f"range [-2**63, 2**64)")


def _int_summary(value):
    """An integer for a message: itself when short, else its sign and number of digits (str()
    of an integer of over 4300 digits raises)."""
    if -10 ** 24 < value < 10 ** 24:
        return str(value)
    return f"with about {int(abs(value).bit_length() * 0.30103) + 1} digits"


def encode_json(obj, what):
    """Canonical UTF-8 JSON of a dict (SPEC.md 5.1) for a JSON section; InputError for anything
    that has no canonical form (not a dict, non-string keys, NaN or infinities, lone surrogates,
    other types) and for a payload over the MAX_JSON_SECTION bytes every reader enforces (SPEC.md
    5), so that no writer makes a file its readers refuse."""
    if not isinstance(obj, dict):
        raise InputError(f"{what} must be a dict, got {type(obj).__name__}")
    try:
        _check_value(obj, what)
        text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                          allow_nan=False)
        payload = text.encode("utf-8")
    except (TypeError, ValueError, RecursionError) as exc:  # UnicodeEncodeError: lone surrogate
        if isinstance(exc, InputError):
            raise
        raise InputError(f"{what} is not JSON-serializable: {exc}") from None
    if len(payload) > MAX_JSON_SECTION:
        raise InputError(f"{what}: {len(payload):,} bytes of JSON (as stored: compact, UTF-8), "
                         f"over the {MAX_JSON_SECTION}-byte ({MAX_JSON_SECTION >> 20} MiB) limit "
                         f"of a JSON section")
    return payload


def _reject_constant(name):
    raise ValueError(f"non-standard JSON constant {name}")


def _finite_float(text):
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text} does not fit a finite binary64")
    return value


def _readable_int(text):
    """An integer (no fraction, no exponent) of at most READ_MAX_INT_DIGITS digits, judged on its
    digits before any conversion (Python refuses to convert more than 4300)."""
    digits = len(text) - text.startswith("-")
    if digits > READ_MAX_INT_DIGITS:
        raise ValueError(f"integer {text[:12]}...({digits} digits) has more than the "
                         f"{READ_MAX_INT_DIGITS} digits a reader accepts")
    return int(text)


def _object_without_duplicates(pairs):
    obj = {}
    for key, value in pairs:
        if key in obj:
            raise ValueError(f"duplicate object key {key!r}")
        obj[key] = value
    return obj


def _depth(value):
    """Nesting depth of a decoded JSON value: the top-level array or object is at depth 1, an
    array or object inside one at depth k is at depth k + 1; scalars add nothing."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1)
                         for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def decode_json(payload, what):
    """Parse a JSON-object section payload (SPEC.md 5); QncFormatError for invalid UTF-8, text
    that is not JSON, the constants NaN/Infinity, numbers that overflow binary64, integers of
    more than READ_MAX_INT_DIGITS digits, nesting deeper than READ_MAX_JSON_DEPTH, duplicate keys
    (at any depth), or a value that is not an object. Each message says which rule failed. (The
    reader's limits are wider than the writer's: files of earlier writers stay readable.)"""
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise QncFormatError(f"{what} section is not valid UTF-8: {exc}") from None
    try:
        obj = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float,
                         parse_int=_readable_int, object_pairs_hook=_object_without_duplicates)
    except RecursionError:
        # Python's parser recurses once per level and gives up hundreds of levels deep
        raise QncFormatError(f"{what} section is JSON nested more than {READ_MAX_JSON_DEPTH} levels "
                             f"deep") from None
    except ValueError as exc:  # json.JSONDecodeError and the hooks' errors
        raise QncFormatError(f"{what} section is not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise QncFormatError(f"{what} section must hold a JSON object, got {type(obj).__name__}")
    depth = _depth(obj)
    if depth > READ_MAX_JSON_DEPTH:
        raise QncFormatError(f"{what} section is JSON nested {depth} levels deep, more than "
                             f"{READ_MAX_JSON_DEPTH}")
    return obj
