"""Every command crossnix runs on a target, one small function each (the nixos-rebuild-ng way).

Commands are argv lists; the one place they become a shell line is :meth:`Remote.run`, with
``shlex.join``. The target-side logic is the fixed POSIX sh script ``deploy/target.sh``, invoked as
``sh -c 'eval "$1"' crossnix <script> ACTION ARGS...`` so every value travels as a positional argument.
Commands that change the system run as root: directly for ``user = "root"``, else through
``sudo -S -p ''`` with the password on stdin (asked once per run), or ``sudo -n`` without one.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources

import asyncssh

from crossnix_tasks.errors import CrossnixError
from crossnix_tasks.inventory import Target

SYSTEM_PROFILE = "/nix/var/nix/profiles/system"
STATE_ROOT = "/run/crossnix"
TARGET_SCRIPT = (resources.files("crossnix_tasks.deploy") / "target.sh").read_text(encoding="utf-8")
BOOTSTRAP = 'eval "$1"'
SCRIPT_NAME = "crossnix"
SUDO_WITH_PASSWORD = ("sudo", "-S", "-p", "")
SUDO_NON_INTERACTIVE = ("sudo", "-n")

Log = Callable[[str], None]


class RemoteError(CrossnixError):
    """A remote command could not run or did not succeed."""

    def __init__(self, message: str, *, stderr: str = "", exit_status: int | None = None) -> None:
        super().__init__(message)
        self.stderr = stderr
        self.exit_status = exit_status


class ConnectionLost(RemoteError):
    """The SSH connection broke while a command ran (what it did on the target is unknown)."""


class RemoteTimeout(RemoteError):
    """A remote command did not finish in time."""


@dataclass(frozen=True)
class RemoteResult:
    exit_status: int
    stdout: str
    stderr: str


def script_argv(action: str, *args: str) -> list[str]:
    """argv running ``deploy/target.sh ACTION ARGS...`` on the target."""
    return ["sh", "-c", BOOTSTRAP, SCRIPT_NAME, TARGET_SCRIPT, action, *args]


def describe(argv: Sequence[str]) -> str:
    """A loggable form of argv: the target script shows as ``crossnix-target ACTION ARGS``."""
    argv = list(argv)
    for start in range(len(argv)):
        if argv[start : start + 5] == ["sh", "-c", BOOTSTRAP, SCRIPT_NAME, TARGET_SCRIPT]:
            return shlex.join([*argv[:start], "crossnix-target", *argv[start + 5 :]])
    return shlex.join(argv)


class Remote:
    """One target's SSH connection; runs argv lists, elevating with sudo where asked."""

    def __init__(
        self,
        target: Target,
        conn: asyncssh.SSHClientConnection,
        *,
        sudo_password: str | None = None,
        log: Log | None = None,
    ) -> None:
        self.target = target
        self.conn = conn
        self._sudo_password = sudo_password
        self.log: Log = log or (lambda line: None)

    @property
    def uses_sudo(self) -> bool:
        return self.target.user != "root"

    def elevate(self, argv: Sequence[str]) -> tuple[list[str], str | None]:
        """argv as root, and what to feed its stdin (the sudo password, never logged)."""
        if not self.uses_sudo:
            return list(argv), None
        if self._sudo_password is not None:
            return [*SUDO_WITH_PASSWORD, "--", *argv], self._sudo_password + "\n"
        return [*SUDO_NON_INTERACTIVE, "--", *argv], None

    async def run(
        self,
        argv: Sequence[str],
        *,
        root: bool = False,
        check: bool = True,
        time_limit: float | None = None,
        secret_input: str | None = None,
    ) -> RemoteResult:
        """Run argv (as root if asked); ``secret_input`` goes to its stdin and is never logged."""
        full, stdin = self.elevate(argv) if root else (list(argv), None)
        if secret_input is not None:
            if stdin is not None:
                raise ValueError("stdin already carries the sudo password")
            stdin = secret_input
        shown = describe(full)
        self.log(f"$ {shown}")
        try:
            completed = await self.conn.run(shlex.join(full), input=stdin, check=False, timeout=time_limit)
        except asyncssh.TimeoutError as exc:
            raise RemoteTimeout(f"`{shown}` did not finish within {time_limit:g} s", stderr=str(exc.stderr)) from None
        except (asyncssh.Error, OSError) as exc:
            raise ConnectionLost(f"connection lost during `{shown}`: {exc}") from None
        stdout, stderr = _text(completed.stdout), _text(completed.stderr)
        for line in (stdout + stderr).splitlines():
            self.log(f"  {line}")
        if completed.exit_status is None:
            raise ConnectionLost(f"connection lost during `{shown}` (no exit status)", stderr=stderr)
        result = RemoteResult(completed.exit_status, stdout, stderr)
        if check and result.exit_status != 0:
            last = stderr.strip().splitlines()[-1:] or stdout.strip().splitlines()[-1:] or [""]
            raise RemoteError(
                f"`{shown}` failed with exit status {result.exit_status}: {last[0]}",
                stderr=stderr,
                exit_status=result.exit_status,
            )
        return result


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


