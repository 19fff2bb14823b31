"""Search inside codes (qinco_codec.search): the additive fit, the lookup-table scans, the inverted
lists, the whole pipeline against brute force over the decoded vectors, and QncFile.search."""
import numpy as np
import pytest

import qinco_codec
from qinco_codec.errors import InputError
from qinco_codec.search import additive, engine, lut
from qinco_codec.search.engine import SearchIndex, search
from qinco_codec.search.ivf import IVF, InvertedLists, assign, train_coarse


def recall(I, gt):
    """Mean fraction of each query's true k neighbours (rows of gt) found in I."""
    return float(np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(I, gt)]))


def brute_force(q, x, k, metric="l2"):
    """D, I of an exact search of q in x (float64 scores, nearest first)."""
    q64, x64 = q.astype(np.float64), x.astype(np.float64)
    if metric == "l2":
        s = (q64 * q64).sum(1)[:, None] - 2 * q64 @ x64.T + (x64 * x64).sum(1)[None]
    else:
        s = -(q64 @ x64.T)
    order = np.argsort(s, 1, kind="stable")[:, :k]
    D = np.take_along_axis(s, order, 1)
    return (D if metric == "l2" else -D), order


@pytest.fixture(scope="module")
def trained(rq_model):
    """A model whose decoder is not additive: the RQ start (conftest) with seeded random weights
    in its step networks. An RQ start alone decodes exactly additively (its networks are zero),
    and a few epochs of training on a slice of GloVe barely move it (the additive decoder then
    ranks like the model: R@10 0.999); this stands in for a trained model at no training cost."""
    import copy

    import torch

    model = copy.deepcopy(rq_model)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for step in model.steps:
            layers = [step.concat, *(block[2] for block in step.blocks)]
            layers += [step.out_proj] if step.out_proj is not None else []
            for layer in layers:
                w = layer.weight
                w.copy_(torch.randn(w.shape, generator=gen) * (PERTURBATION / w.shape[1] ** 0.5))
    return model


# Scale of the random step-network weights: 0.5 leaves the additive decoder at R@10 0.97 of the
# model's own ranking, 1.0 at 0.63; 0.75 sits between.
PERTURBATION = 0.75


@pytest.fixture(scope="module")
def data(trained, glove_base):
    from qinco_codec import datasets
    base = glove_base[:3000]
    queries = datasets.glove50("query")[:100]
    codes = trained.encode(base, B=1)
    return base, queries, codes, trained.decode(codes)


# ---------------------------------------------------------------- additive fit
@pytest.mark.parametrize("method", additive.METHODS)
def test_fit_recovers_an_additive_decoder(method, rng):
    """Vectors that are exactly a sum of codewords are fitted (near) exactly by both fits."""
    M, K, d, n = 3, 16, 8, 4000
    C = rng.standard_normal((M, K, d)).astype(np.float32)
    codes = rng.integers(0, K, (n, M))
    x = additive.reconstruct(codes, C)
    fit = additive.fit_additive(codes, x, K, method=method, rounds=20)
    err = np.square(additive.reconstruct(codes, fit) - x).sum(1).mean()
    assert err < 1e-3 * np.square(x).sum(1).mean()


def test_least_squares_is_no_worse_than_alternating(data):
    """lstsq is the optimum of the objective alternating descends: on the fitted rows its error
    is at most alternating's (and both are far below the data's spread)."""
    _, _, codes, decoded = data
    errs = {m: np.square(additive.reconstruct(codes, additive.fit_additive(codes, decoded, 256,
                                                                           method=m)) - decoded).sum(1).mean()
            for m in additive.METHODS}
    assert errs["lstsq"] <= errs["alternating"] * 1.0001
    assert errs["lstsq"] < 0.5 * np.square(decoded - decoded.mean(0)).sum(1).mean()


