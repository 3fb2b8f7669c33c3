"""Errors a user can act on.

Every expected failure is a :class:`CrossnixError`; the task layer prints its message and hint and exits with
its code, so no traceback reaches the user for something they can fix.
"""

from __future__ import annotations


class CrossnixError(Exception):
    """A failure with a message for the user and, where known, the fix."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def render(self) -> str:
        if self.hint:
            return f"{self.message}\nhint: {self.hint}"
        return self.message


class ConfigError(CrossnixError):
    """boards.toml is unreadable or invalid; ``problems`` are ``file:line: key: message`` lines."""

    exit_code = 2

    def __init__(self, problems: list[str], *, hint: str | None = None) -> None:
        count = len(problems)
        header = f"{count} problem{'s' if count != 1 else ''} in the inventory:"
        super().__init__("\n".join([header, *(f"  {p}" for p in problems)]), hint=hint)
        self.problems = problems


class SelectionError(CrossnixError):
    """A ``--on`` selector matched nothing or named something unknown."""

    exit_code = 2
