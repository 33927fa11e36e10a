"""Both loops give a strategy exactly what its ``needs`` declare (GradNorm: last shared layer)."""

import copy

import pytest
import torch

from densemtl.models import DenseMTLNet
from densemtl.tasks import build_task
from densemtl.training.single_tasking import SingleTaskingModule, single_tasking_step
from densemtl.weighting import WEIGHTING_REGISTRY, build_weighting, subset_weightings
from densemtl.weighting.feed import backward_inputs, split_samples

BACKBONE = {"name": "seresnet26", "channels": (8, 16, 32, 64), "stem_width": 8}
TASKS = {"semseg": build_task("semseg", num_classes=4), "depth": build_task("depth")}


def make_net() -> DenseMTLNet:
    torch.manual_seed(0)
    channels = {t: task.out_channels for t, task in TASKS.items()}
    return DenseMTLNet(channels, backbone=BACKBONE, decoder_width=16, se="decoder").double()


def make_batch(size: int = 2) -> dict:
    g = torch.Generator().manual_seed(0)
    return {
        "image": torch.randn(size, 3, 32, 32, generator=g, dtype=torch.float64),
        "semseg": torch.randint(0, 4, (size, 32, 32), generator=g),
        "depth": torch.rand(size, 1, 32, 32, generator=g, dtype=torch.float64) * 4 + 1,
    }


def gradient_norms(net, params_of) -> torch.Tensor:
    """‖∇_W L_t‖ per task over ``params_of(net)``, from plain per-task autograd.grad calls."""
    preds = net(make_batch()["image"], list(TASKS))
    batch = make_batch()
    norms = []
    for t, task in TASKS.items():
        grads = torch.autograd.grad(task.loss(preds[t], batch[t]), params_of(net),
                                    retain_graph=True, allow_unused=True)
        norms.append(torch.sqrt(sum((g**2).sum() for g in grads if g is not None)))
    return torch.stack(norms)


def test_single_tasking_gradnorm_balances_the_last_shared_layer():
    """Accumulated schedule + GradNorm: the GradNorm gradient is sign(n − n̄)·n at step 1 with n
    the gradient norms at the LAST shared layer (before the fix: over all shared parameters)."""
    net = make_net()
    last = gradient_norms(copy.deepcopy(net), lambda m: m.last_shared_parameters())
    every = gradient_norms(copy.deepcopy(net), lambda m: m.shared_parameters())
    strategy = build_weighting("gradnorm", list(TASKS)).double()
    opt = torch.optim.SGD(net.parameters(), lr=0.0)
    single_tasking_step(net, TASKS, strategy, make_batch(), [list(TASKS)], opt)
    expected = torch.sign(last - last.mean()) * last
    torch.testing.assert_close(strategy.loss_weights.grad, expected, rtol=1e-9, atol=1e-12)
    wrong = torch.sign(every - every.mean()) * every
    assert not torch.allclose(wrong, expected, rtol=1e-3)  # the two choices are distinguishable


def test_backward_inputs_follow_the_declared_needs():
    net = make_net()
    net(make_batch()["image"], list(TASKS))
    gradnorm = backward_inputs(build_weighting("gradnorm", list(TASKS)), net)
    assert [id(p) for p in gradnorm["shared_parameters"]] == \
        [id(p) for p in net.last_shared_parameters()]
    exact = backward_inputs(build_weighting("imtl", list(TASKS), space="parameters"), net)
    assert [id(p) for p in exact["shared_parameters"]] == [id(p) for p in net.shared_parameters()]
    rep = backward_inputs(build_weighting("mgda", list(TASKS)), net)
    assert rep == {"representation": net.shared_representation}
    assert backward_inputs(build_weighting("equal", list(TASKS)), net) == {}


def test_split_samples_is_a_partition_of_the_batch():
    batch = make_batch(5)
    chunks = split_samples(batch, 3)
    assert [c["image"].shape[0] for c in chunks] == [2, 2, 1]
    for key in batch:
        assert torch.equal(torch.cat([c[key] for c in chunks]), batch[key])
    with pytest.raises(ValueError, match="cannot be split into 3"):
        split_samples(make_batch(2), 3)


def test_per_task_schedule_error_lists_the_strategies_that_take_a_task_subset():
    names = subset_weightings()
    assert names == sorted(n for n in WEIGHTING_REGISTRY.names()
                           if WEIGHTING_REGISTRY.get(n).accepts_task_subset)
    assert {"fixed", "equal", "uncertainty", "dwa", "lsb"} <= set(names)
    assert "gls" not in names and "rlw" not in names  # one-task geometric mean / softmax: identity
    with pytest.raises(ValueError, match="needs every task's loss at once") as err:
        SingleTaskingModule(make_net(), TASKS, {"name": "sgd", "lr": 0.1},
                            weighting=build_weighting("pcgrad", list(TASKS)))
    assert f"({', '.join(names)})" in str(err.value)
