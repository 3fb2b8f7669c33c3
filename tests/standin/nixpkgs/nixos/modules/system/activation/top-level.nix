# offline nixpkgs stand-in: config.system.build.toplevel.
#
# The toplevel has the layout deploy tools look at (nixos-version, system,
# kernel, initrd, kernel-params, init, activate, bin/switch-to-configuration,
# sw, etc). Its activation scripts are the test rig's fake ones
# (switch-to-configuration.sh, activate.sh, init.sh here, which
# tests/rig/fakesystem.py reads too):
# switching appends "<hostName> <goal> <time>" to
# /nix/var/crossnix-fake/activation.log and points /run/current-system at the
# toplevel; nothing of the system is activated for real.
# `standin-config.json` records the configuration values tests check.
{ config, lib, pkgs, ... }:
let
  inherit (config.nixpkgs) hostPlatform buildPlatform;
  label = config.networking.hostName;
  failedAssertions = map (a: a.message) (builtins.filter (a: !a.assertion) config.assertions);

  etcEntries =
    {
      hostname.text = label + "\n";
      NIXOS.text = "offline nixpkgs stand-in\n";
    }
    // lib.optionalAttrs config.nix.enable { "nix/nix.conf".text = nixConf; }
    // lib.mapAttrs' (name: user: lib.nameValuePair "ssh/authorized_keys.d/${name}" {
      text = lib.concatMapStrings (k: k + "\n") user.openssh.authorizedKeys.keys;
    }) config.users.users
    // lib.filterAttrs (_: e: e.enable or true) config.environment.etc;
  nixConf = lib.concatStrings (lib.mapAttrsToList (k: v: "${k} = ${showNixValue v}\n") config.nix.settings)
    + config.nix.extraOptions;
  showNixValue = v:
    if builtins.isList v then lib.concatMapStringsSep " " showNixValue v
    else if builtins.isBool v then lib.boolToString v
    else toString v;
  etcSource = name: entry:
    if entry ? text && entry.text != null then pkgs.writeText (baseNameOf name) entry.text else entry.source;
  etc = pkgs.runCommand "etc-standin" {
    links = lib.concatStrings (lib.mapAttrsToList (name: entry: "${name}\t${etcSource name entry}\n") etcEntries);
  } ''
    tab=$(printf '\t')
    printf '%s' "$links" | while IFS="$tab" read -r name src; do
      mkdir -p "$out/etc/$(dirname "$name")"
      ln -s "$src" "$out/etc/$name"
    done
  '';

  sw = pkgs.runCommand "system-path-standin" {
    packages = lib.concatStringsSep " " (map toString config.environment.systemPackages);
  } ''
    mkdir -p $out/bin
    for p in $packages; do
      if [ -d "$p/bin" ]; then for f in "$p"/bin/*; do ln -sf "$f" "$out/bin/"; done; fi
    done
  '';

  summary = {
    standin = "offline nixpkgs stand-in";
    hostName = label;
    system = hostPlatform.system;
    buildSystem = buildPlatform.system;
    stateVersion = config.system.stateVersion;
    kernelParams = config.boot.kernelParams;
    fileSystems = lib.mapAttrs (_: fs: { device = fs.device or null; fsType = fs.fsType or null; }) config.fileSystems;
    users = lib.mapAttrs (_: u: {
      authorizedKeys = u.openssh.authorizedKeys.keys;
      inherit (u) isNormalUser;
      inherit (u) extraGroups;
    }) config.users.users;
    nixSettings = config.nix.settings;
    etc = builtins.attrNames etcEntries;
    opensshEnabled = config.services.openssh.enable;
    openssh = config.services.openssh.settings;
    sudoWheelNeedsPassword = config.security.sudo.wheelNeedsPassword;
    timeZone = config.time.timeZone;
    bootLoader = {
      extlinux = config.boot.loader.generic-extlinux-compatible.enable;
      systemdBoot = config.boot.loader.systemd-boot.enable;
      grub = config.boot.loader.grub.enable;
    };
  };

  kernel = config.system.build.kernel;
  toplevel = pkgs.runCommand "nixos-system-${label}-${config.system.nixos.label}" {
    inherit label kernel sw;
    etc = etc;
    initrd = config.system.build.initialRamdisk;
    kernelFile = hostPlatform.linux-kernel.target;
    hostSystem = hostPlatform.system;
    version = config.system.nixos.version;
    kernelParams = lib.concatStringsSep " " config.boot.kernelParams;
    dtbs = lib.optionalString config.hardware.deviceTree.enable "${kernel}/dtbs";
    switchBody = builtins.readFile ./switch-to-configuration.sh;
    activateBody = builtins.readFile ./activate.sh;
    initBody = builtins.readFile ./init.sh;
    configJSON = builtins.toJSON summary;
    activationScripts = builtins.toJSON (lib.mapAttrs (_: s: if builtins.isString s then s else s.text or "") config.system.activationScripts);
  } ''
    set -eu
    mkdir -p $out/bin
    hdr() { printf '#!/bin/sh\n# offline nixpkgs stand-in: NixOS system %s (not NixOS)\ntoplevel=%s\nlabel=%s\nbaked=%s\n' "$label" "$out" "$label" ok; }
    { hdr; printf '%s\n' "$switchBody"; } > $out/bin/switch-to-configuration
    { hdr; printf '%s\n' "$activateBody"; } > $out/activate
    { hdr; printf '%s\n' "$initBody"; } > $out/init
    chmod 555 $out/bin/switch-to-configuration $out/activate $out/init
    printf '%s\n' "$version" > $out/nixos-version
    printf '%s' "$hostSystem" > $out/system
    ln -s "$kernel/$kernelFile" $out/kernel
    ln -s "$initrd/initrd" $out/initrd
    printf '%s\n' "$kernelParams" > $out/kernel-params
    printf '%s\n' "$label" > $out/crossnix-fake-label
    if [ -n "$dtbs" ]; then ln -s "$dtbs" $out/dtbs; fi
    ln -s "$sw" $out/sw
    ln -s "$etc/etc" $out/etc
    printf '%s\n' "$configJSON" > $out/standin-config.json
    printf '%s\n' "$activationScripts" > $out/activation-scripts.json
    printf 'built by the offline nixpkgs stand-in (crossnix tests); not NixOS\n' > $out/OFFLINE-NIXPKGS-STANDIN
  '';
in
{
  config.system.build.toplevel =
    if failedAssertions != [ ] then
      throw "\nFailed assertions:\n${lib.concatMapStrings (m: "- ${m}\n") failedAssertions}(offline nixpkgs stand-in)"
    else
      builtins.foldl' (t: w: lib.warn w t) toplevel config.warnings;
}
