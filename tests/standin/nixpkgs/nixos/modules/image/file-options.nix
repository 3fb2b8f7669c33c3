# offline nixpkgs stand-in: nixos/modules/image/file-options.nix.
{ config, lib, pkgs, ... }:
{
  options.image = {
    baseName = lib.mkOption {
      type = lib.types.str;
      default = "nixos-image-${config.system.nixos.label}-${pkgs.stdenv.hostPlatform.system}";
    };
    extension = lib.mkOption { type = lib.types.str; };
    fileName = lib.mkOption { type = lib.types.str; default = "${config.image.baseName}.${config.image.extension}"; };
    filePath = lib.mkOption { type = lib.types.str; default = config.image.fileName; };
  };
}
