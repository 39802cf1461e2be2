"""Progress of a long read for a command: a bar on a terminal, else a line every tenth.

Offline tools (``kanjian dataset export``) read logs of millions of rows; a
person at a terminal sees a bar, a log (stderr not a terminal: systemd, CI, a
pipe) gets one plain line each tenth of the way, so it stays short and greppable.
"""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)


class ReadProgress:
    """Called as ``(done, total)`` (``unit``: rows unless told); shown on ``console``. Call :meth:`close` after."""

    def __init__(self, console: Console, what: str, unit: str = "rows") -> None:
        self.console = console
        self.what = what
        self.unit = unit
        self._bar: Progress | None = None
        self._task: TaskID | None = None
        self._tenth = -1

    def __call__(self, done: int, total: int) -> None:
        if self.console.is_terminal:
            if self._bar is None:
                self._bar = Progress(
                    TextColumn("{task.description}"),
                    BarColumn(),
                    MofNCompleteColumn(),
                    TimeRemainingColumn(),
                    console=self.console,
                )
                self._bar.start()
                self._task = self._bar.add_task(self.what, total=total)
            assert self._task is not None
            self._bar.update(self._task, completed=done, total=total)
            return
        tenth = done * 10 // total if total else 10
        if tenth > self._tenth:
            self._tenth = tenth
            self.console.print(
                f"{self.what}: {done:,} of {total:,} {self.unit} ({tenth * 10} %)",
                markup=False,
                highlight=False,
            )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
