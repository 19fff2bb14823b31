"""qinco-bench speed end to end on tiny sizes (no timing assertions), its FLOP counts against a hand
count, its usage errors, and its measurement under load (--busy). The encoder and decoder it
measures are tested in test_codec.py."""
import json

import pytest
import torch

from qinco_codec.config import ModelConfig

from qinco_codec.bench import speed

faiss = pytest.importorskip("faiss")

from cli_util import cli_runner  # noqa: E402
from qinco_codec.cli.bench import main as bench_main  # noqa: E402

TINY = ["--dim", "8", "--bytes", "3", "--n", "200", "--threads", "1", "--train-seconds", "0",
        "--train-size", "600", "--lsq-train-size", "300", "--time-limit", "0.05", "--quiet"]



def invoke(*args):
    return cli_runner().invoke(bench_main, ["speed", *[str(a) for a in args]])


# ---------------------------------------------------------------- the command
@pytest.fixture(scope="module")
def qinco2_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("speed")
    result = invoke("--preset", "qinco2-XS", *TINY, "--json", out / "r.json", "--out", out / "md")
    assert result.exit_code == 0, (result.stderr, result.exception)
    return result, out


def test_qinco2_run_prints_every_mode(qinco2_run):
    result, out = qinco2_run
    data = json.loads((out / "r.json").read_text())
    labels = [m["label"] for m in data["modes"]]
    for needle in ("A=256 (exhaustive), B=1", "A=16, B=1", "A=16, B=4", "A=32, B=8", "ours bf16",
                   "qinco1-L2 reference", "faiss IndexQINCo", "faiss RQ (beam 5)", "faiss LSQ"):
        assert any(needle in label for label in labels), (needle, labels)
    for label in labels:
        assert label in result.output, label
    assert "threads = 1" in result.output and "matmul GFLOP/s" in result.output
    assert result.stderr == ""   # --quiet


def test_json_and_markdown_outputs(qinco2_run):
    _, out = qinco2_run
    data = json.loads((out / "r.json").read_text())
    assert {"benchmark", "config", "machine", "matmul_gflops", "modes", "rows", "scaling", "notes"} <= set(data)
    assert data["benchmark"] == "speed" and data["config"]["threads"] == [1]
    assert set(data["matmul_gflops"]["1"]) >= {"main encode float32", "main encode bfloat16",
                                               "main decode float32", "ref encode float32"}
    modes = {m["key"]: m for m in data["modes"]}
    for m in modes.values():
        assert m["n"] >= 1 and m["mse"] > 0
    for key in ("fp32 A16 B1", "fp32 A0 B1", "bf16 A16 B4"):
        assert modes[key]["encode_flops"] > 0 and modes[key]["decode_flops"] > 0
    assert modes["fp32 A16 B1"]["mse_ratio"] > 0 and modes["fp32 A16 B1"]["ref"] == "fp32 A0 B1"
    assert 0 <= modes["faiss IndexQINCo"]["same_codes"] <= 1
    rows = {r["mode"]: r for r in data["rows"]}
    assert set(rows) == set(modes)
    for key in ("fp32 A0 B1", "fp32 A16 B4", "faiss IndexQINCo"):
        r = rows[key]
        assert r["encode_vps"] > 0 and r["decode_vps"] > 0 and r["encode_x_faiss"] > 0
        assert r["encode_bound_fraction"] > 0 and r["decode_bound_fraction"] > 0
    assert rows["fp32 A16 B1"]["encode_x_exhaustive"] > 0
    assert rows["faiss RQ"]["encode_vps"] > 0 and "decode_vps" not in rows["faiss RQ"]
    md = (out / "md" / "speed.md").read_text()
    assert "| mode |" in md and "faiss IndexQINCo" in md
    assert json.loads((out / "md" / "speed.json").read_text())["modes"] == data["modes"]


