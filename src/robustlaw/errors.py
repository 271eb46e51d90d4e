"""User-facing errors: each is one line that names the problem (and the field, if any)."""

from __future__ import annotations


class RobustlawError(Exception):
    """An error caused by the user's input, reported as one line, never as a traceback."""


class SpecError(RobustlawError):
    """A malformed or impossible value in a spec; ``field`` names where it is."""

    def __init__(self, field: str, message: str):
        self.field, self.message = field, message
        super().__init__(f"{field}: {message}")


def require(condition: bool, field: str, message: str) -> None:
    """Raise :class:`SpecError` for ``field`` unless ``condition`` holds."""
    if not condition:
        raise SpecError(field, message)
