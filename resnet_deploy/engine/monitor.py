"""Build progress and cancellation: TensorRT's ``IProgressMonitor`` and Ctrl-C during a build."""

from __future__ import annotations

import contextlib
import logging
import signal
import threading

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


@contextlib.contextmanager
def sigint_cancels(cancel: threading.Event):
    """While building, Ctrl-C sets ``cancel`` (the progress monitor then stops the builder)
    instead of raising inside a TensorRT callback, where the bindings would swallow it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)
    if previous is not signal.default_int_handler:  # someone else owns SIGINT (or it is ignored)
        yield
        return

    def handler(signum, frame):
        cancel.set()

    signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


