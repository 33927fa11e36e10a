"""LSB-study networks: decoder shape, the three architectures' sharing, cross-stitch mixing,
encoders (timm MobileNet-V2 / PNASNet), the build_net dispatch and GradNorm's last shared layer."""

import numpy as np
import pytest
import timm
import torch
from torch import nn

from densemtl.config import compose
from densemtl.experiment import build_net, build_tasks
from densemtl.models import DenseMTLNet
from densemtl.models.lsb_nets import (
    CrossStitchNet,
    FullSharingNet,
    LsbDecoder,
    LsbEncoder,
    MultiDecoderNet,
    build_lsb_net,
    cross_stitch_init,
    decoder_widths,
)
from densemtl.training.joint import JointModule
from densemtl.weighting import build_weighting, solvers
from densemtl.weighting.gradient_based import GradNorm

TASKS = {"depth": 1, "normals": 3, "semseg": 13}
SMALL = dict(encoder_width=0.35, decoder_width=16)


def images(seed: int = 0, size: int = 32) -> torch.Tensor:
    return torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(seed))


def losses_of(outputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Distinct smooth per-task losses (not all linear, so gradients differ in direction)."""
    return {t: (y.square().mean() + (i + 1) * y.mean()) for i, (t, y) in enumerate(outputs.items())}


@pytest.fixture(scope="module")
def nets() -> dict[str, nn.Module]:
    torch.manual_seed(0)
    return {arch: build_lsb_net(arch, TASKS, **SMALL)
            for arch in ("lsb_full_sharing", "lsb_multi_decoder", "lsb_cross_stitch")}


# -- decoder ---------------------------------------------------------------------------------------


def test_decoder_has_12_convs_and_5_upsamplings_to_full_resolution():
    decoder = LsbDecoder(in_channels=7, out_channels=5, width=64)
    convs = [m for m in decoder.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 12 and all(c.kernel_size == (3, 3) for c in convs)
    assert [c.out_channels for c in convs] == [64, 64, 32, 32, 16, 16, 16, 16, 16, 16, 16, 5]
    out = decoder(torch.randn(2, 7, 3, 2))
    assert out.shape == (2, 5, 3 * 32, 2 * 32)  # 2^5 = 32
    assert out.min() < 0  # the last conv is the linear estimation layer (no ReLU)
    assert decoder_widths(512) == [512, 256, 128, 64, 32, 16]
    assert decoder_widths(8) == [8] * 6


def test_decoder_rejects_bad_width():
    with pytest.raises(ValueError, match="model.decoder_width"):
        LsbDecoder(4, 1, width=0)


# -- architectures ---------------------------------------------------------------------------------


def test_full_sharing_outputs_are_channel_slices_of_one_decoder_output(nets):
    net = nets["lsb_full_sharing"]
    assert isinstance(net, FullSharingNet) and net.decoder.convs[-1].out_channels == 17
    out = net(images())
    rep = net.shared_representation
    assert rep.shape == (2, 17, 32, 32)
    assert torch.equal(out["depth"], rep[:, :1])
    assert torch.equal(out["normals"], rep[:, 1:4])
    assert torch.equal(out["semseg"], rep[:, 4:])
    assert all(net.task_parameters(t) == [] for t in TASKS)
    assert len(net.shared_parameters()) == len(list(net.parameters()))


def test_multi_decoder_tasks_only_reach_their_own_decoder(nets):
    net = nets["lsb_multi_decoder"]
    assert isinstance(net, MultiDecoderNet)
    net.zero_grad()
    out = net(images())
    z = net.shared_representation
    assert set(z) == set(TASKS) and len({id(v) for v in z.values()}) == 3
    assert all(torch.equal(v, z["depth"]) for v in z.values())
    out["normals"].square().mean().backward()
    for t in TASKS:
        grads = [p.grad for p in net.task_parameters(t)]
        reached = any(g is not None and g.abs().sum() > 0 for g in grads)
        assert reached == (t == "normals"), t
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.encoder.parameters())
    # parameters split into shared + per task, disjoint and complete
    ids = [id(p) for p in net.shared_parameters()]
    ids += [id(p) for t in TASKS for p in net.task_parameters(t)]
    assert sorted(ids) == sorted(id(p) for p in net.parameters())
    # a subset forward runs only the requested decoders
    assert set(net(images(), ["semseg"])) == {"semseg"} and set(net.features) == {"semseg"}


def test_cross_stitch_init_follows_the_supplement():
    three = cross_stitch_init(3)
    assert torch.allclose(three.diagonal(), torch.full((3,), 0.9))
    assert torch.allclose(three + torch.eye(3) * (0.05 - 0.9), torch.full((3, 3), 0.05))
    assert torch.allclose(cross_stitch_init(4), torch.full((4, 4), 0.25))
    assert torch.allclose(cross_stitch_init(8), torch.full((8, 8), 0.125))
    assert torch.allclose(cross_stitch_init(2, [0.7, 0.3]), torch.tensor([[0.7, 0.3], [0.3, 0.7]]))
    with pytest.raises(ValueError, match="model.stitch_init"):
        cross_stitch_init(3, [0.9])


def test_cross_stitch_mixes_columns_with_alpha(nets):
    net = nets["lsb_cross_stitch"]
    assert isinstance(net, CrossStitchNet) and net.shared_representation is None
    x = images(1)
    out = net(x)
    assert net.shared_representation is None
    cols = {t: net.encoders[t](x) for t in TASKS}
    alpha = net.stitch.alpha.detach()
    names = list(TASKS)
    for k, t in enumerate(names):
        mixed = sum(alpha[k, j] * cols[s] for j, s in enumerate(names))
        torch.testing.assert_close(net.features[t], mixed, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(out[t], net.decoders[t](mixed), rtol=1e-5, atol=1e-6)
    # every column is shared (α couples them): the depth loss reaches the semseg column and α
    net.zero_grad()
    net(x, ["depth"])["depth"].mean().backward()
    assert net.encoders["semseg"].last_layer_weight().grad.abs().sum() > 0
    assert net.stitch.alpha.grad[0].abs().sum() > 0 and net.stitch.alpha.grad[1:].abs().sum() == 0
    shared = {id(p) for p in net.shared_parameters()}
    assert id(net.stitch.alpha) in shared
    assert all(id(p) in shared for p in net.encoders["semseg"].parameters())


def test_identity_stitch_gives_independent_single_task_columns():
    torch.manual_seed(0)
    net = build_lsb_net("lsb_cross_stitch", {"a": 1, "b": 2}, stitch_init=[1.0, 0.0], **SMALL)
    x = images(2)
    out = net(x)
    for t in ("a", "b"):
        torch.testing.assert_close(out[t], net.decoders[t](net.encoders[t](x)))


def test_representation_mgda_on_multi_decoder_matches_per_task_gradients(nets):
    """MGDA-UB through the per-task views = min-norm over the ∂L_t/∂z taken one by one."""
    net = nets["lsb_multi_decoder"]
    x = images(3)
    encoder_params = list(net.encoder.parameters())
    # reference: separate backward passes per task w.r.t. the encoder output
    z = net.encoder(x)
    outs = {t: net.decoders[t](z) for t in TASKS}
    grads = [torch.autograd.grad(loss, z, retain_graph=True)[0]
             for loss in losses_of(outs).values()]
    flat = torch.stack([g.flatten() for g in grads]).double()
    alpha = solvers.min_norm_coefficients((flat @ flat.T).numpy())
    direction = sum(float(a) * g for a, g in zip(alpha, grads))
    expected = torch.autograd.grad(z, encoder_params, direction)
    # the strategy, driven as the joint module drives it
    net.zero_grad()
    strategy = build_weighting("mgda", list(TASKS))
    out = strategy.backward(losses_of(net(x)), representation=net.shared_representation)
    np.testing.assert_allclose(out.weight_tensor.numpy(), alpha, rtol=1e-5, atol=1e-7)
    for p, e in zip(encoder_params, expected):
        torch.testing.assert_close(p.grad, e, rtol=1e-4, atol=1e-7)


# -- GradNorm's last shared layer ------------------------------------------------------------------


def _deeplab(decoder: str) -> DenseMTLNet:
    backbone = dict(name="mobilenetv2", width=0.35, squeeze_excite=False)
    return DenseMTLNet(TASKS, backbone=backbone, decoder=decoder, decoder_width=16)


@pytest.mark.parametrize("name", ["lsb_full_sharing", "lsb_multi_decoder", "lsb_cross_stitch",
                                  "deeplab", "ubernet"])
def test_last_shared_layer_is_shared_and_reached_by_every_task(nets, name):
    net = nets[name] if name in nets else _deeplab(name)
    layer = net.last_shared_parameters()
    shared = {id(p) for p in net.shared_parameters()}
    assert layer and all(id(p) in shared for p in layer)
    x = images(4)
    for t, loss in losses_of(net(x)).items():
        grads = torch.autograd.grad(loss, layer, retain_graph=True, allow_unused=True)
        assert all(g is not None and g.abs().sum() > 0 for g in grads), t


def test_joint_module_gives_gradnorm_only_the_last_shared_layer(nets):
    seen: list[list[int]] = []

    class RecordingGradNorm(GradNorm):
        def _backward(self, losses, index, inputs, backward_fn):
            seen.append([id(p) for p in inputs.shared_parameters])
            return super()._backward(losses, index, inputs, backward_fn)

    net = nets["lsb_full_sharing"]
    tasks = build_tasks(compose(["tasks=nyuv2_lsb3"]))
    module = JointModule(net, tasks, {"name": "adamw"}, weighting=RecordingGradNorm(list(tasks)))
    channels = {"lsb_depth": 1, "lsb_normals": 3, "lsb_semseg": 13}
    assert {t: task.out_channels for t, task in tasks.items()} == channels
    out = dict(zip(tasks, net(images()).values()))
    module._step_losses = [losses_of(out)]  # one loss sample (GradNorm needs no more)
    module.backward(sum(module._step_losses[0].values()))
    assert seen == [[id(net.decoder.convs[-2].weight)]]
    assert module.weighting.loss_weights.grad is not None


# -- encoders and the build_net dispatch -----------------------------------------------------------


def test_mobilenet_encoder_is_stride_32_and_loads_a_local_state_dict(tmp_path):
    torch.manual_seed(0)
    full = timm.create_model("mobilenetv2_035", pretrained=False)
    path = tmp_path / "mnv2.pth"
    torch.save(full.state_dict(), path)
    encoder = LsbEncoder("mobilenetv2", 0.35, pretrained_path=path)
    assert encoder.out_channels == 112 and encoder.reduction == 32
    assert encoder(images(size=64)).shape == (2, 112, 2, 2)
    torch.testing.assert_close(encoder.last_layer_weight(), full.blocks[-1][-1].conv_pwl.weight)
    fresh = LsbEncoder("mobilenetv2", 0.35)
    assert not torch.equal(fresh.last_layer_weight(), full.blocks[-1][-1].conv_pwl.weight)
    with pytest.raises(FileNotFoundError, match="model.pretrained_path"):
        LsbEncoder("mobilenetv2", 0.35, pretrained_path=tmp_path / "missing.pth")


def test_encoder_choices_fail_clearly():
    with pytest.raises(ValueError, match="model.encoder_width=0.3 .*0.35"):
        LsbEncoder("mobilenetv2", 0.3)
    with pytest.raises(ValueError, match="model.encoder='resnet'.*pnasnet"):
        LsbEncoder("resnet")
    with pytest.raises(ValueError, match="model.encoder_width must be 1.0 for pnasnet"):
        LsbEncoder("pnasnet", 0.5)
    with pytest.raises(ValueError, match="model.stitch_init applies to lsb_cross_stitch"):
        build_lsb_net("lsb_multi_decoder", TASKS, stitch_init=[1.0, 0.0], **SMALL)


def test_pnasnet_encoder_builds_features_only_at_a_tiny_input():
    encoder = LsbEncoder("pnasnet").eval()  # train-mode BN needs > 1 value per channel
    assert encoder.out_channels == 4320 and encoder.reduction == 32
    with torch.no_grad():
        assert encoder(torch.zeros(1, 3, 32, 32)).shape == (1, 4320, 1, 1)


@pytest.mark.parametrize("arch,cls", [("lsb_full_sharing", FullSharingNet),
                                      ("lsb_multi_decoder", MultiDecoderNet),
                                      ("lsb_cross_stitch", CrossStitchNet)])
def test_build_net_dispatches_on_model_arch(arch, cls):
    cfg = compose([f"model={arch}", "tasks=nyuv2_lsb3", "modulation=none",
                   "model.decoder_width=16"])
    net = build_net(cfg, build_tasks(cfg))
    assert type(net) is cls and net.tasks == ("lsb_depth", "lsb_normals", "lsb_semseg")
    out = net(images())
    assert {t: y.shape[1] for t, y in out.items()} == {"lsb_depth": 1, "lsb_normals": 3,
                                                        "lsb_semseg": 13}


def test_build_net_default_arch_is_deeplab_and_unknown_arch_is_named():
    cfg = compose(["model=mtl_baseline", "modulation=none", "backbone=mobilenetv2_cpu"])
    assert type(build_net(cfg, build_tasks(cfg))) is DenseMTLNet
    cfg = compose(["model=lsb_multi_decoder", "tasks=nyuv2_lsb3", "model.arch=lsb_fullsharing"])
    with pytest.raises(ValueError, match="model.arch='lsb_fullsharing'.*lsb_full_sharing"):
        build_net(cfg, build_tasks(cfg))
