"""Merge concurrent qinco-bench search runs on the same vectors (ours per rate, faiss) into one
result and write search.json / .md / .png with the benchmark's own writer."""
import json
import sys

from qinco_codec.bench import search as bench

out, first, *others = sys.argv[1:]
result = json.load(open(first))
s0 = result["settings"]
s0["merged_runs"] = [{"date": result["environment"]["date"], "methods": s0["methods"],
                      "bytes": s0["bytes"], "shortlist": s0["shortlist"],
                      "our_nprobe": s0["our_nprobe"], "ivf_variants": s0["ivf_variants"],
                      "loadavg_start": result["environment"].get("loadavg_start"),
                      "loadavg_end": result["environment"].get("loadavg_end")}]
for path in others:
    other = json.load(open(path))
    s, o = result["settings"], other["settings"]
    differ = [k for k in bench.BASELINE_KEYS if s.get(k) != o.get(k)]
    assert not differ, differ
    result["rows"] += other["rows"]
    result["builds"] += other["builds"]
    result["warnings"] += other["warnings"]
    result["notes"] += [t for t in other["notes"] if t not in result["notes"]]
    s["bytes"] = sorted(set(s["bytes"]) | set(o["bytes"]))
    s["methods"] = list(dict.fromkeys(s["methods"] + o["methods"]))
    s["total_seconds"] = max(s["total_seconds"], o["total_seconds"])
    s["merged_runs"].append({"date": other["environment"]["date"],
        "methods": o["methods"], "bytes": o["bytes"], "shortlist": o["shortlist"],
        "our_nprobe": o["our_nprobe"], "ivf_variants": o["ivf_variants"], "loadavg_start": other["environment"].get("loadavg_start"),
        "loadavg_end": other["environment"].get("loadavg_end")})
result["notes"].append("merged from concurrent runs on the same vectors and faiss settings "
                       "(settings.merged_runs): " + ", ".join(sys.argv[2:]))
result["complete"] = all(json.load(open(p))["complete"] for p in sys.argv[2:])
print(bench.write_outputs(result, out))
