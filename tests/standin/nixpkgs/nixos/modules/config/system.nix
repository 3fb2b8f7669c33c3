# offline nixpkgs stand-in: the options of users, networking, nix, environment
# and file systems whose merge semantics matter (attrsOf: priorities apply to
# the whole set, as in NixOS). Everything else is freeform.
{ config, lib, pkgs, ... }:
let
  inherit (lib) mkOption types;
  userModule = {
    options = {
      isNormalUser = mkOption { type = types.bool; default = false; };
      isSystemUser = mkOption { type = types.bool; default = false; };
      extraGroups = mkOption { type = types.listOf types.str; default = [ ]; };
      openssh.authorizedKeys.keys = mkOption { type = types.listOf types.str; default = [ ]; };
      openssh.authorizedKeys.keyFiles = mkOption { type = types.listOf types.path; default = [ ]; };
    };
  };
in
{
  options = {
    networking.hostName = mkOption { type = types.str; default = "nixos"; };
    fileSystems = mkOption { type = types.attrsOf (types.submodule { }); default = { }; };
    swapDevices = mkOption { type = types.listOf types.unspecified; default = [ ]; };
    users.users = mkOption { type = types.attrsOf (types.submodule userModule); default = { }; };
    users.mutableUsers = mkOption { type = types.bool; default = true; };
    services.openssh = {
      enable = mkOption { type = types.bool; default = false; };
      settings = mkOption { type = types.attrsOf types.anything; default = { }; };
      hostKeys = mkOption { type = types.listOf types.attrs; default = [ ]; };
    };
    security.sudo.enable = mkOption { type = types.bool; default = true; };
    security.sudo.wheelNeedsPassword = mkOption { type = types.bool; default = true; };
    time.timeZone = mkOption { type = types.nullOr types.str; default = null; };
    users.groups = mkOption { type = types.attrsOf (types.submodule { }); default = { }; };
    environment.etc = mkOption { type = types.attrsOf (types.submodule { }); default = { }; };
    environment.systemPackages = mkOption { type = types.listOf types.package; default = [ ]; };
    nix.enable = mkOption { type = types.bool; default = true; };
    nix.package = mkOption { type = types.package; default = pkgs.nix; };
    nix.settings = mkOption { type = types.attrsOf types.anything; default = { }; };
    nix.extraOptions = mkOption { type = types.lines; default = ""; };
    system.activationScripts = mkOption { type = types.attrsOf types.unspecified; default = { }; };
    lib = mkOption { type = types.attrsOf types.attrs; default = { }; };
  };
}
