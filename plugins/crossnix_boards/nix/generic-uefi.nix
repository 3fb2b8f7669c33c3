# Generic UEFI machine or VM: x86_64-linux, aarch64-linux, riscv64-linux.
#
# Boot: UEFI firmware (or U-Boot's EFI loader on riscv64) ->
# systemd-boot at the removable-media path EFI/BOOT/BOOT<ARCH>.EFI (no EFI
# variables needed) -> kernel. The flashed image boots a Unified Kernel Image
# from EFI/Linux; after the first deploy, switch-to-configuration installs
# systemd-boot properly and adds its generation entries to the same ESP.
#
# Variants:
#   efi-disk  (here)      image/repart.nix, runs systemd-repart on the build
#                         platform: cross-buildable.
#   iso       (built-in)  installer/cd-dvd/iso-image.nix, tweaked here.
#   qemu-efi, raw-efi     (built-in, untouched) virtualisation/disk-image.nix ->
#                         nixos/lib/make-disk-image.nix, which installs the
#                         bootloader inside pkgs.vmTools.runInLinuxVM, a VM of
#                         the *target* architecture: native builds only.
#
# Relies on:
#   nixpkgs  nixos/modules/image/images.nix               image.modules, built-in iso/qemu-efi/raw-efi
#   nixpkgs  nixos/modules/image/repart.nix               image.repart.* (package = buildPackages.systemd)
#   nixpkgs  nixos/modules/image/repart-image.nix         --architecture=<target> for Type=root
#   nixpkgs  nixos/doc/manual/installation/building-images-via-systemd-repart.chapter.md
#                                                         ESP contents (systemd-boot + UKI), Label=nixos
#   nixpkgs  nixos/modules/system/boot/uki.nix            system.build.uki, system.boot.loader.ukiFile
#   nixpkgs  nixos/modules/virtualisation/disk-image.nix  its fileSystems, which the base config matches
#   nixpkgs  nixos/modules/installer/cd-dvd/iso-image.nix isoImage.*, config.lib.isoFileSystems
#   nixpkgs  nixos/modules/installer/sd-card/sd-image.nix first-boot nix-path-registration pattern
{ lib, pkgs, ... }:
let
  inherit (pkgs.stdenv.hostPlatform) isAarch64;
