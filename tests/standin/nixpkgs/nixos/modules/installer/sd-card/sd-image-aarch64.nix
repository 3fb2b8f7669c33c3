# offline nixpkgs stand-in: installer/sd-card/sd-image-aarch64.nix (Raspberry Pi firmware + U-Boot, extlinux).
{ config, lib, pkgs, ... }:
{
  imports = [ ../../profiles/base.nix ./sd-image.nix ];

  boot.loader.grub.enable = false;
  boot.loader.generic-extlinux-compatible.enable = true;
  boot.consoleLogLevel = lib.mkDefault 7;
  boot.kernelParams = [ "console=ttyS0,115200n8" "console=ttyAMA0,115200n8" "console=tty0" ];

  sdImage = {
    populateFirmwareCommands = ''
      cp ${pkgs.raspberrypifw}/share/raspberrypi/boot/start4.elf firmware/
      cp ${pkgs.ubootRaspberryPi4_64bit}/u-boot.bin firmware/u-boot-rpi4.bin
      printf '[pi4]\nkernel=u-boot-rpi4.bin\nenable_gic=1\narm_64bit=1\n' > firmware/config.txt
    '';
    populateRootCommands = ''
      mkdir -p ./files/boot
      ${config.boot.loader.generic-extlinux-compatible.populateCmd} -c ${config.system.build.toplevel} -d ./files/boot
    '';
  };
}
