# What the first deploy needs, in every image and every deployed system of a
# target whose boards.toml entry lists `authorized_keys`:
#
#   - sshd on, key logins only;
#   - the admin user (boards.toml `user`): root, or a normal user in wheel with
#     sudo without a password (`passwordless_sudo`, default true);
#   - its authorized keys (`authorized_keys`), and root's too when root may log
#     in (`root_login`, default: when `user` is root);
#   - for every target once the fleet signing key exists (crossnix creates it
#     before building an image): that key in nix.settings.trusted-public-keys,
#     so the first deploy's signed closures are accepted.
#
# It stays in deployed systems on purpose: a deploy that dropped the admin
# user or its keys would lock crossnix out of the machine.
#
# Values come from crossnix.settings.firstBoot (crossnix_tasks/firstboot.py);
# only public keys pass through here. The pinned SSH host key is NOT set by
# this module: a private key in a module would land in the world-readable Nix
# store. crossnix writes it into the flashed card or the VM's disk instead
# (crossnix_tasks/hostkeys.py), at /etc/ssh/ssh_host_ed25519_key, which NixOS's
# sshd uses instead of generating one. Without authorized_keys and without a
# fleet key the module changes nothing.
{ lib, crossnix, ... }:
let
  fb = crossnix.settings.firstBoot or { enable = false; };
  admin = fb.adminUser or "root";
  keys = fb.authorizedKeys or [ ];
  fleetKey = fb.fleetPublicKey or null;
in
{
  config = lib.mkMerge [
    (lib.mkIf (fleetKey != null) {
      nix.settings.trusted-public-keys = [ fleetKey ];
    })
    (lib.mkIf (fb.enable or false) {
      services.openssh.enable = lib.mkDefault true;
      services.openssh.settings.PasswordAuthentication = lib.mkDefault false;
      services.openssh.settings.KbdInteractiveAuthentication = lib.mkDefault false;
      services.openssh.settings.PermitRootLogin = lib.mkDefault (if fb.rootLogin then "prohibit-password" else "no");
    })
    (lib.mkIf ((fb.enable or false) && fb.rootLogin) {
      users.users.root.openssh.authorizedKeys.keys = keys;
    })
    (lib.mkIf ((fb.enable or false) && admin != "root") {
      users.users.${admin} = {
        isNormalUser = true;
        extraGroups = [ "wheel" ];
        openssh.authorizedKeys.keys = keys;
      };
      security.sudo.wheelNeedsPassword = lib.mkIf fb.passwordlessSudo (lib.mkDefault false);
    })
  ];
}
