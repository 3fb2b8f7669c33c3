"""What a board plugin declares: frozen data, no behaviour.

A board plugin returns :class:`Board` objects from ``crossnix_boards``; everything crossnix does for a board
(evaluating, building images, booting them in QEMU, flashing) is driven from these fields.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

NIX_SYSTEMS = ("x86_64-linux", "aarch64-linux", "riscv64-linux")
_BOARD_NAME = re.compile(r"^[a-z][a-z0-9-]*$")


class Media(StrEnum):
    """Where an image is written. Decides how ``inv flash`` and ``inv vm`` treat it."""

    SD_CARD = "sd-card"
    DISK = "disk"  # USB stick, NVMe, SATA: a whole block device
    ISO = "iso"  # optical or hybrid USB image
    QCOW2 = "qcow2"  # virtual machines only


@dataclass(frozen=True)
class ImageVariant:
    """One ``config.system.build.images.<name>`` the board supports.

    ``native_only`` variants cannot be cross-compiled (their builder runs a VM of the target architecture);
    ``native_only_reason`` is shown when crossnix refuses one.
    """

    name: str
    description: str
    media: Media
    native_only: bool = False
    native_only_reason: str = ""
    systems: tuple[str, ...] = ()  # empty: every system of the board

    def supports(self, system: str) -> bool:
        return not self.systems or system in self.systems


@dataclass(frozen=True)
class FlakeInput:
    """A flake input the board's modules read as ``inputs.<name>``; ``inv init`` pins it in flake.nix."""

    name: str
    url: str
    follows_nixpkgs: bool = True


@dataclass(frozen=True)
class QemuMachine:
    """How to boot this board's images for one system under QEMU.

    ``firmware`` is the argv that loads firmware (``-bios``, ``-kernel`` or pflash drives); ``{vars}`` in it is
    replaced by a writable copy of ``vars_template`` (UEFI variable store). ``disk_device`` is the QEMU device
    the image is attached through.
    """

    binary: str
    machine: str
    firmware: tuple[str, ...]
    disk_device: str
    console: str
    cpu: str | None = None
    vars_template: str | None = None
    firmware_packages: tuple[str, ...] = ()  # Debian packages providing the firmware files


@dataclass(frozen=True)
class Board:
    """A board a plugin contributes. ``modules`` are NixOS module files added to every target of the board."""

    name: str
    description: str
    systems: tuple[str, ...]
    variants: tuple[ImageVariant, ...]
    default_variant: str
    modules: tuple[Path, ...]
    flake_inputs: tuple[FlakeInput, ...] = ()
    qemu: dict[str, QemuMachine] = field(default_factory=dict)  # keyed by Nix system
    notes: tuple[str, ...] = ()  # board know-how shown by `inv boards --verbose` and `inv doctor`
    homepage: str = ""

    def __post_init__(self) -> None:
        problems = []
        if not _BOARD_NAME.match(self.name):
            problems.append(f"name {self.name!r} must be lowercase letters, digits and dashes")
        if not self.systems:
            problems.append("declares no Nix system")
        unknown = [s for s in self.systems if s not in NIX_SYSTEMS]
        if unknown:
            problems.append(f"unknown systems {unknown}; known: {', '.join(NIX_SYSTEMS)}")
        names = [v.name for v in self.variants]
        if self.default_variant not in names:
            problems.append(f"default variant {self.default_variant!r} is not one of its variants {names}")
        if len(set(names)) != len(names):
            problems.append(f"variant names repeat: {names}")
        missing = [str(m) for m in self.modules if not m.is_file()]
        if missing:
            problems.append(f"module files missing: {', '.join(missing)}")
        if problems:
            raise ValueError(f"board {self.name!r}: " + "; ".join(problems))

    @property
    def default_system(self) -> str:
        return self.systems[0]

    def variant(self, name: str) -> ImageVariant | None:
        return next((v for v in self.variants if v.name == name), None)

    def variants_for(self, system: str) -> tuple[ImageVariant, ...]:
        return tuple(v for v in self.variants if v.supports(system))
