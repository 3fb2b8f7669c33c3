# offline nixpkgs stand-in (crossnix tests) -- NOT nixpkgs.
#
# Exposes the interface crossnix uses on real nixpkgs: `lib.nixosSystem`
# (with extendModules, imports, mkDefault/mkForce priorities),
# `config.system.build.toplevel`, `config.system.build.images.<variant>`
# with `passthru.filePath`, and `nixpkgs.hostPlatform` / `buildPlatform`.
# Every derivation is a tiny /bin/sh builder that really builds; a cross
# configuration builds on the build platform, a native one on its own system.
# See ../README.md.
{
  description = "offline nixpkgs stand-in for crossnix's tests (NOT nixpkgs)";

  outputs = { self }:
    let
      baseLib = import ./lib;
      systems = [ "x86_64-linux" "aarch64-linux" "riscv64-linux" ];
    in
    {
      lib = baseLib // {
        # As nixpkgs' flake.nix: eval-config.nix with this lib.
        nixosSystem = args:
          import ./nixos/lib/eval-config.nix (
            { system = null; lib = self.lib; }
            // removeAttrs args [ "modules" ]
            // { modules = args.modules ++ [ { system.nixos.revision = "offline-standin"; } ]; }
          );
      };
      legacyPackages = baseLib.genAttrs systems (system: import ./. { localSystem = system; });
      nixosModules.notDetected = ./nixos/modules/installer/scan/not-detected.nix;
      isOfflineStandin = true;
    };
}
