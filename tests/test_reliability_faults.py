"""Reliability: fault injection on writes (SIGKILL of qinco-compress at random moments, a full
disk) and on training (SIGKILL of qinco-train at random epochs, then resume; a corrupt
checkpoint at the command line).

What the write tests establish: OUTPUT is never partial. After a SIGKILL it is absent, the
previous complete file, or the new complete file; the only other thing a killed writer can
leave is its hidden temporary file `.OUTPUT.<random>.tmp` (a SIGKILLed process runs no clean-up
code), which the next successful run neither needs nor removes (RELIABILITY.md).
"""
import errno
import os
import random
import re
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

import qinco_codec
from qinco_codec.errors import QincoError
from qinco_codec.formats import QncWriter

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reliability_util import one_torch_thread  # noqa: F401 - autouse fixture
from reliability_util import (TESTS, assert_one_line_error, cli, env, glove, leftovers, npy, run,
                              small_model)

KILL_TRIALS = 20
KILL_SEED = 20240601
N_ROWS = 8_000
TMP_NAME = re.compile(r"^\.out\.qnc\..+\.tmp$")



def compress_args(src, out, model):
    return [cli("qinco-compress"), src, out, "--model", model, "--chunk-rows", 50, "--B", 1,
            "--quiet", "--force"]  # half the trials replace a previous OUTPUT


