# Fixes shared by every crossnix board for building NixOS for another
# architecture (shared/reference/boards.md §4). Imported by rpi4.nix,
# hifive-unmatched.nix and generic-uefi.nix.
#
# Everything here is independent of the build strategy (cross, emulated,
# native, remote) on purpose: the same target must evaluate to the same system
# whichever way it is built, or a deploy after an image flash would switch to a
# different closure.
{ lib, ... }:
{
  # ZFS: profiles/base.nix (imported by the sd-image-*.nix modules, so by the
  # rpi4 sd-card variant) turns on `boot.supportedFilesystems.zfs` with
  # mkDefault. That builds the out-of-tree zfs kernel module for the target
  # kernel, pulls zfs-user into the initrd and sets `networking.hostId`
  # (nixpkgs #562666); `boot.zfs.forceImportRoot` also changes its default at
  # stateVersion 26.11. No board here boots from ZFS, so keep it out.
  # mkForce so that no profile imported by an image builder brings it back;
  # a user who really wants ZFS on a board sets
  # `boot.supportedFilesystems.zfs = lib.mkOverride 40 true;`.
  # Files: nixos/modules/profiles/base.nix, nixos/modules/tasks/filesystems/zfs.nix
  boot.supportedFilesystems.zfs = lib.mkForce false;

  # man-db's cache generation and groff fail or run target binaries when cross
  # compiled (nixpkgs #366505 (open), #202077, #415044). mkDefault: a user who
  # builds natively or emulated can turn man pages back on.
  # File: nixos/modules/misc/documentation.nix
  documentation.man.enable = lib.mkDefault false;

  # Boards are usually evaluated from a bare crossnix target that has no
  # configuration.nix of its own; without a stateVersion NixOS warns, and
  # stateful defaults (e.g. boot.zfs.forceImportRoot, #562666) would follow
  # whatever release is evaluated. Pin it the way the installer media do
  # (nixos/modules/installer/cd-dvd/installation-cd-base.nix); the user's own
  # `system.stateVersion = "…";` wins.
  # File: nixos/modules/misc/version.nix
  system.stateVersion = lib.mkDefault lib.trivial.release;

  # hardware.enableAllHardware: sd-image.nix sets it to true (normal priority),
  # which puts profiles/all-hardware.nix's long initrd module list into
  # makeModulesClosure. That only fails with non-mainline kernels that lack
  # some of those modules ("modprobe: FATAL: Module … not found" in
  # …-modules-shrunk, nixpkgs #154163 (open), #111683). All three boards use
  # nixpkgs' mainline `pkgs.linuxPackages`, so it is left alone here; a user
  # who switches a board to a vendor kernel adds, inside the image variant:
  #   hardware.enableAllHardware = lib.mkForce false;
  # Files: nixos/modules/installer/sd-card/sd-image.nix,
  #        nixos/modules/profiles/all-hardware.nix
}
