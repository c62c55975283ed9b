"""One-line messages of exceptions, for records and for the user, and the debug switch
that adds the traceback wherever an exception becomes one line."""

from __future__ import annotations

import os
import sys
import traceback

#: Set (to anything but ``""`` / ``0``) for full tracebacks where the CLI prints one line;
#: the global ``--debug`` option sets it (so worker processes see it too).
DEBUG_ENV = "VAEBENCH_DEBUG"


def debug_enabled() -> bool:
    """``--debug`` given or ``VAEBENCH_DEBUG`` set: errors come with their traceback."""
    return os.environ.get(DEBUG_ENV, "") not in ("", "0")


def debug_traceback(context: str = "") -> None:
    """With :func:`debug_enabled`, write the traceback of the exception being handled to
    stderr, headed by ``context`` (``"run abc123 failed"``); nothing otherwise. Every place
    that turns an exception into one line (an error exit, a failed run or metric, a storage
    failure, an interrupt) calls it, so ``--debug`` shows the stack everywhere."""
    if not debug_enabled() or sys.exc_info()[1] is None:
        return
    head = f"debug: {context}\n" if context else ""
    sys.stderr.write(head + traceback.format_exc())
    sys.stderr.flush()


def one_line(exc: BaseException) -> str:
    """First line of the message; the exception type is kept unless it is an input error."""
    lines = str(exc).strip().splitlines()
    text = lines[0] if lines else ""
    return text if type(exc) is ValueError and text else f"{type(exc).__name__}: {text}"


def storage_reason(exc: BaseException) -> str:
    """One line for a storage failure: the OS's words where it is an OS error."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return one_line(exc)
