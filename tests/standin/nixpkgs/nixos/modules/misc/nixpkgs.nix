# offline nixpkgs stand-in: nixos/modules/misc/nixpkgs.nix.
# pkgs is imported with localSystem = buildPlatform, crossSystem = hostPlatform;
# an explicit `nixpkgs.pkgs` wins silently, as in nixpkgs.
{ config, lib, options, ... }:
let
  cfg = config.nixpkgs;
  platform = lib.types.either lib.types.str lib.types.attrs;
in
{
  options.nixpkgs = {
    hostPlatform = lib.mkOption { type = platform; default = cfg.system; apply = lib.systems.elaborate; };
    buildPlatform = lib.mkOption { type = platform; default = cfg.hostPlatform; apply = lib.systems.elaborate; };
    system = lib.mkOption { type = lib.types.str; };
    config = lib.mkOption { type = lib.types.attrs; default = { }; };
    overlays = lib.mkOption { type = lib.types.listOf lib.types.unspecified; default = [ ]; };
    pkgs = lib.mkOption { type = lib.types.raw; };
  };

  config._module.args.pkgs =
    if options.nixpkgs.pkgs.isDefined then cfg.pkgs
    else
      import ../../../pkgs {
        localSystem = cfg.buildPlatform;
        crossSystem = cfg.hostPlatform;
        inherit (cfg) config overlays;
      };
}
