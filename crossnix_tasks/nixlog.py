"""Nix's ``--log-format internal-json`` stream: typed events, and a tracker that folds them into progress.

Each stderr line of ``nix ... --log-format internal-json`` is ``@nix {json}`` (test-rig.md §3). :func:`parse_line`
turns a line into one :data:`NixEvent`; :class:`BuildTracker` consumes events and keeps what a view needs:
builds done / expected, the derivations being built, copy progress, each build's last log lines, and the
error messages. Views (``crossnix_tasks.nixview``) only read a tracker; nothing here prints.

Activity and result type codes are separate namespaces; unknown codes (newer Nix, forks) are kept as numbers
and otherwise ignored.
"""

from __future__ import annotations

import json
import re
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

PREFIX = "@nix "
LOG_TAIL_LINES = 25
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")


class ActivityType(IntEnum):
    UNKNOWN = 0
    COPY_PATH = 100
    FILE_TRANSFER = 101
    REALISE = 102
    COPY_PATHS = 103
    BUILDS = 104
    BUILD = 105
    OPTIMISE_STORE = 106
    VERIFY_PATHS = 107
    SUBSTITUTE = 108
    QUERY_PATH_INFO = 109
    POST_BUILD_HOOK = 110
    BUILD_WAITING = 111


class ResultType(IntEnum):
    FILE_LINKED = 100
    BUILD_LOG_LINE = 101
    UNTRUSTED_PATH = 102
    CORRUPTED_PATH = 103
    SET_PHASE = 104
    PROGRESS = 105
    SET_EXPECTED = 106
    POST_BUILD_LOG_LINE = 107


def strip_ansi(text: str) -> str:
    return _ANSI.sub("", text)


# Events ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Start:
    """An activity began (a build, a copy, ...). ``fields`` depend on the type (Build: drv, machine, ...)."""

    id: int
    type: int
    text: str
    level: int = 0
    parent: int = 0
    fields: tuple[Any, ...] = ()


@dataclass(frozen=True)
class Stop:
    id: int


@dataclass(frozen=True)
class Result:
    """A result reported by activity ``id``: a log line, progress counts, a phase, ..."""

    id: int
    type: int
    fields: tuple[Any, ...] = ()


@dataclass(frozen=True)
class Message:
    """A log message; level 0 is an error, 1 a warning. ``text`` has the ANSI colours removed."""

    level: int
    text: str
    file: str | None = None
    line: int | None = None


@dataclass(frozen=True)
class RawLine:
    """A stderr line that is not Nix JSON (ssh, a builder hook, or Nix without the JSON logger)."""

    text: str


NixEvent = Start | Stop | Result | Message | RawLine
EventSink = Callable[[NixEvent], None]


def parse_line(line: str) -> NixEvent:
    """One stderr line as an event; anything that is not well-formed ``@nix`` JSON is a :class:`RawLine`."""
    if not line.startswith(PREFIX):
        return RawLine(strip_ansi(line))
    try:
        data = json.loads(line[len(PREFIX) :])
    except ValueError:
        return RawLine(strip_ansi(line))
    if not isinstance(data, dict):
        return RawLine(strip_ansi(line))
    try:
        return _event(data)
    except (KeyError, TypeError, ValueError):
        return RawLine(strip_ansi(line))


def _event(data: dict[str, Any]) -> NixEvent:
    action = data["action"]
    if action == "start":
        return Start(
            id=int(data["id"]),
            type=int(data.get("type", 0)),
            text=str(data.get("text", "")),
            level=int(data.get("level", 0)),
            parent=int(data.get("parent", 0)),
            fields=tuple(data.get("fields") or ()),
        )
    if action == "stop":
        return Stop(int(data["id"]))
    if action == "result":
        return Result(int(data["id"]), int(data["type"]), tuple(data.get("fields") or ()))
    if action == "msg":
        line = data.get("line")
        return Message(
            level=int(data.get("level", 0)),
            text=strip_ansi(str(data.get("msg", ""))),
            file=data.get("file"),
            line=int(line) if isinstance(line, int) else None,
        )
    raise ValueError(f"unknown action {action!r}")


def parse_lines(lines: Iterable[str]) -> list[NixEvent]:
    return [parse_line(line) for line in lines if line.strip()]


# Tracking -------------------------------------------------------------------------------------------------


def drv_name(drv_path: str) -> str:
    """``/nix/store/<hash>-nixos-system-pi-25.05.drv`` -> ``nixos-system-pi-25.05``."""
    base = drv_path.rsplit("/", 1)[-1]
    if len(base) > 33 and base[32] == "-":
        base = base[33:]
    return base.removesuffix(".drv")


