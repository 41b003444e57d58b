"""One exception type for every bad input a user can cause.

The CLI turns a :class:`UserError` into one line on stderr and a non-zero exit; anything
else is a bug and keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input or environment, reported as one clear line."""

    exit_code = 2


class ParityError(UserError):
    """A comparison ran and failed its thresholds (exit code 1, like a failed test)."""

    exit_code = 1


class BackendUnavailable(UserError):
    """A backend that is not installed or cannot run on this machine."""

    exit_code = 3

    def __init__(self, backend: str, reason: str):
        super().__init__(f"{backend} is unavailable: {reason} (run `resnet-deploy doctor` for details)")
        self.backend = backend
        self.reason = reason


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C (everything unwinds and cleans up), reported with exit code 143."""
