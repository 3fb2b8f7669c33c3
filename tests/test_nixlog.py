"""crossnix_tasks.nixlog: Nix 2.8 `--log-format internal-json` lines recorded on this machine (tests/fixtures/nixlog)."""

from __future__ import annotations

from pathlib import Path

from crossnix_tasks import nixhints
from crossnix_tasks.nixlog import (
    ActivityType,
    BuildTracker,
    Message,
    RawLine,
    Result,
    Start,
    Stop,
    drv_name,
    error_summary,
    parse_line,
)

FIXTURES = Path(__file__).parent / "fixtures" / "nixlog"


def track(name: str) -> BuildTracker:
    tracker = BuildTracker()
    for line in (FIXTURES / name).read_text().splitlines():
        tracker.feed_line(line)
    return tracker


def test_parse_each_action() -> None:
    start = parse_line(
        '@nix {"action":"start","fields":["/nix/store/qbv0ji8l0mpnrmq0pc95xrrchhjj68wl-a.drv","",1,1],'
        '"id":7,"level":3,"text":"building \'/nix/store/qbv0ji8l0mpnrmq0pc95xrrchhjj68wl-a.drv\'","type":105}'
    )
    assert start == Start(
        id=7,
        type=ActivityType.BUILD,
        text="building '/nix/store/qbv0ji8l0mpnrmq0pc95xrrchhjj68wl-a.drv'",
        level=3,
        fields=("/nix/store/qbv0ji8l0mpnrmq0pc95xrrchhjj68wl-a.drv", "", 1, 1),
    )
    assert parse_line('@nix {"action":"stop","id":7}') == Stop(7)
    assert parse_line('@nix {"action":"result","fields":["hi"],"id":7,"type":101}') == Result(7, 101, ("hi",))
    msg = parse_line('@nix {"action":"msg","level":0,"msg":"\\u001b[31;1merror:\\u001b[0m boom"}')
    assert msg == Message(level=0, text="error: boom")


def test_anything_else_is_a_raw_line() -> None:
    assert parse_line("ssh: connect to host x port 22: Connection refused") == RawLine(
        "ssh: connect to host x port 22: Connection refused"
    )
    assert parse_line("@nix {not json") == RawLine("@nix {not json")
    assert parse_line('@nix {"action":"dance"}') == RawLine('@nix {"action":"dance"}')
    assert parse_line('@nix [1, 2]') == RawLine("@nix [1, 2]")


def test_unknown_activity_types_are_kept_and_ignored() -> None:
    tracker = BuildTracker()
    tracker.feed_line('@nix {"action":"start","id":1,"level":3,"text":"fetching","type":112}')
    tracker.feed_line('@nix {"action":"result","fields":[1,2],"id":1,"type":199}')
    tracker.feed_line('@nix {"action":"stop","id":1}')
    assert tracker.builds == {} and tracker.errors == []


def test_successful_build_counts_and_logs() -> None:
    tracker = track("build-ok.jsonl")
    assert (tracker.build_counts.done, tracker.build_counts.expected) == (2, 2)
    assert [b.name for b in tracker.builds.values()] == ["a", "b"]
    assert all(b.done for b in tracker.builds.values())
    assert list(next(iter(tracker.builds.values())).log) == ["building a", "line2"]
    assert tracker.running == [] and tracker.errors == []


def test_failed_build_keeps_its_last_log_lines() -> None:
    tracker = track("build-fail-keep-going.jsonl")
    assert tracker.build_counts.failed == 1
    failed = tracker.failed_builds()
    assert [b.name for b in failed] == ["bad"]
    assert list(failed[0].log) == ["step1", "step2", "oops"]
    assert "builder for '/nix/store/aa2r6g7s70j3q0bi5177xip5ns8zrqzx-bad.drv' failed with exit code 3" in error_summary(
        tracker
    )


def test_platform_mismatch_has_a_hint() -> None:
    tracker = track("platform-mismatch.jsonl")
    text = error_summary(tracker)
    assert "a 'aarch64-linux' with features {} is required to build" in text
    assert nixhints.known_error_names(text) == ["platform-mismatch"]
    hint = nixhints.hint_for(text)
    assert hint is not None
    assert 'boot.binfmt.emulatedSystems = [ "aarch64-linux" ];' in hint
    assert "extra-platforms = aarch64-linux" in hint


def test_copy_activity() -> None:
    tracker = BuildTracker()
    seen = []
    for line in (FIXTURES / "copy.jsonl").read_text().splitlines():
        event = tracker.feed_line(line)
        if isinstance(event, Start) and event.type == ActivityType.COPY_PATH:
            seen.append(event.fields[0])
            assert tracker.copying == {event.id: event.fields[0]}
    assert seen == ["/nix/store/rpy2fv2yb335s1d1msafmd7v83adws6h-big"]
    assert tracker.copying == {}


def test_copy_progress_bytes() -> None:
    tracker = BuildTracker()
    tracker.feed_line('@nix {"action":"start","fields":["/nix/store/x-a","local","ssh-ng://h"],"id":5,"level":3,"text":"","type":100}')
    tracker.feed_line('@nix {"action":"result","fields":[100,400,0,0],"id":5,"type":105}')
    assert (tracker.copy_bytes.done, tracker.copy_bytes.expected) == (100, 400)
    tracker.feed_line('@nix {"action":"stop","id":5}')
    assert tracker.copy_bytes.expected == 0


def test_eval_errors_without_the_show_trace_footer() -> None:
    tracker = track("eval-error.jsonl")
    summary = error_summary(tracker)
    assert "value is an integer while a set was expected" in summary
    assert "--show-trace" not in summary
    assert nixhints.known_error_names(summary) == ["missing-flake-input"]


def test_drv_name() -> None:
    assert drv_name("/nix/store/6piqhj377ybgz6dc33rjkkdsd95bcr5p-nixos-system-pi-25.05.drv") == "nixos-system-pi-25.05"
    assert drv_name("weird") == "weird"


def test_hints_for_the_known_errors() -> None:
    cases = {
        "error: path '/nix/store/abc-x' lacks a signature by a trusted key": "unsigned",
        "error: cannot add path '/nix/store/abc' because it lacks a valid signature": "unsigned",
        "error: The option `system.build.images' is used but not defined.": "images-missing",
        "sh: 1: /nix/store/x-probe/probe: Exec format error": "exec-format",
        "error: flake 'path:/p' requires lock file changes but they're not allowed": "lock-outdated",
        "crossnix: flake input 'nixpkgs' is missing from /p/flake.lock": "missing-flake-input",
    }
    for text, name in cases.items():
        assert nixhints.known_error_names(text) == [name], text
        assert nixhints.hint_for(text)
    assert nixhints.hint_for("error: something else") is None
