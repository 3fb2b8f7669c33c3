# offline nixpkgs stand-in: nixos/modules/image/repart.nix. Runs on the build
# platform (like systemd-repart from buildPackages): a GPT disk whose
# partitions hold tar archives of their `contents`, plus the definitions.
{ config, lib, pkgs, ... }:
let
  inherit (lib) mkOption types;
  cfg = config.image.repart;
  partitionModule = {
    options = {
      storePaths = mkOption { type = types.listOf types.package; default = [ ]; };
      contents = mkOption { type = types.attrsOf (types.submodule { }); default = { }; };
      repartConfig = mkOption { type = types.attrsOf types.anything; };
    };
  };
  names = builtins.attrNames cfg.partitions;
  contentLines = name:
    lib.concatStrings (lib.mapAttrsToList (target: c: "${name}\t${target}\t${c.source}\n") cfg.partitions.${name}.contents);
  storePathLines = name: lib.concatMapStrings (p: "${name}\t${p}\n") cfg.partitions.${name}.storePaths;
in
{
  imports = [ ./file-options.nix ];

  options.image.repart = {
    name = mkOption { type = types.str; };
    version = mkOption { type = types.nullOr types.str; default = null; };
    seed = mkOption { type = types.str; default = "0867da16-f251-457d-a9e8-c31f9a3c220b"; };
    package = mkOption { type = types.package; default = pkgs.buildPackages.systemd; };
    partitions = mkOption { type = types.attrsOf (types.submodule partitionModule); default = { }; };
    compression.enable = mkOption { type = types.bool; default = false; };
  };

  config = {
    image.baseName = if cfg.version != null then "${cfg.name}_${cfg.version}" else cfg.name;
    image.extension = "raw";
    system.build.image = pkgs.runCommand config.image.fileName {
      fileName = config.image.fileName;
      partitionNames = lib.concatStringsSep " " names;
      labels = lib.concatMapStrings (n: "${n}\t${cfg.partitions.${n}.repartConfig.Label or n}\t${cfg.partitions.${n}.repartConfig.Type or "linux-generic"}\n") names;
      contents = lib.concatMapStrings contentLines names;
      storePaths = lib.concatMapStrings storePathLines names;
      definitions = builtins.toJSON (lib.mapAttrs (_: p: p.repartConfig) cfg.partitions);
      architecture = pkgs.stdenv.hostPlatform.system;
    } ''
      set -eu
      export PATH=/usr/bin:/bin:/usr/sbin:/sbin
      mkdir -p $out/nix-support parts
      tab=$(printf '\t')
      printf '%s' "$contents" | while IFS="$tab" read -r part target src; do
        mkdir -p "parts/$part$(dirname "$target")"
        cp -rL "$src" "parts/$part$target"
      done
      printf '%s' "$storePaths" | while IFS="$tab" read -r part path; do
        mkdir -p "parts/$part/nix/store"
        echo "$path" >> "parts/$part/nix-store-paths"
      done
      table="label: gpt
      "
      offset=1
      for p in $partitionNames; do
        mkdir -p "parts/$p"
        tar -C "parts/$p" -cf "$p.tar" .
        mib=$(( $(du -m "$p.tar" | cut -f1) + 1 ))
        label=$(printf '%s' "$labels" | grep "^$p$tab" | cut -f2)
        table="$table start=''${offset}MiB, size=''${mib}MiB, name=$label
      "
        echo "$p $offset $mib" >> layout
        offset=$(( offset + mib ))
      done
      truncate -s $(( (offset + 1) * 1024 * 1024 )) "$out/$fileName"
      printf '%s' "$table" | sfdisk --no-reread --no-tell-kernel --quiet "$out/$fileName"
      while read -r p start mib; do
        dd conv=notrunc status=none bs=1M if="$p.tar" of="$out/$fileName" seek=$start
      done < layout
      printf '%s\n' "$definitions" > $out/repart-definitions.json
      printf '%s\n' "$architecture" > $out/architecture
      echo "file raw-image $out/$fileName" > $out/nix-support/hydra-build-products
    '';
  };
}
