"""The one exception type for mistakes a user can fix, and the helpers that keep its message to one clean line.

Anything raised as :class:`SrpkdError` is printed by the command line as a
single ``srpkd: error: ...`` line with a non-zero exit, never as a traceback.
Programming errors stay ordinary exceptions so that they are still loud.
"""
from __future__ import annotations

import errno
import re
import reprlib

_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[@-Z\\-_]")
# how libraries that do their own I/O (safetensors' Rust core, C++ writers) spell an errno in their messages
_ERRNO_IN_TEXT = re.compile(r"(?:os error|errno|error code)\s*:?\s*(\d+)", re.IGNORECASE)
_SHORT = reprlib.Repr()
_SHORT.maxstring = _SHORT.maxother = 60
_SHORT.maxlist = _SHORT.maxdict = _SHORT.maxtuple = _SHORT.maxset = 4
_SHORT.maxlevel = 2


class SrpkdError(Exception):
    """A problem with the user's input: a file, a folder, an option, a checkpoint."""


def first_line(e: BaseException) -> str:
    """The first line of an exception's message (its type name if it has none), for a one-line error."""
    text = strip_ansi(str(e)).strip()
    return text.splitlines()[0] if text else type(e).__name__


def strip_ansi(text: str) -> str:
    """``text`` without terminal colour and cursor codes (libraries colour their messages)."""
    return _ANSI.sub("", text)


def short_repr(value: object) -> str:
    """A bounded ``repr`` for error messages: a huge or deeply nested value (a YAML alias bomb) prints in O(1)."""
    return _SHORT.repr(value)


def clip(text: str, limit: int = 300) -> str:
    """``text`` cut to ``limit`` characters (with ``...``), for a list of names in a one-line error."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def os_error_code(e: BaseException) -> int | None:
    """The errno behind ``e``: an ``OSError`` (also as the cause or context), or one a library wrote into its text.

    safetensors raises ``SafetensorError("... I/O error: No space left on device (os error 28)")`` where Python
    code would raise ``OSError(ENOSPC)``; this finds the code in either form.
    """
    seen = 0
    while e is not None and seen < 8:
        if isinstance(e, OSError) and e.errno:
            return e.errno
        m = _ERRNO_IN_TEXT.search(str(e))
        if m and int(m.group(1)) in errno.errorcode:
            return int(m.group(1))
        e, seen = e.__cause__ or e.__context__, seen + 1
    return None


def is_out_of_memory(e: BaseException) -> bool:
    """Whether ``e`` is an allocation failure: Python's ``MemoryError``, or PyTorch's CPU or CUDA allocator
    (``torch.OutOfMemoryError`` is a ``RuntimeError`` saying "out of memory")."""
    if isinstance(e, MemoryError):
        return True
    text = str(e)
    return isinstance(e, RuntimeError) and ("can't allocate memory" in text or "out of memory" in text.lower())
