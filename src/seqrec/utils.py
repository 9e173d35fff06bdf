"""Small helpers shared across the package: atomic writes, seeding, machine description."""
from __future__ import annotations

import json
import os
import platform
import random
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch


def default_file_mode() -> int:
    """0o666 less the process umask: the mode open() would give a new file (mkstemp's files are 0o600).

    Reading the umask means setting it (os.umask has no getter); it is restored at once."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextmanager
def atomic_replace(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary file in path's folder (created empty) for the caller to write; when the block ends without an
    error it becomes `path` by a rename, so that no half file is ever left at `path`; on an error it is removed.
    The file gets the usual mode of a new file (0o666 less the umask), not mkstemp's private 0o600."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, default_file_mode())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` atomically (atomic_replace)."""
    with atomic_replace(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """torch.save to `path` atomically (atomic_replace)."""
    with atomic_replace(path) as tmp:
        torch.save(obj, tmp)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def git_commit(cwd: str | os.PathLike | None = None) -> str:
    """The current git commit (with '-dirty' if the tree has changes), or 'unknown' outside a repository."""
    cwd = cwd or Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10)
        if sha.returncode != 0:
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, timeout=10)
        return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def device_name(device: torch.device | str = "cpu") -> str:
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip() + f" ({os.cpu_count()} cores)"
    except OSError:
        pass
    return platform.processor() or platform.machine()


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB (Linux/macOS)."""
    try:
        import resource
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return rss / 1024.0 if platform.system() != "Darwin" else rss / (1024.0 * 1024.0)
    except Exception:  # pragma: no cover - platform without resource
        return float("nan")


def versions() -> dict[str, str]:
    from seqrec import __version__
    return {"seqrec": __version__, "torch": torch.__version__, "python": platform.python_version(),
            "numpy": np.__version__}
