"""Raspberry Pi 4 Model B: aarch64, nixos-hardware's raspberry-pi-4 module, mainline kernel, U-Boot SD card."""

from __future__ import annotations

from crossnix_boards import NIX_DIR, UBOOT_ARM64
from crossnix_tasks import Board, FlakeInput, ImageVariant, Media, hookimpl

BOARD = Board(
    name="rpi4",
    description="Raspberry Pi 4 Model B (BCM2711, aarch64)",
    systems=("aarch64-linux",),
    variants=(
        ImageVariant(
            name="sd-card",
            description="SD card: FIRMWARE (FAT, GPU firmware + U-Boot) and NIXOS_SD (ext4, extlinux), zstd",
            media=Media.SD_CARD,
        ),
    ),
    default_variant="sd-card",
    modules=(NIX_DIR / "rpi4.nix",),
    flake_inputs=(FlakeInput("nixos-hardware", "github:NixOS/nixos-hardware", follows_nixpkgs=False),),
    qemu={"aarch64-linux": UBOOT_ARM64},
    notes=(
        "Uses mainline pkgs.linuxPackages instead of the vendor kernel so nothing forces a kernel compile "
        "and the image also boots under `qemu-system-aarch64 -M virt` through U-Boot.",
        "The FIRMWARE partition is written once by the image; later deploys do not update it "
        "(nixpkgs #108048).",
        "Cross builds miss cache.nixos.org; `build = \"emulated\"` hits it for aarch64 but needs binfmt.",
    ),
    homepage="https://www.raspberrypi.com/products/raspberry-pi-4-model-b/",
)


@hookimpl
def crossnix_boards() -> list[Board]:
    return [BOARD]
