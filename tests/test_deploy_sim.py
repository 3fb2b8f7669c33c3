"""The pipeline's orchestration against 80 simulated targets (real SSH, modelled target script)."""

from __future__ import annotations

import shlex
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from crossnix_tasks.deploy.events import Event, Result, Stage
from crossnix_tasks.inventory import DeploySettings
from tests.rig.simfleet import SimFleet
from tests.simtarget import HANDLERS, initial_state, sim_deployment

TOPLEVEL = "/nix/store/00000000000000000000000000000000-nixos-system-sim"


async def test_eighty_targets_with_stage_limits(
    rig_sim_fleet: Callable[..., Awaitable[SimFleet]], tmp_path: Path, monkeypatch: Any
) -> None:
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    sim = await rig_sim_fleet(80, handlers=HANDLERS, initial_state=initial_state)
    sim.targets["sim003"].state["fail"] = True
    await sim.stop_target("sim007")
    deployment = sim_deployment(sim, tmp_path, TOPLEVEL, settings=DeploySettings(), parallel=8)
    active: set[str] = set()
    peak = 0

    def listener(event: Event) -> None:
        nonlocal peak
        if event.kind == "stage" and event.stage == Stage.ACTIVATE:
            active.add(event.target)
            peak = max(peak, len(active))
        elif event.kind == "result":
            active.discard(event.target)

    deployment.sink.listeners.append(listener)
    report = await deployment.run()
    results = {t.target: t.result for t in report.targets}
    assert results.pop("sim003") == Result.ROLLED_BACK
    assert results.pop("sim007") == Result.UNREACHABLE
    assert set(results.values()) == {Result.OK}
    assert 1 < peak <= 8
    assert report.exit_code == 1
    for name, target in sim.targets.items():
        if name in ("sim003", "sim007"):
            assert target.state["generations"] in ([], [TOPLEVEL]) and target.state["current_system"] == ""
        else:
            assert target.state["current_system"] == TOPLEVEL and target.state["current_gen"] == 1
            actions = [shlex.split(c)[5] for c in target.commands if c.startswith("sh -c")]
            assert actions == ["state", "begin", "wait", "state", "decide"]
    # one work connection per target plus the fresh confirmation login
    assert sim.stats.connections_total == 2 * 78 + 2


async def test_a_failed_build_fails_every_target_and_is_noted(
    rig_sim_fleet: Callable[..., Awaitable[SimFleet]], tmp_path: Path, monkeypatch: Any
) -> None:
    from crossnix_tasks.errors import CrossnixError

    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    sim = await rig_sim_fleet(3, handlers=HANDLERS, initial_state=initial_state)
    deployment = sim_deployment(sim, tmp_path, TOPLEVEL, settings=DeploySettings(), log_dir=tmp_path / "logs")

    async def broken(targets: Any, log: Any) -> Any:
        log("error: attribute 'nope' missing")
        raise CrossnixError("evaluation failed: attribute 'nope' missing\nmore detail")

    deployment._build_fn = broken
    report = await deployment.run()
    assert {t.result for t in report.targets} == {Result.FAILED}
    assert {t.message for t in report.targets} == {"build failed: evaluation failed: attribute 'nope' missing"}
    assert report.notes == [f"build failed: evaluation failed: attribute 'nope' missing (see {tmp_path}/logs/build.log)"]
    assert "more detail" in (tmp_path / "logs" / "build.log").read_text()
    assert all(t.state["generations"] == [] for t in sim.targets.values())


async def test_a_target_failing_before_its_sudo_check_does_not_block_the_others(
    rig_sim_fleet: Callable[..., Awaitable[SimFleet]], tmp_path: Path, monkeypatch: Any
) -> None:
    import asyncio
    import dataclasses

    from tests.rig.simfleet import SimCommand, SimReply

    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    handlers = {r"sudo -k -S -p '' true": SimCommand(lambda req: SimReply(0), reads_stdin=True), **HANDLERS}
    sim = await rig_sim_fleet(2, handlers=handlers, initial_state=initial_state, username="deploy")

    def non_root(targets: list[Any]) -> list[Any]:
        first, second = targets
        return [dataclasses.replace(first, host=None, user="deploy"), dataclasses.replace(second, user="deploy")]

    deployment = sim_deployment(
        sim, tmp_path, TOPLEVEL, settings=DeploySettings(), sudo_password="pw", adjust=non_root
    )
    report = await asyncio.wait_for(deployment.run(), 30)
    results = {t.target: t.result for t in report.targets}
    # sim001 passed its sudo check and went on (its root commands then fail: the simulation has no sudo)
    assert results["sim000"] == Result.UNREACHABLE and report.targets[1].stage != "connect"


