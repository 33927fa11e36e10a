"""Task library: one module per task; importing this package fills ``TASK_REGISTRY``."""

from densemtl.tasks import (  # noqa: F401  (imported for their @register_task side effect)
    albedo,
    depth,
    edge,
    human_parts,
    lsb_depth,
    lsb_extras,
    lsb_normals,
    lsb_semseg,
    normals,
    sal,
    semseg,
)
from densemtl.tasks.base import TASK_REGISTRY, Task, build_task, register_task

__all__ = ["TASK_REGISTRY", "Task", "build_task", "register_task"]
