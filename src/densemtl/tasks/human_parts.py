"""Human part segmentation: background + 6 parts, CE ignoring 255 (PASCAL-Context, SPEC §1)."""

from __future__ import annotations

from densemtl.tasks.base import register_task
from densemtl.tasks.semseg import SemSeg


@register_task
class HumanParts(SemSeg):
    """7-class part segmentation, weight 2 (ASTMT appendix D).

    Images without persons are all-ignore, so they add nothing to the loss (a masked mean over
    the batch; a batch of only such images gives 0 on the graph, not NaN) nor to the confusion
    matrix: the mIoU is over images that contain persons.
    """

    name = "human_parts"
    default_weight = 2.0
    NUM_CLASSES = 7

    def __init__(self, absent: str = "skip", weight: float | None = None):
        super().__init__(num_classes=self.NUM_CLASSES, absent=absent, weight=weight)
