"""The `ivf` section (SPEC.md 5.3, since version 1.2): a coarse quantizer's centroids and the
inverted list of every row, so that a search scans only the rows of the lists nearest a query.

The lists only filter rows: the codes do not depend on them (they are not residuals of the
centroids), so an IVF can be added to, replaced in or dropped from any file without touching a
code, and a reader that does not know the section (1.0, 1.1) decodes the file as before.

Payload: a 32-byte head (`n`, `dim`, `nlist`, `id_bytes`, `ids_encoding`, reserved, and
`ids_stored_len`), the centroids (nlist x dim float32, little-endian, row-major), then the list
id of each row in row order (u16 when nlist <= 65536, else u32), stored raw or as one zstd frame
under the rules of a code plane. Every length is implied by n, dim and nlist and checked before
anything is allocated; centroids must be finite and every id below nlist.
"""
from dataclasses import dataclass

import numpy as np

from .chunks import _unzstd, zstd_compressor
from .errors import InputError, QncFormatError
from .layout import (ENCODING_NAMES, ENCODING_RAW, ENCODING_ZSTD, IVF_CENTROID_DTYPE, IVF_HEAD,
                     MAX_NLIST, SECTION_HEADER_SIZE, ZSTD_DEFAULT_LEVEL, ZSTD_MAX_EXPANSION, ivf_id_bytes,
                     ivf_id_dtype)


@dataclass(frozen=True, eq=False)
class IvfSection:
    """Inverted lists of a file: `centroids` (nlist, dim) float32 and `list_ids` (n,) integers in
    [0, nlist), row r belonging to list list_ids[r]. Decoded sections hold C-contiguous native
    arrays (list ids uint16 when nlist <= 65536, else uint32)."""
    centroids: np.ndarray
    list_ids: np.ndarray

    @property
    def nlist(self):
        return int(self.centroids.shape[0])

    @property
    def dim(self):
        return int(self.centroids.shape[1])

    @property
    def n(self):
        return int(self.list_ids.shape[0])

    def list_sizes(self):
        """(nlist,) int64: the number of rows in each list."""
        return np.bincount(self.list_ids, minlength=self.nlist).astype(np.int64)


def ivf_problem(section, *, n, dim):
    """Why `section` cannot be the ivf section of a file of n rows of dimension dim, or None."""
    if not isinstance(section, IvfSection):
        return f"ivf must be an IvfSection, got {type(section).__name__}"
    c, ids = np.asarray(section.centroids), np.asarray(section.list_ids)
    if c.ndim != 2 or not c.shape[0] or c.shape[1] != dim:
        return f"ivf centroids must have shape (nlist >= 1, dim={dim}), got {c.shape}"
    if c.shape[0] > MAX_NLIST:
        return f"ivf nlist={c.shape[0]} is over the limit of {MAX_NLIST}"
    if not np.issubdtype(c.dtype, np.floating):
        return f"ivf centroids must be floating point, got {c.dtype}"
    with np.errstate(over="ignore", invalid="ignore"):  # values beyond float32 become inf
        finite = np.isfinite(c.astype(np.float32)).all()
    if not finite:
        return "ivf centroids must be finite (as float32): NaN or infinity found"
    if ids.shape != (n,) or not (np.issubdtype(ids.dtype, np.integer) or n == 0):
        return f"ivf list_ids must be a ({n},) integer array, got {ids.dtype} of shape {ids.shape}"
    if n and (ids.min() < 0 or ids.max() >= c.shape[0]):
        return (f"ivf list_ids must be in [0, nlist={c.shape[0]}), got values in "
                f"[{ids.min()}, {ids.max()}]")
    return None


def encode_ivf(section, *, zstd_level=ZSTD_DEFAULT_LEVEL):
    """The ivf section payload of `section` (SPEC.md 5.3). The list ids are tried as one zstd
    frame at `zstd_level` (1-22; None or 0: raw) and kept so only when strictly shorter, as a
    code plane is (SPEC.md 6.2, 12). InputError for a section no reader would accept."""
    if not isinstance(section, IvfSection):
        raise InputError(f"ivf must be an IvfSection, got {type(section).__name__}")
    shape = np.shape(section.centroids)
    n, dim = len(np.atleast_1d(section.list_ids)), shape[1] if len(shape) == 2 else -1
    problem = ivf_problem(section, n=n, dim=dim)
    if problem:
        raise InputError(problem)
    nlist, id_bytes = section.nlist, ivf_id_bytes(section.nlist)
    raw = np.ascontiguousarray(section.list_ids, dtype=ivf_id_dtype(id_bytes)).tobytes()
    stored, encoding = raw, ENCODING_RAW
    if zstd_level and raw:
        packed = zstd_compressor(zstd_level).compress(raw)
        if len(packed) < len(raw):
            stored, encoding = packed, ENCODING_ZSTD
    head = IVF_HEAD.pack(n, dim, nlist, id_bytes, encoding, len(stored))
    centroids = np.ascontiguousarray(section.centroids, dtype=IVF_CENTROID_DTYPE).tobytes()
    return head + centroids + stored


