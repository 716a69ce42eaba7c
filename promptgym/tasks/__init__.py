"""What to solve: task specs, the real data splits, and metrics."""

from promptgym.tasks.catalog import TASK_NAMES, TASKS, get_task
from promptgym.tasks.data import SEEDS, SPLITS, TaskSplit, data_fingerprint, load_split
from promptgym.tasks.metrics import compute_metric
from promptgym.tasks.spec import TaskSpec, Template

__all__ = ["TASKS", "TASK_NAMES", "SEEDS", "SPLITS", "TaskSpec", "TaskSplit", "Template", "compute_metric",
           "data_fingerprint", "get_task", "load_split"]