def _slow(action: str, seconds: float) -> Any:
    """The modelled target script, with ``action`` taking ``seconds`` (a slow nix-env, a slow restore)."""
    import asyncio

    from tests.rig.simfleet import SimCommand
    from tests.simtarget import _QUOTED_SCRIPT, _script

    async def handler(req: Any) -> Any:
        if shlex.split(req.command.partition(_QUOTED_SCRIPT)[2])[:1] == [action]:
            await asyncio.sleep(seconds)
        return await _script(req)

    return {r"(?s)sh -c .*": SimCommand(handler), **{k: v for k, v in HANDLERS.items() if not k.startswith("(?s)")}}


def _actions(commands: list[str]) -> list[str]:
    return [shlex.split(c)[5] for c in commands if c.startswith("sh -c") and "crossnix" in c[:40]]


async def test_ctrl_c_twice_while_the_activation_starts_rolls_back_after_it_started(
    rig_sim_fleet: Callable[..., Awaitable[SimFleet]], tmp_path: Path, monkeypatch: Any
) -> None:
    """The second Ctrl-C lands while `begin` still runs: the rollback must come after it, not race it (a
    rollback before `begin` finds nothing to settle, then `begin` activates the new system unopposed)."""
    import asyncio

    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    sim = await rig_sim_fleet(1, handlers=_slow("begin", 0.8), initial_state=initial_state)
    deployment = sim_deployment(sim, tmp_path, TOPLEVEL, settings=DeploySettings())

    def listener(event: Event) -> None:
        if event.kind == "stage" and event.stage == Stage.ACTIVATE:
            loop = asyncio.get_running_loop()
            loop.call_later(0.2, deployment.interrupt)
            loop.call_later(0.3, deployment.interrupt)

    deployment.sink.listeners.append(listener)
    report = await asyncio.wait_for(deployment.run(), 30)
    (target,) = sim.targets.values()
    assert report.targets[0].result == Result.ROLLED_BACK, report.targets[0].message
    actions = _actions(target.commands)
    assert actions.index("rollback") > actions.index("begin"), actions
    assert target.state["current_system"] == "" and target.state["current_gen"] is None


async def test_ctrl_c_twice_leaves_a_rollback_in_progress_alone(
    rig_sim_fleet: Callable[..., Awaitable[SimFleet]], tmp_path: Path, monkeypatch: Any
) -> None:
    """A failed health check is being rolled back when Ctrl-C comes twice: that rollback goes on (one
    rollback, its outcome reported), it is not cut off and started over."""
    import asyncio

    from crossnix_tasks.inventory import CommandCheck

    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    sim = await rig_sim_fleet(1, handlers=_slow("rollback", 1.0), initial_state=initial_state)
    settings = DeploySettings(health_checks=(CommandCheck(command="false", timeout=0.2, interval=0.1),))
    deployment = sim_deployment(sim, tmp_path, TOPLEVEL, settings=settings)

    def listener(event: Event) -> None:
        if event.kind == "stage" and event.stage == Stage.ROLLBACK:
            loop = asyncio.get_running_loop()
            loop.call_later(0.2, deployment.interrupt)
            loop.call_later(0.3, deployment.interrupt)

    deployment.sink.listeners.append(listener)
    report = await asyncio.wait_for(deployment.run(), 30)
    (target,) = sim.targets.values()
    assert report.targets[0].result == Result.ROLLED_BACK, report.targets[0].message
    assert _actions(target.commands).count("rollback") == 1, target.commands
    assert target.state["current_system"] == "" and target.state["current_gen"] is None
