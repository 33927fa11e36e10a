"""Task library: one module per task, each found by ``TASK_REGISTRY``'s discovery."""

from densemtl.tasks.base import TASK_REGISTRY, Task, build_task, build_tasks, register_task

__all__ = ["TASK_REGISTRY", "Task", "build_task", "build_tasks", "register_task"]
