"""Stopping on SIGINT (Ctrl-C) and SIGTERM (what Slurm, systemd and ``kill`` send).

:func:`install` makes either signal raise :class:`Interrupted` in the main thread: at
once, or, inside a :func:`deferred` block (a training loop, a record being written), when
the block reaches a clean point. A training loop calls :func:`check` at the end of each
step, after writing its periodic checkpoint (``loop.checkpoint_due`` asks for one at the
step a signal arrived, where periodic checkpoints are on), so a stopped run picks up
exactly where it stopped. The harness catches :class:`Interrupted`, ends its workers and
exits ``128 + signal`` (130 for SIGINT, 143 for SIGTERM).
"""

from __future__ import annotations

import contextlib
import signal
from typing import Any, Iterator

#: The signals that stop a grid.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)

_received: int | None = None  # the first stop signal that arrived, or None
_count = 0  # stop signals that arrived (a second one asks to stop harder)
_deferring = 0  # depth of deferred() blocks


class Interrupted(KeyboardInterrupt):
    """A stop signal (``signum``) arrived. A ``KeyboardInterrupt``, so the code that records
    a failed run and goes on (``except Exception``) never swallows it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)

    @property
    def name(self) -> str:
        """``SIGINT`` or ``SIGTERM``."""
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        """The shell's code for a process ended by the signal: 130 (SIGINT), 143 (SIGTERM)."""
        return 128 + self.signum


def _handle(signum: int, frame: Any) -> None:
    global _received, _count
    _count += 1
    if _received is None:
        _received = signum
    if _deferring == 0:
        raise Interrupted(_received)


def install() -> None:
    """Route SIGINT and SIGTERM of this process to :class:`Interrupted` (call from the main
    thread). Idempotent."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, _handle)


@contextlib.contextmanager
def installed() -> Iterator[None]:
    """:func:`install` for the block; after it the previous handlers are back and an arrived
    signal forgotten (a command run in-process, e.g. by a test, leaves its caller as it was)."""
    previous = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    install()
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        reset()


def received() -> int | None:
    """The stop signal that arrived (its number), or ``None``."""
    return _received


def count() -> int:
    """How many stop signals arrived so far."""
    return _count


def check() -> None:
    """Raise :class:`Interrupted` if a stop signal arrived."""
    if _received is not None:
        raise Interrupted(_received)


@contextlib.contextmanager
def deferred(raise_on_exit: bool = True) -> Iterator[None]:
    """A stop signal arriving inside the block only marks the stop; the block goes on (a
    training loop then stops at its step's end through :func:`check`), and leaving the
    outermost block normally raises :class:`Interrupted` (unless ``raise_on_exit`` is
    false: cleaning up after a stop, where a second signal only counts). Nestable."""
    global _deferring
    _deferring += 1
    try:
        yield
    finally:
        _deferring -= 1
    if _deferring == 0 and raise_on_exit:
        check()


def reset() -> None:
    """Forget an arrived signal."""
    global _received, _count
    _received, _count = None, 0
