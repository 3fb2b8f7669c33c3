# offline nixpkgs stand-in: nixos/modules/image/images.nix.
# Every `image.modules.<variant>` is evaluated with extendModules of the whole
# configuration; `system.build.images.<variant>` is that variant's
# `system.build.image` with `passthru = { config; filePath; }`. Both are only
# defined when no image builder was imported directly (`system.build.image`).
{ config, lib, pkgs, extendModules, ... }:
let
  imageModules = {
    sd-card = {
      imports =
        let
          module = ../. + "/installer/sd-card/sd-image-${pkgs.targetPlatform.qemuArch}.nix";
        in
        if builtins.pathExists module then [ module ] else throw "The module ${toString module} does not exist.";
    };
    iso = ../installer/cd-dvd/iso-image.nix;
    qemu-efi = ../virtualisation/disk-image.nix;
    raw-efi = {
      imports = [ ../virtualisation/disk-image.nix ];
      image.format = "raw";
    };
  };
  imageConfigs = lib.mapAttrs (name: module: (extendModules { modules = [ module ]; }).config) config.image.modules;
in
{
  options = {
    system.build.images = lib.mkOption { type = lib.types.lazyAttrsOf lib.types.raw; readOnly = true; };
    image.modules = lib.mkOption { type = lib.types.attrsOf lib.types.deferredModule; };
  };

  config.image.modules = lib.mkIf (!config.system.build ? image) imageModules;
  config.system.build.images = lib.mkIf (!config.system.build ? image) (
    lib.mapAttrs (
      name: variantConfig:
      let
        builder =
          variantConfig.system.build.image
            or (throw "Module for `system.build.images.${name}` misses required `system.build.image` option.");
      in
      lib.recursiveUpdate builder {
        passthru = {
          config = variantConfig;
          filePath = variantConfig.image.filePath;
        };
      }
    ) imageConfigs
  );
}
