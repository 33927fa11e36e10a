"""The single-tasking step: update isolation, schedules, the adversarial objective."""

import copy

import pytest
import torch

from densemtl.models import DenseMTLNet
from densemtl.models.adversarial import TaskDiscriminator, adversarial_loss, task_gradient
from densemtl.tasks import build_task
from densemtl.training.single_tasking import Adversary, single_tasking_step
from densemtl.weighting import build_weighting

BACKBONE = {"name": "seresnet26", "channels": (8, 16, 32, 64), "stem_width": 8}
TASKS = {"semseg": build_task("semseg", num_classes=4), "depth": build_task("depth")}


def make_net(**kw) -> DenseMTLNet:
    torch.manual_seed(0)
    channels = {t: task.out_channels for t, task in TASKS.items()}
    return DenseMTLNet(channels, backbone=BACKBONE, decoder_width=32, **kw)


def make_batch(seed: int = 0, dtype=torch.float32) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {
        "image": torch.randn(2, 3, 32, 32, generator=g, dtype=dtype),
        "semseg": torch.randint(0, 4, (2, 32, 32), generator=g),
        "depth": torch.rand(2, 1, 32, 32, generator=g, dtype=dtype) * 4 + 1,
    }


def fixed() -> object:
    return build_weighting("fixed", list(TASKS), weights={"semseg": 1.0, "depth": 2.0})


def test_tasks_not_run_keep_their_parameters_bit_identical():
    net = make_net(se="decoder")
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-2)
    passes = [["semseg"], ["depth"]]
    single_tasking_step(net, TASKS, fixed(), make_batch(0), passes, opt)  # momentum for both
    depth_before = [p.detach().clone() for p in net.task_parameters("depth")]
    semseg_before = [p.detach().clone() for p in net.task_parameters("semseg")]
    single_tasking_step(net, TASKS, fixed(), make_batch(1), [["semseg"]], opt)
    assert all(torch.equal(a, p) for a, p in zip(depth_before, net.task_parameters("depth")))
    assert not all(torch.equal(a, p) for a, p in zip(semseg_before, net.task_parameters("semseg")))

    # The failure this guards against: zeroing gradients to 0 instead of None lets momentum and
    # weight decay move the idle task's parameters.
    for p in net.parameters():
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    opt.step()
    assert not all(torch.equal(a, p) for a, p in zip(depth_before, net.task_parameters("depth")))


class GradientRecorder:
    """Optimiser stand-in: records the summed gradients of every step, changes nothing."""

    def __init__(self, params):
        self.params = list(params)
        self.total = [torch.zeros_like(p) for p in self.params]

    def zero_grad(self, set_to_none=True):
        for p in self.params:
            p.grad = None

    def step(self):
        for acc, p in zip(self.total, self.params):
            if p.grad is not None:
                acc += p.grad


@pytest.mark.parametrize("execution", ["sequential", "stacked", "shared_encoder"])
def test_accumulated_schedule_equals_sum_of_per_task_gradients(execution):
    """At fixed weights, one accumulated pass = the sum of the per-task passes' gradients."""
    net = make_net(se="decoder", execution=execution).double()
    twin = copy.deepcopy(net)
    batch = make_batch(2, dtype=torch.float64)
    per_task, accumulated = GradientRecorder(net.parameters()), GradientRecorder(twin.parameters())
    single_tasking_step(net, TASKS, fixed(), batch, [["semseg"], ["depth"]], per_task)
    single_tasking_step(twin, TASKS, fixed(), batch, [["semseg", "depth"]], accumulated)
    for a, b in zip(per_task.total, accumulated.total):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    assert any(a.abs().sum() > 0 for a in per_task.total)


def test_adversarial_objective_is_eq5():
    """The weighting sees w_t·L_t, L_D is the discriminator CE on the task gradient, and the
    discriminator receives gradients."""
    net = make_net(se="decoder")
    torch.manual_seed(1)
    disc = TaskDiscriminator(32, 2, hidden=8)
    params = list(net.parameters()) + list(disc.parameters())
    recorder = GradientRecorder(params)
    weighting = fixed()
    batch = make_batch(3)
    done = single_tasking_step(net, TASKS, weighting, batch, [["depth"]], recorder,
                               adversary=Adversary(disc, w_d=0.25, lambd=0.5))
    (out, disc_loss), = done
    # the weighting saw the raw loss: total = 2 · L_depth
    assert out.total.item() == pytest.approx(2.0 * out.loss_tensor[0].item(), rel=1e-6)
    # a 2-way discriminator with random weights: CE close to log 2, and finite
    assert 0.1 < disc_loss.item() < 3.0
    assert all(acc.abs().sum() > 0 for acc in recorder.total[-len(list(disc.parameters())):])

    # Recompute the discriminator loss by hand (the recorder left the weights unchanged).
    preds = net(batch["image"], ["depth"])
    weighted = 2.0 * TASKS["depth"].loss(preds["depth"], batch["depth"])
    g = task_gradient(weighted, net.features["depth"])
    ld = adversarial_loss([g], [1], disc, 0.5)
    assert ld.item() == pytest.approx(disc_loss.item(), rel=1e-5)


def test_idle_tasks_with_adam_also_untouched():
    net = make_net(se="encoder_decoder", adapters=True)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-2, weight_decay=0.1)
    single_tasking_step(net, TASKS, fixed(), make_batch(0), [["semseg"], ["depth"]], opt)
    before = [p.detach().clone() for p in net.task_parameters("semseg")]
    single_tasking_step(net, TASKS, fixed(), make_batch(1), [["depth"]], opt)
    assert all(torch.equal(a, p) for a, p in zip(before, net.task_parameters("semseg")))
