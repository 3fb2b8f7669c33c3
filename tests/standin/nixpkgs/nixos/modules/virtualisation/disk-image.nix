# offline nixpkgs stand-in: virtualisation/disk-image.nix.
# nixpkgs builds these with make-disk-image.nix inside a VM of the *target*
# architecture (pkgs.vmTools.runInLinuxVM), so the derivation's system is the
# host platform's: a cross configuration cannot build it (platform mismatch).
{ config, lib, pkgs, ... }:
let
  cfg = config.image;
  host = pkgs.stdenv.hostPlatform;
in
{
  imports = [ ../image/file-options.nix ];

  options.image = {
    format = lib.mkOption { type = lib.types.enum [ "qcow2" "raw" "vpc" ]; default = "qcow2"; };
    efiSupport = lib.mkOption { type = lib.types.bool; default = true; };
  };

  config = {
    fileSystems = lib.mkImageMediaOverride {
      "/" = { device = "/dev/disk/by-label/nixos"; fsType = "ext4"; autoResize = true; };
      "/boot" = lib.mkIf cfg.efiSupport { device = "/dev/disk/by-label/ESP"; fsType = "vfat"; };
    };
    boot.loader.systemd-boot.enable = lib.mkDefault cfg.efiSupport;
    boot.loader.grub.enable = lib.mkDefault (!cfg.efiSupport);
    system.nixos.tags = [ cfg.format ] ++ lib.optional cfg.efiSupport "efi";
    image.extension = cfg.format;
    system.build.image = pkgs.standinDerivation {
      name = config.image.fileName;
      system = host.system;
      toplevel = config.system.build.toplevel;
      fileName = config.image.fileName;
      script = ''
        mkdir -p $out
        printf 'offline nixpkgs stand-in disk image, built in a VM of the target architecture\ntoplevel=%s\n' "$toplevel" > "$out/$fileName"
      '';
    };
  };
}
