"""What to solve: task specs and the real data splits (their metrics are in promptgym.metrics)."""

from promptgym.tasks.catalog import TASK_NAMES, TASKS, get_task, load_task_plugins, register_task
from promptgym.tasks.data import SEEDS, SPLITS, TaskSplit, data_fingerprint, load_split
from promptgym.tasks.spec import TaskSpec, Template

__all__ = ["TASKS", "TASK_NAMES", "SEEDS", "SPLITS", "TaskSpec", "TaskSplit", "Template", "data_fingerprint",
           "get_task", "load_split", "load_task_plugins", "register_task"]
