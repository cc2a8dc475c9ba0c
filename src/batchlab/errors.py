"""The one exception type for mistakes a user can fix (bad flags, bad data files), and the one warning type.

The CLI turns a :class:`BatchlabError` into one line on stderr and exit code 2; anything else is a bug and
keeps its traceback (exit code 1).
"""

from __future__ import annotations


class BatchlabError(ValueError):
    """A user error: names the culprit, its value, and what is allowed."""


def invalid(field: str, value: object, allowed: str) -> BatchlabError:
    """Build the single error template: ``field: got VALUE; allowed: ALLOWED``."""
    return BatchlabError(f"{field}: got {value!r}; allowed: {allowed}")


class BatchlabWarning(UserWarning):
    """Something a user should know that does not stop the command (e.g. an inferred setting); the CLI prints
    each as one line on stderr."""
