# offline nixpkgs stand-in: profiles/all-hardware.nix behind hardware.enableAllHardware.
{ config, lib, ... }:
{
  options.hardware.enableAllHardware = lib.mkOption { type = lib.types.bool; default = false; };
  config = lib.mkIf config.hardware.enableAllHardware {
    boot.initrd.availableKernelModules = [ "sd_mod" "sr_mod" "ahci" "ohci_pci" "ehci_pci" "mmc_block" "uhci_hcd" ];
  };
}
