"""The node's memory helpers: giving memory back after the engine is released (cleanup,
shutdown) and reading the resident set. They live in swiftseg_ros/memory.py, below the
engine, which trims after evicting a plan as well."""

from swiftseg_ros.memory import resident_mb, return_freed_memory

__all__ = ["resident_mb", "return_freed_memory"]
