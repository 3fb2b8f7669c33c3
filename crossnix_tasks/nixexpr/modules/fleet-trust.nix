# Trust crossnix's fleet signing key (crossnix_tasks/signing.py) in every deployed system.
#
# `inv deploy` signs each closure with the fleet key (`nix store sign -r`) before copying it. A deploy user
# that is not root talks to the target's nix-daemon as an untrusted client, which accepts only paths signed
# by a key in nix.settings.trusted-public-keys: this module puts the fleet's public key there, so non-root
# deploys never fail with "lacks a valid signature by a trusted key".
#
# Values come from crossnix.settings.fleetTrust.publicKeys (public keys only; the secret key stays in the
# project's .crossnix/keys/, mode 0600, never in the store). first-boot.nix adds the same key for first-boot
# images; it is listed once. Without a fleet key the module changes nothing.
{ lib, crossnix, ... }:
let
  keys = (crossnix.settings.fleetTrust or { }).publicKeys or [ ];
  fromFirstBoot = (crossnix.settings.firstBoot or { }).fleetPublicKey or null;
  wanted = builtins.filter (key: key != fromFirstBoot) keys;
in
{
  config = lib.mkIf (wanted != [ ]) {
    nix.settings.trusted-public-keys = wanted;
  };
}
