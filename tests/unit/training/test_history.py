"""``metrics.csv`` under kills and resumes: appended, rewritten atomically for a new column,
continued (not deleted) by a resumed run, cut back to the checkpoint."""

from __future__ import annotations

import csv

from densemtl.training.logging import HistoryLogger


def rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_history_appends_rewrites_for_new_columns_and_continues_after_a_restart(tmp_path):
    logger = HistoryLogger(save_dir=str(tmp_path), name="", version="")
    logger.log_metrics({"loss": 1.0}, step=0)
    logger.save()
    logger.log_metrics({"loss": 0.5}, step=1)
    logger.log_metrics({"val/miou": 7.0}, step=1)  # a new column: the file is rewritten whole
    logger.save()
    path = tmp_path / "metrics.csv"
    assert rows(path) == [{"loss": "1.0", "step": "0", "val/miou": ""},
                          {"loss": "0.5", "step": "1", "val/miou": ""},
                          {"loss": "", "step": "1", "val/miou": "7.0"}]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.csv"]  # no temporary left
    # a resumed process: Lightning's CSV logger would delete the file here
    resumed = HistoryLogger(save_dir=str(tmp_path), name="", version="")
    resumed.log_metrics({"loss": 0.25}, step=2)
    resumed.log_metrics({"loss": 0.1}, step=3)
    resumed.save()
    assert [r["step"] for r in rows(path)] == ["0", "1", "1", "2", "3"]
    resumed.experiment.drop_after(2)  # the checkpoint was at step 2
    assert [r["step"] for r in rows(path)] == ["0", "1", "1", "2"]
    resumed.log_hyperparams({"config": {"lr": 0.1}})
    assert (tmp_path / "hparams.yaml").read_text() == "config:\n  lr: 0.1\n"
