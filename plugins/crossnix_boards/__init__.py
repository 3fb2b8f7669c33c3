"""crossnix's built-in boards. Each module is a plugin registered under the ``crossnix.boards`` entry-point
group in pyproject.toml, exactly as a third-party board would be."""

from __future__ import annotations

from pathlib import Path

from crossnix_tasks.boards import QemuMachine

NIX_DIR = Path(__file__).parent / "nix"

# QEMU lines checked on Debian 12 (shared/reference/boards.md §5).
UBOOT_ARM64 = QemuMachine(
    binary="qemu-system-aarch64",
    machine="virt",
    cpu="cortex-a72",
    firmware=("-bios", "/usr/lib/u-boot/qemu_arm64/u-boot.bin"),
    disk_device="virtio-blk-pci",
    console="ttyAMA0",
    firmware_packages=("u-boot-qemu",),
)
UEFI_ARM64 = QemuMachine(
    binary="qemu-system-aarch64",
    machine="virt",
    cpu="cortex-a72",
    firmware=(
        "-drive",
        "if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/AAVMF/AAVMF_CODE.fd",
        "-drive",
        "if=pflash,format=raw,unit=1,file={vars}",
    ),
    vars_template="/usr/share/AAVMF/AAVMF_VARS.fd",
    disk_device="virtio-blk-pci",
    console="ttyAMA0",
    firmware_packages=("qemu-efi-aarch64",),
)
UEFI_X86_64 = QemuMachine(
    binary="qemu-system-x86_64",
    machine="q35",
    firmware=(
        "-drive",
        "if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd",
        "-drive",
        "if=pflash,format=raw,unit=1,file={vars}",
    ),
    vars_template="/usr/share/OVMF/OVMF_VARS_4M.fd",
    disk_device="virtio-blk-pci",
    console="ttyS0",
    firmware_packages=("ovmf",),
)
# QEMU 7.2's riscv virt rejects pflash0; OpenSBI then U-Boot S-mode, which boots extlinux or EFI/BOOT.
UBOOT_RISCV64 = QemuMachine(
    binary="qemu-system-riscv64",
    machine="virt",
    firmware=(
        "-bios",
        "/usr/lib/riscv64-linux-gnu/opensbi/generic/fw_jump.elf",
        "-kernel",
        "/usr/lib/u-boot/qemu-riscv64_smode/uboot.elf",
    ),
    disk_device="virtio-blk-device",
    console="ttyS0",
    firmware_packages=("opensbi", "u-boot-qemu"),
)
