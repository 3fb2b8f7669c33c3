# crossnix's own module, added to every target: the platforms of its build
# strategy and the host name. Values come from the `crossnix` module argument.
#
#   cross     hostPlatform = the board's system, buildPlatform = this machine
#   emulated  hostPlatform = buildPlatform = the board's system (built under binfmt)
#   native    the same, on a machine of that system
#   remote    the same, on a build host or Nix remote builders
#
# Priority 90 beats plain definitions (100) and the boards' mkDefault, and
# still yields to a user's lib.mkForce. crossnix never sets nixpkgs.pkgs.
{ lib, crossnix, ... }:
{
  nixpkgs.hostPlatform = lib.mkOverride 90 crossnix.system;
  nixpkgs.buildPlatform = lib.mkOverride 90 (if crossnix.strategy == "cross" then crossnix.buildSystem else crossnix.system);
  networking.hostName = lib.mkDefault crossnix.targetName;
}
