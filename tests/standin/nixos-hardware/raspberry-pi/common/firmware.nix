# offline nixos-hardware stand-in: raspberry-pi/common/firmware.nix.
# When an sd-image module is present, it replaces (mkForce) the firmware files
# and copies U-Boot only when hardware.raspberry-pi.firmware.uboot.enable is
# set (which also writes kernel=u-boot.bin and mkDefault's
# useGenerationDeviceTree = false).
{ config, lib, options, pkgs, ... }:
let
  cfg = config.hardware.raspberry-pi.firmware;
in
{
  options.hardware.raspberry-pi.firmware = {
    enable = lib.mkEnableOption "updating the FIRMWARE partition on activation";
    uboot.enable = lib.mkEnableOption "U-Boot on the FIRMWARE partition";
  };

  config = lib.mkMerge [
    (lib.mkIf cfg.uboot.enable {
      boot.loader.generic-extlinux-compatible.useGenerationDeviceTree = lib.mkDefault false;
    })
    (lib.optionalAttrs (options ? sdImage) {
      sdImage.populateFirmwareCommands = lib.mkForce (''
        for f in start4.elf fixup4.dat bcm2711-rpi-4-b.dtb; do
          cp ${pkgs.raspberrypifw}/share/raspberrypi/boot/$f firmware/
        done
        printf '[pi4]\narm_64bit=1\n' > firmware/config.txt
      '' + lib.optionalString cfg.uboot.enable ''
        cp ${pkgs.ubootRaspberryPi4_64bit}/u-boot.bin firmware/u-boot.bin
        printf 'kernel=u-boot.bin\n' >> firmware/config.txt
      '');
    })
  ];
}
