"""``inv hwconfig``: the target's own hardware configuration, generated on the target, kept in the project.

Runs ``nixos-generate-config --show-hardware-config`` on the target as root (through sudo for other users),
checks that the output parses as Nix (``nix-instantiate --parse``), writes it to
``hosts/<target>/hardware-configuration.nix`` next to boards.toml, and wires it into the target's ``modules`` in
boards.toml with tomlkit (every comment and the layout are kept; the result is validated before it replaces the
file). A different existing file is only replaced with ``--force``.

The wiring goes through ``hosts/<target>/hardware.nix``, a fixed wrapper that imports the generated file with
its ``fileSystems`` at ``lib.mkDefault`` priority. Without it every built-in board breaks: the generated file
mounts ``/`` by UUID while the board's image mounts the same partition by label (``NIXOS_SD``, ``nixos``), and
NixOS rejects the two definitions as conflicting. With it the board's definitions win and the rest of the
generated file (kernel modules, CPU microcode, swap, extra mounts) applies as written.

The command is a fixed ``sh -c`` script: it adds the NixOS profile directories to ``PATH`` because a
non-interactive SSH command or sudo's ``secure_path`` may not include them; nothing from the inventory is
interpolated into it.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from crossnix_tasks import process
from crossnix_tasks.errors import CrossnixError
from crossnix_tasks.inventory import Target
from crossnix_tasks.remote import Remote, RemoteError
from crossnix_tasks.tomledit import replace_validated, with_list_item

SCRIPT = (
    'PATH="$PATH:/run/current-system/sw/bin:/nix/var/nix/profiles/system/sw/bin"; '
    "exec nixos-generate-config --show-hardware-config"
)
HOSTS_DIR = "hosts"
FILE_NAME = "hardware-configuration.nix"
WRAPPER_NAME = "hardware.nix"
WRAPPER = """\
# Written by `inv hwconfig` (crossnix); the target's modules in boards.toml list this file.
# It imports hardware-configuration.nix (generated on the target) with its fileSystems at lib.mkDefault
# priority, so the board's own definitions of the same mount points (by label, as in the image) win instead
# of conflicting. Everything else of the generated file applies unchanged. Edit the generated file, or
# replace this one; `inv hwconfig` does not overwrite it once it exists.
args@{ config, lib, pkgs, modulesPath, ... }:
let
  generated = import ./hardware-configuration.nix args;
in
generated // {
  fileSystems = lib.mapAttrs (_: lib.mapAttrs (_: lib.mkDefault)) (generated.fileSystems or { });
}
"""


@dataclass(frozen=True)
class HwconfigResult:
    path: Path
    written: bool  # False: the file already had exactly this content
    wired: bool  # False: boards.toml already listed it


def argv() -> list[str]:
    return ["sh", "-c", SCRIPT]


def relative_path(target: str) -> str:
    """The module boards.toml lists for the target (the wrapper)."""
    return f"{HOSTS_DIR}/{target}/{WRAPPER_NAME}"


def generated_path(project_root: Path, target: str) -> Path:
    return project_root / HOSTS_DIR / target / FILE_NAME


async def generate(remote: Remote) -> str:
    """The hardware configuration as the target generates it."""
    try:
        result = await remote.run(argv(), root=True, time_limit=300)
    except RemoteError as exc:
        if exc.exit_status == 127 or "nixos-generate-config: not found" in exc.stderr:
            raise CrossnixError(
                f"{remote.target.name}: nixos-generate-config is not available on the target",
                hint="the target must run NixOS (boot a crossnix image: `inv flash --target NAME ...`)",
            ) from None
        if "sudo" in exc.stderr and "password" in exc.stderr:
            raise CrossnixError(
                f"{remote.target.name}: sudo needs a password for {remote.target.user!r}",
                hint=f"set `ask_sudo_password = true` in [targets.{remote.target.name}]",
            ) from None
        raise
    text = result.stdout
    if "{" not in text or not text.strip():
        raise CrossnixError(f"{remote.target.name}: nixos-generate-config printed no configuration:\n{text[:500]}")
    return text if text.endswith("\n") else text + "\n"


async def check_parses(text: str) -> None:
    """``nix-instantiate --parse`` of the text, so a broken file never reaches the project."""
    with tempfile.NamedTemporaryFile("w", suffix=".nix", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        try:
            await process.run(["nix-instantiate", "--parse", handle.name], timeout=60)
        except process.ProcessFailed as exc:
            raise CrossnixError(
                f"the generated hardware configuration does not parse as Nix:\n{process.stderr_tail(exc.stderr)}"
            ) from None


def write_wrapper(project_root: Path, target: str) -> bool:
    """Write ``hosts/<target>/hardware.nix`` unless it exists (a user's edit is kept)."""
    path = project_root / relative_path(target)
    if path.exists():
        return False
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(WRAPPER, encoding="utf-8")
    os.replace(tmp, path)
    return True


def write_file(project_root: Path, target: Target, text: str, *, force: bool) -> tuple[Path, bool]:
    path = generated_path(project_root, target.name)
    if path.exists():
        old = path.read_text(encoding="utf-8")
        if old == text:
            return path, False
        if not force:
            raise CrossnixError(
                f"{path} exists and differs from what {target.name} generates now",
                hint="pass --force to replace it (it is in your project: review the change with git diff)",
            )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path, True


def wire(inventory_path: Path, target: str, validate: Callable[[str], object]) -> bool:
    """Add ``hosts/<target>/hardware.nix`` to ``[targets.<target>].modules``; False if it is listed already.

    ``validate(source)`` must raise for an invalid inventory; boards.toml is only replaced once it returned.
    """
    edited = with_list_item(
        inventory_path, inventory_path.read_text(encoding="utf-8"), ("targets", target, "modules"),
        relative_path(target),
    )
    if edited is None:
        return False
    replace_validated(inventory_path, edited, validate)
    return True
