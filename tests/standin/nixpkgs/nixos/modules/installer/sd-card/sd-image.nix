# offline nixpkgs stand-in: nixos/modules/installer/sd-card/sd-image.nix.
#
# Builds a real (small) MBR image the way nixpkgs does: FAT "FIRMWARE" at
# firmwarePartitionOffset, ext4 root (NIXOS_SD, bootable) made with
# `mkfs.ext4 -d`, populate*Commands run in ./firmware and ./files,
# postBuildCommands run with $img set, then zstd. Uses the build machine's
# util-linux, e2fsprogs, dosfstools, mtools and zstd from /usr.
{ config, lib, pkgs, ... }:
let
  inherit (lib) mkOption types;
  cfg = config.sdImage;
  closure = pkgs.closureInfo { rootPaths = cfg.storePaths; };
in
{
  imports = [ ../../image/file-options.nix ../../profiles/all-hardware.nix ];

  options.sdImage = {
    populateFirmwareCommands = mkOption { type = types.lines; default = ""; };
    populateRootCommands = mkOption { type = types.lines; default = ""; };
    postBuildCommands = mkOption { type = types.lines; default = ""; };
    firmwarePartitionOffset = mkOption { type = types.int; default = 8; };
    firmwareSize = mkOption { type = types.int; default = 30; };
    firmwarePartitionName = mkOption { type = types.str; default = "FIRMWARE"; };
    firmwarePartitionID = mkOption { type = types.str; default = "0x2178694e"; };
    rootVolumeLabel = mkOption { type = types.str; default = "NIXOS_SD"; };
    compressImage = mkOption { type = types.bool; default = true; };
    expandOnBoot = mkOption { type = types.bool; default = true; };
    storePaths = mkOption { type = types.listOf types.package; default = [ ]; };
  };

  config = {
    fileSystems = {
      "/boot/firmware" = {
        device = "/dev/disk/by-label/${cfg.firmwarePartitionName}";
        fsType = "vfat";
        options = [ "nofail" "noauto" ];
      };
      "/" = {
        device = "/dev/disk/by-label/${cfg.rootVolumeLabel}";
        fsType = "ext4";
      };
    };
    hardware.enableAllHardware = true;
    sdImage.storePaths = [ config.system.build.toplevel ];
    system.nixos.tags = [ "sd-card" ];
    image.extension = if cfg.compressImage then "img.zst" else "img";
    image.filePath = "sd-image/${config.image.fileName}";
    system.build.image = config.system.build.sdImage;
    boot.postBootCommands = lib.mkIf cfg.expandOnBoot ''
      # (offline nixpkgs stand-in) nixpkgs grows the root partition here on first boot
    '';

    system.build.sdImage = pkgs.runCommand config.image.fileName {
      inherit closure;
      baseName = config.image.baseName;
      fwLabel = cfg.firmwarePartitionName;
      fwId = cfg.firmwarePartitionID;
      rootLabel = cfg.rootVolumeLabel;
      gapMiB = toString cfg.firmwarePartitionOffset;
      fwMiB = toString cfg.firmwareSize;
      compress = lib.boolToString cfg.compressImage;
    } ''
      set -eu
      export PATH=/usr/bin:/bin:/usr/sbin:/sbin
      mkdir -p $out/nix-support $out/sd-image ./files ./firmware
      img=$out/sd-image/$baseName.img

      cp $closure/registration ./files/nix-path-registration
      (
        :
        ${cfg.populateRootCommands}
      )
      (
        :
        ${cfg.populateFirmwareCommands}
      )

      # FAT firmware partition, with the firmware files copied in (mtools)
      truncate -s "''${fwMiB}M" fw.img
      mkfs.vfat -i "''${fwId#0x}" -n "$fwLabel" fw.img > /dev/null
      if [ -n "$(ls -A ./firmware)" ]; then mcopy -psm -i fw.img ./firmware/* ::; fi

      # ext4 root from ./files
      rootMiB=$(( $(du -sm ./files | cut -f1) + 16 ))
      mkfs.ext4 -q -F -L "$rootLabel" -d ./files root.img "''${rootMiB}M"

      truncate -s $(( (gapMiB + fwMiB + rootMiB) * 1024 * 1024 )) $img
      sfdisk --no-reread --no-tell-kernel --quiet $img <<EOF
      label: dos
      label-id: $fwId
      start=''${gapMiB}MiB, size=''${fwMiB}MiB, type=b
      start=$(( gapMiB + fwMiB ))MiB, type=83, bootable
      EOF
      dd conv=notrunc status=none bs=1M if=fw.img of=$img seek=$gapMiB
      dd conv=notrunc status=none bs=1M if=root.img of=$img seek=$(( gapMiB + fwMiB ))

      (
        :
        ${cfg.postBuildCommands}
      )

      if [ "$compress" = true ]; then zstd -q --rm -T2 $img; fi
      echo "file sd-image $(ls $out/sd-image/*)" > $out/nix-support/hydra-build-products
    '';
  };
}
