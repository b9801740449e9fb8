"""MCP tasks (both protocol eras) over the job engine; knows nothing of providers."""

from typing import Any

from mediamux.tasks.extension import TASKS, TasksExtension

__all__ = ["TASKS", "TaskBoard", "TaskState", "TasksExtension"]


def __getattr__(name: str) -> Any:
    # The board (and the job engine under it) loads on first use: the extension is made before a stdio
    # server's first answer, a task is first touched after it.
    if name in ("TaskBoard", "TaskState"):
        from mediamux.tasks import board

        return getattr(board, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
