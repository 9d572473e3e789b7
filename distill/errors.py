"""The one exception type users see: a message naming the problem and the fix, never a traceback."""


class UserError(Exception):
    """Bad input or a missing asset. The CLI prints `error: <message>` and exits with status 2."""
