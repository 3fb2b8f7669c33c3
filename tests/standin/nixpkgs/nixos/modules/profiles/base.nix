# offline nixpkgs stand-in: profiles/base.nix (imported by the sd-image-*.nix installers).
# Like nixpkgs it turns ZFS on with mkDefault (nixpkgs #562666); crossnix's boards force it off.
{ lib, ... }:
{
  boot.supportedFilesystems.zfs = lib.mkDefault true;
  networking.hostId = lib.mkDefault "8425e349";
}
