"""``safe_extract`` against archives that beat ``tarfile``'s ``data`` filter on unpatched
Pythons: the PATH_MAX symlink trick (CVE-2025-4517) and a symlink chain; both archives are built
here, as an attacker would."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from densemtl.data.download import UnsafeArchiveError, safe_extract


def add(tar: tarfile.TarFile, name: str, *, kind: bytes = tarfile.REGTYPE, link: str = "",
        content: bytes = b"") -> None:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.size, info.mode = kind, link, len(content), 0o777
    tar.addfile(info, io.BytesIO(content) if kind == tarfile.REGTYPE else None)


def links_out_of(root: Path) -> list[Path]:
    """Symbolic links under ``root`` whose target resolves outside it."""
    out = []
    for path in root.rglob("*"):
        if path.is_symlink():
            try:
                real = Path(os.path.realpath(path, strict=True))
            except OSError:
                out.append(path)
                continue
            if real != root.resolve() and root.resolve() not in real.parents:
                out.append(path)
    return out


def test_path_max_symlink_trick_writes_nothing_outside(tmp_path):
    outside = tmp_path / "outer"
    target = outside / "dest"
    target.mkdir(parents=True)
    flag = outside / "flag"
    flag.write_text("original")
    # the public proof of concept of CVE-2025-4517: 16 symlinks to long directory names make
    # the expanded path exceed PATH_MAX, so realpath() stops expanding and the filter believes
    # "escape" (→ the parent of the target) is inside; through it, a hard link to an outside
    # file is overwritten and a new outside file is created
    steps = "abcdefghijklmnop"
    max_path = os.pathconf(tmp_path, "PC_PATH_MAX")
    component = "d" * ((max_path - len(str(target)) - 1) // (len(steps) + 1))
    archive = tmp_path / "cve.tar"
    with tarfile.open(archive, "w") as tar:
        path = ""
        for step in steps:
            add(tar, os.path.join(path, component), kind=tarfile.DIRTYPE)
            add(tar, os.path.join(path, step), kind=tarfile.SYMTYPE, link=component)
            path = os.path.join(path, component)
        linkpath = os.path.join(*steps, "l" * 254)
        add(tar, linkpath, kind=tarfile.SYMTYPE, link=os.path.join(*[".."] * len(steps)))
        add(tar, "escape", kind=tarfile.SYMTYPE, link=os.path.join(linkpath, ".."))
        add(tar, "flaglink", kind=tarfile.LNKTYPE, link=os.path.join("escape", "flag"))
        add(tar, "flaglink", content=b"overwrite")
        add(tar, "escape/newfile", content=b"new")
    with pytest.raises(UnsafeArchiveError, match="escape"):
        safe_extract(archive, target)
    assert flag.read_text() == "original"
    assert sorted(p.name for p in outside.iterdir()) == ["dest", "flag"]
    assert links_out_of(target) == []


def test_symlink_chain_that_passes_a_lexical_check_is_refused(tmp_path):
    # a → b/.. is lexically the target itself, b → . too; on disk a is the target's parent
    target = tmp_path / "dest"
    archive = tmp_path / "chain.tar"
    with tarfile.open(archive, "w") as tar:
        add(tar, "a", kind=tarfile.SYMTYPE, link="b/..")
        add(tar, "b", kind=tarfile.SYMTYPE, link=".")
    with pytest.raises(UnsafeArchiveError, match=r"link .*a .*outside"):
        safe_extract(archive, target)
    assert list(target.iterdir()) == []  # the links made were removed again


def test_safe_extract_keeps_links_inside_and_hard_links_to_earlier_files(tmp_path):
    archive = tmp_path / "good.tar"
    with tarfile.open(archive, "w") as tar:
        add(tar, "tree", kind=tarfile.DIRTYPE)
        add(tar, "tree/a.txt", content=b"hello")
        add(tar, "tree/hard", kind=tarfile.LNKTYPE, link="tree/a.txt")
        add(tar, "tree/soft", kind=tarfile.SYMTYPE, link="a.txt")
        add(tar, "up", kind=tarfile.SYMTYPE, link="tree")
    root = safe_extract(archive, tmp_path / "dest")
    assert (root / "tree" / "hard").read_bytes() == b"hello"
    assert os.path.samefile(root / "tree" / "hard", root / "tree" / "a.txt")
    assert os.readlink(root / "tree" / "soft") == "a.txt"
    assert (root / "up" / "soft").read_bytes() == b"hello"
    assert os.stat(root / "tree" / "a.txt").st_mode & 0o022 == 0  # no group/other write
