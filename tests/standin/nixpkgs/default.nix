# offline nixpkgs stand-in: `import <this> { localSystem; crossSystem; }` gives a package set.
{ localSystem ? { system = builtins.currentSystem; }, system ? null, crossSystem ? null, config ? { }, overlays ? [ ], ... }:
import ./pkgs {
  localSystem = if system != null then system else localSystem;
  crossSystem = if crossSystem != null then crossSystem else (if system != null then system else localSystem);
  inherit config overlays;
}
