"""SIMULATED fleet: hundreds of in-process asyncssh servers on loopback.

This is a simulation for scale / concurrency / failure-handling tests.  The
SSH layer is real (asyncssh servers with their own host keys, a real
known_hosts file, public-key auth), but there is NO shell, NO Nix and NO
filesystem behind it: every exec request is matched against a pluggable
command table (regex -> handler) and answered from an in-memory per-target
``state`` dict.  Unknown commands exit 127 with a "command not simulated"
message, so a test never silently passes against a command nobody modelled.

Every target listens on its own 127.x.y.z address (Linux routes all of
127/8 to lo) -- loopback only.

Handlers are plain functions or coroutines taking a :class:`SimRequest` and
returning a :class:`SimReply`.  Patterns must match the WHOLE command
(``re.fullmatch``); the first matching entry in insertion order wins.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import random
import re
import shlex
import shutil
import socket
import tempfile
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import asyncssh

__all__ = [
    "BASIC_COMMANDS",
    "SimCommand",
    "SimFleet",
    "SimReply",
    "SimRequest",
    "SimStats",
    "SimTarget",
]


@dataclass(frozen=True)
class SimReply:
    exit_status: int = 0
    stdout: str | bytes = b""
    stderr: str | bytes = b""


@dataclass(frozen=True)
class SimRequest:
    target: SimTarget
    command: str
    match: re.Match[str]
    stdin: bytes  # only filled for SimCommand(reads_stdin=True)
    username: str

    @property
    def state(self) -> dict[str, Any]:
        return self.target.state


Handler = Callable[[SimRequest], "SimReply | Awaitable[SimReply]"]


@dataclass(frozen=True)
class SimCommand:
    """A handler plus options. ``reads_stdin``: read stdin to EOF before calling it
    (only for commands the client feeds and then closes, e.g. an import)."""

    handler: Handler
    reads_stdin: bool = False


CommandTable = Mapping[str, "Handler | SimCommand"]


@dataclass
class SimStats:
    connections_total: int = 0
    connections_open: int = 0
    peak_connections: int = 0
    sessions_total: int = 0
    sessions_open: int = 0
    peak_sessions: int = 0


@dataclass(eq=False)
class SimTarget:
    """One simulated target. ``state`` is yours: handlers read and mutate it."""

    name: str
    host: str
    port: int
    host_key: asyncssh.SSHKey
    state: dict[str, Any] = field(default_factory=dict)
    commands: list[str] = field(default_factory=list)  # every exec request, in order
    server: asyncssh.SSHAcceptor | None = None
    conns: set[asyncssh.SSHServerConnection] = field(default_factory=set)

    @property
    def running(self) -> bool:
        return self.server is not None

    @property
    def public_host_key(self) -> str:
        return self.host_key.export_public_key().decode().strip()


# ---------------------------------------------------------------------------
# a small, generic default command table (the deploy tests add their own)
# ---------------------------------------------------------------------------


def _echo(req: SimRequest) -> SimReply:
    rest = req.match.group(1) or ""
    return SimReply(0, " ".join(shlex.split(rest)) + "\n")


async def _sleep(req: SimRequest) -> SimReply:
    await asyncio.sleep(float(req.match.group(1)))
    return SimReply(0)


def _cat(req: SimRequest) -> SimReply:
    path = req.match.group(1)
    files: dict[str, str | bytes] = req.state.setdefault("files", {})
    if path not in files:
        return SimReply(1, b"", f"cat: {path}: No such file or directory\n")
    return SimReply(0, files[path])


def _readlink(req: SimRequest) -> SimReply:
    path = req.match.group(1)
    links: dict[str, str] = req.state.setdefault("links", {})
    if path not in links:
        return SimReply(1)
    return SimReply(0, links[path] + "\n")


BASIC_COMMANDS: dict[str, Handler | SimCommand] = {
    r"true": lambda req: SimReply(0),
    r"false": lambda req: SimReply(1),
    r"exit (\d+)": lambda req: SimReply(int(req.match.group(1))),
    r"echo(?: (.*))?": _echo,
    r"hostname": lambda req: SimReply(0, req.target.name + "\n"),
    r"uname -m": lambda req: SimReply(0, str(req.state.get("arch", "x86_64")) + "\n"),
    r"sleep (\d+(?:\.\d+)?)": _sleep,
    r"cat (\S+)": _cat,  # state["files"]: {path: str|bytes}
    r"readlink(?: -f)? (\S+)": _readlink,  # state["links"]: {path: target}
}


def _to_bytes(x: str | bytes) -> bytes:
    return x.encode() if isinstance(x, str) else x


class _SimServer(asyncssh.SSHServer):
    def __init__(self, fleet: SimFleet, target: SimTarget) -> None:
        self._fleet = fleet
        self._target = target
        self._conn: asyncssh.SSHServerConnection | None = None

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self._conn = conn
        self._target.conns.add(conn)
        s = self._fleet.stats
        s.connections_total += 1
        s.connections_open += 1
        s.peak_connections = max(s.peak_connections, s.connections_open)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._conn is not None:
            self._target.conns.discard(self._conn)
            self._fleet.stats.connections_open -= 1
            self._conn = None


class SimFleet:
    """``async with SimFleet(200) as sim:`` -- N simulated targets (see module doc)."""

    def __init__(
        self,
        targets: int | Sequence[str],
        *,
        handlers: CommandTable | None = None,
        root: Path | str | None = None,
        address_prefix: str | None = None,
        initial_state: Callable[[str], dict[str, Any]] | None = None,
        username: str = "root",
        connect_timeout: float = 10.0,
    ) -> None:
        names = [f"sim{i:03d}" for i in range(targets)] if isinstance(targets, int) else list(targets)
        if len(set(names)) != len(names):
            raise ValueError("duplicate target names")
        if address_prefix is None:
            address_prefix = f"127.{random.randint(64, 191)}"
        if not re.fullmatch(r"127\.\d{1,3}", address_prefix):
            raise ValueError("address_prefix must look like '127.N' (loopback only)")
        if len(names) > 250 * 256:
            raise ValueError("too many targets for one /16")
        self._names = names
        self._prefix = address_prefix
        self._own_root = root is None
        self.root = Path(tempfile.mkdtemp(prefix="cxs-", dir="/tmp")) if root is None else Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.username = username
        self.connect_timeout = connect_timeout
        self._initial_state = initial_state or (lambda name: {"files": {}, "links": {}})
        self._table: list[tuple[re.Pattern[str], SimCommand]] = []
        for pattern, h in (BASIC_COMMANDS if handlers is None else handlers).items():
            self._append(pattern, h)
        self.stats = SimStats()
        self.targets: dict[str, SimTarget] = {}
        self.client_key_path = self.root / "id_ed25519"
        self.known_hosts = self.root / "known_hosts"
        self.ssh_config = self.root / "ssh_config"
        self._client_key = asyncssh.generate_private_key("ssh-ed25519", comment="crossnix-simfleet-client")
        self._authorized = asyncssh.import_authorized_keys(
            self._client_key.export_public_key().decode())
        self._started = False

    # -- command table -------------------------------------------------------

    def _append(self, pattern: str, h: Handler | SimCommand) -> None:
        cmd = h if isinstance(h, SimCommand) else SimCommand(h)
        self._table.append((re.compile(pattern), cmd))

    def add_handler(self, pattern: str, handler: Handler | SimCommand) -> None:
        """Add a handler that takes precedence over existing ones."""
        cmd = handler if isinstance(handler, SimCommand) else SimCommand(handler)
        self._table.insert(0, (re.compile(pattern), cmd))

    def _lookup(self, command: str) -> tuple[SimCommand, re.Match[str]] | None:
        for pattern, cmd in self._table:
            m = pattern.fullmatch(command)
            if m:
                return cmd, m
        return None

    # -- lifecycle -----------------------------------------------------------

    async def __aenter__(self) -> SimFleet:
        return await self.start()

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    def _address(self, i: int) -> str:
        return f"{self._prefix}.{i // 250}.{i % 250 + 1}"

    async def start(self) -> SimFleet:
        if self._started:
            return self
        self._started = True
        self._client_key.write_private_key(str(self.client_key_path))
        self.client_key_path.chmod(0o600)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((self._address(0), 0))
            common_port = int(s.getsockname()[1])
        for i, name in enumerate(self._names):
            self.targets[name] = SimTarget(
                name=name, host=self._address(i), port=common_port,
                host_key=asyncssh.generate_private_key("ssh-ed25519"),
                state=self._initial_state(name))
        try:
            await asyncio.gather(*(self._listen(t) for t in self.targets.values()))
        except BaseException:
            await self.close()
            raise
        self._write_client_files()
        return self

    async def _listen(self, t: SimTarget) -> None:
        async def factory(process: asyncssh.SSHServerProcess[bytes]) -> None:
            await self._session(t, process)

        def server_factory() -> asyncssh.SSHServer:
            return _SimServer(self, t)

        for port in (t.port, 0):
            try:
                t.server = await asyncssh.listen(
                    t.host, port, server_host_keys=[t.host_key], authorized_client_keys=self._authorized,
                    process_factory=factory, server_factory=server_factory, encoding=None,
                    login_timeout=30, reuse_address=True)
            except OSError:
                if port == 0:
                    raise
                continue
            t.port = int(t.server.sockets[0].getsockname()[1])
            return

    async def stop_target(self, name: str) -> None:
        """Close the listener and drop connections: the address then refuses connections."""
        t = self.targets[name]
        if t.server is not None:
            t.server.close()
            await t.server.wait_closed()
            t.server = None
        for conn in list(t.conns):
            conn.close()

    async def start_target(self, name: str) -> None:
        t = self.targets[name]
        if t.server is None:
            await self._listen(t)
            self._write_client_files()

    async def close(self) -> None:
        await asyncio.gather(*(self.stop_target(n) for n in self.targets), return_exceptions=True)
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def _write_client_files(self) -> None:
        kh = [f"[{t.host}]:{t.port} {t.public_host_key}" for t in self.targets.values()]
        cfg = ["# crossnix SIMULATED fleet (asyncssh in-process, loopback only)", ""]
        for t in self.targets.values():
            cfg += [f"Host {t.name}", f"  HostName {t.host}", f"  Port {t.port}", f"  User {self.username}", ""]
        cfg += ["Host *", f"  IdentityFile {self.client_key_path}", "  IdentitiesOnly yes",
                "  IdentityAgent none", f"  UserKnownHostsFile {self.known_hosts}",
                "  GlobalKnownHostsFile /dev/null", "  StrictHostKeyChecking yes", "  BatchMode yes",
                "  CheckHostIP no", "  UpdateHostKeys no", f"  ConnectTimeout {int(self.connect_timeout)}", ""]
        self.known_hosts.write_text("\n".join(kh) + "\n")
        self.ssh_config.write_text("\n".join(cfg))

    # -- client helpers ------------------------------------------------------

    def asyncssh_options(self, name: str, **overrides: Any) -> dict[str, Any]:
        t = self.targets[name]
        opts: dict[str, Any] = {
            "host": t.host, "port": t.port, "username": self.username,
            "client_keys": [self._client_key], "known_hosts": str(self.known_hosts),
            "config": None, "agent_path": None, "connect_timeout": self.connect_timeout,
        }
        opts.update(overrides)
        return opts

    async def connect(self, name: str, **overrides: Any) -> asyncssh.SSHClientConnection:
        return await asyncssh.connect(**self.asyncssh_options(name, **overrides))

    # -- the exec handler ----------------------------------------------------

    async def _session(self, t: SimTarget, process: asyncssh.SSHServerProcess[bytes]) -> None:
        s = self.stats
        s.sessions_total += 1
        s.sessions_open += 1
        s.peak_sessions = max(s.peak_sessions, s.sessions_open)
        status = 255
        try:
            cmd = process.command
            if cmd is None:
                process.stderr.write(b"simfleet: interactive shells are not simulated\n")
                status = 127
            else:
                t.commands.append(cmd)
                found = self._lookup(cmd)
                if found is None:
                    process.stderr.write(
                        f"simfleet[{t.name}]: command not simulated: {cmd}\n".encode())
                    status = 127
                else:
                    spec, m = found
                    data = await process.stdin.read() if spec.reads_stdin else b""
                    username = str(process.get_extra_info("username") or self.username)
                    req = SimRequest(target=t, command=cmd, match=m, stdin=data, username=username)
                    res = spec.handler(req)
                    reply = await res if inspect.isawaitable(res) else res
                    if not isinstance(reply, SimReply):
                        raise TypeError(f"handler for {cmd!r} returned {reply!r}, not SimReply")
                    if reply.stdout:
                        process.stdout.write(_to_bytes(reply.stdout))
                    if reply.stderr:
                        process.stderr.write(_to_bytes(reply.stderr))
                    status = reply.exit_status
        except (asyncssh.Error, ConnectionError, BrokenPipeError):
            status = 255
        except Exception as e:
            with contextlib.suppress(Exception):
                process.stderr.write(f"simfleet[{t.name}]: handler error: {e!r}\n".encode())
            status = 255
        finally:
            s.sessions_open -= 1
            with contextlib.suppress(Exception):
                process.exit(status)
