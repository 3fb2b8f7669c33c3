# offline nixos-hardware stand-in (crossnix tests) -- NOT nixos-hardware.
# Exposes nixosModules.raspberry-pi-4 with the behaviour crossnix's rpi4 board
# relies on (raspberry-pi/4/default.nix, raspberry-pi/common/firmware.nix of
# NixOS/nixos-hardware). See ../README.md.
{
  description = "offline nixos-hardware stand-in for crossnix's tests (NOT nixos-hardware)";
  outputs = { self }: {
    nixosModules.raspberry-pi-4 = import ./raspberry-pi/4;
    isOfflineStandin = true;
  };
}