def spawn(args, cwd=None):
    return subprocess.Popen([str(a) for a in args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env=env(), cwd=cwd)


def temp_files(directory):
    return sorted(p.name for p in Path(directory).iterdir() if TMP_NAME.match(p.name))


def timed_run(args, directory):
    """Run to completion; return (seconds until the temporary output appeared, seconds from
    then until exit)."""
    t0 = time.monotonic()
    p = spawn(args)
    appeared = None
    while p.poll() is None:
        if appeared is None and temp_files(directory):
            appeared = time.monotonic()
        time.sleep(0.002)
    end = time.monotonic()
    assert p.returncode == 0, p.stderr.read().decode()[-2000:]
    appeared = appeared or end
    return appeared - t0, end - appeared


@pytest.fixture(scope="module")
def kill_setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("kill")
    model_path = network_model(root / "net.safetensors")
    new = npy(root / "new.npy", glove("base", N_ROWS))
    old = npy(root / "old.npy", glove("base", N_ROWS + 2000)[N_ROWS:])
    ref = root / "ref"
    ref.mkdir()
    startup, window = timed_run(compress_args(new, ref / "out.qnc", model_path), ref)
    new_bytes = (ref / "out.qnc").read_bytes()
    run(compress_args(old, ref / "old.qnc", model_path), check=0)
    old_bytes = (ref / "old.qnc").read_bytes()
    with qinco_codec.open(ref / "out.qnc") as f:
        new_codes = f.codes()
    with qinco_codec.open(ref / "old.qnc") as f:
        old_codes = f.codes()
    assert new_codes.shape == (N_ROWS, 4)
    return dict(root=root, model=model_path, new=new, new_bytes=new_bytes, old_bytes=old_bytes,
                new_codes=new_codes, old_codes=old_codes, startup=startup, window=window)


def network_model(path):
    """The small RQ-initialised model with small non-zero output projections, saved at `path`: its
    steps run their networks (an RQ start's identity steps encode as plain RQ, several times
    faster, which would shrink the writing window the kill trials aim at)."""
    import copy

    import torch
    model = copy.deepcopy(small_model()[1])   # small_model() is shared by the session's tests
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for step in model.steps:
            step.out_proj.weight.copy_(1e-3 * torch.randn(step.out_proj.weight.shape, generator=gen))
    model.save(path)
    return path


def one_kill_trial(i, s):
    """Start qinco-compress, SIGKILL it at a random moment, and classify what is left."""
    rng = random.Random(KILL_SEED + i)
    d = s["root"] / f"trial{i:02d}"
    d.mkdir()
    out = d / "out.qnc"
    previous = rng.random() < 0.5
    if previous:
        out.write_bytes(s["old_bytes"])
    p = spawn(compress_args(s["new"], out, s["model"]))
    t0 = time.monotonic()
    if rng.random() < 0.2:  # anywhere from the start (mostly while it loads torch)
        phase = "from start"
        time.sleep(rng.uniform(0, s["startup"] * 1.1))
    else:  # while the temporary file is being written, or just after the rename
        phase = "after temp file appeared"
        while p.poll() is None and not temp_files(d) and time.monotonic() - t0 < 120:
            time.sleep(0.001)
        time.sleep(rng.uniform(0, s["window"] * 1.3))
    writing = bool(temp_files(d))
    finished = p.poll() is not None
    if not finished:
        p.send_signal(signal.SIGKILL)
    code = p.wait()
    p.stderr.close()
    # what is left
    state = "absent"
    if out.exists():
        data = out.read_bytes()
        if data == s["new_bytes"]:
            state, expected = "new complete file", s["new_codes"]
        elif previous and data == s["old_bytes"]:
            state, expected = "previous file", s["old_codes"]
        else:
            raise AssertionError(f"trial {i}: OUTPUT is neither absent nor a complete file "
                                 f"({len(data)} bytes, previous={previous})")
        with qinco_codec.open(out) as f:  # and it opens and reads back
            np.testing.assert_array_equal(f.codes(), expected)
    else:
        assert not previous, f"trial {i}: the previous complete OUTPUT was removed"
    others = [n for n in leftovers(d) if n != "out.qnc"]
    assert all(TMP_NAME.match(n) for n in others), f"trial {i}: unexpected files {others}"
    return dict(trial=i, phase=phase, previous=previous, killed=not finished, code=code,
                writing_at_kill=writing and not finished, state=state, temp_left=len(others))


def test_sigkill_during_compress_never_leaves_a_partial_output(kill_setup):
    """20 trials (fixed seed), two at a time: qinco-compress of 8,000 GloVe vectors with a
    small model and 50-row chunks, SIGKILLed at a random moment: mostly while the temporary
    file is being written (the writing window is measured by a reference run), some during
    start-up, some after the rename."""
    s = kill_setup
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda i: one_kill_trial(i, s), range(KILL_TRIALS)))
    killed_writing = sum(r["writing_at_kill"] for r in results)
    kinds = {}
    for r in results:
        kinds[r["state"]] = kinds.get(r["state"], 0) + 1
    print(f"\nkill trials: {len(results)}; killed while writing: {killed_writing}; "
          f"outcomes: {kinds}; temp files left: {sum(r['temp_left'] for r in results)}")
    assert killed_writing >= KILL_TRIALS // 3, results  # the window of interest was hit
    assert all(r["temp_left"] <= 1 for r in results)


def test_next_successful_run_removes_the_temp_files_of_killed_runs(kill_setup):
    """After the kills, a normal run in a directory holding stale temporary files (from
    SIGKILLed runs, whose flock died with them) writes the complete OUTPUT and leaves no
    temporary file behind."""
    s = kill_setup
    dirs = sorted(d for d in s["root"].glob("trial*") if temp_files(d))
    assert dirs, "no kill trial left a temporary file to clean up"
    for d in dirs:
        run(compress_args(s["new"], d / "out.qnc", s["model"]), check=0)
        assert (d / "out.qnc").read_bytes() == s["new_bytes"]
        assert temp_files(d) == []


# -- disk full -------------------------------------------------------------------------------

@pytest.fixture
def tiny_fs(tmp_path):
    """A 2 MiB tmpfs, unmounted afterwards."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a 2 MiB tmpfs (needs root with CAP_SYS_ADMIN): "
                    f"{r.stderr.strip() or r.returncode}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def fill(mnt, leave):
    """Fill the file system but `leave` bytes; returns the filler's name."""
    st = os.statvfs(mnt)
    free = st.f_bavail * st.f_frsize
    (mnt / "filler").write_bytes(bytes(max(0, free - leave)))
    return "filler"


