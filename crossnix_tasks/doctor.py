"""``inv doctor``: is this machine, this project and each target ready? Every problem comes with its fix.

Each check is a small function returning :class:`Check` (what was checked, whether it passed, what was found,
and the exact fix: a configuration line or a command). The local checks need no network; ``--on`` adds one
SSH login per target (host key verified strictly, as a deploy would) and a few read-only commands there.

Local: Nix version, experimental features (a warning: crossnix switches them on for its own commands), the
flake inputs the selected boards need in ``flake.lock``, whether this machine can build for each selected
system with each target's strategy (a real probe build for emulated/native builds of a foreign system; cross
builds need no emulation), whether the local user may sign store paths (trusted user), and the fleet signing
key. Per target: SSH reachability, host key and login; the machine's architecture against ``system``; Nix on the
target; whether it accepts crossnix's signed closures (``trusted-public-keys`` or ``require-sigs = false``);
and for non-root users that sudo works without a password (or ``ask_sudo_password`` is set).
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import json
import os
import re
import shlex
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crossnix_tasks import nix, probe, process, remote, signing, ssh
from crossnix_tasks.boards import Board
from crossnix_tasks.errors import CrossnixError
from crossnix_tasks.inventory import Target

MIN_NIX = (2, 8)
FEATURES = ("nix-command", "flakes")
LOCAL = "this machine"
_UNAME_SYSTEMS = {"x86_64": "x86_64-linux", "aarch64": "aarch64-linux", "arm64": "aarch64-linux",
                  "riscv64": "riscv64-linux"}
TARGET_CONCURRENCY = 16


@dataclass(frozen=True)
class Check:
    scope: str  # LOCAL or a target name
    name: str
    ok: bool
    detail: str
    fix: str = ""
    warning: bool = False  # a failed warning is shown but does not fail `inv doctor`

    @property
    def failed(self) -> bool:
        return not self.ok and not self.warning

    @property
    def status(self) -> str:
        return "ok" if self.ok else ("warning" if self.warning else "FAIL")


def passed(checks: Iterable[Check]) -> bool:
    return not any(check.failed for check in checks)


# Nix on this machine -------------------------------------------------------------------------------------------


def parse_nix_version(text: str) -> tuple[int, ...] | None:
    match = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", text)
    return tuple(int(part) for part in match.groups() if part is not None) if match else None


def check_nix_version(text: str | None) -> Check:
    fix = "install Nix 2.8 or newer (Debian 12: `apt-get install nix-bin`; elsewhere https://nixos.org/download)"
    if text is None:
        return Check(LOCAL, "nix", False, "`nix` is not installed or not on PATH", fix)
    version = parse_nix_version(text)
    if version is None:
        return Check(LOCAL, "nix", False, f"cannot read the version from {text.strip()!r}", fix)
    if version < MIN_NIX:
        return Check(LOCAL, "nix", False, f"{text.strip()} is older than {'.'.join(map(str, MIN_NIX))}", fix)
    return Check(LOCAL, "nix", True, text.strip())


def check_features(config: Mapping[str, Any] | None, disabled_error: str = "") -> Check:
    """Whether plain ``nix build .#...`` works for the user (crossnix itself passes the features)."""
    enabled = set(_words((config or {}).get("experimental-features", "")))
    missing = [f for f in FEATURES if f not in enabled] if config is not None else list(FEATURES)
    fix = (
        "add `experimental-features = nix-command flakes` to ~/.config/nix/nix.conf (or /etc/nix/nix.conf; "
        'on NixOS `nix.settings.experimental-features = [ "nix-command" "flakes" ];`)'
    )
    if not missing:
        return Check(LOCAL, "experimental features", True, "nix-command and flakes are enabled")
    detail = f"not enabled: {', '.join(missing)}; crossnix enables them for its own commands, but running " \
             "`nix build .#...` by hand needs them"
    return Check(LOCAL, "experimental features", False, detail, fix, warning=True)


def _words(value: Any) -> list[str]:
    if isinstance(value, list):
        return [str(v) for v in value]
    return str(value or "").split()


