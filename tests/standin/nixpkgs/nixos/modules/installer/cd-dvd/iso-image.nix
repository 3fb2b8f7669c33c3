# offline nixpkgs stand-in: installer/cd-dvd/iso-image.nix (the "ISO" is a small placeholder file).
{ config, lib, pkgs, ... }:
let
  inherit (lib) mkOption types;
  cfg = config.isoImage;
in
{
  imports = [ ../../image/file-options.nix ];

  options.isoImage = {
    edition = mkOption { type = types.str; default = ""; };
    makeEfiBootable = mkOption { type = types.bool; default = false; };
    makeUsbBootable = mkOption { type = types.bool; default = false; };
    makeBiosBootable = mkOption { type = types.bool; default = pkgs.stdenv.hostPlatform.isx86; };
    compressImage = mkOption { type = types.bool; default = false; };
    volumeID = mkOption { type = types.str; default = "nixos-${config.system.nixos.label}"; };
  };

  config = {
    lib.isoFileSystems = {
      "/" = { fsType = "tmpfs"; options = [ "mode=0755" ]; };
      "/iso" = { device = "/dev/root"; fsType = "iso9660"; };
      "/nix/.ro-store" = { device = "/iso/nix-store.squashfs"; fsType = "squashfs"; };
      "/nix/.rw-store" = { fsType = "tmpfs"; };
      "/nix/store" = { fsType = "overlay"; device = "overlay"; };
    };
    fileSystems = lib.mkImageMediaOverride config.lib.isoFileSystems;
    boot.loader.grub.enable = lib.mkImageMediaOverride false;
    system.nixos.tags = [ "iso" ];
    image.baseName = lib.mkForce "nixos${lib.optionalString (cfg.edition != "") "-${cfg.edition}"}-${config.system.nixos.label}-${pkgs.stdenv.hostPlatform.system}";
    image.extension = if cfg.compressImage then "iso.zst" else "iso";
    image.filePath = "iso/${config.image.fileName}";
    system.build.image = config.system.build.isoImage;
    system.build.isoImage = pkgs.runCommand config.image.fileName {
      toplevel = config.system.build.toplevel;
      fileName = config.image.fileName;
      flags = "efi=${lib.boolToString cfg.makeEfiBootable} usb=${lib.boolToString cfg.makeUsbBootable} bios=${lib.boolToString cfg.makeBiosBootable}";
    } ''
      mkdir -p $out/iso $out/nix-support
      printf 'offline nixpkgs stand-in ISO (not bootable)\ntoplevel=%s\n%s\n' "$toplevel" "$flags" > "$out/iso/$fileName"
      echo "file iso $out/iso/$fileName" > $out/nix-support/hydra-build-products
    '';
  };
}
