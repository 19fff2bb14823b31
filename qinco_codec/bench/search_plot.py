"""The search figure of `qinco-bench search`: R@10 against queries per second (log scale), one
panel per rate (rows) and thread count (columns), one curve per method (its Pareto frontier, as
ann-benchmarks draws them), each exhaustive ceiling as a star. Colours as in the rate-distortion
figure (bench/plot.py); matplotlib with the Agg backend (no display)."""
import io
import math

from .plot import FAISS_COLORS, OUR_COLORS
from .search import frontier, qps_at


def _styles(rows):
    """{curve: matplotlib style}: ours in OUR_COLORS (solid), faiss curves in FAISS_COLORS
    (dashed), ceilings as stars; a curve keeps its colour at every rate."""
    styles, ours, theirs = {}, 0, 0
    for r in rows:
        line = r["curve"]
        if line in styles:
            continue
        if r["family"] == "qinco":
            color, ours = OUR_COLORS[ours % len(OUR_COLORS)], ours + 1
        else:
            color, theirs = FAISS_COLORS[theirs % len(FAISS_COLORS)], theirs + 1
        if r["ceiling"]:
            styles[line] = dict(marker="*", ms=13, ls="none", color=color, zorder=4)
        elif r["family"] == "qinco":
            styles[line] = dict(marker="o", ls="-", lw=2.2, color=color, zorder=3)
        else:
            styles[line] = dict(marker="s", ls="--", lw=1.2, ms=5, color=color)
    return styles


def plot_search(rows, path, threads, title=""):
    """Write the PNG: R@10 against QPS at each thread count, one row of panels per rate."""
    import matplotlib
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    from ..formats.atomic import write_bytes_atomic

    rates = sorted({r["bytes"] for r in rows})
    threads = list(threads)
    styles = _styles(rows)
    legend_rows = math.ceil(len(styles) / 3)
    height = 4.2 * len(rates) + 0.22 * legend_rows + 0.5
    fig, axes = plt.subplots(len(rates), len(threads), figsize=(6.5 * len(threads), height),
                             squeeze=False)
    for i, b in enumerate(rates):
        for j, t in enumerate(threads):
            ax = axes[i][j]
            at_rate = [r for r in rows if r["bytes"] == b]
            for line in dict.fromkeys(r["curve"] for r in at_rate):
                pts = frontier([r for r in at_rate if r["curve"] == line], t)
                if pts:
                    ax.plot([qps_at(p, t) for p in pts], [p["R@10"] for p in pts], label=line,
                            **styles[line])
            ax.set_xscale("log")
            ax.set_xlabel(f"queries per second, {t} thread{'s' if t > 1 else ''} (log scale)")
            ax.set_ylabel("R@10")
            ax.set_title(f"{b} bytes per vector (codes only)", fontsize=10)
            ax.grid(True, which="both", alpha=0.3)
            shown = [r["R@10"] for r in at_rate if r.get("R@10") is not None]
            ax.set_ylim(max(0.0, min(shown, default=0.0) - 0.05), 1.005)
    handles = {}
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, h)
    labels = [k for k in styles if k in handles]
    fig.legend([handles[k] for k in labels], labels, loc="lower center", ncol=3, fontsize=8,
               frameon=False)
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, (0.22 * legend_rows + 0.2) / height, 1, 1 - 0.4 / height))
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    write_bytes_atomic(path, buf.getvalue())
