"""A Python model of deploy/target.sh for SimFleet targets (asyncssh in-process servers, no shell, no Nix).

Used by the orchestration tests and the 300+ target benchmark: the SSH layer is real, the target is a dict.
"""

from __future__ import annotations

import asyncio
import shlex
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from crossnix_tasks import ssh
from crossnix_tasks.build import SystemsBuilt
from crossnix_tasks.deploy.events import EventSink
from crossnix_tasks.deploy.pipeline import CopyRequest, Deployment, DeployOptions
from crossnix_tasks.inventory import DeploySettings, Target
from crossnix_tasks.remote import SCRIPT_NAME, TARGET_SCRIPT
from tests.rig.simfleet import SimCommand, SimFleet, SimReply, SimRequest

PROFILE = "/nix/var/nix/profiles/system"
_QUOTED_SCRIPT = shlex.quote(TARGET_SCRIPT)


def initial_state(name: str) -> dict[str, Any]:
    return {"generations": [], "current_gen": None, "current_system": "", "runs": {}, "fail": False}


def _report(state: dict[str, Any], run: dict[str, Any] | None) -> str:
    gens: list[str] = state["generations"]
    profile = gens[state["current_gen"] - 1] if state["current_gen"] else ""
    lines = [
        f"status {run['status'] if run else 'starting'}",
        f"outcome {run.get('outcome', '') if run else ''}",
        f"current {state['current_system']}",
        f"profile {profile}",
    ]
    return "\n".join(lines) + "\n"


def _state_text(state: dict[str, Any]) -> str:
    gens: list[str] = state["generations"]
    current = state["current_gen"]
    lines = [
        "systemd 0",
        f"profile-link {f'system-{current}-link' if current else ''}",
        f"profile {gens[current - 1] if current else ''}",
        f"current {state['current_system']}",
        "booted ",
    ]
    lines += [f"generation {PROFILE}-{i}-link {path}" for i, path in enumerate(gens, start=1)]
    return "\n".join(lines) + "\n"


async def _script(req: SimRequest) -> SimReply:
    # shlex.split of the 8 KiB script text would dominate the benchmark: split around it instead.
    head, script, tail = req.command.partition(_QUOTED_SCRIPT)
    if not script or shlex.split(head) != ["sh", "-c", 'eval "$1"', SCRIPT_NAME]:
        return SimReply(127, b"", b"not the crossnix target script\n")
    action, *args = shlex.split(tail)
    state = req.state
    runs: dict[str, dict[str, Any]] = state["runs"]
    if action == "state":
        return SimReply(0, _state_text(state))
    if action == "begin":
        run_dir, _profile, toplevel, goal = args[:4]
        run = {"prev_gen": state["current_gen"], "prev_current": state["current_system"], "toplevel": toplevel}
        runs[run_dir] = run
        if goal in ("switch", "boot"):
            state["generations"].append(toplevel)
            state["current_gen"] = len(state["generations"])
        if state["fail"]:
            run["status"] = "1"
            run["outcome"] = "rolled-back"
            state["current_gen"] = run["prev_gen"]
        else:
            if goal in ("switch", "test"):
                state["current_system"] = toplevel
            run["status"] = "0"
        return SimReply(0, "crossnix: activation started\n")
    run = runs.get(args[0]) if args else None
    if run is None:
        return SimReply(2, b"", b"no such activation\n")
    if action in ("wait", "report"):
        return SimReply(0, _report(state, run))
    if action == "hold":
        return SimReply(3 if run.get("outcome") else 0, _report(state, run))
    if action == "decide":
        if run.get("outcome"):
            return SimReply(3, _report(state, run))
        run["outcome"] = args[1]
        return SimReply(0, _report(state, run))
    if action == "rollback":
        if run.get("outcome"):
            return SimReply(3, _report(state, run))
        state["current_gen"] = run["prev_gen"]
        state["current_system"] = run["prev_current"]
        run["outcome"] = "rolled-back"
        return SimReply(0, _report(state, run))
    return SimReply(64, b"", f"unknown action {action}\n".encode())


HANDLERS: dict[str, Any] = {
    r"(?s)sh -c .*": SimCommand(_script),
    r"test -f \S+/nixos-version": lambda req: SimReply(0),
    r"test -d /run/systemd/system": lambda req: SimReply(1),
}


def sim_targets(sim: SimFleet, settings: DeploySettings) -> list[Target]:
    return [
        Target(
            name=t.name,
            board="generic-uefi",
            system="x86_64-linux",
            host=t.host,
            port=t.port,
            identity_file=sim.client_key_path,
            known_hosts=sim.known_hosts,
            deploy=settings,
        )
        for t in sim.targets.values()
    ]


async def no_copy(request: CopyRequest, log: Callable[[str], None]) -> None:
    log(f"(simulated) copy of {request.toplevel}")


def sim_deployment(
    sim: SimFleet,
    tmp: Path,
    toplevel: str,
    *,
    settings: DeploySettings,
    copy: Callable[[CopyRequest, Callable[[str], None]], Awaitable[None]] = no_copy,
    log_dir: Path | None = None,
    adjust: Callable[[list[Target]], list[Target]] | None = None,
    **options: Any,
) -> Deployment:
    targets = sim_targets(sim, settings)
    if adjust is not None:
        targets = adjust(targets)

    async def build(selected: Sequence[Target], log: Callable[[str], None]) -> SystemsBuilt:
        await asyncio.sleep(0)
        return SystemsBuilt({t.name: toplevel for t in selected}, {})

    return Deployment(
        targets,
        ssh_env=ssh.SshEnv(state_dir=tmp / ".crossnix", home=tmp / "home", connect_timeout=10),
        build=build,
        copy=copy,
        options=DeployOptions(**options),
        sink=EventSink(log_dir),
    )
