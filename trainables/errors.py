"""The one exception type for user mistakes.

A `UserError` carries a one-line message that names the offending value and
the fix. The CLI prints it (no traceback) and exits with `exit_code`.
"""
from __future__ import annotations


class UserError(Exception):
    """A problem the user can fix (bad spec, unknown name, missing path...)."""

    def __init__(self, message: str, *, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class DivergedError(UserError):
    """Training produced a non-finite loss; raised by `hpsearch train` only."""

    def __init__(self, message: str) -> None:
        super().__init__(message, exit_code=3)


class DataWarning(UserWarning):
    """Something about the user's data worth a line (unreadable files skipped); the CLI prints it as
    `hpsearch: warning: ...`, without Python's source line."""