# Reading the target ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Generation:
    number: int
    path: str


@dataclass(frozen=True)
class TargetState:
    """What a target runs and what its system profile holds."""

    systemd: bool
    profile_link: str  # "system-5-link", "" without a profile
    profile: str  # store path of the current generation
    current: str  # /run/current-system
    booted: str  # /run/booted-system
    generations: tuple[Generation, ...] = field(default_factory=tuple)

    @property
    def generation(self) -> int | None:
        return generation_number(self.profile_link)

    @property
    def previous(self) -> Generation | None:
        current = self.generation
        older = [g for g in self.generations if current is None or g.number < current]
        return older[-1] if older else None


def generation_number(link: str) -> int | None:
    match = re.search(r"-(\d+)-link$", link)
    return int(match.group(1)) if match else None


def _fields(text: str) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        values.setdefault(key, value.strip())
    return values


def parse_state(text: str) -> TargetState:
    values = _fields(text)
    generations = []
    for line in text.splitlines():
        if line.startswith("generation "):
            _, link, path = [*line.split(" ", 2), "", ""][:3]
            number = generation_number(link)
            if number is not None:
                generations.append(Generation(number, path))
    return TargetState(
        systemd=values.get("systemd") == "1",
        profile_link=values.get("profile-link", ""),
        profile=values.get("profile", ""),
        current=values.get("current", ""),
        booted=values.get("booted", ""),
        generations=tuple(sorted(generations, key=lambda g: g.number)),
    )


async def read_state(remote: Remote, profile: str = SYSTEM_PROFILE) -> TargetState:
    result = await remote.run(script_argv("state", profile), time_limit=60)
    return parse_state(result.stdout)


def is_nixos_system_argv(toplevel: str) -> list[str]:
    return ["test", "-f", f"{toplevel}/nixos-version"]


async def is_nixos_system(remote: Remote, toplevel: str) -> bool:
    """nixos-rebuild-ng's guard (Nix bug 13367): a closure without ``nixos-version`` is no system."""
    return (await remote.run(is_nixos_system_argv(toplevel), check=False, time_limit=60)).exit_status == 0


def sudo_check_argv(with_password: bool) -> list[str]:
    # -k: ignore cached credentials, so a wrong password is caught now, before anything changes.
    return ["sudo", "-k", "-S", "-p", "", "true"] if with_password else ["sudo", "-n", "true"]


async def check_sudo(remote: Remote, password: str | None) -> None:
    """Prove that root commands will work; raises :class:`RemoteError` (nothing changed) otherwise."""
    if not remote.uses_sudo:
        return
    argv = sudo_check_argv(password is not None)
    secret = None if password is None else password + "\n"
    result = await remote.run(argv, check=False, time_limit=60, secret_input=secret)
    if result.exit_status != 0:
        if password is None:
            raise RemoteError(f"sudo as {remote.target.user!r} needs a password", stderr=result.stderr)
        raise RemoteError(f"sudo refused the password for {remote.target.user!r}", stderr=result.stderr)


# Activation --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Activation:
    """What ``begin`` is asked to do on one target."""

    state_dir: str
    toplevel: str
    goal: str
    confirm_timeout: int
    activation_timeout: int
    magic_rollback: bool
    auto_rollback: bool
    systemd: bool
    unit: str
    profile: str = SYSTEM_PROFILE


