"""Every remote command as the exact argv (and shell line) crossnix sends, nixos-rebuild-ng style."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest

from crossnix_tasks import remote as rc
from crossnix_tasks.inventory import Target

TOP = "/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-nixos-system-pi-25.05"
SCRIPT = rc.TARGET_SCRIPT
PREFIX = ["sh", "-c", 'eval "$1"', "crossnix", SCRIPT]


class FakeConn:
    """Records what Remote.run sends; answers with a fixed result."""

    def __init__(self, exit_status: int = 0, stdout: str = "", stderr: str = "") -> None:
        self.calls: list[tuple[str, str | None]] = []
        self.result = (exit_status, stdout, stderr)

    async def run(self, command: str, *, input: str | None, check: bool, timeout: float | None) -> Any:  # noqa: ASYNC109
        self.calls.append((command, input))
        status, out, err = self.result
        return type("R", (), {"exit_status": status, "stdout": out, "stderr": err})()


def target(user: str = "root") -> Target:
    return Target(name="pi", board="rpi4", system="aarch64-linux", host="pi.lan", user=user)


def remote(user: str = "root", password: str | None = None, **kw: Any) -> tuple[rc.Remote, FakeConn]:
    conn = FakeConn(**kw)
    lines: list[str] = []
    return rc.Remote(target(user), conn, sudo_password=password, log=lines.append), conn  # type: ignore[arg-type]


def plan(**kw: Any) -> rc.Activation:
    values: dict[str, Any] = {
        "state_dir": "/run/crossnix/20260101-000000-abcd",
        "toplevel": TOP,
        "goal": "switch",
        "confirm_timeout": 30,
        "activation_timeout": 600,
        "magic_rollback": True,
        "auto_rollback": True,
        "systemd": True,
        "unit": "crossnix-20260101-000000-abcd",
    }
    values.update(kw)
    return rc.Activation(**values)


def test_command_lines_are_pinned() -> None:
    assert rc.begin_argv(plan()) == [
        *PREFIX, "begin", "/run/crossnix/20260101-000000-abcd", "/nix/var/nix/profiles/system", TOP, "switch",
        "30", "600", "1", "1", "1", "crossnix-20260101-000000-abcd",
    ]
    assert rc.begin_argv(plan(magic_rollback=False, systemd=False, goal="boot"))[9:15] == [
        "boot", "30", "600", "0", "1", "0"
    ]
    assert rc.has_systemd_argv() == ["test", "-d", "/run/systemd/system"]
    assert rc.is_nixos_system_argv(TOP) == ["test", "-f", f"{TOP}/nixos-version"]
    assert rc.sudo_check_argv(True) == ["sudo", "-k", "-S", "-p", "", "true"]
    assert rc.sudo_check_argv(False) == ["sudo", "-n", "true"]
    assert rc.switch_generation_argv("/nix/var/nix/profiles/system", 4, "switch") == [
        *PREFIX, "switch-generation", "/nix/var/nix/profiles/system", "4", "switch"
    ]
    assert rc.dry_activate_argv(TOP) == [f"{TOP}/bin/switch-to-configuration", "dry-activate"]
    assert rc.describe(rc.begin_argv(plan())) == (
        "crossnix-target begin /run/crossnix/20260101-000000-abcd /nix/var/nix/profiles/system "
        f"{TOP} switch 30 600 1 1 1 crossnix-20260101-000000-abcd"
    )


async def test_root_runs_directly_and_others_through_sudo() -> None:
    r, conn = remote()
    await rc.begin(r, plan())
    command, stdin = conn.calls[-1]
    assert shlex.split(command) == rc.begin_argv(plan()) and stdin is None

    r, conn = remote("deploy", "s3cret")
    await rc.begin(r, plan())
    command, stdin = conn.calls[-1]
    assert shlex.split(command) == ["sudo", "-S", "-p", "", "--", *rc.begin_argv(plan())]
    assert stdin == "s3cret\n"
    await rc.read_state(r)  # reading needs no root
    assert shlex.split(conn.calls[-1][0]) == [*PREFIX, "state", "/nix/var/nix/profiles/system"]

    r, conn = remote("deploy", None)
    await rc.rollback(r, "/run/crossnix/x", "because")
    assert shlex.split(conn.calls[-1][0]) == ["sudo", "-n", "--", *PREFIX, "rollback", "/run/crossnix/x", "because"]


async def test_sudo_check_and_password_never_logged() -> None:
    lines: list[str] = []
    conn = FakeConn(exit_status=1, stderr="Sorry, try again.\nsudo: 3 incorrect password attempts\n")
    r = rc.Remote(target("deploy"), conn, sudo_password="hunter2", log=lines.append)  # type: ignore[arg-type]
    with pytest.raises(rc.RemoteError, match="sudo refused the password for 'deploy'"):
        await rc.check_sudo(r, "hunter2")
    assert conn.calls == [("sudo -k -S -p '' true", "hunter2\n")]
    await r.run(["true"], root=True, check=False)
    assert not any("hunter2" in line for line in lines)
    root, conn = remote()
    await rc.check_sudo(root, None)
    assert conn.calls == []


async def test_failures_carry_the_last_line() -> None:
    r, _ = remote(exit_status=4, stderr="error: path '/nix/store/x' is not valid\n")
    with pytest.raises(rc.RemoteError, match=r"exit status 4: error: path '/nix/store/x' is not valid"):
        await r.run(["nix-env", "--set", "x"])


def test_parse_state_and_report() -> None:
    state = rc.parse_state(
        "systemd 1\nprofile-link system-12-link\nprofile /nix/store/b\ncurrent /nix/store/b\nbooted /nix/store/a\n"
        "generation /nix/var/nix/profiles/system-9-link /nix/store/9\n"
        "generation /nix/var/nix/profiles/system-12-link /nix/store/b\n"
        "generation /nix/var/nix/profiles/system-10-link /nix/store/a\n"
    )
    assert state.systemd and state.generation == 12 and [g.number for g in state.generations] == [9, 10, 12]
    assert state.previous == rc.Generation(10, "/nix/store/a")
    empty = rc.parse_state("systemd 0\nprofile-link \nprofile \ncurrent \nbooted \n")
    assert (empty.generation, empty.previous, empty.profile) == (None, None, "")
    report = rc.parse_report("status 0\noutcome confirmed\ncurrent /nix/store/b\nprofile /nix/store/b\n")
    assert report.succeeded and report.finished and report.outcome == "confirmed"
    assert not rc.parse_report("status running\noutcome \n").finished


def test_target_script_is_posix_sh(tmp_path: Path) -> None:
    """dash (Debian's /bin/sh, as strict as POSIX sh gets) parses it; unknown actions exit 64."""
    assert subprocess.run(["dash", "-n", "-c", SCRIPT], check=False).returncode == 0
    done = subprocess.run(["dash", "-c", rc.BOOTSTRAP, "crossnix", SCRIPT, "frobnicate"], capture_output=True,
                          text=True, check=False)
    assert done.returncode == 64 and "unknown action frobnicate" in done.stderr
    # state works anywhere (no profile here)
    done = subprocess.run(["dash", "-c", rc.BOOTSTRAP, "crossnix", SCRIPT, "state", str(tmp_path / "system")],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0 and rc.parse_state(done.stdout).profile == ""
