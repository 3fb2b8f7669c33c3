# Raspberry Pi 4 Model B (BCM2711, aarch64-linux).
#
# Boot chain: GPU firmware (FIRMWARE partition, config.txt) -> U-Boot ->
# /boot/extlinux/extlinux.conf on the NIXOS_SD root partition.
#
# Relies on:
#   nixos-hardware  flake.nix                          nixosModules.raspberry-pi-4
#   nixos-hardware  raspberry-pi/4/default.nix         vendor kernel as mkDefault,
#                   grub/extlinux mkDefault, hardware.deviceTree.filter, kernel >= 6.1 assertion
#   nixos-hardware  raspberry-pi/common/firmware.nix   hardware.raspberry-pi.firmware.uboot.enable
#                   (copies u-boot.bin, sets config.txt kernel=u-boot.bin, and
#                   mkDefault's useGenerationDeviceTree = false; mkForce's
#                   sdImage.populateFirmwareCommands)
#   nixpkgs  nixos/modules/image/images.nix                          built-in `sd-card` variant
#   nixpkgs  nixos/modules/installer/sd-card/sd-image-aarch64.nix    what that variant imports
#   nixpkgs  nixos/modules/installer/sd-card/sd-image.nix            fileSystems, sdImage.*
#   nixpkgs  nixos/modules/system/boot/loader/generic-extlinux-compatible/default.nix
{
  lib,
  pkgs,
  options,
  inputs,
  ...
}:
let
  nixos-hardware =
    inputs.nixos-hardware or (throw ''
      crossnix: board rpi4 needs the flake input "nixos-hardware". Add this line to flake.nix:
        inputs.nixos-hardware.url = "github:NixOS/nixos-hardware";
    '');
in
{
  imports = [
    nixos-hardware.nixosModules.raspberry-pi-4
    ./common-cross.nix
  ];

  config = lib.mkMerge [
    {
      # crossnix sets host/build platform per build strategy; this default only
      # makes the module usable on its own.
      nixpkgs.hostPlatform = lib.mkDefault "aarch64-linux";

      # Mainline LTS kernel instead of nixos-hardware's mkDefault vendor
      # linux-rpi: it is what nixpkgs' own aarch64 SD image boots on a Pi 4,
      # it ships broadcom/bcm2711-rpi-4-b.dtb, has the EFI stub, and also boots
      # under `qemu-system-aarch64 -M virt`. Plain priority so it beats the
      # mkDefault; use lib.mkForce to pick another kernel.
      boot.kernelPackages = pkgs.linuxPackages;

      # raspberry-pi/common/firmware.nix sets this to mkDefault false when
      # U-Boot is enabled, so that U-Boot passes on the firmware's (vendor) DTB
      # with config.txt overlays. That DTB belongs to the vendor kernel; the
      # mainline kernel above needs its own DTB, which extlinux.conf's FDTDIR
      # line makes U-Boot load (as with nixpkgs' sd-image-aarch64.nix).
      # mkOverride 900 beats that mkDefault (1000) and still yields to a plain
      # user definition.
      boot.loader.generic-extlinux-compatible.useGenerationDeviceTree = lib.mkOverride 900 true;

      # Identical to what installer/sd-card/sd-image.nix defines inside the
      # image, so the flashed system and every later deploy agree (identical
      # values merge; a different device string would be a conflict).
      fileSystems."/" = {
        device = "/dev/disk/by-label/NIXOS_SD";
        fsType = "ext4";
      };
      fileSystems."/boot/firmware" = {
        device = "/dev/disk/by-label/FIRMWARE";
        fsType = "vfat";
        # mkDefault: inside the image sd-image.nix defines the same list at
        # normal priority, and list definitions would otherwise be concatenated.
        options = lib.mkDefault [
          "nofail"
          "noauto"
        ];
      };

      # Tweaks merged into nixpkgs' built-in `sd-card` variant (images.nix:
      # installer/sd-card/sd-image-${qemuArch}.nix, i.e. sd-image-aarch64.nix).
      # A plain definition merges with the built-in deferred module.
      image.modules.sd-card =
        { lib, ... }:
        {
          # Keep sd-image.nix's default zstd compression (file
          # sd-image/<name>.img.zst): crossnix's flash task decompresses .zst.
          sdImage.compressImage = lib.mkDefault true;
        };
    }

    # Without U-Boot on FIRMWARE nothing starts the extlinux generation: newer
    # nixos-hardware (raspberry-pi/common/firmware.nix) replaces
    # sd-image-aarch64.nix's firmware files and copies U-Boot only when this is
    # on. Older nixos-hardware pins lack the option and keep nixpkgs'
    # populateFirmwareCommands (u-boot-rpi4.bin), hence the guard.
    (lib.optionalAttrs (options ? hardware.raspberry-pi.firmware.uboot.enable) {
      hardware.raspberry-pi.firmware.uboot.enable = true;
    })
  ];
}
