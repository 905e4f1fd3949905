"""The one exception type for mistakes a user can fix.

Anything raised as :class:`SrpkdError` is printed by the command line as a
single ``srpkd: error: ...`` line with a non-zero exit, never as a traceback.
Programming errors stay ordinary exceptions so that they are still loud.
"""


class SrpkdError(Exception):
    """A problem with the user's input: a file, a folder, an option, a checkpoint."""


def first_line(e: BaseException) -> str:
    """The first line of an exception's message (its type name if it has none), for a one-line error."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
