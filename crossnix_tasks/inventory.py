"""boards.toml: the fleet inventory, parsed with tomlkit and validated with pydantic.

Every problem is reported as ``file:line: key.path: message`` and all problems are reported at once.
The models below are the schema; :class:`Target` is the resolved view (defaults applied) the rest of
crossnix works with. Edits go through :mod:`crossnix_tasks.tomledit`, never through these models.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import tomlkit
import tomlkit.exceptions
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from crossnix_tasks.boards import NIX_SYSTEMS, Board
from crossnix_tasks.errors import ConfigError

DEFAULT_FILE = "boards.toml"

Strategy = Literal["cross", "emulated", "native", "remote"]
Goal = Literal["switch", "boot", "test", "dry-activate"]
HostKeyCheck = Literal["strict", "accept-new"]

# Anchored with \Z, not $: "$" also matches before a trailing newline, so "root\n" would pass.
# Also NixOS's networking.hostName rule (it is the default host name): alphanumeric at both ends.
TARGET_NAME = re.compile(r"^[A-Za-z](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9])?\Z")
TAG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*\Z")
USER = re.compile(r"^[a-z_][a-z0-9_-]{0,31}\Z")
REMOTE_USER = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,63}\Z")  # the "user@" of build_host and proxy_jump
HOST_LABEL = re.compile(r"^(?!-)[A-Za-z0-9_-]{1,63}(?<!-)\Z")
FLAKE_ATTR = re.compile(r"^[A-Za-z_][A-Za-z0-9_'-]*\Z")
SSH_OPTION = re.compile(r"^[A-Za-z][A-Za-z0-9]*\Z")
IFACE = re.compile(r"^[A-Za-z0-9_.-]{1,15}\Z")  # an IPv6 address's %scope: a network interface name
# Keywords that would end the target's Host block in the generated ssh_config
SSH_BLOCK_KEYWORDS = frozenset({"host", "match"})
# Characters a value written into an ssh_config file (ssh.py) cannot carry
SSH_CONFIG_UNSAFE = frozenset('"\n\r\0')
PUBLIC_KEY = re.compile(
    r"^(ssh-(ed25519|rsa|dss)|ecdsa-sha2-nistp(256|384|521)|sk-(ssh-ed25519|ecdsa-sha2-nistp256)@openssh\.com)"
    r" [A-Za-z0-9+/]+={0,3}( [^\n\r\0]*)?\Z"
)


def _is_ipv6(value: str) -> bool:
    return value.count(":") > 1


def _check_user_at_host(value: str) -> str:
    """``[user@]host``, as build hosts and jump hosts are written: "builder@big.example.org"."""
    user, at, host = value.rpartition("@")
    if at and not REMOTE_USER.match(user):
        raise ValueError(
            f"{user!r} is not a user name (letters, digits, '.', '-', '_'; no leading '-', spaces or "
            "shell characters)"
        )
    _check_host(host)
    return value


def _check_host(host: str) -> str:
    """A DNS name, an ssh_config alias or an IP address; nothing a shell or ssh could read as an option."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        # ipaddress accepts any text as an IPv6 scope ("fe80::1%<anything>"); only an interface name may follow
        scope = getattr(address, "scope_id", None)
        if scope is None or IFACE.match(scope):
            return host
    if len(host) > 253 or not all(HOST_LABEL.match(label) for label in host.split(".")):
        raise ValueError(
            f"{host!r} is not a host name or IP address (letters, digits, '-', '_' and dots; "
            "no leading '-', spaces or shell characters)"
        )
    return host


def _check_pattern(pattern: re.Pattern[str], what: str) -> Any:
    def check(value: str) -> str:
        if not pattern.match(value):
            raise ValueError(f"{value!r} is not a valid {what}")
        return value

    return check


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class CommandCheck(_Model):
    """A command run on the target; healthy when it exits 0."""

    command: Annotated[str, Field(min_length=1)]
    timeout: Annotated[float, Field(gt=0)] = 60.0
    interval: Annotated[float, Field(gt=0)] = 2.0