def check_trusted_user(config: Mapping[str, Any], user: str, groups: Sequence[str]) -> Check:
    """Signing store paths (``nix store sign``) through the daemon needs a trusted user."""
    trusted = _words(config.get("trusted-users", ["root"]))
    if user == "root" or user in trusted or "*" in trusted or any(f"@{g}" in trusted for g in groups):
        return Check(LOCAL, "trusted user", True, f"{user} may sign store paths (trusted-users: {' '.join(trusted)})")
    return Check(
        LOCAL,
        "trusted user",
        False,
        f"{user} is not in trusted-users ({' '.join(trusted) or 'empty'}); signing closures before copying fails",
        f"add `trusted-users = root {user}` to /etc/nix/nix.conf and restart nix-daemon "
        f'(NixOS: `nix.settings.trusted-users = [ "root" "{user}" ];`)',
    )


# The project ------------------------------------------------------------------------------------------------


def needed_inputs(targets: Iterable[Target], boards: Mapping[str, Board]) -> dict[str, list[str]]:
    """Flake input name -> boards needing it (nixpkgs always)."""
    needed: dict[str, list[str]] = {"nixpkgs": []}
    for target in targets:
        board = boards[target.board]
        for flake_input in board.flake_inputs:
            users = needed.setdefault(flake_input.name, [])
            if board.name not in users:
                users.append(board.name)
    return needed


def check_flake_inputs(
    lock_file: Path,
    needed: Mapping[str, Sequence[str]],
    urls: Mapping[str, str],
    follows_nixpkgs: Collection[str] = (),
) -> Check:
    """``follows_nixpkgs``: inputs whose flake.nix line also makes them follow the project's nixpkgs (as
    ``inv init`` writes them)."""
    name = "flake inputs"
    if not lock_file.is_file():
        return Check(
            LOCAL, name, False, f"{lock_file} does not exist",
            f"cd {shlex.quote(str(lock_file.parent))} && nix flake lock",
        )
    try:
        lock = json.loads(lock_file.read_text(encoding="utf-8"))
        root = lock["nodes"][lock.get("root", "root")]
        present = set(root.get("inputs", {}))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return Check(LOCAL, name, False, f"{lock_file} is unreadable: {exc}", f"rm {lock_file} && nix flake lock")
    missing = [n for n in needed if n not in present]
    if not missing:
        return Check(LOCAL, name, True, f"{lock_file.name} pins {', '.join(sorted(needed))}")
    lines = []
    for n in missing:
        lines.append(f'inputs.{n}.url = "{urls.get(n, "github:NixOS/" + n)}";')
        if n in follows_nixpkgs and n != "nixpkgs":
            lines.append(f'inputs.{n}.inputs.nixpkgs.follows = "nixpkgs";')
    who = "; ".join(f"{n} (for {', '.join(needed[n]) or 'every target'})" for n in missing)
    return Check(
        LOCAL, name, False, f"{lock_file.name} lacks {who}",
        f"add to flake.nix: {' '.join(lines)} then run `nix flake lock`",
    )


def check_signing_key(state_dir: Path) -> Check:
    secret, _ = signing.key_paths(state_dir)
    if not secret.exists():
        return Check(
            LOCAL, "fleet signing key", False,
            f"no fleet signing key yet ({secret}); targets cannot verify what crossnix copies",
            "`inv deploy` creates it on first use; images built after that trust it",
            warning=True,
        )
    mode = secret.stat().st_mode & 0o777
    if mode & 0o077:
        return Check(LOCAL, "fleet signing key", False, f"{secret} is readable by others (mode {mode:o})",
                     f"chmod 600 {shlex.quote(str(secret))}")
    key = signing.read_public_key(state_dir)
    return Check(LOCAL, "fleet signing key", True, f"{key or '(public key missing: recreated on use)'}")


def check_build(
    system: str, strategy: str, local: str, result: probe.ProbeResult | None, names: Sequence[str]
) -> Check:
    name = f"build {system}"
    who = ", ".join(names)
    if strategy == "cross":
        return Check(LOCAL, name, True, f"cross-compiled from {local} ({who}): no emulation needed")
    if strategy == "remote":
        return Check(LOCAL, name, True, f"built on the build host ({who}); nothing to check here")
    if system == local:
        return Check(LOCAL, name, True, f"native {local} builds ({who})")
    assert result is not None
    if result.ok:
        return Check(LOCAL, name, True, f"{strategy} builds work here ({who}): {result.explain()}")
    return Check(
        LOCAL, name, False, f"{strategy} builds of {who}: {result.explain()}",
        f"{result.fix()}; or set `build = \"cross\"` for these targets",
    )


# Targets ---------------------------------------------------------------------------------------------------------


