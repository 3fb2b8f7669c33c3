"""`inv deploy` against a REAL loopback fleet: OpenSSH targets with private /nix stores, real `nix copy`,
real profile switches, a recording fake switch-to-configuration. Every scenario asserts the final
generation (and /run/current-system) of every target."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from crossnix_tasks.deploy.events import Event, Stage
from crossnix_tasks.inventory import CommandCheck, TcpCheck
from tests.deploy_support import FAST, deploy, make_deployment, results, rig_target
from tests.rig.fakesystem import FakeSystemSpec, build_fake_systems, generate_signing_key, sign_paths
from tests.rig.fleet import Fleet

pytestmark = [pytest.mark.rig, pytest.mark.usefixtures("real_nix")]


@pytest.fixture(scope="module")
def systems() -> dict[str, str]:
    """Fake toplevels in the host store: an installed base, two new ones."""
    labels = ["cx-base", "cx-new", "cx-newer"]
    return dict(zip(labels, build_fake_systems([FakeSystemSpec(label) for label in labels]), strict=True))


def read_text(path: str | None) -> str:
    return Path(path or "/nonexistent").read_text() if path and Path(path).exists() else ""


def generation_path(fleet: Fleet, name: str) -> str | None:
    current = [g for g in fleet.profile_generations(name) if g.current]
    return current[0].path if current else None


def assert_runs(fleet: Fleet, name: str, toplevel: str | None) -> None:
    """The profile's current generation and /run/current-system are both ``toplevel``."""
    assert generation_path(fleet, name) == toplevel, fleet.profile_generations(name)
    assert fleet.current_system(name) == toplevel


