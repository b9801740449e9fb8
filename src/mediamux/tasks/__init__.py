"""MCP tasks (both protocol eras) over the job engine; knows nothing of providers."""

from mediamux.tasks.board import TaskBoard, TaskState
from mediamux.tasks.extension import TASKS, TasksExtension

__all__ = ["TASKS", "TaskBoard", "TaskState", "TasksExtension"]
