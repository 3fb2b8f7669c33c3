"""Showing Nix build progress: a rich live view on a terminal, plain lines otherwise.

Views consume :mod:`crossnix_tasks.nixlog` events and know nothing about how Nix was started. A view implements
:class:`BuildView` (``phase`` for crossnix's own steps, ``nix_event`` for Nix's). :class:`NixProgress` is a rich
renderable of a :class:`~crossnix_tasks.nixlog.BuildTracker`, for embedding Nix progress in another live
display (the deploy view).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.text import Text

from crossnix_tasks.nixlog import ActivityType, BuildTracker, NixEvent, Start, Stop, drv_name

RUNNING_SHOWN = 6


class BuildView(Protocol):
    def phase(self, text: str) -> None:
        """crossnix started a step of its own (evaluating, probing, building, placing)."""

    def nix_event(self, event: NixEvent) -> None:
        """Nix reported something (see :mod:`crossnix_tasks.nixlog`)."""


class NullView:
    def phase(self, text: str) -> None:
        pass

    def nix_event(self, event: NixEvent) -> None:
        pass


def human_bytes(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(size) < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


def summary_line(tracker: BuildTracker) -> str:
    """``built 3/10, 2 running, 1 failed · copying 2/5 paths (12.0/40.0 MiB)``."""
    counts = tracker.build_counts
    parts = []
    if counts.expected or tracker.builds:
        done_builds = sum(1 for b in tracker.builds.values() if b.done)
        expected = max(counts.expected, len(tracker.builds))
        text = f"built {max(counts.done, done_builds - counts.failed)}/{expected}"
        if tracker.running:
            text += f", {len(tracker.running)} running"
        if counts.failed:
            text += f", {counts.failed} failed"
        parts.append(text)
    copies = tracker.copy_counts
    if copies.expected or tracker.copying:
        text = f"copying {copies.done}/{max(copies.expected, copies.done + len(tracker.copying))} paths"
        if tracker.copy_bytes.expected:
            text += f" ({human_bytes(tracker.copy_bytes.done)}/{human_bytes(tracker.copy_bytes.expected)})"
        parts.append(text)
    return " · ".join(parts)


class NixProgress:
    """A rich renderable: the summary line, then each running build with its last log line."""

    def __init__(self, tracker: BuildTracker, *, max_running: int = RUNNING_SHOWN) -> None:
        self.tracker = tracker
        self.max_running = max_running

    def __rich__(self) -> RenderableType:
        lines: list[RenderableType] = []
        summary = summary_line(self.tracker)
        if summary:
            lines.append(Text(summary, style="bold"))
        running = self.tracker.running
        for build in running[: self.max_running]:
            where = f" on {build.machine}" if build.machine else ""
            line = Text(f"  ⚙ {build.name}{where}", style="cyan")
            if build.log:
                line.append(f"  {build.log[-1][:100]}", style="dim")
            lines.append(line)
        if len(running) > self.max_running:
            lines.append(Text(f"  … and {len(running) - self.max_running} more", style="dim"))
        for path in list(self.tracker.copying.values())[:3]:
            lines.append(Text(f"  ⇄ {drv_name(path)}", style="magenta"))
        return Group(*lines)


class PlainBuildView:
    """One line per step, per build started / finished and per copied path (for logs and CI)."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.tracker = BuildTracker()
        self._started = time.monotonic()

    def _print(self, text: str) -> None:
        self.console.print(f"[{time.monotonic() - self._started:6.1f}s] {text}", markup=False, highlight=False)

    def phase(self, text: str) -> None:
        self._print(text)

    def nix_event(self, event: NixEvent) -> None:
        self.tracker.feed(event)
        if isinstance(event, Start) and event.type == ActivityType.BUILD and event.fields:
            machine = f" on {event.fields[1]}" if len(event.fields) > 1 and event.fields[1] else ""
            self._print(f"building {drv_name(str(event.fields[0]))}{machine}")
        elif isinstance(event, Start) and event.type == ActivityType.COPY_PATH and event.fields:
            self._print(f"copying {drv_name(str(event.fields[0]))}")
        elif isinstance(event, Stop):
            build = self.tracker.builds.get(event.id)
            if build is not None:
                self._print(f"built {build.name} ({summary_line(self.tracker)})")


class RichBuildView:
    """A live status on a terminal: the current step, builds done / expected, running builds, copies."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.tracker = BuildTracker()
        self.step = ""
        self._shown = "starting"
        self._started = time.monotonic()
        self.live = Live(self, console=console, refresh_per_second=8, transient=True)

    def __rich__(self) -> RenderableType:
        elapsed = time.monotonic() - self._started
        head = Text(f"{self.step or self._shown} ", style="bold green")
        head.append(f"{elapsed:.0f}s", style="dim")
        return Group(head, NixProgress(self.tracker))

    def phase(self, text: str) -> None:
        if self.step:
            self.console.print(Text(f"✓ {self.step}", style="dim"))
        self.step = text

    def nix_event(self, event: NixEvent) -> None:
        self.tracker.feed(event)


@contextmanager
def build_view(console: Console, *, plain: bool | None = None) -> Iterator[BuildView]:
    """A rich live view when ``console`` is a terminal (and ``plain`` is not set), else plain lines."""
    if plain if plain is not None else not console.is_terminal:
        yield PlainBuildView(console)
        return
    view = RichBuildView(console)
    with view.live:
        yield view
    if view.step:
        console.print(Text(f"✓ {view.step}", style="dim"))
