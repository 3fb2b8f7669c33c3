"""`inv deploy`, `inv status`, `inv rollback` as a user runs them: flags, exit codes, JSON, key files."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from crossnix_tasks.build import SystemsBuilt
from crossnix_tasks.commands import deploy as deploy_cmd
from crossnix_tasks.inventory import Target
from tests.conftest import run_cli
from tests.rig.fakesystem import FakeSystemSpec, build_fake_systems
from tests.rig.fleet import Fleet


def boards_toml(fleet: Fleet, names: Sequence[str]) -> str:
    lines = [
        "[defaults]",
        'board = "generic-uefi"',
        'system = "x86_64-linux"',
        'host = "127.0.0.1"',
        f'identity_file = "{fleet.client_key}"',
        f'known_hosts = "{fleet.known_hosts}"',
        "[defaults.deploy]",
        "confirm_timeout = 5",
    ]
    for name in names:
        lines += [f"[targets.{name}]", f"port = {fleet.target(name).port}", 'tags = ["lab"]']
    return "\n".join(lines) + "\n"


def test_selection_and_flags_are_checked(project_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (project_dir / "boards.toml").write_text('[targets.a]\nboard = "rpi4"\nhost = "a.lan"\n')
    assert run_cli("deploy") == 2
    assert "choose the targets: --all, or --on" in capsys.readouterr().err
    assert run_cli("deploy", "--on", "nope") == 2
    assert "no target matches 'nope'" in capsys.readouterr().err
    assert run_cli("deploy", "--all", "--goal", "reboot") == 1
    assert "--goal must be one of switch, boot, test, dry-activate" in capsys.readouterr().err
    assert run_cli("deploy", "--all", "--parallel", "zero") == 1
    assert "--parallel takes a positive whole number" in capsys.readouterr().err
    assert run_cli("rollback", "--on", "a", "--goal", "dry-activate") == 1
    assert run_cli("deploy", "--all", "--vm") == 1
    assert "no VM of a is running" in capsys.readouterr().err


@pytest.mark.rig
@pytest.mark.usefixtures("real_nix")
def test_deploy_status_rollback_round_trip(
    project_dir: Path, rig_fleet: Fleet, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    monkeypatch.setenv("HOME", str(project_dir / "home"))
    v1, v2 = build_fake_systems([FakeSystemSpec("cli-v1"), FakeSystemSpec("cli-v2")])
    rig_fleet.start_many(["web", "db"])
    rig_fleet.unreachable("offline")
    (project_dir / "boards.toml").write_text(boards_toml(rig_fleet, ["web", "db", "offline"]))
    wanted: dict[str, str] = {}

    def builder(project: object) -> Callable[..., object]:
        async def build(targets: Sequence[Target], log: Callable[[str], None]) -> SystemsBuilt:
            log("stand-in build for the test")
            return SystemsBuilt({t.name: wanted[t.name] for t in targets}, {})

        return build

    monkeypatch.setattr(deploy_cmd, "project_builder", builder)
    monkeypatch.setattr(deploy_cmd, "project_planner", builder)

    wanted.update(web=v1, db=v1, offline=v1)
    assert run_cli("deploy", "--on", "@lab", "--json") == 1
    report = json.loads(capsys.readouterr().out)
    assert {t["target"]: t["result"] for t in report["targets"]} == {"web": "ok", "db": "ok", "offline": "unreachable"}
    assert report["exit_code"] == 1 and report["targets"][2]["log_tail"]
    assert rig_fleet.current_system("web") == rig_fleet.current_system("db") == v1
    secret = project_dir / ".crossnix/keys/fleet-signing.sec"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    public = (project_dir / ".crossnix/keys/fleet-signing.pub").read_text().strip()
    assert public.startswith("crossnix-") and secret.read_text().strip() not in json.dumps(report)
    logs = sorted(p.name for p in Path(report["log_dir"]).iterdir())
    assert logs == ["build.log", "db.log", "offline.log", "web.log"]

    wanted.update(web=v2, db=v2)
    assert run_cli("deploy", "--on", "web,db") == 0
    out = capsys.readouterr().out
    assert "done: 2/2 targets deployed" in out and "1 → 2" in out

    assert run_cli("status", "--on", "web", "--json") == 0
    (status,) = json.loads(capsys.readouterr().out)
    assert (status["generation"], status["system"], status["previous_generation"]) == (2, v2, 1)
    assert status["deployed_by_crossnix"] is True and status["reboot_pending"] is False

    assert run_cli("rollback", "--on", "web", "--json") == 0
    rolled = json.loads(capsys.readouterr().out)["targets"][0]
    assert (rolled["result"], rolled["generation"]) == ("ok", 1)
    assert rig_fleet.current_system("web") == v1 and rig_fleet.current_system("db") == v2

    assert run_cli("status") == 1  # 'offline' is unreachable
    out = capsys.readouterr().out
    assert "offline" in out and "db" in out

    assert run_cli("deploy", "--on", "db", "--dry-run", "--json") == 0
    plan = json.loads(capsys.readouterr().out)["targets"][0]
    assert plan["result"] == "planned" and plan["plan"]["copy"]["paths"] == 0
    assert os.environ["HOME"].startswith(str(project_dir))


@pytest.mark.rig
@pytest.mark.usefixtures("real_nix")
def test_sudo_password_from_file_is_checked_first(
    project_dir: Path, rig_fleet: Fleet, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    monkeypatch.setenv("HOME", str(project_dir / "home"))
    rig_fleet.start("pw", user="cxclipw", sudo_password="pw-Right-7", nix_daemon=True)
    (project_dir / "boards.toml").write_text(
        boards_toml(rig_fleet, ["pw"]).replace("[targets.pw]", '[targets.pw]\nuser = "cxclipw"\nask_sudo_password = true')
    )
    (v1,) = build_fake_systems([FakeSystemSpec("cli-pw")])

    def builder(project: object) -> Callable[..., object]:
        async def build(targets: Sequence[Target], log: Callable[[str], None]) -> SystemsBuilt:
            return SystemsBuilt({t.name: v1 for t in targets}, {})

        return build

    monkeypatch.setattr(deploy_cmd, "project_builder", builder)
    secret = project_dir / "pw.txt"
    secret.write_text("pw-Wrong-3\n")
    monkeypatch.setenv("CROSSNIX_SUDO_PASSWORD_FILE", str(secret))
    assert run_cli("deploy", "--all", "--json") == 1
    (target,) = json.loads(capsys.readouterr().out)["targets"]
    assert target["result"] == "refused" and "sudo refused the password" in target["message"]
    assert not rig_fleet.has_path("pw", v1)
    # the target's nix-daemon trusts the fleet key (what fleet-trust.nix does on NixOS)
    rig_fleet.configure_nix("pw", trusted_public_keys=[(project_dir / ".crossnix/keys/fleet-signing.pub").read_text().strip()])
    rig_fleet.restart("pw")  # the daemon reads nix.conf when it starts
    secret.write_text("pw-Right-7\n")
    assert run_cli("deploy", "--all", "--json") == 0
    assert rig_fleet.current_system("pw") == v1
    logs = "".join(p.read_text() for p in (project_dir / ".crossnix" / "logs").rglob("*.log"))
    assert "pw-Right-7" not in logs and "pw-Wrong-3" not in logs
