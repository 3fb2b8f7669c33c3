# offline nixpkgs stand-in: the base modules of every configuration.
[
  ./misc/nixpkgs.nix
  ./misc/version.nix
  ./misc/assertions.nix
  ./config/system.nix
  ./system/boot/kernel.nix
  ./system/boot/loader/loaders.nix
  ./system/boot/loader/generic-extlinux-compatible.nix
  ./system/boot/uki.nix
  ./system/activation/top-level.nix
  ./image/images.nix
  ./hardware/device-tree.nix
  ./profiles/all-hardware.nix
]
