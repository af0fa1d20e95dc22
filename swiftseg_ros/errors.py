"""Exceptions whose message is written for the person who must fix the problem.

CLI tools print a `SwiftsegError` as one line and exit non-zero; the node logs it and
fails the transition. Subclasses also derive from the builtin type a caller would
expect (ValueError, FileNotFoundError) so generic handlers keep working.
"""


class SwiftsegError(Exception):
    """A user-facing error: the message says what was wrong and what is allowed."""


class ConfigError(SwiftsegError, ValueError):
    """A parameter, flag or configuration value that is not allowed."""


class CheckpointError(SwiftsegError, ValueError):
    """A weights file that cannot be used: missing, corrupt, or not matching."""


class DatasetError(SwiftsegError, ValueError):
    """A dataset folder or file that cannot be read as labelled data."""
