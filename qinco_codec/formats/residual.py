"""The `ivf_residual` section (SPEC.md 5.4, since version 1.3): the file's codes are of the
residual x − c to the centroid c of the row's inverted list (IVF-QINCo), so a row's vector is
the model's output plus that centroid, at every prefix.

The codes then depend on the `ivf` section (5.3), so this section has its REQUIRED bit set: a
reader that does not know it (1.0-1.2) rejects the file instead of decoding residuals as
vectors. Payload: exactly 8 bytes, `offset_kind` (u32, 1 = the centroid of the row's list) and
4 reserved bytes.
"""
from .errors import QncFormatError
from .layout import IVF_RESIDUAL_PAYLOAD, OFFSET_LIST_CENTROID, SECTION_HEADER_SIZE

OFFSET_KINDS = {OFFSET_LIST_CENTROID: "centroid of the row's ivf list"}


IVF_RESIDUAL_SECTION_BYTES = SECTION_HEADER_SIZE + IVF_RESIDUAL_PAYLOAD.size  # header and payload


def encode_ivf_residual(offset_kind=OFFSET_LIST_CENTROID):
    """The payload of an ivf_residual section."""
    return IVF_RESIDUAL_PAYLOAD.pack(offset_kind)


def decode_ivf_residual(payload):
    """Check an ivf_residual payload (its CRC already verified) and return its offset_kind;
    QncFormatError naming the broken rule."""
    if len(payload) != IVF_RESIDUAL_PAYLOAD.size:
        raise QncFormatError(f"ivf_residual section: {len(payload)} bytes, expected exactly "
                             f"{IVF_RESIDUAL_PAYLOAD.size}")
    (kind,) = IVF_RESIDUAL_PAYLOAD.unpack(payload)
    if kind not in OFFSET_KINDS:
        raise QncFormatError(f"ivf_residual section: unknown offset_kind {kind} (this reader "
                             f"knows {', '.join(map(str, OFFSET_KINDS))})")
    return kind
