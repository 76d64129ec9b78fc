"""The one exception type for problems a user can fix (bad file, bad flag)."""

from __future__ import annotations


class BiounetError(Exception):
    """A user-facing error: the message names the file or flag and what is wrong with it."""