def test_fit_refuses_bad_input():
    with pytest.raises(InputError, match="same n"):
        additive.fit_additive(np.zeros((3, 2), int), np.zeros((4, 5), np.float32))
    with pytest.raises(InputError, match="at least one row"):
        additive.fit_additive(np.zeros((0, 2), int), np.zeros((0, 5), np.float32))
    with pytest.raises(InputError, match=r"\[0, 4\)"):
        additive.fit_additive(np.full((3, 2), 4), np.zeros((3, 5), np.float32), 4)


# ---------------------------------------------------------------- lookup tables and scans
def test_scan_scores_are_additive_distances(rng):
    """Table sums plus the row norms are the squared distances to the additive reconstructions
    up to ‖q‖², and the scan keeps the S smallest, best first."""
    M, K, d, n, nq, S = 4, 32, 6, 500, 7, 20
    C = rng.standard_normal((M, K, d)).astype(np.float32)
    codes = rng.integers(0, K, (n, M)).astype(np.uint8)
    q = rng.standard_normal((nq, d)).astype(np.float32)
    norms = lut.row_sqnorms(codes, C)
    scores, rows = lut.scan_all(lut.lookup_tables(q, C, "l2"), codes, S, norms)
    a = additive.reconstruct(codes, C)
    D, I = brute_force(q, a, S)
    np.testing.assert_array_equal(rows, I)
    np.testing.assert_allclose(scores + (q * q).sum(1)[:, None], D, rtol=1e-4, atol=1e-3)
    one = lut.scan_rows(lut.lookup_tables(q[:1], C, "l2")[0], codes, norms)
    assert one.shape == (n,) and one.dtype == np.float32
    np.testing.assert_allclose(one + (q[0] * q[0]).sum(), np.square(a - q[0]).sum(1),
                               rtol=1e-4, atol=1e-3)


def test_scan_pads_when_fewer_rows_than_the_shortlist(rng):
    C = rng.standard_normal((2, 8, 3)).astype(np.float32)
    codes = rng.integers(0, 8, (5, 2))
    scores, rows = lut.scan_all(lut.lookup_tables(np.ones((2, 3), np.float32), C), codes, 9)
    assert (rows[:, 5:] == -1).all() and np.isinf(scores[:, 5:]).all()
    assert sorted(rows[0, :5]) == list(range(5))


# ---------------------------------------------------------------- inverted lists
def test_inverted_lists_group_rows_in_file_order(rng):
    ids = rng.integers(0, 7, 1000)
    inv = InvertedLists.from_list_ids(ids, 9)
    assert inv.offsets[-1] == 1000 and inv.nlist == 9
    np.testing.assert_array_equal(inv.sizes(), np.bincount(ids, minlength=9))
    for lst in range(9):
        np.testing.assert_array_equal(inv.rows[inv.offsets[lst]:inv.offsets[lst + 1]],
                                      np.flatnonzero(ids == lst))
    rows, sizes = inv.rows_of(np.array([3, 1]))
    np.testing.assert_array_equal(rows, np.r_[np.flatnonzero(ids == 3), np.flatnonzero(ids == 1)])
    with pytest.raises(InputError, match=r"\[0, 9\)"):
        InvertedLists.from_list_ids(np.array([0, 9]), 9)
    with pytest.raises(InputError, match="integer"):
        InvertedLists.from_list_ids(np.array([0.5]), 9)


def test_concat_ranges_matches_numpy(rng):
    starts = rng.integers(0, 50, 30)
    stops = starts + rng.integers(0, 6, 30)
    want = np.concatenate([np.arange(a, b) for a, b in zip(starts, stops)])
    np.testing.assert_array_equal(engine._concat_ranges(starts, stops), want)
    assert len(engine._concat_ranges(np.array([3]), np.array([3]))) == 0


