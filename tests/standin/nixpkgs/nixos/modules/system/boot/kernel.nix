# offline nixpkgs stand-in: nixos/modules/system/boot/kernel.nix and stage-1 (initrd).
{ config, lib, pkgs, ... }:
let
  inherit (lib) mkOption types;
  cfg = config.boot;
in
{
  options.boot = {
    kernelPackages = mkOption { type = types.raw; default = pkgs.linuxPackages; };
    kernelParams = mkOption { type = types.listOf types.str; default = [ ]; };
    kernelModules = mkOption { type = types.listOf types.str; default = [ ]; };
    consoleLogLevel = mkOption { type = types.int; default = 4; };
    initrd.kernelModules = mkOption { type = types.listOf types.str; default = [ ]; };
    initrd.availableKernelModules = mkOption { type = types.listOf types.str; default = [ ]; };
    postBootCommands = mkOption { type = types.lines; default = ""; };
    growPartition = mkOption { type = types.bool; default = false; };
  };

  config.system.build = {
    kernel = cfg.kernelPackages.kernel;
    initialRamdisk = pkgs.runCommand "initrd-standin" {
      modules = lib.concatStringsSep " " (lib.unique (cfg.initrd.kernelModules ++ cfg.initrd.availableKernelModules));
      kernel = cfg.kernelPackages.kernel;
    } ''
      mkdir -p $out
      printf 'offline nixpkgs stand-in initrd\nkernel: %s\nmodules: %s\n' "$kernel" "$modules" > $out/initrd
    '';
  };
}
