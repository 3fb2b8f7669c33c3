"""``inv demo``'s deploy part: a real ``inv deploy`` to a small fleet of loopback targets it starts itself.

No internet and no hardware needed: the targets are ``sshd`` processes on 127.0.0.1, each with its own empty
``/nix`` (crossnix_tasks.localfleet); the systems are built by the local Nix from the **offline nixpkgs
stand-in** (tests/standin, NOT nixpkgs), whose ``switch-to-configuration`` records the switch and points
``/run/current-system`` at the new system instead of activating anything. Everything else is the real
pipeline: fleet-key signing, ``nix copy`` over SSH, sanity checks, detached activation with magic rollback
armed, verification through a fresh login, health checks, confirmation, automatic rollback of a failure.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from crossnix_tasks import nix, scaffold, ui
from crossnix_tasks.deploy import manual
from crossnix_tasks.deploy.history import History
from crossnix_tasks.deploy.pipeline import DeployOptions, new_run_id
from crossnix_tasks.deploy.report import DeployReport, print_summary
from crossnix_tasks.errors import CrossnixError
from crossnix_tasks.localfleet import LocalFleet, LocalTarget, free_port, unavailable_reason
from crossnix_tasks.project import Project
from crossnix_tasks.ssh import SshEnv

STANDIN_SAYS = (
    "offline nixpkgs stand-in in use (tests/standin, NOT nixpkgs): the systems are small test artefacts whose "
    "switch-to-configuration records the switch and points /run/current-system at them"
)

#: (name, board, system): one target per built-in board, like the shipped boards.toml.
FLEET = (
    ("kitchen-pi", "rpi4", "aarch64-linux"),
    ("garage-riscv", "hifive-unmatched", "riscv64-linux"),
    ("nas", "generic-uefi", "x86_64-linux"),
)
FAILING = "garage-riscv"


def boards_toml(fleet: LocalFleet, targets: Sequence[LocalTarget], failing_check_port: int | None = None) -> str:
    lines = [
        "# inv demo: loopback targets started by crossnix (sshd on 127.0.0.1, a private /nix each)",
        "[defaults]",
        'host = "127.0.0.1"',
        f'identity_file = "{fleet.client_key}"',
        f'known_hosts = "{fleet.known_hosts}"',
        'modules = ["hosts/common.nix", "hosts/release.nix"]',
        'tags = ["demo"]',
        "",
        "[defaults.deploy]",
        "confirm_timeout = 10",
        "",
        "[[defaults.deploy.health_checks]]",
        'command = "test -e /run/current-system"',
        "timeout = 10",
        "",
    ]
    for (name, board, system), target in zip(FLEET, targets, strict=True):
        lines += [f"[targets.{name}]", f'board = "{board}"', f'system = "{system}"', f"port = {target.port}", ""]
        lines += [f"[[targets.{name}.deploy.health_checks]]", f"tcp = {target.port}", "timeout = 10", ""]
        if name == FAILING and failing_check_port is not None:
            lines += [
                "# release 2: a service that never comes up (nothing listens on this loopback port)",
                f"[[targets.{name}.deploy.health_checks]]",
                f"tcp = {failing_check_port}",
                "timeout = 3",
                "interval = 1",
                "",
            ]
    return "\n".join(lines)


def release_module(number: int) -> str:
    return (
        "# The demo's 'change': a file in /etc that differs per release.\n"
        "{ ... }:\n{\n"
        f'  environment.etc."crossnix-demo-release".text = "release {number}\\n";\n'
        "}\n"
    )


async def _deploy(project: Project, title: str) -> DeployReport:
    from crossnix_tasks.commands.deploy import run_deploy

    ui.out.rule(title)
    ui.out.print("$ inv deploy --on @demo", markup=False)
    targets = list(project.inventory.targets.values())
    report = await run_deploy(project, targets, DeployOptions(run_id=new_run_id()))
    print_summary(report, ui.out)
    return report


async def _status(project: Project) -> None:
    ui.out.print("$ inv status", markup=False)
    state_dir = project.inventory.state_dir
    rows = await manual.status(
        list(project.inventory.targets.values()), SshEnv(state_dir=state_dir), History(state_dir / "deployed.json")
    )
    ui.out.print(manual.status_table(rows))


async def run(workdir: Path | None = None) -> bool:
    """The whole deploy demo; True when every step did what the demo expects."""
    reason = unavailable_reason()
    if reason:
        ui.warn(f"skipping the deploy demo: {reason}")
        return True
    if not (scaffold.STANDIN / "nixpkgs" / "flake.nix").is_file():
        ui.warn("skipping the deploy demo: the offline nixpkgs stand-in (tests/standin) is not in this checkout")
        return True
    os.environ["NIX_CONFIG"] = "\n".join(filter(None, [os.environ.get("NIX_CONFIG", ""), "substituters ="]))
    root = Path(tempfile.mkdtemp(prefix="crossnix-fleet-demo-")) if workdir is None else workdir
    ui.out.print(STANDIN_SAYS, markup=False, soft_wrap=True)
    try:
        async with LocalFleet(root / "fleet") as fleet:
            targets = await fleet.start([name for name, _, _ in FLEET])
            project_dir = root / "project"
            board_objects = []
            project = Project(inventory_path=project_dir / "boards.toml")
            for _, board, _ in FLEET:
                board_objects.append(project.plugins.board(board))
            scaffold.scaffold(project_dir, board_objects, scaffold.standin_overrides())
            (project_dir / "boards.toml").write_text(boards_toml(fleet, targets))
            (project_dir / "hosts" / "release.nix").write_text(release_module(1))
            await nix.flake_lock(f"path:{project_dir}")
            ui.out.print(f"project: {project_dir}", markup=False, soft_wrap=True)
            for (name, board, system), target in zip(FLEET, targets, strict=True):
                ui.out.print(
                    f"  {name:<13} {board} ({system}) → sshd on 127.0.0.1:{target.port}, its own /nix",
                    markup=False,
                )
            project = Project(inventory_path=project_dir / "boards.toml")
            first = await _deploy(project, "deploy release 1 to the local fleet")
            await _status(project)

            (project_dir / "hosts" / "release.nix").write_text(release_module(2))
            (project_dir / "boards.toml").write_text(boards_toml(fleet, targets, free_port()))
            project = Project(inventory_path=project_dir / "boards.toml")
            ui.out.print(
                f"release 2: hosts/release.nix changed, and {FAILING} gets a health check that cannot pass (a TCP "
                "port nothing listens on), to show verification and the automatic rollback; the other targets "
                "are not affected",
                markup=False,
                soft_wrap=True,
            )
            second = await _deploy(project, "deploy release 2 (garage-riscv fails its health check on purpose)")
            await _status(project)
            ui.out.print(
                f"stopping the {len(targets)} targets and removing {root}",
                markup=False,
                soft_wrap=True,
            )
    except CrossnixError as exc:
        ui.err.print(f"[red]deploy demo failed:[/red] {exc.render()}", markup=True, soft_wrap=True)
        return False
    finally:
        if workdir is None:
            await asyncio.to_thread(shutil.rmtree, root, True)
    results = {t.target: str(t.result) for t in second.targets}
    expected = {name: ("rolled-back" if name == FAILING else "ok") for name, _, _ in FLEET}
    good = first.exit_code == 0 and results == expected
    if good:
        ui.out.print(
            f"deploy demo: release 1 on {len(FLEET)} targets, release 2 on {len(FLEET) - 1}, and {FAILING} "
            "rolled back to release 1 as intended. " + STANDIN_SAYS.split(":")[0] + ".",
            markup=False,
            soft_wrap=True,
        )
    else:
        ui.err.print(f"deploy demo: unexpected results {results} (first run exit {first.exit_code})", markup=False)
    return good
