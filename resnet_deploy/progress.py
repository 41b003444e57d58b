"""How long work reports itself: one-line messages and rich progress bars on stderr.

Every stage takes a :data:`Progress` callback (``progress("exporting ...")``) whose default is
:func:`quiet`; the CLI passes one that updates its status line. :func:`progress_bar` is the one
rich bar the stages draw for counted work (calibration images, evaluation batches).
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator

from rich.console import Console
from rich.errors import LiveError
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
from rich.progress import Progress as RichProgress

Progress = Callable[[str], None]
"""``progress(message)``: one line about what a stage is doing now."""


def quiet(_: str) -> None:
    """The default :data:`Progress`: says nothing."""


@contextlib.contextmanager
def progress_bar(total: int, description: str, enabled: bool) -> Iterator[Callable[[int], None]]:
    """A rich progress bar on stderr; yields ``advance(n=1)``. A no-op when disabled or nothing is counted."""
    if not enabled or total <= 0:
        yield lambda n=1: None
        return
    bar = RichProgress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                       console=Console(stderr=True), transient=True)
    try:
        bar.start()
    except LiveError:  # rich < 14.1 cannot nest a bar inside the CLI's status spinner
        yield lambda n=1: None
        return
    task = bar.add_task(description, total=total)
    try:
        yield lambda n=1: bar.advance(task, n)
    finally:
        bar.stop()


__all__ = ["Progress", "progress_bar", "quiet"]
