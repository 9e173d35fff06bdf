"""Known benchmark datasets: name -> files, sizes, sha256 and public URLs, and where to find them.

`resolve_dataset("Beauty")` looks for the files, in this order, in:
  1. the `data_dir` argument (config key `data.data_dir`),
  2. the folder named by the environment variable SEQREC_DATA,
  3. `../shared/data` relative to the current directory,
  4. `../shared/data` relative to the repository root (the folder holding pyproject.toml above this file),
  5. the download cache: $SEQREC_CACHE, else $XDG_CACHE_HOME/seqrec, else ~/.cache/seqrec.
If a file is in none of them and `download` is true, it is downloaded into the cache.

Integrity policy (one rule, applied everywhere): a *downloaded* file must match its sha256 exactly, otherwise it is
deleted and a DataError is raised; a file found *locally* only has its size compared with the registry, and a
mismatch is a warning, not an error, because people legitimately keep their own (re-)processed copies. Sizes are
compared rather than hashes so that loading stays free of a pass over the file.
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
import urllib.error
import urllib.request
import warnings
from dataclasses import dataclass
from pathlib import Path

from seqrec.errors import DataError

log = logging.getLogger(__name__)

S3REC_BASE = "https://raw.githubusercontent.com/RUCAIBox/CIKM2020-S3Rec/master/data/"
# The two URLs below were constructed from the origins named in SOURCES.md and were NOT verified from here (this
# environment has no network). EMKD keeps ML-1M_item2attributes.json at its repository root; its ML-1M sequences
# are a pickle, and our ML-1M.txt is derived from it, so there is no public URL for ML-1M.txt itself.
EMKD_BASE = "https://raw.githubusercontent.com/hw-du/EMKD/main/"
MCLREC_TAOBAO = "https://raw.githubusercontent.com/QinHsiu/MCLRec/main/dataset/Taobao/Taobao.txt"


@dataclass(frozen=True)
class DataFile:
    """One file of a known dataset: its name, size in bytes, sha256 and public URL (None: no public copy)."""
    name: str
    size: int
    sha256: str
    url: str | None


@dataclass(frozen=True)
class KnownDataset:
    """A benchmark dataset in S3-Rec format: the interaction text file and its item attributes (if any)."""
    name: str
    text: DataFile
    attributes: DataFile | None
    aliases: tuple[str, ...] = ()


def _s3rec(name: str, stem: str, text_size: int, text_sha: str, attr_size: int, attr_sha: str,
           aliases: tuple[str, ...] = ()) -> KnownDataset:
    """A dataset hosted in the S3-Rec repository's data/ folder."""
    return KnownDataset(name, DataFile(f"{stem}.txt", text_size, text_sha, f"{S3REC_BASE}{stem}.txt"),
                        DataFile(f"{stem}_item2attributes.json", attr_size, attr_sha,
                                 f"{S3REC_BASE}{stem}_item2attributes.json"), aliases)


# sizes and sha256 from shared/data/SOURCES.md
KNOWN_DATASETS: dict[str, KnownDataset] = {d.name: d for d in [
    _s3rec("Beauty", "Beauty",
           1090094, "226cce9c3105299ca0db9615d7d3fb32b3175e90da43100ae352599f0f0107b8",
           305674, "129e40f67486f6877eff0f5318cfa8530ee8ac23d8b0d1de04e1bb7a2ba0b2d4"),
    _s3rec("Sports", "Sports_and_Outdoors",
           1707483, "2a095e0648872beb9982408958290f5d655db5be2911c3756b5446de9f0b8de2",
           653780, "7fb10733ac4f1811384a52144cdefa7fcc7536fa80a7232c5da9bd789155c34b"),
    _s3rec("Toys", "Toys_and_Games",
           922166, "176c680c688d497598c4a89a03b402c0fe78d795e5db335c2e78dd5f2d778a3f",
           327536, "d371acd25101eedac04afc727626464b7acec770c4eda708705d51eb76eb1ad0"),
    _s3rec("Yelp", "Yelp",
           1814224, "724b219106b81dd2349027da997334ddb6da9fe2f152ad6e0d97a93170f7caed",
           600360, "f25acd5e1e680e0b22fd4e3f4fb6be4b2a7461e9222610616e3e1ee6702dd58d"),
    _s3rec("LastFM", "LastFM",
           239312, "9ded486adb5b0fe9dc761950afa0a9a05e93ff018992e0c52bf11afec529f802",
           524368, "a4ccd678dc9ff6d43fe5073f491db5c9b02eb98dfa4f8c0382913a784be217ef"),
    KnownDataset(
        "ML-1M",
        DataFile("ML-1M.txt", 4270583, "567df58c3822a48e1a92c8d94b43d25fac7f06fd37b817b2a2fc9af364a1b88b", None),
        DataFile("ML-1M_item2attributes.json", 56331,
                 "6444ceaeea65f889dcd7f58eaf471d0c2be411e8dfca54d2cedf23f4e8f1bb42",
                 f"{EMKD_BASE}ML-1M_item2attributes.json"),
        aliases=("MovieLens-1M",)),
    KnownDataset(
        "Taobao",
        DataFile("Taobao.txt", 3827914, "6741163b17f16143ec00942470f6669486a7947d9d0b9cb0e669a9f213f29a6b",
                 MCLREC_TAOBAO),
        None),
]}


