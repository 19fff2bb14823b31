"""The .qnc container, byte layer: writes and reads headers, sections, code planes, index and
trailer as specified in SPEC.md. Knows nothing of the model beyond its SHA-256 and opaque bytes,
and imports no torch."""
from .chunks import RawChunk
from .header import QncHeader
from .reader import QncReader
from .writer import QncWriter

__all__ = ["QncHeader", "QncReader", "QncWriter", "RawChunk"]
