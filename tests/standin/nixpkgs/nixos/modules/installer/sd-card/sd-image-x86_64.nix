# offline nixpkgs stand-in: installer/sd-card/sd-image-x86_64.nix.
{ config, lib, ... }:
{
  imports = [ ../../profiles/base.nix ./sd-image.nix ];
  boot.loader.grub.enable = false;
  boot.loader.generic-extlinux-compatible.enable = true;
  sdImage.populateRootCommands = ''
    mkdir -p ./files/boot
    ${config.boot.loader.generic-extlinux-compatible.populateCmd} -c ${config.system.build.toplevel} -d ./files/boot
  '';
}
