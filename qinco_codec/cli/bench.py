"""qinco-bench: side-by-side benchmarks against faiss (speed, rate-distortion).

The subcommands live in their own modules (bench_speed.py, bench_rd.py, bench_search.py); this
one only groups them.
faiss is an optional extra (`pip install qinco-codec[bench]`), needed only here.
"""
from .bench_filesize import filesize
from .bench_rd import rd
from .bench_search import search
from .bench_speed import speed
from .common import group

EXAMPLE = """
qinco-bench speed --preset qinco1-L2 --dim 128 --bytes 8 --threads 1
qinco-bench rd --dataset glove50 --bytes 8 16 --budget-minutes 20 --out docs/rd-glove50
qinco-bench search --dataset glove50 --bytes 8 16 --train-minutes 5 --out docs/search-glove50
qinco-bench filesize --dataset glove50 --sizes 10000 30000 100000 --bytes 16 --out docs/filesize-glove50
"""


@group("qinco-bench", EXAMPLE)
def main():
    """Benchmarks that put qinco-codec next to faiss, measured in the same process on the same
    vectors: `speed` (encode/decode throughput, FLOPs, fraction of the matmul bound) and `rd`
    (rate-distortion: MSE and recall against bytes per vector) and `search` (recall against
    queries per second, our search engine beside faiss's compressed indexes)."""


main.add_command(speed)
main.add_command(rd)
main.add_command(search)
main.add_command(filesize)


if __name__ == "__main__":
    main()
