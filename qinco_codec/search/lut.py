"""Per-query lookup tables over additive codebooks, and the scans that turn them into shortlists.

With fixed codebooks C (M, K, d) (additive.py) a row's approximate reconstruction is
a = Σ_m C[m, code_m], so for a query q:

* squared L2: ‖q − a‖² = ‖q‖² − 2 Σ_m ⟨q, C[m, code_m]⟩ + ‖a‖², where ‖a‖² is exact per row,
  computed once per file (`row_sqnorms`, n floats) instead of from M² cross terms per pair;
* inner product: ⟨q, a⟩ = Σ_m ⟨q, C[m, code_m]⟩.

Every score here is "smaller is nearer" (the inner product is negated), so one scan serves both.
A table row is flat: entry m·K + k of a query's (M·K) table is step m's term for code k; a
block of rows' codes becomes flat indices (`code_offsets`) as it is scanned, so that only the
codes themselves (M bytes a row) stay in memory. The scans:

* `scan_all`: every row against a block of queries, by torch's embedding_bag (one summed gather
  of M table columns per row, the queries in the inner dimension), chunked over rows and
  queries so that memory stays bounded (SCORE_BLOCK floats at a time);
* `scan_rows`: one query against a subset of rows, a gather and sum over the M columns of that
  query's table (the IVF scan, engine.SearchIndex, does the same for a block of queries at once,
  every (query, probed row) pair in one embedding_bag).
"""
import numpy as np
import torch

METRICS = ("l2", "ip")
# Floats of one block of scores (queries x rows) in scan_all: 32 MiB.
SCORE_BLOCK = 1 << 23


def lookup_tables(queries, codebooks, metric="l2"):
    """(nq, M, K) float32 tables, smaller is nearer: −2⟨q, C[m, k]⟩ for "l2" (add ‖q‖² and the
    row's ‖a‖² for the distance), −⟨q, C[m, k]⟩ for "ip"."""
    q = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32))
    M, K, d = codebooks.shape
    C = torch.from_numpy(np.ascontiguousarray(codebooks, dtype=np.float32)).reshape(M * K, d)
    scale = -2.0 if metric == "l2" else -1.0
    return (scale * (q @ C.T)).reshape(len(q), M, K).numpy()


def code_offsets(codes, K):
    """Flat table indices (n, M) int64: codes[:, m] + m·K."""
    codes = np.asarray(codes)
    return codes.astype(np.int64) + (np.arange(codes.shape[1], dtype=np.int64) * K)


def flat_indices(codes, K, base=None, limit=0):
    """code_offsets as a torch tensor, int32 where the indices stay below 2³¹ (`limit`: the size
    of the table they index), built in torch from the uint8 codes (2.4x faster than int64 numpy);
    `base` (R,) is added per row (the row's query's offset into a stack of tables)."""
    codes = np.asarray(codes)
    dtype = torch.int32 if max(limit, codes.shape[1] * K) < 1 << 31 else torch.int64
    c = torch.from_numpy(codes) if codes.dtype == np.uint8 else torch.from_numpy(codes.astype(np.int64))
    idx = c.to(dtype)
    idx += torch.arange(codes.shape[1], dtype=dtype) * K
    if base is not None:
        idx += base.to(dtype)[:, None]
    return idx


def row_sqnorms(codes, codebooks, centroids=None, list_ids=None, block=16384):
    """‖a_i‖² per row (n,) float32, a_i = Σ_m C[m, code_im] (+ centroids[list_ids[i]] when
    given: codebooks fitted to residuals to the rows' centroids), in blocks of `block` rows."""
    M, K, d = codebooks.shape
    table = torch.from_numpy(np.ascontiguousarray(codebooks, dtype=np.float32)).reshape(M * K, d)
    out = np.empty(len(codes), np.float32)
    for s in range(0, len(codes), block):
        a = torch.nn.functional.embedding_bag(flat_indices(codes[s:s + block], K), table,
                                              mode="sum")                            # (b, d)
        if centroids is not None:
            a += torch.from_numpy(np.ascontiguousarray(centroids[list_ids[s:s + block]]))
        out[s:s + block] = (a * a).sum(1).numpy()
    return out


def _merge_top(best_s, best_i, scores, rows, S):
    """Keep the S smallest of (best ∪ new) per query: best_s/best_i (Q, S'), scores (Q, R),
    rows (R,) or (Q, R) int64."""
    if rows.dim() == 1:
        rows = rows.expand(scores.shape[0], -1)
    s = torch.cat([best_s, scores], 1)
    i = torch.cat([best_i, rows], 1)
    S = min(S, s.shape[1])
    top_s, pos = torch.topk(s, S, dim=1, largest=False, sorted=True)
    return top_s, i.gather(1, pos)


def scan_all(tables, codes, S, row_terms=None):
    """The S best rows of all n per query: tables (nq, M, K), codes (n, M); scores (nq, S)
    float32 (table sums + row_terms) and rows (nq, S) int64, best first; rows beyond n are -1
    with score +inf."""
    nq = len(tables)
    n = len(codes)
    S_eff = min(S, n)
    out_s = np.full((nq, S), np.inf, np.float32)
    out_i = np.full((nq, S), -1, np.int64)
    if n == 0 or nq == 0:
        return out_s, out_i
    M, K = tables.shape[1:]
    terms = None if row_terms is None else torch.from_numpy(row_terms)
    Q = max(1, min(nq, 256))
    R = max(S_eff, SCORE_BLOCK // Q)
    for qs in range(0, nq, Q):
        # (M·K, Qb): queries inner, so embedding_bag sums M contiguous rows of Qb floats
        table = torch.from_numpy(np.ascontiguousarray(
            tables[qs:qs + Q].reshape(-1, M * K).T))
        Qb = table.shape[1]
        best_s = torch.empty((Qb, 0))
        best_i = torch.empty((Qb, 0), dtype=torch.int64)
        for rs in range(0, n, R):
            sc = torch.nn.functional.embedding_bag(flat_indices(codes[rs:rs + R], K), table,
                                                   mode="sum")                 # (Rb, Qb)
            if terms is not None:
                sc += terms[rs:rs + R, None]
            rows = torch.arange(rs, rs + len(sc), dtype=torch.int64)
            best_s, best_i = _merge_top(best_s, best_i, sc.T, rows, S_eff)
        out_s[qs:qs + Qb, :S_eff] = best_s.numpy()
        out_i[qs:qs + Qb, :S_eff] = best_i.numpy()
    return out_s, out_i


def scan_rows(table, codes, row_terms=None):
    """Scores (R,) float32 of R rows for one query: table (M, K), codes (R, M) of those rows,
    row_terms (R,) added when given."""
    sc = table.reshape(-1).take(code_offsets(codes, table.shape[1])).sum(1, dtype=np.float32)
    if row_terms is not None:
        sc += row_terms
    return sc
