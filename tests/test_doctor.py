"""`inv doctor` on this machine and against REAL loopback targets: healthy, unreachable, silent, re-keyed,
not trusting the fleet key, sudo needing a password, and the wrong architecture; each problem with its fix."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from crossnix_tasks import doctor, probe, signing
from crossnix_tasks.doctor import LOCAL, Check
from crossnix_tasks.inventory import Target
from tests.conftest import run_cli
from tests.rig.fleet import Fleet

# Pure checks ----------------------------------------------------------------------------------------------


def test_nix_version_check() -> None:
    assert doctor.check_nix_version("nix (Nix) 2.8.0").ok
    assert doctor.check_nix_version("nix (Nix) 2.24.10").ok
    old = doctor.check_nix_version("nix (Nix) 2.3.16")
    assert old.failed and "older than 2.8" in old.detail and "apt-get install nix-bin" in old.fix
    missing = doctor.check_nix_version(None)
    assert missing.failed and "not installed" in missing.detail


def test_features_missing_is_a_warning_with_the_config_line() -> None:
    check = doctor.check_features(None)
    assert not check.ok and check.warning and not check.failed
    assert "experimental-features = nix-command flakes" in check.fix
    assert doctor.check_features({"experimental-features": ["flakes", "nix-command"]}).ok
    half = doctor.check_features({"experimental-features": "nix-command"})
    assert "not enabled: flakes" in half.detail


def test_trusted_user_check() -> None:
    assert doctor.check_trusted_user({"trusted-users": ["root"]}, "root", []).ok
    assert doctor.check_trusted_user({"trusted-users": ["root", "@wheel"]}, "me", ["wheel"]).ok
    check = doctor.check_trusted_user({"trusted-users": ["root"]}, "me", ["users"])
    assert check.failed and check.fix.startswith("add `trusted-users = root me` to /etc/nix/nix.conf")


def test_flake_inputs_check(tmp_path: Path, builtin_plugins: Any) -> None:
    targets = [Target(name="pi", board="rpi4", system="aarch64-linux"),
               Target(name="vm", board="generic-uefi", system="x86_64-linux")]
    needed = doctor.needed_inputs(targets, builtin_plugins.boards)
    assert needed == {"nixpkgs": [], "nixos-hardware": ["rpi4"]}
    urls = {"nixos-hardware": "github:NixOS/nixos-hardware"}
    lock = tmp_path / "flake.lock"
    missing = doctor.check_flake_inputs(lock, needed, urls)
    assert missing.failed and missing.fix == f"cd {tmp_path} && nix flake lock"
    lock.write_text(json.dumps({"nodes": {"root": {"inputs": {"nixpkgs": "nixpkgs"}}, "nixpkgs": {}}, "root": "root",
                                "version": 7}))
    lacking = doctor.check_flake_inputs(lock, needed, urls)
    assert lacking.failed and "lacks nixos-hardware (for rpi4)" in lacking.detail
    assert 'inputs.nixos-hardware.url = "github:NixOS/nixos-hardware";' in lacking.fix
    lock.write_text(json.dumps({"nodes": {"root": {"inputs": {"nixpkgs": "a", "nixos-hardware": "b"}}}, "root": "root"}))
    assert doctor.check_flake_inputs(lock, needed, urls).ok


def test_build_checks_per_strategy() -> None:
    assert doctor.check_build("aarch64-linux", "cross", "x86_64-linux", None, ["pi"]).ok
    assert doctor.check_build("x86_64-linux", "native", "x86_64-linux", None, ["vm"]).ok
    refused = probe.ProbeResult("riscv64-linux", False, "platform", "required system")
    check = doctor.check_build("riscv64-linux", "emulated", "x86_64-linux", refused, ["hifive"])
    assert check.failed and "extra-platforms = riscv64-linux" in check.fix and 'build = "cross"' in check.fix


# Against real targets -----------------------------------------------------------------------------------------



def _toml_target(name: str, board: str, port: int, fleet: Fleet, **extra: Any) -> str:
    lines = [f"[targets.{name}]", f'board = "{board}"']
    if board == "generic-uefi":
        lines.append('system = "x86_64-linux"')
    lines += ['host = "127.0.0.1"', f"port = {port}", f'identity_file = "{fleet.client_key}"',
              f'known_hosts = "{fleet.known_hosts}"']
    lines += [f"{key} = {json.dumps(value)}" for key, value in extra.items()]
    return "\n".join(lines) + "\n"


@pytest.fixture
def fleet_project(rig_fleet: Fleet, project_dir: Path, monkeypatch: pytest.MonkeyPatch, real_nix: str) -> dict[str, Any]:
    monkeypatch.setenv("HOME", str(project_dir / "home"))  # no ~/.ssh of the machine running the tests
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    state = project_dir / ".crossnix"
    key = asyncio.run(signing.ensure_fleet_key(state, project_dir))
    rig_fleet.start("good", trusted_public_keys=[key.public_key])
    rig_fleet.start("unsigned")
    # non-root users reach the store through nix-daemon, as on NixOS
    rig_fleet.start("admin", user="cxdoc1", sudo_password="s3cret", trusted_public_keys=[key.public_key],
                    nix_daemon=True)
    rig_fleet.start("wheel", user="cxdoc2", trusted_public_keys=[key.public_key], nix_daemon=True)
    rig_fleet.start("rekeyed", trusted_public_keys=[key.public_key])
    rig_fleet.rotate_host_key("rekeyed")
    rig_fleet.unreachable("gone")
    rig_fleet.blackhole("hole")
    port = {t.name: t.port for t in rig_fleet.targets()}
    toml = "".join([
        _toml_target("good", "generic-uefi", port["good"], rig_fleet, tags=["ok"]),
        _toml_target("unsigned", "generic-uefi", port["unsigned"], rig_fleet),
        _toml_target("admin", "generic-uefi", port["admin"], rig_fleet, user="cxdoc1"),
        _toml_target("wheel", "generic-uefi", port["wheel"], rig_fleet, user="cxdoc2", tags=["ok"]),
        _toml_target("rekeyed", "generic-uefi", port["rekeyed"], rig_fleet),
        _toml_target("gone", "generic-uefi", port["gone"], rig_fleet),
        _toml_target("hole", "generic-uefi", port["hole"], rig_fleet),
        _toml_target("wrongarch", "rpi4", port["good"], rig_fleet),  # a Pi entry pointing at an x86_64 machine
    ])
    (project_dir / "boards.toml").write_text(toml)
    (project_dir / "flake.lock").write_text(json.dumps(
        {"nodes": {"root": {"inputs": {"nixpkgs": "nixpkgs", "nixos-hardware": "nixos-hardware"}}}, "root": "root"}))
    return {"key": key.public_key, "dir": project_dir}


def _by(checks: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(c["scope"], c["name"]): c for c in checks}


@pytest.mark.rig
def test_doctor_on_a_fleet(fleet_project: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    code = run_cli("doctor", "--on", "*", "--json", "--connect-timeout", "3")
    out, err = capsys.readouterr()
    assert code == 1
    checks = _by(json.loads(out))
    # this machine
    assert checks[(LOCAL, "nix")]["ok"]
    assert checks[(LOCAL, "flake inputs")]["ok"]
    assert checks[(LOCAL, "build aarch64-linux")]["ok"]  # rpi4 cross-compiles: no emulation needed
    assert checks[(LOCAL, "fleet signing key")]["ok"]
    # healthy targets: root, and a non-root user with passwordless sudo
    for name in ("good", "wheel"):
        for check in ("ssh", "system", "nix", "signatures", "sudo"):
            if (name, check) in checks:
                assert checks[(name, check)]["ok"], checks[(name, check)]
    assert "host key verified" in checks[("good", "ssh")]["detail"]
    assert checks[("wheel", "sudo")]["detail"] == "cxdoc2 runs sudo without a password"
    # a target that does not trust the fleet key gets the exact configuration line; it deploys as root,
    # whose copies skip the signature check, so it is a warning there (a non-root user fails: unit test below)
    unsigned = checks[("unsigned", "signatures")]
    assert unsigned["status"] == "warning" and "deploys as another user would fail" in unsigned["detail"]
    assert f'nix.settings.trusted-public-keys = [ "{fleet_project["key"]}" ];' in unsigned["fix"]
    # sudo needing a password
    admin = checks[("admin", "sudo")]
    assert admin["status"] == "FAIL" and "set `ask_sudo_password = true` in [targets.admin]" in admin["fix"]
    # unreachable, silent and re-keyed hosts: one ssh check each, nothing else attempted
    assert checks[("gone", "ssh")]["status"] == "FAIL" and "sshd listens on port" in checks[("gone", "ssh")]["fix"]
    assert "no SSH answer within 3 s" in checks[("hole", "ssh")]["detail"]
    assert "accepts TCP but sends no SSH banner" in checks[("hole", "ssh")]["fix"]
    rekeyed = checks[("rekeyed", "ssh")]
    assert "host key verification failed" in rekeyed["detail"] and "known_hosts" in rekeyed["fix"]
    for name in ("gone", "hole", "rekeyed"):
        assert [key for key in checks if key[0] == name] == [(name, "ssh")]
    # the wrong architecture is caught before any deploy
    wrong = checks[("wrongarch", "system")]
    assert wrong["status"] == "FAIL" and 'set `system = "x86_64-linux"`' in wrong["fix"]
    assert "check(s) failed" in err


@pytest.mark.rig
def test_doctor_passes_for_healthy_targets_and_prints_fixes_in_text(
    fleet_project: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli("doctor", "--on", "@ok") == 0
    out = capsys.readouterr().out
    assert "good\n" in out and "wheel\n" in out and "0 failed" in out
    assert run_cli("doctor", "--on", "unsigned", "--connect-timeout", "3") == 0
    out = capsys.readouterr().out
    assert "warning  signatures" in out and f"fix: add to the target's configuration: nix.settings.trusted-public-keys = [ \"{fleet_project['key']}\" ];" in out


def test_doctor_without_an_inventory_checks_this_machine(project_dir: Path, real_nix: str,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("doctor", "--json") == 0
    checks = json.loads(capsys.readouterr().out)
    assert [c["name"] for c in checks] == ["nix", "experimental features", "trusted user"]
    assert all(isinstance(Check(**{k: v for k, v in c.items() if k != "status"}), Check) for c in checks)


def test_target_without_host_gets_the_config_line() -> None:
    target = Target(name="pi", board="rpi4", system="aarch64-linux")
    from crossnix_tasks import ssh

    (check,) = asyncio.run(doctor.all_target_checks([target], ssh.SshEnv(state_dir=Path("/nonexistent")), None))
    assert check.failed and "no host set" in check.detail
    assert check.fix == 'add `host = "..."` to [targets.pi]'


def test_flake_input_fix_includes_the_follows_line_for_inputs_that_follow_nixpkgs(tmp_path: Path) -> None:
    lock = tmp_path / "flake.lock"
    lock.write_text(json.dumps({"nodes": {"root": {"inputs": {"nixpkgs": "a"}}}, "root": "root"}))
    needed = {"nixpkgs": [], "vf2-firmware": ["visionfive2"], "nixos-hardware": ["rpi4"]}
    urls = {"vf2-firmware": "github:me/vf2", "nixos-hardware": "github:NixOS/nixos-hardware"}
    check = doctor.check_flake_inputs(lock, needed, urls, {"vf2-firmware"})
    assert 'inputs.vf2-firmware.url = "github:me/vf2"; inputs.vf2-firmware.inputs.nixpkgs.follows = "nixpkgs";' in check.fix
    assert "nixos-hardware.inputs.nixpkgs" not in check.fix  # declared with follows_nixpkgs=False


def test_signature_fix_by_hand_needs_root_and_a_daemon_restart() -> None:
    target = Target(name="pi", board="rpi4", system="aarch64-linux", user="admin")
    check = doctor.check_signatures(target, {"require-sigs": True, "trusted-public-keys": []}, "fleet:abc=")
    assert check.failed and 'copies fail with "lacks a valid signature"' in check.detail
    assert "as root: echo 'extra-trusted-public-keys = fleet:abc=' >> /etc/nix/nix.conf && systemctl restart nix-daemon" in check.fix


def test_a_target_printing_no_json_config_is_a_failed_check_not_a_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    from crossnix_tasks import ssh

    class FakeConn:
        def close(self) -> None:
            pass

    class FakeRemote:
        def __init__(self, target: Target, conn: object) -> None:
            pass

        async def run(self, argv: list[str], **_: object) -> SimpleNamespace:
            out = {"uname": "x86_64\n", "nix-store": "nix-store (Nix) 2.8.0\n"}.get(argv[0], "warning: not JSON\n")
            return SimpleNamespace(exit_status=0, stdout=out, stderr="")

    async def connect(target: Target, env: object) -> FakeConn:
        return FakeConn()

    monkeypatch.setattr(doctor.ssh, "connect", connect)
    monkeypatch.setattr(doctor.remote, "Remote", FakeRemote)
    target = Target(name="pc", board="generic-uefi", system="x86_64-linux", host="pc.lan")
    checks = asyncio.run(doctor.target_checks(target, ssh.SshEnv(state_dir=Path("/nonexistent")), "fleet:abc="))
    signatures = [c for c in checks if c.name == "signatures"]
    assert signatures and signatures[0].failed and "could not read the target's Nix configuration" in signatures[0].detail