def test_disk_full_in_the_byte_layer(tiny_fs):
    """QncWriter: 3.2 MB of incompressible codes into 2 MiB: OSError ENOSPC, no file left."""
    codes = np.random.default_rng(0).integers(0, 256, (200_000, 16)).astype(np.uint8)
    with pytest.raises(OSError) as info:
        with QncWriter(tiny_fs / "out.qnc", n=len(codes), dim=8, source_dtype="float32", K=256,
                       M=16, model_sha256=bytes(32), model_config={}, zstd_level=None,
                       chunk_rows=4096) as w:
            w.write_codes(codes)
    assert info.value.errno == errno.ENOSPC
    assert leftovers(tiny_fs) == []


def test_disk_full_in_the_python_api(tiny_fs):
    model_path, _ = small_model()
    keep = fill(tiny_fs, 200_000)
    with pytest.raises((QincoError, OSError), match="No space left"):
        qinco_codec.compress(glove("base", 2000), tiny_fs / "out.qnc", model_path, quiet=True,
                             B=1)
    assert leftovers(tiny_fs) == [keep]


def test_disk_full_at_the_command_line(tiny_fs, tmp_path):
    """qinco-compress and qinco-decompress into a full file system: one line on stderr naming
    the problem, exit status 1, no output and no temporary file."""
    model_path, _ = small_model()
    src = npy(tmp_path / "x.npy", glove("base", 5000))
    good = tmp_path / "good.qnc"
    run(compress_args(src, good, model_path), check=0)
    keep = fill(tiny_fs, 300_000)  # the .qnc (embedded model) needs ~650 kB
    # and 5000 x 50 float32 = 1 MB of decoded vectors do not fit in 300 kB either
    commands = [compress_args(src, tiny_fs / "out.qnc", model_path),
                [cli("qinco-decompress"), good, tiny_fs / "out.npy", "--quiet"]]
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(run, commands))
    assert_one_line_error(results[0], "qinco-compress", "No space left on device")
    assert_one_line_error(results[1], "qinco-decompress", "No space left on device")
    assert leftovers(tiny_fs) == [keep]


# -- training: SIGKILL at random epochs, then resume -----------------------------------------

TRAIN_EPOCHS = 4
TRAIN_SAMPLES = 2048  # per epoch (2 batches of 1024): see tests/reliability_train_cli.py
TRAIN_SEQUENCES = 3


def train_args(data, out, ckpt, *, real=False):
    head = [cli("qinco-train")] if real else [sys.executable, TESTS / "reliability_train_cli.py"]
    return head + [data, "-o", out, "--preset", "qinco2-XS", "--bytes", 4, "--K", 16,
                   "--epochs", TRAIN_EPOCHS, "--resume", ckpt, "--quiet",
                   "--force"]  # a run killed after saving leaves MODEL for the resumed run


def train_env():
    return env(QINCO_TEST_SAMPLES_PER_EPOCH=TRAIN_SAMPLES)


def parse_train_stdout(text):
    fields = dict(line.split(": ", 1) for line in text.strip().splitlines())
    return fields["sha256"], float(fields["val_mse"]), int(fields["epochs"])


@pytest.fixture(scope="module")
def train_setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    data = npy(root / "train.npy", glove("train", 3000))
    ref = root / "ref"
    ref.mkdir()
    r = run(train_args(data, ref / "model.safetensors", ref / "run.ckpt"), env=train_env(),
            check=0)
    sha, val_mse, epochs = parse_train_stdout(r.stdout)
    assert epochs == TRAIN_EPOCHS
    return dict(root=root, data=data, sha=sha, val_mse=val_mse, ckpt=ref / "run.ckpt",
                model_bytes=(ref / "model.safetensors").read_bytes())


