# offline nixpkgs stand-in: boot loader switches (grub, systemd-boot, EFI).
{ lib, ... }:
let
  inherit (lib) mkOption types;
in
{
  options.boot.loader = {
    grub.enable = mkOption { type = types.bool; default = true; };
    systemd-boot.enable = mkOption { type = types.bool; default = false; };
    efi.canTouchEfiVariables = mkOption { type = types.bool; default = false; };
    timeout = mkOption { type = types.nullOr types.int; default = 5; };
  };
}
