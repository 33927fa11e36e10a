"""``densemtl-data verify`` / ``fixture`` / ``download`` and the refusal of bad trees."""

import io
import tarfile

import numpy as np
import pytest

from densemtl.cli.data import main
from densemtl.data.download import UnsafeArchiveError, download, safe_extract
from densemtl.data.formats import BadTreeError, DataFormatError
from densemtl.data.nyud import NYUD
from densemtl.data.verify import verify_tree, write_fixture

NYUD_TASKS = ["semseg", "depth", "normals", "edge"]


def test_clean_fixture_passes_and_published_counts_are_compared(tmp_path, capsys):
    assert main(["fixture", "pascal_context", str(tmp_path / "P")]) == 0
    capsys.readouterr()
    assert main(["verify", "pascal_context", str(tmp_path / "P"), "--subset",
                 "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "edge 2/2, semseg 2/2, human_parts 2/2, normals 2/2, sal 2/2" in out
    assert "Summary: OK" in out
    # without --subset: loadable (no broken file) but not the published size → exit 2, and the
    # differences are listed apart from broken files
    assert main(["verify", "pascal_context", str(tmp_path / "P"), "--no-progress"]) == 2
    out = capsys.readouterr().out
    assert "not the published size:\n      " in out and "broken files:" not in out
    assert "2 ids, the published train split has 4998" in out
    assert "the published val split has 5105" in out and "Summary: OK" in out
    assert "0 broken file problem(s)" in out and "2 difference(s) from the published" in out


@pytest.fixture
def broken_nyud(tmp_path):
    """The NYUD fixture with one problem per file kind."""
    root = write_fixture("nyud", tmp_path / "NYUD_MT")
    (root / "depth" / "0001.npy").unlink()  # missing
    (root / "segmentation" / "0002.png").write_bytes(b"\x89PNG\r\n\x1a\nnot a png")  # corrupt
    np.save(root / "edge" / "0003.npy", np.zeros((10, 10), np.float32))  # wrong size
    nan_depth = np.full((24, 32), 2.0, np.float32)
    nan_depth[3, 4] = np.nan
    np.save(root / "depth" / "0004.npy", nan_depth)  # NaN
    return root


def test_verify_names_every_bad_file(broken_nyud, capsys):
    assert main(["verify", "nyud", str(broken_nyud), "--subset", "--no-progress"]) == 1
    out = capsys.readouterr().out
    assert f"{broken_nyud / 'depth' / '0001.npy'}: missing file" in out
    assert f"{broken_nyud / 'segmentation' / '0002.png'}: unreadable PNG" in out
    assert (f"{broken_nyud / 'edge' / '0003.npy'}: label of size (10, 10) does not match the "
            "image size (24, 32)") in out
    assert f"{broken_nyud / 'depth' / '0004.npy'}: 1 NaN/infinite value(s)" in out
    assert "semseg 1/2, depth 1/2" in out and "4 broken file problem(s) in 4 file(s)" in out


def test_training_refuses_bad_tree_unless_skipping(broken_nyud, capsys):
    with pytest.raises(BadTreeError) as err:
        NYUD(broken_nyud, "val", NYUD_TASKS, progress=False)
    assert "0003.npy" in str(err.value) and "0004.npy" in str(err.value)
    assert "skip_bad_samples" in str(err.value)
    # every val sample is bad: skipping them leaves an empty split, refused before a sampler
    # would fail with num_samples=0
    with pytest.raises(DataFormatError, match="has no sample left after skipping"):
        NYUD(broken_nyud, "val", NYUD_TASKS, skip_bad_samples=True, progress=False)
    assert "skipping 2 bad sample(s)" in capsys.readouterr().err
    ds = NYUD(broken_nyud, "val", ["semseg", "normals", "edge"], skip_bad_samples=True,
              progress=False)
    assert ds.ids == ["0004"] and {p.sample for p in ds.skipped} == {"0003"}
    # tasks that do not read the bad files keep their samples
    assert len(NYUD(broken_nyud, "val", ["semseg", "normals"], progress=False)) == 2


def test_verified_tree_is_rechecked_after_a_file_changes(tmp_path):
    root = write_fixture("nyud", tmp_path / "NYUD_MT")
    ds = NYUD(root, "train", NYUD_TASKS, progress=False)
    assert len(list((ds.cache_dir / "verified").iterdir())) == 1
    (root / "normals" / "0002.npy").write_bytes(b"garbage")
    with pytest.raises(BadTreeError, match="0002.npy: unreadable .npy"):
        NYUD(root, "train", NYUD_TASKS, progress=False)


def test_missing_split_and_corrupt_mat_are_named(tmp_path):
    root = write_fixture("pascal_context", tmp_path / "P")
    (root / "human_parts" / "2008_000003.mat").write_bytes(b"MATLAB 5.0 garbage")
    (root / "ImageSets" / "Context" / "train.txt").unlink()
    report = verify_tree("pascal_context", root, subset=True, progress=False)
    text = [str(p) for p in report.problems]
    assert any("train.txt: missing split file" in t for t in text)
    assert any("2008_000003.mat: unreadable .mat" in t for t in text)
    assert not report.ok and report.splits[1].task_counts["human_parts"] == 1
    with pytest.raises(DataFormatError, match="missing split file"):
        NYUD(root, "train", ["depth"], progress=False)


def _tar(path, members):
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            if isinstance(data, bytes):
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:  # a symlink target
                info.type, info.linkname = tarfile.SYMTYPE, data
                tar.addfile(info)
    return path


def test_safe_extract_refuses_traversal_links_and_overwrites(tmp_path):
    target = tmp_path / "target"
    evil = _tar(tmp_path / "evil.tgz", [("ok/a.txt", b"a"), ("../escaped.txt", b"x")])
    with pytest.raises(UnsafeArchiveError, match="path traversal"):
        safe_extract(evil, target)
    assert not (tmp_path / "escaped.txt").exists() and not (target / "ok").exists()
    link = _tar(tmp_path / "link.tgz", [("passwd", "/etc/passwd")])
    with pytest.raises(UnsafeArchiveError, match="points outside"):
        safe_extract(link, target)
    absolute = _tar(tmp_path / "abs.tgz", [("/tmp/abs.txt", b"x")])
    with pytest.raises(UnsafeArchiveError, match="absolute"):
        safe_extract(absolute, target)
    good = _tar(tmp_path / "good.tgz", [("tree/a.txt", b"hello"), ("tree/l", "a.txt")])
    assert (safe_extract(good, target) / "tree" / "a.txt").read_bytes() == b"hello"
    with pytest.raises(UnsafeArchiveError, match="overwrite"):
        safe_extract(good, target)


def test_download_without_public_archive_says_how_to_get_it(tmp_path):
    with pytest.raises(KeyError, match="verify taskonomy"):
        download("taskonomy", tmp_path)
    assert main(["download", "fsv", str(tmp_path)]) == 1
