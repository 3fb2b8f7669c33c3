"""The fleet signing key: closures are signed before they are copied, every target trusts the public key.

Without it a non-root deploy fails with "cannot add path ... because it lacks a valid signature" (the Nix
daemon accepts unsigned paths only from trusted users). ``inv deploy`` creates the key on first use under
the project's state directory (``.crossnix/keys/``, mode 0600, never in the Nix store, never logged); the
NixOS module ``nixexpr/modules/fleet-trust.nix`` adds the public key to ``nix.settings.trusted-public-keys``
of every target, so images and deployed systems accept what crossnix signed.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crossnix_tasks import nix

if TYPE_CHECKING:
    from crossnix_tasks.inventory import Target
    from crossnix_tasks.project import Project

KEY_DIR = "keys"
SECRET_FILE = "fleet-signing.sec"
PUBLIC_FILE = "fleet-signing.pub"


@dataclass(frozen=True)
class FleetKey:
    name: str
    secret_file: Path
    public_key: str  # "name:base64", the value for trusted-public-keys


def key_paths(state_dir: Path) -> tuple[Path, Path]:
    keys = state_dir / KEY_DIR
    return keys / SECRET_FILE, keys / PUBLIC_FILE


def read_public_key(state_dir: Path) -> str | None:
    """The fleet's public key, if the key exists (what the NixOS module is given)."""
    _, public = key_paths(state_dir)
    try:
        text = public.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    return text or None


def settings(project: Project, target: Target) -> dict[str, Any]:
    """``crossnix.settings.fleetTrust`` for ``nixexpr/modules/fleet-trust.nix``: the fleet's public key."""
    public = read_public_key(project.inventory.state_dir)
    return {"fleetTrust": {"publicKeys": [public] if public else []}}


def key_name(project_root: Path) -> str:
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", project_root.name).strip("-.") or "fleet"
    return f"crossnix-{base[:40]}-{secrets.token_hex(3)}"


async def ensure_fleet_key(state_dir: Path, project_root: Path) -> FleetKey:
    """Load the fleet key, creating it the first time (``nix key generate-secret``)."""
    secret_file, public_file = key_paths(state_dir)
    if secret_file.exists():
        if secret_file.stat().st_mode & 0o077:
            os.chmod(secret_file, 0o600)
        public = read_public_key(state_dir)
        if public is None:
            public = await nix.key_public(secret_file.read_text(encoding="utf-8").strip())
            _write(public_file, public + "\n", 0o644)
        return FleetKey(public.split(":", 1)[0], secret_file, public)
    secret_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(secret_file.parent, 0o700)
    name = key_name(project_root)
    secret = await nix.key_generate_secret(name)
    public = await nix.key_public(secret)
    _write(secret_file, secret + "\n", 0o600)
    _write(public_file, public + "\n", 0o644)
    return FleetKey(name, secret_file, public)


def _write(path: Path, text: str, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(tmp, path)


async def sign_closures(key: FleetKey, paths: Sequence[str]) -> None:
    """``nix store sign -r -k <secret>``: sign the paths and their closures in the local store."""
    await nix.store_sign(list(paths), key.secret_file, recursive=True)
