"""``densemtl-data download``: fetch a benchmark archive where a public URL exists, with a
progress bar and a SHA-256 check, and extract it safely.

Only PASCAL_MT has a public single-archive URL (the one ASTMT's reference loader downloads).
The NYUD archive at the same place holds ASTMT's own NYUD layout (``.mat`` labels), which is
neither variant this suite reads, so it is not offered; Taskonomy's LSB sample and FSV have no
single public archive. No checksum was published for the archive: the computed SHA-256 is
printed, and ``--sha256`` (or ``Source.sha256``) makes a mismatch an error.

Extraction (:func:`safe_extract`) does not trust ``tarfile``'s ``data`` filter, which older
Pythons let through crafted archives (the PATH_MAX symlink trick, CVE-2025-4517, and symlink
chains such as ``a → b/..`` with ``b → .``, which a lexical check passes). It refuses, before
writing anything, members that are absolute, contain ``..``, are devices / FIFOs or would
overwrite an existing file, then extracts member by member itself: every path is checked
against the real filesystem (no component of it may be a symbolic link), files are created with
``O_EXCL | O_NOFOLLOW``, hard links only to files extracted before, and symbolic links last,
after every file is written; each link is then resolved by the operating system (strictly:
a path too long to resolve counts as outside) and the extraction fails, removing the links, if
one points outside the target.
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
    """The archive's members, after refusing those unsafe on their face (absolute, ``..``,
    devices, overwrites; see the module docstring)."""
    root = target.resolve()
    members = tar.getmembers()
    for m in members:
        name = m.name
        parts = Path(name).parts
        if os.path.isabs(name) or name.startswith(("/", "\\")):
            raise UnsafeArchiveError(f"member {name!r} has an absolute path")
        if ".." in parts or not _inside((root / name).resolve(), root):
            raise UnsafeArchiveError(f"member {name!r} would be written outside {root} "
                                     "(path traversal)")
        if m.issym() or m.islnk():
            base = (root / name).parent if m.issym() else root
            if os.path.isabs(m.linkname) or not _inside(Path(os.path.normpath(base / m.linkname)),
                                                         root):
                raise UnsafeArchiveError(f"link {name!r} -> {m.linkname!r} points outside "
                                         f"{root}")
        elif not (m.isfile() or m.isdir()):
            raise UnsafeArchiveError(f"member {name!r} is a device or FIFO")
        if not overwrite and m.isfile() and os.path.lexists(root / name):
            raise UnsafeArchiveError(f"member {name!r} would overwrite the existing "
                                     f"{root / name}")
    return members


def _real_dir(root: Path, relative: Path, create: bool) -> Path:
    """``root/relative`` as a directory whose every component below ``root`` is a real
    directory, not a symbolic link (created when ``create``)."""
    path = root
    for part in relative.parts:
        path = path / part
        if os.path.islink(path):
            raise UnsafeArchiveError(f"{path} is a symbolic link; refusing to write through it")
        if not path.exists():
            if not create:
                raise UnsafeArchiveError(f"{path} does not exist")
            os.mkdir(path, 0o755)
        elif not path.is_dir():
            raise UnsafeArchiveError(f"{path} is not a directory")
    return path


def _extract_file(tar: tarfile.TarFile, m: tarfile.TarInfo, dest: Path, overwrite: bool) -> None:
    if overwrite and os.path.lexists(dest):
        os.unlink(dest)  # replace the entry itself, never write through it
    mode = (m.mode & 0o755) | 0o600
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    source = tar.extractfile(m)
    with os.fdopen(fd, "wb") as out:
        while source is not None and (block := source.read(1 << 20)):
            out.write(block)


def safe_extract(archive: str | os.PathLike, target: str | os.PathLike,
                 overwrite: bool = False) -> Path:
    """Extract a tar archive (any compression) into ``target``, member by member (see the
    module docstring); raises :class:`UnsafeArchiveError` naming the member it refuses."""
    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    root = target.resolve()
    with tarfile.open(archive) as tar:
        members = check_members(tar, root, overwrite=overwrite)
        links = []
        for m in members:
            relative = Path(os.path.normpath(m.name))
            if m.isdir():
                _real_dir(root, relative, create=True)
            elif m.issym():
                links.append(m)
            else:
                dest = _real_dir(root, relative.parent, create=True) / relative.name
                if m.islnk():
                    source = Path(os.path.normpath(m.linkname))
                    src = _real_dir(root, source.parent, create=False) / source.name
                    if os.path.islink(src) or not src.is_file():
                        raise UnsafeArchiveError(f"hard link {m.name!r} -> {m.linkname!r} does "
                                                 "not name a file extracted before it")
                    os.link(src, dest, follow_symlinks=False)
                else:
                    _extract_file(tar, m, dest, overwrite)
        created = []
        try:
            for m in links:
                relative = Path(os.path.normpath(m.name))
                dest = _real_dir(root, relative.parent, create=True) / relative.name
                os.symlink(m.linkname, dest)
                created.append(dest)
            for dest in created:
                try:
                    real = Path(os.path.realpath(dest, strict=True))
                except OSError as err:
                    raise UnsafeArchiveError(f"link {dest} cannot be resolved ({err}); "
                                             "refusing it") from err
                if not _inside(real, root):
                    raise UnsafeArchiveError(f"link {dest} -> {os.readlink(dest)!r} resolves "
                                             f"to {real}, outside {root}")
        except BaseException:
            for dest in created:
                dest.unlink(missing_ok=True)
            raise
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
