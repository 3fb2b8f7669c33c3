# SiFive HiFive Unmatched (FU740-C000, riscv64-linux).
#
# Boot chain (MSEL DIP switches = 1011, SD card): ZSBL in ROM -> U-Boot SPL
# (GPT partition 1, sectors 34-2081) -> OpenSBI + U-Boot from u-boot.itb
# (partition 2, sectors 2082-10273) -> /boot/extlinux/extlinux.conf on the
# root partition, which is flagged LegacyBIOSBootable so U-Boot's distro boot
# scans it.
#
# Nothing upstream covers this board: nixos-hardware has no SiFive module and
# nixpkgs' built-in `sd-card` variant throws on riscv64 (there is no
# installer/sd-card/sd-image-riscv64.nix, only sd-image-riscv64-qemu.nix).
#
# Relies on:
#   nixpkgs  nixos/modules/image/images.nix                             image.modules, built-in `sd-card`
#   nixpkgs  nixos/modules/installer/sd-card/sd-image.nix               sdImage.* and the MBR image
#   nixpkgs  nixos/modules/installer/sd-card/sd-image-riscv64-qemu.nix  populateRootCommands pattern
#   nixpkgs  nixos/modules/system/boot/loader/generic-extlinux-compatible/default.nix
#   nixpkgs  pkgs/misc/uboot/default.nix (buildUBoot, ubootVisionFive2)  -> ./hifive-unmatched-uboot.nix
#   nixos-hardware  starfive/visionfive/v2/sd-image.nix                 MBR -> GPT conversion pattern
#   u-boot   doc/board/sifive/unmatched.rst                             partition types and sectors
{ lib, pkgs, ... }:
let
  # The SD-card image: nixpkgs' generic sd-image.nix, then converted to GPT
  # with the SPL and ITB partitions in front. Written as a function so that
  # `config` is the variant's own configuration (its toplevel is the one in the
  # image), not the base configuration this file is evaluated in.
  sdImageModule =
    {
      config,
      lib,
      modulesPath,
      ...
    }:
    {
      imports = [ "${modulesPath}/installer/sd-card/sd-image.nix" ];

      sdImage = {
        # The FAT "FIRMWARE" partition is only for Raspberry Pis; it stays empty
        # and small and is dropped from the partition table below.
        populateFirmwareCommands = "";
        firmwareSize = lib.mkDefault 4;

        # As sd-image-riscv64-qemu.nix: extlinux.conf and the generation's
        # kernel/initrd/DTBs under /boot of the root partition. populateCmd runs
        # on the build platform (buildPackages), so this is cross-safe.
        populateRootCommands = ''
          mkdir -p ./files/boot
          ${config.boot.loader.generic-extlinux-compatible.populateCmd} -c ${config.system.build.toplevel} -d ./files/boot
        '';

        # sd-image.nix has written an MBR image: p1 FAT at
        # firmwarePartitionOffset (8 MiB), p2 the ext4 root. Rewrite the table
        # as GPT (the FU740 ZSBL only reads GPT), keeping the root partition
        # where it is, then write SPL and ITB at the fixed sectors
        # CONFIG_SYS_MMCSD_RAW_MODE_U_BOOT_SECTOR expects (0x822 = 2082).
        # The 8 MiB default offset leaves room: the ITB partition ends at 10273.
        # Fixed GUIDs keep the image reproducible. `$img` is set by sd-image.nix;
        # sfdisk/partx come from its util-linux nativeBuildInput.
        postBuildCommands = ''
          eval $(partx $img -o START,SECTORS --nr 2 --pairs)

          # Room for the backup GPT at the end of the image.
          truncate -s +1M $img

          sfdisk --no-reread --no-tell-kernel $img <<EOF
              label: gpt
              label-id: 84479506-32E3-4F33-8404-874F13091EF4
              unit: sectors
              first-lba: 34

              start=34, size=2048, type=5B193300-FC78-40CD-8002-E86C45580B47, uuid=DBF6D8FE-C4F3-44A3-83D2-4D1AC68C42B5, name=spl
              start=2082, size=8192, type=2E54B353-1271-4842-806F-E436D6AF6985, uuid=C0A3E900-AC5E-4B74-ADE0-3C908098D36D, name=uboot
              start=$START, size=$SECTORS, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, uuid=E99D2621-620E-4518-B83D-AE8E9C3C807C, name=nixos, attrs="LegacyBIOSBootable"
          EOF

          dd conv=notrunc if=${config.system.build.uboot}/u-boot-spl.bin of=$img seek=34
          dd conv=notrunc if=${config.system.build.uboot}/u-boot.itb of=$img seek=2082
        '';
        # compressImage keeps sd-image.nix's default (zstd): crossnix's flash
        # task handles .img.zst.
      };
    };
