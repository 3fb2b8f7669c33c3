# offline nixos-hardware stand-in: raspberry-pi/4/default.nix.
# Vendor kernel as mkDefault, grub off / extlinux on as mkDefault, the bcm2711
# device-tree filter, and the kernel >= 6.1 assertion.
{ config, lib, pkgs, ... }:
{
  imports = [ ../common/firmware.nix ];

  boot.kernelPackages = lib.mkDefault (pkgs.linuxPackagesFor "6.18.0-rpi");
  boot.initrd.availableKernelModules = [ "pcie-brcmstb" "reset-raspberrypi" ];
  boot.loader.grub.enable = lib.mkDefault false;
  boot.loader.generic-extlinux-compatible.enable = lib.mkDefault true;
  hardware.deviceTree.filter = lib.mkDefault "bcm2711-rpi-*.dtb";

  assertions = [
    {
      assertion = lib.versionAtLeast config.boot.kernelPackages.kernel.version "6.1";
      message = "The Raspberry Pi 4 needs a kernel of version 6.1 or later (nixos-hardware stand-in).";
    }
  ];
}