def test_coarse_quantizer_assigns_to_the_nearest_centroid(glove_base):
    x = glove_base[:2000]
    c = train_coarse(x, 16, seed=0)
    assert c.shape == (16, 50) and c.dtype == np.float32
    ids = assign(x, c)
    d = ((x[:, None] - c[None]) ** 2).sum(-1)
    assert ids.dtype == np.int32
    assert (d[np.arange(len(x)), ids] <= d.min(1) + 1e-3).all()
    assert len(np.unique(ids)) == 16          # no empty cell (small clusters are split)
    with pytest.raises(InputError, match="nlist"):
        train_coarse(x[:5], 6)


# ---------------------------------------------------------------- the pipeline
def test_exact_when_the_shortlist_covers_every_row(data, trained):
    """shortlist >= n: the result is brute force over the decoded vectors, ids and distances."""
    _, q, codes, decoded = data
    D, I = search(q, codes, trained, k=20, shortlist=len(codes))
    Db, Ib = brute_force(q, decoded, 20)
    np.testing.assert_array_equal(I, Ib)
    np.testing.assert_allclose(D, Db, rtol=1e-4, atol=1e-4)
    assert D.dtype == np.float32 and I.dtype == np.int64
    assert (np.diff(D, axis=1) >= 0).all()


def test_moderate_shortlist_recall_near_exhaustive_and_above_additive(data, trained):
    """A shortlist of 50 of 3,000 rows finds nearly all of the exhaustive top 10 (over the
    decoded vectors), and clearly more than ranking by the additive decoder alone."""
    _, q, codes, decoded = data
    _, gt = brute_force(q, decoded, 10)
    index = SearchIndex(codes, trained)
    _, I = index.search(q, 10, shortlist=50)
    _, I_add = brute_force(q, additive.reconstruct(codes, index.codebooks), 10)
    r_pipe, r_add = recall(I, gt), recall(I_add, gt)
    assert r_pipe >= 0.95, (r_pipe, r_add)
    assert r_pipe > r_add + 0.05, (r_pipe, r_add)


def test_ivf_with_every_list_probed_equals_exhaustive(data, trained):
    _, q, codes, decoded = data
    ivf = IVF.build(decoded, 24, seed=0)
    index = SearchIndex(codes, trained, ivf=ivf)
    flat = SearchIndex(codes, trained, additive=index.codebooks)
    D1, I1 = index.search(q, 10, shortlist=len(codes), nprobe=24)
    D0, I0 = flat.search(q, 10, shortlist=len(codes))
    np.testing.assert_array_equal(I1, I0)
    np.testing.assert_allclose(D1, D0, rtol=1e-5)
    # the same shortlist stage whichever scan scores the rows (ties and rounding aside)
    _, I1 = index.search(q, 10, shortlist=40, nprobe=24)
    _, I0 = flat.search(q, 10, shortlist=40)
    assert recall(I1, I0) >= 0.99
    # fewer lists: only rows of probed lists come back, and recall drops gracefully
    _, I2 = index.search(q, 10, shortlist=40, nprobe=4)
    assert recall(I2, I0) > 0.6
    lists = engine.probe(q, ivf.centroids, 4)[0]
    for row_ids, probed in zip(I2, lists):
        assert set(ivf.lists.list_ids[row_ids[row_ids >= 0]]) <= set(probed)


def test_ivf_search_is_the_same_at_any_thread_count(data, trained, monkeypatch):
    """The IVF scan's query blocks and the re-ranking's decode chunks run on worker threads: the
    results (rows and distances, bit for bit) do not depend on how many."""
    import torch
    _, q, codes, decoded = data
    index = SearchIndex(codes, trained, ivf=IVF.build(decoded, 24, seed=0))
    monkeypatch.setattr(engine, "PAIR_BLOCK", 16 * index.steps * 500)   # many blocks of queries
    saved = torch.get_num_threads()
    try:
        results = []
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            results.append(index.search(q, 10, shortlist=40, nprobe=6))
    finally:
        torch.set_num_threads(saved)
    for D, I in results[1:]:
        np.testing.assert_array_equal(I, results[0][1])
        np.testing.assert_array_equal(D, results[0][0])


