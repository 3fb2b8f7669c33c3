"""A fleet of REAL OpenSSH targets on loopback, each with a private /nix.

Every target is ``/usr/sbin/sshd -D`` started through
``unshare --mount --propagation private`` with bind mounts of private
directories over ``/nix``, ``/etc/nix``, ``/run``, ``/root``
(``/home/<user>`` for a non-root login user) and ``/tmp``.  Debian's Nix
binaries live in /usr/bin, outside /nix, so ``nix-store``, ``nix-env``,
``nix-daemon --stdio`` (ssh-ng) all work inside a target against its own,
initially empty store.  See tests/rig/README.md.

Host layout under ``root`` (default ``/tmp/cxr-XXXXXXXX``)::

    ssh/id_ed25519{,.pub}  client key      ssh/known_hosts  ssh/ssh_config
    t/<name>/nix           -> /nix         t/<name>/etc-nix -> /etc/nix
    t/<name>/run           -> /run         (run/crossnix-rig: sshd config,
    t/<name>/home-root     -> /root         host key, authorized_keys, log)
    t/<name>/home-user     -> /home/<user> t/<name>/tmp     -> /tmp

Loopback only: targets listen on 127.0.0.1, ssh_config pins HostName
127.0.0.1 and has a catch-all so unknown aliases never reach DNS.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

from crossnix_tasks.localfleet import kill_namespace, prepare_nix_state, sigkill

from .fakesystem import FAKE_STATE_DIR, host_nix_env

if TYPE_CHECKING:
    import asyncssh

__all__ = [
    "ActivationRecord",
    "Fleet",
    "Generation",
    "RigError",
    "Target",
    "TargetKind",
    "iter_processes_in",
    "rig_unavailable_reason",
]

LOOPBACK = "127.0.0.1"
SSHD = "/usr/sbin/sshd"
RIG_RUN_DIR = "/run/crossnix-rig"  # inside a target (host: <target dir>/run/crossnix-rig)
SYSTEM_PROFILE = "/nix/var/nix/profiles/system"
USER_MARKER = "crossnix-rig test user"
REAPER = Path(__file__).resolve().parent / "bin" / "crossnix-rig-reaper"
_CLEAN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,47}")
_USER_RE = re.compile(r"[a-z_][a-z0-9_-]{0,30}")
_MINIMAL_BASHRC = "# crossnix test rig: minimal bashrc (fast non-interactive ssh commands)\n"

# Bind "$1" onto "$2" for each pair until "--", then exec the rest.  Values
# only ever travel as positional parameters.
_BIND_SCRIPT = (
    'while [ "$1" != "--" ]; do mount --bind "$1" "$2" || exit 111; shift 2; done; shift; exec "$@"'
)

TargetKind = Literal["sshd", "unreachable", "blackhole"]


class RigError(RuntimeError):
    """The rig could not do what was asked (with the relevant log excerpt)."""


def rig_unavailable_reason() -> str | None:
    """None if this machine can run real targets, else why not (for pytest.skip)."""
    if os.geteuid() != 0:
        return "the real-fleet rig needs root (mount namespaces, users, sudoers)"
    for tool in (SSHD, "/usr/bin/ssh", "/usr/bin/ssh-keygen", "/usr/bin/unshare", "/usr/bin/nsenter",
                 "/usr/bin/nix", "/usr/bin/sudo"):
        if not os.access(tool, os.X_OK):
            return f"{tool} is missing"
    return None


# ---------------------------------------------------------------------------
# public value types
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """Snapshot of one target (``Fleet.target(name)``; re-read after changes)."""

    name: str
    kind: TargetKind
    host: str
    port: int
    user: str
    state_dir: Path
    pid: int | None
    host_key: str  # the key the server really presents ("ssh-ed25519 AAAA...")
    known_host_key: str  # the key recorded in known_hosts (differs after rotate_host_key)
    require_sigs: bool
    trusted_public_keys: tuple[str, ...]
    sudo_password: str | None
    mntns: str | None  # "mnt:[inode]" of the running target's private mount namespace

    @property
    def running(self) -> bool:
        return self.pid is not None

    @property
    def alias(self) -> str:
        """ssh_config Host alias (use with ``ssh -F fleet.ssh_config``)."""
        return self.name

    @property
    def store_uri(self) -> str:
        """``ssh-ng://<alias>``; needs ``NIX_SSHOPTS=-F <ssh_config>`` (see Fleet.nix_env)."""
        return f"ssh-ng://{self.name}"

    @property
    def nix_store_dir(self) -> Path:
        return self.state_dir / "nix" / "store"


@dataclass(frozen=True)
class Generation:
    number: int
    path: str  # store path as seen inside the target
    current: bool


@dataclass(frozen=True)
class ActivationRecord:
    label: str
    goal: str
    time: float


# ---------------------------------------------------------------------------
# process helpers
# ---------------------------------------------------------------------------


