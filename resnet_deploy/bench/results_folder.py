"""Where a benchmark's results go, and never over earlier ones by accident.

A run writes ``<out>/<run-id>/`` (results.json and results.csv after every row, so a killed run
keeps what it measured). A second run with the same id would replace the first one's results: that
needs ``force``, and even then the earlier results stay until the new ones are complete. A
replacing run writes into a folder of its own beside them (``.<run-id>.<pid>.<token>.tmp``, leased
like every temporary, :class:`resnet_deploy.artifacts.Lease`) and swaps it in whole at the end;
stopped before that (Ctrl-C, SIGTERM, an error), the earlier results stay and what was measured goes
to ``<run-id>.partial/``. ``bench-merge`` does the same for its ``--out``, and refuses an ``--out``
that is one of the runs it merges.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Iterable

from ..artifacts import Lease, ensure_writable_dir, swap_folder, sweep_stale_temporaries, write_error
from ..errors import UserError

RESULT_FILES = re.compile(r"^(results\.json|results\.csv|report\.md|loadgen|[A-Za-z0-9_.+-]+\.png)\Z")  # loadgen/: LoadGen's logs
"""The files a results folder holds (:class:`~.report.ResultWriter`'s): a folder with others is not replaced."""


def holds_results(folder: Path) -> bool:
    """Whether ``folder`` holds a run's results (results.json, results.csv or report.md)."""
    return folder.is_dir() and any((folder / name).is_file() for name in ("results.json", "results.csv", "report.md"))


def check_not_a_source(out: Path, sources: Iterable[str | os.PathLike[str]]) -> None:
    """Refuse an ``out`` that is the folder of one of ``sources`` (result folders or their results.json)."""
    target = out.expanduser().resolve()
    for source in sources:
        p = Path(source).expanduser()
        folder = p if p.is_dir() else p.parent
        if folder.resolve() == target:
            raise UserError(f"--out {out} is one of the runs being merged ({source}): merging into it would replace "
                            "that run's results; choose another --out")


class ResultsFolder:
    """The folder results are written into: ``final`` itself when it holds no results yet, else (with
    ``force``) a leased folder beside it that :meth:`close` puts in place whole."""

    def __init__(self, final: str | os.PathLike[str], *, force: bool, what: str, fix: str):
        self.final, self.lease = Path(final), None
        self.dir = self.final
        if not holds_results(self.final):
            return
        if not force:
            raise UserError(f"{self.final} already holds {what}: {fix}")
        foreign = sorted(p.name for p in self.final.iterdir() if not RESULT_FILES.match(p.name))
        if foreign:
            raise UserError(f"{self.final} also holds files bench did not write ({', '.join(foreign[:3])}): not "
                            "replaced; choose another --out")
        ensure_writable_dir(self.final.parent)
        sweep_stale_temporaries(self.final.parent)
        try:
            self.lease = Lease(self.final)
            self.dir = self.lease.path("tmp")
            self.dir.mkdir()
        except OSError as e:
            raise write_error(self.final, e) from None

    @property
    def replacing(self) -> bool:
        return self.lease is not None

    def close(self, complete: bool) -> Path:
        """Where the results are now: ``final`` (new, or replacing once ``complete``), else ``<final>.partial``
        with the earlier results left as they were."""
        if self.lease is None:
            return self.final
        dest = self.final if complete else self.final.with_name(self.final.name + ".partial")
        try:
            swap_folder(self.dir, dest, self.lease.path("work"))
        except OSError as e:
            raise write_error(dest, e) from None
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)  # (gone already when the swap worked)
            self.lease.release()
        return dest


__all__ = ["RESULT_FILES", "ResultsFolder", "check_not_a_source", "holds_results"]
