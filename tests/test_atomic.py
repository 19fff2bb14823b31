"""Atomic output: the final name only ever holds a complete file, and the leftovers of killed
writers are removed by the next successful write of that name, but a live writer's are kept."""
import fcntl
import os

import pytest

from qinco_codec.formats.atomic import atomic_output, write_bytes_atomic


def test_failed_write_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError), atomic_output(tmp_path / "out.bin") as f:
        f.write(b"half")
        raise RuntimeError
    assert os.listdir(tmp_path) == []


def test_permissions_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        write_bytes_atomic(tmp_path / "out.bin", b"x")
    finally:
        os.umask(old)
    assert (tmp_path / "out.bin").stat().st_mode & 0o777 == 0o644


def test_stale_temporaries_are_removed_but_live_ones_kept(tmp_path):
    stale = tmp_path / ".out.bin.killed.tmp"
    stale.write_bytes(b"partial")
    live = tmp_path / ".out.bin.live.tmp"
    live.write_bytes(b"in progress")
    other = tmp_path / ".other.bin.x.tmp"
    other.write_bytes(b"another name")
    fd = os.open(live, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        write_bytes_atomic(tmp_path / "out.bin", b"done")
    finally:
        os.close(fd)
    assert sorted(os.listdir(tmp_path)) == sorted([".out.bin.live.tmp", ".other.bin.x.tmp", "out.bin"])
    assert (tmp_path / "out.bin").read_bytes() == b"done"