@dataclass
class Build:
    """One derivation build Nix started."""

    drv_path: str
    machine: str = ""  # "" = this machine, else the remote builder's URI
    phase: str = ""
    log: deque[str] = field(default_factory=lambda: deque(maxlen=LOG_TAIL_LINES))
    done: bool = False

    @property
    def name(self) -> str:
        return drv_name(self.drv_path)


@dataclass
class Counts:
    done: int = 0
    expected: int = 0
    running: int = 0
    failed: int = 0


@dataclass
class BuildTracker:
    """Folds :data:`NixEvent` s into the state a progress view shows. Feed it with :meth:`feed`."""

    builds: dict[int, Build] = field(default_factory=dict)
    build_counts: Counts = field(default_factory=Counts)
    copy_counts: Counts = field(default_factory=Counts)
    copy_bytes: Counts = field(default_factory=Counts)
    copying: dict[int, str] = field(default_factory=dict)  # activity id -> store path being copied
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    raw: deque[str] = field(default_factory=lambda: deque(maxlen=LOG_TAIL_LINES))
    _types: dict[int, int] = field(default_factory=dict)
    _copy_progress: dict[int, tuple[int, int]] = field(default_factory=dict)

    def feed(self, event: NixEvent) -> None:
        if isinstance(event, Start):
            self._start(event)
        elif isinstance(event, Stop):
            self._stop(event)
        elif isinstance(event, Result):
            self._result(event)
        elif isinstance(event, Message):
            if event.level == 0:
                self.errors.append(event.text)
            elif event.level == 1:
                self.warnings.append(event.text)
        else:
            self.raw.append(event.text)

    def feed_line(self, line: str) -> NixEvent:
        event = parse_line(line)
        self.feed(event)
        return event

    # queries

    @property
    def running(self) -> list[Build]:
        return [b for b in self.builds.values() if not b.done]

    def failed_builds(self) -> list[Build]:
        """Builds Nix reported as failed (their drv path appears in an error message)."""
        failed = []
        for build in self.builds.values():
            if any(build.drv_path in message for message in self.errors):
                failed.append(build)
        return failed

    def build_for(self, drv_path: str) -> Build | None:
        return next((b for b in self.builds.values() if b.drv_path == drv_path), None)

    # event handlers

    def _start(self, event: Start) -> None:
        self._types[event.id] = event.type
        if event.type == ActivityType.BUILD and event.fields:
            machine = str(event.fields[1]) if len(event.fields) > 1 else ""
            self.builds[event.id] = Build(str(event.fields[0]), machine=machine)
        elif event.type == ActivityType.COPY_PATH and event.fields:
            self.copying[event.id] = str(event.fields[0])

    def _stop(self, event: Stop) -> None:
        build = self.builds.get(event.id)
        if build is not None:
            build.done = True
        if self.copying.pop(event.id, None) is not None:
            self._copy_progress.pop(event.id, None)
            self._sum_copy_bytes()
        self._types.pop(event.id, None)

    def _result(self, event: Result) -> None:
        kind = self._types.get(event.id)
        if event.type in (ResultType.BUILD_LOG_LINE, ResultType.POST_BUILD_LOG_LINE):
            build = self.builds.get(event.id)
            if build is not None and event.fields:
                build.log.append(strip_ansi(str(event.fields[0])))
        elif event.type == ResultType.SET_PHASE:
            build = self.builds.get(event.id)
            if build is not None and event.fields:
                build.phase = str(event.fields[0])
        elif event.type == ResultType.PROGRESS and len(event.fields) >= 4:
            done, expected, running, failed = (int(x) for x in event.fields[:4])
            if kind == ActivityType.BUILDS:
                self.build_counts = Counts(done, expected, running, failed)
            elif kind == ActivityType.COPY_PATHS:
                self.copy_counts = Counts(done, expected, running, failed)
            elif kind == ActivityType.COPY_PATH:
                self._copy_progress[event.id] = (done, expected)
                self._sum_copy_bytes()
        elif (
            event.type == ResultType.SET_EXPECTED
            and len(event.fields) >= 2
            and int(event.fields[0]) == ActivityType.COPY_PATH
        ):
            self.copy_counts.expected = max(self.copy_counts.expected, int(event.fields[1]))

    def _sum_copy_bytes(self) -> None:
        done = sum(d for d, _ in self._copy_progress.values())
        expected = sum(e for _, e in self._copy_progress.values())
        self.copy_bytes = Counts(done, expected)


def error_summary(tracker: BuildTracker) -> str:
    """The error messages Nix printed, without its '(use --show-trace ...)' footer."""
    kept = [e for e in tracker.errors if not e.startswith("(use '--show-trace'")]
    return "\n".join(kept)
