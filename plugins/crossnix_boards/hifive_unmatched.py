"""SiFive HiFive Unmatched (FU740, riscv64): its own GPT SD-card image with U-Boot SPL and ITB."""

from __future__ import annotations

from crossnix_boards import NIX_DIR, UBOOT_RISCV64
from crossnix_tasks import Board, ImageVariant, Media, hookimpl

BOARD = Board(
    name="hifive-unmatched",
    description="SiFive HiFive Unmatched (FU740, riscv64)",
    systems=("riscv64-linux",),
    variants=(
        ImageVariant(
            name="sd-card",
            description="GPT SD card: U-Boot SPL at sector 34, OpenSBI+U-Boot ITB at 2082, NIXOS_SD root",
            media=Media.SD_CARD,
        ),
        ImageVariant(
            name="qemu-sd-card",
            description="the same image without the board device tree, for `qemu-system-riscv64 -M virt`",
            media=Media.SD_CARD,
        ),
    ),
    default_variant="sd-card",
    modules=(NIX_DIR / "hifive-unmatched.nix",),
    qemu={"riscv64-linux": UBOOT_RISCV64},
    notes=(
        "Set the MSEL DIP switches to 1011 to boot from the SD card.",
        "nixpkgs has no riscv64 sd-card image and no Unmatched U-Boot: both come from this plugin.",
        "riscv64-linux is not built by Hydra: everything compiles from source; emulated builds are very slow.",
        "QEMU has no Unmatched machine: `inv vm` boots the qemu-sd-card variant on -M virt.",
    ),
    homepage="https://www.sifive.com/boards/hifive-unmatched",
)


@hookimpl
def crossnix_boards() -> list[Board]:
    return [BOARD]
