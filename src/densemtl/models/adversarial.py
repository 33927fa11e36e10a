"""Adversarial task disentanglement (ASTMT §4, Fig. 4, appendix D) in plain PyTorch.

The gradient each task sends to the shared features, ``g_t = ∂L_t/∂features``, is taken with
``create_graph=True`` (double backprop) so that it is itself a differentiable function of the
network weights. A per-pixel task classifier (:class:`TaskDiscriminator`) is trained to tell from
``g_t`` which task produced it; a gradient-reversal layer between ``g_t`` and the discriminator
hands the network the *negated* (and λ-scaled) gradient, so one backward pass solves the min–max
of Eq. 3: the discriminator descends its cross-entropy, the network ascends it, and the shared
features end up receiving gradients whose distribution no longer reveals the task.

Typical single-tasking pass (one ``backward``, DDP-friendly: see DESIGN "DDP + double backprop")::

    loss_t = w_t * task.loss(pred, target)
    g = task_gradient(loss_t, features)            # features: the tensor the head consumed
    l_d = adversarial_loss(g, [t], discriminator, schedule(progress))
    combine_losses(loss_t, l_d, w_d).backward()
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from densemtl.registry import check_kwargs

#: Eq. 5 weight of the discriminator loss as stated in the paper text (appendix D).
W_D_PAPER = 0.1
#: The same weight as set in the public reference code (``dscr_w``); the paper's value is default.
W_D_REFERENCE = 0.01


class GradientReversal(torch.autograd.Function):
    """Identity in the forward pass; multiplies the incoming gradient by ``-lambd`` backward.

    The backward is written with differentiable tensor ops (not ``once_differentiable``), so the
    layer also works when the graph through it is differentiated again (``create_graph=True``).
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, lambd: float) -> Tensor:
        ctx.lambd = lambd
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor, None]:
        return grad_output.neg() * ctx.lambd, None


def grad_reverse(x: Tensor, lambd: float = 1.0) -> Tensor:
    """Gradient-reversal layer (Ganin & Lempitsky, 2015): ``x`` forward, ``-lambd·grad`` back."""
    if isinstance(lambd, bool) or not isinstance(lambd, (int, float)):
        raise TypeError(f"lambd must be a real number, got {type(lambd).__name__}")
    if not math.isfinite(lambd) or lambd < 0:
        raise ValueError(f"lambd must be a finite number >= 0, got {lambd}")
    return GradientReversal.apply(x, float(lambd))


def _check_progress(progress: float) -> float:
    if isinstance(progress, bool) or not isinstance(progress, (int, float)):
        raise TypeError(f"progress must be a real number in [0, 1], got {type(progress).__name__}")
    if not 0.0 <= progress <= 1.0:  # also rejects NaN
        raise ValueError(f"progress must be in [0, 1] (fraction of training done), got {progress}")
    return float(progress)


def ganin_lambda(progress: float) -> float:
    """Ganin's reversal schedule ``2 / (1 + exp(-10 p)) - 1`` at training progress ``p ∈ [0, 1]``.

    It grows from 0 to ≈1 (0.99991 at p = 1) so the network is not pushed by a discriminator that
    has not learned anything yet. The reference code evaluates it per epoch at
    ``p = (epoch + 1) / epochs``; drive it by any progress measure (e.g. batch index) instead of
    ``global_step``, which counts T optimiser steps per minibatch when single-tasking.
    """
    p = _check_progress(progress)
    return 2.0 / (1.0 + math.exp(-10.0 * p)) - 1.0


ScheduleKind = Literal["constant", "ganin"]
SCHEDULE_KINDS: tuple[str, ...] = ("constant", "ganin")


