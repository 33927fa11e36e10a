"""Per-task prediction heads: a 1×1 conv per task on that task's decoder features."""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor, nn

from .conditioning import PerTaskModule

__all__ = ["TaskHeads"]


class TaskHeads(PerTaskModule):
    """One 1×1 conv (with bias) per task, mapping its features to its output channels.

    ``in_channels`` is one width for all tasks (DeepLab decoder) or a width per task (UberNet
    decoder, whose features are task-specific).
    """

    def __init__(self, in_channels: int | Mapping[str, int], out_channels: Mapping[str, int]):
        super().__init__()
        widths = (
            dict(in_channels)
            if isinstance(in_channels, Mapping)
            else dict.fromkeys(out_channels, in_channels)
        )
        self.per_task = nn.ModuleDict(
            {t: nn.Conv2d(widths[t], c, kernel_size=1, bias=True) for t, c in out_channels.items()}
        )

    def forward(self, features: Tensor, task: str) -> Tensor:
        """Logits / regression output of ``task`` at the features' resolution."""
        return self.per_task[task](features)