def _key(name: str) -> str:
    """Lookup key: lower case, letters and digits only ('ML-1M', 'ml1m' and 'ml_1m' are the same)."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


def get_known(name: str) -> KnownDataset | None:
    """The known dataset called `name` (case-insensitive; also its file stem, e.g. 'Sports_and_Outdoors', or an
    alias), or None when `name` is not a known dataset."""
    key = _key(name)
    if not key:
        return None
    for dataset in KNOWN_DATASETS.values():
        names = (dataset.name, Path(dataset.text.name).stem, *dataset.aliases)
        if key in {_key(n) for n in names}:
            return dataset
    return None


def cache_dir() -> Path:
    """Download cache: $SEQREC_CACHE, else $XDG_CACHE_HOME/seqrec, else ~/.cache/seqrec (not created here)."""
    if os.environ.get("SEQREC_CACHE"):
        return Path(os.environ["SEQREC_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "seqrec"


def repo_root() -> Path | None:
    """The source checkout's root (src/seqrec/data/known.py -> parents[3]) if it holds pyproject.toml, else None
    (an installed package has no checkout around it)."""
    root = Path(__file__).resolve().parents[3]
    return root if (root / "pyproject.toml").is_file() else None


def search_dirs(data_dir: str | Path | None = None) -> list[Path]:
    """Folders searched for known datasets, in order (see the module docstring); duplicates removed."""
    dirs: list[Path] = []
    if data_dir:
        dirs.append(Path(data_dir).expanduser())
    if os.environ.get("SEQREC_DATA"):
        dirs.append(Path(os.environ["SEQREC_DATA"]).expanduser())
    dirs.append(Path(os.path.abspath(Path.cwd() / ".." / "shared" / "data")))   # abspath: no '..' in messages
    root = repo_root()
    if root is not None:
        dirs.append(root.parent / "shared" / "data")
    dirs.append(cache_dir())
    unique: list[Path] = []
    for d in dirs:
        if d.resolve() not in {u.resolve() for u in unique}:
            unique.append(d)
    return unique


def resolve_dataset(name: str, data_dir: str | Path | None = None, download: bool = True,
                    attributes: bool = True) -> tuple[Path, Path | None]:
    """Find (or download) the files of a known dataset.

    name: a known dataset name (see `get_known`).
    data_dir: a folder searched first (None: skip it).
    download: when a file is in none of the searched folders, download it into the cache (sha256-checked);
        False: raise a DataError instead.
    attributes: also resolve the attribute file (False: return None for it without looking).
    Returns (text file path, attribute file path or None when the dataset has none or attributes is False).
    The attribute file is looked for beside the text file first, then in the usual order.
    """
    dataset = get_known(name)
    if dataset is None:
        valid = ", ".join(KNOWN_DATASETS)
        raise DataError(f"unknown dataset {name!r}; known datasets: {valid} (or give a path to a data file)")
    dirs = search_dirs(data_dir)
    text_path = _resolve_file(dataset.text, dirs, download)
    attr_path = None
    if attributes and dataset.attributes is not None:
        attr_path = _resolve_file(dataset.attributes, [text_path.parent, *dirs], download)
    return text_path, attr_path


def _resolve_file(spec: DataFile, dirs: list[Path], download: bool) -> Path:
    """First `dirs[i] / spec.name` that exists (size-checked), else a download into the cache."""
    for d in dirs:
        path = d / spec.name
        if path.is_file():
            size = path.stat().st_size
            if size != spec.size:
                warnings.warn(f"{path}: {size} bytes, the published {spec.name} has {spec.size}; using it anyway "
                              f"(a locally modified copy?)", stacklevel=3)
            return path
    searched = ", ".join(str(d) for d in dirs)
    if not download:
        raise DataError(f"{spec.name} not found; searched: {searched}. Put the file into one of these folders "
                        f"or enable data.download")
    if spec.url is None:
        raise DataError(f"{spec.name} not found and it has no public download URL; searched: {searched}. "
                        f"Put the file into one of these folders (or set data.data_dir / SEQREC_DATA)")
    target = cache_dir() / spec.name
    try:
        download_file(spec.url, target, spec.sha256)
    except DataError as e:
        raise DataError(f"{e}. Download it yourself and put {spec.name} into one of: {searched}") from None
    return target


def download_file(url: str, target: str | Path, sha256: str, timeout: float = 60.0) -> Path:
    """Download `url` to `target`, accepting it only if its sha256 is `sha256` (lower-case hex).

    The bytes go to a temporary file in the target's folder, which is renamed onto `target` (atomic on one
    file system) only after the checksum matched, so an interrupted or corrupt download never leaves a file
    named `target`. Any network or file error, and a checksum mismatch, raise a DataError naming the URL.
    """
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    except OSError as e:
        raise DataError(f"cannot write into {target.parent}: {e.strerror or e}") from None
    tmp = Path(tmp_name)
    try:
        log.info("downloading %s -> %s", url, target)
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            while chunk := response.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != sha256:
            raise DataError(f"download of {url} failed: sha256 {digest.hexdigest()} differs from the expected "
                            f"{sha256}")
        from seqrec.utils import default_file_mode
        os.chmod(tmp, default_file_mode())    # mkstemp's 0o600 -> the mode of any new file (umask)
        os.replace(tmp, target)
    except (urllib.error.URLError, OSError, ValueError) as e:
        # URLError covers HTTP errors and DNS failures, OSError timeouts and resets, ValueError a malformed URL
        reason = getattr(e, "reason", None) or e
        raise DataError(f"download of {url} failed: {reason}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return target
