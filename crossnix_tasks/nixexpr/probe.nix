# crossnix: can this machine build derivations for `system`?
#
# The builder is the build machine's /bin/sh; it runs `probe`, a tiny static
# executable of the target architecture (written by crossnix_tasks/probe.py)
# that exits with status 42. Nix refuses the derivation outright when the
# platform is not in `system`/`extra-platforms` ("a 'aarch64-linux' ... is
# required to build"); when it accepts it, the probe only runs if the kernel
# can execute that architecture (binfmt_misc + qemu-user). `nonce` makes every
# probe a fresh build, so an old cached success proves nothing.
# All arguments arrive with --argstr; nothing here is generated.
{ system, probeDir, nonce }:
derivation {
  name = "crossnix-probe-${system}";
  inherit system nonce;
  builder = "/bin/sh";
  args = [ "-c" "\"$probe/probe\"; status=$?; if [ $status -eq 42 ]; then echo ok > \"$out\"; else echo \"crossnix probe exited with $status\" >&2; exit 1; fi" ];
  probe = builtins.path { path = probeDir; name = "crossnix-probe-exe-${system}"; };
  PATH = "/usr/bin:/bin";
}
