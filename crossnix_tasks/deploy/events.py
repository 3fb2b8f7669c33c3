"""What a deployment reports while it runs: stage changes, log lines and results, per target.

Every job sends :class:`Event` objects to one :class:`EventSink` (colmena's JobMonitor idea); the progress
view, the per-target log files and tests all listen there.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import IO, Literal

#: The name under which the shared evaluate-and-build step reports.
BUILD_JOB = "(build)"


class Stage(StrEnum):
    QUEUED = "queued"
    CONNECT = "connect"
    BUILD = "build"
    COPY = "copy"
    CHECK = "check"
    ACTIVATE = "activate"
    VERIFY = "verify"
    CONFIRM = "confirm"
    ROLLBACK = "rollback"
    DONE = "done"


#: Stages a target passes on the way to success (the progress bar counts them).
PIPELINE = (Stage.CONNECT, Stage.BUILD, Stage.COPY, Stage.CHECK, Stage.ACTIVATE, Stage.VERIFY, Stage.CONFIRM)


class Result(StrEnum):
    OK = "ok"
    PLANNED = "planned"  # --dry-run
    FAILED = "failed"  # something went wrong; the target may still run the new system (see message)
    ROLLED_BACK = "rolled-back"  # failed, and the previous generation is current again
    UNREACHABLE = "unreachable"
    REFUSED = "refused"  # a safety check said no before anything changed
    INTERRUPTED = "interrupted"


@dataclass(frozen=True)
class Event:
    target: str
    kind: Literal["stage", "log", "result"]
    stage: Stage
    message: str = ""
    result: Result | None = None
    time: float = field(default_factory=time.time)


Listener = Callable[[Event], None]


class TargetLog:
    """One target's log file (``.crossnix/logs/<run-id>/<target>.log``) plus its last lines in memory."""

    TAIL = 20

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.tail: deque[str] = deque(maxlen=self.TAIL)
        self._file: IO[str] | None = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file = path.open("a", encoding="utf-8")

    def write(self, line: str) -> None:
        self.tail.append(line)
        if self._file is not None:
            self._file.write(f"{time.strftime('%H:%M:%S')} {line}\n")
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class EventSink:
    """Fans events out to listeners and writes every target's log file."""

    def __init__(self, log_dir: Path | None) -> None:
        self.log_dir = log_dir
        self.logs: dict[str, TargetLog] = {}
        self.listeners: list[Listener] = []

    def log_for(self, target: str) -> TargetLog:
        log = self.logs.get(target)
        if log is None:
            name = "build" if target == BUILD_JOB else target
            log = TargetLog(None if self.log_dir is None else self.log_dir / f"{name}.log")
            self.logs[target] = log
        return log

    def emit(self, event: Event) -> None:
        log = self.log_for(event.target)
        if event.kind == "stage":
            log.write(f"== {event.stage}{': ' + event.message if event.message else ''}")
        elif event.kind == "result":
            log.write(f"== result: {event.result}{': ' + event.message if event.message else ''}")
        else:
            log.write(event.message)
        for listener in list(self.listeners):
            listener(event)

    def stage(self, target: str, stage: Stage, message: str = "") -> None:
        self.emit(Event(target, "stage", stage, message))

    def line(self, target: str, stage: Stage, message: str) -> None:
        self.emit(Event(target, "log", stage, message))

    def result(self, target: str, stage: Stage, result: Result, message: str = "") -> None:
        self.emit(Event(target, "result", stage, message, result))

    def close(self) -> None:
        for log in self.logs.values():
            log.close()
