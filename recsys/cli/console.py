"""The ``recsys`` program (and ``python -m recsys.cli``): ``recsys.cli.main`` run so that an interrupt always
ends it with a non-zero status and one line, never a traceback and never exit 0.

* SIGINT (Ctrl-C) and SIGTERM raise ``KeyboardInterrupt`` from the first instruction on, the imports of the
  command modules included (seconds of numpy, torch and friends, during which Ctrl-C used to print a
  traceback), and every one is recorded: an interrupt that a library swallowed still ends the program with
  130 (143 for SIGTERM).
* Once the command is done, output is flushed, the ``atexit`` clean-up runs with interrupts recorded instead of
  raised, and the process ends at once (``os._exit``) with the status. An interrupt that arrived during the
  interpreter's own shutdown used to be lost (its handler never ran: exit 0, about one Ctrl-C in six on
  ``similar-users``, whose shutdown takes a second or two); now it is seen, and the status is 130.

This module and its package's ``__init__`` import nothing heavy: the command modules are imported by ``main``,
after the handlers are in place.
"""

from __future__ import annotations

import atexit
import os
import signal
import sys
from typing import NoReturn

#: the interrupting signals, in the order they arrived
_received: list[int] = []
_HANDLED = (signal.SIGINT, signal.SIGTERM)


def _interrupt(signum: int, frame) -> None:
    _received.append(signum)
    raise KeyboardInterrupt


def _record(signum: int, frame) -> None:
    _received.append(signum)


def interrupted() -> int | None:
    """The last interrupting signal received by this program (None when none was)."""
    return _received[-1] if _received else None


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe or stream: nothing more can be shown
            pass


def _notice_tripped() -> None:
    """A Python-level call: CPython runs the handlers of signals already caught before it executes it."""


def run() -> NoReturn:
    """Run the command named on the command line and exit with its status (see the module docstring)."""
    for signum in _HANDLED:
        signal.signal(signum, _interrupt)
    try:
        from recsys.cli import main

        status = main()
    except KeyboardInterrupt:  # before main's own handler was reached (imports, parsing) or after it
        print("interrupted", file=sys.stderr)
        status = 130
    finish(status)


def finish(status: int) -> NoReturn:
    """End the program now with ``status``, or 128 + the signal number when an interrupt was received at any
    point (one line saying so when the command had not said it already)."""
    for signum in _HANDLED:
        signal.signal(signum, _record)
    _flush()
    try:
        atexit._run_exitfuncs()  # the libraries' clean-up; an interrupt meanwhile is recorded
    except BaseException:  # noqa: BLE001 - nothing may stop the exit now
        pass
    signal.pthread_sigmask(signal.SIG_BLOCK, set(_HANDLED))
    _notice_tripped()
    pending = [s for s in _HANDLED if s in signal.sigpending()]
    signum = interrupted() or (pending[-1] if pending else None)
    if signum is not None:
        if status != 130:
            print("interrupted", file=sys.stderr)
        status = 128 + signum
    _flush()
    os._exit(status)
