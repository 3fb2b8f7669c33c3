#!/usr/bin/env bash
# System packages crossnix's tests and its embedded demo use (Debian 12, as root; idempotent).
#   nix-bin          real Nix 2.8: evaluates, builds, copies closures, switches profiles
#   openssh-*        real sshd targets on loopback ports
#   qemu-*, ovmf, qemu-efi-aarch64, u-boot-qemu, opensbi   `inv vm` and its firmware
#   qemu-user-static emulated (binfmt) builds, registered only inside a user namespace
#   sudo, zstd, util-linux, fdisk, dosfstools, e2fsprogs   targets, images, flashing
#   mtools           the offline nixpkgs stand-in's sd-card images (FAT firmware partition, like sd-image.nix)
set -euo pipefail
packages=(
  nix-bin openssh-server openssh-client sudo zstd util-linux fdisk dosfstools e2fsprogs git
  qemu-user-static qemu-system-x86 qemu-system-arm qemu-system-misc qemu-utils
  ovmf qemu-efi-aarch64 u-boot-qemu opensbi python3-venv mtools
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
mkdir -p /run/sshd
