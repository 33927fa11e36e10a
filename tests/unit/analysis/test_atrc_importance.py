"""ATRC block importance by permutation."""

import pytest
import torch

from densemtl.analysis.atrc_importance import block_importance, write_importance
from densemtl.models.atrc import ATRCNet
from densemtl.tasks import build_task


def channels(tasks):
    return {t: task.out_channels for t, task in tasks.items()}


def setup_net():
    tasks = {"semseg": build_task("semseg", num_classes=3), "depth": build_task("depth")}
    genotype = {"semseg": {"semseg": "global", "depth": "local"},
                "depth": {"semseg": "none", "depth": "global"}}
    torch.manual_seed(0)
    net = ATRCNet(channels(tasks), encoder="hrnet_tiny", genotype=genotype)
    g = torch.Generator().manual_seed(0)
    batches = [{"image": torch.randn(3, 3, 32, 32, generator=g),
                "semseg": torch.randint(0, 3, (3, 32, 32), generator=g),
                "depth": torch.rand(3, 1, 32, 32, generator=g) + 1} for _ in range(2)]
    return net, tasks, batches


def test_blocks_without_distillation_or_with_identical_images_do_not_matter():
    net, tasks, batches = setup_net()
    result = block_importance(net, tasks, batches)
    assert set(result["semseg"]) == {"semseg", "depth"} and set(result["depth"]) == {"depth"}
    # at initialisation the distillation BN has γ = β = 0: shuffling changes nothing
    assert all(c["drop_pct"] == 0.0 for row in result.values() for c in row.values())
    with torch.no_grad():
        for head in net.heads.values():
            head.distill[1].weight.fill_(5.0)
    result = block_importance(net, tasks, batches)
    assert result["depth"]["depth"]["drop_pct"] != 0.0
    assert result["depth"]["depth"]["metric"] == "rmse"
    cell = result["depth"]["depth"]
    assert cell["drop_pct"] == pytest.approx(-(cell["base"] - cell["permuted"]) / cell["base"]
                                             * 100)
    same = [{k: v[:1].expand(2, *v.shape[1:]) for k, v in b.items()} for b in batches]
    result = block_importance(net, tasks, same)
    assert all(c["drop_pct"] == 0.0 for row in result.values() for c in row.values())


def test_single_image_batches_are_rejected_and_outputs_written(tmp_path):
    net, tasks, batches = setup_net()
    with pytest.raises(ValueError, match="at least 2 images"):
        block_importance(net, tasks, [{k: v[:1] for k, v in batches[0].items()}])
    json_path, png = write_importance(block_importance(net, tasks, batches), tmp_path)
    assert json_path.is_file() and png.stat().st_size > 0