def _mntns(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/mnt")
    except OSError:
        return None


class _Reaper:
    """One watchdog process per test process (tests/rig/bin/crossnix-rig-reaper)."""

    _lock = threading.Lock()
    _proc: subprocess.Popen[str] | None = None

    @classmethod
    def send(cls, **msg: Any) -> None:
        with cls._lock:
            if cls._proc is None or cls._proc.poll() is not None:
                try:
                    cls._proc = subprocess.Popen(
                        [sys.executable, str(REAPER)], stdin=subprocess.PIPE,
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                        start_new_session=True, cwd="/", text=True, env={"PATH": _CLEAN_PATH},
                    )
                except OSError:
                    cls._proc = None
                    return
            stdin = cls._proc.stdin
            assert stdin is not None
            try:
                stdin.write(json.dumps(msg) + "\n")
                stdin.flush()
            except OSError:
                pass


# ---------------------------------------------------------------------------
# local Unix users for sudo tests (shared by all fleets of this process)
# ---------------------------------------------------------------------------


@dataclass
class _UserRec:
    name: str
    password: str | None
    sudo: bool
    refs: int
    sudoers: Path


_users: dict[str, _UserRec] = {}
_users_lock = threading.Lock()


def _acquire_user(name: str, password: str | None, sudo: bool) -> _UserRec:
    if not _USER_RE.fullmatch(name) or name == "root":
        raise ValueError(f"invalid rig user name {name!r}")
    if password is not None and (not password or any(c in password for c in ":\n\r\0")):
        raise ValueError("sudo password must be non-empty without ':' or newlines")
    with _users_lock:
        rec = _users.get(name)
        if rec is not None:
            if (rec.password, rec.sudo) != (password, sudo):
                raise RigError(f"user {name!r} already exists in this test process with other settings")
            rec.refs += 1
            return rec
        try:
            existing: pwd.struct_passwd | None = pwd.getpwnam(name)
        except KeyError:
            existing = None
        if existing is not None and existing.pw_gecos != USER_MARKER:
            raise RigError(f"refusing to touch pre-existing system user {name!r}")
        sudoers = Path("/etc/sudoers.d") / f"crossnix-rig-{name}"
        _Reaper.send(op="user", name=name, sudoers=str(sudoers))
        if existing is None:
            _run(["useradd", "--create-home", "--user-group", "--shell", "/bin/bash",
                  "--comment", USER_MARKER, name])
        if password is not None:
            _run(["chpasswd"], input=f"{name}:{password}\n")
        else:
            # "!" (useradd's default) means locked: sshd would refuse even key logins
            _run(["usermod", "--password", "*", name])
        if sudo:
            rule = "ALL=(ALL:ALL) ALL" if password is not None else "ALL=(ALL:ALL) NOPASSWD: ALL"
            text = (f"# crossnix test rig (tests/rig/fleet.py); removed at teardown\n"
                    f"Defaults:{name} !lecture, !mail_badpass\n{name} {rule}\n")
            fd, tmp = tempfile.mkstemp(prefix=".crossnix-rig-", dir="/etc/sudoers.d")
            try:
                with os.fdopen(fd, "w") as f:
                    f.write(text)
                os.chmod(tmp, 0o440)
                _run(["visudo", "-c", "-q", "-f", tmp])
                os.replace(tmp, sudoers)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        rec = _UserRec(name, password, sudo, 1, sudoers)
        _users[name] = rec
        return rec


def _release_user(name: str) -> None:
    with _users_lock:
        rec = _users.get(name)
        if rec is None:
            return
        rec.refs -= 1
        if rec.refs > 0:
            return
        del _users[name]
        with contextlib.suppress(FileNotFoundError):
            rec.sudoers.unlink()
        subprocess.run(["userdel", "--force", "--remove", name], capture_output=True, check=False)
        _Reaper.send(op="unuser", name=name)


def _run(argv: Sequence[str], *, input: str | None = None, timeout: float = 60) -> str:
    proc = subprocess.run(list(argv), input=input, capture_output=True, text=True, timeout=timeout, check=False,
                          env={"PATH": _CLEAN_PATH, "LANG": "C.UTF-8"}, cwd="/")
    if proc.returncode != 0:
        raise RigError(f"{shlex.join(argv)} failed (rc={proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


def _ssh_keygen(path: Path, comment: str) -> str:
    for p in (path, path.with_name(path.name + ".pub")):
        p.unlink(missing_ok=True)
    _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)])
    return " ".join(path.with_name(path.name + ".pub").read_text().split()[:2])


def _write_atomic(path: Path, text: str, mode: int = 0o644) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


# ---------------------------------------------------------------------------
# the fleet
# ---------------------------------------------------------------------------


@dataclass
class _T:  # mutable internal record
    name: str
    kind: TargetKind
    port: int
    user: str
    dir: Path
    require_sigs: bool
    trusted_public_keys: tuple[str, ...]
    extra_nix_conf: tuple[str, ...]
    sudo_password: str | None
    sudo: bool
    host_key: str
    known_host_key: str
    proc: subprocess.Popen[bytes] | None = None
    nix_daemon: bool = False
    daemon: subprocess.Popen[bytes] | None = None
    mntns: str | None = None
    sock: socket.socket | None = None
    user_acquired: bool = False

    @property
    def run_dir(self) -> Path:
        return self.dir / "run" / "crossnix-rig"


