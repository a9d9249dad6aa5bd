"""Task suites: one module each, registering one TaskSuite in SUITES.

A new suite is a module here and its name in the import line below (docs/extending.md).
"""

from vegtts.tasks.suites import builtin, builtin_gpu, folder, kernelbench  # noqa: F401  (each registers its suite)
from vegtts.tasks.suites.base import SUITES, ProblemFile, TaskSuite

__all__ = ["SUITES", "ProblemFile", "TaskSuite"]
