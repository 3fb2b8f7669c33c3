# Shared by every target in boards.toml ([defaults] modules).
{ lib, ... }:
{
  services.openssh.enable = true;
  services.openssh.settings.PasswordAuthentication = false;
  time.timeZone = lib.mkDefault "UTC";
  system.stateVersion = lib.mkDefault "25.05";
}
