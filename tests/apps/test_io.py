"""Atomic writes: complete or absent, mode 0644 whatever the umask, no temporary file left by a failure."""

from __future__ import annotations

import os
import stat

import pytest
import torch

from monai_crossd.apps.io import atomic_open, atomic_torch_save, atomic_write_bytes


class _Unpicklable:
    def __reduce__(self):
        raise RuntimeError("cannot pickle this")


@pytest.fixture
def strict_umask():
    old = os.umask(0o077)  # files would be 0600 if the mode were left to the umask
    yield
    os.umask(old)


def _names(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_writes_create_folders_and_files_of_mode_0644(tmp_path, strict_umask):
    path = atomic_write_bytes(b"abc", tmp_path / "a" / "b" / "data.bin")
    assert path == str(tmp_path / "a" / "b" / "data.bin")
    assert (tmp_path / "a" / "b" / "data.bin").read_bytes() == b"abc"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644

    path = atomic_torch_save({"w": torch.arange(3)}, tmp_path / "w.pt")
    assert torch.equal(torch.load(path, weights_only=True)["w"], torch.tensor([0, 1, 2]))
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
    assert _names(tmp_path) == ["a", "w.pt"]


def test_replaces_an_existing_file(tmp_path):
    atomic_write_bytes(b"old", tmp_path / "f")
    atomic_write_bytes(b"new", tmp_path / "f")
    assert (tmp_path / "f").read_bytes() == b"new" and _names(tmp_path) == ["f"]


def test_error_in_the_block_keeps_the_old_file_and_no_temporary(tmp_path):
    atomic_write_bytes(b"old", tmp_path / "f")
    with pytest.raises(KeyboardInterrupt), atomic_open(tmp_path / "f") as f:
        f.write(b"half of the new")
        raise KeyboardInterrupt
    assert (tmp_path / "f").read_bytes() == b"old" and _names(tmp_path) == ["f"]


def test_failed_pickling_keeps_the_old_checkpoint(tmp_path):
    atomic_torch_save({"w": torch.ones(2)}, tmp_path / "m.pt")
    with pytest.raises(RuntimeError, match="cannot pickle this"):
        atomic_torch_save({"w": torch.zeros(10_000), "z": _Unpicklable()}, tmp_path / "m.pt")
    assert torch.equal(torch.load(tmp_path / "m.pt", weights_only=True)["w"], torch.ones(2))
    assert _names(tmp_path) == ["m.pt"]


def test_failed_flush_to_disk_keeps_the_old_file(tmp_path, monkeypatch):
    atomic_write_bytes(b"old", tmp_path / "f")

    def broken_fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="No space left on device"):
        atomic_write_bytes(b"new", tmp_path / "f")
    with pytest.raises(OSError, match="No space left on device"):
        atomic_write_bytes(b"new", tmp_path / "g")
    assert (tmp_path / "f").read_bytes() == b"old" and _names(tmp_path) == ["f"]