def test_qinco1_two_thread_counts_and_scaling():
    result = invoke("--preset", "qinco1-L2", *TINY[:6], "--n", "60", "--threads", "1", "2",
                    *TINY[8:], "--no-bf16", "--json", "-")
    assert result.exit_code == 0, (result.stderr, result.exception)
    data = json.loads(result.output)
    assert data["config"]["threads"] == [1, 2]
    assert {r["threads"] for r in data["rows"]} == {1, 2}
    keys = [m["key"] for m in data["modes"]]
    assert keys == ["fp32 A0 B1", "faiss IndexQINCo", "faiss RQ", "faiss LSQ"]
    faiss_mode = data["modes"][1]
    assert faiss_mode["same_codes"] == 1.0       # faiss IndexQINCo carries the same weights
    assert {s["mode"] for s in data["scaling"]} == set(keys)


def test_data_measures_the_given_vectors(tmp_path):
    """--data / --train: the rows measured are the file's (its dimension, not --dim's default),
    so the MSE of each mode is that of those vectors; a dimension that does not fit is one line."""
    import numpy as np
    rng = np.random.default_rng(1)
    base = (rng.normal(size=(300, 12)) * np.linspace(0.2, 3.0, 12)).astype(np.float32)
    train = (rng.normal(size=(700, 12)) * np.linspace(0.2, 3.0, 12)).astype(np.float32)
    np.save(tmp_path / "base.npy", base)
    np.save(tmp_path / "train.npy", train)
    args = [a for a in TINY if a not in ("--dim", "8")]
    result = invoke("--preset", "qinco2-XS", *args, "--data", tmp_path / "base.npy", "--train",
                    tmp_path / "train.npy", "--json", tmp_path / "r.json")
    assert result.exit_code == 0, (result.stderr, result.exception)
    data = json.loads((tmp_path / "r.json").read_text())
    assert "base.npy[:200]" in data["config"]["vectors"] and "train.npy[:600]" in data["config"]["vectors"]
    assert data["config"]["dim"] == 12
    scale = float((base[:200] ** 2).sum(1).mean())
    assert all(0 < m["mse"] < scale for m in data["modes"] if m.get("mse") is not None)
    bad = invoke("--preset", "qinco2-XS", *TINY, "--data", tmp_path / "base.npy")
    assert bad.exit_code == 1 and "dimension 12, expected 8" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1
    alone = invoke("--preset", "qinco2-XS", *TINY, "--train", tmp_path / "train.npy")
    assert alone.exit_code == 2 and "--train goes with --data" in alone.stderr


