"""The rate-distortion figure: MSE (log scale) and R@1 against bytes per vector, one line per
method (our multi-rate prefixes as their own line). matplotlib with the Agg backend (no display)."""
import math

STYLE = {  # line -> (marker, linestyle)
    "qinco": ("o", "-"),
    "prefix": ("o", ":"),
    "faiss": ("s", "--"),
}


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


def plot_rd(rows, path, title=""):
    import matplotlib
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    from ..atomic import write_bytes_atomic

    fig, (ax_mse, ax_r1) = plt.subplots(1, 2, figsize=(13, 5.2))
    for name, pts in _lines(rows).items():
        kind = "prefix" if any("prefix_of" in p for p in pts) else pts[0]["family"]
        marker, ls = STYLE.get(kind, ("^", "-."))
        width = 2.2 if kind in ("qinco", "prefix") else 1.2
        x = [p["bytes"] for p in pts]
        mse = [p["mse"] for p in pts]
        ax_mse.plot(x, [v if v > 0 else float("nan") for v in mse], marker=marker, ls=ls, lw=width,
                    label=name)
        if all(p.get("R@1") is not None for p in pts):
            ax_r1.plot(x, [p["R@1"] for p in pts], marker=marker, ls=ls, lw=width, label=name)
    ticks = sorted({r["bytes"] for r in rows})
    for ax, ylabel in ((ax_mse, "MSE (log scale)"), (ax_r1, "R@1")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(ticks)
        ax.set_xticklabels([str(t) for t in ticks], fontsize=7)
        ax.minorticks_off()
        ax.set_xlabel("bytes per vector (codes only)")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
    ax_mse.set_yscale("log")
    ax_r1.set_ylim(0, 1.02)
    handles, labels = ax_mse.get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(6, max(1, math.ceil(len(labels) / 2))),
               fontsize=8, frameon=False)
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.1 + 0.03 * (len(labels) > 12), 1, 0.96))
    import io
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    write_bytes_atomic(path, buf.getvalue())
