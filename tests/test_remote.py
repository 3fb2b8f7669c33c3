"""Every remote command as the exact argv (and shell line) crossnix sends, nixos-rebuild-ng style."""

from __future__ import annotations

import os
import shlex
import subprocess
import threading
import time
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


# target.sh run locally (dash, setsid) against a fake profile: the activation protocol's races ----------------

FAKE_NIX_ENV = """#!/bin/sh
# nix-env -p PROFILE --set PATH | --switch-generation N   (just the symlinks)
p=$2
case "$3" in
  --set) n=1; while [ -L "$p-$n-link" ]; do n=$((n + 1)); done
         ln -sfn "$4" "$p-$n-link" && ln -sfn "$(basename "$p")-$n-link" "$p" ;;
  --switch-generation) [ -L "$p-$4-link" ] && ln -sfn "$(basename "$p")-$4-link" "$p" ;;
  *) exit 2 ;;
esac
"""

FAKE_SWITCH = """#!/bin/sh
# a chatty switch-to-configuration that records what it activated
top=$(readlink -f "$(dirname "$0")/..")
printf '%s %s\\n' "$top" "$1" >> "$top/../record"
i=0; while [ $i -lt 200 ]; do echo "activating the configuration... line $i"; i=$((i + 1)); done
"""


class LocalTarget:
    """A directory standing in for a target: a system profile with generation 1 (``old``) and a new system."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "bin").mkdir()
        nix_env = root / "bin" / "nix-env"
        nix_env.write_text(FAKE_NIX_ENV)
        nix_env.chmod(0o755)
        for name in ("old", "new"):
            (root / name / "bin").mkdir(parents=True)
            switch = root / name / "bin" / "switch-to-configuration"
            switch.write_text(FAKE_SWITCH)
            switch.chmod(0o755)
        (root / "profiles").mkdir()
        self.profile = root / "profiles" / "system"
        (root / "profiles" / "system-1-link").symlink_to(root / "old")
        self.profile.symlink_to("system-1-link")
        self.state = root / "state" / "run-1"
        self.env = {"PATH": f"{root / 'bin'}:/usr/bin:/bin"}

    def argv(self, action: str, *args: str) -> list[str]:
        return ["dash", "-c", rc.BOOTSTRAP, "crossnix", SCRIPT, action, *args]

    def run(self, action: str, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.argv(action, *args), env=self.env, text=True, capture_output=True, timeout=30,
                              check=False, **kw)

    def begin_argv(self, *, magic: bool = False, auto: bool = True) -> list[str]:
        return ["begin", str(self.state), str(self.profile), str(self.root / "new"), "switch", "30", "60",
                "1" if magic else "0", "1" if auto else "0", "0", "crossnix-run-1"]

    def record(self) -> list[str]:
        path = self.root / "record"
        return [line.split()[0].rsplit("/", 1)[-1] for line in path.read_text().splitlines()] if path.exists() else []

    def file(self, name: str) -> str:
        path = self.state / name
        return path.read_text().strip() if path.exists() else ""

    def wait_for(self, name: str, seconds: float = 10) -> str:
        deadline = time.monotonic() + seconds
        while not self.file(name) and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.file(name)


def test_a_runner_starting_after_the_outcome_was_settled_never_switches(tmp_path: Path) -> None:
    """Rollback found no runner.pid to stop (the detached runner had not started yet): when the runner does
    start, it must not activate the new system over the restored one."""
    t = LocalTarget(tmp_path)
    t.state.mkdir(parents=True)
    for name, value in (("profile", t.profile), ("toplevel", t.root / "new"), ("goal", "switch"), ("confirm", 30),
                        ("auto", 1), ("systemd", 0), ("unit", "crossnix-run-1")):
        (t.state / name).write_text(f"{value}\n")
    (t.state / "decided").mkdir()
    (t.state / "outcome").write_text("rolled-back\n")
    done = t.run("run", str(t.state))
    assert done.returncode == 0 and "not switching" in done.stdout
    assert t.record() == [] and t.file("outcome") == "rolled-back" and t.file("status") == ""


def test_rollback_finishes_when_the_ssh_session_is_gone(tmp_path: Path) -> None:
    """crossnix's rollback goes through an SSH session that can break at any moment (a second Ctrl-C closes
    it, the old configuration restarts the network): once the outcome says rolling-back, the restore must
    still happen, never leave the profile and the running system half rolled back."""
    t = LocalTarget(tmp_path)
    began = t.run(*t.begin_argv())
    assert began.returncode == 0, began.stdout + began.stderr
    assert t.wait_for("status") == "0" and t.record() == ["new"]
    assert os.readlink(t.profile) == "system-2-link"
    # The session's stdout and stderr lead nowhere: every write to them fails (SIGPIPE by default).
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.run(t.argv("rollback", str(t.state), "health check failed"), env=t.env, stdout=write_end,
                              stderr=write_end, timeout=30, check=False)
    finally:
        os.close(write_end)
    assert t.wait_for("outcome") in ("rolling-back", "rolled-back")
    deadline = time.monotonic() + 10
    while t.file("outcome") == "rolling-back" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert t.file("outcome") == "rolled-back", (proc.returncode, t.file("rollback.log"))
    assert os.readlink(t.profile) == "system-1-link" and t.record() == ["new", "old"]
    # A second rollback (crossnix again, after the first attempt's connection broke) reports what happened.
    again = t.run("rollback", str(t.state), "again")
    assert again.returncode == 3 and rc.parse_report(again.stdout).outcome == "rolled-back"


def test_a_late_confirmation_waits_for_the_restore_in_progress(tmp_path: Path) -> None:
    """While somebody else (the watchdog, the runner's auto rollback) is restoring, a confirmation that came
    too late reports the outcome that restore ends with, not the passing "rolling-back"."""
    t = LocalTarget(tmp_path)
    assert t.run(*t.begin_argv()).returncode == 0
    assert t.wait_for("status") == "0"
    slow = subprocess.Popen(["dash", "-c", "sleep 1.5"])  # stands in for the process running the restore
    try:
        (t.state / "decided").mkdir()
        (t.state / "outcome").write_text("rolling-back\n")
        (t.state / "undo.pid").write_text(f"{slow.pid}\n")

        def finish() -> None:
            slow.wait()
            (t.state / "outcome").write_text("rolled-back\n")

        worker = threading.Thread(target=finish)
        worker.start()
        confirmed = t.run("decide", str(t.state), "confirmed", "verified")
        worker.join()
    finally:
        slow.kill()
    assert confirmed.returncode == 3 and rc.parse_report(confirmed.stdout).outcome == "rolled-back"
