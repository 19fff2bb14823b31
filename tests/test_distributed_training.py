"""Data-parallel training under torchrun (gloo, 2 CPU processes): one valid model written once,
ranks that end with the same weights as each other and near a single-process run of the same
recipe, a killed rank that ends the job with one clear error and no hang, a resume that
continues; and the distributed.Group helpers, which with one process must change nothing."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch
from safetensors import safe_open

import qinco_codec
from qinco_codec import distributed
from qinco_codec.distributed import Group, RankLostError
from qinco_codec.errors import InputError
from qinco_codec.training import _Clock

TORCHRUN_ENV = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "LOCAL_WORLD_SIZE",
                "GROUP_RANK", "ROLE_RANK", "TORCHELASTIC_RUN_ID")
GLOO_ERROR = ("[/__w/pytorch/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:553] Connection "
              "closed by peer [127.0.0.1]:62140. This is typically caused by a remote worker crashing.")


def _env():
    """This environment without any torchrun variables (the test may itself run under one), one
    thread per process (two processes share the CI machine's two cores)."""
    env = {k: v for k, v in os.environ.items() if k not in TORCHRUN_ENV}
    env.update(OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE", QINCO_DIST_TIMEOUT="120")
    return env


def _torchrun(*args, nproc=2):
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
            *map(str, args)]


def _train_cli(data, out, ckpt, epochs):
    return _torchrun("-m", "qinco_codec.cli.train", data, "-o", out, "--bytes", 2, "--epochs", epochs,
                     "--val", 500, "--resume", ckpt, "-f")


def _why(run):
    """What a failed torchrun said: every rank's error lines, then the end of its report."""
    lines = [line for line in run.stderr.splitlines() if "rror" in line and "elastic" not in line]
    return "\n".join(lines[-20:]) + "\n...\n" + run.stderr[-1500:]


def _checkpoint_history(path):
    with safe_open(str(path), "pt") as f:
        return json.loads(f.metadata()["run"])["history"]


@pytest.fixture(scope="module")
def glove_file(tmp_path_factory, glove_train):
    path = tmp_path_factory.mktemp("dist") / "train.npy"
    np.save(path, glove_train[:12000])
    return path


# ---------------------------------------------------------------- two processes under torchrun
@pytest.mark.slow
def test_two_processes_train_one_model_whose_loss_fell(tmp_path, glove_file):
    out, ckpt = tmp_path / "model.safetensors", tmp_path / "run.ckpt"
    run = subprocess.run(_train_cli(glove_file, out, ckpt, 2), env=_env(), capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, _why(run)
    assert run.stdout.count("model: ") == 1 and "epochs: 2" in run.stdout  # rank 0 alone reports
    assert run.stderr.count("RQ start") >= 1 and "[rank1]" not in run.stderr
    model = qinco_codec.load_model(out)
    assert model.M == 2 and model.config.trained["epochs"] == 2
    assert model.config.trained["samples"] == 2 * 32768  # an epoch counts both ranks' samples once
    history = _checkpoint_history(ckpt)
    assert [h["epoch"] for h in history] == [0, 1, 2]
    assert history[2]["train_mse"] < history[1]["train_mse"]  # the loss fell
    assert model.config.trained["val_mse"] == min(h["val_mse"] for h in history)  # the best was kept
    x = np.load(glove_file)[-500:]  # the model decodes what it encodes as well as validation says
    mse = float(((model.decode(model.encode(x)) - x) ** 2).sum(1).mean())
    assert mse == pytest.approx(history[0]["val_mse"], rel=0.1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors", "run.ckpt"]


SCRIPT = textwrap.dedent("""
    # Under torchrun: train once per option set in argv[2]; each rank writes what it ended with.
    import hashlib, json, sys, time
    import numpy as np
    import qinco_codec
    from qinco_codec import distributed

    x, reports = np.load(sys.argv[1]), []
    for options in json.loads(sys.argv[2]):
        t0 = time.monotonic()
        result = qinco_codec.train(x, **options, return_history=True)
        h = hashlib.sha256()
        for k, v in sorted(result.model.state_dict().items()):
            h.update(k.encode()); h.update(v.numpy().tobytes())
        reports.append({"sha": h.hexdigest(), "history": result.history, "seconds": time.monotonic() - t0,
                        "trained": result.model.config.trained})
    with open(f"{sys.argv[3]}.{distributed.launched_rank()}", "w") as f:
        json.dump(reports, f)
""")

EPOCHS_RUN = dict(preset="qinco2-XS", steps=4, epochs=2, samples_per_epoch=4088, batch_size=511, val=500,
                  noise=0.05, quiet=True)
BUDGET_RUN = dict(preset="qinco2-XS", steps=2, max_minutes=0.2, samples_per_epoch=2048, batch_size=256,
                  val=500, quiet=True)


@pytest.mark.slow
def test_ranks_end_equal_and_match_one_process_at_equal_samples(tmp_path, glove_file):
    """The library call under torchrun: both ranks hold bit-identical weights (averaged gradients,
    identical codeword resets), the samples seen are those of one process, and the validation MSE
    is the single-process run's within float noise. An odd batch size gives the ranks unequal
    shares (256 and 255 rows), noise exercises the shared generator. A run bounded by a budget
    (its learning rate follows the clock) ends on every rank at once, also bit-identical, within
    its budget. (Two train() calls in one process: the second reuses the process group; joining
    a new one raced with torchrun's stale rendezvous keys.)"""
    script = tmp_path / "train_script.py"
    script.write_text(SCRIPT)
    runs = json.dumps([EPOCHS_RUN, BUDGET_RUN])
    run = subprocess.run(_torchrun(script, glove_file, runs, tmp_path / "rank"), env=_env(),
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, _why(run)
    ranks = [json.loads((tmp_path / f"rank.{r}").read_text()) for r in (0, 1)]
    for by_epochs_or_budget in (0, 1):
        r0, r1 = ranks[0][by_epochs_or_budget], ranks[1][by_epochs_or_budget]
        assert r0["sha"] == r1["sha"] and r0["history"] == r1["history"]
    budget = ranks[0][1]
    assert len(budget["history"]) >= 2 and budget["seconds"] < BUDGET_RUN["max_minutes"] * 60 + 10

    two = ranks[0][0]
    single = qinco_codec.train(np.load(glove_file), **EPOCHS_RUN, return_history=True)
    assert two["trained"]["samples"] == single.model.config.trained["samples"] == 2 * 8 * 511
    assert [h["epoch"] for h in two["history"]] == [h["epoch"] for h in single.history] == [0, 1, 2]
    assert two["history"][0]["val_mse"] == pytest.approx(single.history[0]["val_mse"], rel=1e-6)
    for h2, h1 in zip(two["history"][1:], single.history[1:]):
        assert h2["val_mse"] == pytest.approx(h1["val_mse"], rel=2e-3)
        assert h2["train_mse"] == pytest.approx(h1["train_mse"], rel=2e-3)


def _pid_of_rank(rank, marker):
    """The pid of the worker process of `rank` whose command line contains `marker` (from /proc:
    torchrun gives every worker RANK in its environment)."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read()
            with open(f"/proc/{pid}/environ", "rb") as f:
                environ = f.read().split(b"\0")
        except OSError:
            continue
        if marker.encode() in cmdline and b"torch.distributed.run" not in cmdline \
                and f"RANK={rank}".encode() in environ:
            return int(pid)
    return None


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the rank's process in /proc")
def test_killed_rank_ends_the_job_with_one_error_and_resume_continues(tmp_path, glove_file):
    out, ckpt = tmp_path / "model.safetensors", tmp_path / "run.ckpt"
    job = subprocess.Popen(_train_cli(glove_file, out, ckpt, 3), env=_env(), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while not ckpt.exists() and job.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert ckpt.exists(), "no checkpoint was written"
        victim = _pid_of_rank(1, str(out))
        assert victim is not None
        os.kill(victim, signal.SIGKILL)
        killed = time.monotonic()
        _, stderr = job.communicate(timeout=120)  # a hang fails here
    finally:
        if job.poll() is None:
            job.kill()
            job.communicate()
    assert job.returncode != 0 and time.monotonic() - killed < 60
    assert not out.exists()
    # rank 0 says why in one line (or, if torchrun's SIGTERM came first, that it was stopped); no
    # traceback of ours
    assert ("qinco-train: error: rank 0 of 2:" in stderr and "another rank stopped" in stderr) \
        or "qinco-train: error: terminated by SIGTERM" in stderr, stderr[-3000:]
    assert "[rank0]: Traceback" not in stderr and "[rank0]:" not in stderr

    done = len(_checkpoint_history(ckpt)) - 1
    assert 1 <= done <= 3
    run = subprocess.run(_train_cli(glove_file, out, ckpt, 3), env=_env(), capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, _why(run)
    assert "resuming from checkpoint" in run.stderr and "epochs: 3" in run.stdout
    assert [h["epoch"] for h in _checkpoint_history(ckpt)] == [0, 1, 2, 3]
    assert qinco_codec.load_model(out).config.trained["samples"] == 3 * 32768


def test_stdin_is_refused_under_torchrun(monkeypatch, tmp_path):
    from cli_util import cli_runner
    from qinco_codec.cli.train import main

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    result = cli_runner().invoke(main, ["-", "-o", str(tmp_path / "m.safetensors")], input=b"")
    assert result.exit_code == 2 and "cannot be read by several torchrun processes" in result.stderr


# ---------------------------------------------------------------- the helpers, without a group
def test_one_process_group_changes_nothing():
    """World 1 (no torchrun): every helper returns its input itself and communicates nothing."""
    g = Group()
    t = torch.arange(12.0).reshape(6, 2)
    module = torch.nn.Linear(2, 2)
    assert g.main and g.world == 1 and g.rows(t) is t and g.gather_rows(t, 6) is t
    assert g.sum(2.5) == 2.5 and g.sum(t) is t and g.agree(7.25) == 7.25
    assert g.broadcast_(module) is module and g.wrap(module) is module
    g.check_same(1, "anything")  # nothing to compare with


@pytest.mark.parametrize("world,n", [(2, 1024), (2, 511), (3, 10), (4, 3)])
def test_ranks_shares_are_disjoint_and_cover_the_batch(world, n):
    batch = torch.randperm(5 * n)[:n]
    shares = [Group(r, world).rows(batch) for r in range(world)]
    assert sorted(torch.cat(shares).tolist()) == sorted(batch.tolist())
    assert max(map(len, shares)) - min(map(len, shares)) <= 1


def _fake_all_gather(values):
    """Stands in for torch.distributed.all_gather: every rank's tensor is values[rank] (padded)."""
    def all_gather(parts, mine):
        for part, value in zip(parts, values):
            part.zero_()
            part[:len(value)] = value
    return all_gather


@pytest.mark.parametrize("world,n", [(2, 511), (3, 10)])
def test_gather_rows_puts_every_ranks_share_back_in_batch_order(monkeypatch, world, n):
    batch = torch.randn(n, 3)
    shares = [Group(r, world).rows(batch) for r in range(world)]
    monkeypatch.setattr(torch.distributed, "all_gather", _fake_all_gather(shares))
    for r in range(world):
        assert torch.equal(Group(r, world).gather_rows(shares[r], n), batch)


def test_check_same_names_the_rank_that_differs(monkeypatch):
    five, six = torch.tensor([5]), torch.tensor([6])
    monkeypatch.setattr(torch.distributed, "all_gather", _fake_all_gather([five, five, six]))
    with pytest.raises(InputError, match="the data differs between ranks: rank 0 has 5, rank 2 has 6"):
        Group(0, 3).check_same(5, "the data")
    monkeypatch.setattr(torch.distributed, "all_gather", _fake_all_gather([five, five, five]))
    Group(1, 3).check_same(5, "the data")


def test_session_without_torchrun_joins_no_group(monkeypatch):
    for name in TORCHRUN_ENV:
        monkeypatch.delenv(name, raising=False)
    with distributed.session("cpu") as g:
        assert (g.rank, g.world) == (0, 1) and not torch.distributed.is_initialized()
    assert distributed.is_main_process()


def test_launch_environment_is_read_and_checked(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    assert distributed.launched_world() == 4 and distributed.launched_rank() == 3
    assert not distributed.is_main_process()
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(InputError, match="WORLD_SIZE must be an integer, got 'two'"):
        distributed.launched_world()
    monkeypatch.setenv("WORLD_SIZE", "0")
    with pytest.raises(InputError, match="WORLD_SIZE must be >= 1, got 0"):
        distributed.launched_world()


def test_collective_timeout_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv(distributed.TIMEOUT_ENV, raising=False)
    assert distributed.collective_timeout().total_seconds() == distributed.DEFAULT_TIMEOUT_S
    monkeypatch.setenv(distributed.TIMEOUT_ENV, "90")
    assert distributed.collective_timeout().total_seconds() == 90
    monkeypatch.setenv(distributed.TIMEOUT_ENV, "-1")
    with pytest.raises(InputError, match="QINCO_DIST_TIMEOUT must be a number of seconds > 0"):
        distributed.collective_timeout()


def test_a_lost_peer_is_told_apart_from_other_errors():
    assert distributed._is_collective_failure(RuntimeError(GLOO_ERROR))
    assert distributed._is_collective_failure(torch.distributed.DistBackendError("NCCL timeout"))
    assert not distributed._is_collective_failure(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    assert not distributed._is_collective_failure(ValueError(GLOO_ERROR))
    assert distributed._describe(RuntimeError(GLOO_ERROR)) == "Connection closed by peer [127.0.0.1]:62140"
    assert issubclass(RankLostError, qinco_codec.QincoError)


class _Rank0:
    """Stands in for Group.agree: hands back rank 0's `answers` in turn, keeping what it was asked."""

    def __init__(self, *answers):
        self.answers, self.asked = list(answers), []

    def __call__(self, value):
        self.asked.append(value)
        return self.answers.pop(0)


def test_budget_decisions_are_rank_0s_once_agreed():
    """A rank whose own clock says 'go on' stops when rank 0's says stop, and reads rank 0's time."""
    clock = _Clock(budget=3600.0, start=time.monotonic())
    assert not clock.out() and clock.elapsed() < 60
    clock.agree = _Rank0(1.0, 4000.0)
    assert clock.out()  # rank 0 said stop although this rank's clock has an hour left
    assert clock.elapsed() == 4000.0
    assert clock.agree.asked[0] == 0.0 and clock.agree.asked[1] < 60  # what this rank offered
    assert not _Clock(budget=None, start=0.0).out()  # no budget: no decision to agree on
