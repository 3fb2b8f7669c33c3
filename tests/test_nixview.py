"""crossnix_tasks.nixview: progress from recorded Nix 2.8 logs, rich on a terminal, plain lines otherwise."""

from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console

from crossnix_tasks.nixlog import BuildTracker, parse_line
from crossnix_tasks.nixview import NixProgress, PlainBuildView, RichBuildView, build_view, human_bytes, summary_line

FIXTURES = Path(__file__).parent / "fixtures" / "nixlog"


def events(name: str) -> list:
    return [parse_line(line) for line in (FIXTURES / name).read_text().splitlines()]


def test_plain_view_prints_a_line_per_build() -> None:
    buffer = io.StringIO()
    view = PlainBuildView(Console(file=buffer, width=200))
    view.phase("evaluating 1 target: pi")
    for event in events("build-ok.jsonl"):
        view.nix_event(event)
    lines = [line.split("] ", 1)[1] for line in buffer.getvalue().splitlines()]
    assert lines == [
        "evaluating 1 target: pi",
        "building a",
        "built a (built 1/2)",
        "building b",
        "built b (built 2/2)",
    ]


def test_summary_and_progress_renderable() -> None:
    tracker = BuildTracker()
    for event in events("build-ok.jsonl")[:20]:
        tracker.feed(event)
    assert summary_line(tracker) == "built 0/2, 1 running"
    console = Console(file=io.StringIO(), width=120, record=True)
    console.print(NixProgress(tracker))
    text = console.export_text()
    assert "built 0/2, 1 running" in text and "⚙ a" in text and "line2" in text


def test_failed_builds_are_counted() -> None:
    tracker = BuildTracker()
    for event in events("build-fail-keep-going.jsonl"):
        tracker.feed(event)
    assert summary_line(tracker) == "built 2/3, 1 failed"


def test_rich_view_when_on_a_terminal() -> None:
    buffer = io.StringIO()
    console = Console(file=buffer, width=100, force_terminal=True)
    with build_view(console) as view:
        assert isinstance(view, RichBuildView)
        view.phase("evaluating")
        view.phase("building 2 derivations locally")
        for event in events("build-ok.jsonl"):
            view.nix_event(event)
    assert "✓ evaluating" in buffer.getvalue() and "✓ building 2 derivations locally" in buffer.getvalue()
    with build_view(Console(file=io.StringIO())) as plain:
        assert isinstance(plain, PlainBuildView)


def test_human_bytes() -> None:
    assert [human_bytes(n) for n in (5, 5000, 5 * 1024**2, 3 * 1024**3)] == ["5 B", "4.9 KiB", "5.0 MiB", "3.0 GiB"]
