"""What the training loops hand a strategy: exactly the inputs its ``needs`` declare.

Both loops (``training/joint.py``, ``training/single_tasking.py``) go through these two
functions, so a strategy that needs the last shared layer, the shared representation, extra
loss samples or the post-step losses gets them the same way in either loop.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor, nn

from densemtl.weighting.base import WeightingStrategy


def backward_inputs(strategy: WeightingStrategy, net: nn.Module) -> dict[str, Any]:
    """The keyword arguments of ``strategy.backward`` that ``strategy.needs.wrt`` asks for.

    ``net`` follows the network contract: ``shared_parameters()``, ``last_shared_parameters()``
    and ``shared_representation`` (set by its last forward).
    """
    wrt = strategy.needs.wrt
    if wrt is None:
        return {}
    if wrt == "representation":
        return {"representation": net.shared_representation}
    return {"shared_parameters": getattr(net, wrt)()}


def split_samples(batch: Mapping[str, Any], samples: int) -> list[dict[str, Any]]:
    """``samples`` disjoint chunks of a minibatch (along dim 0): independent gradient samples.

    One sample is the batch itself. The chunks are as equal as ``Tensor.tensor_split`` makes
    them; a batch smaller than ``samples`` is refused.
    """
    if samples == 1:
        return [dict(batch)]
    size = batch["image"].shape[0]
    if size < samples:
        raise ValueError(f"the weighting needs {samples} independent samples per step; a "
                         f"minibatch of {size} cannot be split into {samples} (raise the batch "
                         f"size)")
    chunks: list[dict[str, Any]] = [{} for _ in range(samples)]
    for key, value in batch.items():
        parts = (value.tensor_split(samples) if isinstance(value, Tensor) and value.dim() > 0
                 else [value] * samples)
        for chunk, part in zip(chunks, parts, strict=True):
            chunk[key] = part
    return chunks


def loss_samples(net: nn.Module, tasks: Mapping[str, Any], batch: Mapping[str, Any],
                 task_names: Sequence[str], samples: int) -> list[dict[str, Tensor]]:
    """The task losses of ``samples`` independent chunks of ``batch`` (one forward each).

    The last chunk is the step's own sample (the net's ``shared_representation`` and
    ``features`` belong to it); the others are the strategy's ``extra_losses``.
    """
    out = []
    for chunk in split_samples(batch, samples):
        preds = net(chunk["image"], list(task_names))
        out.append({t: tasks[t].loss(preds[t], chunk[t]) for t in task_names})
    return out
