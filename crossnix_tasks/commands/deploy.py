"""``inv deploy``, ``inv rollback`` and ``inv status``: the fleet over SSH."""

from __future__ import annotations

import getpass
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import get_args

from invoke.context import Context
from invoke.exceptions import Exit

from crossnix_tasks import build, nix, nixlog, signing, ssh, ui, vmstate
from crossnix_tasks.build import SystemsBuilt
from crossnix_tasks.deploy import manual
from crossnix_tasks.deploy.events import EventSink
from crossnix_tasks.deploy.history import History
from crossnix_tasks.deploy.pipeline import BuildFn, Deployment, DeployOptions, new_run_id, nix_copy
from crossnix_tasks.deploy.report import DeployReport, print_summary
from crossnix_tasks.deploy.view import make_view
from crossnix_tasks.errors import CrossnixError, SelectionError
from crossnix_tasks.evaluator import TargetRequest
from crossnix_tasks.inventory import Goal, Target
from crossnix_tasks.process import ProcessFailed
from crossnix_tasks.project import Project
from crossnix_tasks.selection import select
from crossnix_tasks.taskutil import crossnix_task

SELECT_HELP = "target NAME, name GLOB or @TAG; repeatable or comma-separated"
PASSWORD_ENV = "CROSSNIX_SUDO_PASSWORD_FILE"


def _targets(project: Project, on: Sequence[str] | None, all: bool, *, vm: bool) -> list[Target]:
    inventory = project.require_inventory()
    if not on and not all:
        raise SelectionError("choose the targets: --all, or --on NAME|GLOB|@TAG (repeatable)")
    targets = select(inventory, on or [], select_all=all)
    missing = [t.name for t in targets if not t.host and not vm]
    if missing:
        hint = 'add `host = "..."` to those targets in boards.toml'
        if len(missing) == len(targets):
            raise CrossnixError(f"no host set for {', '.join(missing)}", hint=hint)
        ui.warn(f"skipping {', '.join(missing)}: no host set ({hint})")
        targets = [t for t in targets if t.host]
    if vm:
        targets = [vmstate.vm_target(t, inventory.state_dir) for t in targets]
    return targets


def _positive_int(flag: str, value: str | None) -> int | None:
    if value is None:
        return None
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise CrossnixError(f"{flag} takes a positive whole number, not {value!r}")
    return number


def _first_line(path: Path) -> str:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise CrossnixError(f"cannot read the sudo password from {PASSWORD_ENV}={path}: {exc.strerror}") from None
    return lines[0] if lines else ""


def _sudo_password(targets: Sequence[Target], ask: bool) -> str | None:
    """Asked once per run (never echoed, never logged) when a non-root target wants it. Blocking on purpose:
    nothing else runs yet, and Ctrl-C at the prompt must simply end the command."""
    users = sorted({t.user for t in targets if t.user != "root" and (ask or t.ask_sudo_password)})
    if not users:
        return None
    path = os.environ.get(PASSWORD_ENV)
    if path:
        return _first_line(Path(path))
    count = sum(1 for t in targets if t.user in users)
    prompt = f"sudo password for {', '.join(users)} ({count} target{'s' if count != 1 else ''}): "
    return getpass.getpass(prompt)


class _BuildLog:
    """The build backend's view (``nixview.BuildView``), writing to the deploy's build log and progress row."""

    def __init__(self, log: Callable[[str], None]) -> None:
        self.log = log

    def phase(self, text: str) -> None:
        self.log(text)

    def nix_event(self, event: nixlog.NixEvent) -> None:
        if isinstance(event, nixlog.Start | nixlog.Message | nixlog.RawLine) and event.text.strip():
            self.log(event.text)
        elif isinstance(event, nixlog.Result) and event.type == nixlog.ResultType.BUILD_LOG_LINE and event.fields:
            self.log(f"  | {event.fields[0]}")


def project_builder(project: Project) -> BuildFn:
    """Evaluate the selection once and build its systems; a broken target fails alone (``build_each_toplevel``)."""

    async def build_systems(targets: Sequence[Target], log: Callable[[str], None]) -> SystemsBuilt:
        return await build.build_each_toplevel(project, list(targets), view=_BuildLog(log))

    return build_systems


def project_planner(project: Project) -> BuildFn:
    """For --dry-run: evaluate only; the systems' store paths come from their derivations (nothing is built)."""

    async def plan_systems(targets: Sequence[Target], log: Callable[[str], None]) -> SystemsBuilt:
        plan = await build.evaluate(project, [TargetRequest(t) for t in targets], view=_BuildLog(log))
        derivations = await nix.show_derivation(sorted(set(plan.toplevels.values())))
        outputs = {drv: str(info["outputs"]["out"]["path"]) for drv, info in derivations.items()}
        return SystemsBuilt({name: outputs[drv] for name, drv in plan.toplevels.items() if drv in outputs}, {})

    return plan_systems


async def locally_known(path: str) -> bool:
    """Is ``path`` valid in the local store (crossnix built it, so it can account for it)?"""
    try:
        return bool(await nix.path_info([path]))
    except ProcessFailed:
        return False


def _finish(report: DeployReport, json: bool) -> None:
    if json:
        ui.print_json(report.to_json())
    else:
        print_summary(report, ui.out)
    if report.exit_code:
        raise Exit(code=report.exit_code)


