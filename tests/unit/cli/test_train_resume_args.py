"""``densemtl-train``'s start-up checks and ``resume=<run dir>``."""

from __future__ import annotations

import pytest

from densemtl.cli.train import check_objective, resume_argv
from densemtl.config import compose


def test_resume_composes_the_run_overrides_with_the_new_ones_winning(tmp_path):
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "overrides.yaml").write_text(
        "- weighting=dwa\n- trainer.max_epochs=3\n- ckpt_path=/old/last.ckpt\n")
    assert resume_argv([f"resume={tmp_path}", "trainer.max_epochs=5"]) == [
        "weighting=dwa", "trainer.max_epochs=5", f"hydra.run.dir={tmp_path}"]
    assert resume_argv(["seed=1"]) == ["seed=1"]
    with pytest.raises(SystemExit, match=r"nowhere/.hydra/overrides.yaml does not exist"):
        resume_argv([f"resume={tmp_path / 'nowhere'}"])


def test_unknown_objective_is_refused_before_training():
    with pytest.raises(ValueError, match=r"tracking.objective='segsem/mIoU' is not .* \(semseg"):
        check_objective(compose(["tracking.objective=segsem/mIoU"]))
    with pytest.raises(ValueError, match="delta_m_gain needs baselines="):
        check_objective(compose(["tracking.objective=delta_m_gain"]))
    check_objective(compose(["tracking.objective=semseg/mIoU"]))