def checkpoint_writes(path, seen):
    """Count the checkpoint's versions seen so far (each write is a rename: a new inode)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return seen
    key = (st.st_ino, st.st_mtime_ns, st.st_size)
    if not seen or seen[-1] != key:
        seen.append(key)
    return seen


def one_training_sequence(k, s):
    """Kill qinco-train (once, or twice for sequence 1) after a random number of epochs
    (watching the checkpoint, plus a random delay of up to 0.3 s), resume each time with the
    same command, finish; return the kills, the final stdout and the final model bytes."""
    rng = random.Random(KILL_SEED * 7 + k)
    d = s["root"] / f"seq{k}"
    d.mkdir()
    args = train_args(s["data"], d / "model.safetensors", d / "run.ckpt")
    kills, written = [], 0
    for _ in range((1, 2, 1)[k % 3]):  # sequence 1 is killed twice
        # kill after this many more checkpoints (+ a delay)
        target = rng.randint(1, max(1, TRAIN_EPOCHS - written))
        seen = checkpoint_writes(d / "run.ckpt", [])
        start = len(seen)
        p = subprocess.Popen([str(a) for a in args], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, env=train_env())
        while p.poll() is None and len(checkpoint_writes(d / "run.ckpt", seen)) - start < target:
            time.sleep(0.002)
        time.sleep(rng.uniform(0, 0.3))
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
        p.communicate()
        written += len(checkpoint_writes(d / "run.ckpt", seen)) - start
        kills.append((target, p.returncode))
        # the model file appears only complete (killed after it was saved: the final model)
        model = d / "model.safetensors"
        assert not model.exists() or model.read_bytes() == s["model_bytes"]
    r = run(args, env=train_env(), check=0)
    return kills, r.stdout, (d / "model.safetensors").read_bytes()


def test_sigkill_during_training_then_resume_gives_the_uninterrupted_model(train_setup):
    """3 sequences (fixed seed), killed 4 times in all at random epochs and resumed with the
    same command: the final model file is byte-identical to the uninterrupted run's (same
    sha256, same validation MSE)."""
    s = train_setup
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda k: one_training_sequence(k, s), range(TRAIN_SEQUENCES)))
    print()
    for k, (kills, stdout, model_bytes) in enumerate(results):
        sha, val_mse, epochs = parse_train_stdout(stdout)
        print(f"sequence {k}: kills after checkpoints {kills}; final sha256 {sha[:12]}")
        assert epochs == TRAIN_EPOCHS
        assert abs(val_mse - s["val_mse"]) <= 1e-6 * abs(s["val_mse"])
        assert sha == s["sha"] and model_bytes == s["model_bytes"]
    assert sum(rc == -signal.SIGKILL for _, (kills, _, _) in enumerate(results)
               for _, rc in kills) >= 1


def test_corrupt_checkpoint_at_the_command_line(train_setup, tmp_path):
    """The installed qinco-train refuses a damaged checkpoint (a flipped bit, truncation,
    garbage): one line on stderr naming it, exit status 1, no model written, the checkpoint left
    as it was (not silently restarted)."""
    s = train_setup
    good = s["ckpt"].read_bytes()
    flipped = bytearray(good)
    flipped[len(good) // 2] ^= 0x10
    damaged = {"flip": bytes(flipped), "truncate": good[:len(good) // 3],
               "garbage": b"not a checkpoint at all"}

    def attempt(name):
        d = tmp_path / name
        d.mkdir()
        (d / "run.ckpt").write_bytes(damaged[name])
        r = run(train_args(s["data"], d / "model.safetensors", d / "run.ckpt", real=True))
        return name, d, r

    with ThreadPoolExecutor(3) as pool:
        for name, d, r in pool.map(attempt, sorted(damaged)):
            assert_one_line_error(r, "qinco-train", "corrupt checkpoint", str(d / "run.ckpt"))
            assert not (d / "model.safetensors").exists()
            assert (d / "run.ckpt").read_bytes() == damaged[name]


def test_training_wrapper_is_the_installed_entry_point():
    """The helper runs the same function as the qinco-train console script."""
    from importlib.metadata import entry_points
    eps = {e.name: e.value for e in entry_points(group="console_scripts")}
    assert eps.get("qinco-train") == "qinco_codec.cli.train:main"
    assert "from qinco_codec.cli.train import main" in (TESTS / "reliability_train_cli.py").read_text()