@pytest.fixture(scope="module")
def residual_data(trained, data):
    """IVF-QINCo codes: each row encoded as its residual to the nearest of 16 centroids, and the
    vectors they stand for (centroid plus the decoded residual)."""
    base = data[0]
    ivf = IVF.build(base, 16, seed=1)
    offsets = ivf.centroids[ivf.lists.list_ids]                         # (n, d)
    codes = trained.encode(np.ascontiguousarray(base - offsets), B=1)
    return ivf, codes, trained.decode(codes) + offsets


@pytest.mark.parametrize("metric", ["l2", "ip"])
def test_residual_codes_at_full_shortlist_are_brute_force(trained, data, residual_data, metric):
    """residual=True: with every list probed and every row re-ranked, the result is an exact
    search over centroid + decoded residual, distances included."""
    q = data[1][:20]
    ivf, codes, vectors = residual_data
    D, I = SearchIndex(codes, trained, ivf=ivf, residual=True).search(
        q, 5, shortlist=len(codes), nprobe=16, metric=metric)
    Db, Ib = brute_force(q, vectors, 5, metric)
    np.testing.assert_array_equal(I, Ib)
    np.testing.assert_allclose(D, Db, rtol=1e-4, atol=1e-3)


def test_residual_shortlist_scores_the_centroid(trained, data, residual_data):
    """The additive stage of residual codes ranks by centroid + residual: a short shortlist over
    every list finds most true neighbours; the same codes scored without their centroids (as if
    they were codes of the vectors) find almost none."""
    q = data[1]
    ivf, codes, vectors = residual_data
    _, Ib = brute_force(q, vectors, 10)
    _, I = SearchIndex(codes, trained, ivf=ivf, residual=True).search(q, 10, shortlist=40,
                                                                       nprobe=16)
    _, I_wrong = SearchIndex(codes, trained, ivf=ivf).search(q, 10, shortlist=40, nprobe=16)
    assert recall(I, Ib) >= 0.85
    assert recall(I_wrong, Ib) < 0.5


def test_residual_needs_an_ivf(trained, data):
    with pytest.raises(InputError, match="residual=True needs an IVF"):
        SearchIndex(data[2], trained, residual=True)


def test_k_larger_than_n_is_padded(trained, data):
    _, q, codes, decoded = data
    D, I = search(q[:3], codes[:7], trained, k=10)
    assert I.shape == (3, 10) and (I[:, 7:] == -1).all() and np.isinf(D[:, 7:]).all()
    assert (D[:, 7:] > 0).all()
    assert sorted(I[0, :7]) == list(range(7))
    D, I = search(q[:3], codes[:7], trained, k=10, metric="ip")
    assert (I[:, 7:] == -1).all() and (D[:, 7:] == -np.inf).all()


def test_inner_product_on_normalised_vectors(trained, data):
    _, q, codes, decoded = data
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    D, I = search(qn, codes, trained, k=10, shortlist=len(codes), metric="ip")
    Db, Ib = brute_force(qn, decoded, 10, metric="ip")
    np.testing.assert_array_equal(I, Ib)
    np.testing.assert_allclose(D, Db, rtol=1e-4, atol=1e-4)
    assert (np.diff(D, axis=1) <= 0).all()       # larger is nearer, as faiss returns IP
    _, I = search(qn, codes, trained, k=10, shortlist=60, metric="ip")
    assert recall(I, Ib) >= 0.9


def test_prefix_steps_search_the_prefix_decoder(trained, data):
    _, q, codes, _ = data
    dec4 = trained.decode(codes, steps=4)
    _, I = search(q, codes, trained, k=10, steps=4, shortlist=len(codes))
    np.testing.assert_array_equal(I, brute_force(q, dec4, 10)[1])


