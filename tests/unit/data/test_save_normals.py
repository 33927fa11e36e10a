"""Saved 8-bit normals PNGs, rounded or truncated, and the metric's matching encodings."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from densemtl.data.formats import read_png, save_prediction
from densemtl.metrics.dense import NormalsMetric


def test_normals_png_round_and_trunc_by_hand_and_the_metric_scores_the_saved_file(tmp_path):
    # float32 (0.6, 0.8, 0): 255·(n + 1)/2 = 204.000003, 229.5000015, 127.5
    pred = torch.tensor([0.6, 0.8, 0.0]).view(3, 1, 1).expand(3, 2, 2).contiguous()
    target = torch.nn.functional.normalize(torch.tensor([0.5, 0.8, 0.3]), dim=0)
    target = target.view(1, 3, 1, 1).expand(1, 3, 2, 2)
    for encoding, expected in (("round", (204, 230, 128)), ("trunc", (204, 229, 127))):
        path = save_prediction("normals", pred, tmp_path / f"{encoding}.png",
                               normals_encoding=encoding)
        png = read_png(path, channels=3)
        assert png[0, 0].tolist() == list(expected)
        decoded = torch.tensor(2 * png.astype(np.float64) / 255 - 1).permute(2, 0, 1)[None]
        from_file, encoded = NormalsMetric(), NormalsMetric(quantize_8bit=encoding)
        from_file.update(decoded.float(), target)
        encoded.update(pred[None], target)
        assert from_file.compute()["mean"].item() == pytest.approx(
            encoded.compute()["mean"].item(), abs=1e-4)
    with pytest.raises(ValueError, match="normals_encoding"):
        save_prediction("normals", pred, tmp_path / "x.png", normals_encoding="floor")
