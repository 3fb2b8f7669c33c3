"""`inv demo`: the README's main job on a machine without internet access."""

from __future__ import annotations

import asyncio

from invoke.context import Context
from invoke.exceptions import Exit

from crossnix_tasks import fleetdemo, ui
from crossnix_tasks.commands import build, inventory
from crossnix_tasks.project import Project
from crossnix_tasks.taskutil import crossnix_task


@crossnix_task()
def demo(c: Context, project: Project) -> None:
    """Run the embedded demo: the boards, the shipped inventory, a build on the offline nixpkgs stand-in, and a
    deploy to a local fleet of loopback targets."""
    ui.out.rule("installed boards")
    inventory.boards.body(c)
    ui.out.rule(f"targets of {project.inventory_path}")
    inventory.targets.body(c)
    inventory.check_config.body(c)
    ui.out.rule("init, build and image on the offline nixpkgs stand-in (NOT nixpkgs)")
    build.standin_demo(project)
    ui.out.rule("deploy to a local fleet of loopback targets (offline nixpkgs stand-in, NOT nixpkgs)")
    if not asyncio.run(fleetdemo.run()):
        raise Exit(code=1)
