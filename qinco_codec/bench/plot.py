"""The rate-distortion figure: MSE (log scale) and R@1 against bytes per vector, one line per
method (our multi-rate prefixes as their own line). matplotlib with the Agg backend (no display)."""
import math

def _lines(rows):
    """{line name: rows sorted by bytes}, in order of first appearance; a prefix line also gets
    the full-rate point of the model it is a prefix of."""
    lines = {}
    for r in rows:
        lines.setdefault(r["line"], []).append(r)
    for r in rows:
        if "prefix_of" in r:
            full = [q for q in rows if q["family"] == "qinco" and q["bytes"] == r["prefix_of"]
                    and "prefix_of" not in q and r["line"].startswith(q["line"] + " ")]
            if full and full[0] not in lines[r["line"]]:
                lines[r["line"]].append(full[0])
    return {k: sorted(v, key=lambda q: q["bytes"]) for k, v in lines.items()}


FAISS_COLORS = ["tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:brown", "tab:pink",
                "tab:gray", "tab:olive", "tab:cyan", "gold"]
OUR_COLORS = ["crimson", "black", "darkgreen", "navy", "darkviolet", "saddlebrown", "magenta"]


def plot_rd(rows, path, title="", variance=None):
    """Write the two-panel PNG. `variance` (of the evaluated vectors) floors the MSE axis at a
    relative MSE of 1e-4, so that float16's near-zero error does not flatten everything else."""
    import io

    import matplotlib
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    from ..formats.atomic import write_bytes_atomic

    fig, (ax_mse, ax_r1) = plt.subplots(1, 2, figsize=(13, 5.2))
    faiss_i, ours = 0, {}
    for name, pts in _lines(rows).items():
        prefix = any("prefix_of" in p for p in pts)
        if pts[0]["family"] == "qinco":
            base = name.split(" prefixes of ")[0]
            color = ours.setdefault(base, OUR_COLORS[len(ours) % len(OUR_COLORS)])
            style = dict(marker="o", ls=":" if prefix else "-", lw=2.2, color=color, zorder=3)
        else:
            style = dict(marker="s", ls="--", lw=1.2, ms=5,
                         color=FAISS_COLORS[faiss_i % len(FAISS_COLORS)])
            faiss_i += 1
        x = [p["bytes"] for p in pts]
        ax_mse.plot(x, [p["mse"] if p["mse"] > 0 else float("nan") for p in pts], label=name,
                    **style)
        if all(p.get("R@1") is not None for p in pts):
            ax_r1.plot(x, [p["R@1"] for p in pts], label=name, **style)
    sizes = sorted({r["bytes"] for r in rows})
    ticks = [2 ** k for k in range(int(math.log2(sizes[0])), int(math.ceil(math.log2(sizes[-1]))) + 1)]
    for ax, ylabel in ((ax_mse, "MSE (log scale)"), (ax_r1, "R@1")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(ticks)
        ax.set_xticklabels([str(t) for t in ticks])
        ax.minorticks_off()
        ax.set_xlabel("bytes per vector (codes only, log scale)")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="major", alpha=0.3)
    ax_mse.set_yscale("log")
    positive = [r["mse"] for r in rows if r["mse"] > 0]
    if variance and positive:
        floor = max(min(positive), 1e-4 * variance) / 1.5
        ax_mse.set_ylim(bottom=floor, top=max(positive) * 1.5)
    ax_r1.set_ylim(0, 1.02)
    handles, labels = ax_mse.get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(6, max(1, math.ceil(len(labels) / 2))),
               fontsize=8, frameon=False)
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.1 + 0.03 * (len(labels) > 12), 1, 0.96))
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    write_bytes_atomic(path, buf.getvalue())