def check_connection(target: Target, error: ssh.SshError | None) -> Check:
    name = "ssh"
    if error is None:
        return Check(target.name, name, True, f"logged in as {target.address}; host key verified")
    if not target.host:
        return Check(target.name, name, False, error.message, error.hint or "")
    fixes = {
        "unreachable": f"check that {target.host} is up and sshd listens on port {target.port} "
        f"(`inv vm --target {target.name}` for a VM), or fix host/port in [targets.{target.name}]",
        "timeout": f"{target.host}:{target.port} accepts TCP but sends no SSH banner: a firewall, a wrong port, "
        "or a machine still booting",
        "host-key": error.hint or "",
        "auth": f"add your public key to authorized_keys in [targets.{target.name}] (first-boot images) or to "
        f"~{target.user}/.ssh/authorized_keys on the target; set identity_file if it is not the default key",
    }
    return Check(target.name, name, False, error.message, fixes.get(error.kind, error.hint or ""))


def check_arch(target: Target, uname_m: str) -> Check:
    found = _UNAME_SYSTEMS.get(uname_m.strip(), f"{uname_m.strip()}-linux")
    if found == target.system:
        return Check(target.name, "system", True, f"{uname_m.strip()} = {target.system}")
    return Check(
        target.name, "system", False,
        f"the machine is {found} but boards.toml builds {target.system} for it (\"platform mismatch\" on deploy)",
        f'set `system = "{found}"` in [targets.{target.name}] if the board supports it, or point host at the '
        "right machine",
    )


def check_remote_nix(target: Target, exit_status: int, stdout: str, stderr: str) -> Check:
    if exit_status == 0:
        return Check(target.name, "nix", True, stdout.strip())
    if exit_status == 127:
        return Check(target.name, "nix", False, "no nix-store on the target's PATH: it is not running NixOS or Nix",
                     f"install it from an image: `inv flash --target {target.name} --device /dev/sdX`")
    last = (stderr.strip().splitlines() or ["no output"])[-1]
    return Check(target.name, "nix", False, f"nix-store fails for {target.user}: {last}",
                 "check that nix-daemon runs on the target (`systemctl status nix-daemon`)")


def check_signatures(target: Target, config: Mapping[str, Any] | None, fleet_key: str | None) -> Check:
    name = "signatures"
    if config is None:
        return Check(target.name, name, False, "could not read the target's Nix configuration",
                     "check that `nix show-config` works on the target")
    require = str(config.get("require-sigs", True)).lower() not in ("false", "0")
    trusted = _words(config.get("trusted-public-keys", []))
    if not require:
        return Check(target.name, name, True, "require-sigs = false: accepts unsigned closures", warning=True)
    if fleet_key is None:
        return Check(target.name, name, False, "no fleet signing key exists yet, so nothing crossnix copies is "
                     "signed and the target requires signatures", "`inv deploy` creates the key on first use",
                     warning=True)
    if fleet_key in trusted:
        return Check(target.name, name, True, f"trusts the fleet key {fleet_key.split(':', 1)[0]}")
    # Root is a trusted Nix user and crossnix copies to root with --no-check-sigs: only a warning there.
    as_root = target.user == "root"
    consequence = (
        "deploys as root still work (root copies skip the check), deploys as another user would fail"
        if as_root
        else "copies fail with \"lacks a valid signature\""
    )
    return Check(
        target.name, name, False,
        f"does not trust the fleet signing key: {consequence}",
        f'add to the target\'s configuration: nix.settings.trusted-public-keys = [ "{fleet_key}" ]; '
        f"(crossnix images include it), or, where /etc/nix/nix.conf is not managed by NixOS, as root: "
        f"echo 'extra-trusted-public-keys = {fleet_key}' >> /etc/nix/nix.conf && systemctl restart nix-daemon",
        warning=as_root,
    )


def check_sudo(target: Target, ok: bool, stderr: str = "") -> Check:
    if target.user == "root":
        return Check(target.name, "sudo", True, "logs in as root")
    if ok:
        return Check(target.name, "sudo", True, f"{target.user} runs sudo without a password")
    if target.ask_sudo_password:
        return Check(target.name, "sudo", True, f"{target.user} needs a password for sudo; asked once per run")
    return Check(
        target.name, "sudo", False, f"{target.user} cannot run sudo without a password ({stderr.strip() or 'refused'})",
        f"set `ask_sudo_password = true` in [targets.{target.name}] or add "
        "`security.sudo.wheelNeedsPassword = false;` with the user in group wheel",
    )


