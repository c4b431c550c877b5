"""A rich progress bar per folder during the initial sync, on the terminal only."""

from __future__ import annotations

import threading

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TimeRemainingColumn


class ProgressDisplay:
    def __init__(self, console: Console) -> None:
        self._progress = Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self._tasks: dict[str, TaskID] = {}
        self._lock = threading.Lock()
        self._started = False

    def update(self, label: str, done: int, total: int) -> None:
        with self._lock:
            if not self._started:
                self._progress.start()
                self._started = True
            task = self._tasks.get(label)
            if task is None or (done == 0 and total):
                if task is not None:
                    self._progress.remove_task(task)
                task = self._tasks[label] = self._progress.add_task(label, total=total)
            self._progress.update(task, completed=done, total=total)
            if all(t.finished for t in self._progress.tasks):
                self._progress.stop()
                self._started = False
