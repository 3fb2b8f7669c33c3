# offline nixpkgs stand-in: the package set.
#
# Like nixpkgs, `import ./. { localSystem; crossSystem; }` is a package set for
# programs that run on `crossSystem` (host platform), built on `localSystem`
# (build platform). Derivations are tiny /bin/sh builders whose `system` is the
# build platform's: a cross package set builds entirely on this machine, a
# native aarch64 set needs an aarch64 builder (binfmt emulation or a remote
# builder), exactly the constraint real nixpkgs has.
#
# When CROSSNIX_STANDIN_BUSYBOX_DIR names a directory holding
# <system>/busybox (a static busybox of that architecture; the emulated-build
# test fetches Debian's arm64 busybox-static), derivations for a system other
# than this machine's run their script with that busybox, so an emulated build
# really executes foreign code under qemu-user. Otherwise they use /bin/sh.
{ localSystem, crossSystem ? localSystem, config ? { }, overlays ? [ ] }:
let
  lib = import ../lib;
  buildPlatform = lib.systems.elaborate localSystem;
  hostPlatform = lib.systems.elaborate crossSystem;
  isCross = buildPlatform.system != hostPlatform.system;
  thisSystem = builtins.currentSystem or buildPlatform.system;
  busyboxDir = builtins.getEnv "CROSSNIX_STANDIN_BUSYBOX_DIR";

  shellFor = system:
    let dir = "${busyboxDir}/${system}"; in
    if system == thisSystem || busyboxDir == "" || !(builtins.pathExists "${dir}/busybox") then
      { builder = "/bin/sh"; args = [ ]; }
    else
      { builder = "${builtins.path { path = dir; name = "standin-bootstrap-${system}"; }}/busybox"; args = [ "sh" ]; };

  # A derivation built on `system` running `script`; other attributes become its environment.
  standinDerivation = attrs@{ name, system, script, ... }:
    let shell = shellFor system; in
    derivation (removeAttrs attrs [ "script" "passthru" ] // {
      inherit name system;
      inherit (shell) builder;
      args = shell.args ++ [ "-c" script ];
      PATH = "/usr/bin:/bin";
      standin = "offline nixpkgs stand-in";
      standinHostPlatform = hostPlatform.system;
    }) // (attrs.passthru or { });

  packageSet = self: {
    inherit lib hostPlatform buildPlatform standinDerivation config;
    targetPlatform = hostPlatform;
    system = hostPlatform.system;
    isOfflineStandin = true;

    stdenv = {
      inherit hostPlatform buildPlatform isCross;
      targetPlatform = hostPlatform;
      mkDerivation = { name ? "${args.pname}-${args.version}", buildCommand ? "mkdir -p $out", ... }@args:
        self.runCommand name (removeAttrs args [ "name" "buildCommand" "pname" "version" "meta" ]) buildCommand;
    };
    stdenvNoCC = self.stdenv;
    buildPackages = if isCross then import ./. { localSystem = buildPlatform; inherit config overlays; } else self;
    pkgsBuildBuild = self.buildPackages;
    pkgsBuildHost = self.buildPackages;

    callPackage = fn: args:
      let f = if lib.isFunction fn then fn else import fn; in
      f (builtins.intersectAttrs (lib.functionArgs f) self // args);

    runCommand = name: env: script: standinDerivation ({ inherit name script; system = buildPlatform.system; } // env);
    runCommandLocal = self.runCommand;
    runCommandNoCC = self.runCommand;

    writeTextFile = { name, text, executable ? false, destination ? "", ... }:
      self.runCommand name {
        inherit text destination;
        passAsFile = [ "text" ];
        executable = lib.boolToString executable;
      } ''
        target="$out$destination"
        mkdir -p "$(dirname "$target")"
        cp "$textPath" "$target"
        if [ "$executable" = true ]; then chmod +x "$target"; fi
      '';
    writeText = name: text: self.writeTextFile { inherit name text; };
    writeTextDir = path: text: self.writeTextFile { name = baseNameOf path; inherit text; destination = "/${path}"; };
    writeScript = name: text: self.writeTextFile { inherit name text; executable = true; };
    writeShellScript = name: text: self.writeTextFile { inherit name; executable = true; text = "#!/bin/sh\n" + text; };
    writeShellScriptBin = name: text:
      self.writeTextFile { inherit name; executable = true; destination = "/bin/${name}"; text = "#!/bin/sh\n" + text; };
    symlinkJoin = { name, paths, ... }:
      self.runCommand name { paths = map toString paths; } ''
        mkdir -p $out
        for p in $paths; do cp -rs "$p"/. $out/ 2>/dev/null || true; done
      '';
    linkFarm = name: entries:
      let list = if builtins.isList entries then entries else lib.mapAttrsToList (n: p: { name = n; path = p; }) entries; in
      self.runCommand name { links = lib.concatMapStrings (e: "${e.name}\t${e.path}\n") list; } ''
        mkdir -p $out
        tab=$(printf '\t')
        printf '%s' "$links" | while IFS="$tab" read -r n p; do mkdir -p "$out/$(dirname "$n")"; ln -s "$p" "$out/$n"; done
      '';

    # closureInfo: the closure of rootPaths, as `nix-store --load-db` input (registration) and a path list.
    closureInfo = { rootPaths }:
      self.runCommand "closure-info" {
        exportReferencesGraph = lib.concatLists (lib.imap0 (i: p: [ "closure-${toString i}" p ]) rootPaths);
      } ''
        mkdir -p $out
        cat closure-* > $out/registration 2>/dev/null || : > $out/registration
        grep '^/nix/store/' $out/registration | sort -u > $out/store-paths || true
      '';

    # A "program" package: bin/<name> prints that it is the stand-in's.
    mkProgram = name: version:
      self.runCommand "${name}-${version}-standin" { inherit name; } ''
        mkdir -p $out/bin
        printf '#!/bin/sh\necho "%s (offline nixpkgs stand-in)"\n' "$name" > $out/bin/$name
        chmod +x $out/bin/$name
      '' // { pname = name; inherit version; };

    hello = self.mkProgram "hello" "2.12";
    busybox = self.mkProgram "busybox" "1.36";
    bash = self.mkProgram "bash" "5.2";
    coreutils = self.mkProgram "coreutils" "9.5";
    openssh = self.mkProgram "ssh" "9.8";
    git = self.mkProgram "git" "2.47";
    htop = self.mkProgram "htop" "3.3";
    vim = self.mkProgram "vim" "9.1";
    curl = self.mkProgram "curl" "8.11";
    jq = self.mkProgram "jq" "1.7";
    nix = self.runCommand "nix-2.24-standin" { } ''
      mkdir -p $out/bin
      for tool in nix nix-store nix-env; do
        printf '#!/bin/sh\necho "%s (offline nixpkgs stand-in)"\n' "$tool" > $out/bin/$tool
        chmod +x $out/bin/$tool
      done
    '';

    linuxPackages = self.linuxPackagesFor "6.6.60";
    linuxPackages_latest = self.linuxPackagesFor "6.12.4";
    linuxPackagesFor = version: {
      kernel = self.runCommand "linux-${version}-standin" {
        inherit version;
        kernelFile = hostPlatform.linux-kernel.target;
      } ''
        mkdir -p $out/dtbs/broadcom $out/dtbs/sifive $out/lib/modules
        printf 'offline nixpkgs stand-in Linux %s for %s\n' "$version" "$standinHostPlatform" > $out/$kernelFile
        echo dtb > $out/dtbs/broadcom/bcm2711-rpi-4-b.dtb
        echo dtb > $out/dtbs/sifive/hifive-unmatched-a00.dtb
      '' // { inherit version; modDirVersion = version; features = { efiBootStub = true; }; };
    };

    buildUBoot = { defconfig, filesToInstall, extraMeta ? { }, env ? { }, ... }:
      self.runCommand "uboot-${defconfig}-standin" {
        inherit defconfig;
        files = lib.concatStringsSep " " filesToInstall;
        opensbi = env.OPENSBI or "";
      } ''
        mkdir -p $out
        for f in $files; do
          printf 'offline nixpkgs stand-in U-Boot %s (%s) OPENSBI=%s\n' "$defconfig" "$f" "$opensbi" > "$out/$(basename "$f")"
        done
      '';
    ubootRaspberryPi4_64bit = self.buildUBoot { defconfig = "rpi_4_defconfig"; filesToInstall = [ "u-boot.bin" ]; };
    ubootQemuRiscv64Smode = self.buildUBoot { defconfig = "qemu-riscv64_smode_defconfig"; filesToInstall = [ "u-boot.bin" ]; };
    raspberrypifw = self.runCommand "raspberrypi-firmware-standin" { } ''
      mkdir -p $out/share/raspberrypi/boot
      for f in bootcode.bin start4.elf fixup4.dat bcm2711-rpi-4-b.dtb; do
        echo "offline nixpkgs stand-in $f" > $out/share/raspberrypi/boot/$f
      done
    '';
    opensbi = self.runCommand "opensbi-standin" { } ''
      mkdir -p $out/share/opensbi/lp64/generic/firmware
      echo "offline nixpkgs stand-in OpenSBI" > $out/share/opensbi/lp64/generic/firmware/fw_dynamic.bin
    '';
    systemd = self.runCommand "systemd-standin" { efiArch = hostPlatform.efiArch; } ''
      mkdir -p $out/lib/systemd/boot/efi $out/bin
      echo "offline nixpkgs stand-in systemd-boot" > $out/lib/systemd/boot/efi/systemd-boot$efiArch.efi
      printf '#!/bin/sh\necho "systemd-repart (offline nixpkgs stand-in)"\n' > $out/bin/systemd-repart
      chmod +x $out/bin/systemd-repart
    '';
  };
in
lib.fix (self: builtins.foldl' (acc: overlay: acc // overlay self acc) (packageSet self) overlays)