@pytest.mark.parametrize("args,code,match", [
    (["--settings", "16"], 1, "--settings"),
    (["--settings", "16/0"], 1, "B >= 1"),
    (["--threads", "0"], 2, "--threads"),
    (["--threads", "x"], 2, "--threads"),
    (["--preset", "nope"], 2, "--preset"),
    (["--K", "100"], 1, "power of two"),
    (["--model", "/nonexistent/model.safetensors"], 1, "model.safetensors"),
])
def test_bad_options_give_one_line_errors(args, code, match):
    result = invoke(*args, "--n", "10", "--train-seconds", "0", "--quiet")
    assert result.exit_code == code, (result.exit_code, result.stderr, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("qinco-bench: error: "), result.stderr
    assert match in lines[0] and "Traceback" not in result.stderr


def test_parse_settings():
    assert speed.parse_settings("0/1,16/4 32/8") == ((0, 1), (16, 4), (32, 8))


# ---------------------------------------------------------------- FLOP counts
def test_flop_counts_match_a_hand_count():
    cfg = ModelConfig(arch="qinco2", dim=4, embed=3, hidden=5, L=2, K=8, M=3)
    # step 1: K·D = 32 MACs. Steps 2 and 3, B = 2 hypotheses each:
    #   per hypothesis  D·de (W_x x̂) 12 + de·h (W1 W_x x̂) 15 + K·D (pre-selection) 32 = 59
    #   per candidate   h·de 15 + (L−1)·2·de·h 30 + de·D (out) 12 + D (error) 4 = 61, A = 2 of them
    #   per step        2 · (59 + 2·61) = 362
    assert speed.encode_flops(cfg, A=2, B=2) == 2 * (32 + 2 * 362)
    # exhaustive greedy: no pre-selection distances, K = 8 candidates, 1 hypothesis
    assert speed.encode_flops(cfg, A=0, B=1) == 2 * (32 + 2 * (12 + 15 + 8 * 61))
    assert speed.encode_flops(cfg, A=8, B=1) == speed.encode_flops(cfg, A=0, B=1)   # A >= K: all K
    # decode per step: D·de 12 + L·2·de·h 60 + de·D 12 = 84, two steps
    assert speed.decode_flops(cfg) == 2 * 2 * 84
    q1 = ModelConfig(arch="qinco1", dim=4, embed=0, hidden=5, L=1, K=8, M=2)
    # QINCo1 (de = D = 4), L = 1: per hypothesis 16 + 20; per candidate h·D 20 + D 4 = 24
    assert speed.encode_flops(q1, A=4, B=1) == 2 * (32 + (16 + 20 + 8 * 24))   # no pre-selection
    # faiss: per candidate 2D·D 32 + L·2·D·h 40 + D 4; decode per step 32 + 40
    assert speed.faiss_qinco_encode_flops(q1) == 2 * (32 + 8 * 76)
    assert speed.faiss_qinco_decode_flops(q1) == 2 * 72


def test_matmul_shapes_follow_the_architecture():
    cfg = ModelConfig(arch="qinco2", dim=4, embed=3, hidden=5, L=2, K=8, M=3)
    assert speed.matmul_shapes(cfg, 10) == [(10, 5, 3, 1), (10, 3, 5, 1), (10, 5, 3, 1), (10, 3, 4, 1)]
    rate = speed.matmul_rate([(64, 8, 8, 1)], torch.float32, torch.device("cpu"), min_seconds=0.001, repeats=1)
    assert rate > 0


# ---------------------------------------------------------------- under load (--busy)
def test_busy_compares_thread_counts_and_wait_policies():
    """--busy 1: every (wait policy, thread count) pair measured in its own process, which runs
    with the policy asked for and produces the same codes; ratios to 1 thread."""
    result = invoke("--busy", "1", "--wait-policy", "passive", "active,unset", "--threads", "2,1",
                    *TINY[:6], "--n", "40", *TINY[8:], "--json", "-")
    assert result.exit_code == 0, (result.stderr, result.exception)
    data = json.loads(result.output)
    assert data["benchmark"] == "speed-load" and data["config"]["busy"] == 1
    runs = data["runs"]
    assert [(r["wait_policy"], r["threads"]) for r in runs] == [
        ("PASSIVE", 2), ("PASSIVE", 1), ("ACTIVE", 2), ("ACTIVE", 1), ("UNSET", 2), ("UNSET", 1)]
    for r in runs:   # what the worker's environment held when it imported torch
        assert r["wait_policy_in_process"] == r["wait_policy"].replace("UNSET", "unset")
        assert r["torch_threads"] == r["threads"]
        assert r["encode_vps"] > 0 and r["decode_vps"] > 0 and 1 <= r["n"] <= 40
        assert r["encode_x_one_thread"] > 0 and r["decode_x_one_thread"] > 0
    assert len({r["codes_sha256"] for r in runs}) == 1
    assert not any("differ" in n or "still running" in n for n in data["notes"]), data["notes"]


def test_busy_default_threads_text_and_files(tmp_path, monkeypatch):
    """Without --threads: the default count (OMP_NUM_THREADS here) against 1; text and files."""
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")   # the policy in force, whatever the load
    result = invoke("--busy", "0", *TINY[:6], "--n", "20", *TINY[8:], "--out", tmp_path)
    assert result.exit_code == 0, (result.stderr, result.exception)
    data = json.loads((tmp_path / "load.json").read_text())
    assert [r["threads"] for r in data["runs"]] == [2, 1] and data["config"]["default_threads"] == 2
    assert [r["wait_policy"] for r in data["runs"]] == ["PASSIVE", "PASSIVE"]   # the one in force
    assert "OMP_WAIT_POLICY" in result.output and "enc x 1 thread" in result.output
    assert "| OMP_WAIT_POLICY |" in (tmp_path / "load.md").read_text()


@pytest.mark.parametrize("args,code,match", [
    (["--wait-policy", "active"], 2, "--wait-policy goes with --busy"),
    (["--busy", "0", "--wait-policy", "lazy"], 1, "--wait-policy: expected one of PASSIVE, ACTIVE, UNSET"),
    (["--busy", "-1"], 2, "--busy"),
])
def test_busy_usage_errors(args, code, match):
    result = invoke(*args, "--n", "10", "--train-seconds", "0", "--quiet")
    assert result.exit_code == code, (result.exit_code, result.stderr, result.exception)
    assert match in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_busy_load_starts_and_stops_its_processes():
    from qinco_codec.bench.load import BusyLoad

    with BusyLoad(2) as load:
        assert load.alive() == 2
        procs = list(load.procs)
    assert all(p.poll() is not None for p in procs)


def test_require_faiss_says_how_to_install(monkeypatch):
    """One importer for faiss (qinco_codec/optional.py): the benchmarks and to_faiss share it."""
    import sys

    from qinco_codec.errors import InputError
    from qinco_codec.optional import require_faiss

    assert require_faiss("IndexQINCo") is faiss
    with pytest.raises(InputError, match=r"has no IndexNothing: faiss >= 1.9 is needed"):
        require_faiss("IndexNothing")
    monkeypatch.setitem(sys.modules, "faiss", None)       # import faiss now raises ImportError
    with pytest.raises(InputError, match=r"faiss is not installed: pip install qinco-codec\[bench\]"):
        require_faiss()
    result = invoke("--n", "10", "--train-seconds", "0", "--quiet")
    assert result.exit_code == 1 and "faiss is not installed" in result.stderr


@pytest.mark.parametrize("spelling", [["1", "all"], ["1,all"], ["1", "--threads", "all"], ["1", "1,all"]])
def test_threads_spellings_agree(spelling):
    from qinco_codec.cli.bench_speed import parse_threads, speed

    values = speed.make_context("speed", ["--threads", *spelling]).params["threads"]
    assert parse_threads(values, cores=6) == (1, 6)


# ---------------------------------------------------------------- cost against the dimension (--dims)
DIMS_TINY = ["--dims", "8,80", "--bytes", "3", "--n", "120", "--threads", "1", "--train-size", "400",
             "--time-limit", "0.02", "--quiet"]


@pytest.fixture(scope="module")
def dims_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("dims")
    result = invoke(*DIMS_TINY, "--json", out / "r.json", "--out", out / "md")
    assert result.exit_code == 0, (result.stderr, result.exception)
    return result, json.loads((out / "r.json").read_text()), out


def test_dims_records_follow_the_architecture(dims_run):
    """One record per dimension, its FLOPs those architecture.py counts for the default preset at
    that d, the encoder's own choice of error its `expands_error`, and every rate measured."""
    from qinco_codec import architecture as arch
    from qinco_codec.presets import DEFAULT_PRESET

    _, data, _ = dims_run
    assert data["benchmark"] == "speed-dims" and data["config"]["preset"] == DEFAULT_PRESET
    assert [r["dim"] for r in data["dims"]] == [8, 80] and data["config"]["threads"] == 1
    for r in data["dims"]:
        cfg = ModelConfig.from_preset(DEFAULT_PRESET, r["dim"], 3)
        assert r["encode_flops"] == arch.encode_flops(cfg, cfg.A, cfg.B)
        assert (r["A"], r["B"]) == (cfg.A, cfg.B)   # the search at that d, as the report prints it
        assert r["decode_flops"] == arch.decode_flops(cfg)
        assert r["default_path"] == ("expanded" if arch.expands_error(cfg.step) else "direct")
        for suffix in ("", "_cpu"):   # per wall-clock second and per CPU second
            assert r[f"encode_vps{suffix}"] == r[f"encode_vps_{r['default_path']}{suffix}"]
            for key in ("encode_vps_expanded", "encode_vps_direct", "decode_vps", "train_samples_per_s",
                        "faiss_rq_encode_vps"):
                assert r[key + suffix] > 0, key + suffix
        assert 0 < r["train_encode_share"] < 1 and r["train_batches"] >= 2 and 1 <= r["n"] <= 120
    assert [r["default_path"] for r in data["dims"]] == ["direct", "expanded"]   # de = 64 < 80


def test_dims_expanded_and_direct_errors_give_the_same_codes(dims_run):
    _, data, _ = dims_run
    for r in data["dims"]:
        assert r["same_codes"] >= 0.99, r["same_codes"]
        assert abs(r["mse_expanded"] - r["mse_direct"]) <= 1e-5 * r["mse_direct"]


def test_dims_cost_ratios_and_reports(dims_run):
    result, data, out = dims_run
    first, last = data["dims"]
    ratios = data["cost_ratios"]
    assert all(v == 1.0 for v in ratios[0].values())
    assert ratios[1]["dim"] == 10.0
    assert ratios[1]["encode_flops"] == pytest.approx(last["encode_flops"] / first["encode_flops"])
    for key in ("encode_vps_cpu", "train_samples_per_s_cpu", "faiss_rq_encode_vps_cpu"):   # costs: CPU time
        assert ratios[1][key] == pytest.approx(first[key] / last[key]), key
    assert "cost per vector at d over the cost at d = 8" in result.output
    md = (out / "md" / "speed-dims.md").read_text()
    assert "| d | n | A/B | own choice |" in md and "| encode FLOPs |" in md
    assert json.loads((out / "md" / "speed-dims.json").read_text())["dims"] == data["dims"]


def test_dims_training_steps_move_the_networks_off_zero():
    """The encoder is measured after the timed training batches: the networks (zero at the RQ
    start, where both errors agree trivially) have then moved."""
    import numpy as np

    from qinco_codec.bench.dscaling import measure_training
    from qinco_codec.model import QincoModel
    from qinco_codec.rq_init import init_from_rq

    model = QincoModel.from_preset("qinco2-XS", 80, 3)
    train = np.random.default_rng(0).standard_normal((300, 80)).astype(np.float32)
    init_from_rq(model, train)
    assert not model.steps[0].out_proj.weight.any()
    rec = measure_training(model, train, batch_size=64, time_limit=0.01, seed=0)
    assert model.steps[0].out_proj.weight.any() and not model.training
    assert rec["train_batches"] >= 2 and rec["train_batch_size"] == 64
    assert rec["train_samples_per_s"] > 0 and rec["train_samples_per_s_cpu"] > 0


@pytest.mark.parametrize("args,code,match", [
    (["--dims", "8", "--dim", "50"], 2, "--dim does not go with --dims"),
    (["--dims", "8", "--busy", "0"], 2, "--busy does not go with --dims"),
    (["--dims", "8", "--threads", "1,2"], 2, "one thread count"),
    (["--dims", "8,0"], 1, "--dims must be positive"),
    (["--dims", "x"], 2, "--dims"),
])
def test_dims_usage_errors(args, code, match):
    result = invoke(*args, "--n", "10", "--quiet")
    assert result.exit_code == code, (result.exit_code, result.stderr, result.exception)
    assert match in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
