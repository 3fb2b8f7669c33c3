"""The progress views and the summary render every kind of event and result."""

from __future__ import annotations

import io

from rich.console import Console

from crossnix_tasks.deploy.events import BUILD_JOB, Event, Result, Stage
from crossnix_tasks.deploy.report import DeployReport, TargetReport, print_summary
from crossnix_tasks.deploy.view import PlainView, RichView, make_view

EVENTS = [
    Event(BUILD_JOB, "stage", Stage.BUILD, "evaluating"),
    Event("a", "stage", Stage.CONNECT, "root@a:22"),
    Event("a", "log", Stage.CONNECT, "$ crossnix-target state /nix/var/nix/profiles/system"),
    Event(BUILD_JOB, "result", Stage.BUILD, "1 system(s)", Result.OK),
    Event("a", "stage", Stage.ACTIVATE, "switch"),
    Event("a", "result", Stage.ACTIVATE, "switch failed; the previous generation is back", Result.ROLLED_BACK),
    Event("b", "result", Stage.CONFIRM, "", Result.OK),
]


def test_plain_view_lines() -> None:
    out = io.StringIO()
    view = PlainView(Console(file=out, width=200))
    for event in EVENTS:
        view(event)
    lines = [line.split(" ", 1)[1] for line in out.getvalue().splitlines()]
    assert lines == [
        "(build): build — evaluating",
        "a: connect — root@a:22",
        "(build): ok — 1 system(s)",
        "a: activate — switch",
        "a: rolled-back — switch failed; the previous generation is back",
        "b: ok",
    ]


def test_rich_view_and_summary() -> None:
    out = io.StringIO()
    console = Console(file=out, width=140, force_terminal=True)
    view = make_view(console)
    assert isinstance(view, RichView)
    view.start(["a", "b"])
    for event in EVENTS:
        view(event)
    view.stop()
    assert "rolled-back" in out.getvalue()
    report = DeployReport(
        run_id="r1", goal=None, dry_run=False, duration=1.5,
        targets=[
            TargetReport("a", "root@a:22", Result.ROLLED_BACK, Stage.ACTIVATE, 1.0, "failed; back", generation=3,
                         previous_generation=3, log_tail=["== activate", "boom"], log_file="/l/a.log"),
            TargetReport("b", "root@b:22", Result.OK, Stage.CONFIRM, 1.2, toplevel="/nix/store/" + "x" * 32 + "-nixos-system-b",
                         generation=4, previous_generation=3),
        ],
    )
    text = io.StringIO()
    print_summary(report, Console(file=text, width=160))
    rendered = text.getvalue()
    assert "3 → 4" in rendered and "nixos-system-b" in rendered and "a: last log lines (/l/a.log)" in rendered
    assert "  boom" in rendered and "failed: 1/2 targets deployed in 1.5s" in rendered
    assert report.exit_code == 1 and report.to_json()["results"] == {"rolled-back": 1, "ok": 1}
    assert "log_tail" not in report.to_json()["targets"][1]
