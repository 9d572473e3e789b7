"""The one exception type users see: a message naming the problem and the fix, never a traceback."""
from __future__ import annotations

import difflib
import errno
import functools
import sys


class UserError(Exception):
    """Bad input or a missing asset. The CLI prints `error: <message>` and exits with status 2."""


def did_you_mean(word, choices) -> str:
    """` (did you mean 'hidden'?)` for the choice closest to a mistyped `word`, or ""."""
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


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


def one_line_errors(main):
    """A command's `main(argv) -> exit status`, with bad input and a failing disk ending as one `error: …` line
    (status 2) and Ctrl-C as a line saying what is kept (status 130): never a traceback."""
    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except UserError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except OSError as exc:
            print(f"error: {file_system_error(exc)}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("\ninterrupted: finished stages are kept; run the same command again to resume", file=sys.stderr)
            return 130
    return wrapper