@dataclass(frozen=True)
class ReversalSchedule:
    """Gradient-reversal strength λ over training: a constant in [0, 1] or Ganin's schedule.

    ``kind="constant"`` needs ``value``; ``kind="ganin"`` takes none (λ = :func:`ganin_lambda`).
    Stateless (a function of progress), so a resumed run gets the same λ from its progress alone.
    """

    kind: ScheduleKind = "constant"
    value: float | None = 1.0

    def __post_init__(self) -> None:
        if self.kind not in SCHEDULE_KINDS:
            raise ValueError(
                f"reversal schedule kind={self.kind!r} is not one of {', '.join(SCHEDULE_KINDS)}"
            )
        if self.kind == "ganin":
            if self.value is not None:
                raise ValueError(
                    f"reversal schedule kind='ganin' takes no value (got value={self.value}); "
                    "λ follows 2/(1+exp(-10p))-1"
                )
            return
        v = self.value
        if v is None or isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ValueError(
                f"reversal schedule kind='constant' needs a value in [0, 1], got {v!r}"
            )
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"reversal schedule value must be in [0, 1], got {v}")

    def __call__(self, progress: float) -> float:
        """λ at training progress ``progress ∈ [0, 1]``."""
        p = _check_progress(progress)
        if self.kind == "ganin":
            return ganin_lambda(p)
        return float(self.value)  # type: ignore[arg-type]  # validated in __post_init__


