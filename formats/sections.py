"""Typed sections between the fixed header and the code stream (SPEC.md section "Sections"):
framing (type, flags, length, CRC-32 of the payload) and the canonical JSON payloads.

JSON is written canonically (sorted keys, no whitespace, UTF-8, no NaN) so that the same
config and metadata always give the same bytes.
"""
import json
from typing import NamedTuple

from ..errors import InputError, QncFormatError
from .layout import SECTION_HEADER, SECTION_NAMES, crc32


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
    """Section header followed by its payload."""
    return SECTION_HEADER.pack(section_type, flags, len(payload), crc32(payload)) + payload


def decode_section_header(data):
    """Decode the 20-byte section header."""
    return SectionHeader(*SECTION_HEADER.unpack(data))


def check_section_payload(header, payload):
    """Raise QncFormatError when the payload does not match the CRC-32 in its section header."""
    computed = crc32(payload)
    if computed != header.crc32:
        raise QncFormatError(f"{header.name} section checksum mismatch (stored "
                             f"0x{header.crc32:08x}, computed 0x{computed:08x})")


def encode_json(obj, what):
    """Canonical UTF-8 JSON of a dict; InputError for anything that is not a JSON object."""
    if not isinstance(obj, dict):
        raise InputError(f"{what} must be a dict, got {type(obj).__name__}")
    try:
        text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                          allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise InputError(f"{what} is not JSON-serializable: {exc}") from None
    return text.encode("utf-8")


def _reject_constant(name):
    raise ValueError(f"non-standard JSON constant {name}")


def decode_json(payload, what):
    """Parse a JSON-object section payload; QncFormatError for invalid UTF-8, JSON or type."""
    try:
        obj = json.loads(payload.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise QncFormatError(f"{what} section is not valid UTF-8 JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise QncFormatError(f"{what} section must hold a JSON object, got {type(obj).__name__}")
    return obj
