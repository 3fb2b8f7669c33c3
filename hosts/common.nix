# Shared by every target in boards.toml ([defaults] modules).
{ lib, ... }:
{
  services.openssh.enable = true;
  services.openssh.settings.PasswordAuthentication = false;
  time.timeZone = lib.mkDefault "UTC";
  # The release these machines were first installed with. Plain priority: the boards' common-cross.nix
  # defaults it (mkDefault) to the evaluated nixpkgs release, and two different mkDefaults would conflict.
  system.stateVersion = "25.05";
}
