# offline nixpkgs stand-in: assertions and warnings (checked when the toplevel is built).
{ lib, ... }:
{
  options = {
    assertions = lib.mkOption { type = lib.types.listOf lib.types.unspecified; default = [ ]; };
    warnings = lib.mkOption { type = lib.types.listOf lib.types.str; default = [ ]; };
  };
}
