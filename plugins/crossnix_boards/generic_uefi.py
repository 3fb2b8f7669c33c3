"""Generic UEFI machines (x86_64, aarch64, riscv64): a cross-buildable repart disk, an ISO, and
nixpkgs' native-only disk images."""

from __future__ import annotations

from crossnix_boards import NIX_DIR, UBOOT_RISCV64, UEFI_ARM64, UEFI_X86_64
from crossnix_tasks import Board, ImageVariant, Media, hookimpl

_VM_BUILDER = (
    "nixpkgs builds it with make-disk-image.nix, which installs the bootloader inside a VM of the target "
    "architecture (pkgs.vmTools.runInLinuxVM); build it natively or with `build = \"emulated\"`, "
    "or use the cross-buildable 'efi-disk' variant"
)

BOARD = Board(
    name="generic-uefi",
    description="Any UEFI machine or VM: systemd-boot, x86_64 / aarch64 / riscv64",
    systems=("x86_64-linux", "aarch64-linux", "riscv64-linux"),
    variants=(
        ImageVariant(
            name="efi-disk",
            description="raw GPT disk built with systemd-repart: ESP (systemd-boot + UKI) and ext4 root",
            media=Media.DISK,
        ),
        ImageVariant(name="iso", description="bootable ISO (EFI)", media=Media.ISO),
        ImageVariant(
            name="qemu-efi",
            description="qcow2 disk for VMs (nixpkgs' make-disk-image)",
            media=Media.QCOW2,
            native_only=True,
            native_only_reason=_VM_BUILDER,
        ),
        ImageVariant(
            name="raw-efi",
            description="raw EFI disk (nixpkgs' make-disk-image)",
            media=Media.DISK,
            native_only=True,
            native_only_reason=_VM_BUILDER,
        ),
    ),
    default_variant="efi-disk",
    modules=(NIX_DIR / "generic-uefi.nix",),
    qemu={"x86_64-linux": UEFI_X86_64, "aarch64-linux": UEFI_ARM64, "riscv64-linux": UBOOT_RISCV64},
    notes=(
        "efi-disk puts systemd-boot at EFI/BOOT/BOOT{X64,AA64,RISCV64}.EFI, so no EFI variables are needed.",
        "qemu-efi and raw-efi cannot be cross-compiled; crossnix refuses them with `build = \"cross\"`.",
    ),
)


@hookimpl
def crossnix_boards() -> list[Board]:
    return [BOARD]
