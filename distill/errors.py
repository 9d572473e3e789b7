"""The one exception type users see: a message naming the problem and the fix, never a traceback."""
from __future__ import annotations

import errno


class UserError(Exception):
    """Bad input or a missing asset. The CLI prints `error: <message>` and exits with status 2."""


def file_system_error(exc: OSError) -> UserError:
    """A failed read or write (read-only directory, full disk, missing permission) as one line naming the fix.
    Stages write through temporary files renamed into place, so what was there before is still intact."""
    where = exc.filename or "a file"
    if exc.errno == errno.ENOSPC:
        fix = "free some space, or point --artifacts at a disk that has room"
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        fix = "make it writable, or point --artifacts / --reports at a directory you can write"
    else:
        fix = "check the path and its permissions"
    return UserError(f"cannot write or read {where} ({exc.strerror or exc}); {fix}; finished stages are intact")
