"""The one exception type for mistakes a user can fix (bad flags, bad data files), and the one warning type.

The CLI turns a :class:`BatchlabError` into one line on stderr and exit code 2; anything else is a bug and
keeps its traceback (exit code 1).
"""

from __future__ import annotations

import errno


class BatchlabError(ValueError):
    """A user error: names the culprit, its value, and what is allowed."""


def invalid(field: str, value: object, allowed: str) -> BatchlabError:
    """Build the single error template: ``field: got VALUE; allowed: ALLOWED``."""
    return BatchlabError(f"{field}: got {value!r}; allowed: {allowed}")


class BatchlabWarning(UserWarning):
    """Something a user should know that does not stop the command (e.g. an inferred setting); the CLI prints
    each as one line on stderr."""


ENVIRONMENT_ERRNOS = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded",
                      errno.EROFS: "a read-only file system", errno.EACCES: "permission denied",
                      errno.EPERM: "operation not permitted"}
"""OS errors that say something about where a command writes, not about batchlab: one line, not a traceback."""


def environment_error(e: BaseException) -> BatchlabError | None:
    """A one-line BatchlabError for a full disk or an unwritable path (`ENVIRONMENT_ERRNOS`), naming the file;
    None for any other exception."""
    if not isinstance(e, OSError) or e.errno not in ENVIRONMENT_ERRNOS:
        return None
    where = e.filename if e.filename is not None else "a file"
    hint = "free some space and run the same command again" if e.errno in (errno.ENOSPC, errno.EDQUOT) else \
        "choose a path this user can write"
    return BatchlabError(f"{where}: cannot write ({ENVIRONMENT_ERRNOS[e.errno]}); {hint}")
