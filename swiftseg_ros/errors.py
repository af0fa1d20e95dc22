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


class UnsafeFileError(CheckpointError):
    """A weights file refused because loading it would build Python objects (run code).

    `blocked` is the first object torch's safe loader refused, e.g.
    `models.fast_scnn.FastSCNN` for a whole model saved with `torch.save(model)`.
    """

    def __init__(self, message: str, blocked: str | None = None):
        super().__init__(message)
        self.blocked = blocked


class DatasetError(SwiftsegError, ValueError):
    """A dataset folder or file that cannot be read as labelled data."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (what `timeout`, systemd and CI send), raised where Ctrl-C raises
    KeyboardInterrupt, so that every tool stops alike for both (exit 143 instead of 130)."""