class TcpCheck(_Model):
    """A TCP connection from the deployer to the target's host."""

    tcp: Annotated[int, Field(ge=1, le=65535)]
    timeout: Annotated[float, Field(gt=0)] = 60.0
    interval: Annotated[float, Field(gt=0)] = 2.0


class HttpCheck(_Model):
    """An HTTP GET from the deployer; ``http`` is a URL or a path on the target's host (port 80)."""

    http: Annotated[str, Field(min_length=1)]
    expect_status: Annotated[int, Field(ge=100, le=599)] = 200
    timeout: Annotated[float, Field(gt=0)] = 60.0
    interval: Annotated[float, Field(gt=0)] = 2.0


HealthCheck = CommandCheck | TcpCheck | HttpCheck


class DeployTable(_Model):
    goal: Goal | None = None
    parallel: Annotated[int, Field(ge=1, le=1000)] | None = None
    magic_rollback: bool | None = None
    auto_rollback: bool | None = None
    confirm_timeout: Annotated[int, Field(ge=5, le=3600)] | None = None
    activation_timeout: Annotated[int, Field(ge=10, le=86400)] | None = None
    substitute_on_destination: bool | None = None
    replace_unknown_profiles: bool | None = None
    health_checks: list[HealthCheck] | None = None


class TargetTable(_Model):
    """The keys of ``[defaults]`` and ``[targets.NAME]`` (a target's keys override the defaults)."""

    board: str | None = None
    system: str | None = None
    host: str | None = None
    port: Annotated[int, Field(ge=1, le=65535)] | None = None
    user: str | None = None
    identity_file: str | None = None
    known_hosts: str | None = None
    proxy_jump: str | None = None
    ssh_options: dict[str, str] | None = None
    host_key_check: HostKeyCheck | None = None
    ask_sudo_password: bool | None = None
    tags: list[str] | None = None
    modules: list[str] | None = None
    build: Strategy | None = None
    build_host: str | None = None
    builders: str | None = None
    image_variant: str | None = None
    flake: str | None = None
    authorized_keys: list[str] | None = None
    pin_host_key: bool | None = None
    root_login: bool | None = None
    passwordless_sudo: bool | None = None
    deploy: DeployTable | None = None

    @field_validator("host")
    @classmethod
    def _host(cls, value: str | None) -> str | None:
        return None if value is None else _check_host(value)

    @field_validator("build_host")
    @classmethod
    def _build_host(cls, value: str | None) -> str | None:
        return None if value is None else _check_user_at_host(value)

    @field_validator("proxy_jump")
    @classmethod
    def _proxy_jump(cls, value: str | None) -> str | None:
        # OpenSSH's ProxyJump: comma-separated hops, each [user@]host[:port]
        if value is None:
            return None
        for hop in value.split(","):
            host, colon, port = hop.rpartition(":") if ":" in hop and not _is_ipv6(hop) else (hop, "", "")
            if colon and not (port.isdigit() and 1 <= int(port) <= 65535):
                raise ValueError(f"{hop!r}: the port after ':' must be a number from 1 to 65535")
            _check_user_at_host(host)
        return value

    @field_validator("identity_file", "known_hosts")
    @classmethod
    def _ssh_config_path(cls, value: str | None) -> str | None:
        if value is not None and (not value or SSH_CONFIG_UNSAFE & set(value)):
            raise ValueError(f"{value!r} cannot be written into an ssh_config file (empty, or a '\"' or line break)")
        return value

    @field_validator("authorized_keys")
    @classmethod
    def _authorized_keys(cls, value: list[str] | None) -> list[str] | None:
        for key in value or []:
            if not PUBLIC_KEY.match(key):
                raise ValueError(
                    f"{key[:40]!r}... is not one OpenSSH public key line ('ssh-ed25519 AAAA... comment')"
                )
        return value

    @field_validator("system")
    @classmethod
    def _system(cls, value: str | None) -> str | None:
        if value is not None and value not in NIX_SYSTEMS:
            raise ValueError(f"system {value!r} is not one of {', '.join(NIX_SYSTEMS)}")
        return value

    @field_validator("user")
    @classmethod
    def _user(cls, value: str | None) -> str | None:
        return None if value is None else _check_pattern(USER, "user name")(value)

    @field_validator("tags")
    @classmethod
    def _tags(cls, value: list[str] | None) -> list[str] | None:
        for tag in value or []:
            _check_pattern(TAG, "tag (letters, digits, '-', '_')")(tag)
        return value

    @field_validator("ssh_options")
    @classmethod
    def _ssh_options(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        for key, option in (value or {}).items():
            _check_pattern(SSH_OPTION, "ssh option name")(key)
            if key.lower() in SSH_BLOCK_KEYWORDS:
                raise ValueError(f"ssh option {key} would start a new block in the target's ssh_config")
            if SSH_CONFIG_UNSAFE & set(option):
                raise ValueError(f"ssh option {key} has a '\"' or a line break in its value")
        return value

    @field_validator("flake")
    @classmethod
    def _flake(cls, value: str | None) -> str | None:
        if value is not None:
            ref, sep, attr = value.rpartition("#")
            if not sep or not ref or not FLAKE_ATTR.match(attr):
                raise ValueError(
                    f"flake {value!r} must be 'FLAKE-REF#NAME' naming nixosConfigurations.NAME "
                    "(e.g. 'github:me/infra#kitchen' or '.#kitchen')"
                )
        return value


class ProjectTable(_Model):
    flake: str = "."
    state_dir: str = ".crossnix"

    @field_validator("state_dir")
    @classmethod
    def _state_dir(cls, value: str) -> str:
        if not value or "\0" in value:
            raise ValueError(f"{value!r} is not a directory path")
        return value


class InventoryFile(_Model):
    project: ProjectTable = ProjectTable()
    defaults: TargetTable = field(default_factory=TargetTable)
    targets: dict[str, TargetTable] = {}


# Resolved view ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeploySettings:
    goal: Goal = "switch"
    parallel: int = 10
    magic_rollback: bool = True
    auto_rollback: bool = True
    confirm_timeout: int = 30
    activation_timeout: int = 600
    substitute_on_destination: bool = False
    replace_unknown_profiles: bool = False
    health_checks: tuple[HealthCheck, ...] = ()


@dataclass(frozen=True)
class Target:
    """One machine of the fleet, with ``[defaults]`` applied and paths made absolute."""

    name: str
    board: str
    system: str
    host: str | None = None
    port: int = 22
    user: str = "root"
    identity_file: Path | None = None
    known_hosts: Path | None = None
    proxy_jump: str | None = None
    ssh_options: Mapping[str, str] = field(default_factory=dict)
    host_key_check: HostKeyCheck = "strict"
    ask_sudo_password: bool = False
    tags: tuple[str, ...] = ()
    modules: tuple[Path, ...] = ()
    build: Strategy = "cross"
    build_host: str | None = None
    builders: str | None = None
    image_variant: str | None = None
    flake: str | None = None
    authorized_keys: tuple[str, ...] = ()
    pin_host_key: bool = True  # first-boot images carry a host key crossnix generated and pinned
    root_login: bool = True  # root may log in with the authorized keys (default: when user is root)
    passwordless_sudo: bool = True  # a non-root admin user gets sudo without a password
    deploy: DeploySettings = DeploySettings()
    line: int = 0  # where [targets.NAME] starts, for messages

    @property
    def address(self) -> str:
        return f"{self.user}@{self.host}:{self.port}" if self.host else "(no host)"


@dataclass(frozen=True)
class Inventory:
    path: Path
    flake: str
    state_dir: Path
    targets: dict[str, Target]
    defaults: TargetTable = field(default_factory=TargetTable)

    @property
    def root(self) -> Path:
        return self.path.parent

    def tags(self) -> set[str]:
        return {tag for target in self.targets.values() for tag in target.tags}


# Loading ------------------------------------------------------------------------------------------------


def load_inventory(path: Path, boards: Mapping[str, Board]) -> Inventory:
    """Parse, validate and resolve ``path``. Raises :class:`ConfigError` with every problem found."""
    try:
        source = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            [f"{path}: file not found"],
            hint="run `inv init --board rpi4` to start a project, or set CROSSNIX_INVENTORY to your boards.toml",
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{path}: cannot read: {exc}"]) from None
    return inventory_from_source(path, source, boards)


def inventory_from_source(path: Path, source: str, boards: Mapping[str, Board]) -> Inventory:
    """Validate ``source`` as if it were the content of ``path``."""
    data = parse_toml(path, source)
    lines = LineIndex(source)
    try:
        model = InventoryFile.model_validate(data)
    except ValidationError as exc:
        raise ConfigError([_format_pydantic_error(path, lines, error) for error in exc.errors()]) from None
    problems: list[str] = []
    targets = {}
    for name, table in model.targets.items():
        target = _resolve_target(path, lines, name, model.defaults, table, boards, problems)
        if target is not None:
            targets[name] = target
    if problems:
        raise ConfigError(problems)
    return Inventory(
        path=path,
        flake=model.project.flake,
        state_dir=(path.parent / model.project.state_dir),
        targets=targets,
        defaults=model.defaults,
    )


def parse_toml(path: Path, source: str) -> dict[str, Any]:
    try:
        return tomlkit.parse(source).unwrap()
    except (tomlkit.exceptions.TOMLKitError, KeyError) as exc:
        # tomllib's positions are exact where tomlkit's are not (a repeated table is reported on the line
        # after it, a repeated key has no position at all: python-poetry/tomlkit#202).
        try:
            tomllib.loads(source)
        except tomllib.TOMLDecodeError as decode_error:
            match = re.search(r"^(.*) \(at line (\d+), column (\d+)\)$", str(decode_error))
            if match:
                line, col = int(match.group(2)), int(match.group(3))
                problem = f"{path}:{line}:{col}: invalid TOML: {match.group(1)}"
                raise ConfigError([problem + _caret(source, line, col)]) from None
        if isinstance(exc, tomlkit.exceptions.ParseError):
            problem = f"{path}:{exc.line}:{exc.col}: invalid TOML: {_strip_position(str(exc))}"
            raise ConfigError([problem + _caret(source, exc.line, exc.col)]) from None
        raise ConfigError([f"{path}: invalid TOML: {exc}"]) from None


def _strip_position(message: str) -> str:
    return re.sub(r" at line \d+ col \d+$", "", message)


def _caret(source: str, line: int, col: int) -> str:
    lines = source.splitlines()
    if not 1 <= line <= len(lines):
        return ""
    return f"\n      {lines[line - 1]}\n      {' ' * max(col - 1, 0)}^"


def _resolve_target(
    path: Path,
    lines: LineIndex,
    name: str,
    defaults: TargetTable,
    table: TargetTable,
    boards: Mapping[str, Board],
    problems: list[str],
) -> Target | None:
    here = ("targets", name)
    start = len(problems)

    def problem(key: str | None, message: str) -> None:
        loc = (*here, key) if key else here
        problems.append(f"{path}:{lines.line_of(loc)}: {'.'.join(loc)}: {message}")

    if not TARGET_NAME.match(name):
        problem(
            None,
            "a target name must start with a letter, end with a letter or digit and hold only letters, "
            "digits, '-' and '_', at most 63 (it becomes the host name, a file name, a systemd unit name "
            "and a Nix attribute)",
        )

    def pick(key: str) -> Any:
        value = getattr(table, key)
        return getattr(defaults, key) if value is None else value

    board_name = pick("board")
    if board_name is None:
        problem(None, "missing key 'board'")
        return None
    board = boards.get(board_name)
    if board is None:
        close = difflib.get_close_matches(board_name, list(boards), n=1)
        suggestion = f" (did you mean {close[0]!r}?)" if close else ""
        problem(
            "board",
            f"unknown board {board_name!r}{suggestion}; installed boards: "
            f"{', '.join(sorted(boards)) or 'none'}",
        )
        return None
    system = pick("system") or board.default_system
    if system not in board.systems:
        problem("system", f"board {board.name!r} supports {', '.join(board.systems)}, not {system!r}")
    variant = pick("image_variant")
    if variant is not None:
        known = [v.name for v in board.variants_for(system)]
        if variant not in known:
            problem("image_variant", f"board {board.name!r} ({system}) has image variants {', '.join(known)}")
    strategy: Strategy = pick("build") or "cross"
    if strategy == "remote" and not (pick("build_host") or pick("builders")):
        problem("build", "strategy 'remote' needs 'build_host' (a machine to build on) or 'builders'")
    modules = [*(defaults.modules or []), *(table.modules or [])]
    module_paths = []
    for module in modules:
        try:
            module_path = (path.parent / Path(module).expanduser()).resolve()
            found = module_path.exists()
        except (RuntimeError, ValueError, OSError) as exc:  # ~nosuchuser, a NUL byte, a name too long
            problem("modules", f"module {module!r} is not a usable path: {exc}")
            continue
        if not found:
            problem("modules", f"module {module!r} not found (looked for {module_path})")
        module_paths.append(module_path)
    paths: dict[str, Path | None] = {}
    for key in ("identity_file", "known_hosts"):
        try:
            paths[key] = _path(path, pick(key))
        except RuntimeError as exc:  # "~nosuchuser/..."
            problem(key, f"{pick(key)!r} is not a usable path: {exc}")
    if len(problems) > start:
        return None

    deploy = _resolve_deploy(defaults.deploy, table.deploy)
    return Target(
        name=name,
        board=board.name,
        system=system,
        host=pick("host"),
        port=pick("port") or 22,
        user=pick("user") or "root",
        identity_file=paths["identity_file"],
        known_hosts=paths["known_hosts"],
        proxy_jump=pick("proxy_jump"),
        ssh_options={**(defaults.ssh_options or {}), **(table.ssh_options or {})},
        host_key_check=pick("host_key_check") or "strict",
        ask_sudo_password=bool(pick("ask_sudo_password")),
        tags=tuple(dict.fromkeys([*(defaults.tags or []), *(table.tags or [])])),
        modules=tuple(module_paths),
        build=strategy,
        build_host=pick("build_host"),
        builders=pick("builders"),
        image_variant=variant,
        flake=pick("flake"),
        authorized_keys=tuple(pick("authorized_keys") or ()),
        pin_host_key=pick("pin_host_key") is not False,
        root_login=(pick("user") or "root") == "root" if pick("root_login") is None else pick("root_login"),
        passwordless_sudo=pick("passwordless_sudo") is not False,
        deploy=deploy,
        line=lines.line_of(here),
    )


def _path(inventory: Path, value: str | None) -> Path | None:
    return None if value is None else (inventory.parent / Path(value).expanduser())


def _resolve_deploy(defaults: DeployTable | None, table: DeployTable | None) -> DeploySettings:
    merged: dict[str, Any] = {}
    for layer in (defaults, table):
        if layer is not None:
            merged.update(layer.model_dump(exclude_none=True, exclude={"health_checks"}))
            if layer.health_checks is not None:
                merged["health_checks"] = tuple(layer.health_checks)
    return DeploySettings(**merged)


# Error locations ----------------------------------------------------------------------------------------

_MODEL_FOR_LOC: dict[tuple[str, ...], type[BaseModel]] = {
    (): InventoryFile,
    ("project",): ProjectTable,
    ("defaults",): TargetTable,
    ("targets", "*"): TargetTable,
    ("defaults", "deploy"): DeployTable,
    ("targets", "*", "deploy"): DeployTable,
}


def _format_pydantic_error(path: Path, lines: LineIndex, error: Mapping[str, Any]) -> str:
    loc = _user_loc(error["loc"])
    message = error["msg"]
    if error["type"] == "extra_forbidden":
        message = f"unknown key {loc[-1]!r}"
        parent = tuple("*" if i == 1 and loc[0] == "targets" else p for i, p in enumerate(loc[:-1]))
        model = _MODEL_FOR_LOC.get(parent)
        if model is not None:
            close = difflib.get_close_matches(loc[-1], list(model.model_fields), n=1, cutoff=0.6)
            message += f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(model.model_fields)}"
    elif error["type"] == "missing":
        message = f"missing key {loc[-1]!r}"
    elif error["type"] == "value_error":
        message = str(error.get("ctx", {}).get("error", message))
    elif "input" in error and not isinstance(error["input"], dict | list):
        message = f"{message} (got {error['input']!r})"
    return f"{path}:{lines.line_of(loc)}: {'.'.join(loc) or '(top level)'}: {message}"


