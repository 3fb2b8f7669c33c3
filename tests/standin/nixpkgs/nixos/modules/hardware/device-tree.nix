# offline nixpkgs stand-in: hardware.deviceTree.
{ config, lib, pkgs, ... }:
{
  options.hardware.deviceTree = {
    enable = lib.mkOption { type = lib.types.bool; default = pkgs.stdenv.hostPlatform.linux-kernel.DTB; };
    name = lib.mkOption { type = lib.types.nullOr lib.types.str; default = null; };
    filter = lib.mkOption { type = lib.types.nullOr lib.types.str; default = null; };
    overlays = lib.mkOption { type = lib.types.listOf lib.types.unspecified; default = [ ]; };
  };
}
