# offline nixpkgs stand-in: generic-extlinux-compatible. `populateCmd` runs on
# the build platform (buildPackages), like nixpkgs' extlinux-conf-builder.
{ config, lib, pkgs, ... }:
let
  inherit (lib) mkOption types;
  cfg = config.boot.loader.generic-extlinux-compatible;
  builder = pkgs.buildPackages.writeShellScript "extlinux-conf-builder-standin.sh" ''
    # offline nixpkgs stand-in: extlinux-conf-builder -c <toplevel> -d <boot dir>
    set -eu
    toplevel= dir=
    while [ $# -gt 0 ]; do
      case "$1" in
        -c) toplevel=$2; shift 2 ;;
        -d) dir=$2; shift 2 ;;
        *) shift ;;
      esac
    done
    mkdir -p "$dir/extlinux" "$dir/nixos"
    {
      echo "# Generated file, all changes will be lost on nixos-rebuild! (offline nixpkgs stand-in)"
      echo "DEFAULT nixos-default"
      echo "TIMEOUT ${toString cfg.timeoutTenths}"
      echo "LABEL nixos-default"
      echo "  MENU LABEL NixOS - Default"
      echo "  LINUX ../nixos/kernel"
      echo "  INITRD ../nixos/initrd"
      echo "  APPEND init=$toplevel/init $(cat "$toplevel/kernel-params")"
      ${lib.optionalString cfg.useGenerationDeviceTree ''echo "  FDTDIR ../nixos/dtbs"''}
    } > "$dir/extlinux/extlinux.conf"
    cp "$toplevel/kernel" "$dir/nixos/kernel"
    cp "$toplevel/initrd" "$dir/nixos/initrd"
  '';
in
{
  options.boot.loader.generic-extlinux-compatible = {
    enable = mkOption { type = types.bool; default = false; };
    useGenerationDeviceTree = mkOption { type = types.bool; default = true; };
    configurationLimit = mkOption { type = types.int; default = 20; };
    timeoutTenths = mkOption { type = types.int; default = 50; };
    populateCmd = mkOption { type = types.str; readOnly = true; default = "${builder}"; };
  };
}