_UNION_TAGS = frozenset(model.__name__ for model in (CommandCheck, TcpCheck, HttpCheck))


def _user_loc(loc: Sequence[object]) -> tuple[str, ...]:
    """``loc`` without the union member pydantic names after a list index (``health_checks.0.CommandCheck``):
    users never wrote that key. A target or ssh option named like a class is kept (it follows no index)."""
    return tuple(
        str(part)
        for i, part in enumerate(loc)
        if not (part in _UNION_TAGS and i > 0 and isinstance(loc[i - 1], int))
    )


class LineIndex:
    """Maps key paths of a TOML document to the line defining them (tomlkit keeps no positions)."""

    _HEADER = re.compile(r"^\s*(\[\[?)\s*(.+?)\s*\]\]?\s*(#.*)?$")
    _PART = r"""(?:"[^"]*"|'[^']*'|[A-Za-z0-9_-]+)"""
    _KEY = re.compile(rf"^\s*({_PART}(?:\s*\.\s*{_PART})*)\s*=")

    def __init__(self, source: str) -> None:
        self._lines: dict[tuple[str, ...], int] = {}
        table: tuple[str, ...] = ()
        array_counts: dict[tuple[str, ...], int] = {}
        in_multiline = False
        for number, line in enumerate(source.splitlines(), start=1):
            if line.count('"""') % 2 or line.count("'''") % 2:
                in_multiline = not in_multiline
                if not in_multiline:
                    continue
            if in_multiline and not self._KEY.match(line):
                continue
            header = self._HEADER.match(line)
            if header and not self._KEY.match(line):
                keys = tuple(_split_key(header.group(2)))
                if header.group(1) == "[[":
                    index = array_counts.get(keys, 0)
                    array_counts[keys] = index + 1
                    keys = (*keys, str(index))
                table = keys
                self._lines.setdefault(table, number)
                continue
            key = self._KEY.match(line)
            if key:
                self._lines.setdefault((*table, *_split_key(key.group(1))), number)

    def line_of(self, loc: Sequence[str]) -> int:
        """The line of the longest prefix of ``loc`` that appears in the file (1 if none does)."""
        for end in range(len(loc), 0, -1):
            number = self._lines.get(tuple(loc[:end]))
            if number is not None:
                return number
        return 1


def _split_key(dotted: str) -> Iterable[str]:
    for part in re.findall(r""""([^"]*)"|'([^']*)'|([A-Za-z0-9_-]+)""", dotted):
        yield next(p for p in part if p) if any(part) else ""
