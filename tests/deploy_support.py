"""Helpers for the deploy tests: rig targets as crossnix Targets, and a Deployment wired to them."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from crossnix_tasks import ssh
from crossnix_tasks.build import SystemsBuilt
from crossnix_tasks.deploy.events import Event, EventSink
from crossnix_tasks.deploy.history import History
from crossnix_tasks.deploy.pipeline import Deployment, DeployOptions, nix_copy
from crossnix_tasks.deploy.report import DeployReport
from crossnix_tasks.inventory import DeploySettings, Target
from tests.rig.fleet import Fleet

# The smallest confirm_timeout boards.toml accepts: short tests, with room for a loaded CI machine.
FAST = DeploySettings(confirm_timeout=5, activation_timeout=20)


def exists(path: str) -> bool:
    return Path(path).exists()


def rig_target(fleet: Fleet, name: str, **changes: Any) -> Target:
    t = fleet.target(name)
    deploy = changes.pop("deploy", FAST)
    target = Target(
        name=name,
        board="generic-uefi",
        system="x86_64-linux",
        host=t.host,
        port=t.port,
        user=t.user,
        identity_file=fleet.client_key,
        known_hosts=fleet.known_hosts,
        deploy=deploy,
    )
    return dataclasses.replace(target, **changes)


def make_deployment(
    tmp: Path,
    targets: Sequence[Target],
    toplevels: Mapping[str, str],
    *,
    listener: Callable[[Event], None] | None = None,
    sign: Any = None,
    home: Path | None = None,
    **options: Any,
) -> Deployment:
    state = tmp / ".crossnix"
    env = ssh.SshEnv(state_dir=state, home=home or tmp / "home", connect_timeout=5)
    sink = EventSink(state / "logs" / "run")
    if listener is not None:
        sink.listeners.append(listener)

    async def build(selected: Sequence[Target], log: Callable[[str], None]) -> SystemsBuilt:
        return SystemsBuilt({t.name: toplevels[t.name] for t in selected if t.name in toplevels}, {})

    async def locally_known(path: str) -> bool:
        return exists(path)

    return Deployment(
        targets,
        ssh_env=env,
        build=build,
        copy=nix_copy,
        options=DeployOptions(**options),
        sink=sink,
        sign=sign,
        history=History(state / "deployed.json"),
        locally_known=locally_known,
    )


async def deploy(tmp: Path, targets: Sequence[Target], toplevels: Mapping[str, str], **kw: Any) -> DeployReport:
    return await make_deployment(tmp, targets, toplevels, **kw).run()


def results(report: DeployReport) -> dict[str, str]:
    return {t.target: str(t.result) for t in report.targets}