@dataclass(frozen=True)
class ActivationReport:
    status: str  # "0", exit code, "running", "starting", "lost"
    outcome: str  # "", confirmed, kept, rolling-back, rolled-back, rollback-failed, not-changed
    current: str
    profile: str
    exit_status: int = 0

    @property
    def finished(self) -> bool:
        return self.status not in ("running", "starting")

    @property
    def succeeded(self) -> bool:
        return self.status == "0"


def parse_report(text: str, exit_status: int = 0) -> ActivationReport:
    values = _fields(text)
    return ActivationReport(
        status=values.get("status", ""),
        outcome=values.get("outcome", ""),
        current=values.get("current", ""),
        profile=values.get("profile", ""),
        exit_status=exit_status,
    )


def begin_argv(plan: Activation) -> list[str]:
    return script_argv(
        "begin",
        plan.state_dir,
        plan.profile,
        plan.toplevel,
        plan.goal,
        str(plan.confirm_timeout),
        str(plan.activation_timeout),
        "1" if plan.magic_rollback else "0",
        "1" if plan.auto_rollback else "0",
        "1" if plan.systemd else "0",
        plan.unit,
    )


async def begin(remote: Remote, plan: Activation) -> None:
    """Arm the rollback timer (magic rollback), set the profile (switch/boot) and start
    switch-to-configuration detached (``systemd-run`` or ``setsid``), so an SSH drop cannot kill it."""
    await remote.run(begin_argv(plan), root=True, time_limit=120)


async def wait(remote: Remote, state_dir: str, seconds: int) -> ActivationReport:
    """Wait up to ``seconds`` for switch-to-configuration (and an automatic rollback) to finish."""
    result = await remote.run(script_argv("wait", state_dir, str(seconds)), time_limit=seconds + 60)
    return parse_report(result.stdout, result.exit_status)


async def hold(remote: Remote, state_dir: str, seconds: int) -> ActivationReport:
    """Move the rollback deadline ``seconds`` ahead (only after a fresh login proved the target reachable)."""
    result = await remote.run(script_argv("hold", state_dir, str(seconds)), root=True, check=False, time_limit=60)
    return parse_report(result.stdout, result.exit_status)


async def decide(remote: Remote, state_dir: str, outcome: str, reason: str) -> ActivationReport:
    """Settle the activation as ``confirmed`` or ``kept``; exit status 3 when it was already settled."""
    argv = script_argv("decide", state_dir, outcome, reason)
    result = await remote.run(argv, root=True, check=False, time_limit=60)
    return parse_report(result.stdout, result.exit_status)


async def rollback(remote: Remote, state_dir: str, reason: str, *, time_limit: float = 600) -> ActivationReport:
    """Stop the activation if it still runs and restore the previous generation (unless settled)."""
    result = await remote.run(script_argv("rollback", state_dir, reason), root=True, check=False, time_limit=time_limit)
    return parse_report(result.stdout, result.exit_status)


async def report(remote: Remote, state_dir: str) -> ActivationReport:
    result = await remote.run(script_argv("report", state_dir), time_limit=60)
    return parse_report(result.stdout, result.exit_status)


def switch_generation_argv(profile: str, generation: int, goal: str) -> list[str]:
    return script_argv("switch-generation", profile, str(generation), goal)


async def switch_generation(
    remote: Remote, generation: int, goal: str, *, profile: str = SYSTEM_PROFILE, time_limit: float = 600
) -> RemoteResult:
    """Manual rollback: make ``generation`` current and activate it."""
    return await remote.run(switch_generation_argv(profile, generation, goal), root=True, time_limit=time_limit)


def dry_activate_argv(toplevel: str) -> list[str]:
    return [f"{toplevel}/bin/switch-to-configuration", "dry-activate"]


async def dry_activate(remote: Remote, toplevel: str, *, time_limit: float = 600) -> RemoteResult:
    return await remote.run(dry_activate_argv(toplevel), root=True, time_limit=time_limit)


async def run_check(remote: Remote, command: str, *, time_limit: float) -> RemoteResult:
    """A health check from boards.toml: run by the login shell, healthy when it exits 0."""
    return await remote.run(["sh", "-c", command], check=False, time_limit=time_limit)
