"""Nearest-neighbour search inside .qnc files (issue 15): an additive shortlist over the code
planes, re-ranked by decoding the shortlist with the QINCo model, and inverted lists for scale.

Modules (each imported on its own; this package imports nothing, so `search.ivf` is cheap):

* `additive`: `fit_additive(codes, decoded)`, fixed codebooks (M, K, d) by least squares;
* `lut`: per-query lookup tables (nq, M, K) and the scans that make shortlists;
* `ivf`: `train_coarse`, `assign`, `probe`, `InvertedLists`, `IVF` (lists in memory);
* `engine`: `search(queries, codes, model, k, ...)` and `SearchIndex`, the whole pipeline.

`qinco_codec.open(path).search(queries, k)` is the file-level entry point (qncfile.py).
"""