def test_bad_arguments_are_refused(trained, data):
    _, q, codes, _ = data
    with pytest.raises(InputError, match="dimension 50"):
        search(q[:, :20], codes, trained)
    bad = q[:3].copy()
    bad[1, 4] = np.nan
    with pytest.raises(InputError, match="row 1, column 4"):
        search(bad, codes, trained)
    with pytest.raises(InputError, match="k must be"):
        search(q, codes, trained, k=0)
    with pytest.raises(InputError, match="nprobe"):
        search(q, codes, trained, nprobe=3)
    with pytest.raises(InputError, match="metric"):
        search(q, codes, trained, metric="cos")
    with pytest.raises(InputError, match="additive"):
        search(q, codes, trained, additive=np.zeros((2, 256, 50), np.float32))


# ---------------------------------------------------------------- QncFile.search
@pytest.fixture(scope="module")
def qnc_path(trained, data, tmp_path_factory):
    base = data[0]
    path = tmp_path_factory.mktemp("search") / "base.qnc"
    qinco_codec.compress(base, path, trained, quiet=True, chunk_rows=1024, report=False)
    return path


def test_qncfile_search_equals_brute_force_and_caches(qnc_path, data):
    _, q, _, _ = data
    with qinco_codec.open(qnc_path) as f:
        D, I = f.search(q, 10, shortlist=f.n)
        read = f.bytes_read
        D2, I2 = f.search(q, 10, shortlist=f.n)
        assert f.bytes_read == read                # the codes and codebooks are cached
        decoded = f.decode()
    np.testing.assert_array_equal(I, brute_force(q, decoded, 10)[1])
    np.testing.assert_array_equal(I2, I)


def test_qncfile_prefix_search_reads_only_the_prefix_planes(qnc_path, data):
    _, q, _, _ = data
    with qinco_codec.open(qnc_path) as f:
        f.model                                    # noqa: B018 - model bytes read here, not below
        start = f.bytes_read
        D, I = f.search(q, 10, steps=3, shortlist=f.n)
        read = f.bytes_read - start
        stored = f.plane_sizes()
        dec3 = f.decode(steps=3)
    prefix = sum(sum(p[0] for p in chunk[:3]) for chunk in stored)
    rest = sum(sum(p[0] for p in chunk[3:]) for chunk in stored)
    assert prefix <= read < prefix + rest / 2, (read, prefix, rest)
    np.testing.assert_array_equal(I, brute_force(q, dec3, 10)[1])


def test_qncfile_search_refuses_bad_queries_before_reading_codes(qnc_path):
    with qinco_codec.open(qnc_path) as f:
        before = f.bytes_read
        with pytest.raises(InputError, match="dimension 50"):
            f.search(np.zeros((2, 3), np.float32))
        assert f.bytes_read == before


def test_qncfile_with_inverted_lists_uses_them(qnc_path, data, tmp_path):
    """A file with an ivf section (qinco_codec.add_ivf): every list probed with a full shortlist
    is brute force; a few lists return only rows of those lists; nprobe defaults to nlist/32."""
    _, q, _, _ = data
    with_ivf = tmp_path / "ivf.qnc"
    qinco_codec.add_ivf(qnc_path, 64, out=with_ivf)
    with qinco_codec.open(with_ivf) as f:
        decoded = f.decode()
        D, I = f.search(q, 10, shortlist=f.n, nprobe=64)
        index = f.search_index()
        assert index.ivf is not None and index.ivf.nlist == 64
        assert index.default_nprobe() == 2
        _, I2 = f.search(q, 10, nprobe=3)
        lists = engine.probe(q, index.ivf.centroids, 3)[0]
    np.testing.assert_array_equal(I, brute_force(q, decoded, 10)[1])
    for row_ids, probed in zip(I2, lists):
        assert set(index.ivf.lists.list_ids[row_ids[row_ids >= 0]]) <= set(probed)
