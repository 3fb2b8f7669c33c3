# offline nixpkgs stand-in: nixos/modules/system/boot/uki.nix (ukify runs on the build platform).
{ config, lib, pkgs, ... }:
let
  ukiFile = config.system.boot.loader.ukiFile;
in
{
  options.system.boot.loader.ukiFile = lib.mkOption {
    type = lib.types.str;
    default = "${config.system.nixos.distroId}_${config.system.nixos.label}.efi";
  };
  config.system.build.uki = pkgs.runCommand "uki-standin" {
    inherit ukiFile;
    toplevel = config.system.build.toplevel;
  } ''
    mkdir -p $out
    printf 'offline nixpkgs stand-in UKI for %s\n' "$toplevel" > "$out/$ukiFile"
  '';
}
