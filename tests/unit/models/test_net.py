"""DenseMTLNet, backbones and decoders: shapes, execution-mode equivalence, parameter partition,
per-task gradient isolation, local weight loading and option validation (narrow nets, CPU)."""

import pytest
import torch
import torch.nn.functional as F
from timm.models.resnet import Bottleneck, ResNet

from densemtl.models import (
    DenseMTLNet,
    TaskAdapter,
    TaskBatchNorm2d,
    TaskSqueezeExcite,
    build_backbone,
)

NARROW = (8, 16, 32, 64)
R26 = dict(name="seresnet26", channels=NARROW, stem_width=8)
MNV2 = dict(name="mobilenetv2", width=0.35)
TASKS = {"semseg": 5, "edge": 1, "normals": 3}


pytestmark = pytest.mark.usefixtures("one_thread")


def _net(backbone=R26, **kw) -> DenseMTLNet:
    torch.manual_seed(0)
    return DenseMTLNet(TASKS, backbone=dict(backbone), decoder_width=64, **kw)


def _perturb(net: DenseMTLNet, seed: int = 1) -> None:
    """Deterministic noise on every parameter, so per-task copies differ between tasks."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=gen, dtype=p.dtype))


def _loss(preds: dict, seed: int = 2) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return sum(
        (p * torch.randn(p.shape, generator=gen, dtype=p.dtype)).mean() * (i + 1)
        for i, p in enumerate(preds[t] for t in sorted(preds))
    )


@pytest.mark.parametrize("output_stride", [8, 16])
@pytest.mark.parametrize("backbone", [R26, MNV2], ids=["seresnet26", "mobilenetv2"])
def test_shapes(backbone, output_stride):
    b = build_backbone(**backbone, output_stride=output_stride)
    low, high = b(torch.randn(2, 3, 64, 64))
    assert low.shape == (2, b.low_channels, 16, 16)
    assert high.shape == (2, b.high_channels, 64 // output_stride, 64 // output_stride)
    if backbone is R26:
        assert (b.low_channels, b.high_channels) == (4 * NARROW[0], 4 * NARROW[-1])
        assert b.stem[0].out_channels == 8  # narrowed stem (timm fixes its plain stem at 64)
    net = _net(dict(backbone, output_stride=output_stride), se="decoder")
    preds = net(torch.randn(2, 3, 64, 64))
    assert {t: p.shape for t, p in preds.items()} == {t: (2, c, 64, 64) for t, c in TASKS.items()}
    assert all(f.shape == (2, 64, 16, 16) for f in net.features.values())
    if backbone is MNV2:  # appendix C decoder: depthwise-separable 3×3 convs, ReLU6
        assert isinstance(net.decoder.fuse.act, torch.nn.ReLU6)
        assert net.decoder.fuse.conv.depthwise.groups == net.decoder.fuse.conv.in_channels


def test_aspp_rates_follow_output_stride():
    for os_, rates in ((16, (6, 12, 18)), (8, (12, 24, 36))):
        net = _net(dict(R26, output_stride=os_))
        assert tuple(b.conv.dilation[0] for b in net.decoder.aspp.branches[1:]) == rates
    assert net.decoder.low_reduce.conv.out_channels == 48 * 64 // 256


@pytest.mark.parametrize(
    "kw", [dict(), dict(se="encoder_decoder", adapters=True), dict(decoder="ubernet")]
)
def test_gradient_reaches_every_parameter(kw):
    net = _net(**kw)
    _loss(net(torch.randn(2, 3, 32, 32))).backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.any()]
    assert not missing


def test_adapters_are_exactly_zero_at_init():
    x = torch.randn(2, 3, 32, 32)
    plain, adapted = _net(se="encoder_decoder"), _net(se="encoder_decoder", adapters=True)
    assert sum(isinstance(m, TaskAdapter) for m in adapted.modules()) > 0
    for execution in ("sequential", "stacked"):
        plain.execution = adapted.execution = execution
        a, b = plain(x), adapted(x)
        assert all(torch.equal(a[t], b[t]) for t in TASKS)


def _run(net: DenseMTLNet, x: torch.Tensor):
    preds = net(x)
    _loss(preds).backward()
    grads = {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}
    per_task_buffers = {n: b.clone() for n, b in net.named_buffers() if ".per_task." in n}
    return preds, {t: f.detach() for t, f in net.features.items()}, grads, per_task_buffers


@pytest.mark.parametrize(
    "conf,modes",
    [
        (
            dict(se="decoder"),
            [
                dict(execution="sequential"),
                dict(execution="stacked"),
                dict(execution="shared_encoder"),
                dict(execution="shared_encoder", decoder_execution="sequential"),
                dict(execution="auto"),
            ],
        ),
        (
            dict(se="encoder_decoder", adapters=True),
            [dict(execution="sequential"), dict(execution="stacked"), dict(execution="auto")],
        ),
        (
            dict(se="encoder_decoder", adapters=True, backbone=MNV2),
            [dict(execution="sequential"), dict(execution="stacked")],
        ),
        (
            dict(se="encoder_decoder", decoder="ubernet"),
            [dict(execution="sequential"), dict(execution="stacked")],
        ),
    ],
    ids=["se-decoder", "se-enc-dec+adapters", "mobilenet-se-enc-dec+adapters", "ubernet-se"],
)
def test_execution_modes_give_identical_numbers(conf, modes):
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    results = []
    for mode in modes:
        net = _net(**conf, **mode).double()
        _perturb(net)
        results.append(_run(net, x))
    ref_preds, ref_feats, ref_grads, ref_bufs = results[0]
    assert len(ref_grads) == len(list(net.parameters()))
    assert ref_bufs  # per-task running statistics exist and are compared
    for preds, feats, grads, bufs in results[1:]:
        for t in TASKS:
            torch.testing.assert_close(preds[t], ref_preds[t], atol=1e-10, rtol=1e-10)
            torch.testing.assert_close(feats[t], ref_feats[t], atol=1e-10, rtol=1e-10)
        assert grads.keys() == ref_grads.keys()
        for n in grads:  # float64 summation order differs: 1e-10 of the gradient's scale
            scale = max(1.0, ref_grads[n].abs().max().item())
            torch.testing.assert_close(grads[n], ref_grads[n], atol=1e-10 * scale, rtol=1e-8,
                                       msg=n)
        assert bufs.keys() == ref_bufs.keys()
        for n in bufs:
            torch.testing.assert_close(bufs[n], ref_bufs[n], atol=1e-12, rtol=1e-10, msg=n)


@pytest.mark.parametrize("execution", ["sequential", "stacked"])
def test_unused_task_gets_no_gradient_and_no_optimizer_update(execution):
    net = _net(se="encoder_decoder", adapters=True, execution=execution)
    before = {t: [p.detach().clone() for p in net.task_parameters(t)] for t in TASKS}
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-2)
    for _ in range(2):  # second step: momentum buffers exist for the used parameters
        opt.zero_grad(set_to_none=True)
        _loss(net(torch.randn(2, 3, 32, 32), tasks=["semseg", "normals"])).backward()
        assert all(p.grad is None for p in net.task_parameters("edge"))
        assert all(p.grad is not None for p in net.task_parameters("semseg"))
        opt.step()
    assert all(torch.equal(p, q) for p, q in zip(net.task_parameters("edge"), before["edge"]))
    assert not all(
        torch.equal(p, q) for p, q in zip(net.task_parameters("semseg"), before["semseg"])
    )


@pytest.mark.parametrize(
    "kw", [dict(), dict(se="encoder_decoder", adapters=True), dict(decoder="ubernet")]
)
def test_shared_and_task_parameters_partition_the_network(kw):
    net = _net(**kw)
    everything = {id(p) for p in net.parameters()}
    shared = {id(p) for p in net.shared_parameters()}
    per_task = [{id(p) for p in net.task_parameters(t)} for t in TASKS]
    assert all(not (shared & s) for s in per_task)
    assert all(not (a & b) for i, a in enumerate(per_task) for b in per_task[i + 1 :])
    assert shared.union(*per_task) == everything
    for t, ids in zip(TASKS, per_task):
        assert {id(p) for p in net.heads.per_task[t].parameters()} <= ids
    if not kw:  # baseline: a task owns exactly its head's weight and bias
        assert all(len(s) == 2 for s in per_task)


def test_conditioned_module_counts_follow_the_options():
    def count(net, cls, part):
        return sum(isinstance(m, cls) for m in getattr(net, part).modules())

    dec = _net(se="decoder")
    assert count(dec, TaskSqueezeExcite, "backbone") == count(dec, TaskBatchNorm2d, "backbone") == 0
    assert count(dec, TaskSqueezeExcite, "decoder") == 9  # 5 ASPP + project + low + 2 convs
    assert count(dec, TaskBatchNorm2d, "decoder") == 9
    full = _net(se="encoder_decoder")
    assert count(full, TaskSqueezeExcite, "backbone") == 8  # 8 bottlenecks
    assert count(full, TaskBatchNorm2d, "backbone") == 8 * 3 + 4  # + 4 projection shortcuts
    assert not isinstance(full.backbone.stem[1], TaskBatchNorm2d)  # stem stays shared
    no_bn = _net(se="encoder_decoder", per_task_bn=False)
    assert count(no_bn, TaskBatchNorm2d, "backbone") == 0
    assert count(no_bn, TaskBatchNorm2d, "decoder") == 0


@pytest.mark.parametrize("execution", ["sequential", "stacked"])
def test_features_are_the_tensors_the_heads_consumed(execution):
    net = _net(se="decoder", execution=execution).double()
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    preds = net(x)
    for t in TASKS:
        loss = _loss({t: preds[t]})
        (g,) = torch.autograd.grad(loss, net.features[t], retain_graph=True, create_graph=True)
        leaf = net.features[t].detach().requires_grad_()
        pred = F.interpolate(net.heads(leaf, t), size=(32, 32), mode="bilinear")
        (expected,) = torch.autograd.grad(_loss({t: pred}), leaf)
        torch.testing.assert_close(g, expected)
        assert g.requires_grad  # double backprop is possible (adversarial loss)
    assert net.shared_representation is None


def test_baseline_is_one_shared_forward_with_shared_representation():
    net = _net()
    preds = net(torch.randn(2, 3, 32, 32))
    rep = net.shared_representation  # one view of the decoder features per head
    assert set(rep) == set(TASKS) and all(net.features[t] is rep[t] for t in TASKS)
    assert len({id(v) for v in rep.values()}) == len(TASKS)
    assert all(v._base is rep["semseg"]._base for v in rep.values())
    uber = _net(decoder="ubernet")
    uber(torch.randn(2, 3, 32, 32))
    low, high = uber.shared_representation
    assert (low.shape[1], high.shape[1]) == (4 * NARROW[0], 4 * NARROW[-1])
    assert {t: f.shape[1] for t, f in uber.features.items()} == {t: 2 * c for t, c in TASKS.items()}
    assert preds["semseg"].shape == (2, 5, 32, 32)


@pytest.mark.parametrize("kw", [{}, {"decoder": "ubernet"}, {"se": "decoder"},
                                {"se": "encoder_decoder", "execution": "stacked"},
                                {"adapters": True}, {"per_task_bn": True}])
def test_has_shared_representation_says_whether_a_forward_sets_one(kw):
    net = _net(**kw)
    assert net.output_stride == 16
    net(torch.randn(2, 3, 32, 32))
    assert net.has_shared_representation == (net.shared_representation is not None)
    assert net.has_shared_representation == (kw in ({}, {"decoder": "ubernet"}))


def _timm_seresnet(channels=NARROW, num_classes=10) -> ResNet:
    torch.manual_seed(3)
    return ResNet(
        block=Bottleneck,
        layers=(2, 2, 2, 2),
        block_args=dict(attn_layer="se"),
        output_stride=16,
        channels=channels,
        num_classes=num_classes,
    )


def test_pretrained_state_dict_file_loads_into_backbone_and_every_task_copy(tmp_path):
    model = _timm_seresnet()
    with torch.no_grad():  # non-trivial BN statistics
        for name, buf in model.named_buffers():
            if "running" in name:
                buf.uniform_(0.5, 1.5)
    state = model.state_dict()
    path = tmp_path / "seresnet26_narrow.pth"
    torch.save(state, path)
    backbone = dict(name="seresnet26", channels=NARROW, pretrained_path=str(path))
    b = build_backbone(**backbone)
    renamed = {"stem.0": "conv1", "stem.1": "bn1"}
    renamed |= {f"stages.{i}": f"layer{i + 1}" for i in range(4)}
    loaded = b.state_dict()
    assert len(loaded) == len([k for k in state if not k.startswith("fc.")])
    for key, value in loaded.items():
        prefix, rest = key.split(".", 2)[:2], key.split(".", 2)[2]
        assert torch.equal(value, state[f"{renamed['.'.join(prefix)]}.{rest}"]), key
    net = DenseMTLNet(TASKS, backbone=backbone, se="encoder_decoder")
    se = net.backbone.stages[2][1].se
    bn = net.backbone.stages[2][1].bn2
    for t in TASKS:
        assert torch.equal(se.per_task[t].fc1.weight, state["layer3.1.se.fc1.weight"])
        assert torch.equal(bn.per_task[t].running_var, state["layer3.1.bn2.running_var"])


def test_pretrained_mismatch_and_corrupt_files_fail_clearly(tmp_path):
    wrong = tmp_path / "wrong.pth"
    torch.save(_timm_seresnet(channels=(8, 16, 32, 128)).state_dict(), wrong)
    with pytest.raises(ValueError, match=r"wrong\.pth.*shape mismatches \[layer4"):
        build_backbone(**dict(R26, stem_width=64), pretrained_path=wrong)
    extra = tmp_path / "extra.pth"
    state = _timm_seresnet().state_dict()
    state["extra.weight"] = torch.zeros(1)
    del state["layer1.0.bn1.bias"]
    torch.save(state, extra)
    with pytest.raises(ValueError, match=r"missing keys \[layer1\.0\.bn1\.bias\]; unexpected"):
        build_backbone(**dict(R26, stem_width=64), pretrained_path=extra)
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="could not read a state dict from .*corrupt.pth"):
        build_backbone(**R26, pretrained_path=corrupt)
    with pytest.raises(FileNotFoundError, match="absent.pth"):
        build_backbone(**R26, pretrained_path=tmp_path / "absent.pth")


def test_mobilenet_loads_a_timm_state_dict_and_reports_missing_se(tmp_path):
    import timm

    torch.manual_seed(4)
    state = timm.create_model("mobilenetv2_035", pretrained=False).state_dict()
    path = tmp_path / "mnv2.pth"
    torch.save(state, path)
    b = build_backbone("mobilenetv2", width=0.35, squeeze_excite=False, pretrained_path=path)
    assert torch.equal(b.blocks[3][1].conv_pw.weight, state["blocks.3.1.conv_pw.weight"])
    with pytest.raises(ValueError, match=r"missing keys \[blocks\.0\.0\.se\.fc1\.bias"):
        build_backbone("mobilenetv2", width=0.35, pretrained_path=path)


@pytest.mark.parametrize(
    "call,message",
    [
        (lambda: build_backbone("resnet9"), "mobilenetv2, seresnet101, seresnet26, seresnet50"),
        (lambda: build_backbone(**R26, output_stride=32), r"one of \(8, 16\)"),
        (lambda: build_backbone("mobilenetv2", width=0.6), r"\[0.35, 0.5, 0.75, 1.0, 1.4\]"),
        (lambda: _net(se="encoder"), "none, decoder, encoder_decoder"),
        (lambda: _net(execution="parallel"), "auto, sequential, stacked, shared_encoder"),
        (lambda: _net(decoder="fpn"), "deeplab, ubernet"),
        (lambda: _net(se="decoder", decoder_execution="x"), "stacked, sequential"),
        (lambda: _net(se="encoder_decoder", execution="shared_encoder"), "task-conditioned"),
        (lambda: _net(se="decoder", adapters=True, execution="shared_encoder"), "adapters=True"),
        (lambda: _net(decoder="ubernet", se="decoder"), "already one decoder per task"),
        (lambda: DenseMTLNet(TASKS, backbone=R26, decoder_width=40), "multiple of 16"),
        (lambda: DenseMTLNet({"semseg": 0}, backbone=R26), "positive integers"),
        (lambda: _net()(torch.randn(1, 3, 32, 32), tasks=["depth"]), "'semseg', 'edge'"),
    ],
)
def test_bad_options_name_the_valid_choices(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_conditioned_module_outside_forward_is_an_error():
    net = _net(se="encoder_decoder")
    with pytest.raises(RuntimeError, match="no active task"):
        net.backbone(torch.randn(2, 3, 32, 32))
    assert net.router._active is None  # routing was reset after earlier forwards too


def test_plain_resnet_backbone_has_no_se_and_fewer_parameters():
    """``squeeze_excite=False`` (ASTMT Table 3a w/o SE-bb) drops exactly the SE modules."""
    from densemtl.models.backbones import build_backbone

    kw = dict(channels=(8, 16, 32, 64), stem_width=8)
    with_se = build_backbone("seresnet26", **kw)
    plain = build_backbone("seresnet26", squeeze_excite=False, **kw)
    se_params = sum(p.numel() for n, p in with_se.named_parameters() if ".se." in n)
    n_with = sum(p.numel() for p in with_se.parameters())
    n_plain = sum(p.numel() for p in plain.parameters())
    assert se_params > 0 and n_with - n_plain == se_params
    assert not any(".se." in n for n, _ in plain.named_parameters())


def test_auto_execution_shares_the_encoder_only_when_no_task_conditions_it():
    assert _net(se="decoder", execution="auto").execution == "shared_encoder"
    assert _net(se="encoder_decoder", execution="auto").execution == "sequential"
    assert _net(se="decoder", adapters=True, execution="auto").execution == "sequential"
    assert _net(se="decoder", per_task_bn=True, execution="auto").execution == "sequential"
