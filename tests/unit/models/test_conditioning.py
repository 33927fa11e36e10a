"""Task-conditioned modules: routing, per-task copies, and stacked == per-task equivalence."""

import pytest
import torch
import torch.nn.functional as F
from timm.layers import BatchNormAct2d, SEModule
from timm.models.resnet import Bottleneck
from torch import nn

from densemtl.models import (
    BlockSlots,
    TaskAdapter,
    TaskBatchNorm2d,
    TaskRouter,
    TaskSqueezeExcite,
    condition_blocks,
)
from densemtl.models.conditioning import channels_to_stack, stack_to_channels

TASKS = ("a", "b", "c")


pytestmark = pytest.mark.usefixtures("one_thread")


def _randomise(module: nn.Module, seed: int) -> None:
    """Give every parameter and BN buffer distinct random values (so task copies differ)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in list(module.named_parameters()) + list(module.named_buffers()):
            if "running_var" in name:
                t.copy_(torch.rand(t.shape, generator=gen, dtype=t.dtype) + 0.5)
            elif t.is_floating_point():
                t.copy_(torch.randn(t.shape, generator=gen, dtype=t.dtype))


def test_router_scopes_active_tasks_and_resets_on_error():
    router = TaskRouter(TASKS)
    with pytest.raises(RuntimeError, match="no active task"):
        _ = router.active
    with router.route(["a"]):
        assert router.active == ("a",)
        with router.route(["b", "c"]):
            assert router.active == ("b", "c")
        assert router.active == ("a",)
    with pytest.raises(KeyError), router.route(["c"]):
        raise KeyError("boom")
    with pytest.raises(RuntimeError):
        _ = router.active
    with pytest.raises(ValueError, match=r"\['a', 'b', 'c'\]"):
        with router.route(["z"]):
            pass


def test_stack_channel_layout_round_trip_and_order():
    x = torch.arange(3 * 2 * 4, dtype=torch.float64).reshape(6, 4, 1, 1)  # T=3, B=2, C=4
    y = stack_to_channels(x, 3)
    assert y.shape == (2, 12, 1, 1)
    # sample 1, task 2's channel 0 is row 2·2+1 = 5 of the stack, channel 0
    assert y[1, 8, 0, 0] == x[5, 0, 0, 0]
    assert torch.equal(channels_to_stack(y, 3), x)


@pytest.mark.parametrize("source_cls", [nn.BatchNorm2d, BatchNormAct2d])
@pytest.mark.parametrize("train", [True, False])
def test_task_batchnorm_stacked_equals_per_task(source_cls, train):
    router = TaskRouter(TASKS)
    source = source_cls(4).double()
    bn = TaskBatchNorm2d(source, TASKS, router)
    _randomise(bn, 0)
    reference = {t: source_cls(4).double() for t in TASKS}
    for t in TASKS:
        reference[t].load_state_dict(bn.per_task[t].state_dict())
        reference[t].train(train)
    bn.train(train)
    x = torch.randn(3 * 5, 4, 3, 3, dtype=torch.float64) * 3 + 1
    active = ("c", "a", "b")  # any order: chunk k belongs to active[k]
    with router.route(active):
        y = bn(x)
    expected = torch.cat([reference[t](chunk) for t, chunk in zip(active, x.chunk(3))])
    torch.testing.assert_close(y, expected, atol=1e-12, rtol=1e-12)
    for t in TASKS:
        for name, buf in reference[t].named_buffers():
            assert torch.allclose(bn.per_task[t].get_buffer(name), buf, atol=1e-14), name
    if train:  # batch statistics: every channel of every chunk is standardised (then affine)
        first = bn.per_task["c"]
        z = (y[:5] - first.bias.view(1, -1, 1, 1)) / first.weight.view(1, -1, 1, 1)
        if source_cls is nn.BatchNorm2d:
            assert z.mean((0, 2, 3)).abs().max() < 1e-12
            assert ((z.var((0, 2, 3), unbiased=False) - 1).abs() < 1e-3).all()  # eps=1e-5
        assert int(first.num_batches_tracked) == 1


def test_task_squeeze_excite_stacked_matches_formula():
    router = TaskRouter(TASKS)
    se = TaskSqueezeExcite(SEModule(16, rd_ratio=1 / 4, rd_divisor=1).double(), TASKS, router)
    _randomise(se, 1)
    x = torch.randn(2 * 2, 16, 5, 5, dtype=torch.float64)
    active = ("b", "a")
    with router.route(active):
        y = se(x)
    for t, chunk, out in zip(active, x.chunk(2), y.chunk(2)):
        m = se.per_task[t]
        s = chunk.mean((2, 3))
        h = torch.relu(s @ m.fc1.weight.flatten(1).T + m.fc1.bias)
        g = torch.sigmoid(h @ m.fc2.weight.flatten(1).T + m.fc2.bias)
        torch.testing.assert_close(out, chunk * g[:, :, None, None], atol=1e-13, rtol=1e-13)
        with router.route([t]):  # the single-task path gives the same numbers
            torch.testing.assert_close(se(chunk), out, atol=1e-13, rtol=1e-13)


@pytest.mark.parametrize("groups,stride", [(1, 1), (1, 2), (8, 2)])
def test_task_adapter_zero_init_and_stacked_equivalence(groups, stride):
    router = TaskRouter(TASKS)
    conv = nn.Conv2d(8, 8, 3, stride=stride, padding=2, dilation=2, groups=groups).double()
    adapted = TaskAdapter(conv, TASKS, router).double()
    x = torch.randn(3 * 2, 8, 9, 9, dtype=torch.float64)
    with router.route(TASKS):
        assert torch.equal(adapted(x), conv(x))  # zero-initialised: exactly the plain conv
    for t in TASKS:
        assert adapted.per_task[t].weight.shape == (8, 8 // groups, 1, 1)
    _randomise(adapted.per_task, 2)
    with router.route(TASKS):
        y = adapted(x)
    for t, chunk, out in zip(TASKS, x.chunk(3), y.chunk(3)):
        w = adapted.per_task[t].weight
        expected = conv(chunk) + F.conv2d(chunk, w, stride=stride, groups=groups)
        torch.testing.assert_close(out, expected, atol=1e-12, rtol=1e-12)


def test_per_task_copies_are_separate_parameters_starting_equal():
    router = TaskRouter(TASKS)
    source = SEModule(16, rd_ratio=1 / 4)
    se = TaskSqueezeExcite(source, TASKS, router)
    ids = {id(p) for t in TASKS for p in se.per_task[t].parameters()}
    assert len(ids) == 3 * len(list(source.parameters()))  # no tensor shared between tasks
    for t in TASKS:
        for p, q in zip(se.per_task[t].parameters(), source.parameters()):
            assert torch.equal(p, q)
    x = torch.randn(4, 16, 3, 3)
    with router.route(["b"]):
        se(x).sum().backward()
    assert all(p.grad is not None for p in se.per_task["b"].parameters())
    assert all(p.grad is None for t in ("a", "c") for p in se.per_task[t].parameters())


def test_stacked_batch_must_divide_by_active_tasks():
    router = TaskRouter(TASKS)
    bn = TaskBatchNorm2d(nn.BatchNorm2d(2), TASKS, router)
    with router.route(TASKS), pytest.raises(ValueError, match="multiple of the 3"):
        bn(torch.randn(4, 2, 2, 2))


def test_condition_blocks_converts_a_timm_bottleneck_in_place():
    router = TaskRouter(TASKS)
    down = nn.Sequential(nn.Conv2d(16, 32, 1, bias=False), nn.BatchNorm2d(32))
    block = Bottleneck(16, 8, downsample=down, attn_layer="se").eval()
    x = torch.randn(2, 16, 6, 6)
    before = block(x)
    slots = BlockSlots(se="se", norms=("bn1", "bn2", "bn3", "downsample.1"), conv="conv2")
    count = condition_blocks(
        [(block, slots)], TASKS, router, squeeze_excite=True, batch_norm=True, adapters=True
    )
    assert count == 6
    assert isinstance(block.se, TaskSqueezeExcite)
    assert isinstance(block.downsample[1], TaskBatchNorm2d)
    assert isinstance(block.conv2, TaskAdapter)
    with router.route(["b"]):  # every copy starts from the original: same function as before
        assert torch.equal(block(x), before)
