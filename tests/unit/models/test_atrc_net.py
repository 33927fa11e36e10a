"""The ATRC network: HRNet features, the zero-initialised distillation, label-region routing,
search-head / fixed-head equivalence and the parameter partition."""

import pytest
import torch

from densemtl.models.atrc import ATRCNet, HRNetBackbone
from densemtl.models.atrc.context import LabelContext
from densemtl.tasks import build_task


def channels(tasks):
    return {t: task.out_channels for t, task in tasks.items()}


def make_tasks():
    return {"semseg": build_task("semseg", num_classes=4), "depth": build_task("depth"),
            "normals": build_task("normals")}


def images(n=2, size=32, seed=0):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_hrnet_w18_small_v2_features_are_the_four_raw_branches_at_stride_4():
    backbone = HRNetBackbone("hrnet_w18_small_v2")
    assert backbone.branch_channels == [18, 36, 72, 144]
    assert backbone.out_channels == 270
    assert backbone(torch.randn(1, 3, 64, 96)).shape == (1, 270, 16, 24)


def test_hrnet_takes_sides_not_divisible_by_32():
    tiny = HRNetBackbone("hrnet_tiny").eval()
    x = torch.randn(1, 3, 45, 70)
    out = tiny(x)
    assert out.shape == (1, 120, 12, 18)
    # the padded part is cropped: the top-left equals the features of the explicitly padded input
    padded = tiny(torch.nn.functional.pad(x, (0, 26, 0, 19)))
    assert torch.equal(out, padded[:, :, :12, :18])


def test_hrnet_w48_and_tiny_widths():
    assert HRNetBackbone("hrnet_w48").out_channels == 720
    tiny = HRNetBackbone("hrnet_tiny")
    assert tiny.branch_channels == [8, 16, 32, 64]
    assert tiny.eval()(torch.randn(1, 3, 32, 32)).shape == (1, 120, 8, 8)
    with pytest.raises(ValueError, match="hrnet_w18_small_v2"):
        HRNetBackbone("hrnet_w32")


def test_pretrained_path_loads_local_weights_and_rejects_a_wrong_file(tmp_path):
    source = HRNetBackbone("hrnet_tiny")
    path = tmp_path / "hrnet.pt"
    torch.save(source.body.state_dict(), path)
    loaded = HRNetBackbone("hrnet_tiny", pretrained_path=path)
    for (name, a), b in zip(source.body.state_dict().items(), loaded.body.state_dict().values()):
        assert torch.equal(a, b), name
    torch.save({"conv1.weight": torch.zeros(1)}, path)
    with pytest.raises(ValueError, match="hrnet.pt"):
        HRNetBackbone("hrnet_tiny", pretrained_path=path)


def test_at_init_a_target_ignores_the_other_tasks_features():
    torch.manual_seed(0)
    net = ATRCNet(channels(make_tasks()), encoder="hrnet_tiny", genotype=None).train()  # soft
    x = images()

    def semseg():
        torch.manual_seed(1)  # the same Gumbel noise and dropout masks in every call
        return net(x)["semseg"]

    before = semseg()
    with torch.no_grad():
        for t in ("depth", "normals"):
            for p in net.task_convs[t].parameters():
                p.add_(torch.randn_like(p))
    assert torch.equal(before, semseg())
    # once the distillation BN has a scale, the other tasks do reach the target
    with torch.no_grad():
        net.heads["semseg"].distill[1].weight.fill_(1.0)
    changed = semseg()
    with torch.no_grad():
        for p in net.task_convs["depth"].parameters():
            p.add_(torch.randn_like(p))
    assert not torch.allclose(semseg(), changed)


def test_t_label_and_s_label_read_the_target_and_source_region_maps():
    tasks = make_tasks()
    geno = {t: dict.fromkeys(tasks, "none") for t in tasks}
    geno["semseg"]["depth"] = "t_label"
    geno["depth"]["semseg"] = "s_label"
    torch.manual_seed(0)
    net = ATRCNet(channels(tasks), encoder="hrnet_tiny", genotype=geno).eval()
    assert sorted(net.label_tasks()) == ["semseg"]  # only semseg's labels are used
    seen = {}

    def capture(name):
        def hook(module, args):
            seen[name] = args[2]
        return hook

    net.heads["semseg"].blocks["depth"].context.register_forward_pre_hook(capture("t"))
    net.heads["depth"].blocks["semseg"].context.register_forward_pre_hook(capture("s"))
    net(images())
    semseg_regions = net.aux_logits["semseg"].flatten(2).softmax(2)
    assert torch.equal(seen["t"], semseg_regions) and torch.equal(seen["s"], semseg_regions)
    assert torch.allclose(seen["t"].sum(2), torch.ones(2, 4))
    # the other way round each block reads depth's map (40 bins)
    geno["semseg"]["depth"], geno["depth"]["semseg"] = "s_label", "t_label"
    net = ATRCNet(channels(tasks), encoder="hrnet_tiny", genotype=geno).eval()
    net.heads["semseg"].blocks["depth"].context.register_forward_pre_hook(capture("s"))
    net.heads["depth"].blocks["semseg"].context.register_forward_pre_hook(capture("t"))
    net(images())
    depth_regions = net.aux_logits["depth"].flatten(2).softmax(2)
    assert seen["s"].shape[1] == 40 and torch.equal(seen["s"], depth_regions)
    assert torch.equal(seen["t"], depth_regions)
    assert isinstance(net.heads["semseg"].blocks["depth"].context, LabelContext)