# Gathering -------------------------------------------------------------------------------------------------------


async def local_nix_version() -> str | None:
    try:
        return (await process.run(["nix", "--version"], timeout=60)).stdout.strip()
    except process.ProcessFailed:
        return None


async def user_nix_config() -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """(the config as the user's plain ``nix`` sees it or None if nix-command is off, the effective config)."""
    plain = await process.run(["nix", "show-config", "--json"], check=False, timeout=60)
    if plain.returncode == 0:
        config = _unwrap(json.loads(plain.stdout))
        return config, config
    return None, await nix.show_config()


def _unwrap(config: Mapping[str, Any]) -> dict[str, Any]:
    return {k: (v.get("value") if isinstance(v, dict) else v) for k, v in config.items()}


def _groups() -> list[str]:
    import grp

    names = []
    for gid in os.getgroups():
        try:
            names.append(grp.getgrgid(gid).gr_name)
        except KeyError:
            continue
    return names


async def local_checks(
    targets: Sequence[Target],
    boards: Mapping[str, Board],
    *,
    flake_dir: Path | None,
    state_dir: Path | None,
) -> list[Check]:
    checks = [check_nix_version(await local_nix_version())]
    if checks[0].failed:
        return checks
    plain, effective = await user_nix_config()
    checks.append(check_features(plain))
    checks.append(check_trusted_user(effective, getpass.getuser(), _groups()))
    if flake_dir is not None and targets:
        declared = [i for t in targets for i in boards[t.board].flake_inputs]
        urls = {i.name: i.url for i in declared}
        urls.setdefault("nixpkgs", "github:NixOS/nixpkgs/nixos-unstable")
        follows = {i.name for i in declared if i.follows_nixpkgs}
        checks.append(check_flake_inputs(flake_dir / "flake.lock", needed_inputs(targets, boards), urls, follows))
    local = probe.local_system()
    by_need: dict[tuple[str, str], list[str]] = {}
    for target in targets:
        by_need.setdefault((target.system, target.build), []).append(target.name)
    for (system, strategy), names in sorted(by_need.items()):
        needs_probe = strategy in ("emulated", "native") and system != local
        result = await probe.probe_system(system) if needs_probe else None
        checks.append(check_build(system, strategy, local, result, names))
    if state_dir is not None and targets:
        checks.append(check_signing_key(state_dir))
    return checks


async def target_checks(target: Target, env: ssh.SshEnv, fleet_key: str | None) -> list[Check]:
    try:
        conn = await ssh.connect(target, env)
    except ssh.SshError as exc:
        return [check_connection(target, exc)]
    checks = [check_connection(target, None)]
    try:
        run = remote.Remote(target, conn)
        uname = await run.run(["uname", "-m"], check=False, time_limit=60)
        checks.append(check_arch(target, uname.stdout))
        version = await run.run(["nix-store", "--version"], check=False, time_limit=60)
        checks.append(check_remote_nix(target, version.exit_status, version.stdout, version.stderr))
        config = None
        if version.exit_status == 0:
            shown = await run.run(
                ["nix", "--extra-experimental-features", "nix-command", "show-config", "--json"],
                check=False, time_limit=60,
            )
            if shown.exit_status == 0:
                with contextlib.suppress(ValueError, AttributeError):  # not JSON, or not an object
                    config = _unwrap(json.loads(shown.stdout))
            checks.append(check_signatures(target, config, fleet_key))
        if target.user != "root":
            sudo = await run.run(remote.sudo_check_argv(False), check=False, time_limit=60)
            checks.append(check_sudo(target, sudo.exit_status == 0, sudo.stderr))
    except remote.RemoteError as exc:
        checks.append(Check(target.name, "commands", False, exc.message, "check the connection and run again"))
    finally:
        conn.close()
    return checks


async def all_target_checks(targets: Sequence[Target], env: ssh.SshEnv, fleet_key: str | None) -> list[Check]:
    limit = asyncio.Semaphore(TARGET_CONCURRENCY)

    async def one(target: Target) -> list[Check]:
        async with limit:
            try:
                return await target_checks(target, env, fleet_key)
            except CrossnixError as exc:
                return [Check(target.name, "ssh", False, exc.message, exc.hint or "")]

    results = await asyncio.gather(*(one(t) for t in targets))
    return [check for checks in results for check in checks]

