"""``inv status`` and ``inv rollback``: read or roll back the system profile of several targets at once."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncssh
from rich.table import Table

from crossnix_tasks import remote as rc
from crossnix_tasks import ssh
from crossnix_tasks.deploy.events import EventSink, Result, Stage
from crossnix_tasks.deploy.history import History
from crossnix_tasks.deploy.report import DeployReport, TargetReport, short_name
from crossnix_tasks.errors import CrossnixError
from crossnix_tasks.inventory import Target


@dataclass
class TargetStatus:
    target: str
    address: str
    reachable: bool = False
    error: str = ""
    generation: int | None = None
    system: str = ""  # the system profile's current generation
    previous_generation: int | None = None
    previous: str = ""
    current: str = ""  # /run/current-system
    booted: str = ""  # /run/booted-system
    systemd: bool = False
    deployed_by_crossnix: bool = False
    generations: list[dict[str, Any]] = field(default_factory=list)

    @property
    def reboot_pending(self) -> bool:
        """The running kernel/initrd come from another system than the current one (boot goal, or updates)."""
        return bool(self.booted and self.current and self.booted != self.current)

    def to_json(self) -> dict[str, Any]:
        return {**self.__dict__, "reboot_pending": self.reboot_pending}


def status_table(rows: Sequence[TargetStatus]) -> Table:
    """What ``inv status`` prints."""
    table = Table("target", "generation", "system", "previous", "running", "notes")
    for row in rows:
        if not row.reachable:
            table.add_row(row.target, "-", "-", "-", "-", f"[red]{row.error}[/red]")
            continue
        notes = []
        if row.current and row.current != row.system:
            notes.append("running differs from the profile")
        if row.reboot_pending:
            notes.append("booted system differs: reboot pending")
        if not row.deployed_by_crossnix and row.system:
            notes.append("not deployed by crossnix")
        table.add_row(
            row.target,
            str(row.generation or "-"),
            short_name(row.system),
            f"{row.previous_generation}: {short_name(row.previous)}" if row.previous_generation else "-",
            short_name(row.current),
            "; ".join(notes),
        )
    return table


async def _connect(target: Target, env: ssh.SshEnv) -> asyncssh.SSHClientConnection:
    return await ssh.connect(target, env)


async def status(
    targets: Sequence[Target], env: ssh.SshEnv, history: History, *, parallel: int = 20
) -> list[TargetStatus]:
    limit = asyncio.Semaphore(parallel)

    async def one(target: Target) -> TargetStatus:
        row = TargetStatus(target.name, target.address)
        async with limit:
            try:
                conn = await _connect(target, env)
            except ssh.SshError as exc:
                row.error = exc.message.removeprefix(f"{target.name}: ")
                return row
            try:
                state = await rc.read_state(rc.Remote(target, conn))
            except CrossnixError as exc:
                row.error = exc.message
                return row
            finally:
                conn.close()
        row.reachable = True
        row.generation = state.generation
        row.system = state.profile
        previous = state.previous
        row.previous_generation = previous.number if previous else None
        row.previous = previous.path if previous else ""
        row.current, row.booted, row.systemd = state.current, state.booted, state.systemd
        row.deployed_by_crossnix = history.knows(target.name, state.profile or state.current)
        row.generations = [
            {"number": g.number, "path": g.path, "current": g.number == state.generation} for g in state.generations
        ]
        return row

    return list(await asyncio.gather(*(one(t) for t in targets)))


async def rollback(
    targets: Sequence[Target],
    env: ssh.SshEnv,
    sink: EventSink,
    *,
    run_id: str,
    generation: int | None = None,
    goal: str = "switch",
    sudo_password: str | None = None,
    parallel: int = 10,
) -> DeployReport:
    """Make the previous generation (or ``generation``) current on every target and activate it, then
    check through a fresh login that the target runs it."""
    limit = asyncio.Semaphore(parallel)
    started = time.monotonic()

    async def one(target: Target) -> TargetReport:
        report = TargetReport(target.name, target.address)
        t0 = time.monotonic()

        def log(line: str) -> None:
            sink.line(target.name, report.stage, line)

        def finish(result: Result, message: str) -> TargetReport:
            report.result, report.message, report.duration = result, message, time.monotonic() - t0
            sink.result(target.name, report.stage, result, message)
            return report

        conns: list[asyncssh.SSHClientConnection] = []
        try:
            async with limit:
                report.stage = Stage.CONNECT
                sink.stage(target.name, Stage.CONNECT, target.address)
                conns.append(await _connect(target, env))
                work = rc.Remote(target, conns[-1], sudo_password=sudo_password, log=log)
                state = await rc.read_state(work)
                report.previous, report.previous_generation = state.profile or None, state.generation
                wanted = generation if generation is not None else (state.previous.number if state.previous else None)
                chosen = next((g for g in state.generations if g.number == wanted), None)
                if chosen is None:
                    known = ", ".join(str(g.number) for g in state.generations) or "none"
                    return finish(Result.REFUSED, f"no generation {wanted} to roll back to (generations: {known})")
                try:
                    await rc.check_sudo(work, sudo_password)
                except rc.RemoteError as exc:
                    return finish(Result.REFUSED, f"{exc.message}; nothing was changed")
                report.stage = Stage.ROLLBACK
                sink.stage(target.name, Stage.ROLLBACK, f"generation {state.generation} → {chosen.number} ({goal})")
                await rc.switch_generation(work, chosen.number, goal)
                report.stage = Stage.VERIFY
                sink.stage(target.name, Stage.VERIFY, "fresh login")
                conns.append(await _connect(target, env))
                after = await rc.read_state(rc.Remote(target, conns[-1], log=log))
                report.generation, report.toplevel = after.generation, after.profile
                report.current_system = after.current or None
                if after.profile != chosen.path or (goal in ("switch", "test") and after.current != chosen.path):
                    return finish(Result.FAILED, f"after the rollback the target runs {after.current or 'nothing'}")
                return finish(Result.OK, f"generation {chosen.number} is current")
        except ssh.SshError as exc:
            kind = Result.UNREACHABLE if exc.kind in ("unreachable", "timeout") else Result.REFUSED
            return finish(kind, exc.message.removeprefix(f"{target.name}: "))
        except CrossnixError as exc:
            return finish(Result.FAILED, exc.message.splitlines()[0])
        finally:
            for conn in conns:
                conn.close()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(conn.wait_closed(), 5)

    reports = list(await asyncio.gather(*(one(t) for t in targets)))
    for report in reports:
        log_file = sink.log_for(report.target)
        report.log_file = str(log_file.path) if log_file.path else None
        report.log_tail = list(log_file.tail)
    sink.close()
    return DeployReport(
        run_id=run_id,
        goal=goal,
        dry_run=False,
        targets=reports,
        duration=time.monotonic() - started,
        log_dir=str(sink.log_dir) if sink.log_dir else None,
    )
