# offline nixpkgs stand-in: nixos/modules/misc/version.nix and label.nix.
{ config, lib, ... }:
let
  cfg = config.system.nixos;
in
{
  options.system = {
    stateVersion = lib.mkOption { type = lib.types.str; default = cfg.release; };
    nixos = {
      release = lib.mkOption { type = lib.types.str; default = lib.trivial.release; };
      versionSuffix = lib.mkOption { type = lib.types.str; default = lib.trivial.versionSuffix; };
      version = lib.mkOption { type = lib.types.str; default = cfg.release + cfg.versionSuffix; };
      revision = lib.mkOption { type = lib.types.nullOr lib.types.str; default = null; };
      codeName = lib.mkOption { type = lib.types.str; default = lib.trivial.codeName; };
      distroId = lib.mkOption { type = lib.types.str; default = "nixos"; };
      distroName = lib.mkOption { type = lib.types.str; default = "NixOS"; };
      tags = lib.mkOption { type = lib.types.listOf lib.types.str; default = [ ]; };
      label = lib.mkOption {
        type = lib.types.str;
        default = lib.concatStringsSep "-" ((builtins.sort (x: y: x < y) cfg.tags) ++ [ cfg.version ]);
      };
    };
  };
}
