"""Where the file-backed datasets come from and where ``vaebench data fetch`` put them.

:data:`SOURCES` is the one table of published downloads: dataset name -> the files (URL,
name on disk, pinned sha256 and size where a source for them could be read, how each is
unpacked), the folder it lands in, licence and citation. URLs are the ones
disentanglement_lib's own download script uses (``bin/dlib_download_data`` at
google-research/disentanglement_lib@86a644d4ed35c771560dc3360756363d35477357) for SmallNORB and
Cars3D; MPI3D's are the three of the MPI3D authors' README
(rr-learning/disentanglement_dataset@a7a6729f0a0fbd2370770a8a55f43f5df130408b, "the download
links have been updated": Hugging Face ``waleedgondal/mpi3d``, 1,036,800 images each; that
commit replaced a corrupted ``mpi3d_real.npz``). The earlier copies under the same names are
fetched with ``--url https://storage.googleapis.com/disentanglement_dataset/Final_Dataset``; the
460,800-image toy file disentanglement_lib's script fetches
(``data_npz/sim_toy_64x_ordered_without_heldout_factors.npz``) is read from ``--dataset-path``
(the MPI3D loader knows both grids).
SmallNORB's sha256 and sizes are TensorFlow Datasets' pinned checksums
(``tensorflow_datasets/url_checksums/smallnorb.txt`` at
tensorflow/datasets@333639b37af6c6fedf3610a4a2d42f1c6ef6f7d5). No sha256 is published for
Cars3D's archive; it is pinned to the MD5 of the whole file that disent publishes
(``disent/dataset/data/_groundtruth__cars3d.py``, ``uri_hash["full"]``, at
nmichlo/disent@1214041f83a9b4fb07c96603d367099706d2a16e): an integrity check against a
broken or swapped download, not a cryptographic one. The MPI3D files on Hugging Face have no
published checksum that could be read here (disent's MD5s are of the earlier Google Storage
copies, whose ``mpi3d_real.npz`` the authors replaced as corrupted): those entries are
unpinned and ``data fetch`` says so.

The data directory is ``$VAEBENCH_DATA`` or ``~/.cache/vaebench/data``. It holds
``index.json`` (name -> where the data is, its size in bytes, when it was fetched), written by
``data fetch`` whatever ``--to`` chose, and read by the loaders (:func:`locate`) when no
``--dataset-path`` is given.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vaebench.plugins.datasets.base import DatasetError

__all__ = ["DATA_ENV", "INDEX_NAME", "RemoteFile", "SOURCES", "Source", "data_root", "locate",
           "read_index", "record", "tree_size"]

DATA_ENV = "VAEBENCH_DATA"
INDEX_NAME = "index.json"
#: ``VAEBENCH_DATA_URL_<NAME>`` (name upper-cased) overrides the base URL of a dataset's files
#: (a mirror, or a test's local server): each file is fetched from ``<base>/<basename of its url>``.
URL_ENV_PREFIX = "VAEBENCH_DATA_URL_"


@dataclass(frozen=True)
class RemoteFile:
    """One published file. ``unpack``: ``"none"`` (kept as downloaded), ``"gunzip"`` (the
    ``.gz`` is decompressed to ``filename`` without ``.gz``), ``"tar"`` (a ``.tar`` / ``.tar.gz``
    extracted; ``keep`` names the member folder that becomes the dataset's folder) or ``"zip"``."""

    url: str
    filename: str
    sha256: str | None = None
    size: int | None = None
    unpack: str = "none"
    keep: str | None = None
    #: The published MD5 of the whole file, where no sha256 is published (checked instead).
    md5: str | None = None

    @property
    def checksum(self) -> tuple[str, str] | None:
        """``(algorithm, hex digest)`` a download is checked against: the sha256, else the
        MD5; ``None``: unpinned."""
        if self.sha256 is not None:
            return "sha256", self.sha256
        return ("md5", self.md5) if self.md5 is not None else None


@dataclass(frozen=True)
class Source:
    """A dataset's published download: its files land in ``<DIR>/<folder>``."""

    name: str
    folder: str
    files: tuple[RemoteFile, ...]
    licence: str
    citation: str
    #: Where the pinned checksums come from, or why there are none.
    pinned: str

    @property
    def unpinned(self) -> list[str]:
        """Names of the files with no pinned checksum (sha256 or MD5)."""
        return [f.filename for f in self.files if f.checksum is None]

    @property
    def pinned_with(self) -> str | None:
        """How the download is checked: ``"sha256"``, ``"md5"`` (some file only has an MD5),
        or ``None`` when some file is unpinned."""
        if self.unpinned:
            return None
        return "md5" if any(f.checksum[0] == "md5" for f in self.files) else "sha256"


_MPI3D_HF = "https://huggingface.co/datasets/waleedgondal/mpi3d/resolve/main"
_NORB = "https://cs.nyu.edu/~ylclab/data/norb-v1.0-small"
_MPI3D_CITE = ("Gondal et al. 2019, On the Transfer of Inductive Bias from Simulation to the Real World: "
               "a New Disentanglement Dataset, NeurIPS")
_MPI3D_LICENCE = "CC BY 4.0 (rr-learning/disentanglement_dataset README)"
_NO_SHA = "no published checksum found: unpinned (the download is not verified)"
#: TensorFlow Datasets' checksums of the SmallNORB .gz files: (chunk, part) -> (size, sha256).
_NORB_SUMS: dict[tuple[str, str], tuple[int, str]] = {
    ("5x01235x9x18x6x2x96x96-testing", "cat"): (347, "ecaf6d5bb8c3bc5eab9cf0258f6d2198dd474e016e374836fc097f2e5ff509ff"),
    ("5x01235x9x18x6x2x96x96-testing", "dat"): (130799817, "cf7104eed3e51174d2f65b66d1e5878b9da233b886f161b0d88f4510ba2c7474"),
    ("5x01235x9x18x6x2x96x96-testing", "info"): (10428, "16adf314226327ee006d1a44db8cfef52773c06c829951d5653a9f6f310248a2"),
    ("5x46789x9x18x6x2x96x96-training", "cat"): (348, "2784e542c1922060691090952b6cd6278879a216c90f81476f0f00256d42cdaa"),
    ("5x46789x9x18x6x2x96x96-training", "dat"): (131896188, "5ffd6272a07d32695ee1082a26a41a93a37aab8c28da047f8c34ed348d214873"),
    ("5x46789x9x18x6x2x96x96-training", "info"): (71052, "de7eb932ebe7a4ee16217fead60660d0eb3d23632c2f4d1c51f88c501c17bf32"),
}


def _norb_files() -> tuple[RemoteFile, ...]:
    out = []
    for (chunk, part), (size, sha) in _NORB_SUMS.items():
        name = f"smallnorb-{chunk}-{part}.mat"
        out.append(RemoteFile(f"{_NORB}/{name}.gz", name, sha, size, "gunzip"))
    return tuple(out)


SOURCES: dict[str, Source] = {
    "mpi3d_toy": Source(
        "mpi3d_toy", "mpi3d_toy",
        (RemoteFile(f"{_MPI3D_HF}/mpi3d_toy.npz", "mpi3d_toy.npz"),),
        _MPI3D_LICENCE, _MPI3D_CITE, _NO_SHA),
    "mpi3d_realistic": Source(
        "mpi3d_realistic", "mpi3d_realistic",
        (RemoteFile(f"{_MPI3D_HF}/mpi3d_realistic.npz", "mpi3d_realistic.npz"),),
        _MPI3D_LICENCE, _MPI3D_CITE, _NO_SHA),
    "mpi3d_real": Source(
        "mpi3d_real", "mpi3d_real",
        (RemoteFile(f"{_MPI3D_HF}/mpi3d_real.npz", "mpi3d_real.npz"),),
        _MPI3D_LICENCE, _MPI3D_CITE, _NO_SHA),
    "smallnorb": Source(
        "smallnorb", "small_norb", _norb_files(),
        "free for research use (NYU NORB page)",
        "LeCun, Huang & Bottou 2004, Learning Methods for Generic Object Recognition with Invariance "
        "to Pose and Lighting, CVPR",
        "sha256 and sizes from tensorflow/datasets@333639b tensorflow_datasets/url_checksums/smallnorb.txt"),
    "cars3d": Source(
        "cars3d", "cars",
        (RemoteFile("http://www.scottreed.info/files/nips2015-analogy-data.tar.gz", "nips2015-analogy-data.tar.gz",
                    unpack="tar", keep="data/cars", md5="4e866a7919c1beedf53964e6f7a23686"),),
        "research use (no licence stated by the authors)",
        "Reed, Zhang, Zhang & Lee 2015, Deep Visual Analogy-Making, NeurIPS",
        "MD5 of the whole archive from nmichlo/disent@1214041 disent/dataset/data/_groundtruth__cars3d.py "
        "(no sha256 published)"),
}


def data_root() -> Path:
    """``$VAEBENCH_DATA`` or ``~/.cache/vaebench/data`` (not created here)."""
    env = os.environ.get(DATA_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "vaebench" / "data"


def read_index(root: Path | None = None) -> dict[str, dict[str, Any]]:
    """``index.json`` under the data root: name -> ``{"path", "bytes", "fetched_at", ...}``
    (``{}`` when absent or unreadable)."""
    path = (root or data_root()) / INDEX_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def record(name: str, entry: dict[str, Any], root: Path | None = None) -> Path:
    """Write ``entry`` for ``name`` into the index (whole-file replace); the index's path."""
    root = root or data_root()
    root.mkdir(parents=True, exist_ok=True)
    index = read_index(root)
    index[name] = entry
    path = root / INDEX_NAME
    tmp = path.with_name(f".{INDEX_NAME}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def tree_size(path: Path) -> int:
    """Bytes under ``path`` (a file or a folder, recursively)."""
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def locate(name: str, path: str | os.PathLike[str] | None) -> Path:
    """Where dataset ``name``'s data is: ``path`` when given (``--dataset-path``), else where
    ``vaebench data fetch`` recorded it, else ``<data root>/<folder>`` if it exists. A one-line
    :class:`DatasetError` saying what to do when none is there."""
    if path is not None and os.fspath(path) != "":
        p = Path(os.fspath(path)).expanduser()
        if not p.exists():
            raise DatasetError(f"{name}: {str(p)!r} does not exist; fetch it with `vaebench data fetch {name}` "
                               "or pass the right --dataset-path")
        return p
    entry = read_index().get(name)
    if isinstance(entry, dict) and entry.get("path") and Path(entry["path"]).exists():
        return Path(entry["path"])
    source = SOURCES.get(name)
    if source is not None and (data_root() / source.folder).exists():
        return data_root() / source.folder
    raise DatasetError(f"{name} is not here: run `vaebench data fetch {name}` (or pass --dataset-path PATH)")