def ivf_payload_length(*, n, dim, nlist, ids_stored_len):
    """The exact length of an ivf payload with these fields."""
    return IVF_HEAD.size + 4 * nlist * dim + ids_stored_len


def ivf_section_bound(*, n, dim, nlist):
    """The most bytes an ivf section (header and payload) of these sizes takes: list ids stored
    raw (a zstd frame is kept only when shorter)."""
    return SECTION_HEADER_SIZE + ivf_payload_length(n=n, dim=dim, nlist=nlist,
                                                    ids_stored_len=n * ivf_id_bytes(nlist))


def decode_ivf(payload, *, dim, n):
    """Decode and check an ivf section payload (its CRC already verified) of a file of n rows of
    dimension dim; QncFormatError naming the broken rule. Every length is checked against the
    payload before anything is allocated, and the ids' zstd frame (if any) is decompressed to
    exactly n * id_bytes bytes, never more."""
    what = "ivf section"
    if len(payload) < IVF_HEAD.size:
        raise QncFormatError(f"{what}: {len(payload)} bytes, shorter than its "
                             f"{IVF_HEAD.size}-byte head")
    got_n, got_dim, nlist, id_bytes, encoding, stored_len = IVF_HEAD.unpack_from(payload)
    if (got_n, got_dim) != (n, dim):
        raise QncFormatError(f"{what}: says n={got_n}, dim={got_dim}; the file header has "
                             f"n={n}, dim={dim}")
    if not 1 <= nlist <= MAX_NLIST:
        raise QncFormatError(f"{what}: nlist={nlist} must be in [1, {MAX_NLIST}]")
    if id_bytes != ivf_id_bytes(nlist):
        raise QncFormatError(f"{what}: id_bytes={id_bytes}, expected {ivf_id_bytes(nlist)} for "
                             f"nlist={nlist}")
    if encoding not in ENCODING_NAMES:
        raise QncFormatError(f"{what}: unknown ids_encoding {encoding}")
    raw_len = n * id_bytes
    if encoding == ENCODING_RAW and stored_len != raw_len:
        raise QncFormatError(f"{what}: raw list ids take ids_stored_len={stored_len} bytes, "
                             f"expected n * id_bytes = {raw_len}")
    if encoding == ENCODING_ZSTD and not 0 < stored_len < raw_len:
        raise QncFormatError(f"{what}: zstd list ids have ids_stored_len={stored_len}, must be "
                             f"in [1, n * id_bytes = {raw_len})")
    if encoding == ENCODING_ZSTD and raw_len > ZSTD_MAX_EXPANSION * stored_len:
        raise QncFormatError(f"{what}: a zstd frame of {stored_len} bytes cannot hold "
                             f"{raw_len} bytes of list ids (zstd expands at most "
                             f"{ZSTD_MAX_EXPANSION}x)")
    expected = ivf_payload_length(n=n, dim=dim, nlist=nlist, ids_stored_len=stored_len)
    if len(payload) != expected:
        raise QncFormatError(f"{what}: {len(payload)} bytes, expected {expected} (32-byte head, "
                             f"{nlist} x {dim} float32 centroids, {stored_len} bytes of list ids)")
    view = memoryview(payload)
    start = IVF_HEAD.size
    centroids = np.frombuffer(view[start:start + 4 * nlist * dim], IVF_CENTROID_DTYPE)
    if not np.isfinite(centroids).all():
        raise QncFormatError(f"{what}: a centroid holds NaN or infinity")
    centroids = centroids.astype(np.float32).reshape(nlist, dim)
    stored = view[start + 4 * nlist * dim:]
    raw = stored if encoding == ENCODING_RAW else _unzstd(stored, raw_len, f"{what} list ids")
    native = np.uint16 if id_bytes == 2 else np.uint32
    ids = np.frombuffer(raw, ivf_id_dtype(id_bytes)).astype(native)
    if n and int(ids.max()) >= nlist:
        raise QncFormatError(f"{what}: list id {int(ids.max())} is not below nlist={nlist}")
    return IvfSection(centroids, ids)
