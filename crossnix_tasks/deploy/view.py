"""The live progress view: one row per target on a terminal, plain lines otherwise."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.text import Text

from crossnix_tasks.deploy.events import BUILD_JOB, PIPELINE, Event, Result, Stage
from crossnix_tasks.deploy.report import _STYLE


class View:
    """Receives every event; ``start``/``stop`` bracket the run."""

    def start(self, targets: Sequence[str]) -> None:
        pass

    def __call__(self, event: Event) -> None:
        pass

    def note(self, message: str) -> None:
        pass

    def stop(self) -> None:
        pass


class PlainView(View):
    """Timestamped lines on stderr: stage changes and results (and log lines with ``verbose``)."""

    def __init__(self, console: Console, *, verbose: bool = False) -> None:
        self.console = console
        self.verbose = verbose

    def _print(self, text: str) -> None:
        self.console.print(f"{time.strftime('%H:%M:%S')} {text}", markup=False, highlight=False, soft_wrap=True)

    def __call__(self, event: Event) -> None:
        if event.kind == "stage":
            self._print(f"{event.target}: {event.stage}" + (f" — {event.message}" if event.message else ""))
        elif event.kind == "result":
            self._print(f"{event.target}: {event.result}" + (f" — {event.message}" if event.message else ""))
        elif self.verbose:
            self._print(f"{event.target}:   {event.message}")

    def note(self, message: str) -> None:
        self._print(message)


class RichView(View):
    """rich Progress rows: spinner, target, stages done, current stage, last log line, elapsed."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.progress = Progress(
            SpinnerColumn(finished_text="·"),
            TextColumn("{task.fields[target]}", style="bold"),
            BarColumn(bar_width=14),
            TextColumn("{task.fields[stage]}"),
            TextColumn("{task.description}", style="dim"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        self.rows: dict[str, TaskID] = {}
        self.done: dict[str, int] = {}  # stages passed, per row

    def start(self, targets: Sequence[str]) -> None:
        width = max((len(t) for t in [BUILD_JOB, *targets]), default=8)
        for name in [BUILD_JOB, *targets]:
            total = 1 if name == BUILD_JOB else len(PIPELINE)
            self.rows[name] = self.progress.add_task(
                "", total=total, target=name.ljust(width), stage=Text("queued", style="dim"), start=False
            )
        self.progress.start()

    def __call__(self, event: Event) -> None:
        row = self.rows.get(event.target)
        if row is None:
            return
        update: dict[str, Any] = {}
        if event.kind == "stage":
            self.progress.start_task(row)
            update["stage"] = Text(str(event.stage), style="cyan")
            if event.stage in PIPELINE and event.target != BUILD_JOB:
                update["completed"] = self.done[event.target] = PIPELINE.index(event.stage)
            update["description"] = event.message[:60]
        elif event.kind == "log":
            line = event.message.strip()
            if line:
                update["description"] = line[:60]
        else:
            result = event.result or Result.FAILED
            update["stage"] = Text(str(result), style=_STYLE.get(result, ""))
            update["description"] = event.message[:60]
            # finished rows stop spinning: a success fills the bar, anything else ends it where it stopped
            if result in (Result.OK, Result.PLANNED) or event.target == BUILD_JOB:
                update["completed"] = update["total"] = 1 if event.target == BUILD_JOB else len(PIPELINE)
            else:
                update["completed"] = update["total"] = max(self.done.get(event.target, 0), 1)
            self.progress.stop_task(row)
        self.progress.update(row, **update)

    def note(self, message: str) -> None:
        self.progress.console.print(message, markup=False, highlight=False)

    def stop(self) -> None:
        self.progress.stop()


def make_view(console: Console, *, verbose: bool = False, quiet: bool = False) -> View:
    if quiet:
        return View()
    if console.is_terminal and not verbose:
        return RichView(console)
    return PlainView(console, verbose=verbose)


__all__ = ["PlainView", "RichView", "Stage", "View", "make_view"]