in
{
  imports = [ ./common-cross.nix ];

  boot.loader.grub.enable = lib.mkDefault false;
  boot.loader.systemd-boot.enable = lib.mkDefault true;
  # Images are built without access to the target's NVRAM; systemd-boot sits
  # at the removable-media path instead. (This is also the option's default.)
  boot.loader.efi.canTouchEfiVariables = lib.mkDefault false;

  boot.kernelPackages = lib.mkDefault pkgs.linuxPackages;

  # QEMU's serial port (virt on aarch64: PL011 ttyAMA0; q35 and riscv virt:
  # ttyS0) after the screen, so the serial line is /dev/console; absent
  # devices are ignored by the kernel.
  boot.kernelParams = [
    "console=tty0"
    (if isAarch64 then "console=ttyAMA0,115200" else "console=ttyS0,115200")
  ];

  # Disks of VMs (virtio over PCI, or MMIO on aarch64/riscv64 virt) and of
  # common hardware; the initrd's default list has no virtio.
  boot.initrd.availableKernelModules = [
    "virtio_pci"
    "virtio_mmio"
    "virtio_blk"
    "virtio_scsi"
    "nvme"
    "ahci"
    "xhci_pci"
    "usb_storage"
    "uas"
    "sd_mod"
  ];

  # Same devices as virtualisation/disk-image.nix (qemu-efi, raw-efi) and the
  # efi-disk variant below: ext4 labelled `nixos`, ESP labelled `ESP`.
  fileSystems."/" = {
    device = "/dev/disk/by-label/nixos";
    fsType = "ext4";
    autoResize = lib.mkDefault true;
  };
  fileSystems."/boot" = {
    device = "/dev/disk/by-label/ESP";
    fsType = "vfat";
    # systemd-boot warns about a world-readable random seed on the ESP.
    options = lib.mkDefault [
      "fmask=0077"
      "dmask=0077"
    ];
  };
  # The images are minimal; grow the root partition to the disk on boot
  # (disk-image.nix does the same, with mkDefault).
  boot.growPartition = lib.mkDefault true;

  image.modules = {
    efi-disk =
      {
        config,
        lib,
        pkgs,
        modulesPath,
        ...
      }:
      let
        inherit (pkgs.stdenv.hostPlatform) efiArch system;
        inherit (config.system.boot.loader) ukiFile;
        # `nix-store --load-db` input for the first boot (sd-image.nix does the same).
        closure = pkgs.closureInfo { rootPaths = [ config.system.build.toplevel ]; };
      in
      {
        imports = [ "${modulesPath}/image/repart.nix" ];

        system.nixos.tags = [ "efi-disk" ];

        image.repart = {
          # File: $out/<name>_<version>.raw (repart.nix sets image.baseName,
          # image.extension "raw"; file-options.nix sets image.filePath).
          name = lib.mkDefault "nixos-image-${system}";
          version = lib.mkDefault config.system.nixos.label;

          partitions = {
            "10-esp" = {
              contents = {
                # systemd-boot for the target (pkgs.systemd is the host
                # package set's systemd; efiArch: x64, aa64, riscv64).
                "/EFI/BOOT/BOOT${lib.toUpper efiArch}.EFI".source =
                  "${pkgs.systemd}/lib/systemd/boot/efi/systemd-boot${efiArch}.efi";
                # Type #2 boot entry that systemd-boot finds on its own; built
                # by uki.nix with ukify from buildPackages and the target's stub.
                "/EFI/Linux/${ukiFile}".source = "${config.system.build.uki}/${ukiFile}";
              };
              repartConfig = {
                Type = "esp";
                Format = "vfat";
                # systemd-repart uses Label= for the partition and the file
                # system, hence /dev/disk/by-label/ESP.
                Label = "ESP";
                # Room for the kernels and initrds of later generations, which
                # systemd-boot copies to the ESP.
                SizeMinBytes = lib.mkDefault "512M";
              };
            };
            "20-root" = {
              storePaths = [ config.system.build.toplevel ];
              contents."/nix-path-registration".source = "${closure}/registration";
              repartConfig = {
                # repart-image.nix passes --architecture=<target>, so this is
                # the target's root partition type (gpt-auto friendly).
                Type = "root";
                Format = "ext4";
                Label = "nixos";
                # Smallest file system that fits; boot.growPartition and
                # autoResize above grow it on first boot.
                Minimize = "guess";
              };
            };
          };
        };

        # Register the copied store paths in the Nix database on first boot, so
        # that later deploys (nix copy + switch-to-configuration) and garbage
        # collection see them as valid.
        boot.postBootCommands = lib.mkIf config.nix.enable ''
          if [ -f /nix-path-registration ]; then
            ${config.nix.package.out}/bin/nix-store --load-db < /nix-path-registration
            touch /etc/NIXOS
            ${config.nix.package.out}/bin/nix-env -p /nix/var/nix/profiles/system --set /run/current-system
            rm -f /nix-path-registration
          fi
        '';
      };

    # Merged into the built-in `iso` variant (installer/cd-dvd/iso-image.nix).
    iso =
      { config, lib, ... }:
      {
        # iso-image.nix defaults this to false on every platform, and BIOS boot
        # (syslinux) exists only on x86: without it an aarch64/riscv64 ISO does
        # not boot at all.
        isoImage.makeEfiBootable = lib.mkDefault true;
        # Hybrid image, so it can be written to a USB stick (as
        # installation-cd-base.nix does).
        isoImage.makeUsbBootable = lib.mkDefault true;

        # A live system: drop the board's disk layout (our `/boot` would wait
        # for an ESP that the ISO does not have) the way installation-cd-base.nix
        # does, and the installed-system boot loader.
        fileSystems = lib.mkImageMediaOverride config.lib.isoFileSystems;
        swapDevices = lib.mkImageMediaOverride [ ];
        boot.loader.systemd-boot.enable = lib.mkImageMediaOverride false;
        boot.growPartition = lib.mkImageMediaOverride false;
      };
  };
}
