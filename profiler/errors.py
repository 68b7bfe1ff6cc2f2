"""The one exception type meant for users."""

from __future__ import annotations


class ProfilerError(Exception):
    """A problem with the user's input or environment, shown as one line."""
