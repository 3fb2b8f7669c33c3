"""The outcome of a deployment: one row per target, a summary table, the JSON report and the exit code."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from crossnix_tasks.deploy.events import Result, Stage

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INTERRUPTED = 130

_STYLE = {
    Result.OK: "green",
    Result.PLANNED: "cyan",
    Result.FAILED: "red",
    Result.ROLLED_BACK: "yellow",
    Result.UNREACHABLE: "red",
    Result.REFUSED: "red",
    Result.INTERRUPTED: "yellow",
}


@dataclass
class TargetReport:
    target: str
    address: str
    result: Result = Result.INTERRUPTED
    stage: Stage = Stage.QUEUED  # the furthest stage reached
    duration: float = 0.0
    message: str = ""
    toplevel: str | None = None
    previous: str | None = None  # what the system profile held before
    generation: int | None = None  # the system profile's current generation afterwards
    previous_generation: int | None = None
    current_system: str | None = None  # /run/current-system afterwards, where known
    log_file: str | None = None
    log_tail: list[str] = field(default_factory=list)
    plan: dict[str, Any] | None = None  # --dry-run

    @property
    def succeeded(self) -> bool:
        return self.result in (Result.OK, Result.PLANNED)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["result"] = str(self.result)
        data["stage"] = str(self.stage)
        data["duration"] = round(self.duration, 3)
        if self.succeeded:
            data.pop("log_tail")
        return data


@dataclass
class DeployReport:
    run_id: str
    goal: str | None
    dry_run: bool
    targets: list[TargetReport]
    duration: float = 0.0
    interrupted: bool = False
    log_dir: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return EXIT_INTERRUPTED
        return EXIT_OK if all(t.succeeded for t in self.targets) else EXIT_FAILED

    def to_json(self) -> dict[str, Any]:
        counts: dict[str, int] = {}
        for target in self.targets:
            counts[str(target.result)] = counts.get(str(target.result), 0) + 1
        return {
            "run_id": self.run_id,
            "goal": self.goal,
            "dry_run": self.dry_run,
            "interrupted": self.interrupted,
            "exit_code": self.exit_code,
            "duration": round(self.duration, 3),
            "log_dir": self.log_dir,
            "results": counts,
            "notes": self.notes,
            "targets": [t.to_json() for t in self.targets],
        }


def short_name(path: str | None) -> str:
    """``/nix/store/<hash>-nixos-system-pi-25.05`` -> ``nixos-system-pi-25.05`` (``-`` for nothing)."""
    name = (path or "").rsplit("/", 1)[-1]
    return name[33:] if len(name) > 33 and name[32] == "-" else (name or "-")


def summary_table(report: DeployReport) -> Table:
    table = Table(title=f"deploy {report.run_id}" + (" (dry run)" if report.dry_run else ""), title_justify="left")
    for column in ("target", "stage", "time", "result", "generation", "detail"):
        table.add_column(column, overflow="fold")
    order = sorted(report.targets, key=lambda t: (t.succeeded, t.target))
    for t in order:
        generation = "-"
        if t.generation is not None:
            generation = str(t.generation)
            if t.previous_generation is not None and t.previous_generation != t.generation:
                generation = f"{t.previous_generation} → {t.generation}"
        detail = t.message
        if t.result in (Result.OK, Result.PLANNED) and not detail:
            detail = short_name(t.toplevel)
        table.add_row(
            t.target,
            str(t.stage),
            f"{t.duration:.1f}s",
            Text(str(t.result), style=_STYLE.get(t.result, "")),
            generation,
            detail,
        )
    return table


def print_summary(report: DeployReport, console: Console) -> None:
    console.print(summary_table(report))
    for t in sorted(report.targets, key=lambda t: t.target):
        if t.succeeded or not t.log_tail:
            continue
        console.print(f"[bold]{t.target}[/bold]: last log lines ({t.log_file or 'no log file'})", markup=True)
        for line in t.log_tail:
            console.print(f"  {line}", markup=False, highlight=False)
    for note in report.notes:
        console.print(note, markup=False, highlight=False)
    ok = sum(1 for t in report.targets if t.succeeded)
    verdict = "interrupted" if report.interrupted else ("done" if ok == len(report.targets) else "failed")
    console.print(
        f"{verdict}: {ok}/{len(report.targets)} targets {'planned' if report.dry_run else 'deployed'} "
        f"in {report.duration:.1f}s" + (f"; logs in {report.log_dir}" if report.log_dir else ""),
        markup=False,
        highlight=False,
    )
