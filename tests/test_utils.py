"""seqrec.utils: atomic writes give files the mode of any new file (0o666 less the umask), not mkstemp's 0o600."""
from __future__ import annotations

import os
import stat

import pytest
import torch

from seqrec.utils import atomic_torch_save, atomic_write_bytes, atomic_write_json, default_file_mode


@pytest.fixture
def umask():
    """Set the process umask for one test and restore it afterwards."""
    old = os.umask(0o022)
    os.umask(old)

    def set_(mask: int) -> None:
        os.umask(mask)
    yield set_
    os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_writes_follow_the_umask(tmp_path, umask, mask, expected):
    umask(mask)
    assert default_file_mode() == expected and os.umask(mask) == mask    # reading it left it unchanged
    atomic_write_bytes(tmp_path / "a.bin", b"x")
    atomic_write_json(tmp_path / "sub" / "r.json", {"a": 1})
    atomic_torch_save({"w": torch.ones(2)}, tmp_path / "c.pt")
    for name in ("a.bin", "sub/r.json", "c.pt"):
        assert mode(tmp_path / name) == expected, name
    # overwriting an existing file gives it the same mode, and leaves no temporary file behind
    atomic_write_bytes(tmp_path / "a.bin", b"y")
    assert mode(tmp_path / "a.bin") == expected and (tmp_path / "a.bin").read_bytes() == b"y"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "c.pt", "sub"]
