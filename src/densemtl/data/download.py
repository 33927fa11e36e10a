"""``densemtl-data download``: fetch a benchmark archive where a public URL exists, with a
progress bar and a SHA-256 check, and extract it safely.

Only PASCAL_MT has a public single-archive URL (the one ASTMT's reference loader downloads).
The NYUD archive at the same place holds ASTMT's own NYUD layout (``.mat`` labels), which is
neither variant this suite reads, so it is not offered; Taskonomy's LSB sample and FSV have no
single public archive. No checksum was published for the archive: the computed SHA-256 is
printed, and ``--sha256`` (or ``Source.sha256``) makes a mismatch an error.

Extraction refuses, before writing anything, any member that is absolute, climbs out of the
target (``..``), is a link pointing outside it, is a device / FIFO, or would overwrite an
existing file; what passes is extracted with tarfile's ``data`` filter as a second guard.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Source:
    """Where a benchmark's archive lives and what it extracts to."""

    url: str
    filename: str
    extracts_to: str
    sha256: str | None = None


SOURCES: dict[str, Source] = {
    "pascal_context": Source("https://data.vision.ee.ethz.ch/kmaninis/share/MTL/PASCAL_MT.tgz",
                             "PASCAL_MT.tgz", "PASCAL_MT"),
}

HOW_TO_GET = {
    "nyud": "NYUD_MT (480×640 .npy) is distributed with MTI-Net / ATRC; the 425×560 PNG tree "
            "NYUDv2/ with ASTMT-derived code bases. Download it by hand, then run "
            "`densemtl-data verify nyud <root>`.",
    "taskonomy": "download the Taskonomy tiny split (rgb and the task domains) with the "
                 "official tools, write splits/{train,test}.txt of the LSB sample, then run "
                 "`densemtl-data verify taskonomy <root>`.",
    "fsv": "request FSV (Free Supervision from Video Games, Krähenbühl 2018) from its authors, "
           "then run `densemtl-data verify fsv <root>`.",
}


class UnsafeArchiveError(ValueError):
    """An archive member would land outside the target directory or overwrite a file."""


def sha256sum(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def check_members(tar: tarfile.TarFile, target: Path, overwrite: bool = False) -> list:
    """The archive's members, after refusing unsafe ones (see the module docstring)."""
    root = target.resolve()
    members = tar.getmembers()
    for m in members:
        name = m.name
        dest = (root / name).resolve()
        if os.path.isabs(name) or name.startswith(("/", "\\")):
            raise UnsafeArchiveError(f"member {name!r} has an absolute path")
        if not _inside(dest, root):
            raise UnsafeArchiveError(f"member {name!r} would be written outside {root} "
                                     "(path traversal)")
        if m.issym() or m.islnk():
            base = dest.parent if m.issym() else root
            link = (base / m.linkname).resolve()
            if os.path.isabs(m.linkname) or not _inside(link, root):
                raise UnsafeArchiveError(f"link {name!r} -> {m.linkname!r} points outside "
                                         f"{root}")
        elif not (m.isfile() or m.isdir()):
            raise UnsafeArchiveError(f"member {name!r} is a device or FIFO")
        if not overwrite and m.isfile() and dest.exists():
            raise UnsafeArchiveError(f"member {name!r} would overwrite the existing {dest}")
    return members


def safe_extract(archive: str | os.PathLike, target: str | os.PathLike,
                 overwrite: bool = False) -> Path:
    """Extract a tar archive (any compression) into ``target`` after :func:`check_members`."""
    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive) as tar:
        members = check_members(tar, target, overwrite=overwrite)
        tar.extractall(target, members=members, filter="data")
    return target


def fetch(url: str, dest: str | os.PathLike, sha256: str | None = None,
          progress: bool = True) -> str:
    """Download ``url`` to ``dest`` (via a ``.part`` file) with a progress bar; returns the
    SHA-256 and raises if it differs from ``sha256``."""
    from tqdm import tqdm

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    with urllib.request.urlopen(url) as response, open(part, "wb") as out:
        total = int(response.headers.get("Content-Length") or 0) or None
        with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name,
                  disable=not progress) as bar:
            while block := response.read(1 << 20):
                out.write(block)
                bar.update(len(block))
    digest = sha256sum(part)
    if sha256 is not None and digest != sha256.lower():
        part.unlink()
        raise ValueError(f"{url}: SHA-256 {digest} does not match the expected {sha256}")
    os.replace(part, dest)
    return digest


def download(name: str, directory: str | os.PathLike, sha256: str | None = None,
             progress: bool = True) -> Path:
    """Fetch and safely extract benchmark ``name`` into ``directory``; returns the tree root."""
    if name not in SOURCES:
        hint = HOW_TO_GET.get(name, f"valid names: {', '.join(SOURCES)}")
        raise KeyError(f"no public archive for {name!r}: {hint}")
    source = SOURCES[name]
    directory = Path(directory)
    archive = directory / source.filename
    expected = sha256 or source.sha256
    if archive.is_file():
        digest = sha256sum(archive)
        if expected is not None and digest != expected.lower():
            raise ValueError(f"{archive} exists with SHA-256 {digest}, expected {expected}; "
                             "delete it to download again")
    else:
        digest = fetch(source.url, archive, expected, progress=progress)
    print(f"{archive}: SHA-256 {digest}" + (" (verified)" if expected else " (no published "
                                                                           "checksum)"))
    safe_extract(archive, directory)
    return directory / source.extracts_to
