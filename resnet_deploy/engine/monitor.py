"""Build progress and cancellation: TensorRT's ``IProgressMonitor`` and Ctrl-C during a build."""

from __future__ import annotations

import contextlib
import logging
import signal
import threading

from ..errors import Terminated
from .options import ProgressCallback

log = logging.getLogger(__name__)


def make_progress_monitor(trt, callback: ProgressCallback | None, cancel: threading.Event | None = None):
    """An ``IProgressMonitor`` forwarding to ``callback`` and cancelling the build once ``cancel`` is set.

    TensorRT's Python trampoline swallows exceptions raised in these methods (it prints them and
    cancels), so nothing here may raise: a failing callback is logged and ignored.
    """
    base = getattr(trt, "IProgressMonitor", None)
    if base is None:
        return None

    class _Monitor(base):
        def __init__(self):
            base.__init__(self)
            self.totals: dict[str, int] = {}
            self.cancelled = False

        def _call(self, phase, step, total):
            if callback is None:
                return None
            try:
                return callback(phase, step, total)
            except Exception:  # a broken callback must not kill the build
                log.debug("progress callback failed", exc_info=True)
                return None

        def phase_start(self, phase_name, parent_phase, num_steps):
            self.totals[phase_name] = int(num_steps)
            self._call(phase_name, 0, int(num_steps))

        def step_complete(self, phase_name, step):
            keep_going = self._call(phase_name, int(step) + 1, self.totals.get(phase_name, 0))
            if keep_going is False or (cancel is not None and cancel.is_set()):
                self.cancelled = True
                return False
            return True

        def phase_finish(self, phase_name):
            self.totals.pop(phase_name, None)

    return _Monitor()


class Cancel(threading.Event):
    """Set by Ctrl-C (or SIGTERM) during a build; remembers which, so the caller re-raises the right one."""

    signum: int | None = None


@contextlib.contextmanager
def sigint_cancels(cancel: Cancel):
    """While building, Ctrl-C (and SIGTERM, where the CLI turns it into an interruption) sets ``cancel``
    (the progress monitor then stops the builder) instead of raising inside a TensorRT callback,
    where the bindings would swallow it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    taken = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        previous = signal.getsignal(signum)
        # only what would interrupt anyway: Python's Ctrl-C handler, or the CLI's SIGTERM handler
        if previous is signal.default_int_handler or getattr(previous, "cancels_builds", False):
            taken[signum] = previous

    def handler(signum, frame):
        cancel.signum = signum
        cancel.set()

    for signum in taken:
        signal.signal(signum, handler)
    try:
        yield
    finally:
        for signum, previous in taken.items():
            signal.signal(signum, previous)


def raise_if_cancelled(cancel: Cancel) -> None:
    """After the build: the interruption the signal meant (nothing was written)."""
    if cancel.is_set():
        if cancel.signum == signal.SIGTERM:
            raise Terminated()
        raise KeyboardInterrupt
