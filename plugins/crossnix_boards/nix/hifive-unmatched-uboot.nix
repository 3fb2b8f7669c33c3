# U-Boot SPL + U-Boot proper (with OpenSBI) for the SiFive HiFive Unmatched.
# Call with `pkgs.callPackage ./hifive-unmatched-uboot.nix { }`.
#
# nixpkgs has no Unmatched U-Boot; this follows the form of `ubootVisionFive2`
# in nixpkgs pkgs/misc/uboot/default.nix (buildUBoot with `env.OPENSBI`, needed
# since buildUBoot uses __structuredAttrs: a top-level OPENSBI attribute would
# not reach make's environment).
#
# u-boot/u-boot doc/board/sifive/unmatched.rst: `make sifive_unmatched_defconfig`
# with OPENSBI=<generic fw_dynamic.bin> produces
#   spl/u-boot-spl.bin  loaded by the ZSBL from the GPT partition of type
#                       5B193300-FC78-40CD-8002-E86C45580B47
#   u-boot.itb          fw_dynamic + U-Boot + hifive-unmatched-a00.dtb, read by
#                       the SPL from sector 2082 (type 2E54B353-1271-4842-806F-E436D6AF6985)
# Both end up flat in $out (buildUBoot copies filesToInstall into $out).
{
  buildUBoot,
  opensbi,
}:

buildUBoot {
  defconfig = "sifive_unmatched_defconfig";
  extraMeta.platforms = [ "riscv64-linux" ];
  # pkgs/by-name/op/opensbi/package.nix installs with I=$out, PLATFORM=generic.
  env.OPENSBI = "${opensbi}/share/opensbi/lp64/generic/firmware/fw_dynamic.bin";
  filesToInstall = [
    "spl/u-boot-spl.bin"
    "u-boot.itb"
  ];
}