async def run_deploy(
    project: Project,
    targets: Sequence[Target],
    options: DeployOptions,
    *,
    build: BuildFn | None = None,
    verbose: bool = False,
    quiet: bool = False,
) -> DeployReport:
    """Deploy ``targets`` (the API behind ``inv deploy`` and ``inv demo``)."""
    state_dir = project.inventory.state_dir
    # Before the build: the systems trust this key (nixexpr/modules/fleet-trust.nix), also in a dry run, so
    # that the plan shows the very systems a real deploy would build.
    key = await signing.ensure_fleet_key(state_dir, project.root)

    async def sign(paths: Sequence[str]) -> None:
        await signing.sign_closures(key, paths)

    deployment = Deployment(
        targets,
        ssh_env=ssh.SshEnv(state_dir=state_dir),
        build=build or (project_planner(project) if options.dry_run else project_builder(project)),
        copy=nix_copy,
        options=options,
        sink=EventSink(state_dir / "logs" / options.run_id),
        view=make_view(ui.err, verbose=verbose, quiet=quiet),
        sign=sign,
        history=History(state_dir / "deployed.json"),
        locally_known=locally_known,
    )
    return await deployment.run()


@crossnix_task(
    iterable=["on"],
    auto_shortflags=False,
    help={
        "on": SELECT_HELP,
        "all": "deploy every target of boards.toml",
        "goal": "switch (default, or the target's deploy.goal) | boot | test | dry-activate",
        "parallel": "targets copied / activated at once (default: [defaults.deploy] parallel, 10)",
        "dry_run": "show what would be built, copied and activated on each target; change nothing",
        "json": "print the report as JSON on stdout",
        "force": "replace a system profile that crossnix did not deploy",
        "ask_sudo_password": "ask the sudo password of non-root users once (checked on every target first)",
        "vm": "deploy to the running `inv vm --target NAME` of each target",
        "verbose": "print every remote command and its output (plain lines)",
    },
)
async def deploy(
    c: Context,
    project: Project,
    on: list[str] | None = None,
    all: bool = False,
    goal: str | None = None,
    parallel: str | None = None,
    dry_run: bool = False,
    json: bool = False,
    force: bool = False,
    ask_sudo_password: bool = False,
    vm: bool = False,
    verbose: bool = False,
) -> None:
    """Build, copy and activate the selected targets in parallel, with rollback and a fresh-login confirmation."""
    if goal is not None and goal not in get_args(Goal):
        raise CrossnixError(f"--goal must be one of {', '.join(get_args(Goal))}, not {goal!r}")
    jobs = _positive_int("--parallel", parallel)
    targets = _targets(project, on, all, vm=vm)
    password = _sudo_password(targets, ask_sudo_password)
    options = DeployOptions(
        goal=goal,  # type: ignore[arg-type]
        parallel=jobs,
        dry_run=dry_run,
        force=force,
        sudo_password=password,
        run_id=new_run_id(),
    )
    report = await run_deploy(project, targets, options, verbose=verbose)
    _finish(report, json)


@crossnix_task(
    iterable=["on"],
    auto_shortflags=False,
    help={
        "on": SELECT_HELP,
        "all": "roll back every target",
        "generation": "the generation to go back to (default: the one before the current)",
        "goal": "switch (default) | boot | test",
        "json": "print the report as JSON on stdout",
        "ask_sudo_password": "ask the sudo password of non-root users once",
        "vm": "roll back the running `inv vm --target NAME`",
    },
)
async def rollback(
    c: Context,
    project: Project,
    on: list[str] | None = None,
    all: bool = False,
    generation: str | None = None,
    goal: str = "switch",
    json: bool = False,
    ask_sudo_password: bool = False,
    vm: bool = False,
) -> None:
    """Make the previous system generation current again and activate it (verified through a fresh login)."""
    if goal not in ("switch", "boot", "test"):
        raise CrossnixError(f"--goal must be switch, boot or test, not {goal!r}")
    targets = _targets(project, on, all, vm=vm)
    password = _sudo_password(targets, ask_sudo_password)
    state_dir = project.inventory.state_dir
    run_id = new_run_id()
    sink = EventSink(state_dir / "logs" / run_id)
    view = make_view(ui.err)
    sink.listeners.append(view)
    view.start([t.name for t in targets])
    try:
        report = await manual.rollback(
            targets,
            ssh.SshEnv(state_dir=state_dir),
            sink,
            run_id=run_id,
            generation=_positive_int("--generation", generation),
            goal=goal,
            sudo_password=password,
        )
    finally:
        view.stop()
    _finish(report, json)


@crossnix_task(
    iterable=["on"],
    auto_shortflags=False,
    help={"on": SELECT_HELP + " (default: all)", "json": "print JSON", "vm": "ask the running `inv vm`s"},
)
async def status(
    c: Context, project: Project, on: list[str] | None = None, json: bool = False, vm: bool = False
) -> None:
    """Per target: the current and previous system generation, what runs, and whether a reboot is pending."""
    targets = _targets(project, on, not on, vm=vm)
    state_dir = project.inventory.state_dir
    rows = await manual.status(targets, ssh.SshEnv(state_dir=state_dir), History(state_dir / "deployed.json"))
    if json:
        ui.print_json([row.to_json() for row in rows])
    else:
        ui.out.print(manual.status_table(rows))
    if any(not row.reachable for row in rows):
        raise Exit(code=1)
