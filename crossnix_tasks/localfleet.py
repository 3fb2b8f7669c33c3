"""Loopback targets on this machine: real OpenSSH ``sshd`` processes, each with its own ``/nix``.

What ``inv demo`` deploys to (and what anyone can use to try crossnix without hardware). Every target is
``sshd`` started through ``unshare --mount --propagation private`` with private directories bind-mounted over
``/nix``, ``/etc/nix``, ``/run``, ``/root`` and ``/tmp``, so it has an empty Nix store and profile of its own
while Debian's ``/usr/bin/nix*`` keep working inside. Targets listen on 127.0.0.1 only; each has its own host
key, recorded in a known_hosts file, and accepts one client key. ``sshd`` daemonizes, so starting a target is
one short ``process.run``; stopping it kills every process of its mount namespace (matched through
``/proc/PID/ns/mnt``, never by name). Needs root, ``unshare`` (util-linux) and ``openssh-server``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import asyncssh

from crossnix_tasks import process
from crossnix_tasks.errors import CrossnixError

LOOPBACK = "127.0.0.1"
SSHD = "/usr/sbin/sshd"
CONTROL_DIR = "/run/crossnix-local"  # inside a target: sshd config, host key, authorized_keys, pid, log
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,47}$")
# Bind "$1" onto "$2" for each pair until "--", then exec the rest (values only as positional parameters).
_BIND = 'while [ "$1" != "--" ]; do mount --bind "$1" "$2" || exit 111; shift 2; done; shift; exec "$@"'


def unavailable_reason() -> str | None:
    """None when this machine can run local targets, else why not."""
    if os.geteuid() != 0:
        return "local targets need root (mount namespaces)"
    for tool in (SSHD, "/usr/bin/unshare", "/usr/bin/nix"):
        if not os.access(tool, os.X_OK):
            return f"{tool} is missing (run scripts/setup-system.sh)"
    return None


@dataclass
class LocalTarget:
    name: str
    port: int
    dir: Path
    host_key: str  # "ssh-ed25519 AAAA..."
    pid: int | None = None
    mntns: str | None = None

    @property
    def host(self) -> str:
        return LOOPBACK

    def host_path(self, target_path: str) -> Path:
        """Where a path inside the target (under /nix, /etc/nix, /run, /root, /tmp) lives on this machine."""
        for inside, outside in (("/etc/nix", "etc-nix"), ("/nix", "nix"), ("/run", "run"), ("/root", "root"),
                                ("/tmp", "tmp")):
            if target_path == inside or target_path.startswith(inside + "/"):
                return self.dir / outside / target_path[len(inside) :].lstrip("/")
        raise ValueError(f"{target_path} is not private to the target")

    def current_system(self) -> str | None:
        link = self.dir / "run" / "current-system"
        return os.readlink(link) if link.is_symlink() else None


def _mntns(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/mnt")
    except OSError:
        return None


def sigkill(pid: int, still: Callable[[int], bool] = lambda pid: True) -> bool:
    """SIGKILL ``pid`` through a pidfd, if ``still(pid)`` holds once the pidfd pins the process (so a recycled
    pid is never hit). True when the signal was sent."""
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        return False
    try:
        if still(pid):
            signal.pidfd_send_signal(fd, signal.SIGKILL)
            return True
    except OSError:
        pass
    finally:
        os.close(fd)
    return False


def kill_namespace(mntns: str | None, timeout: float = 5.0) -> None:
    """SIGKILL every process in mount namespace ``mntns`` (never our own)."""
    if not mntns or mntns == _mntns(os.getpid()):
        return
    deadline = time.monotonic() + timeout
    while True:
        found = False
        for entry in os.listdir("/proc"):
            if entry.isdigit() and _mntns(int(entry)) == mntns:
                found = sigkill(int(entry), still=lambda pid: _mntns(pid) == mntns) or found
        if not found or time.monotonic() > deadline:
            return
        time.sleep(0.02)


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def prepare_nix_state(nix: Path) -> None:
    """Lay out a fresh private ``/nix`` before anything uses it.

    Nix 2.8 creates ``var/nix/gcroots/profiles`` (a link to the profiles directory) on first use with a
    check-then-create; two Nix processes starting at once on a fresh store race there ("File exists").
    """
    state = nix / "var" / "nix"
    for sub in ("store", "var/nix/profiles", "var/nix/gcroots"):
        (nix / sub).mkdir(parents=True, exist_ok=True)
    link = state / "gcroots" / "profiles"
    if not link.is_symlink():
        link.symlink_to("/nix/var/nix/profiles")


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.chmod(tmp, mode)
    os.replace(tmp, path)


class LocalFleet:
    """``async with LocalFleet() as fleet: await fleet.start(["a", "b"])``; stopped and removed on exit."""

    def __init__(self, root: Path | None = None, *, trusted_public_keys: Sequence[str] = ()) -> None:
        reason = unavailable_reason()
        if reason:
            raise CrossnixError(f"cannot start local targets: {reason}")
        self.root = Path(tempfile.mkdtemp(prefix="crossnix-local-")) if root is None else root
        self._own_root = root is None
        if any(ch.isspace() for ch in str(self.root)):
            raise CrossnixError(f"local fleet directory {self.root} must not contain whitespace")
        self.trusted_public_keys = tuple(trusted_public_keys)
        self.targets: dict[str, LocalTarget] = {}
        self.client_key = self.root / "client" / "id_ed25519"
        self.known_hosts = self.root / "client" / "known_hosts"
        self.client_key.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = asyncssh.generate_private_key("ssh-ed25519", comment="crossnix-local-client")
        key.write_private_key(str(self.client_key))
        os.chmod(self.client_key, 0o600)
        self.client_public_key = key.export_public_key().decode().strip()

    async def __aenter__(self) -> LocalFleet:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def start(self, names: Sequence[str]) -> list[LocalTarget]:
        started = await asyncio.gather(*(self._start(name) for name in names))
        self._write_known_hosts()
        return list(started)

    async def _start(self, name: str) -> LocalTarget:
        if not _NAME.match(name) or name in self.targets:
            raise CrossnixError(f"invalid or duplicate local target name {name!r}")
        directory = self.root / "targets" / name
        for sub, mode in (("nix", 0o755), ("etc-nix", 0o755), ("run", 0o755), ("run/sshd", 0o755),
                          ("run/crossnix-local", 0o755), ("root", 0o700), ("tmp", 0o1777)):
            (directory / sub).mkdir(parents=True, exist_ok=True)
            os.chmod(directory / sub, mode)
        prepare_nix_state(directory / "nix")
        _write(directory / "root" / ".bashrc", "# crossnix local target: keep non-interactive logins fast\n")
        control = directory / "run" / "crossnix-local"
        host_key = asyncssh.generate_private_key("ssh-ed25519", comment=f"crossnix-local-{name}")
        host_key.write_private_key(str(control / "host_ed25519"))
        os.chmod(control / "host_ed25519", 0o600)
        _write(control / "authorized_keys", self.client_public_key + "\n")
        _write(directory / "etc-nix" / "nix.conf", "\n".join([
            "# crossnix local target",
            "sandbox = false",
            "build-users-group =",
            "substituters =",
            "experimental-features = nix-command flakes",
            "require-sigs = true",
            "trusted-public-keys = " + " ".join(self.trusted_public_keys),
            "",
        ]))
        target = LocalTarget(name, 0, directory, host_key.export_public_key().decode().strip())
        for _ in range(5):
            target.port = free_port()
            _write(control / "sshd_config", self._sshd_config(target.port))
            try:
                await self._launch(target)
                break
            except process.ProcessFailed as exc:
                if "Address already in use" not in exc.message:
                    raise CrossnixError(f"local target {name}: sshd did not start: {exc.message}") from None
        else:
            raise CrossnixError(f"local target {name}: no free loopback port")
        self.targets[name] = target
        return target

    def _sshd_config(self, port: int) -> str:
        c = CONTROL_DIR
        return "\n".join([
            "# crossnix local target (paths as seen inside the target)",
            f"Port {port}", f"ListenAddress {LOOPBACK}", "AddressFamily inet",
            f"PidFile {c}/sshd.pid", f"HostKey {c}/host_ed25519", f"AuthorizedKeysFile {c}/authorized_keys",
            "PermitRootLogin prohibit-password", "PubkeyAuthentication yes", "PasswordAuthentication no",
            "KbdInteractiveAuthentication no", "UsePAM no", "StrictModes no", "LogLevel ERROR",
            "MaxStartups 200:30:400", "MaxSessions 50", "PrintMotd no", "PrintLastLog no", "UseDNS no",
            "X11Forwarding no", "Subsystem sftp internal-sftp", "",
        ])

    def _binds(self, target: LocalTarget) -> list[str]:
        d = target.dir
        # /tmp last: the sources may live under /tmp
        return [str(d / "nix"), "/nix", str(d / "etc-nix"), "/etc/nix", str(d / "run"), "/run",
                str(d / "root"), "/root", str(d / "tmp"), "/tmp"]

    async def _launch(self, target: LocalTarget) -> None:
        pidfile = target.dir / "run" / "crossnix-local" / "sshd.pid"
        pidfile.unlink(missing_ok=True)
        # sshd without -D daemonizes once it listens: the command returns, the daemon stays in the namespace.
        await process.run(
            ["unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-c", _BIND, "crossnix-local",
             *self._binds(target), "--", SSHD, "-f", f"{CONTROL_DIR}/sshd_config", "-E", f"{CONTROL_DIR}/sshd.log"],
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"},
            cwd="/",
            timeout=30,
        )
        for _ in range(500):
            with contextlib.suppress(FileNotFoundError, ValueError):
                target.pid = int(pidfile.read_text().strip())
                break
            await asyncio.sleep(0.01)
        if target.pid is None:
            raise CrossnixError(f"local target {target.name}: sshd wrote no pid file")
        target.mntns = _mntns(target.pid)

    def _write_known_hosts(self) -> None:
        lines = [f"[{LOOPBACK}]:{t.port} {t.host_key}" for t in self.targets.values()]
        _write(self.known_hosts, "\n".join(lines) + "\n", 0o600)

    def set_behaviour(self, name: str, behaviour: str | None) -> None:
        """For the stand-in's recording switch-to-configuration: "ok" | "fail" | "hang" | None (default)."""
        path = self.targets[name].host_path("/nix/var/crossnix-fake/behaviour")
        if behaviour is None:
            path.unlink(missing_ok=True)
        else:
            _write(path, behaviour + "\n")

    async def stop(self) -> None:
        for target in self.targets.values():
            await asyncio.to_thread(kill_namespace, target.mntns)
            target.pid = target.mntns = None
        if self._own_root:
            await asyncio.to_thread(shutil.rmtree, self.root, True)
