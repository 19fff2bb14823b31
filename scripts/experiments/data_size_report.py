"""Table and plot of MSE against training-set size (issue 13), from one directory holding the
`qinco-bench rd --train-size N` runs (subdirectories nN/rd.json: faiss RQ and the default
network, same number of epochs at every N) and data_size_network.py's shapes.jsonl (other
network shapes, same epochs and samples).

    python scripts/experiments/data_size_report.py docs/experiments/2026-12-03-data-size-minilm384
"""
import argparse
import glob
import json
import os


def rows(run_dir):
    """(n_train, label, mse, detail dict) of every measured point."""
    out = []
    for path in sorted(glob.glob(os.path.join(run_dir, "n*", "rd.json"))):
        result = json.load(open(path))
        n = result["settings"]["n_train"]
        for r in result["rows"]:
            if r["family"] == "qinco":
                p = r["params"]
                out.append((n, "network (qinco2-XS, default shape)", r["mse"],
                            {"epochs": p.get("epochs"), "best_val_mse": p.get("val_mse"),
                             "parameters": p.get("parameters")}))
            elif r["method"].startswith("RQ"):
                out.append((n, "faiss RQ, beam 5", r["mse"], {}))
    shapes = os.path.join(run_dir, "shapes.jsonl")
    if os.path.exists(shapes):
        for r in map(json.loads, open(shapes)):
            label = {"narrow": "network, narrow (embed 32, hidden 64)",
                     "shared": "network, one shared by all steps"}.get(r["shape"], r["shape"])
            out.append((r["n_train"], label, r["mse_heldout"],
                        {"epochs": r["epochs"], "best_val_mse": r["best_val_mse"],
                         "parameters": r["params"], "train_batch_mse_last": r["train_batch_mse_last"]}))
    return sorted(out, key=lambda t: (t[1], t[0]))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir")
    args = ap.parse_args()
    points = rows(args.run_dir)
    rq = {n: mse for n, label, mse, _ in points if label.startswith("faiss")}
    lines = ["| training vectors | model | held-out MSE | x faiss RQ (same n) | epochs run | "
             "best validation MSE | parameters |", "|---|---|---|---|---|---|---|"]
    for n, label, mse, d in points:
        ratio = f"{mse / rq[n]:.3f}" if n in rq else "-"
        lines.append(f"| {n:,} | {label} | {mse:.4f} | {ratio} | {d.get('epochs', '-') or '-'} | "
                     f"{d['best_val_mse']:.4f} | {d['parameters']:,} |" if d else
                     f"| {n:,} | {label} | {mse:.4f} | {ratio} | - | - | - |")
    table = "\n".join(lines)
    with open(os.path.join(args.run_dir, "table.md"), "w") as f:
        f.write(table + "\n")
    print(table)
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(6, 4))
    for label in sorted({p[1] for p in points}):
        pts = sorted((n, mse) for n, lab, mse, _ in points if lab == label)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label)
    ax.set_xscale("log")
    sizes = sorted({p[0] for p in points})      # a plain tick at every measured size
    ax.set_xticks(sizes, [f"{n / 1000:g}k" for n in sizes])
    ax.minorticks_off()
    ax.set_xlabel("training vectors")
    ax.set_ylabel("held-out MSE (16 B/vector)")
    ax.set_title("384-d MiniLM: MSE against training-set size, same steps")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(args.run_dir, "data-size.png"), dpi=120)


if __name__ == "__main__":
    main()