in
{
  imports = [ ./common-cross.nix ];

  # crossnix sets host/build platform per build strategy; this default only
  # makes the module usable on its own.
  nixpkgs.hostPlatform = lib.mkDefault "riscv64-linux";

  # The FU740 is supported by mainline Linux; mkDefault so `linuxPackages_latest`
  # is one line away.
  boot.kernelPackages = lib.mkDefault pkgs.linuxPackages;

  # Board settings as in zhaofengli/nixos-riscv64 nixos/unmatched.nix:
  # ttySIF0 is the SiFive UART; earlycon=sbi prints through OpenSBI before the
  # UART driver is up.
  boot.kernelParams = [
    "console=tty0"
    "console=ttySIF0,115200"
    "earlycon=sbi"
  ];
  # NVMe (on the PCIe slot) and the SD card, which sits on the SPI bus.
  boot.initrd.kernelModules = [
    "nvme"
    "mmc_block"
    "mmc_spi"
    "spi_sifive"
    "spi_nor"
  ];

  boot.loader.grub.enable = false;
  boot.loader.generic-extlinux-compatible.enable = true;

  # Makes extlinux.conf say `FDT …/sifive/hifive-unmatched-a00.dtb` (the
  # riscv kernel builds DTBs: lib/systems/platforms.nix riscv-multiplatform
  # has DTB = true, so hardware.deviceTree is enabled).
  hardware.deviceTree.name = lib.mkDefault "sifive/hifive-unmatched-a00.dtb";

  # Identical to sd-image.nix's definition inside the image (rootVolumeLabel
  # NIXOS_SD), so later deploys boot the same root.
  fileSystems."/" = {
    device = "/dev/disk/by-label/NIXOS_SD";
    fsType = "ext4";
  };

  # Exposed for users who flash SPI NOR or rebuild the SD card's boot area.
  system.build.uboot = pkgs.callPackage ./hifive-unmatched-uboot.nix { };

  image.modules = {
    # images.nix's built-in `sd-card` throws on riscv64 ("The module …
    # sd-image-riscv64.nix does not exist."); a plain definition would merge
    # with it, so replace it.
    sd-card = lib.mkForce sdImageModule;

    # The same image for `qemu-system-riscv64 -M virt` with U-Boot S-mode:
    # QEMU hands its own DTB to U-Boot, so extlinux.conf must not name the
    # board's (as sd-image-riscv64-qemu.nix does).
    qemu-sd-card =
      { lib, ... }:
      {
        imports = [ sdImageModule ];
        system.nixos.tags = [ "qemu" ];
        boot.loader.generic-extlinux-compatible.useGenerationDeviceTree = false;
        hardware.deviceTree.name = lib.mkForce null;
        # virt's UART and disk; the last console= becomes /dev/console.
        boot.kernelParams = [ "console=ttyS0,115200" ];
        boot.initrd.availableKernelModules = [
          "virtio_mmio"
          "virtio_blk"
        ];
      };
  };
}