_live_fleets: weakref.WeakSet[Fleet] = weakref.WeakSet()


@atexit.register
def _stop_live_fleets() -> None:
    for fleet in list(_live_fleets):
        with contextlib.suppress(Exception):
            fleet.stop_all()


class Fleet:
    """Real sshd targets with private /nix on 127.0.0.1.  Context manager.

    Sync API (each call takes milliseconds); ``a*`` variants run it in a
    thread for use inside a running event loop.  Thread-safe.
    """

    def __init__(self, root: Path | str | None = None, *, keep: bool | None = None,
                 connect_timeout: float = 10.0) -> None:
        reason = rig_unavailable_reason()
        if reason:
            raise RigError(reason)
        if root is None:
            self.root = Path(tempfile.mkdtemp(prefix="cxr-", dir="/tmp"))
        else:
            self.root = Path(root).resolve()
            self.root.mkdir(parents=True, exist_ok=True)
        for shadowed in ("/nix", "/etc/nix", "/run", "/root", "/home"):
            if self.root.is_relative_to(shadowed):
                raise RigError(f"fleet root must not be under {shadowed} (it is bind-mounted over)")
        if any(c.isspace() for c in str(self.root)):
            raise RigError("fleet root must not contain whitespace (NIX_SSHOPTS is split on spaces)")
        self.keep = bool(os.environ.get("CROSSNIX_RIG_KEEP")) if keep is None else keep
        self.connect_timeout = connect_timeout
        self._lock = threading.RLock()
        self._targets: dict[str, _T] = {}
        self._used_ports: set[int] = set()
        self._closed = False
        ssh = self.root / "ssh"
        ssh.mkdir(mode=0o700, exist_ok=True)
        (self.root / "t").mkdir(exist_ok=True)
        self.client_key = ssh / "id_ed25519"
        self.client_public_key = _ssh_keygen(self.client_key, "crossnix-rig-client")
        self.known_hosts = ssh / "known_hosts"
        self.ssh_config = ssh / "ssh_config"
        self._write_client_files()
        if not self.keep:
            _Reaper.send(op="dir", path=str(self.root))
        _live_fleets.add(self)

    # -- context manager -------------------------------------------------

    def __enter__(self) -> Fleet:
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop_all()

    # -- queries ---------------------------------------------------------

    @property
    def names(self) -> list[str]:
        with self._lock:
            return list(self._targets)

    def target(self, name: str) -> Target:
        with self._lock:
            t = self._get(name)
            return Target(
                name=t.name, kind=t.kind, host=LOOPBACK, port=t.port, user=t.user, state_dir=t.dir,
                pid=t.proc.pid if t.proc is not None else None, host_key=t.host_key,
                known_host_key=t.known_host_key, require_sigs=t.require_sigs,
                trusted_public_keys=t.trusted_public_keys, sudo_password=t.sudo_password,
                mntns=t.mntns,
            )

    def targets(self) -> list[Target]:
        return [self.target(n) for n in self.names]

    def _get(self, name: str) -> _T:
        try:
            return self._targets[name]
        except KeyError:
            raise KeyError(f"no target named {name!r} in this fleet") from None

    # -- creating and starting --------------------------------------------

    def start(self, name: str, *, user: str = "root", sudo_password: str | None = None,
              sudo: bool = True, require_sigs: bool = True,
              trusted_public_keys: Sequence[str] = (), extra_nix_conf: Sequence[str] = (),
              nix_daemon: bool = False) -> Target:
        """Create and start a NEW target (use ``restart`` for an existing one).

        ``user`` other than root creates (idempotently, per process) a real
        local Unix user authorised for the client key; with ``sudo_password``
        it gets a password-checked sudo rule, without one a NOPASSWD rule
        (``sudo=False``: no sudo rule at all).  ``nix_daemon`` also runs ``nix-daemon``
        in the target, so a non-root user's ``nix-daemon --stdio`` (ssh-ng) goes through it
        as an untrusted client, like on NixOS: copies then need trusted signatures.
        """
        return self.start_many([name], user=user, sudo_password=sudo_password, sudo=sudo,
                               require_sigs=require_sigs, trusted_public_keys=trusted_public_keys,
                               extra_nix_conf=extra_nix_conf, nix_daemon=nix_daemon)[0]

    def start_many(self, names: Sequence[str], *, user: str = "root", sudo_password: str | None = None,
                   sudo: bool = True, require_sigs: bool = True,
                   trusted_public_keys: Sequence[str] = (),
                   extra_nix_conf: Sequence[str] = (), nix_daemon: bool = False) -> list[Target]:
        """Create and start several new targets in parallel (same settings)."""
        if sudo_password is not None and user == "root":
            raise ValueError("sudo_password needs a non-root user")
        with self._lock:
            self._check_open()
            for n in names:
                if not _NAME_RE.fullmatch(n):
                    raise ValueError(f"invalid target name {n!r}")
                if n in self._targets:
                    raise RigError(f"target {n!r} already exists; use restart()")
            if len(set(names)) != len(names):
                raise ValueError("duplicate target names")
            created = [self._create(n, "sshd", user=user, sudo_password=sudo_password, sudo=sudo,
                                    require_sigs=require_sigs,
                                    trusted_public_keys=tuple(trusted_public_keys),
                                    extra_nix_conf=tuple(extra_nix_conf)) for n in names]
            for t in created:
                t.nix_daemon = nix_daemon
            self._write_client_files()
            self._launch(created)
            return [self.target(t.name) for t in created]

    def _check_open(self) -> None:
        if self._closed:
            raise RigError("fleet already stopped (stop_all was called)")

    def _create(self, name: str, kind: TargetKind, *, user: str = "root",
                sudo_password: str | None = None, sudo: bool = True, require_sigs: bool = True,
                trusted_public_keys: tuple[str, ...] = (),
                extra_nix_conf: tuple[str, ...] = ()) -> _T:
        d = self.root / "t" / name
        d.mkdir()
        for sub, mode in (("nix", 0o755), ("etc-nix", 0o755), ("run", 0o755), ("run/sshd", 0o755),
                          ("run/crossnix-rig", 0o755), ("tmp", 0o1777), ("home-root", 0o700)):
            (d / sub).mkdir(exist_ok=True)
            os.chmod(d / sub, mode)
        prepare_nix_state(d / "nix")
        (d / "home-root" / ".bashrc").write_text(_MINIMAL_BASHRC)
        t = _T(name=name, kind=kind, port=0, user=user, dir=d, require_sigs=require_sigs,
               trusted_public_keys=trusted_public_keys, extra_nix_conf=extra_nix_conf,
               sudo_password=sudo_password, sudo=sudo, host_key="", known_host_key="")
        t.host_key = t.known_host_key = _ssh_keygen(t.run_dir / "host_ed25519", f"crossnix-rig-{name}")
        _write_atomic(t.run_dir / "authorized_keys", self.client_public_key + "\n")
        self._write_nix_conf(t)
        if user != "root":
            rec = _acquire_user(user, sudo_password, sudo)
            t.user_acquired = True
            pw = pwd.getpwnam(rec.name)
            home = d / "home-user"
            home.mkdir(exist_ok=True)
            (home / ".bashrc").write_text(_MINIMAL_BASHRC)
            for p in (home, home / ".bashrc"):
                os.chown(p, pw.pw_uid, pw.pw_gid)
            os.chmod(home, 0o755)
        if kind == "blackhole":
            t.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            t.sock.bind((LOOPBACK, 0))
            t.sock.listen(4096)  # never accept(): TCP connects, no SSH banner ever
            t.port = t.sock.getsockname()[1]
        else:
            t.port = self._alloc_port()
        self._used_ports.add(t.port)
        self._targets[name] = t
        return t

    def _write_nix_conf(self, t: _T) -> None:
        lines = ["# crossnix test rig target nix.conf", "sandbox = false", "build-users-group =",
                 "substituters =", "experimental-features = nix-command flakes",
                 f"require-sigs = {'true' if t.require_sigs else 'false'}",
                 "trusted-public-keys = " + " ".join(t.trusted_public_keys), *t.extra_nix_conf]
        if any("\n" in ln for ln in lines):
            raise ValueError("nix.conf lines must not contain newlines")
        _write_atomic(t.dir / "etc-nix" / "nix.conf", "\n".join(lines) + "\n")

    def _alloc_port(self) -> int:
        for _ in range(100):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind((LOOPBACK, 0))
                port = int(s.getsockname()[1])
            if port not in self._used_ports:
                return port
        raise RigError("could not allocate a free loopback port")

    def _sshd_config(self, t: _T) -> str:
        r = RIG_RUN_DIR
        return "\n".join([
            "# crossnix test rig target sshd_config (paths as seen inside the target)",
            f"Port {t.port}", f"ListenAddress {LOOPBACK}", "AddressFamily inet",
            f"PidFile {r}/sshd.pid", f"HostKey {r}/host_ed25519",
            f"AuthorizedKeysFile {r}/authorized_keys", "PermitRootLogin prohibit-password",
            "PubkeyAuthentication yes", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
            "UsePAM no", "StrictModes no", "Subsystem sftp internal-sftp", "LogLevel ERROR",
            "MaxStartups 200:30:400", "MaxSessions 50", "PrintMotd no", "PrintLastLog no",
            "UseDNS no", "X11Forwarding no", "",
        ])

    def _bind_pairs(self, t: _T) -> list[str]:
        d = t.dir
        pairs = [str(d / "nix"), "/nix", str(d / "etc-nix"), "/etc/nix", str(d / "run"), "/run",
                 str(d / "home-root"), "/root"]
        if t.user != "root":
            pairs += [str(d / "home-user"), pwd.getpwnam(t.user).pw_dir]
        return [*pairs, str(d / "tmp"), "/tmp"]  # /tmp last: the sources may live under /tmp

    def _ns_argv(self, t: _T, argv: Sequence[str]) -> list[str]:
        return ["unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-c", _BIND_SCRIPT,
                "crossnix-rig-target", *self._bind_pairs(t), "--", *argv]

    def _launch(self, targets: Sequence[_T], attempts: int = 5) -> None:
        pending = list(targets)
        for attempt in range(attempts):
            procs: list[tuple[_T, subprocess.Popen[bytes]]] = []
            for t in pending:
                _write_atomic(t.run_dir / "sshd_config", self._sshd_config(t))
                (t.run_dir / "sshd.pid").unlink(missing_ok=True)
                with open(t.dir / "launch.log", "ab") as log:
                    proc = subprocess.Popen(
                        self._ns_argv(t, [SSHD, "-D", "-f", f"{RIG_RUN_DIR}/sshd_config",
                                          "-E", f"{RIG_RUN_DIR}/sshd.log"]),
                        stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd="/",
                        env={"PATH": _CLEAN_PATH, "LANG": "C.UTF-8"}, start_new_session=True,
                    )
                procs.append((t, proc))
            retry: list[_T] = []
            deadline = time.monotonic() + 15
            waiting = list(procs)
            while waiting:
                still: list[tuple[_T, subprocess.Popen[bytes]]] = []
                for t, proc in waiting:
                    pidfile = t.run_dir / "sshd.pid"
                    if proc.poll() is not None:
                        tail = self._log_tail(t)
                        if "Address already in use" in tail and attempt + 1 < attempts:
                            self._used_ports.discard(t.port)
                            t.port = self._alloc_port()
                            self._used_ports.add(t.port)
                            retry.append(t)
                            continue
                        raise RigError(f"sshd for target {t.name!r} exited rc={proc.returncode}:\n{tail}")
                    try:
                        ready = pidfile.read_text().strip() == str(proc.pid)
                    except FileNotFoundError:
                        ready = False
                    if ready:
                        t.proc = proc
                        t.mntns = _mntns(proc.pid)
                        _Reaper.send(op="pid", pid=proc.pid, mntns=t.mntns or "")
                        if t.nix_daemon:
                            self._start_daemon(t)
                    else:
                        still.append((t, proc))
                waiting = still
                if waiting and time.monotonic() > deadline:
                    for _t, proc in waiting:
                        proc.kill()
                        proc.wait()
                    raise RigError(f"sshd did not become ready: {[t.name for t, _ in waiting]}")
                if waiting:
                    time.sleep(0.005)
            if not retry:
                break
            self._write_client_files()
            pending = retry

    def _start_daemon(self, t: _T) -> None:
        assert t.proc is not None
        socket_path = t.dir / "nix" / "var" / "nix" / "daemon-socket" / "socket"
        socket_path.unlink(missing_ok=True)
        with open(t.dir / "launch.log", "ab") as log:
            t.daemon = subprocess.Popen(
                ["nsenter", "--mount", "--target", str(t.proc.pid), "--", "/usr/bin/nix-daemon"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd="/",
                env={"PATH": _CLEAN_PATH, "LANG": "C.UTF-8", "HOME": "/root"}, start_new_session=True,
            )
        deadline = time.monotonic() + 15
        while not socket_path.exists():
            if t.daemon.poll() is not None or time.monotonic() > deadline:
                raise RigError(f"nix-daemon for target {t.name!r} did not start:\n{self._log_tail(t)}")
            time.sleep(0.01)

    def _log_tail(self, t: _T) -> str:
        out = []
        for p in (t.dir / "launch.log", t.run_dir / "sshd.log"):
            with contextlib.suppress(FileNotFoundError):
                out.append(p.read_text(errors="replace")[-4000:])
        return "\n".join(out)

    # -- stopping ------------------------------------------------------------

    def stop(self, name: str, *, timeout: float = 5.0) -> None:
        """Stop a target: sshd and EVERY process in its mount namespace.

        The port then refuses connections (known_hosts/ssh_config entries stay).
        """
        with self._lock:
            t = self._get(name)
            if t.sock is not None:
                t.sock.close()
                t.sock = None
            proc = t.proc
            if proc is None:
                return
            t.proc = None
            try:
                proc.send_signal(signal.SIGTERM)  # Popen: never a recycled PID
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            except ProcessLookupError:
                pass
            kill_namespace(t.mntns)  # crossnix_tasks.localfleet: pidfd-safe, never our own namespace
            if t.daemon is not None:  # killed with the namespace; reap it
                t.daemon.kill()
                t.daemon.wait()
                t.daemon = None
            _Reaper.send(op="unpid", pid=proc.pid)
            t.mntns = None

    def stop_all(self) -> None:
        """Stop every target, delete created users/sudoers, remove ``root`` (unless keep)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            errors: list[str] = []
            for t in self._targets.values():
                try:
                    self.stop(t.name)
                except Exception as e:
                    errors.append(f"{t.name}: {e}")
                if t.user_acquired:
                    t.user_acquired = False
                    _release_user(t.user)
            _live_fleets.discard(self)
            if not self.keep:
                shutil.rmtree(self.root, ignore_errors=True)
                _Reaper.send(op="undir", path=str(self.root))
            if errors:
                raise RigError("errors while stopping the fleet: " + "; ".join(errors))

    close = stop_all

    def restart(self, name: str) -> Target:
        """(Re)start a target with its existing store, keys, port and settings."""
        with self._lock:
            self._check_open()
            t = self._get(name)
            self.stop(name)
            if t.kind == "blackhole":
                t.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                t.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                t.sock.bind((LOOPBACK, t.port))
                t.sock.listen(4096)
            else:
                t.kind = "sshd"
                self._launch([t], attempts=1)
            return self.target(name)

    def reboot(self, name: str) -> Target:
        """Simulate a reboot: stop, wipe the target's /run, boot the boot-loader default.

        ``/run/current-system`` and ``/run/booted-system`` then point to what
        the last successful ``switch``/``boot`` selected (falling back to the
        system profile), like a real NixOS boot.
        """
        with self._lock:
            t = self._get(name)
            self.stop(name)
            boot = self._resolve(t, f"{FAKE_STATE_DIR}/boot-default") or self._resolve(t, SYSTEM_PROFILE)
            run = t.dir / "run"
            for entry in run.iterdir():
                if entry.name in ("crossnix-rig", "sshd"):
                    continue
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
            if boot:
                for link in ("current-system", "booted-system"):
                    os.symlink(boot, run / link)
            return self.restart(name)

    # -- failure modes -------------------------------------------------------

    def rotate_host_key(self, name: str) -> Target:
        """Give the target a NEW host key and restart it; known_hosts keeps the OLD key,
        so clients verifying against known_hosts must refuse it."""
        with self._lock:
            t = self._get(name)
            t.host_key = _ssh_keygen(t.run_dir / "host_ed25519", f"crossnix-rig-{name}-rotated")
            return self.restart(name)

    def trust_host_key(self, name: str) -> None:
        """Record the target's current host key in known_hosts (after rotate_host_key)."""
        with self._lock:
            t = self._get(name)
            t.known_host_key = t.host_key
            self._write_client_files()

    def unreachable(self, name: str) -> Target:
        """A target whose loopback port refuses connections.

        Existing target: stop it.  New name: create a never-started target with
        a port, a known_hosts key and an ssh_config block (``restart`` starts it).
        """
        with self._lock:
            self._check_open()
            if name in self._targets:
                self.stop(name)
            else:
                if not _NAME_RE.fullmatch(name):
                    raise ValueError(f"invalid target name {name!r}")
                self._create(name, "unreachable")
                self._write_client_files()
            return self.target(name)

    def blackhole(self, name: str) -> Target:
        """A NEW target whose loopback port accepts TCP but never sends an SSH banner."""
        with self._lock:
            self._check_open()
            if name in self._targets:
                raise RigError(f"target {name!r} already exists")
            if not _NAME_RE.fullmatch(name):
                raise ValueError(f"invalid target name {name!r}")
            self._create(name, "blackhole")
            self._write_client_files()
            return self.target(name)

    def drop_connections(self, name: str) -> int:
        """Cut every open SSH connection of a running target, like a network drop.

        Kills sshd's per-connection processes (children of the listener) and their
        process groups; the listener and detached processes (``setsid``, systemd-run
        style) survive.  Returns how many connections were cut.
        """
        with self._lock:
            t = self._get(name)
            if t.proc is None:
                return 0
            listener = t.proc.pid
        cut = 0
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == listener and sigkill(int(entry)):
                cut += 1
        return cut

    def refuse_logins(self, name: str, refuse: bool = True) -> None:
        """Make NEW logins fail (empty authorized_keys) or work again; open connections stay."""
        with self._lock:
            t = self._get(name)
            _write_atomic(t.run_dir / "authorized_keys", "" if refuse else self.client_public_key + "\n")

    # -- nix configuration ---------------------------------------------------

    def configure_nix(self, name: str, *, require_sigs: bool | None = None,
                      trusted_public_keys: Sequence[str] | None = None,
                      extra_nix_conf: Sequence[str] | None = None) -> Target:
        """Rewrite the target's /etc/nix/nix.conf (read by the next nix process there)."""
        with self._lock:
            t = self._get(name)
            if require_sigs is not None:
                t.require_sigs = require_sigs
            if trusted_public_keys is not None:
                t.trusted_public_keys = tuple(trusted_public_keys)
            if extra_nix_conf is not None:
                t.extra_nix_conf = tuple(extra_nix_conf)
            self._write_nix_conf(t)
            return self.target(name)

    # -- client side files ---------------------------------------------------

    def _write_client_files(self) -> None:
        kh: list[str] = []
        cfg: list[str] = ["# crossnix test rig ssh_config (loopback only)", ""]
        for t in self._targets.values():
            kh.append(f"[{LOOPBACK}]:{t.port} {t.known_host_key}")
            cfg += [f"Host {t.name}", f"  HostName {LOOPBACK}", f"  Port {t.port}", f"  User {t.user}", ""]
        cfg += [
            "# safety net: an unknown alias goes to loopback, never to DNS",
            "Host * !127.* !localhost",
            f"  HostName {LOOPBACK}",
            "",
            "Host *",
            f"  IdentityFile {self.client_key}",
            "  IdentitiesOnly yes",
            "  IdentityAgent none",
            f"  UserKnownHostsFile {self.known_hosts}",
            "  GlobalKnownHostsFile /dev/null",
            "  StrictHostKeyChecking yes",
            "  UpdateHostKeys no",
            "  CheckHostIP no",
            "  BatchMode yes",
            f"  ConnectTimeout {int(self.connect_timeout)}",
            "  ControlMaster no",
            "  ControlPath none",
            "  LogLevel ERROR",
            "",
        ]
        _write_atomic(self.known_hosts, "\n".join(kh) + "\n", 0o600)
        _write_atomic(self.ssh_config, "\n".join(cfg), 0o600)

    def nix_env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """Env for host ``nix`` talking to targets: ``nix copy --to ssh-ng://<alias>``."""
        env = host_nix_env({"NIX_SSHOPTS": f"-F {self.ssh_config}"})
        if extra:
            env.update(extra)
        return env

    def ssh_argv(self, name: str, command: str | Sequence[str] | None = None) -> list[str]:
        """OpenSSH argv; a sequence command is shlex-joined for the remote shell."""
        argv = ["ssh", "-F", str(self.ssh_config), self._get(name).name]
        if command is not None:
            argv += ["--", command if isinstance(command, str) else shlex.join(command)]
        return argv

    def ssh_run(self, name: str, command: str | Sequence[str], *, input: str | None = None,
                timeout: float = 60, check: bool = False) -> subprocess.CompletedProcess[str]:
        """Run a command on the target with the real OpenSSH client."""
        return subprocess.run(self.ssh_argv(name, command), input=input, capture_output=True, text=True,
                              timeout=timeout, check=check, env=self.nix_env(), cwd="/")

    def asyncssh_options(self, name: str, **overrides: Any) -> dict[str, Any]:
        """kwargs for ``asyncssh.connect(**...)``: known_hosts checked, no agent, no ~/.ssh/config."""
        t = self._get(name)
        opts: dict[str, Any] = {
            "host": LOOPBACK, "port": t.port, "username": t.user,
            "client_keys": [str(self.client_key)], "known_hosts": str(self.known_hosts),
            "config": None, "agent_path": None, "connect_timeout": self.connect_timeout,
        }
        opts.update(overrides)
        return opts

    async def connect(self, name: str, **overrides: Any) -> asyncssh.SSHClientConnection:
        import asyncssh

        return await asyncssh.connect(**self.asyncssh_options(name, **overrides))

    # -- inspecting a target -------------------------------------------------

    def host_path(self, name: str, target_path: str) -> Path:
        """Host path of a path INSIDE the target (only its private trees)."""
        t = self._get(name)
        mapping = [("/nix", t.dir / "nix"), ("/etc/nix", t.dir / "etc-nix"), ("/run", t.dir / "run"),
                   ("/tmp", t.dir / "tmp"), ("/root", t.dir / "home-root")]
        if t.user != "root":
            mapping.append((pwd.getpwnam(t.user).pw_dir, t.dir / "home-user"))
        for prefix, host in mapping:
            if target_path == prefix or target_path.startswith(prefix + "/"):
                return host / target_path[len(prefix):].lstrip("/")
        raise ValueError(f"{target_path!r} is not in a private tree of the target")

    def _resolve(self, t: _T, target_path: str) -> str | None:
        """Follow symlinks of a target path (e.g. a profile) to a /nix/store path."""
        path = target_path
        for _ in range(40):
            host = self.host_path(t.name, path)
            if not host.is_symlink():
                return path if os.path.lexists(host) else None
            link = os.readlink(host)
            path = link if link.startswith("/") else os.path.normpath(os.path.join(os.path.dirname(path), link))
            if re.fullmatch(r"/nix/store/[^/]+", path):
                return path
        return None

    def store_path(self, name: str) -> Path:
        """Host directory of the target's private /nix/store."""
        return self._get(name).dir / "nix" / "store"

    def store_entries(self, name: str) -> set[str]:
        """``/nix/store/...`` names present in the target's store directory."""
        d = self.store_path(name)
        if not d.exists():
            return set()
        return {f"/nix/store/{e}" for e in os.listdir(d) if not e.startswith(".")}

    def has_path(self, name: str, store_path: str) -> bool:
        """True if ``store_path`` is VALID (registered) in the target's Nix database."""
        return self.run_in(name, ["nix-store", "--check-validity", store_path]).returncode == 0

    def run_in(self, name: str, argv: Sequence[str], *, input: str | None = None,
               timeout: float = 60, check: bool = False,
               env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """Run argv as root inside the target's mount namespace.

        Running target: ``nsenter --mount --target <sshd pid>``.  Stopped
        target: a fresh namespace with the same bind mounts.
        """
        with self._lock:
            t = self._get(name)
            pid = t.proc.pid if t.proc is not None else None
            full = (["nsenter", "--mount", "--target", str(pid), "--", *argv] if pid is not None
                    else self._ns_argv(t, argv))
        e = {"PATH": _CLEAN_PATH, "HOME": "/root", "USER": "root", "LOGNAME": "root", "LANG": "C.UTF-8"}
        if env:
            e.update(env)
        return subprocess.run(full, input=input, capture_output=True, text=True, timeout=timeout,
                              check=check, env=e, cwd="/")

    def profile_generations(self, name: str, profile: str = SYSTEM_PROFILE) -> list[Generation]:
        t = self._get(name)
        host = self.host_path(name, profile)
        if not host.parent.is_dir():
            return []
        current = os.readlink(host) if host.is_symlink() else None
        gens = []
        pat = re.compile(re.escape(host.name) + r"-(\d+)-link")
        for entry in os.listdir(host.parent):
            m = pat.fullmatch(entry)
            if m:
                target = self._resolve(t, str(Path(profile).parent / entry)) or ""
                gens.append(Generation(int(m.group(1)), target, entry == current))
        return sorted(gens, key=lambda g: g.number)

    def current_system(self, name: str) -> str | None:
        """readlink of the target's /run/current-system (None if absent)."""
        p = self._get(name).dir / "run" / "current-system"
        return os.readlink(p) if p.is_symlink() else None

    def booted_system(self, name: str) -> str | None:
        p = self._get(name).dir / "run" / "booted-system"
        return os.readlink(p) if p.is_symlink() else None

    def activation_log(self, name: str) -> list[ActivationRecord]:
        """Records appended by fake switch-to-configuration runs on this target."""
        p = self.host_path(name, f"{FAKE_STATE_DIR}/activation.log")
        if not p.exists():
            return []
        out = []
        for line in p.read_text().splitlines():
            parts = line.split()
            if len(parts) == 3:
                out.append(ActivationRecord(parts[0], parts[1], float(parts[2])))
        return out

    def set_activation_behaviour(self, name: str, behaviour: str | None, *, label: str | None = None,
                                 hang_seconds: float | None = None) -> None:
        """Flip fake switch-to-configuration at run time: "ok"|"fail"|"hang"|"slow"; None = baked-in.

        ``label`` restricts it to one fake system; ``hang_seconds`` bounds a hang (or the delay of
        "slow", which then activates like "ok").
        """
        if behaviour not in (None, "ok", "fail", "hang", "slow"):
            raise ValueError(f"bad behaviour {behaviour!r}")
        if label is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._+-]*", label):
            raise ValueError(f"bad label {label!r}")
        d = self.host_path(name, FAKE_STATE_DIR)
        d.mkdir(parents=True, exist_ok=True)
        f = d / (f"behaviour.{label}" if label else "behaviour")
        if behaviour is None:
            f.unlink(missing_ok=True)
        else:
            arg = f" {hang_seconds:g}" if behaviour in ("hang", "slow") and hang_seconds is not None else ""
            _write_atomic(f, behaviour + arg + "\n")

    def seed(self, name: str, paths: Sequence[str]) -> None:
        """Copy host store paths (with closures) straight into the target's store, no SSH."""
        store = f"local?root={self._get(name).dir}"
        proc = subprocess.run(["nix", "copy", "--no-check-sigs", "--to", store, *paths],
                              env=host_nix_env(), check=False, capture_output=True, text=True, timeout=120, cwd="/")
        if proc.returncode != 0:
            raise RigError(f"seeding {name} failed: {proc.stderr}")

    def preinstall(self, name: str, toplevel: str, *, goal: str = "switch") -> None:
        """Seed ``toplevel``, add it as a system generation and activate it, without SSH."""
        self.seed(name, [toplevel])
        for argv in (["nix-env", "-p", SYSTEM_PROFILE, "--set", toplevel],
                     [f"{SYSTEM_PROFILE}/bin/switch-to-configuration", goal]):
            r = self.run_in(name, argv)
            if r.returncode != 0:
                raise RigError(f"{shlex.join(argv)} failed on {name}: {r.stderr}")

    # -- async conveniences (run the sync call in a worker thread) ---------------

    async def astart(self, name: str, **kw: Any) -> Target:
        return await asyncio.to_thread(self.start, name, **kw)

    async def astop(self, name: str) -> None:
        await asyncio.to_thread(self.stop, name)

    async def arestart(self, name: str) -> Target:
        return await asyncio.to_thread(self.restart, name)

    async def arun_in(self, name: str, argv: Sequence[str], **kw: Any) -> subprocess.CompletedProcess[str]:
        return await asyncio.to_thread(self.run_in, name, argv, **kw)

    def __repr__(self) -> str:
        return f"Fleet(root={str(self.root)!r}, targets={self.names!r})"


def iter_processes_in(mntns: str) -> Iterator[int]:
    """PIDs currently in mount namespace ``mntns`` (for assertions)."""
    for entry in os.listdir("/proc"):
        if entry.isdigit() and _mntns(int(entry)) == mntns:
            yield int(entry)

