"""SIGINT / SIGTERM during training: finish the step, save, exit with a message.

Why: clusters send SIGTERM before preempting a job and users press Ctrl-C; an
adversarial-training run (hours of PGD steps) must then leave a resumable
checkpoint rather than lose everything since the last epoch. The handler only
sets a flag; the loop checks it between steps (a step is never cut in half),
saves ``last`` and raises :class:`TrainingInterrupted`, which the CLI prints as
one line with the command that resumes. A second signal while saving is ignored
until the save completes. Validation, which changes no weight, is cut short: in a
single process the flag is also checked before every batch and every PGD step of
it (:func:`stop_check`, raising :class:`StopRequested`), and the loop saves a
checkpoint whose resume redoes that validation.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager

from adrnet.errors import AdrnetError


class TrainingInterrupted(AdrnetError):
    """Training stopped on a signal after saving a resumable checkpoint."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum


class StopFlag:
    """Set by a signal handler; read by the training loop between steps."""

    def __init__(self):
        self.signum: int | None = None

    def __bool__(self) -> bool:
        return self.signum is not None

    def request(self, signum: int, _frame=None) -> None:
        if self.signum is None:
            self.signum = signum


class StopRequested(Exception):
    """Raised inside a long computation that may be cut short (validation) once the stop
    flag is set; the training loop catches it, saves and stops. Not a user error: one that
    escapes the loop is a bug and keeps its traceback."""


def stop_check(flag):
    """A function that raises :class:`StopRequested` once ``flag`` is set (None: never)."""
    def check() -> None:
        if flag:
            raise StopRequested()
    return check


@contextmanager
def stop_on_signals(signals=(signal.SIGINT, signal.SIGTERM)):
    """Yield a :class:`StopFlag` that SIGINT/SIGTERM set; restore the old handlers
    afterwards. Outside the main thread (no signal handling possible) the flag just
    never gets set."""
    flag = StopFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return
    previous = {sig: signal.signal(sig, flag.request) for sig in signals}
    try:
        yield flag
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"