def test_ground_truth_regions_are_normalised_label_masks():
    tasks = {"semseg": build_task("semseg", num_classes=3)}
    net = ATRCNet(channels(tasks), encoder="hrnet_tiny",
                  genotype={"semseg": {"semseg": "t_label"}}, gt_regions=True)
    label = torch.zeros(1, 32, 32, dtype=torch.long)
    label[:, :, 16:] = 2
    net.region_labels = {"semseg": label}
    w = net._region_weights("semseg", (8, 8)).view(1, 3, 8, 8)
    assert torch.allclose(w[0, 0, :, :4], torch.full((8, 4), 1 / 32))
    assert w[0, 0, :, 4:].abs().sum() == 0 and w[0, 1].abs().sum() == 0
    assert torch.allclose(w[0, 2, :, 4:], torch.full((8, 4), 1 / 32))


def test_all_fixed_search_head_equals_the_fixed_genotype_head():
    tasks = make_tasks()
    geno = {"semseg": {"semseg": "local", "depth": "s_label", "normals": "none"},
            "depth": {"semseg": "global", "depth": "t_label", "normals": "s_label"},
            "normals": {"semseg": "none", "depth": "local", "normals": "global"}}
    torch.manual_seed(0)
    search = ATRCNet(channels(tasks), encoder="hrnet_tiny", genotype=None, dropout=0.0)
    fixed = ATRCNet(channels(tasks), encoder="hrnet_tiny", genotype=geno, dropout=0.0)
    for t, s, block in search.search_blocks():
        block.fixed.fill_(block.candidates.index(geno[t][s]))
    with torch.no_grad():
        for head in search.heads.values():  # make the distillation matter
            head.distill[1].weight.normal_()
            head.distill[1].bias.normal_()
    state = {}
    for name, value in search.state_dict().items():
        if name.startswith(("backbone.", "task_convs.")) or ".fuse." in name or ".logits." in name \
                or ".distill.1." in name:
            state[name] = value
        elif name.startswith(("aux_heads.", "label_spaces.")) and name.split(".")[1] in \
                fixed.aux_heads:
            state[name] = value
    width = search.attention_width
    for t, head in search.heads.items():
        kept = [i for i, s in enumerate(tasks) if geno[t][s] != "none"]
        w = head.distill[0].weight
        state[f"heads.{t}.distill.0.weight"] = torch.cat(
            [w[:, i * width:(i + 1) * width] for i in kept], 1)
        for s, block in head.blocks.items():
            if geno[t][s] == "none":
                continue
            for name, value in block.ops[geno[t][s]].state_dict().items():
                state[f"heads.{t}.blocks.{s}.context.{name}"] = value
    missing, unexpected = fixed.load_state_dict(state, strict=False)
    # only the fixed head's value-BN affine (γ = 1, β = 0: the search's affine-free BN) is new
    assert all(k.endswith(("value.1.weight", "value.1.bias")) for k in missing), missing
    assert not unexpected
    x = images()
    for mode in ("train", "eval"):
        search.train(mode == "train")
        fixed.train(mode == "train")
        a, b = search(x), fixed(x)
        for t in tasks:
            torch.testing.assert_close(a[t], b[t], rtol=1e-5, atol=1e-6)


def test_parameter_partition_covers_every_parameter_once():
    net = ATRCNet(channels(make_tasks()), encoder="hrnet_tiny", genotype=None)
    groups = [net.shared_parameters(), net.architecture_parameters(),
              *(net.task_parameters(t) for t in net.tasks)]
    ids = [id(p) for g in groups for p in g]
    assert len(ids) == len(set(ids)) == len(list(net.parameters()))
    assert len(net.architecture_parameters()) == 9
    assert net.feature_width == 30 and net.attention_width == 15
    out = net(images(), ["depth"])
    assert list(out) == ["depth"] and out["depth"].shape == (2, 1, 32, 32)
    assert net.features["depth"].shape == (2, 30, 8, 8)
