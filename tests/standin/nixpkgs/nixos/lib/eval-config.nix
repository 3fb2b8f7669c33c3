# offline nixpkgs stand-in: nixos/lib/eval-config.nix (what lib.nixosSystem calls).
{
  system ? null,
  pkgs ? null,
  modules,
  specialArgs ? { },
  lib ? import ../../lib,
  baseModules ? import ../modules/module-list.nix,
  extraModules ? [ ],
  prefix ? [ ],
  extraArgs ? { },
  ...
}:
let
  pkgsModule = {
    _file = ./eval-config.nix;
    key = toString ./eval-config.nix;
    config = lib.mkMerge (
      lib.optional (system != null) { nixpkgs.system = lib.mkDefault system; }
      ++ lib.optional (pkgs != null) { _module.args.pkgs = lib.mkForce pkgs; }
    );
  };
  withExtraAttrs = configuration:
    configuration
    // {
      inherit extraArgs lib;
      inherit (configuration._module.args) pkgs;
      extendModules = args: withExtraAttrs (configuration.extendModules args);
    };
in
withExtraAttrs (lib.evalModules {
  modules = baseModules ++ [ pkgsModule ] ++ extraModules ++ modules;
  specialArgs = { modulesPath = toString ../modules; } // specialArgs;
  inherit prefix;
  class = "nixos";
})
