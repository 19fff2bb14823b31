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


def test_a_replaced_file_keeps_its_mode(tmp_path):
    """Issue 17: a 0600 file replaced atomically stays 0600 (it came back 0644)."""
    out = tmp_path / "out.bin"
    out.write_bytes(b"old")
    os.chmod(out, 0o600)
    old = os.umask(0o022)
    try:
        write_bytes_atomic(out, b"new")
    finally:
        os.umask(old)
    assert out.read_bytes() == b"new" and out.stat().st_mode & 0o777 == 0o600


def test_a_symbolic_link_is_followed_and_kept(tmp_path):
    """Writing through a symbolic link replaces the file it points to (in that file's own
    directory); the link stays a link."""
    real_dir = tmp_path / "real"
    real_dir.mkdir()
    target = real_dir / "t.bin"
    target.write_bytes(b"old")
    link = tmp_path / "link.bin"
    link.symlink_to(target)
    write_bytes_atomic(link, b"new")
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert target.read_bytes() == b"new"
    assert sorted(os.listdir(tmp_path)) == ["link.bin", "real"]
    assert os.listdir(real_dir) == ["t.bin"]


def test_a_full_disk_names_the_output_and_leaves_nothing(tmp_path, monkeypatch):
    """ENOSPC (here from fsync, as delayed allocation reports it) names the final path, not the
    temporary file or nothing."""
    import errno

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    out = tmp_path / "out.bin"
    with pytest.raises(OSError) as info:
        write_bytes_atomic(out, b"x" * 100)
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(out)
    assert os.listdir(tmp_path) == []


def test_other_errors_of_the_body_pass_unchanged(tmp_path):
    """An OSError about something else (an input the body reads) keeps its own file name."""
    with pytest.raises(FileNotFoundError) as info, atomic_output(tmp_path / "out.bin"):
        open(tmp_path / "missing.npy", "rb")
    assert info.value.filename == str(tmp_path / "missing.npy")
    assert os.listdir(tmp_path) == []


def test_a_missing_directory_names_the_output(tmp_path):
    out = tmp_path / "nope" / "out.bin"
    with pytest.raises(FileNotFoundError) as info:
        write_bytes_atomic(out, b"x")
    assert info.value.filename == str(out)
