"""The one exception type meant for users."""

from __future__ import annotations


class ProfilerError(Exception):
    """A problem with the user's input or environment, shown as one line."""


def first_line(error: BaseException, limit: int | None = None) -> str:
    """The error's first message line (cut at `limit` characters), or its type's name."""
    lines = str(error).strip().splitlines()
    return lines[0][:limit] if lines else type(error).__name__