class TaskDiscriminator(nn.Module):
    """Per-pixel task classifier on gradient maps: k×k conv → ReLU → 1×1 conv to T logits.

    The paper uses two 1×1 convs (appendix D), the reference code a 3×3 first conv on NYUD;
    ``kernel_size`` is zero-padded so the logits keep the input's spatial size. ``hidden``
    defaults to ``in_channels`` as in the reference code.
    """

    def __init__(
        self,
        in_channels: int,
        num_tasks: int,
        hidden: int | None = None,
        kernel_size: int = 1,
    ) -> None:
        super().__init__()
        hidden = in_channels if hidden is None else hidden
        for name, val, low in (
            ("in_channels", in_channels, 1),
            ("num_tasks", num_tasks, 2),
            ("hidden", hidden, 1),
            ("kernel_size", kernel_size, 1),
        ):
            if isinstance(val, bool) or not isinstance(val, int) or val < low:
                raise ValueError(
                    f"TaskDiscriminator {name} must be an integer >= {low}, got {val!r}"
                )
        if kernel_size % 2 == 0:
            raise ValueError(
                f"TaskDiscriminator kernel_size must be odd (output keeps the input size), "
                f"got {kernel_size}"
            )
        self.num_tasks = num_tasks
        self.body = nn.Conv2d(in_channels, hidden, kernel_size, padding=kernel_size // 2)
        self.classifier = nn.Conv2d(hidden, num_tasks, 1)

    def forward(self, x: Tensor) -> Tensor:
        """``N×C×H×W`` gradient map → ``N×T×H×W`` task logits."""
        return self.classifier(F.relu(self.body(x)))


def normalize_gradient(grad: Tensor, eps: float = 1e-12) -> Tensor:
    """Per-pixel L2 normalisation over channels: ``g / (‖g‖₂ + eps)``.

    Appendix D: gradients shrink as training progresses; normalising makes the discriminator see
    directions only. ``eps`` keeps exactly-zero pixels (e.g. ignored labels) at exactly zero
    instead of 0/0, which is how :func:`adversarial_loss` recognises them; it only distorts pixels
    whose gradient norm is itself near ``eps``. The norm is taken in at least float32, because in
    float16 ``eps`` would round to 0.
    """
    if grad.dim() != 4:
        raise ValueError(f"gradient map must be N×C×H×W, got shape {tuple(grad.shape)}")
    if not eps > 0:
        raise ValueError(f"eps must be > 0, got {eps}")
    norm_dtype = torch.promote_types(grad.dtype, torch.float32)
    norm = torch.linalg.vector_norm(grad, dim=1, keepdim=True, dtype=norm_dtype)
    return (grad / (norm + eps)).to(grad.dtype)


def task_gradient(loss: Tensor, features: Tensor, eps: float = 1e-12) -> Tensor:
    """Normalised gradient of a task loss w.r.t. the shared features map, kept on the graph.

    ``torch.autograd.grad(loss, features, create_graph=True, retain_graph=True)``: the returned
    map depends differentiably on the weights (double backprop), and ``loss`` can still be
    backpropagated afterwards. ``features`` must be the very tensor the task head consumed (under
    DDP not a tensor returned through the wrapper). Normalised by :func:`normalize_gradient`.
    """
    if loss.dim() != 0:
        raise ValueError(f"loss must be a scalar, got shape {tuple(loss.shape)}")
    if not features.requires_grad:
        raise ValueError("features does not require grad: pass the map the task head consumed")
    (grad,) = torch.autograd.grad(
        loss, features, create_graph=True, retain_graph=True, allow_unused=True
    )
    if grad is None:
        raise ValueError("loss does not depend on features: pass the map the task head consumed")
    return normalize_gradient(grad, eps)


def _as_maps(
    grads: Sequence[Tensor] | Tensor,
    task_indices: Sequence[int],
    valid: Sequence[Tensor] | Tensor | None,
) -> tuple[Tensor, list[int], Tensor | None]:
    """Concatenate the gradient maps into one batch and return the size of each task's chunk."""
    indices = list(task_indices)
    if not indices:
        raise ValueError("task_indices is empty: give the task index of every gradient map")
    for t in indices:
        if isinstance(t, bool) or not isinstance(t, int) or t < 0:
            raise ValueError(f"task_indices must be integers >= 0, got {indices}")
    if isinstance(grads, Tensor):
        if grads.dim() != 4:
            raise ValueError(f"gradient map must be N×C×H×W, got shape {tuple(grads.shape)}")
        if grads.shape[0] % len(indices):
            raise ValueError(
                f"a stacked gradient batch of {grads.shape[0]} maps cannot be split evenly "
                f"among {len(indices)} task indices {indices}"
            )
        batch = grads
        sizes = [grads.shape[0] // len(indices)] * len(indices)
    else:
        maps = list(grads)
        if len(maps) != len(indices):
            raise ValueError(f"got {len(maps)} gradient maps but {len(indices)} task indices")
        for g in maps:
            if g.dim() != 4 or g.shape[1:] != maps[0].shape[1:]:
                raise ValueError(
                    "gradient maps must be N×C×H×W with the same C, H, W, got shapes "
                    f"{[tuple(m.shape) for m in maps]}"
                )
        batch = torch.cat(maps) if len(maps) > 1 else maps[0]
        sizes = [g.shape[0] for g in maps]
    if valid is not None:
        if not isinstance(valid, Tensor):
            valid = torch.cat(list(valid))
        expected = (batch.shape[0], *batch.shape[2:])
        if valid.dtype != torch.bool or tuple(valid.shape) != expected:
            raise ValueError(
                f"valid must be a bool mask of shape {expected} (the gradient maps' N×H×W), got "
                f"{valid.dtype} {tuple(valid.shape)}"
            )
    return batch, sizes, valid


def adversarial_loss(
    grads: Sequence[Tensor] | Tensor,
    task_indices: Sequence[int],
    discriminator: Callable[[Tensor], Tensor],
    lambd: float,
    valid: Sequence[Tensor] | Tensor | None = None,
) -> Tensor:
    """Discriminator loss L_D on task-gradient maps, behind a gradient-reversal layer of ``lambd``.

    ``grads`` is one ``N×C×H×W`` normalised gradient map per entry of ``task_indices`` (a list),
    or a single tensor holding them stacked along the batch (chunk k belongs to
    ``task_indices[k]``). Per-pixel cross-entropy against the task index, averaged over the valid
    pixels of each task's map, then over the tasks that have any valid pixel — so a stacked call
    equals the mean of one call per task, and a task's weight does not depend on how many of its
    pixels carry labels. A pixel whose gradient is exactly zero is never counted (it carries no
    task information: e.g. its label was ignored); ``valid`` (bool ``N×H×W``, aligned with the
    maps) can exclude more. No valid pixel at all gives 0 (still on the graph), not NaN.

    The discriminator's parameters receive ∂L_D/∂w_D; everything upstream of ``grads`` receives
    ``-lambd`` times its true gradient (Eq. 3), through the double-backprop graph of ``grads``.
    """
    batch, sizes, valid = _as_maps(grads, task_indices, valid)
    nonzero = (batch != 0).any(dim=1)
    valid = nonzero if valid is None else valid & nonzero
    logits = discriminator(grad_reverse(batch, lambd))
    expected = (batch.shape[0], batch.shape[2], batch.shape[3])
    if logits.dim() != 4 or (logits.shape[0], *logits.shape[2:]) != expected:
        raise ValueError(
            f"discriminator must return N×T×H×W logits matching the maps' N×H×W {expected}, "
            f"got {tuple(logits.shape)}"
        )
    if max(task_indices) >= logits.shape[1]:
        raise ValueError(
            f"task index {max(task_indices)} out of range for a discriminator with "
            f"{logits.shape[1]} task logits"
        )
    index = torch.tensor(list(task_indices), device=batch.device)
    target = index.repeat_interleave(torch.tensor(sizes, device=batch.device))
    target = target[:, None, None].expand(expected)
    ce = F.cross_entropy(logits, target, reduction="none")
    ce = torch.where(valid, ce, torch.zeros((), dtype=ce.dtype, device=ce.device))
    sums = torch.stack([c.sum() for c in ce.split(sizes)])
    counts = torch.stack([v.sum() for v in valid.split(sizes)])
    per_task = sums / counts.clamp_min(1)
    return per_task.sum() / (counts > 0).sum().clamp_min(1)


@torch.no_grad()
def discriminator_accuracy(
    grads: Sequence[Tensor] | Tensor,
    task_indices: Sequence[int],
    discriminator: Callable[[Tensor], Tensor],
    valid: Sequence[Tensor] | Tensor | None = None,
) -> Tensor:
    """Fraction of valid pixels (same rule as :func:`adversarial_loss`) whose argmax is the task.

    A diagnostic to log: near 1/T means the task gradients are indistinguishable to this
    discriminator. Returns NaN when no pixel is valid (there is nothing to score).
    """
    batch, sizes, valid = _as_maps(grads, task_indices, valid)
    nonzero = (batch != 0).any(dim=1)
    valid = nonzero if valid is None else valid & nonzero
    pred = discriminator(batch).argmax(dim=1)
    target = torch.tensor(list(task_indices), device=batch.device)
    target = target.repeat_interleave(torch.tensor(sizes, device=batch.device))
    correct = (pred == target[:, None, None]) & valid
    return correct.sum() / valid.sum()


def combine_losses(task_loss: Tensor, disc_loss: Tensor, w_d: float = W_D_PAPER) -> Tensor:
    """Eq. 5: ``(1 - w_d)·task_loss + w_d·disc_loss``.

    ``task_loss`` is the already task-weighted Σ w_t L_t. The paper text uses ``w_d = 0.1``
    (:data:`W_D_PAPER`, the default); the reference code 0.01 (:data:`W_D_REFERENCE`).
    """
    if isinstance(w_d, bool) or not isinstance(w_d, (int, float)) or not 0.0 <= w_d <= 1.0:
        raise ValueError(f"w_d must be a number in [0, 1], got {w_d!r}")
    return (1.0 - w_d) * task_loss + w_d * disc_loss


@dataclass(frozen=True)
class AdversarialOptions:
    """The ``adversarial`` config group, with its defaults (the one place they live).

    ``lambd`` is the YAML key ``lambda`` (a Python keyword); it is the constant schedule's λ and
    ignored by ``lambda_schedule="ganin"``. ``lr_scale`` multiplies the optimiser's learning
    rate for the discriminator.
    """

    enabled: bool = False
    w_d: float = W_D_PAPER
    lambda_schedule: ScheduleKind = "constant"
    lambd: float = 1.0
    kernel_size: int = 1
    hidden: int = 64
    lr_scale: float = 1.0

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | None) -> AdversarialOptions:
        """Options from an ``adversarial`` mapping; unknown keys and wrong types fail."""
        options = {("lambd" if k == "lambda" else k): v for k, v in dict(cfg or {}).items()}
        check_kwargs(cls, options, "adversarial")
        out = cls(**options)
        if not 0.0 <= out.w_d <= 1.0:
            raise ValueError(f"adversarial.w_d must be in [0, 1], got {out.w_d}")
        return out

    def schedule(self) -> ReversalSchedule:
        """The gradient-reversal schedule these options describe."""
        return ReversalSchedule(
            self.lambda_schedule, float(self.lambd) if self.lambda_schedule == "constant" else None
        )