async def eventually(check: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        await asyncio.sleep(0.2)
    return check()


def on_stage(name: str, stage: Stage, action: Callable[[], None]) -> Callable[[Event], None]:
    def listener(event: Event) -> None:
        if event.target == name and event.kind == "stage" and event.stage == stage:
            action()

    return listener


async def test_all_succeed(rig_fleet: Fleet, systems: dict[str, str], tmp_path: Path) -> None:
    names = ["s1", "s2", "s3"]
    rig_fleet.start_many(names)
    for name in names[:2]:
        rig_fleet.preinstall(name, systems["cx-base"])
    targets = [rig_target(rig_fleet, n) for n in names]
    report = await deploy(tmp_path, targets, {n: systems["cx-new"] for n in names})
    assert results(report) == {n: "ok" for n in names}
    assert report.exit_code == 0
    for name in names:
        assert_runs(rig_fleet, name, systems["cx-new"])
        assert rig_fleet.activation_log(name)[-1].label == "cx-new"
    assert [r.generation for r in report.targets] == [2, 2, 1]
    assert [r.previous_generation for r in report.targets] == [1, 1, None]
    log_file = report.targets[0].log_file
    assert log_file == str(tmp_path / ".crossnix/logs/run/s1.log") and "crossnix-target begin" in read_text(log_file)
    # Deploying the same system again is a no-op switch that stays confirmed past the deadline.
    again = await deploy(tmp_path, targets[:1], {"s1": systems["cx-new"]})
    assert results(again) == {"s1": "ok"}
    await asyncio.sleep(FAST.confirm_timeout + 1.5)
    assert_runs(rig_fleet, "s1", systems["cx-new"])


async def test_unreachable_and_changed_host_key(rig_fleet: Fleet, systems: dict[str, str], tmp_path: Path) -> None:
    rig_fleet.start_many(["ok1", "keyed"])
    for name in ("ok1", "keyed"):
        rig_fleet.preinstall(name, systems["cx-base"])
    rig_fleet.unreachable("gone")
    rig_fleet.rotate_host_key("keyed")
    targets = [rig_target(rig_fleet, n) for n in ("ok1", "gone", "keyed")]
    report = await deploy(tmp_path, targets, {n: systems["cx-new"] for n in ("ok1", "gone", "keyed")})
    assert results(report) == {"ok1": "ok", "gone": "unreachable", "keyed": "refused"}
    assert report.exit_code == 1
    assert_runs(rig_fleet, "ok1", systems["cx-new"])
    assert_runs(rig_fleet, "keyed", systems["cx-base"])
    assert not rig_fleet.has_path("keyed", systems["cx-new"]), "nothing may be copied to a host with a changed key"
    keyed = next(t for t in report.targets if t.target == "keyed")
    assert "host key verification failed" in keyed.message and keyed.stage == Stage.CONNECT
    assert any("known_hosts" in line for line in keyed.log_tail)


async def test_failed_activation_rolls_back(rig_fleet: Fleet, systems: dict[str, str], tmp_path: Path) -> None:
    rig_fleet.start_many(["good", "bad"])
    for name in ("good", "bad"):
        rig_fleet.preinstall(name, systems["cx-base"])
    rig_fleet.set_activation_behaviour("bad", "fail", label="cx-new")
    targets = [rig_target(rig_fleet, n) for n in ("good", "bad")]
    report = await deploy(tmp_path, targets, {n: systems["cx-new"] for n in ("good", "bad")})
    assert results(report) == {"good": "ok", "bad": "rolled-back"}
    assert_runs(rig_fleet, "good", systems["cx-new"])
    assert_runs(rig_fleet, "bad", systems["cx-base"])
    assert [(r.label, r.goal) for r in rig_fleet.activation_log("bad")][-2:] == [("cx-new", "switch"), ("cx-base", "switch")]
    bad = next(t for t in report.targets if t.target == "bad")
    assert "failed (exit status 1)" in bad.message and bad.generation == 1
    assert any("behaviour=fail" in line for line in bad.log_tail) or "exit status 1" in bad.message


async def test_failed_health_check_rolls_back(rig_fleet: Fleet, systems: dict[str, str], tmp_path: Path) -> None:
    rig_fleet.start_many(["hc-ok", "hc-bad"])
    for name in ("hc-ok", "hc-bad"):
        rig_fleet.preinstall(name, systems["cx-base"])
    port = rig_fleet.target("hc-ok").port
    good = dataclasses.replace(FAST, health_checks=(CommandCheck(command="test -e /run/current-system"), TcpCheck(tcp=port)))
    bad = dataclasses.replace(FAST, health_checks=(CommandCheck(command="exit 3", timeout=1.0, interval=0.3),))
    targets = [rig_target(rig_fleet, "hc-ok", deploy=good), rig_target(rig_fleet, "hc-bad", deploy=bad)]
    report = await deploy(tmp_path, targets, {"hc-ok": systems["cx-new"], "hc-bad": systems["cx-new"]})
    assert results(report) == {"hc-ok": "ok", "hc-bad": "rolled-back"}
    assert_runs(rig_fleet, "hc-ok", systems["cx-new"])
    assert_runs(rig_fleet, "hc-bad", systems["cx-base"])
    assert "command `exit 3` still failing" in report.targets[1].message


async def test_connection_cut_during_activation(rig_fleet: Fleet, systems: dict[str, str], tmp_path: Path) -> None:
    """Both targets lose their SSH connections while switch-to-configuration runs (detached, it survives).
    'lost' refuses new logins too: nobody confirms, so the target's own timer restores the old generation.
    'back' accepts a fresh login: crossnix finds the finished switch, verifies it and confirms it."""
    rig_fleet.start_many(["lost", "back"])
    for name in ("lost", "back"):
        rig_fleet.preinstall(name, systems["cx-base"])
        rig_fleet.set_activation_behaviour(name, "slow", label="cx-new", hang_seconds=1.5)

    def cut(name: str, refuse: bool) -> Callable[[], None]:
        def action() -> None:
            if refuse:
                rig_fleet.refuse_logins(name)
            assert rig_fleet.drop_connections(name) >= 1

        return action

    settings = dataclasses.replace(FAST, activation_timeout=4)
    targets = [rig_target(rig_fleet, n, deploy=settings) for n in ("lost", "back")]
    deployment = make_deployment(tmp_path, targets, {n: systems["cx-new"] for n in ("lost", "back")})
    for name, refuse in (("lost", True), ("back", False)):
        # 0.4 s after the activation stage begins, switch-to-configuration is running (it takes 1.5 s).
        later = cut(name, refuse)
        deployment.sink.listeners.append(
            on_stage(name, Stage.ACTIVATE, lambda later=later: asyncio.get_running_loop().call_later(0.4, later))
        )
    report = await deployment.run()
    assert results(report) == {"lost": "failed", "back": "ok"}
    assert "lost contact during the activation" in report.targets[0].message
    # The switch itself completed on both (it ran detached from the dropped session).
    assert await eventually(lambda: [r.label for r in rig_fleet.activation_log("lost")] == ["cx-base", "cx-new", "cx-base"], 10)
    assert_runs(rig_fleet, "lost", systems["cx-base"])
    # 'back' stays on the new generation past its rollback deadline.
    await asyncio.sleep(FAST.confirm_timeout + 1.5)
    assert_runs(rig_fleet, "back", systems["cx-new"])
    assert [r.label for r in rig_fleet.activation_log("back")] == ["cx-base", "cx-new"]


async def test_ctrl_c_finishes_or_rolls_back_in_flight(rig_fleet: Fleet, systems: dict[str, str], tmp_path: Path) -> None:
    """Ctrl-C while two of four targets activate: those two finish and are confirmed, the two queued ones
    are left untouched. A second run interrupted twice rolls its in-flight activations back."""
    names = ["c1", "c2", "c3", "c4"]
    rig_fleet.start_many(names)
    for name in names:
        rig_fleet.preinstall(name, systems["cx-base"])
        rig_fleet.set_activation_behaviour(name, "slow", hang_seconds=1.0)
    targets = [rig_target(rig_fleet, n) for n in names]
    active: set[str] = set()

    def listener(event: Event) -> None:
        if event.kind == "stage" and event.stage == Stage.ACTIVATE:
            active.add(event.target)
            if len(active) == 2:
                asyncio.get_running_loop().call_later(0.3, deployment.interrupt)

    deployment = make_deployment(tmp_path, targets, {n: systems["cx-new"] for n in names}, listener=listener, parallel=2)
    report = await deployment.run()
    assert report.exit_code == 130
    outcome = results(report)
    assert sorted(outcome.values()) == ["interrupted", "interrupted", "ok", "ok"], outcome
    for name in names:
        expected = systems["cx-new"] if outcome[name] == "ok" else systems["cx-base"]
        assert_runs(rig_fleet, name, expected)

    # Twice: the in-flight activations are rolled back; nothing is left half-switched.
    active.clear()

    def twice(event: Event) -> None:
        if event.kind == "stage" and event.stage == Stage.ACTIVATE:
            active.add(event.target)
            if len(active) == 2:
                loop = asyncio.get_running_loop()
                loop.call_later(0.3, second.interrupt)
                loop.call_later(0.4, second.interrupt)

    second = make_deployment(tmp_path, targets, {n: systems["cx-newer"] for n in names}, listener=twice, parallel=2)
    report = await second.run()
    outcome = results(report)
    assert report.exit_code == 130
    assert sorted(outcome.values()) == ["interrupted", "interrupted", "rolled-back", "rolled-back"], outcome
    for name in names:
        gens = rig_fleet.profile_generations(name)
        assert generation_path(rig_fleet, name) == rig_fleet.current_system(name), gens
        assert systems["cx-newer"] not in (generation_path(rig_fleet, name), rig_fleet.current_system(name))


async def test_sudo_wrong_password_refused_before_any_change(
    rig_fleet: Fleet, systems: dict[str, str], tmp_path: Path
) -> None:
    rig_fleet.start("sudoer", user="cxdeployer", sudo_password="right horse")
    rig_fleet.preinstall("sudoer", systems["cx-base"])
    target = rig_target(rig_fleet, "sudoer")
    before = rig_fleet.store_entries("sudoer")
    report = await deploy(tmp_path, [target], {"sudoer": systems["cx-new"]}, sudo_password="wrong battery")
    assert results(report) == {"sudoer": "refused"}
    assert "sudo refused the password" in report.targets[0].message
    assert rig_fleet.store_entries("sudoer") == before
    assert_runs(rig_fleet, "sudoer", systems["cx-base"])
    log = read_text(report.targets[0].log_file)
    assert "sudo -k -S -p '' true" in log
    assert "wrong battery" not in log and "right horse" not in log
    # Without a password at all, sudo -n is refused the same way.
    report = await deploy(tmp_path, [target], {"sudoer": systems["cx-new"]})
    assert results(report) == {"sudoer": "refused"} and "needs a password" in report.targets[0].message


async def test_sudo_user_deploys_signed_closure(rig_fleet: Fleet, tmp_path: Path) -> None:
    """A non-root user goes through the target's nix-daemon as an untrusted client: the copy needs the
    fleet signature, activation goes through sudo with the password."""
    key = generate_signing_key(tmp_path / "keys", "crossnix-test-fleet-1")
    new = build_fake_systems([FakeSystemSpec("cx-signed", nonce=str(time.time_ns()))])[0]
    rig_fleet.start("signed", user="cxsigner", sudo_password="pw-signed", nix_daemon=True,
                    trusted_public_keys=[key.public_key])
    target = rig_target(rig_fleet, "signed")

    async def sign(paths: list[str]) -> None:
        await asyncio.to_thread(sign_paths, key, paths)

    report = await deploy(tmp_path, [target], {"signed": new}, sign=sign, sudo_password="pw-signed")
    assert results(report) == {"signed": "ok"}, report.targets[0].log_tail
    assert_runs(rig_fleet, "signed", new)


async def test_unknown_profile_refused_unless_forced(rig_fleet: Fleet, systems: dict[str, str], tmp_path: Path) -> None:
    rig_fleet.start("foreign")
    rig_fleet.preinstall("foreign", systems["cx-base"])
    target = rig_target(rig_fleet, "foreign")
    deployment = make_deployment(tmp_path, [target], {"foreign": systems["cx-new"]})
    deployment._locally_known = None  # the deployer has never seen cx-base
    report = await deployment.run()
    assert results(report) == {"foreign": "refused"} and "did not deploy" in report.targets[0].message
    assert_runs(rig_fleet, "foreign", systems["cx-base"])
    forced = make_deployment(tmp_path, [target], {"foreign": systems["cx-new"]}, force=True)
    forced._locally_known = None
    assert results(await forced.run()) == {"foreign": "ok"}
    assert_runs(rig_fleet, "foreign", systems["cx-new"])


async def test_goals_test_boot_and_dry_run(rig_fleet: Fleet, systems: dict[str, str], tmp_path: Path) -> None:
    rig_fleet.start_many(["g-test", "g-boot", "g-dry"])
    for name in ("g-test", "g-boot", "g-dry"):
        rig_fleet.preinstall(name, systems["cx-base"])
    report = await deploy(tmp_path, [rig_target(rig_fleet, "g-test")], {"g-test": systems["cx-new"]}, goal="test")
    assert results(report) == {"g-test": "ok"}
    assert generation_path(rig_fleet, "g-test") == systems["cx-base"]
    assert rig_fleet.current_system("g-test") == systems["cx-new"]
    report = await deploy(tmp_path, [rig_target(rig_fleet, "g-boot")], {"g-boot": systems["cx-new"]}, goal="boot")
    assert results(report) == {"g-boot": "ok"}
    assert generation_path(rig_fleet, "g-boot") == systems["cx-new"]
    assert rig_fleet.current_system("g-boot") == systems["cx-base"]
    report = await deploy(tmp_path, [rig_target(rig_fleet, "g-dry")], {"g-dry": systems["cx-new"]}, dry_run=True)
    assert results(report) == {"g-dry": "planned"}
    plan = report.targets[0].plan or {}
    assert plan["copy"]["paths"] == 1 and plan["copy"]["missing"] == [systems["cx-new"]]
    assert not rig_fleet.has_path("g-dry", systems["cx-new"])
    assert_runs(rig_fleet, "g-dry", systems["cx-base"])

