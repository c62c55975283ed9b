"""One-line messages of exceptions, for records and for the user."""

from __future__ import annotations


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
